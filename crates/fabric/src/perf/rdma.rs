//! RDMA tests on the linkbench control channel: the client half
//! ([`Client::rdma_bandwidth`], [`Client::rdma_latency`]) and the server half
//! ([`serve_rdma`]), both driving [`crate::rdma::Endpoint`] the way perftest does:
//! bandwidth = back-to-back work requests with `tx_depth` in flight per QP, timed from the
//! first post to the last completion (an RC completion means the peer acknowledged the
//! data); latency = ping-pong, one-way = round trip / 2 (READ: the whole read).

use super::client::Client;
use super::report::CpuReport;
use super::wire::{CpuUsage, Done, PerfMessage, TestKind};
use super::{FINISH_GRACE, HANDSHAKE_TIMEOUT};
use crate::channel::Channel;
use crate::cpu::{CpuMeter, Scope};
use crate::error::{FabricError, ProtocolError, Result};
use crate::rdma::handshake::{check_endpoint, Layout, RdmaAccept, RdmaRequest, RdmaResults};
use crate::rdma::mr::{fill, pattern, wrong_bytes};
use crate::rdma::{
    device, Device, Endpoint, EndpointConfig, PortInfo, RdmaEndpoint, RdmaOp, RdmaTest, SendWr,
    Watchdog, WrOp,
};
use measure::{LatencyRecorder, LatencySummary};
use serde::Serialize;
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// No completion and no progress for this long: the peer or the path is gone.
pub const RDMA_STALL: Duration = Duration::from_secs(20);
/// Signal one send in this many (perftest's cq_mod), fewer if tx depth is smaller.
const CQ_MOD: u64 = 100;
const QP_SHIFT: u32 = 40;
const LOW_MASK: u64 = (1 << QP_SHIFT) - 1;

