//! netcheck's pair messages, in fabric's versioned control frames after the usual
//! Hello/auth opening (tool "netcheck"). A (the `--peer` side) asks, B (`--listen`) answers.

use super::{Measured, NodeSummary, PortSpec, RouteView};
use fabric::control::{empty_payload, parse_payload, Wire};
use fabric::ProtocolError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Most ports one probe may name (keeps a frame small and a probe short).
pub const MAX_PORTS: usize = 64;

/// B's answer to A's summary: B's own, and what B saw and resolved of A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub summary: NodeSummary,
    /// The source address of A's control connection, as B saw it.
    pub seen: IpAddr,
    /// B's clock when it answered (Unix time, ns), for the clock offset.
    pub clock_ns: u128,
    /// B resolving A's hostname.
    pub a_name: Result<Vec<IpAddr>, String>,
    /// The kernel's route from B to A's address.
    pub route: Option<RouteView>,
}

/// One port's fate on the listening side: listening, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    pub port: u16,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PairMessage {
    /// A -> B: who A is.
    Intro(NodeSummary),
    Welcome(Welcome),
    /// A -> B: listen on these ports (A will connect).
    Listen(Vec<PortSpec>),
    /// B -> A: which of them B listens on.
    Listening(Vec<Listening>),
    /// A -> B: A tried them all; B may close its listeners.
    Tried,
    /// A -> B: A listens on these ports at its address; connect to each.
    ConnectBack(Vec<PortSpec>),
    /// B -> A: B's connect outcomes, in the same order.
    Connected(Vec<super::PortOutcome>),
    /// A -> B: open a UDP port for don't-fragment probes.
    UdpOpen,
    UdpPort(u16),
    /// A -> B: A sent its probes; which packet sizes arrived?
    UdpSent,
    UdpGot(Vec<u32>),
    /// A -> B: send these don't-fragment packet sizes to A's UDP port.
    UdpSendBack {
        port: u16,
        sizes: Vec<u32>,
    },
    UdpSentBack,
    /// A -> B: start a linkbench engine for the bandwidth and latency tests.
    Perf,
    PerfPort(u16),
    /// A -> B: everything measured; both compute the checks from it.
    Report(Measured),
    Done,
    /// Either way: this side gives up, with the reason.
    Error(String),
}

const INTRO: u8 = 96;
const WELCOME: u8 = 97;
const LISTEN: u8 = 98;
const LISTENING: u8 = 99;
const TRIED: u8 = 100;
const CONNECT_BACK: u8 = 101;
const CONNECTED: u8 = 102;
const UDP_OPEN: u8 = 103;
const UDP_PORT: u8 = 104;
const UDP_SENT: u8 = 105;
const UDP_GOT: u8 = 106;
const UDP_SEND_BACK: u8 = 107;
const UDP_SENT_BACK: u8 = 108;
const PERF: u8 = 109;
const PERF_PORT: u8 = 110;
const REPORT: u8 = 111;
const DONE: u8 = 112;
const ERROR: u8 = 113;

#[derive(Serialize, Deserialize)]
struct SendBack {
    port: u16,
    sizes: Vec<u32>,
}

fn bounded<T>(name: &'static str, items: Vec<T>) -> Result<Vec<T>, ProtocolError> {
    if items.len() > MAX_PORTS {
        return Err(ProtocolError::BadPayload {
            kind: name,
            reason: format!("{} entries, at most {MAX_PORTS}", items.len()),
        });
    }
    Ok(items)
}

