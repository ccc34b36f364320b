//! How N ranks find each other without MPI or etcd: rank 0 listens on the master address,
//! every rank reports its data address, rank 0 sends the table back, ranks connect a full
//! mesh, then a barrier. Rank/world/master come from flags, else the launcher's env vars.
//!
//! The messages travel in fabric's session frames (`NLNK`, one version check, one header
//! parser) as their own message set, with a larger bound for the rank table. They are
//! sans-IO (`encode`/`decode` over bytes); the socket shell below gives every wait a
//! deadline, so a rank that never shows up is an error naming it.

use crate::error::CollError;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use fabric::bootstrap::{resolve, Bootstrap, BootstrapFlags, DEFAULT_PORT};
pub mod roster;

use fabric::channel::Channel;
/// The session layer's version, which every rank must share.
pub use fabric::control::VERSION as PROTOCOL_VERSION;
use fabric::control::{self, parse_payload, Wire, HEADER_LEN};
use fabric::{handshake, FabricError, ProtocolError};
/// Largest rendezvous payload: a table of a few thousand addresses.
pub const MAX_PAYLOAD: u32 = 256 * 1024;

/// Rendezvous messages. Every connection opens with the session layer's Hello/Auth
/// exchange first (tool, version, `NODELINK_TOKEN`); these follow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A joining rank's claim to rank 0.
    Join {
        rank: usize,
        world: usize,
        data_addr: SocketAddr,
    },
    /// Every rank's data address and the job key that mesh connections prove themselves
    /// with.
    Table {
        addrs: Vec<SocketAddr>,
        job_key: String,
    },
    /// First words on a mesh connection: who is calling, signed with the job key over the
    /// callee's nonce from its Hello, so a stranger cannot claim a rank.
    Peer {
        rank: usize,
        mac: String,
    },
    Ready,
    Go,
    /// The job stops: `reason` is one sentence for every rank; `failed` names the rank
    /// that failed, when one did (a rank that saw a peer fail reports it to rank 0, and
    /// rank 0 tells every rank the verdict).
    Abort {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<usize>,
    },
}

/// The tool name rank 0 and the ranks put in their Hello.
pub const TOOL: &str = "collbench";

/// Longest a greeting may take on one connection (a real rank answers at once); a
/// stranger that says nothing costs this much of one helper thread, never the join.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections greeted at once; past it, the oldest greeting is cut to make room, so idle
/// strangers can never keep a real rank out.
pub const MAX_GREETING: usize = 256;

const PEER_LABEL: &str = "nodelink-rv peer";

/// The proof a mesh caller sends: the job key over the callee's nonce, caller and callee.
pub fn peer_proof(job_key: &str, callee_nonce: &str, caller: usize, callee: usize) -> String {
    fabric::control::sign(
        job_key.as_bytes(),
        PEER_LABEL,
        &[
            callee_nonce.as_bytes(),
            &caller.to_be_bytes(),
            &callee.to_be_bytes(),
        ],
    )
}

pub fn peer_is_authentic(
    job_key: &str,
    nonce: &str,
    caller: usize,
    callee: usize,
    mac: &str,
) -> bool {
    fabric::control::verify(
        job_key.as_bytes(),
        PEER_LABEL,
        &[
            nonce.as_bytes(),
            &caller.to_be_bytes(),
            &callee.to_be_bytes(),
        ],
        mac,
    )
}

/// A fresh random nonce (also used as the job key).
pub fn fresh_nonce() -> Result<String, CollError> {
    fabric::control::nonce().map_err(|e| CollError::Bootstrap(e.to_string()))
}

// Kind bytes of the rendezvous message set, apart from every other set on the frame.
const JOIN: u8 = 141;
const TABLE: u8 = 142;
const PEER: u8 = 143;
const READY: u8 = 144;
const GO: u8 = 145;
const ABORT: u8 = 146;

impl Wire for Message {
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;

    fn kind(&self) -> u8 {
        match self {
            Message::Join { .. } => JOIN,
            Message::Table { .. } => TABLE,
            Message::Peer { .. } => PEER,
            Message::Ready => READY,
            Message::Go => GO,
            Message::Abort { .. } => ABORT,
        }
    }

