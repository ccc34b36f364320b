//! `linkbench`: node-to-node TCP and RDMA bandwidth and latency in one tool. This file only
//! parses, resolves flags into a plan (rejecting contradictions in one place), calls
//! `fabric::perf`, and hands the records to `report` for printing.
//!
//! Exit codes: 0 measured, 2 failed (peer dead, refused, timed out), 64 bad invocation.

mod report;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use fabric::perf::{
    self, BwSpec, Client, ClientConfig, LatSpec, Mode, RdmaOptions, Server, ServerConfig, Until,
};
use fabric::rdma::{RdmaOp, RdmaTest};
use fabric::tcp::IfaceAddress;
use fabric::test_kind::TestKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "linkbench",
    version,
    about = "Node-to-node TCP and RDMA bandwidth and latency, side by side."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve tests to any number of clients at once; runs until killed (or --once).
    Serve(ServeArgs),
    /// Bandwidth: streams of back-to-back messages, measured by the receiver.
    Bw(BwArgs),
    /// Latency: ping-pong round trips, reported one-way as round trip / 2.
    Lat(LatArgs),
    /// TCP and RDMA bandwidth and latency to the same peer, in one table.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on [default: the --iface address, else all addresses].
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Serve on this interface only (its address, and SO_BINDTODEVICE).
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
    /// Exit after the first client session; its failure is this process's failure.
    #[arg(long)]
    once: bool,
    /// RDMA tests: use this device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// RDMA tests: use this GID index [default: NCCL_IB_GID_INDEX, else RoCE v2 by --iface address].
    #[arg(long, value_name = "N")]
    gid_index: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    /// RC queue pairs over verbs (InfiniBand, RoCE, Soft-RoCE).
    Rdma,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OpArg {
    Write,
    Read,
    Send,
}

/// Flags of `--transport rdma` (rejected with tcp).
#[derive(Args, Debug, Default)]
struct RdmaFlags {
    /// RDMA operation [default: write].
    #[arg(long, value_enum)]
    op: Option<OpArg>,
    /// Queue pairs, all driven from one thread like perftest's -q [default: 1].
    #[arg(long, value_name = "N")]
    qps: Option<u32>,
    /// Work requests in flight per QP [default: 128 for bw, 1 for lat].
    #[arg(long, value_name = "N")]
    tx_depth: Option<u32>,
    /// Send messages up to this size inline [default: 0 for bw, 220 for lat, as perftest].
    #[arg(long = "inline", value_name = "BYTES")]
    inline_size: Option<u32>,
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// GID index [default: NCCL_IB_GID_INDEX, else the RoCE v2 GID of --iface's address].
    #[arg(long, value_name = "N")]
    gid_index: Option<u32>,
    /// Check every byte moved against a pattern; report wrong bytes and fail if any.
    #[arg(long)]
    validate: bool,
}

impl RdmaFlags {
    fn given(&self) -> Option<&'static str> {
        if self.op.is_some() {
            Some("--op")
        } else if self.qps.is_some() {
            Some("--qps")
        } else if self.tx_depth.is_some() {
            Some("--tx-depth")
        } else if self.inline_size.is_some() {
            Some("--inline")
        } else if self.device.is_some() {
            Some("--device")
        } else if self.gid_index.is_some() {
            Some("--gid-index")
        } else if self.validate {
            Some("--validate")
        } else {
            None
        }
    }
}

/// Flags every client subcommand shares.
#[derive(Args, Debug)]
struct Common {
    /// The node running `linkbench serve`.
    #[arg(long, value_name = "HOST[:PORT]")]
    peer: String,
    /// Port when --peer has none.
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Send from this interface (SO_BINDTODEVICE).
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "5s", value_parser = cli::duration_arg, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Sweep message sizes 2 B .. 8 MiB (powers of two), one row per size.
    #[arg(short = 'a', long)]
    all_sizes: bool,
    // --plot draws a sweep (needs -a); -q prints the table alone.
    #[command(flatten)]
    output: cli::OutputArgs,
    #[command(flatten)]
    rdma: RdmaFlags,
}

