//! One pull as decode sees it, without I/O (quinn-proto's model): prefill's messages,
//! the data's own checksums and the time go in; what to do next comes out. It is the one
//! place that decides a pull is done, and it says so only when every byte announced has
//! landed and every block's CRC32C matches the sender's. Tested in memory.

use crate::wire::KvMessage;
use crate::KvError;
use fabric::{FabricError, ProtocolError};
use std::time::{Duration, Instant};

/// What the link must do next for this pull.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Read exactly this many bytes of KV data from the stream, then [`PullState::landed`].
    Receive { bytes: u64 },
    /// READ every piece over RDMA, then [`PullState::landed`].
    Read,
    /// Wait for the next message from prefill (the checksums after the data).
    Await,
    /// Complete and verified: this many bytes.
    Done { bytes: u64 },
}

/// What the pull asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Bytes of KV data the pull moves.
    pub bytes: u64,
    /// Whether each block's CRC32C is compared with the sender's.
    pub checksums: bool,
    /// Decode READs the data over RDMA (else prefill streams it over TCP).
    pub rdma: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Pull sent; waiting for Sending (TCP) or Granted (RDMA).
    Asked,
    Receiving,
    /// TCP data landed; waiting for Sent with the sender's checksums.
    Landed,
    Done,
    Failed,
}

pub struct PullState {
    request_id: String,
    peer: String,
    /// Remote block ids, in pull order (to name a corrupted one).
    blocks: Vec<u32>,
    expected_bytes: u64,
    checksums: bool,
    rdma: bool,
    deadline: Instant,
    timeout: Duration,
    phase: Phase,
    /// Our CRC32C per block once the data landed.
    ours: Vec<u32>,
    /// The sender's, when they came before the data (RDMA grants carry them).
    theirs: Option<Vec<u32>>,
}

impl PullState {
    /// A pull of `blocks` from `peer`, that must end by `now + timeout`.
    pub fn new(
        request_id: &str,
        peer: &str,
        blocks: &[u32],
        expect: Expect,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        PullState {
            request_id: request_id.to_string(),
            peer: peer.to_string(),
            blocks: blocks.to_vec(),
            expected_bytes: expect.bytes,
            checksums: expect.checksums,
            rdma: expect.rdma,
            deadline: now + timeout,
            timeout,
            phase: Phase::Asked,
            ours: Vec::new(),
            theirs: None,
        }
    }

