//! The prefill's request book without I/O (quinn-proto's model): requests and the time go
//! in, decisions and events come out. It owns the free blocks, every lease, who may pull
//! or complete each request, each connection's quota and the lease deadlines; the agent
//! around it moves bytes, waits and logs. Everything here is tested in memory with a
//! clock the test moves.

use crate::layout::KvLayout;
use crate::wire::{self, MAX_BLOCKS, MAX_REQUEST_ID};
use crate::KvError;
use measure::Setting;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// One decode connection, as the agent numbers them.
pub type SessionId = u64;

/// How long past its lease a pull that is still streaming may run before it is cut.
pub const LEASE_GRACE: Duration = Duration::from_secs(1);
/// Remembered expired request ids, so a late pull is told "expired", not "unknown".
const EXPIRED_MEMORY: usize = 4096;
/// Most decode ranks one request may declare as its readers.
const MAX_READERS: u32 = 1024;

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub dp_rank: u32,
    pub lease: Duration,
    /// Most blocks one connection may hold in requests it prefilled and has not completed
    /// [None: half the pool]; its first such request is always taken, however large.
    pub session_quota: Option<u32>,
}

/// What a Prefill gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Allocation {
    /// The request is already leased here (another decode TP rank prefilled it): its
    /// blocks; this connection is now one of its readers.
    Attached(Vec<u32>),
    /// Blocks taken for this request alone: write them, then [`PrefillState::publish`]
    /// (or [`PrefillState::abandon`]).
    Fresh(Vec<u32>),
    /// Not enough free blocks now. Ask again when blocks are released, or at `retry_at`
    /// (when the next lease expires), until the caller's own deadline.
    Wait {
        free: u32,
        retry_at: Option<Instant>,
    },
}

/// What happened inside, for the agent's log and counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A lease ran out with no pull reading it; its blocks are free again.
    Expired { request_id: String, blocks: usize },
    /// A Complete for a request that is not leased here (never was, or already done).
    CompletionForUnknown { request_id: String },
    /// A Complete from a connection that does not hold the request: ignored.
    CompletionFromStranger { request_id: String },
    /// Decode completed the request with `ok: false`.
    GaveUp { request_id: String },
}

struct Lease {
    blocks: Vec<u32>,
    /// The connections that prefilled or attached to this request (at most `readers_left`):
    /// only they may pull or complete it.
    owners: Vec<SessionId>,
    tokens: u64,
    expires: Instant,
    readers_left: u32,
    /// Pulls streaming from these blocks right now: the blocks are not freed under them.
    active_pulls: u32,
}

pub struct PrefillState {
    layout: KvLayout,
    config: StateConfig,
    free: Vec<u32>,
    live: HashMap<String, Lease>,
    expired: VecDeque<String>,
    events: VecDeque<Event>,
    /// Blocks came free, or a lease became freeable at its expiry, since the agent last
    /// asked: only then has a request waiting for blocks a reason to look again.
    wake_waiters: bool,
}

impl PrefillState {
    pub fn new(layout: KvLayout, config: StateConfig) -> Self {
        PrefillState {
            free: (0..layout.num_blocks).rev().collect(),
            layout,
            config,
            live: HashMap::new(),
            expired: VecDeque::new(),
            events: VecDeque::new(),
            wake_waiters: false,
        }
    }

    /// Whether waiters for blocks should look again (see `wake_waiters`); clears it.
    /// Waking them on anything else made each waiter's failed look wake all the others.
    pub fn take_wake_waiters(&mut self) -> bool {
        std::mem::take(&mut self.wake_waiters)
    }

    pub fn free_blocks(&self) -> u32 {
        self.free.len() as u32
    }

