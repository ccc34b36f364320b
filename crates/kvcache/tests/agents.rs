//! The agents over real loopback sockets: prefill-side refusals that a well-behaved
//! decode never provokes, and a lying prefill (short data, wrong checksums) that a decode
//! must catch without marking anything complete.

use fabric::channel::Channel;
use fabric::control::Message;
use fabric::handshake;
use kvcache::decode::{DecodeAgent, DecodeConfig, LinkParams, PrefillLink};
use kvcache::prefill::{PrefillAgent, PrefillConfig};
use kvcache::rdma::RdmaOptions;
use kvcache::wire::{self, KvMessage, Prefilled, Sending, Sent, Welcome};
use kvcache::{compat, Dtype, KvError, KvLayout, KvShape, Order};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn shape() -> KvShape {
    KvShape {
        model: "tiny".into(),
        layers: 2,
        kv_heads: 4,
        head_dim: 8,
        dtype: Dtype::Bf16,
        block_size: 4,
        order: Order::Nhd,
    }
}

fn quiet(_: &str) {}

/// Decode TP 1 rank 0, DP rank 0, over TCP.
fn params(shape: &KvShape) -> LinkParams<'_> {
    LinkParams {
        shape,
        decode_tp: 1,
        decode_rank: 0,
        dp_rank: 0,
        token: None,
        timeout: T,
        rdma: None,
        rails: false,
    }
}

fn start_prefill(tp: u32, rank: u32, dp: u32) -> SocketAddr {
    start_prefill_on(&["127.0.0.1"], tp, rank, dp)[0]
}

/// A prefill listening on each of `ips` (several: one per rail).
fn start_prefill_on(ips: &[&str], tp: u32, rank: u32, dp: u32) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = ips
        .iter()
        .map(|ip| TcpListener::bind(format!("{ip}:0")).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let agent = PrefillAgent::new(
        KvLayout::new(shape(), tp, rank, 32).unwrap(),
        PrefillConfig {
            dp_rank: dp,
            lease: Duration::from_secs(30),
            io_timeout: T,
            idle_timeout: kvcache::prefill::DEFAULT_IDLE_TIMEOUT,
            token: None,
            rdma: RdmaOptions::default(),
            rails: if addrs.len() > 1 {
                addrs.clone()
            } else {
                Vec::new()
            },
            session_quota: None,
            log: std::sync::Arc::new(quiet),
        },
    )
    .unwrap();
    std::thread::spawn(move || agent.serve_all(listeners));
    addrs
}

fn prefill_request(id: &str, dp: u32, tp_rank: u32) -> wire::Prefill {
    wire::Prefill {
        request_id: id.into(),
        tokens: 10,
        dp_rank: dp,
        tp_rank,
        readers: 1,
        fill: true,
    }
}

