//! linkbench's flags: one struct per mode; `main` resolves them into a plan.

use clap::{Args, Parser, Subcommand, ValueEnum};
use fabric::perf;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "linkbench",
    version,
    about = "Node-to-node TCP and RDMA bandwidth and latency, side by side."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) struct ServeArgs {
    /// Address to listen on [default: the --iface address, else all addresses].
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Option<IpAddr>,
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Serve on this interface only (its address, and SO_BINDTODEVICE).
    #[arg(long, value_name = "IFACE")]
    pub(crate) iface: Option<String>,
    /// Exit after the first client session; its failure is this process's failure.
    #[arg(long)]
    pub(crate) once: bool,
    /// RDMA tests: use this device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    pub(crate) device: Option<String>,
    /// RDMA tests: use this GID index [default: NCCL_IB_GID_INDEX, else RoCE v2 by --iface address].
    #[arg(long, value_name = "N")]
    pub(crate) gid_index: Option<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    /// RC queue pairs over verbs (InfiniBand, RoCE, Soft-RoCE).
    Rdma,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpArg {
    Write,
    Read,
    Send,
}

/// Flags of `--transport rdma` (rejected with tcp).
#[derive(Args, Debug, Default)]
pub(crate) struct RdmaFlags {
    /// RDMA operation [default: write].
    #[arg(long, value_enum)]
    pub(crate) op: Option<OpArg>,
    /// Queue pairs, all driven from one thread like perftest's -q [default: 1].
    #[arg(long, value_name = "N")]
    pub(crate) qps: Option<u32>,
    /// Work requests in flight per QP [default: 128 for bw, 1 for lat].
    #[arg(long, value_name = "N")]
    pub(crate) tx_depth: Option<u32>,
    /// Send messages up to this size inline [default: 0 for bw, 220 for lat, as perftest].
    #[arg(long = "inline", value_name = "BYTES")]
    pub(crate) inline_size: Option<u32>,
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    pub(crate) device: Option<String>,
    /// GID index [default: NCCL_IB_GID_INDEX, else the RoCE v2 GID of --iface's address].
    #[arg(long, value_name = "N")]
    pub(crate) gid_index: Option<u32>,
    /// Check every byte moved against a pattern; report wrong bytes and fail if any.
    #[arg(long)]
    pub(crate) validate: bool,
}

impl RdmaFlags {
    pub(crate) fn given(&self) -> Option<&'static str> {
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
pub(crate) struct Common {
    /// The node running `linkbench serve`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) peer: String,
    /// Port when --peer has none.
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Send from this interface (SO_BINDTODEVICE).
    #[arg(long, value_name = "IFACE")]
    pub(crate) iface: Option<String>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "5s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) connect_timeout: Duration,
    /// Sweep message sizes 2 B .. 8 MiB (powers of two), one row per size.
    #[arg(short = 'a', long)]
    pub(crate) all_sizes: bool,
    // --plot draws a sweep (needs -a); -q prints the table alone.
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
    #[command(flatten)]
    pub(crate) rdma: RdmaFlags,
}

#[derive(Args, Debug)]
pub(crate) struct BwArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Parallel streams (per direction with --bidir), each on its own thread.
    #[arg(
        short = 'P',
        long = "parallel",
        default_value_t = 1,
        value_name = "STREAMS"
    )]
    pub(crate) streams: u32,
    /// Test length [default: 10s; 1s per size with -a].
    #[arg(short = 't', long = "time", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) time: Option<Duration>,
    /// Bytes per write [default: 1M; large writes keep syscalls off the critical path].
    #[arg(long, value_parser = cli::size_arg, value_name = "MSG")]
    pub(crate) size: Option<u64>,
    /// Server sends, client receives.
    #[arg(short = 'R', long)]
    pub(crate) reverse: bool,
    /// Both directions at once.
    #[arg(long)]
    pub(crate) bidir: bool,
    /// Socket buffer size (SO_SNDBUF/SO_RCVBUF) on both sides.
    #[arg(short = 'w', long, value_parser = cli::size_arg, value_name = "BYTES")]
    pub(crate) window: Option<u64>,
    /// TCP congestion control on both sides (e.g. cubic, bbr).
    #[arg(short = 'C', long, value_name = "NAME")]
    pub(crate) congestion: Option<String>,
    /// Send with MSG_ZEROCOPY.
    #[arg(short = 'Z', long)]
    pub(crate) zerocopy: bool,
    /// Set TCP_NODELAY on both sides' data streams (as iperf3 -N, and as NCCL and
    /// kvxfer run): no Nagle or autocork wait for each write's last partial segment.
    #[arg(short = 'N', long)]
    pub(crate) no_delay: bool,
    /// Each stream writes and reads through this many bytes on both sides, not one
    /// message: past the CPU caches every copy comes from or goes to memory, as when
    /// KV blocks move out of and into a pool (e.g. 256M) [default: one message].
    #[arg(long, value_parser = cli::size_arg, value_name = "BYTES")]
    pub(crate) working_set: Option<u64>,
    /// RDMA: messages per QP [default: 5000, as ib_write_bw].
    #[arg(short = 'n', long = "iters", value_name = "ITERS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iters: Option<u64>,
    /// Report this side's rate every DURATION while the test runs (as iperf3 -i).
    #[arg(short = 'i', long, value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) interval: Option<Duration>,
    /// Run this long first and leave it out of the result: slow start, cold caches
    /// (as iperf3 -O). The test lasts -O plus -t.
    #[arg(short = 'O', long, value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) omit: Option<Duration>,
    /// Multi-rail: the server's address on each rail (one NIC each); -P streams per
    /// rail, stream i on rail i mod rails. --peer stays the control connection.
    #[arg(long, value_delimiter = ',', value_name = "ADDR[,ADDR...]")]
    pub(crate) rails: Option<Vec<String>>,
}

