//! The I/O shell of a pair session: A (`--peer`) drives, B (`--listen`) answers, over
//! fabric's control channel (versioned frames, Hello, `NODELINK_TOKEN`). Every wait has
//! the session's timeout; the measuring is real: TCP listeners and connects on the
//! interface addresses, don't-fragment UDP datagrams, linkbench's engine for bandwidth.

use super::wire::{Listening, PairMessage, Welcome};
use super::{
    pair_checks, DfProbe, Measured, NodeSummary, PortOutcome, PortResult, PortSpec, RouteView, Way,
    TOOL,
};
use crate::checks::Check;
use crate::facts::{resolve_with_timeout, Facts};
use fabric::channel::Channel;
use fabric::control::Message;
use fabric::{handshake, FabricError};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a pair session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    #[error(transparent)]
    Fabric(#[from] FabricError),
    /// The peer gave up and said why.
    #[error("the peer says: {0}")]
    Peer(String),
    /// This side could not take part (no address on the interface, say).
    #[error("{0}")]
    Setup(String),
    #[error("no peer connected within {0:?}")]
    NoPeer(Duration),
}

/// What a session probes and how long it may wait.
#[derive(Clone)]
pub struct PairOptions {
    pub token: Option<Vec<u8>>,
    /// TCP ports tested both ways.
    pub ports: Vec<PortSpec>,
    /// Bound on every wait (and on waiting for the peer to connect).
    pub timeout: Duration,
    /// Each bandwidth direction's length.
    pub bw_duration: Duration,
    pub log: measure::Log,
}

/// Both summaries, the measurements, and the pair checks computed from them.
#[derive(Debug, Clone)]
pub struct PairOutcome {
    pub a: NodeSummary,
    pub b: NodeSummary,
    pub measured: Measured,
    pub checks: Vec<Check>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
const UDP_SETTLE: Duration = Duration::from_millis(150);
const DNS_TIMEOUT: Duration = Duration::from_millis(600);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn recv(channel: &mut Channel, timeout: Duration, what: &str) -> Result<PairMessage, PairError> {
    match channel.recv_as::<PairMessage>(timeout, what)? {
        PairMessage::Error(why) => Err(PairError::Peer(why)),
        other => Ok(other),
    }
}

fn unexpected(expected: &'static str, got: &PairMessage) -> PairError {
    FabricError::unexpected(expected, got).into()
}

/// The interface and source address the kernel picks to reach `dest`.
pub fn route_to(dest: IpAddr) -> Option<RouteView> {
    let bind: SocketAddr = match dest {
        IpAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
        IpAddr::V6(_) => "[::]:0".parse().ok()?,
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(SocketAddr::new(dest, 9)).ok()?;
    let source = socket.local_addr().ok()?.ip();
    let iface = nix::ifaddrs::getifaddrs().ok().and_then(|mut addrs| {
        addrs.find_map(|a| {
            let address = a.address?;
            let ip = address
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))?;
            (ip == source).then_some(a.interface_name)
        })
    });
    Some(RouteView { iface, source })
}

fn own_address(summary: &NodeSummary) -> Result<IpAddr, PairError> {
    summary.address().ok_or_else(|| {
        PairError::Setup(format!(
            "{} has no address to test from (see iface.up)",
            summary.iface
        ))
    })
}

/// Connects to each port of `to`, in parallel, each bounded by [`CONNECT_TIMEOUT`].
fn connect_all(to: IpAddr, ports: &[u16]) -> Vec<PortOutcome> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = ports
            .iter()
            .map(|&port| {
                scope.spawn(move || {
                    match TcpStream::connect_timeout(&SocketAddr::new(to, port), CONNECT_TIMEOUT) {
                        Ok(_) => PortOutcome::Open,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) =>
                        {
                            PortOutcome::TimedOut
                        }
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => PortOutcome::Refused,
                        Err(e) => PortOutcome::Error(e.to_string()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(PortOutcome::Error("probe thread panicked".into()))
            })
            .collect()
    })
}