impl Wire for PairMessage {
    fn kind(&self) -> u8 {
        match self {
            PairMessage::Intro(_) => INTRO,
            PairMessage::Welcome(_) => WELCOME,
            PairMessage::Listen(_) => LISTEN,
            PairMessage::Listening(_) => LISTENING,
            PairMessage::Tried => TRIED,
            PairMessage::ConnectBack(_) => CONNECT_BACK,
            PairMessage::Connected(_) => CONNECTED,
            PairMessage::UdpOpen => UDP_OPEN,
            PairMessage::UdpPort(_) => UDP_PORT,
            PairMessage::UdpSent => UDP_SENT,
            PairMessage::UdpGot(_) => UDP_GOT,
            PairMessage::UdpSendBack { .. } => UDP_SEND_BACK,
            PairMessage::UdpSentBack => UDP_SENT_BACK,
            PairMessage::Perf => PERF,
            PairMessage::PerfPort(_) => PERF_PORT,
            PairMessage::Report(_) => REPORT,
            PairMessage::Done => DONE,
            PairMessage::Error(_) => ERROR,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            PairMessage::Intro(_) => "Intro",
            PairMessage::Welcome(_) => "Welcome",
            PairMessage::Listen(_) => "Listen",
            PairMessage::Listening(_) => "Listening",
            PairMessage::Tried => "Tried",
            PairMessage::ConnectBack(_) => "ConnectBack",
            PairMessage::Connected(_) => "Connected",
            PairMessage::UdpOpen => "UdpOpen",
            PairMessage::UdpPort(_) => "UdpPort",
            PairMessage::UdpSent => "UdpSent",
            PairMessage::UdpGot(_) => "UdpGot",
            PairMessage::UdpSendBack { .. } => "UdpSendBack",
            PairMessage::UdpSentBack => "UdpSentBack",
            PairMessage::Perf => "Perf",
            PairMessage::PerfPort(_) => "PerfPort",
            PairMessage::Report(_) => "Report",
            PairMessage::Done => "Done",
            PairMessage::Error(_) => "Error",
        }
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        let _ = match self {
            PairMessage::Intro(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::Welcome(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::Listen(m) | PairMessage::ConnectBack(m) => {
                serde_json::to_writer(&mut *out, m)
            }
            PairMessage::Listening(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::Connected(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::UdpPort(p) | PairMessage::PerfPort(p) => {
                serde_json::to_writer(&mut *out, p)
            }
            PairMessage::UdpGot(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::UdpSendBack { port, sizes } => serde_json::to_writer(
                &mut *out,
                &SendBack {
                    port: *port,
                    sizes: sizes.clone(),
                },
            ),
            PairMessage::Report(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::Error(m) => serde_json::to_writer(&mut *out, m),
            PairMessage::Tried
            | PairMessage::UdpOpen
            | PairMessage::UdpSent
            | PairMessage::UdpSentBack
            | PairMessage::Perf
            | PairMessage::Done => Ok(()),
        };
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        Ok(match kind {
            INTRO => PairMessage::Intro(parse_payload("Intro", payload)?),
            WELCOME => PairMessage::Welcome(parse_payload("Welcome", payload)?),
            LISTEN => PairMessage::Listen(bounded("Listen", parse_payload("Listen", payload)?)?),
            LISTENING => {
                PairMessage::Listening(bounded("Listening", parse_payload("Listening", payload)?)?)
            }
            TRIED => empty_payload("Tried", payload, PairMessage::Tried)?,
            CONNECT_BACK => PairMessage::ConnectBack(bounded(
                "ConnectBack",
                parse_payload("ConnectBack", payload)?,
            )?),
            CONNECTED => {
                PairMessage::Connected(bounded("Connected", parse_payload("Connected", payload)?)?)
            }
            UDP_OPEN => empty_payload("UdpOpen", payload, PairMessage::UdpOpen)?,
            UDP_PORT => PairMessage::UdpPort(parse_payload("UdpPort", payload)?),
            UDP_SENT => empty_payload("UdpSent", payload, PairMessage::UdpSent)?,
            UDP_GOT => PairMessage::UdpGot(bounded("UdpGot", parse_payload("UdpGot", payload)?)?),
            UDP_SEND_BACK => {
                let m: SendBack = parse_payload("UdpSendBack", payload)?;
                PairMessage::UdpSendBack {
                    port: m.port,
                    sizes: bounded("UdpSendBack", m.sizes)?,
                }
            }
            UDP_SENT_BACK => empty_payload("UdpSentBack", payload, PairMessage::UdpSentBack)?,
            PERF => empty_payload("Perf", payload, PairMessage::Perf)?,
            PERF_PORT => PairMessage::PerfPort(parse_payload("PerfPort", payload)?),
            REPORT => PairMessage::Report(parse_payload("Report", payload)?),
            DONE => empty_payload("Done", payload, PairMessage::Done)?,
            ERROR => PairMessage::Error(parse_payload("Error", payload)?),
            other => return Err(ProtocolError::UnknownKind(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabric::control::{decode, encode};

    #[test]
    fn messages_round_trip_and_oversized_lists_are_refused() {
        let spec = PortSpec {
            port: 6379,
            purpose: "Ray GCS".into(),
        };
        for message in [
            PairMessage::Listen(vec![spec.clone()]),
            PairMessage::Tried,
            PairMessage::UdpSendBack {
                port: 9,
                sizes: vec![1500],
            },
            PairMessage::Report(Measured::default()),
            PairMessage::Error("no".into()),
        ] {
            let mut bytes = Vec::new();
            encode(&message, &mut bytes);
            let (back, used) = decode::<PairMessage>(&bytes).unwrap().unwrap();
            assert_eq!((back, used), (message, bytes.len()));
        }
        let mut bytes = Vec::new();
        encode(&PairMessage::Listen(vec![spec; MAX_PORTS + 1]), &mut bytes);
        assert!(decode::<PairMessage>(&bytes).is_err());
        let mut bytes = Vec::new();
        encode(&PairMessage::Tried, &mut bytes);
        bytes[6] = 200;
        assert!(decode::<PairMessage>(&bytes).is_err());
    }
}