/// Which local device, port and GID to use.
#[derive(Debug, Clone, Default)]
pub struct RdmaOptions {
    pub device: Option<String>,
    pub gid_index: Option<u32>,
    /// The `--iface` address: pick the RoCE v2 GID that carries it.
    pub address: Option<IpAddr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RdmaBwReport {
    pub transport: &'static str,
    pub op: RdmaOp,
    pub device: String,
    /// The local port: number, state, link layer, active MTU, rate.
    pub port: PortInfo,
    pub gid_index: u32,
    pub path_mtu: u32,
    pub qps: u32,
    pub tx_depth: u32,
    pub msg_size: u64,
    /// Messages per QP.
    pub iterations: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Average over the whole test, decimal Gbit/s.
    pub throughput_gbps: f64,
    /// Best 1 ms or longer window between completions.
    pub peak_gbps: f64,
    pub msg_rate_mpps: f64,
    pub validated: bool,
    pub checked_bytes: u64,
    pub wrong_bytes: u64,
    pub cpu: CpuReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct RdmaLatReport {
    pub transport: &'static str,
    pub op: RdmaOp,
    pub device: String,
    pub port: PortInfo,
    pub gid_index: u32,
    pub path_mtu: u32,
    pub msg_size: u64,
    pub iterations: u64,
    pub one_way: &'static str,
    pub latency_us: LatencySummary,
    pub cpu: CpuReport,
}

fn config(
    test: &RdmaTest,
    layout: &Layout,
    server: bool,
    options: &RdmaOptions,
) -> Result<EndpointConfig> {
    let gid =
        device::gid_choice(options.gid_index, options.address).map_err(FabricError::Config)?;
    let rx_depth = match (test.kind, test.op) {
        (TestKind::Bw, RdmaOp::Send) if server => layout.slots as u32,
        (TestKind::Lat, RdmaOp::Send) => 2,
        _ => 1,
    };
    Ok(EndpointConfig {
        qps: test.qps,
        tx_depth: test.tx_depth,
        rx_depth,
        inline: test.inline,
        region: layout.region,
        gid,
    })
}

/// Best throughput over windows of at least 1 ms and 8 full pipelines of bytes, no
/// allocation. One signalled completion stands for up to 100 messages that were in flight
/// long before it, so a shorter window would credit a burst of completions as a burst of
/// bandwidth; with 8 pipelines per window that error stays under an eighth.
struct Peak {
    window_start: Instant,
    window_bytes: u64,
    min_bytes: u64,
    best_gbps: f64,
}

impl Peak {
    fn new(start: Instant, min_bytes: u64) -> Peak {
        Peak {
            window_start: start,
            window_bytes: 0,
            min_bytes,
            best_gbps: 0.0,
        }
    }

    fn add(&mut self, bytes: u64, now: Instant) {
        self.window_bytes += bytes;
        let span = now.duration_since(self.window_start);
        if span >= Duration::from_millis(1) && self.window_bytes >= self.min_bytes {
            self.best_gbps = self
                .best_gbps
                .max(self.window_bytes as f64 * 8.0 / span.as_secs_f64() / 1e9);
            self.window_start = now;
            self.window_bytes = 0;
        }
    }
}

/// Posts `test.iterations` messages per QP, `tx_depth` in flight, until all completed.
/// Returns (first post, last completion, peak Gbit/s).
fn blast(
    ep: &mut Endpoint,
    test: &RdmaTest,
    layout: &Layout,
    peer: &RdmaEndpoint,
    stall: Duration,
) -> Result<(Instant, Instant, f64)> {
    let qps = test.qps as usize;
    let cq_mod = CQ_MOD.min(test.tx_depth as u64).max(1);
    let mut posted = vec![0u64; qps];
    let mut completed = vec![0u64; qps];
    let mut signaled_upto = vec![0u64; qps];
    let mut finished = 0usize;
    let mut watchdog = Watchdog::new(stall);
    let start = Instant::now();
    let pipeline = test.tx_depth as u64 * test.qps as u64 * test.size;
    let mut peak = Peak::new(start, 8 * pipeline);
    let mut last = start;
    let size = test.size;
    while finished < qps {
        for q in 0..qps {
            while posted[q] < test.iterations && posted[q] - completed[q] < test.tx_depth as u64 {
                let n = posted[q];
                let is_last = n + 1 == test.iterations;
                let signaled = n + 1 - signaled_upto[q] == cq_mod || is_last;
                let covered = if signaled {
                    let c = n + 1 - signaled_upto[q];
                    signaled_upto[q] = n + 1;
                    c
                } else {
                    0
                };
                let offset = test.slot_offset(layout, q as u32, n);
                let op = match test.op {
                    // The last write carries an immediate so the server knows its data landed.
                    RdmaOp::Write if is_last => WrOp::WriteImm(q as u32),
                    RdmaOp::Write => WrOp::Write,
                    RdmaOp::Read => WrOp::Read,
                    RdmaOp::Send => WrOp::Send,
                };
                let remote_addr = peer
                    .region
                    .at(offset, size)
                    .map_err(|e| FabricError::Rdma(e.to_string()))?;
                ep.post_send(
                    q,
                    &SendWr {
                        wr_id: ((q as u64) << QP_SHIFT) | covered,
                        op,
                        local_offset: offset,
                        len: size as u32,
                        remote_addr,
                        rkey: peer.region.rkey,
                        signaled,
                    },
                )?;
                posted[q] += 1;
            }
        }
        let mut progressed = 0u64;
        ep.poll(|c| {
            let q = (c.wr_id >> QP_SHIFT) as usize;
            let covered = c.wr_id & LOW_MASK;
            if let Some(done) = completed.get_mut(q) {
                *done += covered;
                if *done == test.iterations {
                    finished += 1;
                }
            }
            progressed += covered;
        })?;
        if progressed > 0 {
            let now = Instant::now();
            last = now;
            peak.add(progressed * size, now);
            watchdog.progress();
        } else {
            watchdog.check(&|| {
                format!(
                    "{} completions from {} (completed {:?} of {} per QP)",
                    test.op.name(),
                    peer.device,
                    completed,
                    test.iterations
                )
            })?;
        }
    }
    Ok((start, last, peak.best_gbps))
}

impl Client {
    /// Sends the request with our half, receives and checks the server's, connects.
    fn rdma_begin(
        &mut self,
        test: &RdmaTest,
        options: &RdmaOptions,
    ) -> Result<(Endpoint, RdmaEndpoint)> {
        test.validate().map_err(FabricError::Config)?;
        let layout = test.layout();
        let device = Device::open(options.device.as_deref())?;
        let mut ep = Endpoint::new(device, &config(test, &layout, false, options)?)?;
        match test.op {
            RdmaOp::Read => {
                // Unread bytes must count as wrong: start from the complement.
                fill(ep.buffer_mut().as_mut_slice(), test.seed, 0);
                for b in ep.buffer_mut().as_mut_slice() {
                    *b = !*b;
                }
            }
            _ => fill(ep.buffer_mut().as_mut_slice(), test.seed, 0),
        }
        if test.kind == TestKind::Lat {
            ep.buffer_mut().as_mut_slice().fill(0);
        }
        let wait = HANDSHAKE_TIMEOUT.min(self.stall());
        let channel = self.channel();
        channel.send(
            &PerfMessage::RdmaRequest(RdmaRequest {
                test: test.clone(),
                endpoint: ep.local(),
            }),
            wait,
        )?;
        let peer = match channel.recv_ok_as(wait, "waiting for the server's RDMA endpoint:")? {
            PerfMessage::RdmaAccept(RdmaAccept { endpoint }) => endpoint,
            other => return Err(FabricError::unexpected("RdmaAccept", &other)),
        };
        check_endpoint(test, &peer).map_err(|reason| {
            FabricError::from(ProtocolError::BadPayload {
                kind: "RdmaAccept",
                reason,
            })
        })?;
        ep.connect(&peer)?;
        Ok((ep, peer))
    }

    fn rdma_finish(&mut self, iterations: u64) -> Result<RdmaResults> {
        // The caller's stall bounds every wait, so `--timeout 2s` is never 15 s.
        let (answer, results) = (
            HANDSHAKE_TIMEOUT.min(self.stall()),
            FINISH_GRACE.min(self.stall()),
        );
        let channel = self.channel();
        channel.send(&PerfMessage::Done(Done { iterations }), answer)?;
        match channel.recv_ok_as(results, "waiting for the RDMA results from")? {
            PerfMessage::RdmaResults(results) => Ok(results),
            other => Err(FabricError::unexpected("RdmaResults", &other)),
        }
    }

    /// One RDMA bandwidth test (write, read or send).
    pub fn rdma_bandwidth(
        &mut self,
        test: &RdmaTest,
        options: &RdmaOptions,
    ) -> Result<RdmaBwReport> {
        let (mut ep, peer) = self.rdma_begin(test, options)?;
        let layout = test.layout();
        let cpu = CpuMeter::start(Scope::Process);
        let (start, end, peak) = blast(&mut ep, test, &layout, &peer, self.stall())?;
        let local_cpu = cpu.used().usage(cpu.wall());
        let results = self.rdma_finish(test.iterations)?;
        let (mut checked, mut wrong) = (results.checked_bytes, results.wrong_bytes);
        if test.validate && test.op == RdmaOp::Read {
            // READ lands here: check the slots that were read.
            let written = layout.slots.min(test.iterations);
            for q in 0..test.qps {
                let base = test.slot_offset(&layout, q, 0);
                let len = written * test.size;
                let slice = &ep.buffer().as_slice()[base as usize..(base + len) as usize];
                checked += len;
                wrong += wrong_bytes(slice, test.seed, base);
            }
        }
        let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
        let messages = test.iterations * test.qps as u64;
        let bytes = messages * test.size;
        let average = bytes as f64 * 8.0 / seconds / 1e9;
        Ok(RdmaBwReport {
            transport: "rdma",
            op: test.op,
            device: ep.device.name.clone(),
            port: ep.device.port.clone(),
            gid_index: ep.gid.index,
            path_mtu: ep.path_mtu(),
            qps: test.qps,
            tx_depth: test.tx_depth,
            msg_size: test.size,
            iterations: test.iterations,
            bytes,
            seconds,
            throughput_gbps: average,
            // A test shorter than one window has no peak apart from its average.
            peak_gbps: peak.max(average),
            msg_rate_mpps: messages as f64 / seconds / 1e6,
            validated: test.validate,
            checked_bytes: checked,
            wrong_bytes: wrong,
            cpu: CpuReport {
                local: local_cpu,
                remote: results.cpu,
            },
        })
    }

    /// One RDMA latency test: WRITE or SEND ping-pong, or READ round trips.
    pub fn rdma_latency(
        &mut self,
        test: &RdmaTest,
        options: &RdmaOptions,
    ) -> Result<RdmaLatReport> {
        let (mut ep, peer) = self.rdma_begin(test, options)?;
        let cpu = CpuMeter::start(Scope::Process);
        let mut recorder = LatencyRecorder::new();
        let own = Watch {
            stall: self.stall(),
            control: None,
        };
        let (one_way, scale) = match test.op {
            RdmaOp::Write => {
                ping_write(&mut ep, test, &peer, &mut recorder, true, own)?;
                ("round trip / 2", 0.5)
            }
            RdmaOp::Send => {
                ping_send(&mut ep, test, &mut recorder, true, own)?;
                ("round trip / 2", 0.5)
            }
            RdmaOp::Read => {
                read_rounds(&mut ep, test, &peer, &mut recorder, self.stall())?;
                ("whole READ (request and response)", 1.0)
            }
        };
        let local_cpu = cpu.used().usage(cpu.wall());
        let results = self.rdma_finish(test.iterations)?;
        Ok(RdmaLatReport {
            transport: "rdma",
            op: test.op,
            device: ep.device.name.clone(),
            port: ep.device.port.clone(),
            gid_index: ep.gid.index,
            path_mtu: ep.path_mtu(),
            msg_size: test.size,
            iterations: test.iterations,
            one_way,
            latency_us: recorder.summary_scaled(scale),
            cpu: CpuReport {
                local: local_cpu,
                remote: results.cpu,
            },
        })
    }
}

/// How long a wait may see no progress, and the peer's control connection to watch
/// meanwhile (the server's side): the client's stall is its caller's (`--timeout`).
#[derive(Clone, Copy)]
struct Watch<'a> {
    stall: Duration,
    control: Option<&'a TcpStream>,
}

impl<'a> Watch<'a> {
    fn dog(self) -> Watchdog<'a> {
        Watchdog::new(self.stall).watching(self.control)
    }
}

