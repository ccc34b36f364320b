//! kvxfer's flags: one struct per mode and the value parsers they use.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kvcache::rdma::RdmaOptions;
use kvcache::{Dtype, KvShape};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kvxfer",
    version,
    about = "Prefill-to-decode KV-block transfers: agents and benchmark."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve a KV pool as one prefill rank; runs until killed.
    Prefill(PrefillArgs),
    /// Move one request from the prefill ranks into this node's pool.
    Decode(DecodeArgs),
    /// Move many requests concurrently and report throughput and latency.
    Bench(BenchArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum LayoutOrder {
    Nhd,
    Hnd,
}

/// How this rank's KV pool is shaped; both sides must agree on all but TP and size.
#[derive(Args, Debug)]
pub(crate) struct PoolArgs {
    /// Model name or alias from configs/models.
    #[arg(long, default_value = "llama-3.1-8b")]
    pub(crate) model: String,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) block_size: u32,
    /// KV dtype [default: the model's].
    #[arg(long, value_parser = parse_dtype)]
    pub(crate) dtype: Option<Dtype>,
    /// Order inside a block: NHD (token-major, vLLM's default) or HND.
    #[arg(long, value_enum, default_value = "nhd")]
    pub(crate) layout: LayoutOrder,
    /// Tensor-parallel size of this side.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) tp: u32,
    /// This process's TP rank.
    #[arg(long, default_value_t = 0)]
    pub(crate) tp_rank: u32,
    /// Data-parallel rank (prefill: this rank's; decode: the one it pulls from).
    #[arg(long, default_value_t = 0)]
    pub(crate) dp_rank: u32,
    /// Where the pool lives: cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
}

/// Which RDMA device and GID this side uses (when RDMA is used).
#[derive(Args, Debug)]
pub(crate) struct RdmaArgs {
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "NAME")]
    pub(crate) rdma_device: Option<String>,
    /// GID table index [default: NCCL_IB_GID_INDEX, else the best RoCE v2 entry].
    #[arg(long, value_name = "N")]
    pub(crate) gid_index: Option<u32>,
}

impl RdmaArgs {
    pub(crate) fn options(&self) -> RdmaOptions {
        RdmaOptions {
            device: self.rdma_device.clone(),
            gid_index: self.gid_index,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Rdma,
}

#[derive(Args, Debug)]
pub(crate) struct PrefillArgs {
    #[command(flatten)]
    pub(crate) pool: PoolArgs,
    /// For decode ranks that pull with --transport rdma.
    #[command(flatten)]
    pub(crate) rdma: RdmaArgs,
    /// Address (and port) to listen on [default: the --iface address, else all addresses;
    /// port 18600]. Several, comma-separated: one per rail (NIC); decode stripes each
    /// transfer over all of them.
    #[arg(long, value_name = "ADDR[:PORT][,...]")]
    pub(crate) listen: Option<String>,
    /// Serve on this interface's address; several, comma-separated: one per rail.
    #[arg(long, value_name = "IFACE[,IFACE...]")]
    pub(crate) iface: Option<String>,
    /// Blocks in the pool [default: 2 GiB worth].
    #[arg(long)]
    pub(crate) num_blocks: Option<u32>,
    /// How long a request's blocks are held for decode without a completion notice.
    #[arg(long, default_value = "30s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) lease: Duration,
    /// Deadline for each whole operation (a greeting, a wait for free blocks); a pull is bounded by its lease.
    #[arg(long, default_value = "10s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// No per-connection log lines.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Most blocks one decode connection may hold in requests it has not completed
    /// [default: half the pool; a connection's first request is always taken].
    #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) session_quota: Option<u32>,
    /// Serve raw pools for `kvxfer bench --sweep-block`: one per power-of-two block size
    /// in MIN..MAX, size i on the port + i (model flags do not apply).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_sweep)]
    pub(crate) sweep_block: Option<Sweep>,
    /// With --sweep-block: bytes of each size's pool (at least 4 blocks).
    #[arg(long, default_value = "64M", value_parser = cli::size_arg, value_name = "BYTES")]
    pub(crate) sweep_pool: u64,
}

/// Flags shared by the two decode-side commands.
#[derive(Args, Debug)]
pub(crate) struct PeerArgs {
    #[command(flatten)]
    pub(crate) pool: PoolArgs,
    /// The prefill ranks of one DP rank, comma-separated, any order.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    pub(crate) peer: String,
    /// tcp: prefill streams the blocks; rdma: decode READs them (RC QP, RDMA READ).
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    #[command(flatten)]
    pub(crate) rdma: RdmaArgs,
    /// Blocks in this decode pool [default: enough for the run].
    #[arg(long)]
    pub(crate) num_blocks: Option<u32>,
    /// Also check every byte's content against what prefill wrote (after the timed
    /// transfer; reported as a separate rate).
    #[arg(long)]
    pub(crate) verify: bool,
    /// Skip the per-block CRC32C (on by default: a block counts only if its checksum
    /// matches the sender's).
    #[arg(long)]
    pub(crate) no_checksum: bool,
    /// Use only the --peer connection, even when prefill serves several rails
    /// (by default each pull is striped over every rail prefill announces).
    #[arg(long)]
    pub(crate) no_rails: bool,
    /// Deadline for each whole operation (a prefill, a pull, a wait for free blocks), not per read.
    #[arg(long, default_value = "10s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) timeout: Duration,
}

#[derive(Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON)))]
pub(crate) struct DecodeArgs {
    #[command(flatten)]
    pub(crate) peers: PeerArgs,
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
    /// The request's id (the same on every decode rank of a TP group).
    #[arg(long)]
    pub(crate) request_id: String,
    /// Prompt length: have prefill prefill it first, then pull its blocks.
    #[arg(long, value_name = "TOKENS")]
    pub(crate) input_len: u64,
    /// Pull these prefill block ids instead of the ones prefill returned (one prefill rank).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub(crate) remote_blocks: Option<Vec<u32>>,
    /// Do not ask prefill first: pull --remote-blocks of a request prefilled earlier.
    #[arg(long, requires = "remote_blocks")]
    pub(crate) no_prefill: bool,
    /// Land in these local block ids [default: allocated].
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub(crate) local_blocks: Option<Vec<u32>>,
    /// Wait this long between prefill and pull (a decode queue; tests lease expiry).
    #[arg(long, default_value = "0s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) pull_after: Duration,
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) peers: PeerArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) input_len: u64,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) num_prompts: u64,
    /// Requests in flight at once, at most (each a worker with its own connections).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) concurrency: u32,
    /// Requests per second, arriving as a Poisson process (as vllm bench serve)
    /// [default: inf, all at once, --concurrency at a time].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub(crate) request_rate: Option<f64>,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Requests moved first and not counted (connections, page faults).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub(crate) num_warmups: u64,
    /// nixlbench-style: sweep the block size over powers of two (e.g. 1K..64M) against
    /// a `kvxfer prefill --sweep-block` with the same range (size i on --peer's port + i).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_sweep)]
    pub(crate) sweep_block: Option<Sweep>,
    /// With --sweep-block: blocks per request [default: 16, a 256-token request at vLLM's
    /// block size; 1 measures one block per round trip].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8192), value_name = "N")]
    pub(crate) batch: Option<u32>,
    /// Traffic pattern [default: pairwise for one --peer, tp for several].
    #[arg(long, value_enum)]
    pub(crate) scheme: Option<Scheme>,
    /// With --scheme many-to-one: decode agents (each its own pool and connections).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=64), value_name = "N")]
    pub(crate) decoders: Option<u32>,
    /// Request ids are PREFIX-0, PREFIX-1, ...: give every decode rank of a TP group the same.
    #[arg(long)]
    pub(crate) id_prefix: Option<String>,
    /// The link's rate, to report what share of it the KV path used.
    #[arg(long, value_name = "GBIT/S", conflicts_with = "link_peer")]
    pub(crate) link_gbps: Option<f64>,
    /// Measure the link first: 2 s of TCP from a `linkbench serve` on the prefill node
    /// to here (the KV direction), one stream.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) link_peer: Option<String>,
    // --csv: the summary as one row (--sweep-block: a row per size); --plot: bandwidth
    // and latency against the block size (needs --sweep-block); -q: only the summary
    // lines (--sweep-block: the table alone).
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}

