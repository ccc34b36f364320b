//! `linkbench serve`: an accept loop that hands every connection to its own thread. A
//! control connection becomes a session; a data connection presents its session's cookie
//! and is routed there, so concurrent clients never mix streams. A bad client is
//! answered with an Error frame where possible, logged, and forgotten.

use super::stream::{self, ReceivePlan, SendPlan, StreamOutcome};
use super::wire::{
    Accept, Direction, ErrorMsg, PerfMessage, Results, StreamStats, TestKind, TestRequest,
};
use super::{validate, FINISH_GRACE, HANDSHAKE_TIMEOUT, TOOL};
use crate::channel::Channel;
use crate::control::{nonce, Wire};
use crate::cpu::{CpuMeter, CpuTime, Scope};
use crate::error::{FabricError, ProtocolError, Result};
use crate::handshake;
use crate::openings::{Openings, Ticket};
use crate::tcp::{self, SocketOptions};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a session may sit idle between tests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ServerConfig {
    /// `NODELINK_TOKEN`: when set, clients must prove they hold it.
    pub token: Option<Vec<u8>>,
    /// SO_BINDTODEVICE for the listener (accepted sockets inherit it).
    pub iface: Option<String>,
    /// Return after the first session (with its error, if it failed).
    pub once: bool,
    /// Connections served at once; more are refused (threads are not free).
    pub max_connections: usize,
    /// Where session events go (the binary prints them on stderr).
    pub log: measure::Log,
    /// The local RDMA device and GID for RDMA tests.
    pub rdma: super::RdmaOptions,
}

type Routes = Arc<Mutex<HashMap<String, SyncSender<(u32, TcpStream)>>>>;

pub struct Server {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    routes: Routes,
    /// Authenticated control sessions (the `max_connections` slots).
    active: Arc<AtomicUsize>,
    /// Connections still in their opening: a small budget of their own, so idle or
    /// unauthenticated sockets can never take the slots real clients need.
    opening: Arc<AtomicUsize>,
    openings: Openings,
}

/// Connections in their opening at once; past it, the oldest opening is cut to make room
/// (so idle sockets can never keep a real client out).
const OPENING_BUDGET: usize = 256;
/// How long a connection may take to send its first message and authenticate.
const OPENING_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> Result<Server> {
        let listener = tcp::listen(addr, config.iface.as_deref())?;
        Ok(Server {
            listener,
            config: Arc::new(config),
            routes: Arc::default(),
            active: Arc::default(),
            opening: Arc::default(),
            openings: Openings::new(OPENING_BUDGET),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| FabricError::io("reading the listening address", e))
    }

    /// Serves until killed, or with `once`, until the first session ends.
    pub fn run(self) -> Result<()> {
        let (done_tx, done_rx) = mpsc::channel::<Result<()>>();
        let once = self.config.once;
        let acceptor = std::thread::Builder::new()
            .name("accept".into())
            .spawn(move || self.accept_loop(done_tx))
            .map_err(|e| FabricError::io("starting the accept thread", e))?;
        if once {
            return done_rx
                .recv()
                .unwrap_or_else(|_| Err(FabricError::Config("the accept loop ended".into())));
        }
        match acceptor.join() {
            Ok(result) => result,
            Err(_) => Err(FabricError::Config("the accept loop panicked".into())),
        }
    }

    fn accept_loop(self, done: mpsc::Sender<Result<()>>) -> Result<()> {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: say so, back off, keep serving.
                    (self.config.log)(&format!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let config = Arc::clone(&self.config);
            let routes = Arc::clone(&self.routes);
            let slots = Slots {
                active: Arc::clone(&self.active),
                opening: Arc::clone(&self.opening),
                max: config.max_connections,
            };
            let done = done.clone();
            slots.opening.fetch_add(1, Ordering::SeqCst);
            let (ticket, _) = self.openings.admit(&stream);
            let opening = Arc::clone(&self.opening);
            let spawned = std::thread::Builder::new()
                .name(format!("conn {peer}"))
                .spawn(move || {
                    let outcome = handle_connection(stream, ticket, peer, &config, &routes, &slots);
                    match outcome {
                        Outcome::Data => {}
                        Outcome::Rejected(e) => (config.log)(&format!("{peer}: rejected: {e}")),
                        Outcome::Session(result) => {
                            match &result {
                                Ok(()) => (config.log)(&format!("{peer}: session ended")),
                                Err(e) => (config.log)(&format!("{peer}: error: {e}")),
                            }
                            let _ = done.send(result);
                        }
                    }
                });
            if let Err(e) = spawned {
                opening.fetch_sub(1, Ordering::SeqCst);
                (self.config.log)(&format!("{peer}: cannot start a thread: {e}"));
            }
        }
    }
}