/// The byte a ping-pong round writes last; never 0 (the initial value), never repeats twice in a row.
fn tag(round: u64) -> u8 {
    (round % 255 + 1) as u8
}

/// WRITE ping-pong like ib_write_lat: each side writes into the other's receive slot and
/// spins on the last byte of its own. The client starts (`initiator`), the server echoes.
fn ping_write(
    ep: &mut Endpoint,
    test: &RdmaTest,
    peer: &RdmaEndpoint,
    recorder: &mut LatencyRecorder,
    initiator: bool,
    watch: Watch<'_>,
) -> Result<()> {
    let size = test.size;
    let last = (size - 1) as usize;
    let send_offset = size;
    let remote = peer
        .region
        .at(0, size)
        .map_err(|e| FabricError::Rdma(e.to_string()))?;
    let mut outstanding = 0u64;
    // One clock read per round, like perftest: a round is the time between two posts.
    let mut round_start = Instant::now();
    for round in 1..=test.iterations {
        let tag = tag(round);
        if !initiator {
            wait_byte(ep, last, tag, &mut outstanding, round, watch)?;
        }
        ep.buffer_mut().write_byte(send_offset as usize + last, tag);
        // Reap before the send queue could fill (ib_write_lat waits here too).
        let mut watchdog = Watchdog::new(watch.stall);
        while outstanding >= test.tx_depth as u64 {
            outstanding -= ep.poll(|_| {})? as u64;
            watchdog.check(&|| format!("the completion of RDMA WRITE round {round}"))?;
        }
        ep.post_send(
            0,
            &SendWr {
                wr_id: round,
                op: WrOp::Write,
                local_offset: send_offset,
                len: size as u32,
                remote_addr: remote,
                rkey: peer.region.rkey,
                signaled: true,
            },
        )?;
        outstanding += 1;
        if initiator {
            wait_byte(ep, last, tag, &mut outstanding, round, watch)?;
            let now = Instant::now();
            recorder.record(now.duration_since(round_start));
            round_start = now;
        }
    }
    Ok(())
}