#[derive(Args, Debug)]
struct BwArgs {
    #[command(flatten)]
    common: Common,
    /// Parallel streams (per direction with --bidir), each on its own thread.
    #[arg(
        short = 'P',
        long = "parallel",
        default_value_t = 1,
        value_name = "STREAMS"
    )]
    streams: u32,
    /// Test length [default: 10s; 1s per size with -a].
    #[arg(short = 't', long = "time", value_parser = cli::duration_arg, value_name = "DURATION")]
    time: Option<Duration>,
    /// Bytes per write [default: 1M; large writes keep syscalls off the critical path].
    #[arg(long, value_parser = cli::size_arg, value_name = "MSG")]
    size: Option<u64>,
    /// Server sends, client receives.
    #[arg(short = 'R', long)]
    reverse: bool,
    /// Both directions at once.
    #[arg(long)]
    bidir: bool,
    /// Socket buffer size (SO_SNDBUF/SO_RCVBUF) on both sides.
    #[arg(short = 'w', long, value_parser = cli::size_arg, value_name = "BYTES")]
    window: Option<u64>,
    /// TCP congestion control on both sides (e.g. cubic, bbr).
    #[arg(short = 'C', long, value_name = "NAME")]
    congestion: Option<String>,
    /// Send with MSG_ZEROCOPY.
    #[arg(short = 'Z', long)]
    zerocopy: bool,
    /// RDMA: messages per QP [default: 5000, as ib_write_bw].
    #[arg(short = 'n', long = "iters", value_name = "ITERS", value_parser = clap::value_parser!(u64).range(1..))]
    iters: Option<u64>,
    /// Report this side's rate every DURATION while the test runs (as iperf3 -i).
    #[arg(short = 'i', long, value_parser = cli::duration_arg, value_name = "DURATION")]
    interval: Option<Duration>,
    /// Run this long first and leave it out of the result: slow start, cold caches
    /// (as iperf3 -O). The test lasts -O plus -t.
    #[arg(short = 'O', long, value_parser = cli::duration_arg, value_name = "DURATION")]
    omit: Option<Duration>,
    /// Multi-rail: the server's address on each rail (one NIC each); -P streams per
    /// rail, stream i on rail i mod rails. --peer stays the control connection.
    #[arg(long, value_delimiter = ',', value_name = "ADDR[,ADDR...]")]
    rails: Option<Vec<String>>,
}

#[derive(Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON)))]
struct CompareArgs {
    /// The node running `linkbench serve`.
    #[arg(long, value_name = "HOST[:PORT]")]
    peer: String,
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Send from this interface (TCP: SO_BINDTODEVICE; RDMA: its RoCE v2 GID).
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
    #[arg(long, default_value = "5s", value_parser = cli::duration_arg, value_name = "DURATION")]
    connect_timeout: Duration,
    /// Bandwidth message size for both transports.
    #[arg(long, default_value = "64K", value_parser = cli::size_arg, value_name = "MSG")]
    size: u64,
    /// Latency message size for both transports.
    #[arg(long, default_value = "2", value_parser = cli::size_arg, value_name = "MSG")]
    lat_size: u64,
    /// TCP bandwidth test length.
    #[arg(short = 't', long = "time", default_value = "3s", value_parser = cli::duration_arg, value_name = "DURATION")]
    time: Duration,
    /// RDMA messages (bw) and round trips (lat, TCP too).
    #[arg(short = 'n', long = "iters", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    iters: u64,
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// RDMA GID index.
    #[arg(long, value_name = "N")]
    gid_index: Option<u32>,
    // --json: {"tcp":{…},"rdma":{…},"ratio":{…}}.
    #[command(flatten)]
    output: cli::OutputArgs,
}

#[derive(Args, Debug)]
struct LatArgs {
    #[command(flatten)]
    common: Common,
    /// Bytes per ping (and per pong).
    #[arg(long, value_parser = cli::size_arg, value_name = "MSG")]
    size: Option<u64>,
    /// Round trips [default: 10000; 1000 per size with -a].
    #[arg(short = 'n', long = "iters", value_name = "ITERS", value_parser = clap::value_parser!(u64).range(1..))]
    iters: Option<u64>,
    /// Run for this long instead of a number of round trips.
    #[arg(short = 't', long = "time", value_parser = cli::duration_arg, value_name = "DURATION")]
    time: Option<Duration>,
    /// Both sides spin on the socket while round trips flow instead of polling 200 us and then
    /// sleeping for the reply (the default): no wake-up on the path, one busy core per side.
    /// A side still sleeps after 50 ms of silence, so an idle peer cannot pin a core.
    #[arg(long)]
    busy_poll: bool,
}