#[test]
fn prefill_refuses_other_ranks_and_the_session_goes_on() {
    let addr = start_prefill(2, 1, 0);
    let mut link = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let e = link
        .prefill(&prefill_request("a", 1, 1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("addressed to DP rank 1, but this prefill is DP rank 0"),
        "{e}"
    );
    let e = link
        .prefill(&prefill_request("a", 0, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("addressed to TP rank 0, but this prefill is TP rank 1 of 2"),
        "{e}"
    );
    // Same connection, a proper request: prefilled, then heads outside the shard refused.
    let blocks = link.prefill(&prefill_request("a", 0, 1)).unwrap();
    assert_eq!(blocks.len(), 3);
    let pool = kvcache::pool::KvPool::new(KvLayout::new(shape(), 1, 0, 8).unwrap()).unwrap();
    let e = link
        .pull("a", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds 2..4"), "{e}");
    let bytes = link
        .pull("a", &blocks, 2..4, &pool, &[0, 1, 2], true)
        .unwrap();
    assert_eq!(bytes, 3 * 2 * 2 * 4 * 2 * 16);
    // The same id with another length is refused; the same length joins the lease.
    let mut other = prefill_request("a", 0, 1);
    other.tokens = 11;
    assert!(link
        .prefill(&other)
        .unwrap_err()
        .to_string()
        .contains("already prefilled"));
    assert_eq!(link.prefill(&prefill_request("a", 0, 1)).unwrap(), blocks);
}

#[test]
fn garbage_and_strangers_do_not_disturb_the_prefill() {
    let addr = start_prefill(1, 0, 0);
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // A linkbench client finds out it reached a kvxfer endpoint.
    let stream = std::net::TcpStream::connect(addr).unwrap();
    let mut channel = Channel::new(stream, addr.to_string());
    let e = handshake::open_client(&mut channel, "linkbench", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a kvxfer endpoint, not linkbench"), "{e}");
    let mut link = PrefillLink::connect(addr, &params(&shape())).unwrap();
    assert_eq!(link.prefill(&prefill_request("b", 0, 0)).unwrap().len(), 3);
}

/// A prefill that speaks the protocol but lies about the data, per `lie`.
fn lying_prefill(lie: &'static str) -> (SocketAddr, mpsc::Receiver<KvMessage>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let layout = KvLayout::new(shape(), 1, 0, 32).unwrap();
        loop {
            let Ok((stream, peer)) = listener.accept() else {
                return;
            };
            let mut ch = Channel::new(stream, peer.to_string());
            let Ok(Message::Hello(hello)) = ch.recv(T, "hello") else {
                continue;
            };
            handshake::open_server(&mut ch, &hello, kvcache::TOOL, None).unwrap();
            let _attach = ch.recv_as::<KvMessage>(T, "attach").unwrap();
            ch.send(
                &KvMessage::Welcome(Welcome {
                    shape: shape(),
                    hash: compat::compat_hash(&shape()),
                    tp: 1,
                    tp_rank: 0,
                    dp_rank: 0,
                    num_blocks: 32,
                    lease_ms: 1000,
                    rails: Vec::new(),
                    rail_cookie: String::new(),
                }),
                T,
            )
            .unwrap();
            while let Ok(message) = ch.recv_as::<KvMessage>(T, "next") {
                match &message {
                    KvMessage::Prefill(p) => ch
                        .send(
                            &KvMessage::Prefilled(Prefilled {
                                request_id: p.request_id.clone(),
                                blocks: vec![4, 5, 6],
                            }),
                            T,
                        )
                        .unwrap(),
                    KvMessage::Pull(p) => {
                        let bytes = 3 * layout.block_bytes_all_layers();
                        ch.send(
                            &KvMessage::Sending(Sending {
                                request_id: p.request_id.clone(),
                                bytes,
                            }),
                            T,
                        )
                        .unwrap();
                        let data = vec![7u8; bytes as usize];
                        if lie == "short" {
                            ch.stream()
                                .try_clone()
                                .unwrap()
                                .write_all(&data[..100])
                                .unwrap();
                            break;
                        }
                        ch.stream().try_clone().unwrap().write_all(&data).unwrap();
                        let crc32c = vec![1, 2, 3];
                        ch.send(
                            &KvMessage::Sent(Sent {
                                request_id: p.request_id.clone(),
                                crc32c,
                            }),
                            T,
                        )
                        .unwrap();
                    }
                    _ => {}
                }
                let _ = tx.send(message);
            }
        }
    });
    (addr, rx)
}

fn decode_agent(addr: SocketAddr) -> std::sync::Arc<DecodeAgent> {
    decode_agent_checking(addr, true, false)
}

fn decode_agent_checking(
    addr: SocketAddr,
    checksums: bool,
    verify: bool,
) -> std::sync::Arc<DecodeAgent> {
    DecodeAgent::new(
        KvLayout::new(shape(), 1, 0, 8).unwrap(),
        DecodeConfig {
            peers: vec![addr],
            dp_rank: 0,
            token: None,
            timeout: T,
            checksums,
            verify,
            rails: false,
            rdma: None,
        },
    )
    .unwrap()
}

#[test]
fn corrupted_blocks_fail_the_request_and_are_reported_not_complete() {
    let (addr, seen) = lying_prefill("crc");
    let agent = decode_agent(addr);
    let mut links = agent.links();
    let e = agent
        .transfer(&mut links, "c", 10, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(e, KvError::Integrity(_)), "{e}");
    assert!(
        e.to_string()
            .contains("block 0 (remote id 4) arrived corrupted"),
        "{e}"
    );
    assert_reported_failed(&seen);
    assert_eq!(agent.blocks.free_count(), 8, "local blocks returned");
}

#[test]
fn without_checksums_the_content_check_still_fails_wrong_bytes() {
    let (addr, seen) = lying_prefill("crc");
    let agent = decode_agent_checking(addr, false, true);
    let mut links = agent.links();
    let e = agent
        .transfer(&mut links, "c", 10, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(e, KvError::Integrity(_)), "{e}");
    assert!(e.to_string().contains("wrong bytes at block 0"), "{e}");
    assert_reported_failed(&seen);
    assert_eq!(agent.blocks.free_count(), 8, "local blocks returned");
}

fn assert_reported_failed(seen: &mpsc::Receiver<KvMessage>) {
    let complete = std::iter::from_fn(|| seen.recv_timeout(T).ok()).find_map(|m| match m {
        KvMessage::Complete(c) => Some(c),
        _ => None,
    });
    assert_eq!(complete.map(|c| c.ok), Some(false));
}

#[test]
fn a_prefill_that_dies_mid_data_fails_the_request_within_the_timeout() {
    let (addr, _seen) = lying_prefill("short");
    let agent = decode_agent(addr);
    let mut links = agent.links();
    let started = std::time::Instant::now();
    let e = agent
        .transfer(&mut links, "d", 10, Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(e.contains("in the middle of the KV data"), "{e}");
    assert!(started.elapsed() < T);
    assert_eq!(agent.blocks.free_count(), 8);
}

/// Hole: any connection could pull and complete another's request by its id; the thief
/// got the KV data and the real decode then failed with "unknown request id".
#[test]
fn another_connection_cannot_pull_or_complete_a_request() {
    let addr = start_prefill(1, 0, 0);
    let mut owner = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let mut thief = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let blocks = owner.prefill(&prefill_request("victim", 0, 0)).unwrap();
    let pool = kvcache::pool::KvPool::new(KvLayout::new(shape(), 1, 0, 8).unwrap()).unwrap();
    let e = thief
        .pull("victim", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not prefilled or attached on this connection"),
        "{e}"
    );
    // Attaching as an extra reader of a one-reader request is refused too.
    let e = thief
        .prefill(&prefill_request("victim", 0, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already has all its 1 readers"), "{e}");
    // The thief's Complete is ignored (twice): the lease survives for the owner.
    thief.complete("victim", true).unwrap();
    thief.complete("victim", true).unwrap();
    let bytes = owner
        .pull("victim", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap();
    assert!(bytes > 0);
    owner.complete("victim", true).unwrap();
    // Completed by its owner: now it is gone for everyone.
    let e = owner
        .pull("victim", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown request id"), "{e}");
}

/// Two TP readers may share one request, each from its own connection.
#[test]
fn declared_readers_attach_from_their_own_connections() {
    let addr = start_prefill(1, 0, 0);
    let mut a = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let mut b = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let mut c = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let mut two = prefill_request("shared", 0, 0);
    two.readers = 2;
    let blocks = a.prefill(&two).unwrap();
    assert_eq!(b.prefill(&two).unwrap(), blocks);
    assert!(c.prefill(&two).is_err());
    let pool = kvcache::pool::KvPool::new(KvLayout::new(shape(), 1, 0, 8).unwrap()).unwrap();
    a.pull("shared", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap();
    a.complete("shared", true).unwrap();
    // One reader done; the other still pulls.
    b.pull("shared", &blocks, 0..4, &pool, &[0, 1, 2], true)
        .unwrap();
}

fn start_prefill_with(
    shape: KvShape,
    blocks: u32,
    lease: Duration,
    token: Option<&[u8]>,
) -> SocketAddr {
    start_prefill_configured(shape, blocks, |config| {
        config.lease = lease;
        config.token = token.map(<[u8]>::to_vec);
    })
}

/// A TP 1 prefill on loopback with the defaults, changed by `configure`.
fn start_prefill_configured(
    shape: KvShape,
    blocks: u32,
    configure: impl FnOnce(&mut PrefillConfig),
) -> SocketAddr {
    start_prefill_agent(shape, blocks, configure).0
}

/// [`start_prefill_configured`], also handing back the agent (for its stats).
fn start_prefill_agent(
    shape: KvShape,
    blocks: u32,
    configure: impl FnOnce(&mut PrefillConfig),
) -> (SocketAddr, std::sync::Arc<PrefillAgent>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = PrefillConfig {
        dp_rank: 0,
        lease: Duration::from_secs(30),
        io_timeout: T,
        idle_timeout: kvcache::prefill::DEFAULT_IDLE_TIMEOUT,
        token: None,
        rdma: RdmaOptions::default(),
        rails: Vec::new(),
        session_quota: None,
        log: std::sync::Arc::new(quiet),
    };
    configure(&mut config);
    let agent = PrefillAgent::new(KvLayout::new(shape, 1, 0, blocks).unwrap(), config).unwrap();
    let serving = std::sync::Arc::clone(&agent);
    std::thread::spawn(move || serving.serve(listener));
    (addr, agent)
}

/// Hole: one Pull naming the same leased block 8,192 times made prefill send 3.76 GB.
#[test]
fn a_pull_naming_a_block_twice_is_refused() {
    let addr = start_prefill(1, 0, 0);
    let mut link = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let blocks = link.prefill(&prefill_request("dup", 0, 0)).unwrap();
    let pool = kvcache::pool::KvPool::new(KvLayout::new(shape(), 1, 0, 8).unwrap()).unwrap();
    let twice = [blocks[0], blocks[0]];
    let e = link
        .pull("dup", &twice, 0..4, &pool, &[0, 1], true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("names block") && e.contains("more than once"),
        "{e}"
    );
}

/// A request that takes all of an 8-block pool (8 blocks of 4 tokens).
fn whole_pool(id: &str) -> wire::Prefill {
    wire::Prefill {
        request_id: id.into(),
        tokens: 32,
        dp_rank: 0,
        tp_rank: 0,
        readers: 1,
        fill: false,
    }
}

/// Hole: leases survived their connection's close, so a decode that died held its
/// blocks until the lease ran out (30 s by default) while others waited.
#[test]
fn a_closed_connection_frees_its_requests_at_once() {
    let addr = start_prefill_with(shape(), 8, Duration::from_secs(60), None);
    let mut first = PrefillLink::connect(addr, &params(&shape())).unwrap();
    first.prefill(&whole_pool("held")).unwrap();
    first.close();
    let started = std::time::Instant::now();
    let mut second = PrefillLink::connect(addr, &params(&shape())).unwrap();
    second.prefill(&whole_pool("next")).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Hole: a token mismatch read as "peer sent an unknown message kind 72: run the same
/// nodelink version on both nodes"; it must name the token.
#[test]
fn a_token_mismatch_names_the_token() {
    let addr = start_prefill_with(shape(), 8, Duration::from_secs(30), Some(b"right"));
    let tiny = shape();
    let mut p = params(&tiny);
    p.token = Some(b"wrong");
    let e = PrefillLink::connect(addr, &p)
        .err()
        .expect("must be refused")
        .to_string();
    assert!(e.contains("NODELINK_TOKEN"), "{e}");
    assert!(!e.contains("unknown message kind"), "{e}");
}

/// Hole: another version, bad magic or an oversize frame got a silent close; each gets
/// a sentence first.
#[test]
fn another_version_gets_a_sentence_before_the_close() {
    let addr = start_prefill(1, 0, 0);
    let mut frame = Vec::new();
    fabric::control::encode(
        &Message::Hello(fabric::control::Hello {
            version: fabric::control::VERSION,
            tool: "kvxfer".into(),
            software: "9.9.9".into(),
            nonce: "00".into(),
            auth: false,
        }),
        &mut frame,
    );
    frame[4..6].copy_from_slice(&(fabric::control::VERSION + 1).to_be_bytes());
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(T)).unwrap();
    raw.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut raw, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("run the same nodelink version"), "{text}");
}

static FLOOD_LINES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_flood_line(_: &str) {
    FLOOD_LINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Diagnostics: 20,000 unknown Completes made 20,000 prefill log lines. Lines peers cause
/// are now budgeted (20 a second), and the session still works.
#[test]
fn a_flood_of_unknown_completions_does_not_flood_the_log() {
    let (addr, agent) = start_prefill_agent(shape(), 32, |config| {
        config.log = std::sync::Arc::new(count_flood_line);
    });
    let mut link = PrefillLink::connect(addr, &params(&shape())).unwrap();
    let started = std::time::Instant::now();
    for i in 0..2000 {
        link.complete(&format!("nope-{i}"), true).unwrap();
    }
    // The prefill reads in order: once this is answered, every Complete was handled.
    link.prefill(&prefill_request("after", 0, 0)).unwrap();
    let windows = started.elapsed().as_secs() as usize + 1;
    let lines = FLOOD_LINES.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        lines <= windows * kvcache::log_budget::LINES_PER_WINDOW as usize && lines < 500,
        "{lines} lines in {windows} s"
    );
    let dropped = agent
        .stats
        .log_lines_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        lines as u64 + dropped,
        2000,
        "every line written or counted"
    );
}

#[test]
fn a_pull_striped_over_two_rails_lands_byte_exact_and_strangers_cannot_join_a_session() {
    // Two loopback addresses stand for two NICs.
    let addrs = start_prefill_on(&["127.0.0.1", "127.0.0.2"], 1, 0, 0);
    let tiny = shape();
    let mut with_rails = params(&tiny);
    with_rails.rails = true;
    let mut link = PrefillLink::connect(addrs[0], &with_rails).unwrap();
    assert_eq!(link.rails(), 2);
    assert_eq!(link.welcome.rails.len(), 2);
    let blocks = link.prefill(&prefill_request("striped", 0, 0)).unwrap();
    let pool = kvcache::pool::KvPool::new(KvLayout::new(shape(), 1, 0, 8).unwrap()).unwrap();
    let local = [5, 1, 6];
    let bytes = link
        .pull("striped", &blocks, 0..4, &pool, &local, true)
        .unwrap();
    assert_eq!(bytes, 3 * pool.layout().block_bytes_all_layers());
    // The bytes landed where the plan puts them: the pattern prefill wrote, block by block.
    kvcache::pattern::check(&pool, &local, kvcache::pattern::request_seed("striped")).unwrap();

    // A stranger presenting a made-up cookie is refused and joins nothing.
    let stream = std::net::TcpStream::connect(addrs[1]).unwrap();
    let mut stranger = Channel::new(stream, addrs[1].to_string());
    handshake::open_client(&mut stranger, kvcache::TOOL, None).unwrap();
    stranger
        .send(
            &KvMessage::AttachRail(wire::AttachRail {
                cookie: "00112233445566778899aabbccddeeff".into(),
                index: 1,
            }),
            T,
        )
        .unwrap();
    match stranger.recv_as::<KvMessage>(T, "answer").unwrap() {
        KvMessage::Refused(r) => assert!(
            r.message.contains("no session has that rail cookie"),
            "{r:?}"
        ),
        other => panic!("{other:?}"),
    }
    // A one-rail link to the same prefill asks for no striping, and is served.
    let mut plain = PrefillLink::connect(addrs[1], &params(&shape())).unwrap();
    assert_eq!(plain.rails(), 1);
    let blocks = plain.prefill(&prefill_request("plain", 0, 0)).unwrap();
    plain
        .pull("plain", &blocks, 0..4, &pool, &[0, 2, 3], true)
        .unwrap();
}

/// Hole: one connection could prefill request after request, never complete them, and
/// hold the whole pool until the leases expired. Now it holds at most its quota (half
/// the pool by default), its first request always taken; others are still served.
#[test]
fn one_connection_cannot_hold_more_than_its_quota_of_the_pool() {
    let addr = start_prefill(1, 0, 0); // 32 blocks: a quota of 16
    let mut hog = PrefillLink::connect(addr, &params(&shape())).unwrap();
    // 10 tokens at block size 4: 3 blocks each; five fit (15), the sixth would make 18.
    for i in 0..5 {
        hog.prefill(&prefill_request(&format!("hog-{i}"), 0, 0))
            .unwrap();
    }
    let e = hog
        .prefill(&prefill_request("hog-5", 0, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already holds 15") && e.contains("may hold 16 of the pool's 32"),
        "{e}"
    );
    // Another connection is served from what is left.
    let mut other = PrefillLink::connect(addr, &params(&shape())).unwrap();
    assert_eq!(
        other.prefill(&prefill_request("fair", 0, 0)).unwrap().len(),
        3
    );
    // The hog completes one of its requests: now it may prefill again.
    hog.complete("hog-0", true).unwrap();
    assert_eq!(
        hog.prefill(&prefill_request("hog-6", 0, 0)).unwrap().len(),
        3
    );
    // A first request larger than the quota is still taken (a long prompt, one decode);
    // a second one on the same connection is not.
    let fresh = start_prefill(1, 0, 0);
    let mut long = PrefillLink::connect(fresh, &params(&shape())).unwrap();
    let mut request = prefill_request("long", 0, 0);
    request.tokens = 80;
    assert_eq!(long.prefill(&request).unwrap().len(), 20);
    let e = long
        .prefill(&prefill_request("more", 0, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds 20"), "{e}");
}

/// Hole: an attached, idle session held its prefill thread for 600 s. Prefill now closes
/// it after its idle timeout, and decode, finding its link closed, opens a new one: the
/// next request succeeds instead of failing on the dead link.
#[test]
fn an_idle_session_is_closed_and_decode_reconnects_for_the_next_request() {
    let addr = start_prefill_configured(shape(), 32, |config| {
        config.idle_timeout = Duration::from_millis(200);
    });
    let decode = decode_agent(addr);
    let mut links = decode.links();
    decode
        .transfer(&mut links, "before", 10, Duration::ZERO)
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    decode
        .transfer(&mut links, "after", 10, Duration::ZERO)
        .unwrap();
}

/// Hole: each look at a full pool woke every other queued request, which looked and woke
/// it back, so a prefill with a full pool and a few requests queued spun both cores
/// (a block-size sweep at 32 in flight ran at a quarter of its rate). A queued request
/// now looks once, then only when blocks come free.
#[test]
fn requests_queued_for_a_full_pool_wait_without_spinning() {
    let (addr, agent) = start_prefill_agent(shape(), 8, |config| {
        config.lease = Duration::from_secs(60);
    });
    let mut holder = PrefillLink::connect(addr, &params(&shape())).unwrap();
    holder.prefill(&whole_pool("held")).unwrap();
    let queued: Vec<_> = ["first", "second", "third"]
        .into_iter()
        .map(|id| {
            std::thread::spawn(move || {
                let mut link = PrefillLink::connect(addr, &params(&shape())).unwrap();
                let blocks = link.prefill(&whole_pool(id))?;
                link.complete(id, true)?;
                Ok::<_, KvError>(blocks.len())
            })
        })
        .collect();
    let waits = || agent.stats.waits_for_blocks.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    while waits() < 3 && started.elapsed() < T {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Three looks, one each; before the fix, 47,306 by now on the project's test host.
    assert_eq!(
        waits(),
        3,
        "queued requests looked again with nothing freed"
    );
    holder.complete("held", true).unwrap();
    for request in queued {
        assert_eq!(request.join().unwrap().unwrap(), 8);
    }
    // Each release wakes the queue once: a few looks more, not thousands.
    assert!(waits() <= 3 + 2 * 3, "{} looks", waits());
}
