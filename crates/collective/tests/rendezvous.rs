//! The rendezvous against strangers, over real loopback sockets: one regression test per
//! hole found (a stranger claiming a rank, silent connections, a slowloris, a wrong token,
//! another protocol version), each with the real ranks joining meanwhile. Every
//! connection opens with the session layer's Hello/Auth, as linkbench's and kvxfer's do.

use collective::rendezvous::{self, Message, PROTOCOL_VERSION};
use collective::{Bootstrap, Communicator};
use fabric::channel::Channel;
use fabric::control::{self, AuthMsg, Hello};
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

/// A session Hello frame from `tool`, claiming a token (`auth`) or not.
fn hello_frame(tool: &str, auth: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    control::encode(
        &control::Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            tool: tool.into(),
            software: "0.1.0".into(),
            nonce: "00".repeat(16),
            auth,
        }),
        &mut bytes,
    );
    bytes
}

/// Reads one session frame (Hello, Auth, Error) from a raw socket.
fn read_session(stream: &mut TcpStream) -> control::Message {
    let mut bytes = Vec::new();
    loop {
        if let Some((message, _)) = control::decode::<control::Message>(&bytes).unwrap() {
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
    // A stranger without the token is refused at the opening, with a sentence...
    let mut channel = Channel::new(TcpStream::connect(master).unwrap(), "rank 0");
    let e = fabric::handshake::open_client_within(
        &mut channel,
        rendezvous::TOOL,
        None,
        Duration::from_secs(5),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("requires NODELINK_TOKEN"), "{e}");
    // ...and one that claims a token and sends a made-up proof is refused too, before
    // it can send a Join for rank 1.
    let mut stranger = TcpStream::connect(master).unwrap();
    stranger
        .write_all(&hello_frame(rendezvous::TOOL, true))
        .unwrap();
    let control::Message::Hello(rank0_hello) = read_session(&mut stranger) else {
        panic!("rank 0 did not answer with its Hello")
    };
    assert!(rank0_hello.auth, "rank 0 must say it requires the token");
    let mut forged = Vec::new();
    control::encode(
        &control::Message::Auth(AuthMsg {
            mac: "ab".repeat(32),
        }),
        &mut forged,
    );
    forged.extend_from_slice(&frame(&Message::Join {
        rank: 1,
        world: 2,
        data_addr: master,
    }));
    stranger.write_all(&forged).unwrap();
    match read_session(&mut stranger) {
        control::Message::Error(e) => assert!(e.message.contains("NODELINK_TOKEN"), "{e:?}"),
        other => panic!("stranger got {other:?}"),
    }
    // The real rank 1 joins.
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
    // A slowloris: drips a valid Hello one byte at a time.
    let mut slow = TcpStream::connect(master).unwrap();
    let dripper = std::thread::spawn(move || {
        let bytes = hello_frame(rendezvous::TOOL, false);
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
    let dripper = std::thread::spawn(move || {
        let bytes = hello_frame(rendezvous::TOOL, false);
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
    assert!(
        e.contains("rank 0 (the master) at")
            && e.contains("refused this rank: authentication: the client sent NODELINK_TOKEN but this server has none"),
        "{e}"
    );
    let _ = r0.join();
}

#[test]
fn another_protocol_version_is_one_sentence() {
    // A rank 0 of another version: its Hello carries the version before ours.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let master = listener.local_addr().unwrap();
    let old = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut bytes = hello_frame(rendezvous::TOOL, false);
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

/// Reads one rendezvous frame from a raw socket.
fn read_rv(stream: &mut TcpStream) -> Message {
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

/// Hole: during mesh setup a stranger on a rank's data listener could take a rank's place
/// with `Peer{rank}`. A caller now proves its rank with the job key over the callee's
/// nonce; the stranger's claim is ignored and the real rank's connection is the one kept.
#[test]
fn a_stranger_on_a_data_listener_cannot_take_a_ranks_place() {
    const T: Duration = Duration::from_secs(5);
    // The test plays rank 0 by hand; the real rank 1 joins it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let master = listener.local_addr().unwrap();
    let r1 = join(1, 2, master, Duration::from_secs(20), None);
    let (link, _) = listener.accept().unwrap();
    let mut channel = Channel::new(link, "rank 1");
    let Ok(control::Message::Hello(hello)) = channel.recv(T, "waiting for") else {
        panic!("rank 1 did not open with Hello")
    };
    fabric::handshake::open_server(&mut channel, &hello, rendezvous::TOOL, None).unwrap();
    let mut link = channel.into_stream();
    link.set_read_timeout(Some(T)).unwrap();
    let Message::Join {
        rank: 1,
        world: 2,
        data_addr,
    } = read_rv(&mut link)
    else {
        panic!("rank 1 did not claim rank 1 of 2")
    };
    let job_key = "4b".repeat(16);
    link.write_all(&frame(&Message::Table {
        addrs: vec![master, data_addr],
        job_key: job_key.clone(),
    }))
    .unwrap();

    // A stranger opens a session on rank 1's data listener and claims rank 0, unproven.
    let mut stranger = Channel::new(TcpStream::connect(data_addr).unwrap(), "rank 1");
    fabric::handshake::open_client_within(&mut stranger, rendezvous::TOOL, None, T).unwrap();
    let mut stranger = stranger.into_stream();
    stranger
        .write_all(&frame(&Message::Peer {
            rank: 0,
            mac: "00".repeat(32),
        }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    // The real rank 0 proves itself.
    let mut real = Channel::new(TcpStream::connect(data_addr).unwrap(), "rank 1");
    let callee =
        fabric::handshake::open_client_within(&mut real, rendezvous::TOOL, None, T).unwrap();
    let mut real = real.into_stream();
    real.write_all(&frame(&Message::Peer {
        rank: 0,
        mac: rendezvous::peer_proof(&job_key, &callee.nonce, 0, 1),
    }))
    .unwrap();

    // The barrier: rank 1 is Ready, rank 0 says Go.
    assert_eq!(read_rv(&mut link), Message::Ready);
    link.write_all(&frame(&Message::Go)).unwrap();
    let comm = r1.join().unwrap().expect("rank 1 joins");
    // Rank 1's connection to rank 0 is the proven one: its bytes reach the real rank 0.
    comm.stream_to(0).unwrap().write_all(b"mine").unwrap();
    real.set_read_timeout(Some(T)).unwrap();
    let mut got = [0u8; 4];
    real.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"mine");
    drop(stranger);
}
