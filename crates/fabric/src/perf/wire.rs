//! linkbench's message set: the test negotiation on the control channel and the first
//! frame of each data connection. It opens with the session layer's Hello and Auth
//! (same kinds), so a server reads either a Hello or a data stream's Join first.

use crate::control::{empty_payload, parse_payload, Wire, AUTH, ERROR, HELLO};
pub use crate::control::{AuthMsg, ErrorMsg, Hello};
pub use crate::cpu::CpuUsage;
use crate::error::ProtocolError;
pub use crate::rdma::handshake::{RdmaAccept, RdmaRequest, RdmaResults};
pub use crate::test_kind::TestKind;
use serde::{Deserialize, Serialize};

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
    /// Bandwidth: TCP_NODELAY on the data streams (latency tests always set it).
    #[serde(default)]
    pub no_delay: bool,
    /// Bandwidth: bytes each stream's writes (or reads) rotate through on both sides,
    /// so that the copies come from memory, not cache. None: one message.
    #[serde(default)]
    pub working_set: Option<u64>,
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

/// Every frame of a linkbench session.
#[derive(Debug, Clone, PartialEq)]
pub enum PerfMessage {
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

const REQUEST: u8 = 3;
const ACCEPT: u8 = 4;
const JOIN: u8 = 5;
const START: u8 = 6;
const DONE: u8 = 7;
const RESULTS: u8 = 8;
const BYE: u8 = 10;
const RDMA_REQUEST: u8 = 11;
const RDMA_ACCEPT: u8 = 12;
const RDMA_RESULTS: u8 = 13;

impl Wire for PerfMessage {
    fn kind(&self) -> u8 {
        match self {
            PerfMessage::Hello(_) => HELLO,
            PerfMessage::Auth(_) => AUTH,
            PerfMessage::Request(_) => REQUEST,
            PerfMessage::Accept(_) => ACCEPT,
            PerfMessage::Join(_) => JOIN,
            PerfMessage::Start => START,
            PerfMessage::Done(_) => DONE,
            PerfMessage::Results(_) => RESULTS,
            PerfMessage::Error(_) => ERROR,
            PerfMessage::Bye => BYE,
            PerfMessage::RdmaRequest(_) => RDMA_REQUEST,
            PerfMessage::RdmaAccept(_) => RDMA_ACCEPT,
            PerfMessage::RdmaResults(_) => RDMA_RESULTS,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            PerfMessage::Hello(_) => "Hello",
            PerfMessage::Auth(_) => "Auth",
            PerfMessage::Request(_) => "Request",
            PerfMessage::Accept(_) => "Accept",
            PerfMessage::Join(_) => "Join",
            PerfMessage::Start => "Start",
            PerfMessage::Done(_) => "Done",
            PerfMessage::Results(_) => "Results",
            PerfMessage::Error(_) => "Error",
            PerfMessage::Bye => "Bye",
            PerfMessage::RdmaRequest(_) => "RdmaRequest",
            PerfMessage::RdmaAccept(_) => "RdmaAccept",
            PerfMessage::RdmaResults(_) => "RdmaResults",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Serialising these plain structs into a Vec cannot fail.
        let _ = match self {
            PerfMessage::Hello(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Auth(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Request(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Accept(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Join(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Done(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Results(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Error(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::RdmaRequest(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::RdmaAccept(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::RdmaResults(m) => serde_json::to_writer(&mut *out, m),
            PerfMessage::Start | PerfMessage::Bye => Ok(()),
        };
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<PerfMessage, ProtocolError> {
        Ok(match kind {
            HELLO => PerfMessage::Hello(parse_payload("Hello", payload)?),
            AUTH => PerfMessage::Auth(parse_payload("Auth", payload)?),
            REQUEST => PerfMessage::Request(parse_payload("Request", payload)?),
            ACCEPT => PerfMessage::Accept(parse_payload("Accept", payload)?),
            JOIN => PerfMessage::Join(parse_payload("Join", payload)?),
            START => empty_payload("Start", payload, PerfMessage::Start)?,
            DONE => PerfMessage::Done(parse_payload("Done", payload)?),
            RESULTS => PerfMessage::Results(parse_payload("Results", payload)?),
            ERROR => PerfMessage::Error(parse_payload("Error", payload)?),
            BYE => empty_payload("Bye", payload, PerfMessage::Bye)?,
            RDMA_REQUEST => PerfMessage::RdmaRequest(parse_payload("RdmaRequest", payload)?),
            RDMA_ACCEPT => PerfMessage::RdmaAccept(parse_payload("RdmaAccept", payload)?),
            RDMA_RESULTS => PerfMessage::RdmaResults(parse_payload("RdmaResults", payload)?),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }

    fn refusal(&self) -> Option<&str> {
        match self {
            PerfMessage::Error(e) => Some(&e.message),
            _ => None,
        }
    }
}