    fn name(&self) -> &'static str {
        name(self)
    }

    fn write_payload(&self, out: &mut Vec<u8>) {
        // Every variant is its own JSON object (serde's externally tagged enum).
        let _ = serde_json::to_writer(&mut *out, self);
    }

    fn from_payload(kind: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        let label = match kind {
            JOIN => "Join",
            TABLE => "Table",
            PEER => "Peer",
            READY => "Ready",
            GO => "Go",
            ABORT => "Abort",
            other => return Err(ProtocolError::UnknownKind(other)),
        };
        let message: Message = parse_payload(label, payload)?;
        if message.kind() != kind {
            return Err(ProtocolError::BadPayload {
                kind: "rendezvous message",
                reason: format!("kind {kind} carries a {}", message.name()),
            });
        }
        Ok(message)
    }
}

/// One session frame holding `message`.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    fabric::control::encode(message, &mut frame);
    frame
}

/// The first frame in `bytes`: `Ok(None)` while more bytes are needed, else the message
/// and the bytes it used.
pub fn decode(bytes: &[u8]) -> Result<Option<(Message, usize)>, CollError> {
    fabric::control::decode(bytes).map_err(protocol_error)
}

/// A frame error as the ranks see it.
fn protocol_error(e: ProtocolError) -> CollError {
    CollError::Protocol(match e {
        ProtocolError::BadMagic(_) => format!(
            "peer is not a nodelink collbench rank: check {} points at rank 0 of the same job",
            measure::Setting::Master
        ),
        ProtocolError::VersionMismatch { peer, ours } => format!(
            "peer speaks nodelink protocol v{peer}, this is v{ours}: run the same nodelink version on every rank"
        ),
        other => other.to_string(),
    })
}

pub(crate) fn send(
    stream: &mut TcpStream,
    message: &Message,
    deadline: Instant,
) -> Result<(), CollError> {
    let frame = encode(message);
    let mut written = 0;
    // The deadline bounds the whole write, not each system call: a peer that reads a
    // byte at a time cannot stretch it.
    while written < frame.len() {
        stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(CollError::io("setting a socket timeout"))?;
        match stream.write(&frame[written..]) {
            Ok(0) => {
                return Err(CollError::PeerGone(
                    "the peer closed the connection during rendezvous".into(),
                ))
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CollError::Timeout(
                    "the peer did not take a rendezvous message before the deadline".into(),
                ))
            }
            Err(e) => return Err(CollError::io("sending a rendezvous message")(e)),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes before `deadline`, whatever the peer's pace.
fn read_exact_until(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    from: &str,
) -> Result<(), CollError> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CollError::Timeout(format!(
                "{from} sent nothing complete before the deadline"
            )));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(CollError::io("setting a socket timeout"))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(CollError::PeerGone(format!(
                    "{from} closed the connection during rendezvous"
                )))
            }
            Ok(n) => filled += n,
            Err(e) => match e.kind() {
                std::io::ErrorKind::Interrupted => {}
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    return Err(CollError::Timeout(format!(
                        "{from} sent nothing complete before the deadline"
                    )))
                }
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    return Err(CollError::PeerGone(format!(
                        "{from} closed the connection during rendezvous"
                    )))
                }
                _ => {
                    return Err(CollError::Io {
                        context: format!("reading from {from}"),
                        source: e,
                    })
                }
            },
        }
    }
    Ok(())
}

/// Reads one message; an Abort is the error it carries.
pub(crate) fn receive(
    stream: &mut TcpStream,
    deadline: Instant,
    from: &str,
) -> Result<Message, CollError> {
    match receive_any(stream, deadline, from)? {
        Message::Abort { reason, .. } => Err(CollError::Aborted(reason)),
        message => Ok(message),
    }
}

/// Reads one message, an Abort included.
pub(crate) fn receive_any(
    stream: &mut TcpStream,
    deadline: Instant,
    from: &str,
) -> Result<Message, CollError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_until(stream, &mut header, deadline, from)?;
    let header = fabric::control::parse_header::<Message>(&header).map_err(protocol_error)?;
    let mut payload = vec![0u8; header.len as usize];
    read_exact_until(stream, &mut payload, deadline, from)?;
    Message::from_payload(header.kind, &payload).map_err(protocol_error)
}

