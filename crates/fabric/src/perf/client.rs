//! The client side of a linkbench session: handshake, one test at a time over the same
//! control connection (so a size sweep authenticates once), reports merged from both sides.

use super::report::{merge, BwContext, CpuReport, LatReport};
pub use super::report::{BwReport, Mode};
use super::stream::{self, ReceivePlan, SendPlan, StreamOutcome, Until};
use super::wire::{Direction, Done, Join, PerfMessage, Results, TestKind, TestRequest};
use super::{validate, HANDSHAKE_TIMEOUT, TOOL};
use crate::channel::Channel;
use crate::cpu::{CpuMeter, Scope};
use crate::error::{FabricError, Result};
use crate::handshake;
use crate::tcp::{self, SocketOptions};
use measure::LatencyRecorder;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The shortest wait for the server's figures after a test: they follow the Done within
/// a round trip, even when the streams were quiet for most of the stall limit.
const RESULTS_FLOOR: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub peer: SocketAddr,
    pub connect_timeout: Duration,
    /// `NODELINK_TOKEN`, when set.
    pub token: Option<Vec<u8>>,
    /// SO_BINDTODEVICE for every connection.
    pub iface: Option<String>,
    /// How long the peer may show no sign of life (no byte moved, no answer) during a
    /// test before the test fails; linkbench uses [`STALL_TIMEOUT`](super::STALL_TIMEOUT).
    pub stall: Duration,
}

/// A bandwidth test.
#[derive(Debug, Clone)]
pub struct BwSpec {
    pub mode: Mode,
    pub streams: u32,
    pub size: u64,
    /// Measured time, after the omitted warm-up.
    pub duration: Duration,
    /// Warm-up not counted (iperf3's -O); the test runs for omit + duration.
    pub omit: Duration,
    pub window: Option<u64>,
    pub congestion: Option<String>,
    pub zerocopy: bool,
    /// TCP_NODELAY on both sides' data streams (iperf3 -N).
    pub no_delay: bool,
    /// Bytes each stream's messages rotate through on both sides (None: one message).
    pub working_set: Option<u64>,
    /// Multi-rail: the server's address on each rail; data stream i goes to rail
    /// i % rails.len() (empty: every stream to the control peer).
    pub rails: Vec<SocketAddr>,
}

/// A ping-pong latency test.
#[derive(Debug, Clone)]
pub struct LatSpec {
    pub size: u64,
    pub until: Until,
    /// Both sides spin instead of sleeping while waiting (a busy core each).
    pub busy_poll: bool,
}

pub struct Client {
    channel: Channel,
    config: ClientConfig,
}

impl Client {
    /// Connects the control channel and authenticates.
    pub fn connect(config: ClientConfig) -> Result<Client> {
        let options = SocketOptions {
            iface: config.iface.clone(),
            nodelay: true,
            ..SocketOptions::default()
        };
        let stream = tcp::connect(config.peer, config.connect_timeout, &options)?;
        let mut channel = Channel::new(stream, config.peer.to_string());
        let wait = HANDSHAKE_TIMEOUT.min(config.stall);
        handshake::open_client_within(&mut channel, TOOL, config.token.as_deref(), wait)?;
        Ok(Client { channel, config })
    }

    /// The longest wait for one answer on the control connection.
    fn answer_wait(&self) -> Duration {
        HANDSHAKE_TIMEOUT.min(self.config.stall)
    }

    /// Sends the request, opens and registers the data connections, waits for Start.
    fn begin(
        &mut self,
        request: &TestRequest,
        options: &SocketOptions,
        rails: &[SocketAddr],
    ) -> Result<Vec<TcpStream>> {
        validate(request).map_err(FabricError::Config)?;
        self.channel
            .send(&PerfMessage::Request(request.clone()), self.answer_wait())?;
        let cookie = match self.channel.recv_ok_as(
            self.answer_wait(),
            "waiting for the server to accept the test:",
        )? {
            PerfMessage::Accept(accept) => accept.cookie,
            other => return Err(FabricError::unexpected("Accept", &other)),
        };
        let count = if request.bidir {
            request.streams * 2
        } else {
            request.streams
        };
        let mut streams = Vec::with_capacity(count as usize);
        for index in 0..count {
            let peer = rails
                .get(index as usize % rails.len().max(1))
                .copied()
                .unwrap_or(self.config.peer);
            let stream = tcp::connect(peer, self.config.connect_timeout, options)?;
            let mut data = Channel::new(stream, peer.to_string());
            data.send(
                &PerfMessage::Join(Join {
                    cookie: cookie.clone(),
                    index,
                }),
                self.answer_wait(),
            )?;
            streams.push(data.into_stream());
        }
        match self.channel.recv_ok_as(
            self.answer_wait(),
            "waiting for the server to start the test:",
        )? {
            PerfMessage::Start => Ok(streams),
            other => Err(FabricError::unexpected("Start", &other)),
        }
    }