#[derive(Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON)))]
pub(crate) struct CompareArgs {
    /// The node running `linkbench serve`.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) peer: String,
    #[arg(long, default_value_t = perf::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Send from this interface (TCP: SO_BINDTODEVICE; RDMA: its RoCE v2 GID).
    #[arg(long, value_name = "IFACE")]
    pub(crate) iface: Option<String>,
    #[arg(long, default_value = "5s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) connect_timeout: Duration,
    /// Bandwidth message size for both transports.
    #[arg(long, default_value = "64K", value_parser = cli::size_arg, value_name = "MSG")]
    pub(crate) size: u64,
    /// Latency message size for both transports.
    #[arg(long, default_value = "2", value_parser = cli::size_arg, value_name = "MSG")]
    pub(crate) lat_size: u64,
    /// TCP bandwidth test length.
    #[arg(short = 't', long = "time", default_value = "3s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) time: Duration,
    /// RDMA messages (bw) and round trips (lat, TCP too).
    #[arg(short = 'n', long = "iters", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iters: u64,
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "DEVICE")]
    pub(crate) device: Option<String>,
    /// RDMA GID index.
    #[arg(long, value_name = "N")]
    pub(crate) gid_index: Option<u32>,
    // --json: {"tcp":{…},"rdma":{…},"ratio":{…}}.
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}

#[derive(Args, Debug)]
pub(crate) struct LatArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Bytes per ping (and per pong).
    #[arg(long, value_parser = cli::size_arg, value_name = "MSG")]
    pub(crate) size: Option<u64>,
    /// Round trips [default: 10000; 1000 per size with -a].
    #[arg(short = 'n', long = "iters", value_name = "ITERS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) iters: Option<u64>,
    /// Run for this long instead of a number of round trips.
    #[arg(short = 't', long = "time", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) time: Option<Duration>,
    /// Both sides spin on the socket while round trips flow instead of polling 200 us and then
    /// sleeping for the reply (the default): no wake-up on the path, one busy core per side.
    /// A side still sleeps after 50 ms of silence, so an idle peer cannot pin a core.
    #[arg(long)]
    pub(crate) busy_poll: bool,
}
