//! netcheck's cluster messages (tool "netcheck", kinds 120-127), between rank 0 and every
//! other node, after the usual Hello/auth. Rank 0 schedules; the nodes run pair sessions
//! with each other (the pair message set) and report back here.

use crate::pair::{Measured, NodeSummary};
use fabric::control::{parse_payload, Wire};
use fabric::ProtocolError;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A node's own local checks, as rank 0 needs them for the cluster verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalVerdict {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    /// "iface.up: eth0 is down", one per failing or warning check.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClusterMessage {
    Join {
        rank: usize,
        world: usize,
        summary: Box<NodeSummary>,
        local: LocalVerdict,
    },
    /// Rank 0 -> node: listen for pair `pair` with `peer_rank`, and say on which port.
    ListenFor {
        pair: u32,
        peer_rank: usize,
    },
    Listening {
        pair: u32,
        port: u16,
    },
    /// Rank 0 -> node: run pair `pair` against `addr` (the peer listens there).
    ConnectTo {
        pair: u32,
        peer_rank: usize,
        addr: SocketAddr,
    },
    /// Node -> rank 0: pair `pair` finished; the connecting side sends what it measured.
    PairDone {
        pair: u32,
        measured: Option<Box<Measured>>,
        error: Option<String>,
    },
    /// Rank 0 -> every node: the cluster's verdict.
    Verdict {
        exit_code: u8,
        summary: String,
    },
    Error(String),
}

const JOIN: u8 = 120;
const LISTEN_FOR: u8 = 121;
const LISTENING: u8 = 122;
const CONNECT_TO: u8 = 123;
const PAIR_DONE: u8 = 124;
const VERDICT: u8 = 125;
const ERROR: u8 = 126;

impl Wire for ClusterMessage {
    fn kind(&self) -> u8 {
        match self {
            ClusterMessage::Join { .. } => JOIN,
            ClusterMessage::ListenFor { .. } => LISTEN_FOR,
            ClusterMessage::Listening { .. } => LISTENING,
            ClusterMessage::ConnectTo { .. } => CONNECT_TO,
            ClusterMessage::PairDone { .. } => PAIR_DONE,
            ClusterMessage::Verdict { .. } => VERDICT,
            ClusterMessage::Error(_) => ERROR,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            ClusterMessage::Join { .. } => "Join",
            ClusterMessage::ListenFor { .. } => "ListenFor",
            ClusterMessage::Listening { .. } => "Listening",
            ClusterMessage::ConnectTo { .. } => "ConnectTo",
            ClusterMessage::PairDone { .. } => "PairDone",
            ClusterMessage::Verdict { .. } => "Verdict",
            ClusterMessage::Error(_) => "Error",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Every variant is its own JSON object (serde's externally tagged enum).
        let _ = serde_json::to_writer(&mut *out, self);
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        let message: ClusterMessage = match kind {
            JOIN => parse_payload("Join", payload)?,
            LISTEN_FOR => parse_payload("ListenFor", payload)?,
            LISTENING => parse_payload("Listening", payload)?,
            CONNECT_TO => parse_payload("ConnectTo", payload)?,
            PAIR_DONE => parse_payload("PairDone", payload)?,
            VERDICT => parse_payload("Verdict", payload)?,
            ERROR => parse_payload("Error", payload)?,
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        if message.kind() != kind {
            return Err(ProtocolError::BadPayload {
                kind: "cluster message",
                reason: format!("kind {kind} carries a {}", message.name()),
            });
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric::control::{decode, encode};

    #[test]
    fn messages_round_trip_and_a_mislabelled_payload_is_refused() {
        let done = ClusterMessage::PairDone {
            pair: 3,
            measured: Some(Box::default()),
            error: None,
        };
        let mut bytes = Vec::new();
        encode(&done, &mut bytes);
        assert_eq!(decode::<ClusterMessage>(&bytes).unwrap().unwrap().0, done);
        // A Verdict payload under the PairDone kind.
        let mut bytes = Vec::new();
        encode(
            &ClusterMessage::Verdict {
                exit_code: 0,
                summary: "ok".into(),
            },
            &mut bytes,
        );
        bytes[6] = PAIR_DONE;
        assert!(decode::<ClusterMessage>(&bytes).is_err());
    }
}