    /// What the link is waiting for, for its timeout error ("... from PEER").
    pub fn waiting_for(&self) -> &'static str {
        match self.phase {
            Phase::Asked if self.rdma => "waiting for the RDMA grant from",
            Phase::Asked => "waiting for KV blocks from",
            _ => "waiting for checksums from",
        }
    }

    /// When the whole pull must be over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A message from prefill for this pull.
    pub fn on_message(&mut self, message: KvMessage, now: Instant) -> Result<Next, KvError> {
        self.check_time(now)?;
        let id = self.request_id.as_str();
        let next = match (self.phase, message) {
            (Phase::Asked, KvMessage::Sending(s)) if !self.rdma && s.request_id == id => {
                if s.bytes != self.expected_bytes {
                    // The data that follows cannot be framed: the connection is unusable.
                    return self.fail(
                        FabricError::Protocol(ProtocolError::BadPayload {
                            kind: "Sending",
                            reason: format!(
                                "{} bytes announced for request {}, {} expected; run the same kvxfer version on both nodes",
                                s.bytes, s.request_id, self.expected_bytes
                            ),
                        })
                        .into(),
                    );
                }
                self.phase = Phase::Receiving;
                Next::Receive { bytes: s.bytes }
            }
            (Phase::Asked, KvMessage::Granted(g)) if self.rdma && g.request_id == id => {
                if self.checksums {
                    self.theirs = Some(g.crc32c);
                }
                self.phase = Phase::Receiving;
                Next::Read
            }
            (Phase::Landed, KvMessage::Sent(s)) if s.request_id == id => {
                if self.checksums {
                    self.theirs = Some(s.crc32c);
                }
                self.finish()?
            }
            (phase, other) => {
                let expected = match phase {
                    Phase::Asked if self.rdma => "Granted",
                    Phase::Asked => "Sending",
                    Phase::Landed => "Sent",
                    _ => "nothing (the pull is not waiting for a message)",
                };
                return self.fail(FabricError::unexpected(expected, &other).into());
            }
        };
        Ok(next)
    }

    /// Every byte of the pull is in place; `ours` holds each block's CRC32C (empty
    /// without checksums).
    pub fn landed(&mut self, ours: Vec<u32>, now: Instant) -> Result<Next, KvError> {
        self.check_time(now)?;
        if self.phase != Phase::Receiving {
            return self.fail(KvError::Integrity(format!(
                "request {}: data counted as landed before prefill announced it",
                self.request_id
            )));
        }
        self.ours = ours;
        if self.rdma {
            return self.finish();
        }
        self.phase = Phase::Landed;
        Ok(Next::Await)
    }

    /// Whether the pull completed and verified.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn finish(&mut self) -> Result<Next, KvError> {
        if let Some(theirs) = self.theirs.take() {
            if let Err(e) = self.compare(&theirs) {
                return self.fail(e);
            }
        }
        self.phase = Phase::Done;
        Ok(Next::Done {
            bytes: self.expected_bytes,
        })
    }

    /// Compares our per-block CRC32C with the sender's; names the first bad block.
    fn compare(&self, theirs: &[u32]) -> Result<(), KvError> {
        let (ours, id, peer) = (&self.ours, &self.request_id, &self.peer);
        if theirs.len() != ours.len() {
            return Err(KvError::Integrity(format!(
                "prefill {peer} sent {} checksums for {} blocks of request {id}",
                theirs.len(),
                ours.len()
            )));
        }
        match (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
            Some(i) => Err(KvError::Integrity(format!(
                "request {id}: block {i} (remote id {}) arrived corrupted (CRC32C {:08x}, sender's {:08x})",
                self.blocks.get(i).copied().unwrap_or(u32::MAX),
                ours[i],
                theirs[i]
            ))),
            None => Ok(()),
        }
    }

    fn check_time(&mut self, now: Instant) -> Result<(), KvError> {
        if now >= self.deadline && self.phase != Phase::Done {
            let what = format!("pulling request {} from {}", self.request_id, self.peer);
            return self.fail(
                FabricError::Timeout {
                    what,
                    after: self.timeout,
                }
                .into(),
            );
        }
        Ok(())
    }

    fn fail<T>(&mut self, error: KvError) -> Result<T, KvError> {
        self.phase = Phase::Failed;
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Granted, Sending, Sent};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn expect(bytes: u64, checksums: bool, rdma: bool) -> Expect {
        Expect {
            bytes,
            checksums,
            rdma,
        }
    }

    fn tcp(t: Instant) -> PullState {
        PullState::new(
            "r1",
            "10.0.0.2:18600",
            &[7, 8],
            expect(4096, true, false),
            t,
            TIMEOUT,
        )
    }

    fn sending(bytes: u64) -> KvMessage {
        KvMessage::Sending(Sending {
            request_id: "r1".into(),
            bytes,
        })
    }

    fn sent(crc32c: Vec<u32>) -> KvMessage {
        KvMessage::Sent(Sent {
            request_id: "r1".into(),
            crc32c,
        })
    }

    #[test]
    fn a_tcp_pull_is_done_only_after_its_data_and_matching_checksums() {
        let t = Instant::now();
        let mut pull = tcp(t);
        assert_eq!(
            pull.on_message(sending(4096), t).unwrap(),
            Next::Receive { bytes: 4096 }
        );
        assert!(!pull.is_done());
        assert_eq!(pull.landed(vec![1, 2], t).unwrap(), Next::Await);
        assert!(!pull.is_done());
        assert_eq!(
            pull.on_message(sent(vec![1, 2]), t).unwrap(),
            Next::Done { bytes: 4096 }
        );
        assert!(pull.is_done());
    }

    #[test]
    fn a_corrupted_block_is_named_and_the_pull_never_completes() {
        let t = Instant::now();
        let mut pull = tcp(t);
        pull.on_message(sending(4096), t).unwrap();
        pull.landed(vec![1, 2], t).unwrap();
        let e = pull
            .on_message(sent(vec![1, 3]), t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("block 1 (remote id 8) arrived corrupted"), "{e}");
        assert!(!pull.is_done());
        let short = {
            let mut pull = tcp(t);
            pull.on_message(sending(4096), t).unwrap();
            pull.landed(vec![1, 2], t).unwrap();
            pull.on_message(sent(vec![1]), t).unwrap_err().to_string()
        };
        assert!(short.contains("sent 1 checksums for 2 blocks"), "{short}");
    }

    #[test]
    fn messages_out_of_order_or_for_another_request_fail_the_pull() {
        let t = Instant::now();
        // Checksums before any data: nothing landed, so nothing may complete.
        let mut early = tcp(t);
        let e = early
            .on_message(sent(vec![1, 2]), t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Sending"), "{e}");
        assert!(!early.is_done());
        let mut landed_early = tcp(t);
        assert!(landed_early.landed(vec![1, 2], t).is_err());
        let mut other = tcp(t);
        let e = other
            .on_message(
                KvMessage::Sending(Sending {
                    request_id: "r2".into(),
                    bytes: 4096,
                }),
                t,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("Sending"), "{e}");
        let mut wrong_size = tcp(t);
        let e = wrong_size
            .on_message(sending(4095), t)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4095 bytes announced for request r1, 4096 expected"),
            "{e}"
        );
    }

    #[test]
    fn the_timeout_bounds_the_whole_pull_not_each_message() {
        let t = Instant::now();
        let mut pull = tcp(t);
        pull.on_message(sending(4096), t + TIMEOUT / 2).unwrap();
        let e = pull.landed(vec![1, 2], t + TIMEOUT).unwrap_err();
        assert!(
            matches!(e, KvError::Fabric(FabricError::Timeout { .. })),
            "{e:?}"
        );
        assert!(!pull.is_done());
    }

    #[test]
    fn an_rdma_pull_checks_the_granted_checksums_after_its_reads() {
        let t = Instant::now();
        let mut pull = PullState::new("r1", "p", &[3], expect(2048, true, true), t, TIMEOUT);
        let granted = KvMessage::Granted(Granted {
            request_id: "r1".into(),
            crc32c: vec![9],
        });
        assert_eq!(pull.on_message(granted, t).unwrap(), Next::Read);
        let e = pull.landed(vec![8], t).unwrap_err().to_string();
        assert!(e.contains("block 0 (remote id 3) arrived corrupted"), "{e}");
        let mut good = PullState::new("r1", "p", &[3], expect(2048, true, true), t, TIMEOUT);
        good.on_message(
            KvMessage::Granted(Granted {
                request_id: "r1".into(),
                crc32c: vec![9],
            }),
            t,
        )
        .unwrap();
        assert_eq!(good.landed(vec![9], t).unwrap(), Next::Done { bytes: 2048 });
        // A Sending on an RDMA pull is out of place.
        let mut confused = PullState::new("r1", "p", &[3], expect(2048, true, true), t, TIMEOUT);
        assert!(confused.on_message(sending(2048), t).is_err());
    }

    #[test]
    fn without_checksums_the_data_alone_completes_it() {
        let t = Instant::now();
        let mut pull = PullState::new("r1", "p", &[1], expect(1024, false, false), t, TIMEOUT);
        pull.on_message(sending(1024), t).unwrap();
        pull.landed(Vec::new(), t).unwrap();
        assert_eq!(
            pull.on_message(sent(Vec::new()), t).unwrap(),
            Next::Done { bytes: 1024 }
        );
    }
}
