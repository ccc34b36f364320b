//! How N ranks find each other without MPI or etcd: rank 0 listens on the master address,
//! every rank reports its data address, rank 0 sends the table back, ranks connect a full
//! mesh, then a barrier. Rank/world/master come from flags, else the launcher's env vars.
//!
//! The wire messages are sans-IO (`encode`/`decode` over bytes); the socket shell below
//! gives every wait a deadline, so a rank that never shows up is an error naming it.

use crate::error::CollError;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

pub const DEFAULT_PORT: u16 = 29500;
const MAGIC: &[u8; 4] = b"NLRV";
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest rendezvous frame: a table of a few thousand addresses.
const MAX_FRAME: usize = 256 * 1024;
const HEADER: usize = 10;

/// Who this process is and where rank 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub rank: usize,
    pub world: usize,
    pub master: String,
    /// Where rank/world came from: "flags", "torchrun", "slurm", "openmpi", "pmi", "lws".
    pub source: &'static str,
}

/// What the user typed; any of it may be missing.
#[derive(Debug, Clone, Default)]
pub struct BootstrapFlags {
    pub rank: Option<usize>,
    pub world: Option<usize>,
    pub master: Option<String>,
}

/// Resolves rank, world and master from flags, then torchrun, Slurm, Open MPI, PMI and
/// LeaderWorkerSet variables, in that order. `Ok(None)`: nothing says this is multi-rank.
pub fn resolve(
    flags: &BootstrapFlags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Bootstrap>, CollError> {
    let number = |key: &str| -> Result<Option<usize>, CollError> {
        match env(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                CollError::Bootstrap(format!(
                    "{key}='{v}' is not a number: fix the launcher environment"
                ))
            }),
        }
    };
    let (rank, world, source, launcher_master) = match (flags.rank, flags.world) {
        (Some(rank), Some(world)) => (rank, world, "flags", None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(CollError::Bootstrap(
                "--rank and --world go together: pass both, or neither to read the launcher's environment".into(),
            ))
        }
        (None, None) => {
            let master_from = |addr: &str, port: &str| {
                env(addr).map(|a| format!("{a}:{}", env(port).unwrap_or_else(|| DEFAULT_PORT.to_string())))
            };
            if let (Some(r), Some(w)) = (number("RANK")?, number("WORLD_SIZE")?) {
                (r, w, "torchrun", master_from("MASTER_ADDR", "MASTER_PORT"))
            } else if let (Some(r), Some(w)) = (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                (r, w, "slurm", master_from("SLURM_LAUNCH_NODE_IPADDR", "MASTER_PORT"))
            } else if let (Some(r), Some(w)) =
                (number("OMPI_COMM_WORLD_RANK")?, number("OMPI_COMM_WORLD_SIZE")?)
            {
                (r, w, "openmpi", None)
            } else if let (Some(r), Some(w)) = (number("PMI_RANK")?, number("PMI_SIZE")?) {
                (r, w, "pmi", None)
            } else if let (Some(r), Some(w)) = (number("LWS_WORKER_INDEX")?, number("LWS_GROUP_SIZE")?) {
                (r, w, "lws", master_from("LWS_LEADER_ADDRESS", "MASTER_PORT"))
            } else {
                return Ok(None);
            }
        }
    };
    if world == 0 || rank >= world {
        return Err(CollError::Bootstrap(format!(
            "rank {rank} is outside a world of {world} ranks (from {source}): ranks are 0..world-1"
        )));
    }
    let master = flags.master.clone().or(launcher_master).or_else(|| {
        env("MASTER_ADDR").map(|a| {
            format!(
                "{a}:{}",
                env("MASTER_PORT").unwrap_or_else(|| DEFAULT_PORT.to_string())
            )
        })
    });
    let master = match master {
        Some(m) if m.contains(':') => m,
        Some(host) => format!("{host}:{DEFAULT_PORT}"),
        None if world == 1 => format!("127.0.0.1:{DEFAULT_PORT}"),
        None => {
            return Err(CollError::Bootstrap(format!(
                "rank {rank} of {world} (from {source}) has no rendezvous address: pass --master HOST:PORT or set MASTER_ADDR"
            )))
        }
    };
    Ok(Some(Bootstrap {
        rank,
        world,
        master,
        source,
    }))
}

/// Rendezvous messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Hello {
        rank: usize,
        world: usize,
        data_addr: SocketAddr,
    },
    Table {
        addrs: Vec<SocketAddr>,
    },
    /// First bytes on a mesh connection: who is calling.
    Peer {
        rank: usize,
    },
    Ready,
    Go,
    Abort {
        reason: String,
    },
}