/// Message sizes of a sweep: 2 B .. 8 MiB, like perftest's -a.
fn sweep_sizes() -> Vec<u64> {
    (1..=23).map(|p| 1u64 << p).collect()
}

/// What a client run will do, after every flag has been checked.
struct Plan {
    config: ClientConfig,
    sizes: Vec<u64>,
    sweep: bool,
    output: report::Output,
    quiet: bool,
}

fn resolve_common(common: &Common, size: Option<u64>, default_size: u64) -> anyhow::Result<Plan> {
    if common.all_sizes && size.is_some() {
        return Err(cli::usage(
            "--all-sizes sweeps the message size, so --size cannot be given with it",
        ));
    }
    if common.output.plot.is_some() && !common.all_sizes {
        return Err(cli::usage("--plot draws a size sweep: add -a/--all-sizes"));
    }
    common.output.resolve("this test", cli::Honours::ALL)?;
    if common.transport == Transport::Tcp {
        if let Some(flag) = common.rdma.given() {
            return Err(cli::usage(format!(
                "{flag} applies to RDMA tests: add --transport rdma, or drop {flag}"
            )));
        }
    }
    let size = size.unwrap_or(default_size);
    if size == 0 || size > perf::MAX_MESSAGE {
        return Err(cli::usage(format!(
            "--size must be 1 byte .. {} MiB",
            perf::MAX_MESSAGE >> 20
        )));
    }
    let peer = fabric::tcp::resolve_peer(&common.peer, common.port).map_err(|e| match e {
        fabric::FabricError::Config(text) => cli::usage(format!("--peer: {text}")),
        other => anyhow::Error::new(other).context("--peer"),
    })?;
    Ok(Plan {
        config: ClientConfig {
            peer,
            connect_timeout: common.connect_timeout,
            token: token()?,
            iface: common.iface.clone(),
            stall: fabric::perf::STALL_TIMEOUT,
        },
        sizes: if common.all_sizes {
            sweep_sizes()
        } else {
            vec![size]
        },
        sweep: common.all_sizes,
        output: report::Output {
            json: common.output.json,
            quiet: common.output.quiet,
            csv: common.output.csv.clone(),
            plot: common.output.plot.clone(),
            peer: peer.to_string(),
        },
        quiet: common.output.quiet || common.output.json,
    })
}

fn token() -> anyhow::Result<Option<Vec<u8>>> {
    fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))
}

