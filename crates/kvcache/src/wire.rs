//! kvxfer's messages, carried in fabric's versioned control frames after the usual
//! Hello/auth opening (tool "kvxfer"). Request data follows a `Sending` frame as raw
//! bytes on the same connection, in plan order.

use crate::layout::KvShape;
use fabric::control::{empty_payload, parse_payload, Wire};
use fabric::rdma::RdmaEndpoint;
use fabric::ProtocolError;
use serde::{Deserialize, Serialize};

/// Longest request id accepted (vLLM's are UUID-based, well under this).
pub const MAX_REQUEST_ID: usize = 256;
/// Most blocks one Pull or Prefill may name (keeps the frame under 64 KiB).
pub const MAX_BLOCKS: usize = 8192;

/// Decode introduces itself and its view of the KV layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    pub shape: KvShape,
    pub hash: String,
    pub decode_tp: u32,
    pub decode_rank: u32,
}

/// Prefill's answer: its layout, its place in the deployment, its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub shape: KvShape,
    pub hash: String,
    pub tp: u32,
    pub tp_rank: u32,
    pub dp_rank: u32,
    pub num_blocks: u32,
    pub lease_ms: u64,
    /// Multi-rail: prefill's address on each rail, this connection's rail first. Decode
    /// opens one more connection to each other rail with `AttachRail`.
    #[serde(default)]
    pub rails: Vec<String>,
    /// What those connections present to join this session (random, per session).
    #[serde(default)]
    pub rail_cookie: String,
}

/// First message of a rail connection: "I carry data for the session with this cookie,
/// as its rail `index`" (1.., the session's own connection being rail 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRail {
    pub cookie: String,
    pub index: u32,
}

/// "Prefill this prompt": allocate and fill its blocks, hold them under a lease until
/// `readers` decode ranks said Complete (or the lease expires). The same id again with
/// the same length returns the same blocks (every decode rank of a TP group asks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefill {
    pub request_id: String,
    pub tokens: u64,
    pub dp_rank: u32,
    pub tp_rank: u32,
    pub readers: u32,
    /// Write the deterministic pattern (needed to verify content); off for pure speed runs.
    pub fill: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefilled {
    pub request_id: String,
    pub blocks: Vec<u32>,
}

/// "Send me global heads `head_start..head_end` of these blocks of this request."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    pub request_id: String,
    pub dp_rank: u32,
    pub tp_rank: u32,
    pub blocks: Vec<u32>,
    pub head_start: u32,
    pub head_end: u32,
    pub checksums: bool,
    /// Decode READs the blocks itself over the connected QP; prefill answers `Granted`.
    #[serde(default)]
    pub rdma: bool,
    /// Stripe the data over this many rails (0 or 1: this connection alone); block i
    /// travels on rail i mod rails, in plan order within each rail.
    #[serde(default)]
    pub rails: u32,
}

/// An RDMA pull is accepted: the blocks stay leased until `ReadDone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub request_id: String,
    /// CRC32C per block pair, in plan order (empty without checksums).
    pub crc32c: Vec<u32>,
}

/// Decode's READs of a granted pull finished (or failed): prefill may reuse the blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadDone {
    pub request_id: String,
}

/// The pull is accepted; exactly `bytes` raw bytes follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sending {
    pub request_id: String,
    pub bytes: u64,
}

/// After the data: CRC32C of each block pair's stream bytes (empty without checksums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub request_id: String,
    pub crc32c: Vec<u32>,
}

/// Decode is done with the request's blocks on this rank (`ok` false: it gave up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    pub request_id: String,
    pub ok: bool,
}

/// A refusal: of one request (`request_id` set; the session goes on) or of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub request_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvMessage {
    Attach(Attach),
    Welcome(Welcome),
    Prefill(Prefill),
    Prefilled(Prefilled),
    Pull(Pull),
    Sending(Sending),
    Sent(Sent),
    Complete(Complete),
    Refused(Refused),
    Bye,
    /// Decode's QP address and pool region; prefill connects its QP and answers
    /// `RdmaConnected` with its own.
    RdmaConnect(RdmaEndpoint),
    RdmaConnected(RdmaEndpoint),
    Granted(Granted),
    ReadDone(ReadDone),
    AttachRail(AttachRail),
    /// The rail connection joined its session.
    RailAttached,
}

