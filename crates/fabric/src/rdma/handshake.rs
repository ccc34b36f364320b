//! The RDMA connection handshake, sans-IO: what each side tells the other over the
//! versioned control channel (QPN, PSN, GID, MTU, and the rkey/address/length of its
//! region), and the pure checks on what arrives. perftest's port-18515 exchange, but
//! versioned, bounded, and with every remote number checked before it is used.
//!
//! Flow: client `RdmaRequest {test, endpoint}` -> server `RdmaAccept {endpoint}` (its QPs
//! already at RTR) -> both run -> client `Done` -> server `RdmaResults`.

use super::mr::RemoteRegion;
use crate::cpu::CpuUsage;
use crate::test_kind::TestKind;
use serde::{Deserialize, Serialize};
use std::net::Ipv6Addr;

pub const MAX_QPS: u32 = 64;
pub const MAX_TX_DEPTH: u32 = 8192;
pub const MAX_INLINE: u32 = 1024;
pub const MAX_ITERATIONS: u64 = 1 << 32;
/// Largest message; the layout below keeps each side's region within [`REGION_BUDGET`].
pub const MAX_SIZE: u64 = 64 << 20;
/// Bandwidth tests rotate over this many bytes of slots per side at most.
pub const REGION_BUDGET: u64 = 64 << 20;
/// Queue pair numbers and PSNs are 24-bit on the wire.
const QPN_MASK: u32 = 0x00ff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RdmaOp {
    Write,
    Read,
    Send,
}

impl RdmaOp {
    /// As flags and JSON spell it.
    pub fn word(self) -> &'static str {
        match self {
            RdmaOp::Write => "write",
            RdmaOp::Read => "read",
            RdmaOp::Send => "send",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RdmaOp::Write => "RDMA WRITE",
            RdmaOp::Read => "RDMA READ",
            RdmaOp::Send => "SEND",
        }
    }
}

/// What the client wants measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaTest {
    pub kind: TestKind,
    pub op: RdmaOp,
    pub size: u64,
    pub qps: u32,
    /// Work requests in flight per QP.
    pub tx_depth: u32,
    /// Messages per QP (bw) or round trips (lat).
    pub iterations: u64,
    /// Check every byte moved against the pattern and report wrong bytes.
    pub validate: bool,
    /// Messages up to this size go inline (copied into the WQE by the CPU).
    pub inline: u32,
    /// Pattern seed for --validate.
    pub seed: u64,
}

/// One queue pair's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpAddress {
    pub qpn: u32,
    pub psn: u32,
}

/// One side's half of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaEndpoint {
    pub device: String,
    pub lid: u16,
    pub gid: Ipv6Addr,
    pub gid_index: u32,
    /// The port's active MTU in bytes; the path uses the smaller of both sides'.
    pub mtu: u32,
    pub qps: Vec<QpAddress>,
    pub region: RemoteRegion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaRequest {
    pub test: RdmaTest,
    pub endpoint: RdmaEndpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaAccept {
    pub endpoint: RdmaEndpoint,
}

/// The server's side of the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdmaResults {
    /// Bytes the server checked (--validate) and how many were wrong.
    pub checked_bytes: u64,
    pub wrong_bytes: u64,
    /// Messages the server received (send) or echoed (lat).
    pub messages: u64,
    pub cpu: CpuUsage,
}

/// How a test lays out each side's registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Message slots per QP (bandwidth tests rotate over them).
    pub slots: u64,
    /// Bytes per side.
    pub region: u64,
}