fn refuse(channel: &mut Channel, message: &str) {
    let _ = channel.send(
        &PerfMessage::Error(ErrorMsg {
            message: message.to_string(),
        }),
        Duration::from_secs(1),
    );
}

/// What became of one accepted connection.
/// The two counters a connection moves between: opening, then (authenticated) active.
struct Slots {
    active: Arc<AtomicUsize>,
    opening: Arc<AtomicUsize>,
    max: usize,
}

/// Releases the opening slot (and its place among the openings) once, and the active
/// slot if one was taken. Declared after the connection's stream, so it is dropped first.
struct Held<'a> {
    slots: &'a Slots,
    opening: bool,
    ticket: Option<Ticket>,
    active: bool,
}

impl Held<'_> {
    fn leave_opening(&mut self) {
        self.ticket = None;
        if std::mem::take(&mut self.opening) {
            self.slots.opening.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.leave_opening();
        if self.active {
            self.slots.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Outcome {
    /// Handed to its session.
    Data,
    /// Never got past its first message (garbage, other version, unknown cookie).
    Rejected(FabricError),
    /// A control session ran (`--once` waits for the first of these).
    Session(Result<()>),
}

fn handle_connection(
    stream: TcpStream,
    ticket: Ticket,
    peer: SocketAddr,
    config: &ServerConfig,
    routes: &Routes,
    slots: &Slots,
) -> Outcome {
    let mut channel = Channel::new(stream, peer.to_string());
    let mut held = Held {
        slots,
        opening: true,
        ticket: Some(ticket),
        active: false,
    };
    let first = match channel.recv_as(OPENING_TIMEOUT, "waiting for the first message from") {
        Ok(message) => message,
        Err(e) => {
            refuse(&mut channel, &e.to_string());
            return Outcome::Rejected(e);
        }
    };
    match first {
        PerfMessage::Hello(hello) => {
            // Authenticate before taking a session slot; a failed opening is a
            // rejection, not a session (a `--once` server keeps waiting for a real one).
            if let Err(e) =
                handshake::open_server(&mut channel, &hello, TOOL, config.token.as_deref())
            {
                if !matches!(e, FabricError::PeerClosed { .. } | FabricError::Remote(_)) {
                    refuse(&mut channel, &e.to_string());
                }
                return Outcome::Rejected(e);
            }
            held.leave_opening();
            if slots.active.fetch_add(1, Ordering::SeqCst) >= slots.max {
                slots.active.fetch_sub(1, Ordering::SeqCst);
                refuse(
                    &mut channel,
                    "server busy: too many sessions, try again later",
                );
                return Outcome::Rejected(FabricError::Config(format!(
                    "refused, {} sessions open",
                    slots.max
                )));
            }
            held.active = true;
            let result = session(&mut channel, config, routes);
            if let Err(e) = &result {
                // Tell the client why, unless the client is the one that went away.
                if !matches!(e, FabricError::PeerClosed { .. } | FabricError::Remote(_)) {
                    refuse(&mut channel, &e.to_string());
                }
            }
            Outcome::Session(result)
        }
        PerfMessage::Join(join) => {
            let route = routes
                .lock()
                .ok()
                .and_then(|routes| routes.get(&join.cookie).cloned());
            let Some(route) = route else {
                let message =
                    "data connection for an unknown session (its test is over or never began)";
                refuse(&mut channel, message);
                return Outcome::Rejected(FabricError::Config(message.into()));
            };
            let index = join.index;
            // Handed to its test: no longer an opening that may be cut.
            held.leave_opening();
            if let Err(
                mpsc::TrySendError::Full((_, stream))
                | mpsc::TrySendError::Disconnected((_, stream)),
            ) = route.try_send((index, channel.into_stream()))
            {
                let mut channel = Channel::new(stream, peer.to_string());
                refuse(&mut channel, "too many data connections for this test");
            }
            Outcome::Data
        }
        other => {
            let error = FabricError::Protocol(ProtocolError::Unexpected {
                expected: "Hello or Join",
                got: other.name(),
            });
            refuse(&mut channel, &error.to_string());
            Outcome::Rejected(error)
        }
    }
}

/// An authenticated control session: requests until Bye or the client hangs up.
fn session(channel: &mut Channel, config: &ServerConfig, routes: &Routes) -> Result<()> {
    loop {
        let message = match channel.recv_as(IDLE_TIMEOUT, "waiting for the next request from") {
            Ok(message) => message,
            // A client that hangs up between tests is done, not broken.
            Err(FabricError::PeerClosed { detail, .. }) if detail.is_empty() => return Ok(()),
            Err(e) => return Err(e),
        };
        match message {
            PerfMessage::Bye => return Ok(()),
            PerfMessage::Request(request) => {
                validate(&request).map_err(FabricError::Config)?;
                (config.log)(&format!(
                    "{}: {} test, {} B messages, {} stream(s){}{}",
                    channel.peer(),
                    match request.kind {
                        TestKind::Bw => "bandwidth",
                        TestKind::Lat => "latency",
                    },
                    request.size,
                    request.streams,
                    if request.reverse { ", reverse" } else { "" },
                    if request.bidir { ", bidir" } else { "" },
                ));
                run_test(channel, &request, routes)?;
            }
            PerfMessage::RdmaRequest(request) => {
                (config.log)(&format!(
                    "{}: RDMA {} {} test, {} B messages, {} QP(s)",
                    channel.peer(),
                    request.test.op.name(),
                    match request.test.kind {
                        TestKind::Bw => "bandwidth",
                        TestKind::Lat => "latency",
                    },
                    request.test.size,
                    request.test.qps,
                ));
                super::rdma::serve_rdma(channel, request, &config.rdma)?;
            }
            PerfMessage::Error(e) => return Err(FabricError::Remote(e.message)),
            other => {
                return Err(ProtocolError::Unexpected {
                    expected: "Request, RdmaRequest or Bye",
                    got: other.name(),
                }
                .into())
            }
        }
    }
}

/// Removes the session's route however the test ends.
struct RouteGuard<'a> {
    routes: &'a Routes,
    cookie: String,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&self.cookie);
        }
    }
}