    /// Tells the server this side is done and collects its figures. The wait ends the
    /// stall limit after the peer's last sign of life (`alive_at`), so a peer that stalled
    /// mid-test costs one stall limit in all, not one per phase.
    fn finish(&mut self, iterations: u64, alive_at: Instant) -> Result<Results> {
        self.channel
            .send(&PerfMessage::Done(Done { iterations }), self.answer_wait())?;
        let wait = (alive_at + self.config.stall)
            .saturating_duration_since(Instant::now())
            .max(RESULTS_FLOOR);
        match self
            .channel
            .recv_ok_as(wait, "waiting for the results from")?
        {
            PerfMessage::Results(results) => Ok(results),
            other => Err(FabricError::unexpected("Results", &other)),
        }
    }

    /// Runs one bandwidth test; `progress` is called about every 100 ms with the elapsed
    /// time and the bytes this side has sent or received so far (all streams).
    pub fn bandwidth(
        &mut self,
        spec: &BwSpec,
        progress: &mut dyn FnMut(Duration, u64),
    ) -> Result<BwReport> {
        let request = TestRequest {
            kind: TestKind::Bw,
            size: spec.size,
            streams: spec.streams,
            duration_ms: spec.duration.as_millis() as u64,
            omit_ms: spec.omit.as_millis() as u64,
            iterations: 0,
            reverse: spec.mode == Mode::Reverse,
            bidir: spec.mode == Mode::Bidir,
            window: spec.window,
            congestion: spec.congestion.clone(),
            zerocopy: spec.zerocopy,
            busy_poll: false,
            no_delay: spec.no_delay,
            working_set: spec.working_set,
        };
        let options = SocketOptions {
            window: spec.window,
            congestion: spec.congestion.clone(),
            iface: self.config.iface.clone(),
            nodelay: spec.no_delay,
        };
        let streams = self.begin(&request, &options, &spec.rails)?;
        let cpu = CpuMeter::start(Scope::Process);
        let start = Instant::now();
        let plan = SendPlan {
            size: spec.size as usize,
            duration: spec.omit + spec.duration,
            zerocopy: spec.zerocopy,
            working_set: super::working_set_bytes(spec.working_set),
        };
        let receive_plan = ReceivePlan {
            duration: spec.omit + spec.duration,
            omit: spec.omit,
            working_set: super::working_set_bytes(spec.working_set),
        };
        let meter = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<Result<StreamOutcome>>();
        let total = streams.len();
        for (i, stream) in streams.into_iter().enumerate() {
            let index = i as u32;
            let direction = match spec.mode {
                Mode::Forward => Direction::ClientToServer,
                Mode::Reverse => Direction::ServerToClient,
                Mode::Bidir if index < spec.streams => Direction::ClientToServer,
                Mode::Bidir => Direction::ServerToClient,
            };
            let what = format!("stream {index} with {}", self.config.peer);
            let tx = tx.clone();
            let meter = meter.clone();
            std::thread::Builder::new()
                .name(format!("stream {index}"))
                .spawn(move || {
                    let outcome = match direction {
                        Direction::ClientToServer => {
                            stream::send_for(stream, index, direction, plan, start, &meter, &what)
                        }
                        Direction::ServerToClient => stream::receive(
                            stream,
                            index,
                            direction,
                            start,
                            receive_plan,
                            &meter,
                            &what,
                        ),
                    };
                    let _ = tx.send(outcome);
                })
                .map_err(|e| FabricError::io("starting a stream thread", e))?;
        }
        drop(tx);
        let mut outcomes = Vec::with_capacity(total);
        // The peer's last sign of life: a byte moved on any stream, as seen every 100 ms.
        // (Not at the streams' end: a write blocked on a stalled peer returns its partial
        // count only when it is cut, which is no sign of life.)
        let (mut alive_at, mut moved) = (Instant::now(), 0);
        while outcomes.len() < total {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(outcome) => outcomes.push(outcome?),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now_moved = meter.load(Ordering::Relaxed);
                    if now_moved != moved {
                        (alive_at, moved) = (Instant::now(), now_moved);
                    } else if alive_at.elapsed() > self.config.stall {
                        return Err(FabricError::Timeout {
                            what: format!(
                                "bandwidth test with {}: no byte moved on any stream",
                                self.config.peer
                            ),
                            after: self.config.stall,
                        });
                    }
                    progress(start.elapsed(), now_moved);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(FabricError::Config(
                        "a stream thread ended without a result".into(),
                    ))
                }
            }
        }
        // The last word on progress: the streams' end, so the last interval is reported.
        progress(start.elapsed(), meter.load(Ordering::Relaxed));
        let local_cpu = cpu.used().usage(cpu.wall());
        let results = self.finish(0, alive_at)?;
        let local: Vec<_> = outcomes.into_iter().map(|o| o.stats).collect();
        Ok(merge(
            BwContext {
                mode: spec.mode,
                streams: spec.streams,
                msg_size: spec.size,
                window: spec.window,
                congestion: spec.congestion.clone(),
                zerocopy: spec.zerocopy,
                no_delay: spec.no_delay,
                working_set: spec.working_set,
                cpu: CpuReport {
                    local: local_cpu,
                    remote: results.cpu,
                },
            },
            &local,
            &results.streams,
        ))
    }

    /// Runs one ping-pong test; `progress` gets (round trips, elapsed) now and then.
    pub fn latency(
        &mut self,
        spec: &LatSpec,
        progress: &mut dyn FnMut(u64, Duration),
    ) -> Result<LatReport> {
        let (iterations, duration_ms) = match spec.until {
            Until::Iterations(n) => (n, 0),
            Until::Elapsed(d) => (0, d.as_millis().max(1) as u64),
        };
        let request = TestRequest {
            kind: TestKind::Lat,
            size: spec.size,
            streams: 1,
            duration_ms,
            omit_ms: 0,
            iterations,
            reverse: false,
            bidir: false,
            window: None,
            congestion: None,
            zerocopy: false,
            busy_poll: spec.busy_poll,
            no_delay: true,
            working_set: None,
        };
        let options = SocketOptions {
            iface: self.config.iface.clone(),
            nodelay: true,
            ..SocketOptions::default()
        };
        let streams = self.begin(&request, &options, &[])?;
        let stream = streams
            .into_iter()
            .next()
            .ok_or_else(|| FabricError::Config("no data connection".into()))?;
        let cpu = CpuMeter::start(Scope::Process);
        let mut recorder = LatencyRecorder::new();
        let what = format!("latency stream with {}", self.config.peer);
        let done = stream::ping(
            &stream,
            stream::PingPlan {
                size: spec.size as usize,
                until: spec.until,
                busy_poll: spec.busy_poll,
                stall: self.config.stall,
            },
            &mut recorder,
            progress,
            &what,
        )?;
        let wall = cpu.wall();
        let local_cpu = cpu.used().usage(wall);
        let results = self.finish(done, Instant::now())?;
        Ok(LatReport {
            transport: "tcp",
            msg_size: spec.size,
            iterations: done,
            seconds: wall.as_secs_f64(),
            one_way: "round trip / 2",
            latency_us: recorder.summary_scaled(0.5),
            busy_poll: spec.busy_poll,
            cpu: CpuReport {
                local: local_cpu,
                remote: results.cpu,
            },
        })
    }

    /// The control channel, for the RDMA tests in `rdma.rs`.
    /// The caller's stall limit: no wait of this client sees no progress for longer.
    pub(super) fn stall(&self) -> Duration {
        self.config.stall
    }

    pub(super) fn channel(&mut self) -> &mut Channel {
        &mut self.channel
    }

    /// Ends the session politely; errors do not matter any more.
    pub fn close(mut self) {
        let _ = self.channel.send(&PerfMessage::Bye, Duration::from_secs(1));
    }
}