impl RdmaTest {
    /// Bounds every field; both sides run it (the server never trusts the client).
    pub fn validate(&self) -> Result<(), String> {
        if self.size == 0 || self.size > MAX_SIZE {
            return Err(format!(
                "message size {} is out of range (1 byte .. {} MiB)",
                self.size,
                MAX_SIZE >> 20
            ));
        }
        if self.qps == 0 || self.qps > MAX_QPS {
            return Err(format!("{} QPs is out of range (1 .. {MAX_QPS})", self.qps));
        }
        if self.tx_depth == 0 || self.tx_depth > MAX_TX_DEPTH {
            return Err(format!(
                "tx depth {} is out of range (1 .. {MAX_TX_DEPTH})",
                self.tx_depth
            ));
        }
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(format!(
                "{} iterations is out of range (1 .. 2^32)",
                self.iterations
            ));
        }
        if self.inline > MAX_INLINE {
            return Err(format!(
                "inline size {} is out of range (0 .. {MAX_INLINE})",
                self.inline
            ));
        }
        if self.kind == TestKind::Lat && self.qps != 1 {
            return Err("a latency test uses one QP".into());
        }
        if self.size > u32::MAX as u64 {
            return Err("message size exceeds a work request's 32-bit length".into());
        }
        Ok(())
    }

    pub fn layout(&self) -> Layout {
        match self.kind {
            // Receive slot at 0, send slot after it.
            TestKind::Lat => Layout {
                slots: 1,
                region: 2 * self.size,
            },
            TestKind::Bw => {
                let per_qp = (REGION_BUDGET / self.qps as u64 / self.size).max(1);
                let slots = per_qp.min(self.tx_depth as u64);
                Layout {
                    slots,
                    region: slots * self.size * self.qps as u64,
                }
            }
        }
    }

    /// Where message `n` of QP `qp` lives in either side's region.
    pub fn slot_offset(&self, layout: &Layout, qp: u32, n: u64) -> u64 {
        (qp as u64 * layout.slots + n % layout.slots) * self.size
    }
}

/// Checks the peer's half against the test before any QP is pointed at it.
pub fn check_endpoint(test: &RdmaTest, peer: &RdmaEndpoint) -> Result<(), String> {
    if peer.qps.len() != test.qps as usize {
        return Err(format!(
            "peer offered {} QPs, the test uses {}",
            peer.qps.len(),
            test.qps
        ));
    }
    for qp in &peer.qps {
        if qp.qpn & !QPN_MASK != 0 || qp.qpn == 0 {
            return Err(format!("peer QP number {:#x} is not a 24-bit QPN", qp.qpn));
        }
        if qp.psn & !QPN_MASK != 0 {
            return Err(format!("peer PSN {:#x} is not 24-bit", qp.psn));
        }
    }
    if super::device::mtu_from_bytes(peer.mtu).is_none() {
        return Err(format!(
            "peer MTU {} is not an IB MTU (256, 512, 1024, 2048, 4096)",
            peer.mtu
        ));
    }
    peer.region.validate(test.layout().region)
}