fn wait_byte(
    ep: &mut Endpoint,
    offset: usize,
    tag: u8,
    outstanding: &mut u64,
    round: u64,
    watch: Watch<'_>,
) -> Result<()> {
    let mut watchdog = watch.dog();
    let mut spins = 0u32;
    loop {
        if ep.buffer().read_volatile(offset) == Some(tag) {
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            return Ok(());
        }
        // Spin on memory only, as ib_write_lat does (a CQ poll per spin delays noticing
        // the byte); every 256 spins reap sends, which also surfaces a failed WRITE.
        spins = spins.wrapping_add(1);
        if spins & 255 == 0 {
            *outstanding -= ep.poll(|_| {})? as u64;
            watchdog.check(&|| format!("the peer's RDMA WRITE of round {round}"))?;
        }
    }
}

/// SEND ping-pong like ib_send_lat: one receive posted ahead, repost before replying.
fn ping_send(
    ep: &mut Endpoint,
    test: &RdmaTest,
    recorder: &mut LatencyRecorder,
    initiator: bool,
    watch: Watch<'_>,
) -> Result<()> {
    let size = test.size;
    ep.post_recv(0, 0, 0, size as u32)?;
    ep.post_recv(0, 0, 0, size as u32)?;
    let mut round_start = Instant::now();
    for round in 1..=test.iterations {
        if !initiator {
            wait_recv(ep, round, watch)?;
            ep.post_recv(0, 0, 0, size as u32)?;
        }
        ep.post_send(
            0,
            &SendWr {
                wr_id: round,
                op: WrOp::Send,
                local_offset: size,
                len: size as u32,
                remote_addr: 0,
                rkey: 0,
                signaled: true,
            },
        )?;
        if initiator {
            wait_recv(ep, round, watch)?;
            ep.post_recv(0, 0, 0, size as u32)?;
            let now = Instant::now();
            recorder.record(now.duration_since(round_start));
            round_start = now;
        }
    }
    Ok(())
}