// Kinds start at 64 so a linkbench frame can never be mistaken for one of these.
const ATTACH: u8 = 64;
const WELCOME: u8 = 65;
const PREFILL: u8 = 66;
const PREFILLED: u8 = 67;
const PULL: u8 = 68;
const SENDING: u8 = 69;
const SENT: u8 = 70;
const COMPLETE: u8 = 71;
const REFUSED: u8 = 72;
const BYE: u8 = 73;
const RDMA_CONNECT: u8 = 74;
const RDMA_CONNECTED: u8 = 75;
const GRANTED: u8 = 76;
const READ_DONE: u8 = 77;
const ATTACH_RAIL: u8 = 78;
const RAIL_ATTACHED: u8 = 79;

impl Wire for KvMessage {
    fn kind(&self) -> u8 {
        match self {
            KvMessage::Attach(_) => ATTACH,
            KvMessage::Welcome(_) => WELCOME,
            KvMessage::Prefill(_) => PREFILL,
            KvMessage::Prefilled(_) => PREFILLED,
            KvMessage::Pull(_) => PULL,
            KvMessage::Sending(_) => SENDING,
            KvMessage::Sent(_) => SENT,
            KvMessage::Complete(_) => COMPLETE,
            KvMessage::Refused(_) => REFUSED,
            KvMessage::Bye => BYE,
            KvMessage::RdmaConnect(_) => RDMA_CONNECT,
            KvMessage::RdmaConnected(_) => RDMA_CONNECTED,
            KvMessage::Granted(_) => GRANTED,
            KvMessage::ReadDone(_) => READ_DONE,
            KvMessage::AttachRail(_) => ATTACH_RAIL,
            KvMessage::RailAttached => RAIL_ATTACHED,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            KvMessage::Attach(_) => "Attach",
            KvMessage::Welcome(_) => "Welcome",
            KvMessage::Prefill(_) => "Prefill",
            KvMessage::Prefilled(_) => "Prefilled",
            KvMessage::Pull(_) => "Pull",
            KvMessage::Sending(_) => "Sending",
            KvMessage::Sent(_) => "Sent",
            KvMessage::Complete(_) => "Complete",
            KvMessage::Refused(_) => "Refused",
            KvMessage::Bye => "Bye",
            KvMessage::RdmaConnect(_) => "RdmaConnect",
            KvMessage::RdmaConnected(_) => "RdmaConnected",
            KvMessage::Granted(_) => "Granted",
            KvMessage::ReadDone(_) => "ReadDone",
            KvMessage::AttachRail(_) => "AttachRail",
            KvMessage::RailAttached => "RailAttached",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Serialising these plain structs into a Vec cannot fail.
        let _ = match self {
            KvMessage::Attach(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Welcome(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Prefill(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Prefilled(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Pull(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Sending(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Sent(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Complete(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Refused(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::RdmaConnect(m) | KvMessage::RdmaConnected(m) => {
                serde_json::to_writer(&mut *out, m)
            }
            KvMessage::Granted(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::ReadDone(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::AttachRail(m) => serde_json::to_writer(&mut *out, m),
            KvMessage::Bye | KvMessage::RailAttached => Ok(()),
        };
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        Ok(match kind {
            ATTACH => KvMessage::Attach(parse_payload("Attach", payload)?),
            WELCOME => KvMessage::Welcome(parse_payload("Welcome", payload)?),
            PREFILL => KvMessage::Prefill(parse_payload("Prefill", payload)?),
            PREFILLED => KvMessage::Prefilled(parse_payload("Prefilled", payload)?),
            PULL => KvMessage::Pull(parse_payload("Pull", payload)?),
            SENDING => KvMessage::Sending(parse_payload("Sending", payload)?),
            SENT => KvMessage::Sent(parse_payload("Sent", payload)?),
            COMPLETE => KvMessage::Complete(parse_payload("Complete", payload)?),
            REFUSED => KvMessage::Refused(parse_payload("Refused", payload)?),
            BYE => empty_payload("Bye", payload, KvMessage::Bye)?,
            RDMA_CONNECT => KvMessage::RdmaConnect(parse_payload("RdmaConnect", payload)?),
            RDMA_CONNECTED => KvMessage::RdmaConnected(parse_payload("RdmaConnected", payload)?),
            GRANTED => KvMessage::Granted(parse_payload("Granted", payload)?),
            READ_DONE => KvMessage::ReadDone(parse_payload("ReadDone", payload)?),
            ATTACH_RAIL => KvMessage::AttachRail(parse_payload("AttachRail", payload)?),
            RAIL_ATTACHED => empty_payload("RailAttached", payload, KvMessage::RailAttached)?,
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{tests::llama8b, Order};
    use fabric::control::{decode, encode};

    #[test]
    fn every_message_round_trips_and_garbage_is_refused() {
        let shape = llama8b(Order::Nhd);
        let endpoint = RdmaEndpoint {
            device: "rxe0".into(),
            lid: 0,
            gid: "fe80::1".parse().unwrap(),
            gid_index: 1,
            mtu: 1024,
            qps: vec![fabric::rdma::handshake::QpAddress { qpn: 17, psn: 5 }],
            region: fabric::rdma::RemoteRegion {
                addr: 0x1000,
                len: 4096,
                rkey: 3,
            },
        };
        let messages = vec![
            KvMessage::Attach(Attach {
                shape: shape.clone(),
                hash: "ab".into(),
                decode_tp: 2,
                decode_rank: 1,
            }),
            KvMessage::Welcome(Welcome {
                shape,
                hash: "ab".into(),
                tp: 1,
                tp_rank: 0,
                dp_rank: 0,
                num_blocks: 9,
                lease_ms: 5,
                rails: vec!["10.0.0.1:18600".into(), "10.0.1.1:18600".into()],
                rail_cookie: "c0".into(),
            }),
            KvMessage::AttachRail(AttachRail {
                cookie: "c0".into(),
                index: 1,
            }),
            KvMessage::RailAttached,
            KvMessage::Prefill(Prefill {
                request_id: "r".into(),
                tokens: 2000,
                dp_rank: 0,
                tp_rank: 0,
                readers: 2,
                fill: true,
            }),
            KvMessage::Prefilled(Prefilled {
                request_id: "r".into(),
                blocks: vec![1, 2],
            }),
            KvMessage::Pull(Pull {
                request_id: "r".into(),
                dp_rank: 0,
                tp_rank: 0,
                blocks: vec![1],
                head_start: 0,
                head_end: 4,
                checksums: true,
                rdma: true,
                rails: 2,
            }),
            KvMessage::RdmaConnect(endpoint.clone()),
            KvMessage::RdmaConnected(endpoint),
            KvMessage::Granted(Granted {
                request_id: "r".into(),
                crc32c: vec![9, 8],
            }),
            KvMessage::ReadDone(ReadDone {
                request_id: "r".into(),
            }),
            KvMessage::Sending(Sending {
                request_id: "r".into(),
                bytes: 7,
            }),
            KvMessage::Sent(Sent {
                request_id: "r".into(),
                crc32c: vec![3],
            }),
            KvMessage::Complete(Complete {
                request_id: "r".into(),
                ok: true,
            }),
            KvMessage::Refused(Refused {
                request_id: None,
                message: "no".into(),
            }),
            KvMessage::Bye,
        ];
        for message in messages {
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            let (back, used) = decode::<KvMessage>(&bytes).unwrap().unwrap();
            assert_eq!((back, used), (message, bytes.len()));
        }
        // A linkbench frame (kind 3) is not a kvxfer message.
        let mut bytes = Vec::new();
        encode(&fabric::perf::wire::PerfMessage::Bye, &mut bytes);
        assert_eq!(
            decode::<KvMessage>(&bytes),
            Err(ProtocolError::UnknownKind(10))
        );
        let mut bytes = Vec::new();
        encode(&KvMessage::Bye, &mut bytes);
        bytes[6] = PULL;
        assert!(matches!(
            decode::<KvMessage>(&bytes),
            Err(ProtocolError::BadPayload { .. })
        ));
    }
}