/// Frame: magic, version (u16 BE), length (u32 BE), JSON payload.
pub fn encode(message: &Message) -> Vec<u8> {
    let payload = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Checks a frame header; returns the payload length.
pub fn decode_header(header: &[u8; HEADER]) -> Result<usize, CollError> {
    if &header[..4] != MAGIC {
        return Err(CollError::Protocol(
            "peer is not a nodelink collbench rank (bad magic): check --master points at rank 0 of the same job".into(),
        ));
    }
    let version = u16::from_be_bytes([header[4], header[5]]);
    if version != PROTOCOL_VERSION {
        return Err(CollError::Protocol(format!(
            "peer speaks rendezvous protocol v{version}, this is v{PROTOCOL_VERSION}: run the same nodelink version on every rank"
        )));
    }
    let length = u32::from_be_bytes([header[6], header[7], header[8], header[9]]) as usize;
    if length > MAX_FRAME {
        return Err(CollError::Protocol(format!(
            "peer announced a {length}-byte rendezvous frame (limit {MAX_FRAME}): refusing it"
        )));
    }
    Ok(length)
}

pub fn decode_payload(payload: &[u8]) -> Result<Message, CollError> {
    serde_json::from_slice(payload)
        .map_err(|e| CollError::Protocol(format!("garbled rendezvous message: {e}")))
}

pub(crate) fn send(
    stream: &mut TcpStream,
    message: &Message,
    deadline: Instant,
) -> Result<(), CollError> {
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(CollError::io("setting a socket timeout"))?;
    stream
        .write_all(&encode(message))
        .map_err(CollError::io("sending a rendezvous message"))
}

pub(crate) fn receive(
    stream: &mut TcpStream,
    deadline: Instant,
    from: &str,
) -> Result<Message, CollError> {
    stream
        .set_read_timeout(Some(remaining(deadline)?))
        .map_err(CollError::io("setting a socket timeout"))?;
    let mut header = [0u8; HEADER];
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            CollError::Timeout(format!("{from} sent nothing before the deadline"))
        }
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            CollError::PeerGone(format!("{from} closed the connection during rendezvous"))
        }
        _ => CollError::Io {
            context: format!("reading from {from}"),
            source: e,
        },
    };
    stream.read_exact(&mut header).map_err(timed_out)?;
    let length = decode_header(&header)?;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).map_err(timed_out)?;
    match decode_payload(&payload)? {
        Message::Abort { reason } => Err(CollError::Aborted(reason)),
        message => Ok(message),
    }
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
    text.to_socket_addrs()
        .map_err(|e| CollError::Bootstrap(format!("cannot resolve master address '{text}': {e}")))?
        .next()
        .ok_or_else(|| CollError::Bootstrap(format!("master address '{text}' resolves to nothing")))
}

/// Accepts one connection before the deadline (non-blocking accept, polled).
pub(crate) fn accept_until(
    listener: &TcpListener,
    deadline: Instant,
) -> Result<Option<TcpStream>, CollError> {
    listener
        .set_nonblocking(true)
        .map_err(CollError::io("setting the listener non-blocking"))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(CollError::io("setting a socket blocking"))?;
                return Ok(Some(stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(CollError::Io {
                    context: "accepting a rank".into(),
                    source: e,
                })
            }
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
            .contains("--rank and --world go together"));
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
            .contains("--master HOST:PORT"));
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
    fn frames_round_trip_and_reject_bad_headers() {
        let message = Message::Hello {
            rank: 2,
            world: 4,
            data_addr: "10.0.0.2:4000".parse().unwrap(),
        };
        let frame = encode(&message);
        let header: [u8; HEADER] = frame[..HEADER].try_into().unwrap();
        let length = decode_header(&header).unwrap();
        assert_eq!(
            decode_payload(&frame[HEADER..HEADER + length]).unwrap(),
            message
        );

        let mut bad = header;
        bad[0] = b'X';
        assert!(decode_header(&bad)
            .unwrap_err()
            .to_string()
            .contains("bad magic"));
        let mut newer = header;
        newer[5] = 9;
        assert!(decode_header(&newer)
            .unwrap_err()
            .to_string()
            .contains("protocol v9"));
        let mut huge = header;
        huge[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_header(&huge)
            .unwrap_err()
            .to_string()
            .contains("refusing"));
        assert!(decode_payload(b"{not json").is_err());
    }
}
