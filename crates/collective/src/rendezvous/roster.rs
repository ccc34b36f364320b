//! Rank 0's roster of joining ranks, without I/O (quinn-proto's model): each proven
//! Hello and the time go in; out comes whether to wait, start (every rank is here), or
//! stop the job with one sentence every rank is told. The socket shell in `comm.rs`
//! greets connections and sends; this decides. Tested in memory with a moved clock.

use measure::Setting;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What a joining process claims in its (proven) Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub rank: usize,
    pub world: usize,
    pub from: SocketAddr,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ranks are still missing and the deadline has not passed.
    Wait,
    /// Every rank 1..world has joined: send the table.
    Complete,
    /// The job cannot run as asked: tell every joined rank this and stop.
    Abort(String),
    /// The deadline passed with ranks missing (named): tell every joined rank and stop.
    TimedOut(String),
}

pub struct Roster<T> {
    world: usize,
    deadline: Instant,
    timeout: Duration,
    master: String,
    /// Whether Hellos prove NODELINK_TOKEN (else a second claim may be a stranger's).
    authenticated: bool,
    slots: Vec<Option<(SocketAddr, T)>>,
}

impl<T> Roster<T> {
    /// A roster for `world` ranks that must all join by `deadline`, `timeout` after the
    /// join began (for the message).
    pub fn new(
        world: usize,
        deadline: Instant,
        timeout: Duration,
        master: &str,
        authenticated: bool,
    ) -> Self {
        Roster {
            world,
            deadline,
            timeout,
            master: master.to_string(),
            authenticated,
            slots: (0..world).map(|_| None).collect(),
        }
    }

    /// A proven Hello. Taken when it fits; otherwise the connection comes back with the
    /// verdict, so the shell can tell it why.
    pub fn offer(&mut self, claim: Claim, joiner: T, now: Instant) -> (Verdict, Option<T>) {
        let Claim { rank, world, from } = claim;
        let world0 = self.world;
        let problem = if world != world0 {
            Some(format!(
                "rank {rank} at {from} was started with a world of {world} ranks, rank 0 with {world0}: give every rank {} the same (or the same launcher size)", Setting::WorldSize
            ))
        } else if rank == 0 || rank >= world0 {
            Some(format!(
                "a process at {from} claims rank {rank} in a job of {world0} ranks (1..{} may join rank 0): check {} on every node",
                world0.saturating_sub(1),
                Setting::Rank
            ))
        } else if let Some((first, _)) = &self.slots[rank] {
            Some(format!(
                "two processes claim rank {rank}: {first} and {from}; check {} on every node{}",
                Setting::Rank,
                if self.authenticated {
                    ""
                } else {
                    ", and set NODELINK_TOKEN on every rank so strangers cannot join"
                }
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return (Verdict::Abort(problem), Some(joiner));
        }
        self.slots[rank] = Some((from, joiner));
        (self.poll(now), None)
    }

    /// Where the join stands at `now`.
    pub fn poll(&self, now: Instant) -> Verdict {
        let missing = self.missing();
        if missing.is_empty() {
            Verdict::Complete
        } else if now >= self.deadline {
            let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
            Verdict::TimedOut(format!(
                "rank {} of {} never joined within {:.0?} (master {})",
                names.join(", "),
                self.world,
                self.timeout,
                self.master
            ))
        } else {
            Verdict::Wait
        }
    }

    /// Ranks 1.. that have not joined yet.
    pub fn missing(&self) -> Vec<usize> {
        (1..self.world)
            .filter(|&r| self.slots[r].is_none())
            .collect()
    }

    /// Every rank that has joined, to tell them the job is off.
    pub fn joined_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten().map(|(_, joiner)| joiner)
    }

    /// Ranks 1..world in rank order, once complete (missing ones are skipped).
    pub fn into_ranks(self) -> Vec<T> {
        self.slots
            .into_iter()
            .skip(1)
            .flatten()
            .map(|(_, joiner)| joiner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn claim(rank: usize, world: usize, port: u16) -> Claim {
        Claim {
            rank,
            world,
            from: at(port),
        }
    }

    fn roster(world: usize, authenticated: bool) -> (Roster<&'static str>, Instant) {
        let t = Instant::now();
        let roster = Roster::new(world, t + TIMEOUT, TIMEOUT, "10.0.0.1:29500", authenticated);
        (roster, t)
    }

    #[test]
    fn ranks_join_in_any_order_and_come_out_in_rank_order() {
        let (mut r, t) = roster(4, true);
        assert_eq!(r.offer(claim(3, 4, 3), "three", t), (Verdict::Wait, None));
        assert_eq!(r.offer(claim(1, 4, 1), "one", t), (Verdict::Wait, None));
        assert_eq!(r.missing(), vec![2]);
        assert_eq!(r.offer(claim(2, 4, 2), "two", t), (Verdict::Complete, None));
        assert_eq!(r.into_ranks(), vec!["one", "two", "three"]);
    }

    #[test]
    fn a_rank_that_never_joins_is_named_at_the_deadline_and_not_before() {
        let (mut r, t) = roster(4, true);
        r.offer(claim(2, 4, 2), "two", t);
        assert_eq!(
            r.poll((t + TIMEOUT).checked_sub(Duration::from_micros(1)).unwrap()),
            Verdict::Wait
        );
        assert_eq!(
            r.poll(t + TIMEOUT),
            Verdict::TimedOut(
                "rank 1, 3 of 4 never joined within 30s (master 10.0.0.1:29500)".into()
            )
        );
        assert_eq!(r.joined_mut().count(), 1, "the joined rank is told");
    }

    #[test]
    fn a_mismatched_world_is_named_with_both_sizes() {
        let (mut r, t) = roster(2, true);
        let (verdict, back) = r.offer(claim(1, 4, 7), "one", t);
        let Verdict::Abort(reason) = verdict else {
            panic!("{verdict:?}");
        };
        assert!(
            reason.contains("world of 4 ranks, rank 0 with 2") && reason.contains("10.0.0.1:7"),
            "{reason}"
        );
        assert_eq!(
            back,
            Some("one"),
            "the connection comes back to be told why"
        );
    }

    #[test]
    fn a_second_claim_on_a_rank_names_both_addresses_and_the_token_when_unset() {
        for (authenticated, hint) in [(true, false), (false, true)] {
            let (mut r, t) = roster(3, authenticated);
            r.offer(claim(1, 3, 1), "first", t);
            let (verdict, _) = r.offer(claim(1, 3, 9), "second", t);
            let Verdict::Abort(reason) = verdict else {
                panic!("{verdict:?}");
            };
            assert!(
                reason.contains("two processes claim rank 1: 10.0.0.1:1 and 10.0.0.1:9"),
                "{reason}"
            );
            assert_eq!(reason.contains("set NODELINK_TOKEN"), hint, "{reason}");
        }
    }

    #[test]
    fn ranks_outside_the_job_are_refused() {
        let (mut r, t) = roster(3, true);
        for rank in [0, 3, usize::MAX] {
            let (verdict, _) = r.offer(claim(rank, 3, 5), "x", t);
            assert!(
                matches!(&verdict, Verdict::Abort(reason) if reason.contains(&format!("claims rank {rank} in a job of 3 ranks (1..2"))),
                "{verdict:?}"
            );
        }
        assert_eq!(r.missing(), vec![1, 2]);
    }

    #[test]
    fn a_world_of_one_is_complete_at_once() {
        let (r, t) = roster(1, false);
        assert_eq!(r.poll(t), Verdict::Complete);
    }
}