    /// The next thing that happened inside, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Checks a Prefill and takes (or shares) its blocks. Expired leases are swept
    /// first, so a waiter that asks again gets the blocks of a lease that ran out.
    pub fn prefill(
        &mut self,
        session: SessionId,
        request: &wire::Prefill,
        now: Instant,
    ) -> Result<Allocation, KvError> {
        let id = &request.request_id;
        self.check_target(id, request.dp_rank, request.tp_rank)?;
        let block_size = self.layout.shape.block_size as u64;
        let count = request.tokens.div_ceil(block_size);
        if request.tokens == 0 || count > MAX_BLOCKS as u64 {
            return Err(KvError::Refused(format!(
                "request {id} has {} tokens: kvxfer moves 1 to {} tokens per request at block size {block_size}",
                request.tokens,
                MAX_BLOCKS as u64 * block_size
            )));
        }
        if request.readers == 0 || request.readers > MAX_READERS {
            return Err(KvError::Refused(format!(
                "request {id} names {} readers: 1 to {MAX_READERS} decode ranks may read one request",
                request.readers
            )));
        }
        self.sweep(now);
        if let Some(lease) = self.live.get_mut(id) {
            return attach(lease, id, request, session).map(Allocation::Attached);
        }
        let pool = self.layout.num_blocks;
        if count > pool as u64 {
            return Err(KvError::Refused(format!(
                "request {id} needs {count} blocks but the pool has only {pool}: raise {}",
                Setting::PoolBlocks
            )));
        }
        // One connection cannot hold the whole pool with requests it never completes.
        let held: u64 = self
            .live
            .values()
            .filter(|l| l.owners.first() == Some(&session))
            .map(|l| l.blocks.len() as u64)
            .sum();
        let quota = self.config.session_quota.unwrap_or(pool / 2).max(1) as u64;
        if held > 0 && held + count > quota {
            return Err(KvError::Refused(format!(
                "request {id} needs {count} blocks, but this connection already holds {held} in requests it has not completed, and one connection may hold {quota} of the pool's {pool}: complete the earlier requests first, or ask for a larger per-connection quota on the prefill"
            )));
        }
        if (self.free.len() as u64) < count {
            return Ok(Allocation::Wait {
                free: self.free.len() as u32,
                retry_at: self.next_expiry(),
            });
        }
        let at = self.free.len() - count as usize;
        Ok(Allocation::Fresh(self.free.split_off(at)))
    }

    /// The refusal for a request still waiting for blocks when the caller's deadline passed.
    pub fn pool_full(&self, request: &wire::Prefill, waited: Duration) -> KvError {
        let count = request.tokens.div_ceil(self.layout.shape.block_size as u64);
        KvError::Refused(format!(
            "pool full: request {} needs {count} blocks, {} free after waiting {waited:?}; raise {} or lower the concurrency",
            request.request_id,
            self.free.len(),
            Setting::PoolBlocks
        ))
    }

    /// Leases fresh blocks to the request, once written. If another connection leased
    /// the same request meanwhile, the fresh blocks go back and this one attaches.
    pub fn publish(
        &mut self,
        session: SessionId,
        request: &wire::Prefill,
        blocks: Vec<u32>,
        now: Instant,
    ) -> Result<Vec<u32>, KvError> {
        let id = &request.request_id;
        if let Some(lease) = self.live.get_mut(id) {
            self.free.extend_from_slice(&blocks);
            self.wake_waiters = true;
            return attach(lease, id, request, session);
        }
        self.live.insert(
            id.clone(),
            Lease {
                blocks: blocks.clone(),
                owners: vec![session],
                tokens: request.tokens,
                expires: now + self.config.lease,
                readers_left: request.readers,
                active_pulls: 0,
            },
        );
        Ok(blocks)
    }

    /// Returns fresh blocks that will not be published.
    pub fn abandon(&mut self, blocks: &[u32]) {
        self.free.extend_from_slice(blocks);
        self.wake_waiters = true;
    }

    /// Checks a pull against the lease and marks it active; returns the pull's deadline
    /// (the lease's end plus a grace for a transfer already running).
    pub fn begin_pull(
        &mut self,
        session: SessionId,
        pull: &wire::Pull,
        now: Instant,
    ) -> Result<Instant, KvError> {
        let id = &pull.request_id;
        self.check_target(id, pull.dp_rank, pull.tp_rank)?;
        let heads = &self.layout.heads;
        if pull.head_start >= pull.head_end
            || pull.head_start < heads.start
            || pull.head_end > heads.end
        {
            return Err(KvError::Refused(format!(
                "request {id} asks for KV heads {}..{}, but this rank holds {}..{}: decode and prefill disagree on the TP sizes",
                pull.head_start, pull.head_end, heads.start, heads.end
            )));
        }
        if pull.blocks.is_empty() || pull.blocks.len() > MAX_BLOCKS {
            return Err(KvError::Refused(format!(
                "request {id} pulls {} blocks: 1 to {MAX_BLOCKS} per pull",
                pull.blocks.len(),
            )));
        }
        let mut seen = HashSet::with_capacity(pull.blocks.len());
        if let Some(dup) = pull.blocks.iter().find(|b| !seen.insert(**b)) {
            return Err(KvError::Refused(format!(
                "request {id} names block {dup} more than once in one pull: pull each block once"
            )));
        }
        self.sweep(now);
        let Some(lease) = self.live.get_mut(id) else {
            return Err(KvError::Refused(if self.expired.iter().any(|e| e == id) {
                format!(
                    "the lease on request {id} expired ({} ms) before decode pulled it: raise the prefill's lease or pull sooner",
                    self.config.lease.as_millis()
                )
            } else {
                format!("unknown request id {id}: it was never prefilled here, or decode already completed it")
            }));
        };
        if !lease.owners.contains(&session) {
            return Err(KvError::Refused(format!(
                "request {id} was not prefilled or attached on this connection: a decode pulls only its own requests"
            )));
        }
        for &block in &pull.blocks {
            self.layout.check_block(block)?;
            if !lease.blocks.contains(&block) {
                return Err(KvError::Refused(format!(
                    "block {block} is not one of request {id}'s {} blocks: pull the ids prefill returned",
                    lease.blocks.len()
                )));
            }
        }
        lease.active_pulls += 1;
        Ok(lease.expires + LEASE_GRACE)
    }