/// The path MTU both sides must use: the smaller active MTU (a larger one on either
/// side makes the smaller side drop packets silently).
pub fn path_mtu(local: u32, remote: u32) -> u32 {
    local.min(remote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{decode, encode, HEADER_LEN, MAX_PAYLOAD};
    use crate::error::ProtocolError;
    use crate::perf::wire::PerfMessage as Message;

    fn test() -> RdmaTest {
        RdmaTest {
            kind: TestKind::Bw,
            op: RdmaOp::Write,
            size: 65536,
            qps: 2,
            tx_depth: 128,
            iterations: 1000,
            validate: true,
            inline: 0,
            seed: 7,
        }
    }

    fn endpoint(qps: u32, region: u64) -> RdmaEndpoint {
        RdmaEndpoint {
            device: "rxe0".into(),
            lid: 0,
            gid: "fe80::5054:ff:fe12:3456".parse().unwrap(),
            gid_index: 1,
            mtu: 1024,
            qps: (0..qps)
                .map(|i| QpAddress {
                    qpn: 0x11 + i,
                    psn: 0x123456,
                })
                .collect(),
            region: RemoteRegion {
                addr: 0x7f00_0000_0000,
                len: region,
                rkey: 0x1234,
            },
        }
    }

    fn round_trip(message: Message) {
        let mut bytes = Vec::new();
        encode(&message, &mut bytes);
        let (back, used): (Message, usize) = decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, message);
    }

    #[test]
    fn handshake_messages_round_trip() {
        let t = test();
        let region = t.layout().region;
        round_trip(Message::RdmaRequest(RdmaRequest {
            test: t.clone(),
            endpoint: endpoint(2, region),
        }));
        round_trip(Message::RdmaAccept(RdmaAccept {
            endpoint: endpoint(2, region),
        }));
        round_trip(Message::RdmaResults(RdmaResults {
            checked_bytes: 10,
            wrong_bytes: 0,
            messages: 3,
            cpu: CpuUsage::default(),
        }));
    }

    #[test]
    fn other_version_and_oversize_are_rejected() {
        let mut bytes = Vec::new();
        encode(
            &Message::RdmaAccept(RdmaAccept {
                endpoint: endpoint(1, 4096),
            }),
            &mut bytes,
        );
        let mut old = bytes.clone();
        old[4..6].copy_from_slice(&99u16.to_be_bytes());
        let r: Result<Option<(Message, usize)>, _> = decode(&old);
        assert!(matches!(
            r,
            Err(ProtocolError::VersionMismatch { peer: 99, .. })
        ));
        let mut big = bytes[..HEADER_LEN].to_vec();
        big[7..11].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        let r: Result<Option<(Message, usize)>, _> = decode(&big);
        assert!(matches!(r, Err(ProtocolError::Oversize { .. })));
    }

    #[test]
    fn peer_endpoints_are_checked() {
        let t = test();
        let need = t.layout().region;
        assert!(check_endpoint(&t, &endpoint(2, need)).is_ok());
        let short = check_endpoint(&t, &endpoint(2, need - 1)).unwrap_err();
        assert!(short.contains("the test needs"), "{short}");
        assert!(check_endpoint(&t, &endpoint(3, need))
            .unwrap_err()
            .contains("3 QPs"));
        let mut bad = endpoint(2, need);
        bad.qps[1].psn = 1 << 24;
        assert!(check_endpoint(&t, &bad).unwrap_err().contains("PSN"));
        let mut bad = endpoint(2, need);
        bad.mtu = 1500;
        assert!(check_endpoint(&t, &bad).unwrap_err().contains("MTU"));
        let mut bad = endpoint(2, need);
        bad.region.addr = u64::MAX - 100;
        assert!(check_endpoint(&t, &bad).unwrap_err().contains("wraps"));
    }

    #[test]
    fn tests_are_bounded_and_laid_out_within_budget() {
        assert!(test().validate().is_ok());
        for bad in [
            RdmaTest { size: 0, ..test() },
            RdmaTest {
                size: MAX_SIZE + 1,
                ..test()
            },
            RdmaTest { qps: 0, ..test() },
            RdmaTest {
                qps: MAX_QPS + 1,
                ..test()
            },
            RdmaTest {
                tx_depth: 0,
                ..test()
            },
            RdmaTest {
                iterations: 0,
                ..test()
            },
            RdmaTest {
                inline: MAX_INLINE + 1,
                ..test()
            },
            RdmaTest {
                kind: TestKind::Lat,
                ..test()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let big = RdmaTest {
            size: 8 << 20,
            qps: 4,
            ..test()
        };
        let layout = big.layout();
        assert!(layout.region <= REGION_BUDGET.max(big.size * 4));
        assert_eq!(big.slot_offset(&layout, 3, 0), 3 * layout.slots * big.size);
        let t = test();
        let l = t.layout();
        assert_eq!(l.slots, 128);
        assert_eq!(t.slot_offset(&l, 0, 129), t.size);
        assert_eq!(path_mtu(4096, 1024), 1024);
        assert_eq!(path_mtu(1024, 4096), 1024);
    }
}