fn bw(args: BwArgs) -> anyhow::Result<u8> {
    if args.reverse && args.bidir {
        return Err(cli::usage(
            "--reverse and --bidir contradict each other: --bidir already measures both directions",
        ));
    }
    if args.streams == 0 || args.streams > perf::MAX_STREAMS {
        return Err(cli::usage(format!(
            "-P/--parallel must be 1 .. {}",
            perf::MAX_STREAMS
        )));
    }
    if let Some(window) = args.window {
        if window == 0 || window > perf::MAX_WINDOW {
            return Err(cli::usage("--window must be 1 byte .. 1 GiB"));
        }
    }
    if args.common.transport == Transport::Rdma {
        return rdma_bw(args);
    }
    if args.iters.is_some() {
        return Err(cli::usage(
            "-n/--iters counts RDMA messages: TCP bandwidth runs for -t/--time",
        ));
    }
    let plan = resolve_common(&args.common, args.size, 1 << 20)?;
    let omit = args.omit.unwrap_or(Duration::ZERO);
    if omit > perf::MAX_DURATION {
        return Err(cli::usage("-O/--omit must be at most 24h"));
    }
    let rails = resolve_rails(args.rails.as_deref(), &args.common)?;
    if let Some(interval) = args.interval {
        if interval < Duration::from_millis(100) {
            return Err(cli::usage(
                "-i/--interval must be at least 100ms (the client samples every 100 ms)",
            ));
        }
        if plan.sweep {
            return Err(cli::usage(
                "-i/--interval reports one test as it runs: drop -a/--all-sizes, or -i",
            ));
        }
    }
    let duration = args.time.unwrap_or(if plan.sweep {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    if duration < Duration::from_millis(100) || duration > perf::MAX_DURATION {
        return Err(cli::usage("-t/--time must be 100ms .. 24h"));
    }
    let mode = if args.bidir {
        Mode::Bidir
    } else if args.reverse {
        Mode::Reverse
    } else {
        Mode::Forward
    };
    let per_rail = args.streams;
    let streams = per_rail * rails.len().max(1) as u32;
    if streams > perf::MAX_STREAMS {
        return Err(cli::usage(format!(
            "-P {per_rail} on {} rails is {streams} streams; at most {} in all",
            rails.len(),
            perf::MAX_STREAMS
        )));
    }
    let mut client = connect(&plan)?;
    let total = (omit + duration) * plan.sizes.len() as u32;
    let live = args.interval.is_some() && !plan.output.json;
    let bar = cli::progress(
        total.as_millis() as u64,
        "bandwidth",
        "ms of test time",
        !plan.quiet && !live && total > Duration::from_secs(2),
    );
    let mut intervals = report::Intervals::new(args.interval, omit, mode);
    if live {
        intervals.print_header();
    }
    let mut reports = Vec::new();
    for (i, &size) in plan.sizes.iter().enumerate() {
        let spec = BwSpec {
            mode,
            streams,
            size,
            duration,
            omit,
            window: args.window,
            congestion: args.congestion.clone(),
            zerocopy: args.zerocopy,
            rails: rails.clone(),
        };
        let done_before = (omit + duration) * i as u32;
        let report = client
            .bandwidth(&spec, &mut |elapsed, bytes| {
                bar.set_position((done_before + elapsed.min(omit + duration)).as_millis() as u64);
                intervals.sample(elapsed, bytes, live);
            })
            .with_context(|| format!("bandwidth test with {size}-byte messages"))?;
        reports.push(report);
    }
    bar.finish_and_clear();
    client.close();
    report::bandwidth(&plan.output, plan.sweep, &reports, &intervals, &rails)?;
    Ok(cli::exit::OK)
}

fn lat(args: LatArgs) -> anyhow::Result<u8> {
    if args.iters.is_some() && args.time.is_some() {
        return Err(cli::usage(
            "-n/--iters and -t/--time both say when to stop: give one of them",
        ));
    }
    if args.common.transport == Transport::Rdma {
        return rdma_lat(args);
    }
    let plan = resolve_common(&args.common, args.size, 64)?;
    let until = match (args.iters, args.time) {
        (_, Some(time)) if time.is_zero() || time > perf::MAX_DURATION => {
            return Err(cli::usage("-t/--time must be more than 0 and at most 24h"))
        }
        (_, Some(time)) => Until::Elapsed(time),
        (Some(n), None) => Until::Iterations(n),
        (None, None) => Until::Iterations(if plan.sweep { 1000 } else { 10_000 }),
    };
    let mut client = connect(&plan)?;
    let (total, visible) = match until {
        Until::Iterations(n) => (
            n * plan.sizes.len() as u64,
            n * plan.sizes.len() as u64 > 50_000,
        ),
        Until::Elapsed(d) => (
            (d * plan.sizes.len() as u32).as_millis() as u64,
            d * plan.sizes.len() as u32 > Duration::from_secs(2),
        ),
    };
    let unit = match until {
        Until::Iterations(_) => "round trips",
        Until::Elapsed(_) => "ms of test time",
    };
    let bar = cli::progress(total, "latency", unit, !plan.quiet && visible);
    let mut reports = Vec::new();
    for (i, &size) in plan.sizes.iter().enumerate() {
        let spec = LatSpec {
            size,
            until,
            busy_poll: args.busy_poll,
        };
        let report = client
            .latency(&spec, &mut |count, elapsed| match until {
                Until::Iterations(n) => bar.set_position(n * i as u64 + count),
                Until::Elapsed(d) => {
                    bar.set_position(((d * i as u32) + elapsed.min(d)).as_millis() as u64);
                }
            })
            .with_context(|| format!("latency test with {size}-byte messages"))?;
        reports.push(report);
    }
    bar.finish_and_clear();
    client.close();
    report::latency(&plan.output, plan.sweep, &reports)?;
    Ok(cli::exit::OK)
}

/// An RDMA run after its flags were checked: the test template and the local device.
struct RdmaPlan {
    plan: Plan,
    test: RdmaTest,
    options: RdmaOptions,
}

fn resolve_rdma(
    common: &Common,
    kind: TestKind,
    size: Option<u64>,
    iters: u64,
) -> anyhow::Result<RdmaPlan> {
    let default_size = 65536;
    let lat_default_size = 2;
    let plan = resolve_common(
        common,
        size,
        if kind == TestKind::Bw {
            default_size
        } else {
            lat_default_size
        },
    )?;
    let flags = &common.rdma;
    let op = match flags.op.unwrap_or(OpArg::Write) {
        OpArg::Write => RdmaOp::Write,
        OpArg::Read => RdmaOp::Read,
        OpArg::Send => RdmaOp::Send,
    };
    let qps = flags.qps.unwrap_or(1);
    if kind == TestKind::Lat && qps != 1 {
        return Err(cli::usage(
            "--qps applies to bandwidth: a latency test uses one QP",
        ));
    }
    if kind == TestKind::Lat && flags.validate {
        return Err(cli::usage(
            "--validate checks bandwidth tests: drop it from lat",
        ));
    }
    let address = match &common.iface {
        Some(iface) => Some(iface_address(iface)?),
        None => None,
    };
    let test = RdmaTest {
        kind,
        op,
        size: plan.sizes[0],
        qps,
        tx_depth: flags
            .tx_depth
            .unwrap_or(if kind == TestKind::Bw { 128 } else { 1 }),
        iterations: iters,
        validate: flags.validate,
        inline: flags
            .inline_size
            .unwrap_or(if kind == TestKind::Bw { 0 } else { 220 }),
        seed: 0x6e6f_6465_6c69_6e6b,
    };
    test.validate().map_err(cli::usage)?;
    // Fail before connecting when this host cannot do RDMA at all.
    fabric::rdma::check(flags.device.as_deref())?;
    Ok(RdmaPlan {
        plan,
        test,
        options: RdmaOptions {
            device: flags.device.clone(),
            gid_index: flags.gid_index,
            address,
        },
    })
}

fn rdma_bw(args: BwArgs) -> anyhow::Result<u8> {
    let tcp_only = [
        (args.streams != 1, "-P/--parallel (use --qps)"),
        (args.reverse, "-R/--reverse"),
        (args.bidir, "--bidir"),
        (args.window.is_some(), "-w/--window"),
        (args.congestion.is_some(), "-C/--congestion"),
        (args.zerocopy, "-Z/--zerocopy"),
        (
            args.time.is_some(),
            "-t/--time (RDMA counts messages: use -n)",
        ),
        (args.interval.is_some(), "-i/--interval"),
        (args.rails.is_some(), "--rails"),
        (args.omit.is_some(), "-O/--omit"),
    ];
    if let Some((_, flag)) = tcp_only.iter().find(|(given, _)| *given) {
        return Err(cli::usage(format!(
            "{flag} applies to --transport tcp only"
        )));
    }
    let iters = args.iters.unwrap_or(5000);
    let run = resolve_rdma(&args.common, TestKind::Bw, args.size, iters)?;
    let reports = rdma_sweep(&run, "bandwidth", Client::rdma_bandwidth)?;
    report::rdma_bandwidth(&run.plan.output, run.plan.sweep, &reports)?;
    if let Some(bad) = reports.iter().find(|r| r.wrong_bytes > 0) {
        anyhow::bail!(
            "--validate found {} wrong bytes of {} checked at {} B messages: the data path corrupts data",
            bad.wrong_bytes,
            bad.checked_bytes,
            bad.msg_size
        );
    }
    Ok(cli::exit::OK)
}

/// One RDMA test per size of the plan, over one control connection.
fn rdma_sweep<R>(
    run: &RdmaPlan,
    what: &str,
    test_one: fn(&mut Client, &RdmaTest, &RdmaOptions) -> fabric::Result<R>,
) -> anyhow::Result<Vec<R>> {
    let mut client = connect(&run.plan)?;
    let mut reports = Vec::new();
    for &size in &run.plan.sizes {
        let test = RdmaTest {
            size,
            ..run.test.clone()
        };
        let report = test_one(&mut client, &test, &run.options)
            .with_context(|| format!("RDMA {what} test with {size}-byte messages"))?;
        reports.push(report);
    }
    client.close();
    Ok(reports)
}

fn rdma_lat(args: LatArgs) -> anyhow::Result<u8> {
    if args.time.is_some() {
        return Err(cli::usage(
            "-t/--time applies to TCP: RDMA latency counts round trips, use -n",
        ));
    }
    if args.busy_poll {
        return Err(cli::usage(
            "--busy-poll applies to TCP: RDMA latency always polls",
        ));
    }
    let run = resolve_rdma(
        &args.common,
        TestKind::Lat,
        args.size,
        args.iters.unwrap_or(1000),
    )?;
    let reports = rdma_sweep(&run, "latency", Client::rdma_latency)?;
    report::rdma_latency(&run.plan.output, run.plan.sweep, &reports)?;
    Ok(cli::exit::OK)
}

fn compare(args: CompareArgs) -> anyhow::Result<u8> {
    args.output
        .resolve("linkbench compare", cli::Honours::JSON)?;
    let peer = fabric::tcp::resolve_peer(&args.peer, args.port).map_err(|e| match e {
        fabric::FabricError::Config(text) => cli::usage(format!("--peer: {text}")),
        other => anyhow::Error::new(other).context("--peer"),
    })?;
    for (size, flag) in [(args.size, "--size"), (args.lat_size, "--lat-size")] {
        if size == 0 || size > perf::MAX_MESSAGE {
            return Err(cli::usage(format!(
                "{flag} must be 1 byte .. {} MiB",
                perf::MAX_MESSAGE >> 20
            )));
        }
    }
    let plan = Plan {
        config: ClientConfig {
            peer,
            connect_timeout: args.connect_timeout,
            token: token()?,
            iface: args.iface.clone(),
            stall: fabric::perf::STALL_TIMEOUT,
        },
        sizes: vec![args.size],
        sweep: false,
        output: report::Output {
            json: args.output.json,
            quiet: false,
            csv: None,
            plot: None,
            peer: peer.to_string(),
        },
        quiet: true,
    };
    let mut client = connect(&plan)?;
    let bar = cli::progress(
        4,
        "linkbench compare: TCP bandwidth",
        "tests",
        !args.output.json,
    );
    let tcp_bw = client
        .bandwidth(
            &BwSpec {
                mode: Mode::Forward,
                streams: 1,
                size: args.size,
                duration: args.time,
                omit: Duration::ZERO,
                window: None,
                congestion: None,
                zerocopy: false,
                rails: Vec::new(),
            },
            &mut |_, _| {},
        )
        .context("TCP bandwidth test")?;
    bar.inc(1);
    bar.set_message("linkbench compare: TCP latency");
    let tcp_lat = client
        .latency(
            &LatSpec {
                size: args.lat_size,
                until: Until::Iterations(args.iters),
                busy_poll: true,
            },
            &mut |_, _| {},
        )
        .context("TCP latency test")?;
    bar.inc(1);
    bar.set_message("linkbench compare: RDMA");
    let address = match &args.iface {
        Some(iface) => Some(iface_address(iface)?),
        None => None,
    };
    let options = RdmaOptions {
        device: args.device.clone(),
        gid_index: args.gid_index,
        address,
    };
    let rdma = match fabric::rdma::check(args.device.as_deref()) {
        Err(why) => Err(why.to_string()),
        Ok(_) => {
            let bw = RdmaTest {
                kind: TestKind::Bw,
                op: RdmaOp::Write,
                size: args.size,
                qps: 1,
                tx_depth: 128,
                iterations: args.iters,
                validate: false,
                inline: 0,
                seed: 1,
            };
            let lat = RdmaTest {
                kind: TestKind::Lat,
                size: args.lat_size,
                tx_depth: 1,
                inline: 220,
                ..bw.clone()
            };
            client
                .rdma_bandwidth(&bw, &options)
                .and_then(|b| client.rdma_latency(&lat, &options).map(|l| (b, l)))
                .map_err(|e| format!("RDMA test failed: {e}"))
        }
    };
    client.close();
    bar.finish_and_clear();
    report::compare(&plan.output, &tcp_bw, &tcp_lat, &rdma)?;
    Ok(cli::exit::OK)
}

/// `--rails`: each rail's server address (port from --peer's), at least two, no repeats.
fn resolve_rails(rails: Option<&[String]>, common: &Common) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(rails) = rails else {
        return Ok(Vec::new());
    };
    if common.iface.is_some() {
        return Err(cli::usage(
            "--iface pins every stream to one interface, --rails spreads them over several: give one of the two (each rail's route picks its NIC)",
        ));
    }
    let port = fabric::tcp::resolve_peer(&common.peer, common.port)
        .map(|a| a.port())
        .unwrap_or(common.port);
    let mut resolved: Vec<SocketAddr> = Vec::with_capacity(rails.len());
    for rail in rails {
        let addr = fabric::tcp::resolve_peer(rail.trim(), port)
            .map_err(|e| cli::usage(format!("--rails {rail}: {e}")))?;
        if resolved.contains(&addr) {
            return Err(cli::usage(format!(
                "--rails names {addr} twice: give each rail's address once"
            )));
        }
        resolved.push(addr);
    }
    if resolved.len() < 2 {
        return Err(cli::usage(
            "--rails needs two or more addresses (one per rail); for one, use --peer alone",
        ));
    }
    Ok(resolved)
}

fn connect(plan: &Plan) -> anyhow::Result<Client> {
    Client::connect(plan.config.clone())
        .with_context(|| format!("linkbench server at {}", plan.config.peer))
}

/// The address of `iface`, so the listener binds there and not to every address.
fn iface_address(iface: &str) -> anyhow::Result<IpAddr> {
    match fabric::tcp::iface_address(iface)? {
        IfaceAddress::Found(ip) => Ok(ip),
        IfaceAddress::NoAddress => {
            anyhow::bail!("interface {iface} has no IP address: add one, or pass --bind")
        }
        IfaceAddress::NoSuchInterface => Err(cli::usage(format!(
            "no interface named {iface} (see `ip -br addr`)"
        ))),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let ip = match (&args.bind, &args.iface) {
        (Some(ip), Some(iface)) => {
            // Both given: they must agree, or every client would be refused later.
            let on_iface = fabric::tcp::iface_addresses(iface)?;
            if !on_iface.contains(ip) {
                return Err(cli::usage(format!(
                    "--bind {ip} is not an address of --iface {iface} (it has {}): give one of the two, or an address of that interface",
                    if on_iface.is_empty() { "none".to_string() } else {
                        on_iface.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                )));
            }
            *ip
        }
        (Some(ip), None) => *ip,
        (None, Some(iface)) => iface_address(iface)?,
        (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let config = ServerConfig {
        token: token()?,
        iface: args.iface.clone(),
        once: args.once,
        max_connections: 1024,
        log: Arc::new(|line: &str| {
            eprintln!("linkbench serve: {}", measure::name_flags(line, FLAGS));
        }),
        rdma: RdmaOptions {
            device: args.device.clone(),
            gid_index: args.gid_index,
            address: args.iface.as_deref().and_then(|i| iface_address(i).ok()),
        },
    };
    let auth = if config.token.is_some() {
        "NODELINK_TOKEN required"
    } else {
        "no authentication"
    };
    let server = Server::bind(SocketAddr::new(ip, args.port), config)?;
    eprintln!(
        "linkbench serve: listening on {} (protocol v{}, {auth}){}",
        server.local_addr()?,
        fabric::control::VERSION,
        if ip.is_unspecified() {
            "; all addresses: pass --iface or --bind to restrict"
        } else {
            ""
        }
    );
    server.run()?;
    Ok(cli::exit::OK)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bw(args) => bw(args).map_err(rdma_hint),
        Command::Lat(args) => lat(args).map_err(rdma_hint),
        Command::Compare(args) => compare(args),
    }
}

/// RDMA missing here: the library says why; the tool adds its own way around it.
fn rdma_hint(error: anyhow::Error) -> anyhow::Error {
    let unavailable = error.chain().any(|cause| {
        cause.downcast_ref::<fabric::rdma::Unavailable>().is_some()
            || matches!(
                cause.downcast_ref::<fabric::FabricError>(),
                Some(fabric::FabricError::RdmaUnavailable(_))
            )
    });
    if unavailable {
        anyhow::anyhow!("{}, or use --transport tcp", cli::sentence(&error))
    } else {
        error
    }
}

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::ListenPort, "--port"),
    (measure::Setting::GidIndex, "--gid-index"),
    (measure::Setting::SendQueueDepth, "--tx-depth"),
    (measure::Setting::TcpTransport, "--transport tcp"),
];

fn main() -> std::process::ExitCode {
    cli::main("linkbench", FLAGS, run)
}