/// Traffic patterns a P/D deployment sees, as nixlbench names them.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// One decode pulls from one prefill.
    Pairwise,
    /// --decoders decode agents pull from the same prefill at once.
    ManyToOne,
    /// One decode pulls from several independent prefills (one per --peer) at once.
    OneToMany,
    /// One decode pulls each request's heads from the TP ranks of one prefill group.
    Tp,
}

/// Most sizes one sweep may hold.
pub(crate) const MAX_SWEEP: usize = 24;

/// The block sizes of a sweep (a newtype: clap would read a bare Vec as many values).
#[derive(Debug, Clone)]
pub(crate) struct Sweep(pub Vec<u64>);

/// `MIN..MAX` (e.g. `1K..64M`): every power of two from MIN to MAX.
pub(crate) fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let (lo, hi) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?}: give a range MIN..MAX, e.g. 1K..64M"))?;
    let (lo, hi) = (cli::size_arg(lo.trim())?, cli::size_arg(hi.trim())?);
    for end in [lo, hi] {
        if !end.is_power_of_two() || !(1024..=KvShape::RAW_MAX).contains(&end) {
            return Err(format!(
                "{end} bytes: sweep ends are powers of two from 1K to {}M",
                KvShape::RAW_MAX >> 20
            ));
        }
    }
    if lo > hi {
        return Err(format!("{text:?}: MIN is above MAX"));
    }
    let sizes: Vec<u64> = (lo.trailing_zeros()..=hi.trailing_zeros())
        .map(|bit| 1u64 << bit)
        .collect();
    if sizes.len() > MAX_SWEEP {
        return Err(format!("{} sizes: at most {MAX_SWEEP}", sizes.len()));
    }
    Ok(Sweep(sizes))
}

pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    if text == "inf" {
        return Ok(f64::INFINITY);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: give requests per second above 0, or inf"
        )),
    }
}

pub(crate) fn parse_dtype(text: &str) -> Result<Dtype, String> {
    Dtype::parse(text)
        .filter(|d| *d != Dtype::I32)
        .ok_or_else(|| format!("{text:?} is not a KV dtype: use bf16, fp16, fp8 or fp32"))
}