/// Listens on each port at `addr`; the errors say which could not be bound.
fn listen_all(addr: IpAddr, specs: &[PortSpec]) -> (Vec<TcpListener>, Vec<Listening>) {
    let mut listeners = Vec::new();
    let mut states = Vec::new();
    for spec in specs {
        match TcpListener::bind(SocketAddr::new(addr, spec.port)) {
            Ok(l) => {
                listeners.push(l);
                states.push(Listening {
                    port: spec.port,
                    error: None,
                });
            }
            Err(e) => states.push(Listening {
                port: spec.port,
                error: Some(if e.kind() == ErrorKind::AddrInUse {
                    IN_USE.into()
                } else {
                    e.to_string()
                }),
            }),
        }
    }
    (listeners, states)
}

const IN_USE: &str = "in use by another process";

/// What a connect proves. A port in use on the far side has a listener already (Ray's
/// GCS on a running head), so a timeout or refusal there is still a blocked port; one we
/// could not listen on for another reason proves reachability only when it opens.
fn judge(outcome: PortOutcome, listen_error: Option<&String>) -> PortOutcome {
    match (outcome, listen_error) {
        (PortOutcome::Open, _) => PortOutcome::Open,
        (other, Some(why)) if why == IN_USE => other,
        (_, Some(why)) => PortOutcome::NotTested(why.clone()),
        (other, None) => other,
    }
}

