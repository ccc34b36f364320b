//! The control messages and their payload encoding (JSON inside a frame: readable in a
//! packet capture, and small next to the data it negotiates).

use super::frame::Wire;
pub use crate::cpu::CpuUsage;
use crate::error::ProtocolError;
pub use crate::rdma::handshake::{RdmaAccept, RdmaRequest, RdmaResults};
pub use crate::test_kind::TestKind;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Decodes a JSON payload; shared by every [`Wire`] message set.
pub fn parse_payload<T: DeserializeOwned>(
    name: &'static str,
    payload: &[u8],
) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::BadPayload {
        kind: name,
        reason: e.to_string(),
    })
}

/// Accepts `message` only if its frame carried no payload.
pub fn empty_payload<M>(
    name: &'static str,
    payload: &[u8],
    message: M,
) -> Result<M, ProtocolError> {
    if payload.is_empty() {
        Ok(message)
    } else {
        Err(ProtocolError::BadPayload {
            kind: name,
            reason: format!("expected no payload, got {} bytes", payload.len()),
        })
    }
}

/// First message each way: who is talking, and whether it wants authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub tool: String,
    /// Software version, for error messages when the two nodes differ.
    pub software: String,
    /// 16 random bytes, hex: the challenge the other side signs.
    pub nonce: String,
    /// True when `NODELINK_TOKEN` is set on the sender.
    pub auth: bool,
}

/// HMAC-SHA256 proof of the shared token over both nonces, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMsg {
    pub mac: String,
}

/// What the client wants measured; the server checks every field before accepting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRequest {
    pub kind: TestKind,
    /// Message size in bytes (one write for bw, one ping for lat).
    pub size: u64,
    /// Streams per direction.
    pub streams: u32,
    /// Test length; 0 with `iterations > 0` for a counted latency test.
    pub duration_ms: u64,
    /// Bandwidth: a warm-up before `duration_ms` that the receiver does not count.
    #[serde(default)]
    pub omit_ms: u64,
    pub iterations: u64,
    pub reverse: bool,
    pub bidir: bool,
    pub window: Option<u64>,
    pub congestion: Option<String>,
    pub zerocopy: bool,
    /// Latency tests: spin on the socket instead of sleeping until the reply arrives.
    #[serde(default)]
    pub busy_poll: bool,
}

/// The server accepted the test; data connections present this cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub cookie: String,
}

/// First frame on a data connection: which session and which stream it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub cookie: String,
    pub index: u32,
}

/// The client finished its side of the test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Ping-pongs completed (latency tests), so the server can check its own count.
    pub iterations: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// One side's view of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStats {
    pub index: u32,
    pub direction: Direction,
    /// Bytes this side moved on the stream (sent or received).
    pub bytes: u64,
    /// First and last byte, nanoseconds after this side's start of the test.
    pub first_ns: u64,
    pub last_ns: u64,
    /// From TCP_INFO; meaningful on the sending side.
    pub retransmits: Option<u32>,
    pub rtt_us: Option<u32>,
}

/// The server's measurements, sent back when a test ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub streams: Vec<StreamStats>,
    pub cpu: CpuUsage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Hello(Hello),
    Auth(AuthMsg),
    Request(TestRequest),
    Accept(Accept),
    Join(Join),
    Start,
    Done(Done),
    Results(Results),
    Error(ErrorMsg),
    Bye,
    /// RDMA test request with the client's half of the connection.
    RdmaRequest(RdmaRequest),
    /// The server's half, its QPs already ready to receive.
    RdmaAccept(RdmaAccept),
    RdmaResults(RdmaResults),
}

const HELLO: u8 = 1;
const AUTH: u8 = 2;
const REQUEST: u8 = 3;
const ACCEPT: u8 = 4;
const JOIN: u8 = 5;
const START: u8 = 6;
const DONE: u8 = 7;
const RESULTS: u8 = 8;
const ERROR: u8 = 9;
const BYE: u8 = 10;
const RDMA_REQUEST: u8 = 11;
const RDMA_ACCEPT: u8 = 12;
const RDMA_RESULTS: u8 = 13;

impl Wire for Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Hello(_) => HELLO,
            Message::Auth(_) => AUTH,
            Message::Request(_) => REQUEST,
            Message::Accept(_) => ACCEPT,
            Message::Join(_) => JOIN,
            Message::Start => START,
            Message::Done(_) => DONE,
            Message::Results(_) => RESULTS,
            Message::Error(_) => ERROR,
            Message::Bye => BYE,
            Message::RdmaRequest(_) => RDMA_REQUEST,
            Message::RdmaAccept(_) => RDMA_ACCEPT,
            Message::RdmaResults(_) => RDMA_RESULTS,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Auth(_) => "Auth",
            Message::Request(_) => "Request",
            Message::Accept(_) => "Accept",
            Message::Join(_) => "Join",
            Message::Start => "Start",
            Message::Done(_) => "Done",
            Message::Results(_) => "Results",
            Message::Error(_) => "Error",
            Message::Bye => "Bye",
            Message::RdmaRequest(_) => "RdmaRequest",
            Message::RdmaAccept(_) => "RdmaAccept",
            Message::RdmaResults(_) => "RdmaResults",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Serialising these plain structs into a Vec cannot fail.
        let _ = match self {
            Message::Hello(m) => serde_json::to_writer(&mut *out, m),
            Message::Auth(m) => serde_json::to_writer(&mut *out, m),
            Message::Request(m) => serde_json::to_writer(&mut *out, m),
            Message::Accept(m) => serde_json::to_writer(&mut *out, m),
            Message::Join(m) => serde_json::to_writer(&mut *out, m),
            Message::Done(m) => serde_json::to_writer(&mut *out, m),
            Message::Results(m) => serde_json::to_writer(&mut *out, m),
            Message::Error(m) => serde_json::to_writer(&mut *out, m),
            Message::RdmaRequest(m) => serde_json::to_writer(&mut *out, m),
            Message::RdmaAccept(m) => serde_json::to_writer(&mut *out, m),
            Message::RdmaResults(m) => serde_json::to_writer(&mut *out, m),
            Message::Start | Message::Bye => Ok(()),
        };
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        Ok(match kind {
            HELLO => Message::Hello(parse_payload("Hello", payload)?),
            AUTH => Message::Auth(parse_payload("Auth", payload)?),
            REQUEST => Message::Request(parse_payload("Request", payload)?),
            ACCEPT => Message::Accept(parse_payload("Accept", payload)?),
            JOIN => Message::Join(parse_payload("Join", payload)?),
            START => empty_payload("Start", payload, Message::Start)?,
            DONE => Message::Done(parse_payload("Done", payload)?),
            RESULTS => Message::Results(parse_payload("Results", payload)?),
            ERROR => Message::Error(parse_payload("Error", payload)?),
            BYE => empty_payload("Bye", payload, Message::Bye)?,
            RDMA_REQUEST => Message::RdmaRequest(parse_payload("RdmaRequest", payload)?),
            RDMA_ACCEPT => Message::RdmaAccept(parse_payload("RdmaAccept", payload)?),
            RDMA_RESULTS => Message::RdmaResults(parse_payload("RdmaResults", payload)?),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }
}
