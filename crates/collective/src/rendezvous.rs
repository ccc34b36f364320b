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

/// The session layer's version, which every rank must share.
pub use fabric::control::VERSION as PROTOCOL_VERSION;
use fabric::control::{parse_payload, Wire, HEADER_LEN};
use fabric::ProtocolError;
/// Largest rendezvous payload: a table of a few thousand addresses.
pub const MAX_PAYLOAD: u32 = 256 * 1024;

/// Rendezvous messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// The listening side's first words on every connection (rank 0 to a joining rank, a
    /// rank to a lower rank dialling its data port): a fresh nonce to sign, and whether
    /// this side requires `NODELINK_TOKEN`.
    Challenge {
        nonce: String,
        auth: bool,
    },
    /// A joining rank's claim; `mac` signs it and both nonces with the token ("" without).
    Hello {
        rank: usize,
        world: usize,
        data_addr: SocketAddr,
        nonce: String,
        mac: String,
    },
    /// Every rank's data address and the job key that mesh connections prove themselves
    /// with; `mac` shows rank 0 holds the token ("" without).
    Table {
        addrs: Vec<SocketAddr>,
        job_key: String,
        mac: String,
    },
    /// First words on a mesh connection: who is calling, signed with the job key over the
    /// callee's nonce, so a stranger cannot claim a rank.
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

/// Longest a greeting may take on one connection (a real rank answers at once); a
/// stranger that says nothing costs this much of one helper thread, never the join.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections greeted at once; past it, the oldest greeting is cut to make room, so idle
/// strangers can never keep a real rank out.
pub const MAX_GREETING: usize = 256;

const HELLO_LABEL: &str = "nodelink-rv hello";
const TABLE_LABEL: &str = "nodelink-rv table";
const PEER_LABEL: &str = "nodelink-rv peer";

/// The parts a Hello's proof covers.
fn hello_parts(
    rank0_nonce: &str,
    nonce: &str,
    rank: usize,
    world: usize,
    data_addr: &SocketAddr,
) -> [Vec<u8>; 5] {
    [
        rank0_nonce.as_bytes().to_vec(),
        nonce.as_bytes().to_vec(),
        rank.to_be_bytes().to_vec(),
        world.to_be_bytes().to_vec(),
        data_addr.to_string().into_bytes(),
    ]
}

fn refs(parts: &[Vec<u8>]) -> Vec<&[u8]> {
    parts.iter().map(Vec::as_slice).collect()
}

/// A joining rank's signed Hello.
pub fn signed_hello(
    token: Option<&[u8]>,
    rank0_nonce: &str,
    nonce: String,
    rank: usize,
    world: usize,
    data_addr: SocketAddr,
) -> Message {
    let mac = token.map_or_else(String::new, |t| {
        fabric::control::sign(
            t,
            HELLO_LABEL,
            &refs(&hello_parts(rank0_nonce, &nonce, rank, world, &data_addr)),
        )
    });
    Message::Hello {
        rank,
        world,
        data_addr,
        nonce,
        mac,
    }
}

/// Whether a Hello's proof holds (always, when rank 0 has no token).
pub fn hello_is_authentic(token: Option<&[u8]>, rank0_nonce: &str, hello: &Message) -> bool {
    let Message::Hello {
        rank,
        world,
        data_addr,
        nonce,
        mac,
    } = hello
    else {
        return false;
    };
    token.is_none_or(|t| {
        fabric::control::verify(
            t,
            HELLO_LABEL,
            &refs(&hello_parts(rank0_nonce, nonce, *rank, *world, data_addr)),
            mac,
        )
    })
}

fn table_parts(
    rank0_nonce: &str,
    nonce: &str,
    addrs: &[SocketAddr],
    job_key: &str,
) -> Vec<Vec<u8>> {
    let mut parts = vec![
        rank0_nonce.as_bytes().to_vec(),
        nonce.as_bytes().to_vec(),
        job_key.as_bytes().to_vec(),
    ];
    parts.extend(addrs.iter().map(|a| a.to_string().into_bytes()));
    parts
}

pub fn signed_table(
    token: Option<&[u8]>,
    rank0_nonce: &str,
    nonce: &str,
    addrs: Vec<SocketAddr>,
    job_key: String,
) -> Message {
    let mac = token.map_or_else(String::new, |t| {
        fabric::control::sign(
            t,
            TABLE_LABEL,
            &refs(&table_parts(rank0_nonce, nonce, &addrs, &job_key)),
        )
    });
    Message::Table {
        addrs,
        job_key,
        mac,
    }
}