fn wait_recv(ep: &mut Endpoint, round: u64, watch: Watch<'_>) -> Result<()> {
    let mut watchdog = watch.dog();
    loop {
        let mut got = false;
        ep.poll(|c| got |= c.is_recv())?;
        if got {
            return Ok(());
        }
        watchdog.check(&|| format!("the peer's SEND of round {round}"))?;
    }
}

/// READ round trips like ib_read_lat: one READ at a time, timed to its completion.
fn read_rounds(
    ep: &mut Endpoint,
    test: &RdmaTest,
    peer: &RdmaEndpoint,
    recorder: &mut LatencyRecorder,
    stall: Duration,
) -> Result<()> {
    let remote = peer
        .region
        .at(0, test.size)
        .map_err(|e| FabricError::Rdma(e.to_string()))?;
    for round in 1..=test.iterations {
        let started = Instant::now();
        ep.post_send(
            0,
            &SendWr {
                wr_id: round,
                op: WrOp::Read,
                local_offset: 0,
                len: test.size as u32,
                remote_addr: remote,
                rkey: peer.region.rkey,
                signaled: true,
            },
        )?;
        let mut watchdog = Watchdog::new(stall);
        loop {
            if ep.poll(|_| {})? > 0 {
                break;
            }
            watchdog.check(&|| format!("the RDMA READ of round {round}"))?;
        }
        recorder.record(started.elapsed());
    }
    Ok(())
}

/// The client's Done, checked against the requested iterations.
fn wait_done(channel: &mut Channel, test: &RdmaTest) -> Result<()> {
    // A bandwidth test has no time bound of its own; allow the slowest plausible link
    // (Soft-RoCE under emulation moves ~0.3 Gbit/s) plus the usual grace.
    let bytes = test.size * test.iterations * test.qps as u64;
    let budget = Duration::from_secs(bytes / 10_000_000) + RDMA_STALL + FINISH_GRACE;
    let done =
        match channel.recv_ok_as(budget, "waiting for the client to finish the RDMA test:")? {
            PerfMessage::Done(done) => done,
            other => return Err(FabricError::unexpected("Done", &other)),
        };
    if done.iterations != test.iterations {
        return Err(FabricError::Config(format!(
            "the client ran {} iterations of the {} requested",
            done.iterations, test.iterations
        )));
    }
    Ok(())
}