fn collect_streams(
    rx: &Receiver<(u32, TcpStream)>,
    count: u32,
    options: &SocketOptions,
) -> Result<Vec<TcpStream>> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut slots: Vec<Option<TcpStream>> = (0..count).map(|_| None).collect();
    let mut joined = 0;
    while joined < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((index, stream)) => {
                let slot = slots.get_mut(index as usize).ok_or_else(|| {
                    FabricError::Config(format!(
                        "data connection with stream index {index} out of range"
                    ))
                })?;
                if slot.is_some() {
                    return Err(FabricError::Config(format!(
                        "stream index {index} joined twice"
                    )));
                }
                tcp::apply(&stream, options)?;
                *slot = Some(stream);
                joined += 1;
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                return Err(FabricError::Timeout {
                    what: format!("waiting for data connections ({joined} of {count} arrived)"),
                    after: HANDSHAKE_TIMEOUT,
                })
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Bytes of send buffers committed by every test running on this server.
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// A test's share of [`COMMITTED`], returned when the test ends however it ends.
pub(crate) struct Commitment(u64);

impl Commitment {
    pub(crate) fn take(bytes: u64) -> Result<Commitment> {
        let before = COMMITTED.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > super::MAX_SERVER_BUFFERS {
            COMMITTED.fetch_sub(bytes, Ordering::SeqCst);
            return Err(FabricError::Config(format!(
                "server busy: running tests hold {} MiB of buffers, this one needs {} MiB more (limit {} MiB); try again later or use fewer streams",
                before >> 20,
                bytes >> 20,
                super::MAX_SERVER_BUFFERS >> 20
            )));
        }
        Ok(Commitment(bytes))
    }
}

impl Drop for Commitment {
    fn drop(&mut self) {
        COMMITTED.fetch_sub(self.0, Ordering::SeqCst);
    }
}

fn run_test(channel: &mut Channel, request: &TestRequest, routes: &Routes) -> Result<()> {
    let _commitment = Commitment::take(super::test_buffers(request))?;
    let control_cpu = CpuMeter::start(Scope::Thread);
    let connections = if request.bidir {
        request.streams * 2
    } else {
        request.streams
    };
    let cookie = nonce()?;
    let (tx, rx) = mpsc::sync_channel(connections as usize);
    routes
        .lock()
        .map_err(|_| FabricError::Config("session table poisoned".into()))?
        .insert(cookie.clone(), tx);
    let guard = RouteGuard {
        routes,
        cookie: cookie.clone(),
    };
    channel.send(&PerfMessage::Accept(Accept { cookie }), HANDSHAKE_TIMEOUT)?;
    let streams = collect_streams(&rx, connections, &data_stream_options(request))?;
    drop(guard);
    channel.send(&PerfMessage::Start, HANDSHAKE_TIMEOUT)?;
    let start = Instant::now();
    let peer = channel.peer().to_string();
    // The whole test: the omitted warm-up, then the measured time.
    let omit = Duration::from_millis(request.omit_ms);
    let duration = Duration::from_millis(request.duration_ms) + omit;

    let (stats, stream_cpu, echoed) = match request.kind {
        TestKind::Lat => {
            let mut streams = streams;
            let stream = streams
                .pop()
                .ok_or_else(|| FabricError::Config("no data connection".into()))?;
            let (count, _) = stream::echo(
                stream,
                request.size as usize,
                request.busy_poll,
                &format!("latency stream from {peer}"),
            )?;
            // The echo ran on this thread, so `control_cpu` already holds its CPU.
            (Vec::new(), CpuTime::default(), Some(count))
        }
        TestKind::Bw => {
            let plan = SendPlan {
                size: request.size as usize,
                duration,
                zerocopy: request.zerocopy,
                working_set: super::working_set_bytes(request.working_set),
            };
            let receive_plan = ReceivePlan {
                duration,
                omit,
                working_set: super::working_set_bytes(request.working_set),
            };
            let handles: Vec<_> = streams
                .into_iter()
                .enumerate()
                .map(|(i, stream)| {
                    let index = i as u32;
                    let direction = if request.bidir {
                        if index < request.streams {
                            Direction::ClientToServer
                        } else {
                            Direction::ServerToClient
                        }
                    } else if request.reverse {
                        Direction::ServerToClient
                    } else {
                        Direction::ClientToServer
                    };
                    let what = format!("stream {index} with {peer}");
                    std::thread::Builder::new()
                        .name(format!("stream {index}"))
                        .spawn(move || {
                            // Interval reports are the client's; nobody reads this one.
                            let meter = AtomicU64::new(0);
                            match direction {
                                Direction::ServerToClient => stream::send_for(
                                    stream, index, direction, plan, start, &meter, &what,
                                ),
                                Direction::ClientToServer => stream::receive(
                                    stream,
                                    index,
                                    direction,
                                    start,
                                    receive_plan,
                                    &meter,
                                    &what,
                                ),
                            }
                        })
                        .map_err(|e| FabricError::io("starting a stream thread", e))
                })
                .collect::<Result<_>>()?;
            let mut outcomes: Vec<StreamOutcome> = Vec::new();
            let mut first_error = None;
            for handle in handles {
                match handle.join() {
                    Ok(Ok(outcome)) => outcomes.push(outcome),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        first_error
                            .get_or_insert(FabricError::Config("a stream thread panicked".into()));
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            let cpu = outcomes
                .iter()
                .fold(CpuTime::default(), |acc, o| acc + o.cpu);
            let stats: Vec<StreamStats> = outcomes.into_iter().map(|o| o.stats).collect();
            (stats, cpu, None)
        }
    };
    let wall = start.elapsed();
    // The client says it is done; a client that died mid-test says nothing.
    let done = match channel.recv_ok_as(
        duration + FINISH_GRACE,
        "waiting for the client to finish the test:",
    )? {
        PerfMessage::Done(done) => done,
        other => {
            return Err(ProtocolError::Unexpected {
                expected: "Done",
                got: other.name(),
            }
            .into())
        }
    };
    if let Some(count) = echoed {
        if count != done.iterations {
            return Err(FabricError::Config(format!(
                "the client counted {} ping-pongs, this server echoed {count}",
                done.iterations
            )));
        }
    }
    let cpu = (stream_cpu + control_cpu.used()).usage(wall);
    channel.send(
        &PerfMessage::Results(Results {
            streams: stats,
            cpu,
        }),
        HANDSHAKE_TIMEOUT,
    )
}

/// The server's side of the data streams: the client's window and congestion control;
/// TCP_NODELAY for latency tests and when the client asked for it (`-N`).
fn data_stream_options(request: &TestRequest) -> SocketOptions {
    SocketOptions {
        window: request.window,
        congestion: request.congestion.clone(),
        iface: None,
        nodelay: request.kind == TestKind::Lat || request.no_delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_streams_take_nodelay_for_latency_and_when_asked() {
        let bw = TestRequest {
            kind: TestKind::Bw,
            size: 1 << 20,
            streams: 1,
            duration_ms: 1000,
            omit_ms: 0,
            iterations: 0,
            reverse: true,
            bidir: false,
            window: Some(1 << 20),
            congestion: None,
            zerocopy: false,
            busy_poll: false,
            no_delay: false,
            working_set: None,
        };
        let options = data_stream_options(&bw);
        assert!(!options.nodelay);
        assert_eq!(options.window, Some(1 << 20));
        assert!(
            data_stream_options(&TestRequest {
                no_delay: true,
                ..bw.clone()
            })
            .nodelay
        );
        assert!(
            data_stream_options(&TestRequest {
                kind: TestKind::Lat,
                ..bw
            })
            .nodelay
        );
        // A client from before -N sends no such field: its streams keep Nagle.
        let old = r#"{"kind":"bw","size":1,"streams":1,"duration_ms":1,"iterations":0,
            "reverse":false,"bidir":false,"window":null,"congestion":null,"zerocopy":false}"#;
        let request: TestRequest = serde_json::from_str(old).unwrap();
        assert!(!request.no_delay);
    }
}