pub fn table_is_authentic(
    token: Option<&[u8]>,
    rank0_nonce: &str,
    nonce: &str,
    addrs: &[SocketAddr],
    job_key: &str,
    mac: &str,
) -> bool {
    token.is_none_or(|t| {
        fabric::control::verify(
            t,
            TABLE_LABEL,
            &refs(&table_parts(rank0_nonce, nonce, addrs, job_key)),
            mac,
        )
    })
}

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
const CHALLENGE: u8 = 140;
const HELLO: u8 = 141;
const TABLE: u8 = 142;
const PEER: u8 = 143;
const READY: u8 = 144;
const GO: u8 = 145;
const ABORT: u8 = 146;

impl Wire for Message {
    const MAX_PAYLOAD: u32 = MAX_PAYLOAD;

    fn kind(&self) -> u8 {
        match self {
            Message::Challenge { .. } => CHALLENGE,
            Message::Hello { .. } => HELLO,
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
            CHALLENGE => "Challenge",
            HELLO => "Hello",
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

/// Connects and reads the listener's Challenge, retrying while the listener drops the
/// connection before greeting it (it does so when strangers fill its greeting slots).
pub(crate) fn connect_greeted(
    addr: SocketAddr,
    deadline: Instant,
    what: &str,
) -> Result<(TcpStream, String, bool), CollError> {
    loop {
        let mut stream = connect_until(addr, deadline, what)?;
        let until = deadline.min(Instant::now() + GREETING_TIMEOUT);
        match receive(&mut stream, until, what) {
            Ok(Message::Challenge { nonce, auth }) => return Ok((stream, nonce, auth)),
            Ok(other) => {
                return Err(CollError::Protocol(format!(
                    "{what} at {addr} answered {} instead of a rendezvous challenge: check the address and that every rank runs the same nodelink version",
                    name(&other)
                )))
            }
            Err(CollError::PeerGone(_) | CollError::Timeout(_))
                if Instant::now() + Duration::from_millis(100) < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A message's name, for errors (never its contents: those may come from a stranger).
pub fn name(message: &Message) -> &'static str {
    match message {
        Message::Challenge { .. } => "Challenge",
        Message::Hello { .. } => "Hello",
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
    fn proofs_bind_the_claim_and_the_nonces() {
        let addr: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let hello = signed_hello(Some(b"tok"), "r0", "j".into(), 1, 2, addr);
        assert!(hello_is_authentic(Some(b"tok"), "r0", &hello));
        assert!(!hello_is_authentic(Some(b"other"), "r0", &hello));
        assert!(!hello_is_authentic(Some(b"tok"), "replayed", &hello));
        // A stranger without the token sends no proof: refused when rank 0 has one.
        let bare = signed_hello(None, "r0", "j".into(), 1, 2, addr);
        assert!(!hello_is_authentic(Some(b"tok"), "r0", &bare));
        assert!(hello_is_authentic(None, "r0", &bare));
        // Changing the claimed rank breaks the proof.
        let Message::Hello { nonce, mac, .. } = hello else {
            unreachable!()
        };
        let forged = Message::Hello {
            rank: 0,
            world: 2,
            data_addr: addr,
            nonce,
            mac,
        };
        assert!(!hello_is_authentic(Some(b"tok"), "r0", &forged));

        let p = peer_proof("key", "n", 1, 3);
        assert!(peer_is_authentic("key", "n", 1, 3, &p));
        assert!(!peer_is_authentic("key", "n", 2, 3, &p));
        assert!(!peer_is_authentic("guess", "n", 1, 3, &p));
        let Message::Table {
            addrs,
            job_key,
            mac,
        } = signed_table(Some(b"tok"), "r0", "j", vec![addr], "key".into())
        else {
            unreachable!()
        };
        assert!(table_is_authentic(
            Some(b"tok"),
            "r0",
            "j",
            &addrs,
            &job_key,
            &mac
        ));
        assert!(!table_is_authentic(
            Some(b"tok"),
            "r0",
            "j",
            &addrs,
            "other",
            &mac
        ));
    }

    #[test]
    fn frames_round_trip_and_reject_bad_headers() {
        let message = signed_hello(
            Some(b"t"),
            "n0",
            "n1".into(),
            2,
            4,
            "10.0.0.2:4000".parse().unwrap(),
        );
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
        // A Go frame that carries a Hello is refused, not taken for either.
        let mut mislabelled = frame;
        mislabelled[6] = GO;
        assert!(decode(&mislabelled)
            .unwrap_err()
            .to_string()
            .contains("kind 145 carries a Hello"));
    }
}