    /// A pull ended (sent, failed or cut). A lease that ran out while it streamed, or
    /// whose readers are all done, frees its blocks now.
    pub fn end_pull(&mut self, request_id: &str, now: Instant) {
        if let Some(lease) = self.live.get_mut(request_id) {
            lease.active_pulls = lease.active_pulls.saturating_sub(1);
            if lease.active_pulls == 0 {
                // Its expiry now counts for waiters (see next_expiry).
                self.wake_waiters = true;
                if lease.readers_left == 0 {
                    self.release(request_id);
                }
            }
        }
        self.sweep(now);
    }

    /// Decode is done with a request (or gave up on it). Each holder completes once;
    /// anyone else's Complete is ignored.
    pub fn complete(&mut self, session: SessionId, request_id: &str, ok: bool) {
        let Some(lease) = self.live.get_mut(request_id) else {
            self.events.push_back(Event::CompletionForUnknown {
                request_id: request_id.to_string(),
            });
            return;
        };
        let Some(position) = lease.owners.iter().position(|&s| s == session) else {
            self.events.push_back(Event::CompletionFromStranger {
                request_id: request_id.to_string(),
            });
            return;
        };
        lease.owners.remove(position);
        lease.readers_left = lease.readers_left.saturating_sub(1);
        let done = lease.readers_left == 0 && lease.active_pulls == 0;
        if !ok {
            self.events.push_back(Event::GaveUp {
                request_id: request_id.to_string(),
            });
        }
        if done {
            self.release(request_id);
        }
    }

    /// A connection closed: the requests it held lose that reader, and those left with
    /// none (and no pull running) free their blocks now, not at lease expiry.
    pub fn closed(&mut self, session: SessionId) {
        let mut done = Vec::new();
        for (id, lease) in &mut self.live {
            if let Some(position) = lease.owners.iter().position(|&s| s == session) {
                lease.owners.remove(position);
                lease.readers_left = lease.readers_left.saturating_sub(1);
                if lease.readers_left == 0 && lease.active_pulls == 0 {
                    done.push(id.clone());
                }
            }
        }
        for id in done {
            self.release(&id);
        }
    }

    /// When the next lease that no pull is reading runs out, if any. A lease a pull
    /// reads is freed when that pull ends, which wakes waiters; counting its expiry here
    /// would hand them a time already past, and they would spin until the pull ended.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.live
            .values()
            .filter(|l| l.active_pulls == 0)
            .map(|l| l.expires)
            .min()
    }

    /// Frees leases past their end that no pull is reading.
    pub fn sweep(&mut self, now: Instant) {
        let ended: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.expires <= now && l.active_pulls == 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let blocks = self.release(&id);
            self.events.push_back(Event::Expired {
                request_id: id.clone(),
                blocks,
            });
            if self.expired.len() == EXPIRED_MEMORY {
                self.expired.pop_front();
            }
            self.expired.push_back(id);
        }
    }

    fn release(&mut self, request_id: &str) -> usize {
        match self.live.remove(request_id) {
            Some(lease) => {
                self.free.extend_from_slice(&lease.blocks);
                self.wake_waiters = true;
                lease.blocks.len()
            }
            None => 0,
        }
    }

    fn check_target(&self, id: &str, dp_rank: u32, tp_rank: u32) -> Result<(), KvError> {
        if id.is_empty() || id.len() > MAX_REQUEST_ID {
            return Err(KvError::Refused(format!(
                "request id of {} bytes: ids must be 1 to {MAX_REQUEST_ID} bytes",
                id.len(),
            )));
        }
        if dp_rank != self.config.dp_rank {
            return Err(KvError::Refused(format!(
                "request {id} is addressed to DP rank {dp_rank}, but this prefill is DP rank {}: send it to the DP rank that prefilled it",
                self.config.dp_rank
            )));
        }
        if tp_rank != self.layout.tp_rank {
            return Err(KvError::Refused(format!(
                "request {id} is addressed to TP rank {tp_rank}, but this prefill is TP rank {} of {}: check the order of the prefill addresses",
                self.layout.tp_rank, self.layout.tp
            )));
        }
        Ok(())
    }
}