/// A UDP socket that refuses to fragment (IP_PMTUDISC_DO), bound to `addr`.
fn df_socket(addr: IpAddr) -> std::io::Result<UdpSocket> {
    use std::os::fd::AsRawFd;
    let socket = UdpSocket::bind(SocketAddr::new(addr, 0))?;
    if addr.is_ipv4() {
        let value: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: a valid socket and an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(socket)
}

/// IP + UDP header bytes in front of a datagram's payload.
fn header_bytes(addr: IpAddr) -> u32 {
    if addr.is_ipv4() {
        28
    } else {
        48
    }
}

/// Sends each packet size three times (loss on a healthy link is rare, not impossible).
fn send_probes(socket: &UdpSocket, to: SocketAddr, sizes: &[u32]) {
    let header = header_bytes(to.ip());
    let mut payload = vec![0u8; 65536];
    for &size in sizes {
        let len = (size.saturating_sub(header) as usize).min(payload.len());
        payload[..4].copy_from_slice(&size.to_be_bytes());
        for _ in 0..3 {
            let _ = socket.send_to(&payload[..len.max(4)], to);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Collects which packet sizes arrive on a UDP socket, until finished.
struct Collector {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u32>>,
}

impl Collector {
    fn finish(self) -> Vec<u32> {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

fn collect_probes(socket: UdpSocket) -> Collector {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n >= 4 {
                    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if !seen.contains(&size) {
                        seen.push(size);
                    }
                }
            }
            if flag.load(Ordering::Acquire) {
                return seen;
            }
        }
    });
    Collector { stop, handle }
}

fn probe_sizes(sender: &NodeSummary) -> Vec<u32> {
    let mut sizes = vec![64];
    if let Some(mtu) = sender.mtu.filter(|&m| m > 64) {
        sizes.push(mtu);
    }
    sizes
}

/// Openings greeted at once; past it the oldest is cut (see `fabric::openings`).
const MAX_OPENINGS: usize = 256;

/// B: waits (up to the timeout) for a peer on `listener`, answers its probes, and
/// computes the pair checks. Each connection's opening runs on its own thread, bounded by
/// what is left of the timeout, so strangers that connect and stall (or fail the opening)
/// are logged and never hold up the real peer.
pub fn serve(
    listener: TcpListener,
    facts: &Facts,
    options: &PairOptions,
) -> Result<PairOutcome, PairError> {
    let deadline = Instant::now() + options.timeout;
    listener
        .set_nonblocking(true)
        .map_err(|e| FabricError::io("setting the listener non-blocking", e))?;
    let (opened, ready) = std::sync::mpsc::channel::<(Channel, SocketAddr)>();
    let openings = fabric::openings::Openings::new(MAX_OPENINGS);
    loop {
        if let Ok((channel, peer)) = ready.try_recv() {
            // The peer is in: strangers still greeting or queued are turned away now, not
            // when the pair checks end.
            openings.cut_all();
            drop(listener);
            return answer(channel, peer, facts, options);
        }
        if Instant::now() >= deadline {
            openings.cut_all();
            return Err(PairError::NoPeer(options.timeout));
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => {
                (options.log)(&format!("accepting a peer failed: {e}; retrying"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        // Our own handle keeps the registered descriptor open until the ticket is gone.
        let Ok(keep) = stream.try_clone() else {
            continue;
        };
        let (ticket, _) = openings.admit(&keep);
        let (opened, token, log) = (opened.clone(), options.token.clone(), options.log.clone());
        let _ = std::thread::Builder::new()
            .name("pair-opening".into())
            .spawn(move || {
                let mut channel = Channel::new(stream, peer.to_string());
                let outcome = opening(&mut channel, token.as_deref(), deadline);
                drop(ticket);
                drop(keep);
                match outcome {
                    Ok(()) => {
                        let _ = opened.send((channel, peer));
                    }
                    Err(e) => log(&format!("{peer}: {e}")),
                }
            });
    }
}

fn opening(
    channel: &mut Channel,
    token: Option<&[u8]>,
    deadline: Instant,
) -> Result<(), PairError> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .min(handshake::HANDSHAKE_TIMEOUT)
            .max(Duration::from_millis(1))
    };
    let hello = match channel.recv(left(), "waiting for the greeting from")? {
        Message::Hello(hello) => hello,
        other => return Err(FabricError::unexpected("Hello", &other).into()),
    };
    if let Err(e) = handshake::open_server_within(channel, &hello, TOOL, token, left()) {
        // The peer is still in the opening, reading its message set: an Error there reads
        // as the token sentence, not as "unknown message kind".
        let refusal = Message::Error(fabric::control::ErrorMsg {
            message: e.to_string(),
        });
        let _ = channel.send(&refusal, Duration::from_secs(1));
        return Err(e.into());
    }
    Ok(())
}

fn answer(
    mut channel: Channel,
    peer: SocketAddr,
    facts: &Facts,
    options: &PairOptions,
) -> Result<PairOutcome, PairError> {
    let t = options.timeout;
    let ours = NodeSummary::of(facts);
    let theirs = match recv(&mut channel, t, "waiting for the summary from")? {
        PairMessage::Intro(summary) => summary,
        other => return Err(unexpected("Intro", &other)),
    };
    let here = match own_address(&ours) {
        Ok(a) => a,
        Err(e) => {
            let _ = channel.send(&PairMessage::Error(e.to_string()), t);
            return Err(e);
        }
    };
    let a_name = resolve_with_timeout(theirs.hostname.clone(), DNS_TIMEOUT);
    let route = theirs.address().and_then(route_to);
    channel.send(
        &PairMessage::Welcome(Welcome {
            summary: ours.clone(),
            seen: peer.ip(),
            clock_ns: now_ns(),
            a_name,
            route,
        }),
        t,
    )?;
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut udp: Option<Collector> = None;
    loop {
        let message = recv(&mut channel, t, "waiting for the next probe from")?;
        match message {
            PairMessage::Listen(specs) => {
                let (open, states) = listen_all(here, &specs);
                listeners = open;
                channel.send(&PairMessage::Listening(states), t)?;
            }
            PairMessage::Tried => listeners.clear(),
            PairMessage::ConnectBack(specs) => {
                let to = theirs
                    .address()
                    .ok_or_else(|| PairError::Setup("the peer reported no address".into()))?;
                let ports: Vec<u16> = specs.iter().map(|s| s.port).collect();
                channel.send(&PairMessage::Connected(connect_all(to, &ports)), t)?;
            }
            PairMessage::UdpOpen => {
                let socket = UdpSocket::bind(SocketAddr::new(here, 0))
                    .map_err(|e| FabricError::io("binding a UDP probe socket", e))?;
                let port = socket
                    .local_addr()
                    .map_err(|e| FabricError::io("reading the UDP port", e))?
                    .port();
                udp = Some(collect_probes(socket));
                channel.send(&PairMessage::UdpPort(port), t)?;
            }
            PairMessage::UdpSent => {
                std::thread::sleep(UDP_SETTLE);
                let got = udp.take().map(Collector::finish).unwrap_or_default();
                channel.send(&PairMessage::UdpGot(got), t)?;
            }
            PairMessage::UdpSendBack { port, sizes } => {
                let to = theirs
                    .address()
                    .ok_or_else(|| PairError::Setup("the peer reported no address".into()))?;
                if let Ok(socket) = df_socket(here) {
                    send_probes(&socket, SocketAddr::new(to, port), &sizes);
                }
                channel.send(&PairMessage::UdpSentBack, t)?;
            }
            PairMessage::Perf => {
                let port = start_perf_server(here, options)?;
                channel.send(&PairMessage::PerfPort(port), t)?;
            }
            PairMessage::Report(measured) => {
                channel.send(&PairMessage::Done, t)?;
                let checks = pair_checks(&theirs, &ours, &measured);
                return Ok(PairOutcome {
                    a: theirs,
                    b: ours,
                    measured,
                    checks,
                });
            }
            other => return Err(unexpected("a probe", &other)),
        }
    }
}

/// linkbench's engine on an ephemeral port of `addr`, for the rest of this process.
fn start_perf_server(addr: IpAddr, options: &PairOptions) -> Result<u16, PairError> {
    let log = options.log.clone();
    let server = fabric::perf::Server::bind(
        SocketAddr::new(addr, 0),
        fabric::perf::ServerConfig {
            token: options.token.clone(),
            iface: None,
            once: false,
            max_connections: 8,
            log: Arc::new(move |line: &str| log(&format!("bandwidth engine: {line}"))),
            // RDMA tests pick the RoCE v2 GID on this address (the --iface one).
            rdma: fabric::perf::RdmaOptions {
                address: Some(addr),
                ..fabric::perf::RdmaOptions::default()
            },
        },
    )?;
    let port = server.local_addr()?.port();
    std::thread::Builder::new()
        .name("pair-perf".into())
        .spawn(move || {
            let _ = server.run();
        })
        .map_err(|e| FabricError::io("starting the bandwidth engine", e))?;
    Ok(port)
}

/// A: connects to B at `addr`, runs every probe, and computes the pair checks.
pub fn connect(
    addr: SocketAddr,
    facts: &Facts,
    options: &PairOptions,
) -> Result<PairOutcome, PairError> {
    let t = options.timeout;
    let stream = fabric::tcp::connect(
        addr,
        t.min(Duration::from_secs(10)),
        &fabric::tcp::SocketOptions {
            nodelay: true,
            ..Default::default()
        },
    )?;
    let mut channel = Channel::new(stream, addr.to_string());
    // --timeout bounds the whole opening, as every other wait.
    handshake::open_client_within(&mut channel, TOOL, options.token.as_deref(), t)?;
    let ours = NodeSummary::of(facts);
    let here = own_address(&ours)?;
    let t0 = now_ns();
    channel.send(&PairMessage::Intro(ours.clone()), t)?;
    let welcome = match recv(&mut channel, t, "waiting for the summary from")? {
        PairMessage::Welcome(w) => w,
        other => return Err(unexpected("Welcome", &other)),
    };
    let t1 = now_ns();
    let theirs = welcome.summary;
    let there = theirs.address().unwrap_or(addr.ip());
    let mut m = Measured {
        a_seen_by_b: Some(welcome.seen),
        route_b_to_a: welcome.route,
        route_a_to_b: route_to(there),
        a_name_on_b: Some(welcome.a_name),
        b_name_on_a: Some(resolve_with_timeout(theirs.hostname.clone(), DNS_TIMEOUT)),
        clock_offset_ms: Some((welcome.clock_ns as f64 - (t0 as f64 + t1 as f64) / 2.0) / 1e6),
        clock_rtt_ms: Some((t1.saturating_sub(t0)) as f64 / 1e6),
        ..Measured::default()
    };

    // TCP ports, A -> B: B listens, A connects.
    channel.send(&PairMessage::Listen(options.ports.clone()), t)?;
    let states = match recv(&mut channel, t, "waiting for the listening ports of")? {
        PairMessage::Listening(states) => states,
        other => return Err(unexpected("Listening", &other)),
    };
    let ports: Vec<u16> = options.ports.iter().map(|s| s.port).collect();
    let outcomes = connect_all(there, &ports);
    channel.send(&PairMessage::Tried, t)?;
    for ((spec, outcome), state) in options.ports.iter().zip(outcomes).zip(&states) {
        m.ports.push(PortResult {
            port: spec.port,
            purpose: spec.purpose.clone(),
            way: Way::AtoB,
            outcome: judge(outcome, state.error.as_ref()),
        });
    }

    // TCP ports, B -> A: A listens, B connects.
    let (listeners, states) = listen_all(here, &options.ports);
    channel.send(&PairMessage::ConnectBack(options.ports.clone()), t)?;
    let outcomes = match recv(&mut channel, t, "waiting for the connect results of")? {
        PairMessage::Connected(outcomes) => outcomes,
        other => return Err(unexpected("Connected", &other)),
    };
    drop(listeners);
    for ((spec, outcome), state) in options.ports.iter().zip(outcomes).zip(&states) {
        m.ports.push(PortResult {
            port: spec.port,
            purpose: spec.purpose.clone(),
            way: Way::BtoA,
            outcome: judge(outcome, state.error.as_ref()),
        });
    }

    // Don't-fragment UDP at each side's MTU, both ways.
    if here.is_ipv4() && there.is_ipv4() {
        channel.send(&PairMessage::UdpOpen, t)?;
        let port = match recv(&mut channel, t, "waiting for the UDP port of")? {
            PairMessage::UdpPort(p) => p,
            other => return Err(unexpected("UdpPort", &other)),
        };
        let a_sizes = probe_sizes(&ours);
        if let Ok(socket) = df_socket(here) {
            send_probes(&socket, SocketAddr::new(there, port), &a_sizes);
        }
        channel.send(&PairMessage::UdpSent, t)?;
        let got_b = match recv(&mut channel, t, "waiting for the UDP probes seen by")? {
            PairMessage::UdpGot(sizes) => sizes,
            other => return Err(unexpected("UdpGot", &other)),
        };
        let socket = UdpSocket::bind(SocketAddr::new(here, 0))
            .map_err(|e| FabricError::io("binding a UDP probe socket", e))?;
        let back_port = socket
            .local_addr()
            .map_err(|e| FabricError::io("reading the UDP port", e))?
            .port();
        let collector = collect_probes(socket);
        let b_sizes = probe_sizes(&theirs);
        channel.send(
            &PairMessage::UdpSendBack {
                port: back_port,
                sizes: b_sizes.clone(),
            },
            t,
        )?;
        match recv(&mut channel, t, "waiting for the UDP probes of")? {
            PairMessage::UdpSentBack => {}
            other => return Err(unexpected("UdpSentBack", &other)),
        }
        std::thread::sleep(UDP_SETTLE);
        let got_a = collector.finish();
        m.udp_ok = Some(got_b.contains(&64) && got_a.contains(&64));
        for (way, sizes, got) in [(Way::AtoB, &a_sizes, &got_b), (Way::BtoA, &b_sizes, &got_a)] {
            for &size in sizes.iter().filter(|&&s| s != 64) {
                m.df.push(DfProbe {
                    way,
                    packet_bytes: size,
                    delivered: got.contains(&size),
                });
            }
        }
    }

    // Bandwidth and latency with linkbench's engine.
    channel.send(&PairMessage::Perf, t)?;
    let port = match recv(&mut channel, t, "waiting for the bandwidth engine of")? {
        PairMessage::PerfPort(p) => p,
        other => return Err(unexpected("PerfPort", &other)),
    };
    let rdma = (!ours.rdma.is_empty() && !theirs.rdma.is_empty()).then_some(here);
    match measure_perf(SocketAddr::new(there, port), options, &mut m, rdma) {
        // A peer that stopped answering or died mid-test will not give a verdict either.
        Err(e @ (FabricError::Timeout { .. } | FabricError::PeerClosed { .. })) => {
            return Err(e.into())
        }
        Err(e) => m.perf_error = Some(e.to_string()),
        Ok(()) => {}
    }

    channel.send(&PairMessage::Report(m.clone()), t)?;
    match recv(&mut channel, t, "waiting for the verdict of")? {
        PairMessage::Done => {}
        other => return Err(unexpected("Done", &other)),
    }
    let checks = pair_checks(&ours, &theirs, &m);
    Ok(PairOutcome {
        a: ours,
        b: theirs,
        measured: m,
        checks,
    })
}

/// TCP bandwidth each way and latency; then, where both nodes have RDMA (`rdma`: this
/// node's address, to pick the RoCE GID on it), an RDMA WRITE from here to the peer.
fn measure_perf(
    peer: SocketAddr,
    options: &PairOptions,
    m: &mut Measured,
    rdma: Option<IpAddr>,
) -> Result<(), FabricError> {
    use fabric::perf::{BwSpec, Client, ClientConfig, LatSpec, Mode, Until};
    let mut client = Client::connect(ClientConfig {
        peer,
        connect_timeout: options.timeout.min(Duration::from_secs(10)),
        token: options.token.clone(),
        iface: None,
        // A peer that stalls mid-test fails it within --timeout, as every other wait.
        stall: options.timeout,
    })?;
    // One direction at a time: run together, each direction's data shares a shaped
    // egress with the other's ACKs and short tests read 30 % low.
    for (mode, slot) in [
        (Mode::Forward, &mut m.bw_a_to_b_gbps),
        (Mode::Reverse, &mut m.bw_b_to_a_gbps),
    ] {
        let report = client.bandwidth(
            &BwSpec {
                mode,
                streams: 1,
                size: 1 << 20,
                duration: options.bw_duration,
                omit: Duration::ZERO,
                window: None,
                congestion: None,
                zerocopy: false,
                no_delay: false,
                working_set: None,
                rails: Vec::new(),
            },
            &mut |_, _| {},
        )?;
        *slot = Some(report.throughput_gbps);
    }
    let lat = client.latency(
        &LatSpec {
            size: 64,
            until: Until::Iterations(1000),
            busy_poll: false,
        },
        &mut |_, _| {},
    )?;
    m.latency_p50_us = Some(lat.latency_us.p50);
    if let Some(address) = rdma {
        // As ib_write_bw would: 64 KiB messages, 128 in flight, one QP.
        let test = fabric::rdma::RdmaTest {
            kind: fabric::test_kind::TestKind::Bw,
            op: fabric::rdma::RdmaOp::Write,
            size: 64 << 10,
            qps: 1,
            tx_depth: 128,
            iterations: if options.bw_duration < Duration::from_secs(1) {
                1000
            } else {
                5000
            },
            validate: false,
            inline: 0,
            seed: 0,
        };
        let rdma_options = fabric::perf::RdmaOptions {
            device: None,
            gid_index: None,
            address: Some(address),
        };
        match client.rdma_bandwidth(&test, &rdma_options) {
            Ok(report) => m.rdma_write_gbps = Some(report.throughput_gbps),
            Err(e) => m.rdma_error = Some(e.to_string()),
        }
    }
    client.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_port_still_shows_a_firewall() {
        let busy = Some(IN_USE.to_string());
        assert_eq!(
            judge(PortOutcome::TimedOut, busy.as_ref()),
            PortOutcome::TimedOut
        );
        assert_eq!(judge(PortOutcome::Open, busy.as_ref()), PortOutcome::Open);
        let denied = Some("permission denied".to_string());
        assert!(matches!(
            judge(PortOutcome::TimedOut, denied.as_ref()),
            PortOutcome::NotTested(_)
        ));
    }
}
