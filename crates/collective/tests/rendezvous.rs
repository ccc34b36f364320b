//! The rendezvous against strangers, over real loopback sockets: one regression test per
//! hole found (a stranger claiming a rank, silent connections, a slowloris, a wrong token,
//! another protocol version), each with the real ranks joining meanwhile.

use collective::rendezvous::{self, Message, PROTOCOL_VERSION};
use collective::{Bootstrap, Communicator};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn boot(rank: usize, world: usize, master: SocketAddr) -> Bootstrap {
    Bootstrap {
        rank,
        world,
        master: master.to_string(),
        source: "flags",
    }
}

fn frame(message: &Message) -> Vec<u8> {
    rendezvous::encode(message)
}

/// Reads one frame (header and payload) from a raw socket.
fn read_frame(stream: &mut TcpStream) -> Message {
    let mut bytes = Vec::new();
    loop {
        if let Some((message, _)) = rendezvous::decode(&bytes).unwrap() {
            return message;
        }
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).unwrap();
        bytes.push(byte[0]);
    }
}

/// Rank 0 in a thread on a fresh loopback port.
fn rank0(
    world: usize,
    timeout: Duration,
    token: Option<&'static [u8]>,
) -> (
    SocketAddr,
    std::thread::JoinHandle<Result<Communicator, collective::CollError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let master = listener.local_addr().unwrap();
    let b = boot(0, world, master);
    let handle =
        std::thread::spawn(move || Communicator::join(&b, timeout, Some(listener), token, &log()));
    (master, handle)
}

fn join(
    rank: usize,
    world: usize,
    master: SocketAddr,
    timeout: Duration,
    token: Option<&'static [u8]>,
) -> std::thread::JoinHandle<Result<Communicator, collective::CollError>> {
    let b = boot(rank, world, master);
    std::thread::spawn(move || Communicator::join(&b, timeout, None, token, &log()))
}

#[test]
fn a_stranger_claiming_rank_1_without_the_token_does_not_take_its_place() {
    let (master, r0) = rank0(2, Duration::from_secs(20), Some(b"s3cret"));
    // The stranger answers the challenge with an unsigned Hello for rank 1, first.
    let mut stranger = TcpStream::connect(master).unwrap();
    let Message::Challenge { nonce, auth } = read_frame(&mut stranger) else {
        panic!("rank 0 did not open with a Challenge")
    };
    assert!(auth, "rank 0 must say it requires the token");
    let forged = rendezvous::signed_hello(None, &nonce, "x".into(), 1, 2, master);
    stranger.write_all(&frame(&forged)).unwrap();
    // Rank 0 turns it away with a sentence...
    match read_frame(&mut stranger) {
        Message::Abort { reason, .. } => assert!(reason.contains("NODELINK_TOKEN"), "{reason}"),
        other => panic!("stranger got {other:?}"),
    }
    // ...and the real rank 1 joins.
    let r1 = join(1, 2, master, Duration::from_secs(20), Some(b"s3cret"));
    let (c0, c1) = (r0.join().unwrap(), r1.join().unwrap());
    assert!(c0.is_ok() && c1.is_ok(), "{:?} {:?}", c0.err(), c1.err());
}