/// The server's side of one RDMA test: build our half, answer with it, play our part,
/// then report checked bytes after the client's Done.
pub fn serve_rdma(
    channel: &mut Channel,
    request: RdmaRequest,
    options: &RdmaOptions,
) -> Result<()> {
    let RdmaRequest {
        test,
        endpoint: peer,
    } = request;
    test.validate().map_err(FabricError::Config)?;
    check_endpoint(&test, &peer).map_err(|reason| {
        FabricError::from(ProtocolError::BadPayload {
            kind: "RdmaRequest",
            reason,
        })
    })?;
    let control_cpu = CpuMeter::start(Scope::Thread);
    let layout = test.layout();
    let device = Device::open(options.device.as_deref())?;
    let mut ep = Endpoint::new(device, &config(&test, &layout, true, options)?)?;
    match (test.kind, test.op) {
        (TestKind::Bw, RdmaOp::Read) => fill(ep.buffer_mut().as_mut_slice(), test.seed, 0),
        (TestKind::Bw, _) => {
            // Bytes nobody wrote must count as wrong.
            let buf = ep.buffer_mut().as_mut_slice();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = !pattern(test.seed, i as u64);
            }
        }
        (TestKind::Lat, _) => {}
    }
    ep.connect(&peer)?;
    // Receives go up before the client learns our QPs, so its first message finds one.
    let qps = test.qps as usize;
    match (test.kind, test.op) {
        (TestKind::Bw, RdmaOp::Write) => {
            for q in 0..qps {
                ep.post_recv(q, (q as u64) << QP_SHIFT, 0, 0)?;
            }
        }
        (TestKind::Bw, RdmaOp::Send) => {
            for q in 0..qps {
                for n in 0..layout.slots.min(test.iterations) {
                    let offset = test.slot_offset(&layout, q as u32, n);
                    ep.post_recv(q, ((q as u64) << QP_SHIFT) | n, offset, test.size as u32)?;
                }
            }
        }
        _ => {}
    }
    channel.send(
        &PerfMessage::RdmaAccept(RdmaAccept {
            endpoint: ep.local(),
        }),
        HANDSHAKE_TIMEOUT,
    )?;
    let mut checked = 0u64;
    let mut wrong = 0u64;
    let mut messages = 0u64;
    let mut done = false;
    match (test.kind, test.op) {
        (TestKind::Bw, RdmaOp::Write) => {
            // Nothing to do while the client writes: sleep on the control socket instead
            // of spinning on the CQ (under Soft-RoCE the spin would steal the CPU that
            // moves the data). The client's Done follows its last acknowledged WRITE.
            wait_done(channel, &test)?;
            done = true;
            // Each QP's last WRITE carries an immediate: all of them in means all data landed.
            let mut seen = 0usize;
            let mut watchdog = Watchdog::new(RDMA_STALL);
            while seen < qps {
                let got = ep.poll(|c| {
                    if c.imm.is_some() {
                        seen += 1;
                    }
                })?;
                if got > 0 {
                    watchdog.progress();
                }
                watchdog.check(&|| {
                    format!(
                        "the last RDMA WRITE from {} ({seen} of {qps} QPs done)",
                        channel.peer()
                    )
                })?;
            }
            messages = test.iterations * qps as u64;
            if test.validate {
                let written = layout.slots.min(test.iterations);
                for q in 0..test.qps {
                    let base = test.slot_offset(&layout, q, 0);
                    let len = written * test.size;
                    let slice = &ep.buffer().as_slice()[base as usize..(base + len) as usize];
                    checked += len;
                    wrong += wrong_bytes(slice, test.seed, base);
                }
            }
        }
        (TestKind::Bw, RdmaOp::Send) => {
            let total = test.iterations * qps as u64;
            let posted_ahead = layout.slots.min(test.iterations);
            // The client's control connection is watched too: a client that died is
            // noticed at once, not after the stall limit.
            let mut watchdog = Watchdog::new(RDMA_STALL + Duration::from_secs(60))
                .watching(Some(channel.stream()));
            let mut failure: Option<FabricError> = None;
            let mut idle = 0u32;
            while messages < total {
                let mut repost: [(usize, u64); 32] = [(0, 0); 32];
                let mut count = 0usize;
                ep.poll(|c| {
                    if !c.is_recv() {
                        return;
                    }
                    let q = (c.wr_id >> QP_SHIFT) as usize;
                    let n = c.wr_id & LOW_MASK;
                    if count < repost.len() {
                        repost[count] = (q, n);
                        count += 1;
                    }
                    if c.byte_len as u64 != test.size && failure.is_none() {
                        failure = Some(FabricError::Rdma(format!(
                            "received a {}-byte message, expected {}",
                            c.byte_len, test.size
                        )));
                    }
                })?;
                if let Some(e) = failure.take() {
                    return Err(e);
                }
                for &(q, n) in &repost[..count] {
                    let offset = test.slot_offset(&layout, q as u32, n);
                    if test.validate {
                        let slice =
                            &ep.buffer().as_slice()[offset as usize..(offset + test.size) as usize];
                        checked += test.size;
                        wrong += wrong_bytes(slice, test.seed, offset);
                    }
                    let next = n + posted_ahead;
                    if next < test.iterations {
                        ep.post_recv(
                            q,
                            ((q as u64) << QP_SHIFT) | next,
                            test.slot_offset(&layout, q as u32, next),
                            test.size as u32,
                        )?;
                    }
                }
                messages += count as u64;
                if count > 0 {
                    watchdog.progress();
                    idle = 0;
                } else {
                    // A receiver that spins forever competes with the sender for the CPU
                    // on Soft-RoCE; after a run of empty polls, nap briefly.
                    idle += 1;
                    if idle > 1000 {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
                watchdog.check(&|| {
                    format!(
                        "SENDs from {} ({messages} of {total} received)",
                        channel.peer()
                    )
                })?;
            }
        }
        (TestKind::Bw, RdmaOp::Read) => {}
        (TestKind::Lat, RdmaOp::Write) => {
            let mut unused = LatencyRecorder::new();
            let served = Watch {
                stall: RDMA_STALL,
                control: Some(channel.stream()),
            };
            ping_write(&mut ep, &test, &peer, &mut unused, false, served)?;
            messages = test.iterations;
        }
        (TestKind::Lat, RdmaOp::Send) => {
            let mut unused = LatencyRecorder::new();
            let served = Watch {
                stall: RDMA_STALL,
                control: Some(channel.stream()),
            };
            ping_send(&mut ep, &test, &mut unused, false, served)?;
            messages = test.iterations;
        }
        (TestKind::Lat, RdmaOp::Read) => {}
    }
    if !done {
        wait_done(channel, &test)?;
    }
    let cpu: CpuUsage = control_cpu.used().usage(control_cpu.wall());
    channel.send(
        &PerfMessage::RdmaResults(RdmaResults {
            checked_bytes: checked,
            wrong_bytes: wrong,
            messages,
            cpu,
        }),
        HANDSHAKE_TIMEOUT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::ClientConfig;

    #[test]
    fn a_server_that_never_sends_its_results_costs_the_callers_stall_not_the_grace() {
        // A linkbench server that opens the session, takes the Done, then says nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut channel = Channel::new(stream, "client");
            let Ok(crate::control::Message::Hello(hello)) =
                channel.recv(Duration::from_secs(5), "hello")
            else {
                panic!("no Hello");
            };
            crate::handshake::open_server(&mut channel, &hello, super::super::TOOL, None).unwrap();
            let done = channel.recv_as::<PerfMessage>(Duration::from_secs(5), "done");
            assert!(matches!(done, Ok(PerfMessage::Done(_))), "{done:?}");
            std::thread::sleep(Duration::from_secs(3));
        });
        let stall = Duration::from_millis(400);
        let mut client = Client::connect(ClientConfig {
            peer,
            connect_timeout: Duration::from_secs(2),
            token: None,
            iface: None,
            stall,
        })
        .unwrap();
        let started = Instant::now();
        let error = client.rdma_finish(5).unwrap_err();
        assert!(matches!(error, FabricError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains("RDMA results"), "{error}");
        // The stall, not FINISH_GRACE (15 s); loose for a loaded machine.
        assert!(
            started.elapsed() < FINISH_GRACE / 3,
            "{:?}",
            started.elapsed()
        );
        server.join().unwrap();
    }

    #[test]
    fn peak_does_not_credit_a_burst_of_coalesced_completions() {
        let start = Instant::now();
        let mut peak = Peak::new(start, 8 << 20);
        // One completion covering 100 x 64 KiB, 1 ms in: below the window's byte floor.
        peak.add(100 * 65536, start + Duration::from_millis(1));
        assert_eq!(peak.best_gbps, 0.0);
        // Steady 1 GB/s for 10 ms: 8 Gbit/s.
        let mut peak = Peak::new(start, 1 << 20);
        for ms in 1..=10 {
            peak.add(1_000_000, start + Duration::from_millis(ms));
        }
        assert!((peak.best_gbps - 8.0).abs() < 0.01, "{}", peak.best_gbps);
    }

    #[test]
    fn ping_pong_tags_are_never_zero_and_always_change() {
        for round in 1..2000u64 {
            assert_ne!(tag(round), 0);
            assert_ne!(tag(round), tag(round + 1));
        }
    }
}