pub(crate) fn remaining(deadline: Instant) -> Result<Duration, CollError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(CollError::Timeout("the rendezvous deadline passed".into()))
    } else {
        Ok(left)
    }
}

pub(crate) fn resolve_addr(text: &str) -> Result<SocketAddr, CollError> {
    fabric::tcp::resolve_peer(text, DEFAULT_PORT)
        .map_err(|e| CollError::Bootstrap(format!("master address '{text}': {e}")))
}

/// Accepts connections until `done` says so or the deadline passes, greeting each on its
/// own thread (at most [`MAX_GREETING`] at once, the oldest cut to make room; each bounded
/// by [`GREETING_TIMEOUT`]), so silent or slow strangers never hold up the real ranks. `done` sees each greeting's
/// outcome with the peer's address; it returns true once nothing more is needed.
/// Returns false when the deadline passed first.
pub(crate) fn serve_greetings<T: Send + 'static>(
    listener: &TcpListener,
    deadline: Instant,
    greet: impl Fn(TcpStream, Instant) -> Result<T, CollError> + Send + Sync + Clone + 'static,
    mut done: impl FnMut(SocketAddr, Result<T, CollError>) -> Result<bool, CollError>,
) -> Result<bool, CollError> {
    use std::sync::mpsc;
    listener
        .set_nonblocking(true)
        .map_err(CollError::io("setting the listener non-blocking"))?;
    let (tx, rx) = mpsc::channel();
    let openings = fabric::openings::Openings::new(MAX_GREETING);
    loop {
        let mut idle = true;
        match listener.accept() {
            Ok((stream, peer)) => {
                idle = false;
                // Our own handle keeps the registered descriptor open until the ticket is
                // gone, whatever `greet` does with the stream.
                if let (Ok(()), Ok(keep)) = (stream.set_nonblocking(false), stream.try_clone()) {
                    let (ticket, _) = openings.admit(&keep);
                    let (tx, greet) = (tx.clone(), greet.clone());
                    let until = deadline.min(Instant::now() + GREETING_TIMEOUT);
                    let _ = std::thread::Builder::new()
                        .name("rendezvous-greeting".into())
                        .spawn(move || {
                            let outcome = greet(stream, until);
                            drop(ticket);
                            drop(keep);
                            let _ = tx.send((peer, outcome));
                        });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Out of descriptors or a connection reset before accept: wait and go on.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        while let Ok((peer, outcome)) = rx.try_recv() {
            idle = false;
            if done(peer, outcome)? {
                // Everyone needed is here: whoever is still greeting is a stranger.
                openings.cut_all();
                return Ok(true);
            }
        }
        if Instant::now() >= deadline {
            openings.cut_all();
            return Ok(false);
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Connects, retrying until the deadline (the peer may not be listening yet).
pub(crate) fn connect_until(
    addr: SocketAddr,
    deadline: Instant,
    what: &str,
) -> Result<TcpStream, CollError> {
    let mut last_error = String::new();
    while Instant::now() < deadline {
        let attempt = remaining(deadline)?.min(Duration::from_secs(1));
        match TcpStream::connect_timeout(&addr, attempt) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CollError::Timeout(format!(
        "could not reach {what} at {addr} before the deadline ({last_error}): is it running, and is the port open?"
    )))
}

/// Connects and opens the session as the caller (Hello, the token's proofs both ways),
/// retrying while the listener drops the connection before greeting it (it does so when
/// strangers fill its greeting slots). Returns the stream and the listener's nonce.
pub(crate) fn connect_greeted(
    addr: SocketAddr,
    deadline: Instant,
    what: &str,
    token: Option<&[u8]>,
) -> Result<(TcpStream, String), CollError> {
    loop {
        let stream = connect_until(addr, deadline, what)?;
        let until = deadline.min(Instant::now() + GREETING_TIMEOUT);
        let mut channel = Channel::new(stream, format!("{what} at {addr}"));
        match handshake::open_client_within(&mut channel, TOOL, token, remaining(until)?) {
            Ok(hello) => return Ok((channel.into_stream(), hello.nonce)),
            Err(FabricError::PeerClosed { .. } | FabricError::Timeout { .. })
                if Instant::now() + Duration::from_millis(100) < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(opening_error(&format!("{what} at {addr}"), e)),
        }
    }
}

/// Opens the session as the listener (rank 0, or a rank's data listener): reads the
/// caller's Hello, checks its tool and token. Returns the stream and this side's nonce.
/// A refused caller hears why in one sentence.
pub(crate) fn greet_caller(
    stream: TcpStream,
    until: Instant,
    token: Option<&[u8]>,
) -> Result<(TcpStream, String), CollError> {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "a caller".to_string(), |a| a.to_string());
    let mut channel = Channel::new(stream, peer);
    let hello = match channel.recv(remaining(until)?, "waiting for the greeting from") {
        Ok(control::Message::Hello(hello)) => hello,
        Ok(other) => {
            return Err(CollError::Protocol(format!(
                "it opened with {} instead of Hello",
                other.name()
            )))
        }
        Err(e) => return Err(opening_error("", e)),
    };
    match handshake::open_server_within(&mut channel, &hello, TOOL, token, remaining(until)?) {
        Ok(nonce) => Ok((channel.into_stream(), nonce)),
        Err(e) => {
            let refusal = control::Message::Error(control::ErrorMsg {
                message: e.to_string(),
            });
            let _ = channel.send(&refusal, Duration::from_secs(1));
            Err(opening_error("", e))
        }
    }
}

/// A failed session opening as the ranks see it; `who` names the other side (a caller's
/// side names the listener; a listener's log line already names the caller, so "").
fn opening_error(who: &str, e: FabricError) -> CollError {
    let at = |text: String| {
        if who.is_empty() {
            text
        } else {
            format!("{who}: {text}")
        }
    };
    match e {
        FabricError::Protocol(p) => protocol_error(p),
        FabricError::Remote(text) => CollError::Bootstrap(at(format!("refused this rank: {text}"))),
        FabricError::Auth(text) => CollError::Bootstrap(at(text)),
        FabricError::Timeout { .. } => CollError::Timeout(at(
            "the session opening did not finish before the deadline".into(),
        )),
        FabricError::PeerClosed { .. } => CollError::PeerGone(at(
            "the connection closed while the session was opening".into(),
        )),
        other => CollError::Protocol(at(other.to_string())),
    }
}

/// A message's name, for errors (never its contents: those may come from a stranger).
pub fn name(message: &Message) -> &'static str {
    match message {
        Message::Join { .. } => "Join",
        Message::Table { .. } => "Table",
        Message::Peer { .. } => "Peer",
        Message::Ready => "Ready",
        Message::Go => "Go",
        Message::Abort { .. } => "Abort",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = BootstrapFlags {
            rank: Some(1),
            world: Some(2),
            master: Some("10.0.0.1:1234".into()),
        };
        let boot = resolve(&flags, env_of(&[("RANK", "5"), ("WORLD_SIZE", "8")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            boot,
            Bootstrap {
                rank: 1,
                world: 2,
                master: "10.0.0.1:1234".into(),
                source: "flags"
            }
        );
    }

    #[test]
    fn each_launcher_is_recognised() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: [Case; 5] = [
            (
                &[
                    ("RANK", "3"),
                    ("WORLD_SIZE", "4"),
                    ("MASTER_ADDR", "10.0.0.1"),
                    ("MASTER_PORT", "29400"),
                ],
                "torchrun",
                "10.0.0.1:29400",
            ),
            (
                &[
                    ("SLURM_PROCID", "3"),
                    ("SLURM_NTASKS", "4"),
                    ("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.2"),
                ],
                "slurm",
                "10.0.0.2:29500",
            ),
            (
                &[
                    ("OMPI_COMM_WORLD_RANK", "3"),
                    ("OMPI_COMM_WORLD_SIZE", "4"),
                    ("MASTER_ADDR", "10.0.0.3"),
                ],
                "openmpi",
                "10.0.0.3:29500",
            ),
            (
                &[
                    ("PMI_RANK", "3"),
                    ("PMI_SIZE", "4"),
                    ("MASTER_ADDR", "10.0.0.4"),
                    ("MASTER_PORT", "1"),
                ],
                "pmi",
                "10.0.0.4:1",
            ),
            (
                &[
                    ("LWS_WORKER_INDEX", "3"),
                    ("LWS_GROUP_SIZE", "4"),
                    ("LWS_LEADER_ADDRESS", "leader.svc"),
                ],
                "lws",
                "leader.svc:29500",
            ),
        ];
        for (env, source, master) in cases {
            let boot = resolve(&BootstrapFlags::default(), env_of(env))
                .unwrap()
                .unwrap();
            assert_eq!(
                (boot.rank, boot.world, boot.source, boot.master.as_str()),
                (3, 4, source, master)
            );
        }
    }

    #[test]
    fn bad_bootstraps_say_what_to_fix() {
        assert!(resolve(&BootstrapFlags::default(), env_of(&[]))
            .unwrap()
            .is_none());
        let half = BootstrapFlags {
            rank: Some(0),
            ..Default::default()
        };
        assert!(resolve(&half, env_of(&[]))
            .unwrap_err()
            .to_string()
            .contains("the rank setting and the world size setting go together"));
        let out = BootstrapFlags {
            rank: Some(4),
            world: Some(4),
            master: Some("h:1".into()),
        };
        assert!(resolve(&out, env_of(&[]))
            .unwrap_err()
            .to_string()
            .contains("outside a world of 4"));
        let no_master = resolve(
            &BootstrapFlags::default(),
            env_of(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]),
        );
        assert!(no_master
            .unwrap_err()
            .to_string()
            .contains("pass the master address setting (HOST:PORT)"));
        let garbage = resolve(
            &BootstrapFlags::default(),
            env_of(&[("RANK", "x"), ("WORLD_SIZE", "2")]),
        );
        assert!(garbage
            .unwrap_err()
            .to_string()
            .contains("RANK='x' is not a number"));
    }

    #[test]
    fn master_addresses_get_the_default_port_ipv6_included() {
        use fabric::bootstrap::with_default_port;
        assert_eq!(with_default_port("10.0.0.1"), "10.0.0.1:29500");
        assert_eq!(with_default_port("node:7"), "node:7");
        assert_eq!(with_default_port("fe80::1"), "[fe80::1]:29500");
        assert_eq!(with_default_port("[::1]:7"), "[::1]:7");
        assert_eq!(with_default_port("[::1]"), "[::1]:29500");
        assert_eq!(resolve_addr("::1").unwrap(), "[::1]:29500".parse().unwrap());
    }

    #[test]
    fn peer_proofs_bind_the_job_key_the_nonce_and_both_ranks() {
        let p = peer_proof("key", "n", 1, 3);
        assert!(peer_is_authentic("key", "n", 1, 3, &p));
        assert!(!peer_is_authentic("key", "n", 2, 3, &p));
        assert!(!peer_is_authentic("key", "n", 1, 2, &p));
        assert!(!peer_is_authentic("key", "replayed", 1, 3, &p));
        assert!(!peer_is_authentic("guess", "n", 1, 3, &p));
    }

    #[test]
    fn frames_round_trip_and_reject_bad_headers() {
        let message = Message::Join {
            rank: 2,
            world: 4,
            data_addr: "10.0.0.2:4000".parse().unwrap(),
        };
        let frame = encode(&message);
        assert_eq!(&frame[..4], b"NLNK", "one frame for every protocol");
        assert_eq!(decode(&frame).unwrap(), Some((message, frame.len())));
        assert_eq!(decode(&frame[..frame.len() - 1]).unwrap(), None);

        let mut bad = frame.clone();
        bad[0] = b'X';
        assert!(decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a nodelink collbench rank"));
        let mut newer = frame.clone();
        newer[5] = 9;
        assert!(decode(&newer)
            .unwrap_err()
            .to_string()
            .contains("protocol v9"));
        // The rank table's bound is the rendezvous's own, above the control default.
        let mut big = frame.clone();
        big[7..11].copy_from_slice(&MAX_PAYLOAD.to_be_bytes());
        assert_eq!(decode(&big[..HEADER_LEN]).unwrap(), None);
        big[7..11].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert!(decode(&big).unwrap_err().to_string().contains("limit"));
        let mut garbled = frame.clone();
        garbled[HEADER_LEN] = b'#';
        assert!(decode(&garbled).is_err());
        // A Go frame that carries a Join is refused, not taken for either.
        let mut mislabelled = frame;
        mislabelled[6] = GO;
        assert!(decode(&mislabelled)
            .unwrap_err()
            .to_string()
            .contains("kind 145 carries a Join"));
    }
}