#[test]
fn silent_connections_and_a_slowloris_do_not_stall_the_join() {
    let timeout = Duration::from_secs(20);
    let (master, r0) = rank0(3, timeout, None);
    // Six silent connections cost nothing (each used to cost rank 0 five seconds).
    let silent: Vec<TcpStream> = (0..6)
        .map(|_| TcpStream::connect(master).unwrap())
        .collect();
    // A slowloris: reads the challenge, then drips a valid header one byte at a time.
    let mut slow = TcpStream::connect(master).unwrap();
    let _ = read_frame(&mut slow);
    let dripper = std::thread::spawn(move || {
        let bytes = frame(&Message::Ready);
        for b in bytes.iter().cycle().take(200) {
            if slow.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let r1 = join(1, 3, master, timeout, None);
    let r2 = join(2, 3, master, timeout, None);
    let results = [r0.join().unwrap(), r1.join().unwrap(), r2.join().unwrap()];
    for r in &results {
        assert!(r.is_ok(), "{:?}", r.as_ref().err());
    }
    // Loose bound: well under the timeout, though strangers came first.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    let _ = dripper.join();
}

/// Hole: rank 0 greeted at most 64 connections at once, 5 s each, and closed the rest at
/// accept; 64 silent strangers kept every real rank out for as long as they stayed. Now
/// the oldest greeting is cut to make room, so a rank joins at once behind 300 of them.
#[test]
fn a_crowd_of_silent_connections_does_not_keep_a_rank_out() {
    let timeout = Duration::from_secs(4);
    let (master, r0) = rank0(2, timeout, None);
    let silent: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect(master).ok())
        .collect();
    assert!(silent.len() > 256, "only {} connected", silent.len());
    let r1 = join(1, 2, master, timeout, None);
    let (c0, c1) = (r0.join().unwrap(), r1.join().unwrap());
    assert!(c0.is_ok() && c1.is_ok(), "{:?} {:?}", c0.err(), c1.err());
    drop(silent);
}

#[test]
fn a_slowloris_cannot_stretch_the_deadline() {
    // Rank 1 never comes; a stranger drips bytes. Rank 0 must give up at its deadline,
    // not when the stranger stops (the per-read timer used to restart on every byte).
    let timeout = Duration::from_secs(3);
    let started = Instant::now();
    let (master, r0) = rank0(2, timeout, None);
    let mut slow = TcpStream::connect(master).unwrap();
    let _ = read_frame(&mut slow);
    let dripper = std::thread::spawn(move || {
        let bytes = frame(&Message::Ready);
        for b in bytes.iter().cycle().take(400) {
            if slow.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let e = r0
        .join()
        .unwrap()
        .err()
        .expect("rank 0 must fail")
        .to_string();
    assert!(e.contains("rank 1 of 2 never joined"), "{e}");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _ = dripper.join();
}

#[test]
fn a_wrong_token_is_one_sentence_on_both_sides() {
    let (master, r0) = rank0(2, Duration::from_secs(4), Some(b"right"));
    let r1 = join(1, 2, master, Duration::from_secs(4), Some(b"wrong"));
    let e1 = r1
        .join()
        .unwrap()
        .err()
        .expect("rank 1 must fail")
        .to_string();
    assert!(e1.contains("NODELINK_TOKEN differs"), "{e1}");
    let e0 = r0
        .join()
        .unwrap()
        .err()
        .expect("rank 0 must fail")
        .to_string();
    assert!(e0.contains("never joined"), "{e0}");
    // A token on one side only is named too.
    let (master, r0) = rank0(2, Duration::from_secs(3), None);
    let e = join(1, 2, master, Duration::from_secs(3), Some(b"t"))
        .join()
        .unwrap()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("rank 0 does not authenticate"), "{e}");
    let _ = r0.join();
}

#[test]
fn another_protocol_version_is_one_sentence() {
    // A rank 0 of another version: its Challenge carries version 1.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let master = listener.local_addr().unwrap();
    let old = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut bytes = frame(&Message::Challenge {
            nonce: "n".into(),
            auth: false,
        });
        bytes[4..6].copy_from_slice(&(PROTOCOL_VERSION - 1).to_be_bytes());
        let _ = s.write_all(&bytes);
        std::thread::sleep(Duration::from_millis(500));
    });
    let e = join(1, 2, master, Duration::from_secs(3), None)
        .join()
        .unwrap()
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        e.contains(&format!(
            "peer speaks nodelink protocol v{}, this is v{PROTOCOL_VERSION}: run the same nodelink version on every rank",
            PROTOCOL_VERSION - 1
        )),
        "{e}"
    );
    old.join().unwrap();
}

#[test]
fn mismatched_world_sizes_are_named_on_both_sides() {
    let (master, r0) = rank0(3, Duration::from_secs(10), None);
    let r1 = join(1, 2, master, Duration::from_secs(10), None);
    let e0 = r0
        .join()
        .unwrap()
        .err()
        .expect("rank 0 must fail")
        .to_string();
    let e1 = r1
        .join()
        .unwrap()
        .err()
        .expect("rank 1 must fail")
        .to_string();
    for e in [&e0, &e1] {
        assert!(e.contains("world of 2 ranks, rank 0 with 3"), "{e}");
    }
}

/// The tool's logger, as collbench injects it.
fn log() -> measure::Log {
    std::sync::Arc::new(|line: &str| eprintln!("rendezvous test: {line}"))
}