/// A TP reader joining a request another connection prefilled: allowed up to the
/// request's declared readers, each connection once.
fn attach(
    lease: &mut Lease,
    id: &str,
    request: &wire::Prefill,
    session: SessionId,
) -> Result<Vec<u32>, KvError> {
    if lease.tokens != request.tokens {
        return Err(KvError::Refused(format!(
            "request id {id} is already prefilled here with {} tokens, not {}: use a fresh request id",
            lease.tokens, request.tokens
        )));
    }
    if !lease.owners.contains(&session) {
        if lease.owners.len() as u32 >= lease.readers_left {
            return Err(KvError::Refused(format!(
                "request id {id} already has all its {} readers on other connections: use a fresh request id",
                lease.readers_left
            )));
        }
        lease.owners.push(session);
    }
    Ok(lease.blocks.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::KvShape;

    const LEASE: Duration = Duration::from_millis(500);

    /// A 8-block pool; each test moves its own clock.
    fn state(quota: Option<u32>) -> PrefillState {
        let layout = KvLayout::new(KvShape::raw(1024).unwrap(), 1, 0, 8).unwrap();
        PrefillState::new(
            layout,
            StateConfig {
                dp_rank: 0,
                lease: LEASE,
                session_quota: quota,
            },
        )
    }

    fn request(id: &str, blocks: u64, readers: u32) -> wire::Prefill {
        let block_size = KvShape::raw(1024).unwrap().block_size as u64;
        wire::Prefill {
            request_id: id.into(),
            tokens: blocks * block_size,
            dp_rank: 0,
            tp_rank: 0,
            readers,
            fill: false,
        }
    }

    fn pull(id: &str, blocks: &[u32]) -> wire::Pull {
        wire::Pull {
            request_id: id.into(),
            dp_rank: 0,
            tp_rank: 0,
            blocks: blocks.to_vec(),
            head_start: 0,
            head_end: 1,
            checksums: true,
            rdma: false,
            rails: 0,
        }
    }

    /// Prefills and publishes in one go, as the agent does when blocks are free.
    fn lease(state: &mut PrefillState, s: SessionId, r: &wire::Prefill, now: Instant) -> Vec<u32> {
        match state.prefill(s, r, now).unwrap() {
            Allocation::Fresh(blocks) => state.publish(s, r, blocks, now).unwrap(),
            Allocation::Attached(blocks) => blocks,
            wait @ Allocation::Wait { .. } => panic!("expected blocks, got {wait:?}"),
        }
    }

    fn refusal(result: Result<impl std::fmt::Debug, KvError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn only_the_connections_that_hold_a_request_may_pull_or_complete_it() {
        let mut st = state(None);
        let t = Instant::now();
        let r = request("a", 2, 1);
        let blocks = lease(&mut st, 1, &r, t);
        let theft = refusal(st.begin_pull(2, &pull("a", &blocks), t));
        assert!(
            theft.contains("not prefilled or attached on this connection"),
            "{theft}"
        );
        st.complete(2, "a", true);
        assert_eq!(
            st.poll_event(),
            Some(Event::CompletionFromStranger {
                request_id: "a".into()
            })
        );
        // The owner is unaffected: it pulls and completes, and the blocks come back.
        assert_eq!(
            st.begin_pull(1, &pull("a", &blocks), t).unwrap(),
            t + LEASE + LEASE_GRACE
        );
        st.end_pull("a", t);
        st.complete(1, "a", true);
        assert_eq!(st.free_blocks(), 8);
        st.complete(1, "a", true);
        assert!(matches!(
            st.poll_event(),
            Some(Event::CompletionForUnknown { .. })
        ));
    }

    #[test]
    fn a_tp_reader_attaches_up_to_the_declared_readers_and_the_last_one_frees() {
        let mut st = state(None);
        let t = Instant::now();
        let r = request("a", 3, 2);
        let blocks = lease(&mut st, 1, &r, t);
        assert_eq!(lease(&mut st, 2, &r, t), blocks);
        // Asking again on the same connection is not a new reader.
        assert_eq!(lease(&mut st, 2, &r, t), blocks);
        let third = refusal(st.prefill(3, &r, t));
        assert!(third.contains("already has all its 2 readers"), "{third}");
        let other_size = refusal(st.prefill(3, &request("a", 1, 2), t));
        assert!(
            other_size.contains("use a fresh request id"),
            "{other_size}"
        );
        st.complete(1, "a", true);
        assert_eq!(st.free_blocks(), 5);
        st.complete(2, "a", true);
        assert_eq!(st.free_blocks(), 8);
    }

    #[test]
    fn two_fresh_leases_for_one_request_become_one() {
        let mut st = state(None);
        let t = Instant::now();
        let r = request("a", 2, 2);
        let (Allocation::Fresh(first), Allocation::Fresh(second)) =
            (st.prefill(1, &r, t).unwrap(), st.prefill(2, &r, t).unwrap())
        else {
            panic!("both should get fresh blocks");
        };
        assert_eq!(st.free_blocks(), 4);
        assert_eq!(st.publish(1, &r, first.clone(), t).unwrap(), first);
        assert_eq!(st.publish(2, &r, second, t).unwrap(), first);
        assert_eq!(st.free_blocks(), 6);
    }

    #[test]
    fn a_connection_may_not_hold_more_than_its_quota_but_always_gets_its_first_request() {
        let mut st = state(Some(2));
        let t = Instant::now();
        let big = request("big", 3, 1);
        lease(&mut st, 1, &big, t);
        let next = refusal(st.prefill(1, &request("next", 1, 1), t));
        assert!(
            next.contains("already holds 3") && next.contains("may hold 2"),
            "{next}"
        );
        // Another connection has its own quota.
        lease(&mut st, 2, &request("other", 2, 1), t);
        st.complete(1, "big", true);
        lease(&mut st, 1, &request("next", 1, 1), t);
    }

    #[test]
    fn a_waiter_gets_the_blocks_of_a_lease_that_ran_out_and_the_late_pull_is_told_why() {
        let mut st = state(None);
        let t = Instant::now();
        let held = lease(&mut st, 1, &request("a", 8, 1), t);
        let r = request("b", 2, 1);
        assert_eq!(
            st.prefill(2, &r, t).unwrap(),
            Allocation::Wait {
                free: 0,
                retry_at: Some(t + LEASE)
            }
        );
        let later = t + LEASE;
        assert!(matches!(st.prefill(2, &r, later).unwrap(), Allocation::Fresh(b) if b.len() == 2));
        assert_eq!(
            st.poll_event(),
            Some(Event::Expired {
                request_id: "a".into(),
                blocks: 8
            })
        );
        let late = refusal(st.begin_pull(1, &pull("a", &held), later));
        assert!(
            late.contains("expired (500 ms) before decode pulled it"),
            "{late}"
        );
        let err = st.pool_full(&request("c", 8, 1), Duration::from_secs(10));
        assert!(
            err.to_string()
                .starts_with("pool full: request c needs 8 blocks, 6 free"),
            "{err}"
        );
    }

    #[test]
    fn a_running_pull_keeps_its_blocks_past_the_lease_until_it_ends() {
        let mut st = state(None);
        let t = Instant::now();
        let blocks = lease(&mut st, 1, &request("a", 4, 1), t);
        let deadline = st.begin_pull(1, &pull("a", &blocks), t).unwrap();
        assert_eq!(deadline, t + LEASE + LEASE_GRACE);
        st.sweep(t + LEASE * 2);
        assert_eq!(st.free_blocks(), 4, "freed under a running pull");
        st.end_pull("a", t + LEASE * 2);
        assert_eq!(st.free_blocks(), 8);
        assert!(matches!(
            st.poll_event(),
            Some(Event::Expired { blocks: 4, .. })
        ));
    }

    #[test]
    fn a_closed_connection_frees_what_only_it_was_reading() {
        let mut st = state(Some(8));
        let t = Instant::now();
        lease(&mut st, 1, &request("mine", 2, 1), t);
        let shared = request("shared", 3, 2);
        lease(&mut st, 1, &shared, t);
        lease(&mut st, 2, &shared, t);
        st.closed(1);
        assert_eq!(st.free_blocks(), 5, "the shared request still has a reader");
        st.closed(2);
        assert_eq!(st.free_blocks(), 8);
        assert_eq!(st.poll_event(), None, "closing is not an expiry");
    }

    #[test]
    fn pulls_that_name_blocks_twice_or_blocks_of_others_or_other_heads_are_refused() {
        let mut st = state(None);
        let t = Instant::now();
        let a = lease(&mut st, 1, &request("a", 2, 1), t);
        let b = lease(&mut st, 1, &request("b", 2, 1), t);
        let twice = refusal(st.begin_pull(1, &pull("a", &[a[0], a[0]]), t));
        assert!(twice.contains("more than once"), "{twice}");
        let foreign = refusal(st.begin_pull(1, &pull("a", &[b[0]]), t));
        assert!(
            foreign.contains("is not one of request a's 2 blocks"),
            "{foreign}"
        );
        let range = refusal(st.begin_pull(1, &pull("a", &[99]), t));
        assert!(range.contains("out of range"), "{range}");
        let heads = refusal(st.begin_pull(
            1,
            &wire::Pull {
                head_end: 2,
                ..pull("a", &a)
            },
            t,
        ));
        assert!(heads.contains("KV heads 0..2"), "{heads}");
        let unknown = refusal(st.begin_pull(1, &pull("zzz", &a), t));
        assert!(unknown.contains("unknown request id zzz"), "{unknown}");
        // None of the refusals left a pull marked active: the leases still end on time.
        st.sweep(t + LEASE);
        assert_eq!(st.free_blocks(), 8);
    }

    #[test]
    fn requests_the_pool_cannot_hold_or_addressed_elsewhere_are_refused_at_once() {
        let mut st = state(None);
        let t = Instant::now();
        let cases = [
            (request("huge", 9, 1), "the pool has only 8"),
            (request("none", 0, 1), "has 0 tokens"),
            (request("nobody", 1, 0), "names 0 readers"),
            (request("", 1, 1), "ids must be 1 to"),
            (
                wire::Prefill {
                    dp_rank: 3,
                    ..request("dp", 1, 1)
                },
                "DP rank 3",
            ),
            (
                wire::Prefill {
                    tp_rank: 1,
                    ..request("tp", 1, 1)
                },
                "TP rank 1",
            ),
        ];
        for (r, expected) in cases {
            let e = refusal(st.prefill(1, &r, t));
            assert!(e.contains(expected), "{expected}: {e}");
        }
        assert_eq!(st.free_blocks(), 8);
    }

    /// Hole: every look at a full pool woke all other waiters, which looked and woke it
    /// back: with a full pool and a few requests queued, prefill spun both cores.
    #[test]
    fn waiters_are_woken_only_when_blocks_come_free_or_can_at_a_known_time() {
        let mut st = state(None);
        let t = Instant::now();
        let held = lease(&mut st, 1, &request("a", 6, 1), t);
        let b = request("b", 4, 1);
        assert!(matches!(
            st.prefill(2, &b, t).unwrap(),
            Allocation::Wait { .. }
        ));
        assert!(
            !st.take_wake_waiters(),
            "a look at a full pool woke waiters"
        );
        // A pull reading the lease past its end: no retry time already past, no wake.
        st.begin_pull(1, &pull("a", &held), t).unwrap();
        let late = t + LEASE * 2;
        assert_eq!(
            st.prefill(2, &b, late).unwrap(),
            Allocation::Wait {
                free: 2,
                retry_at: None
            }
        );
        assert!(!st.take_wake_waiters());
        // The pull ends: the expired lease is freed and the waiters are woken, once.
        st.end_pull("a", late);
        assert!(st.take_wake_waiters());
        assert!(!st.take_wake_waiters());
        let Allocation::Fresh(fresh) = st.prefill(2, &b, late).unwrap() else {
            panic!("the freed blocks were not handed out");
        };
        assert!(!st.take_wake_waiters());
        // Returned fresh blocks and completed requests wake them too.
        st.abandon(&fresh);
        assert!(st.take_wake_waiters());
        lease(&mut st, 2, &b, late);
        st.complete(2, "b", true);
        assert!(st.take_wake_waiters());
        assert_eq!(st.free_blocks(), 8);
    }
}
