//! `kvxfer`: the prefill-to-decode KV-block path. `prefill` serves a KV pool, `decode`
//! moves one request into a local pool, `bench` drives many requests like
//! `vllm bench serve` does for the KV path. Flag parsing and output live here; the agents
//! are in the `kvcache` crate.
//!
//! Exit codes: 0 done, 1 some requests failed (bench), 2 failed, 64 bad invocation.

mod bench;
mod sweep;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kvcache::decode::{DecodeAgent, DecodeConfig};
use kvcache::prefill::{PrefillAgent, PrefillConfig};
use kvcache::rdma::RdmaOptions;
use kvcache::{Dtype, KvLayout, KvShape, Order};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "kvxfer",
    version,
    about = "Prefill-to-decode KV-block transfers: agents and benchmark."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a KV pool as one prefill rank; runs until killed.
    Prefill(PrefillArgs),
    /// Move one request from the prefill ranks into this node's pool.
    Decode(DecodeArgs),
    /// Move many requests concurrently and report throughput and latency.
    Bench(BenchArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LayoutOrder {
    Nhd,
    Hnd,
}

/// How this rank's KV pool is shaped; both sides must agree on all but TP and size.
#[derive(Args, Debug)]
struct PoolArgs {
    /// Model name or alias from configs/models.
    #[arg(long, default_value = "llama-3.1-8b")]
    model: String,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    block_size: u32,
    /// KV dtype [default: the model's].
    #[arg(long, value_parser = parse_dtype)]
    dtype: Option<Dtype>,
    /// Order inside a block: NHD (token-major, vLLM's default) or HND.
    #[arg(long, value_enum, default_value = "nhd")]
    layout: LayoutOrder,
    /// Tensor-parallel size of this side.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    tp: u32,
    /// This process's TP rank.
    #[arg(long, default_value_t = 0)]
    tp_rank: u32,
    /// Data-parallel rank (prefill: this rank's; decode: the one it pulls from).
    #[arg(long, default_value_t = 0)]
    dp_rank: u32,
    /// Where the pool lives: cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Which RDMA device and GID this side uses (when RDMA is used).
#[derive(Args, Debug)]
struct RdmaArgs {
    /// RDMA device [default: the first with an ACTIVE port].
    #[arg(long, value_name = "NAME")]
    rdma_device: Option<String>,
    /// GID table index [default: NCCL_IB_GID_INDEX, else the best RoCE v2 entry].
    #[arg(long, value_name = "N")]
    gid_index: Option<u32>,
}

impl RdmaArgs {
    fn options(&self) -> RdmaOptions {
        RdmaOptions {
            device: self.rdma_device.clone(),
            gid_index: self.gid_index,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Tcp,
    Rdma,
}

#[derive(Args, Debug)]
struct PrefillArgs {
    #[command(flatten)]
    pool: PoolArgs,
    /// For decode ranks that pull with --transport rdma.
    #[command(flatten)]
    rdma: RdmaArgs,
    /// Address (and port) to listen on [default: the --iface address, else all addresses;
    /// port 18600]. Several, comma-separated: one per rail (NIC); decode stripes each
    /// transfer over all of them.
    #[arg(long, value_name = "ADDR[:PORT][,...]")]
    listen: Option<String>,
    /// Serve on this interface's address; several, comma-separated: one per rail.
    #[arg(long, value_name = "IFACE[,IFACE...]")]
    iface: Option<String>,
    /// Blocks in the pool [default: 2 GiB worth].
    #[arg(long)]
    num_blocks: Option<u32>,
    /// How long a request's blocks are held for decode without a completion notice.
    #[arg(long, default_value = "30s", value_parser = cli::duration_arg, value_name = "DURATION")]
    lease: Duration,
    /// Deadline for each whole operation (a greeting, a wait for free blocks); a pull is bounded by its lease.
    #[arg(long, default_value = "10s", value_parser = cli::duration_arg, value_name = "DURATION")]
    timeout: Duration,
    /// No per-connection log lines.
    #[arg(short, long)]
    quiet: bool,
    /// Most blocks one decode connection may hold in requests it has not completed
    /// [default: half the pool; a connection's first request is always taken].
    #[arg(long, value_name = "BLOCKS", value_parser = clap::value_parser!(u32).range(1..))]
    session_quota: Option<u32>,
    /// Serve raw pools for `kvxfer bench --sweep-block`: one per power-of-two block size
    /// in MIN..MAX, size i on the port + i (model flags do not apply).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_sweep)]
    sweep_block: Option<Sweep>,
    /// With --sweep-block: bytes of each size's pool (at least 4 blocks).
    #[arg(long, default_value = "64M", value_parser = cli::size_arg, value_name = "BYTES")]
    sweep_pool: u64,
}

/// Flags shared by the two decode-side commands.
#[derive(Args, Debug)]
struct PeerArgs {
    #[command(flatten)]
    pool: PoolArgs,
    /// The prefill ranks of one DP rank, comma-separated, any order.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    peer: String,
    /// tcp: prefill streams the blocks; rdma: decode READs them (RC QP, RDMA READ).
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    #[command(flatten)]
    rdma: RdmaArgs,
    /// Blocks in this decode pool [default: enough for the run].
    #[arg(long)]
    num_blocks: Option<u32>,
    /// Also check every byte's content against what prefill wrote (after the timed
    /// transfer; reported as a separate rate).
    #[arg(long)]
    verify: bool,
    /// Skip the per-block CRC32C (on by default: a block counts only if its checksum
    /// matches the sender's).
    #[arg(long)]
    no_checksum: bool,
    /// Use only the --peer connection, even when prefill serves several rails
    /// (by default each pull is striped over every rail prefill announces).
    #[arg(long)]
    no_rails: bool,
    /// Deadline for each whole operation (a prefill, a pull, a wait for free blocks), not per read.
    #[arg(long, default_value = "10s", value_parser = cli::duration_arg, value_name = "DURATION")]
    timeout: Duration,
}

#[derive(Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON)))]
struct DecodeArgs {
    #[command(flatten)]
    peers: PeerArgs,
    #[command(flatten)]
    output: cli::OutputArgs,
    /// The request's id (the same on every decode rank of a TP group).
    #[arg(long)]
    request_id: String,
    /// Prompt length: have prefill prefill it first, then pull its blocks.
    #[arg(long, value_name = "TOKENS")]
    input_len: u64,
    /// Pull these prefill block ids instead of the ones prefill returned (one prefill rank).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    remote_blocks: Option<Vec<u32>>,
    /// Do not ask prefill first: pull --remote-blocks of a request prefilled earlier.
    #[arg(long, requires = "remote_blocks")]
    no_prefill: bool,
    /// Land in these local block ids [default: allocated].
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    local_blocks: Option<Vec<u32>>,
    /// Wait this long between prefill and pull (a decode queue; tests lease expiry).
    #[arg(long, default_value = "0s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pull_after: Duration,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    peers: PeerArgs,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    input_len: u64,
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    num_prompts: u64,
    /// Requests in flight at once, at most (each a worker with its own connections).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Requests per second, arriving as a Poisson process (as vllm bench serve)
    /// [default: inf, all at once, --concurrency at a time].
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    request_rate: Option<f64>,
    /// Seed of the arrival times.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Requests moved first and not counted (connections, page faults).
    #[arg(long, default_value_t = 0, value_name = "N")]
    num_warmups: u64,
    /// nixlbench-style: sweep the block size over powers of two (e.g. 1K..64M) against
    /// a `kvxfer prefill --sweep-block` with the same range (size i on --peer's port + i).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_sweep)]
    sweep_block: Option<Sweep>,
    /// With --sweep-block: blocks per request [default: 16, a 256-token request at vLLM's
    /// block size; 1 measures one block per round trip].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=8192), value_name = "N")]
    batch: Option<u32>,
    /// Traffic pattern [default: pairwise for one --peer, tp for several].
    #[arg(long, value_enum)]
    scheme: Option<Scheme>,
    /// With --scheme many-to-one: decode agents (each its own pool and connections).
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=64), value_name = "N")]
    decoders: Option<u32>,
    /// Request ids are PREFIX-0, PREFIX-1, ...: give every decode rank of a TP group the same.
    #[arg(long)]
    id_prefix: Option<String>,
    /// The link's rate, to report what share of it the KV path used.
    #[arg(long, value_name = "GBIT/S", conflicts_with = "link_peer")]
    link_gbps: Option<f64>,
    /// Measure the link first: 2 s of TCP from a `linkbench serve` on the prefill node
    /// to here (the KV direction), one stream.
    #[arg(long, value_name = "HOST[:PORT]")]
    link_peer: Option<String>,
    // --csv: the summary as one row (--sweep-block: a row per size); --plot: bandwidth
    // and latency against the block size (needs --sweep-block); -q: only the summary
    // lines (--sweep-block: the table alone).
    #[command(flatten)]
    output: cli::OutputArgs,
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
const MAX_SWEEP: usize = 24;

/// The block sizes of a sweep (a newtype: clap would read a bare Vec as many values).
#[derive(Debug, Clone)]
pub(crate) struct Sweep(pub Vec<u64>);

/// `MIN..MAX` (e.g. `1K..64M`): every power of two from MIN to MAX.
fn parse_sweep(text: &str) -> Result<Sweep, String> {
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

fn parse_rate(text: &str) -> Result<f64, String> {
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

fn parse_dtype(text: &str) -> Result<Dtype, String> {
    Dtype::parse(text)
        .filter(|d| *d != Dtype::I32)
        .ok_or_else(|| format!("{text:?} is not a KV dtype: use bf16, fp16, fp8 or fp32"))
}

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::ListenPort, "--listen"),
    (measure::Setting::GidIndex, "--gid-index"),
    (measure::Setting::SendQueueDepth, "--tx-depth"),
    (measure::Setting::TcpTransport, "--transport tcp"),
    (measure::Setting::PoolBlocks, "--num-blocks"),
    (measure::Setting::BlockSize, "--block-size"),
    (measure::Setting::KvDtype, "--dtype"),
    (measure::Setting::Model, "--model"),
    (measure::Setting::KvLayout, "--layout"),
    (measure::Setting::PrefillAddress, "--peer"),
    (measure::Setting::DpRank, "--dp-rank"),
];

fn main() -> std::process::ExitCode {
    cli::main("kvxfer", FLAGS, |cli: Cli| match cli.command {
        Command::Prefill(args) if args.sweep_block.is_some() => sweep::prefill(args),
        Command::Prefill(args) => prefill(args),
        Command::Decode(args) => decode(args).map_err(rdma_hint),
        Command::Bench(args) => bench::run(args).map_err(rdma_hint),
    })
}

/// RDMA missing here: the library says why; the tool adds its own way around it.
fn rdma_hint(error: anyhow::Error) -> anyhow::Error {
    use fabric::FabricError::RdmaUnavailable;
    let unavailable = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<kvcache::KvError>(),
            Some(kvcache::KvError::Fabric(RdmaUnavailable(_)))
        ) || matches!(
            cause.downcast_ref::<fabric::FabricError>(),
            Some(RdmaUnavailable(_))
        )
    });
    if unavailable {
        anyhow::anyhow!("{}, or use --transport tcp", cli::sentence(&error))
    } else {
        error
    }
}

fn check_device(device: &str) -> anyhow::Result<()> {
    if device == "cpu" {
        return Ok(());
    }
    let Some(index) =
        device
            .strip_prefix("cuda:")
            .or(if device == "cuda" { Some("0") } else { None })
    else {
        return Err(cli::usage(format!("--device {device}: use cpu or cuda:N")));
    };
    if index.parse::<u32>().is_err() {
        return Err(cli::usage(format!("--device {device}: use cpu or cuda:N")));
    }
    if probe::read_gpus(std::path::Path::new("/")).gpus.is_empty() {
        anyhow::bail!(
            "--device {device}: no NVIDIA GPU on this node (/proc/driver/nvidia/gpus is empty or missing); use --device cpu"
        );
    }
    anyhow::bail!(
        "--device {device}: GPU-resident KV pools are not implemented in this build (host pools only); use --device cpu"
    )
}

fn shape(pool: &PoolArgs) -> anyhow::Result<KvShape> {
    let model = model::find_model(&model::configs_dir(), &pool.model)
        .map_err(|e| cli::usage(e.to_string()))?;
    let order = match pool.layout {
        LayoutOrder::Nhd => Order::Nhd,
        LayoutOrder::Hnd => Order::Hnd,
    };
    KvShape::from_model(&model, pool.dtype, pool.block_size, order)
        .map_err(|e| cli::usage(e.to_string()))
}

fn layout(pool: &PoolArgs, num_blocks: u32) -> anyhow::Result<KvLayout> {
    if pool.tp_rank >= pool.tp {
        return Err(cli::usage(format!(
            "--tp-rank {} with --tp {}: ranks run from 0 to {}",
            pool.tp_rank,
            pool.tp,
            pool.tp - 1
        )));
    }
    check_device(&pool.device)?;
    KvLayout::new(shape(pool)?, pool.tp, pool.tp_rank, num_blocks)
        .map_err(|e| cli::usage(e.to_string()))
}

pub(crate) fn token() -> anyhow::Result<Option<Vec<u8>>> {
    fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))
}

/// The prefill agent's settings from the flags; `rails`: every rail's address, if several.
pub(crate) fn prefill_config(
    args: &PrefillArgs,
    token: Option<Vec<u8>>,
    rails: Vec<SocketAddr>,
) -> PrefillConfig {
    PrefillConfig {
        dp_rank: args.pool.dp_rank,
        lease: args.lease,
        io_timeout: args.timeout,
        idle_timeout: kvcache::prefill::DEFAULT_IDLE_TIMEOUT,
        token,
        rdma: args.rdma.options(),
        rails,
        session_quota: args.session_quota,
        log: if args.quiet {
            cli::no_log()
        } else {
            std::sync::Arc::new(log_line)
        },
    }
}

fn log_line(line: &str) {
    eprintln!("kvxfer prefill: {}", measure::name_flags(line, FLAGS));
}

fn prefill(args: PrefillArgs) -> anyhow::Result<u8> {
    if args.lease.is_zero() {
        return Err(cli::usage(
            "--lease 0s would free every request before decode could pull it: give a lease of at least 1ms",
        ));
    }
    if args.timeout.is_zero() {
        return Err(cli::usage("--timeout 0s: give a timeout of at least 1ms"));
    }
    let shape = shape(&args.pool)?;
    let probe = KvLayout::new(
        shape,
        args.pool.tp,
        args.pool.tp_rank.min(args.pool.tp - 1),
        1,
    )
    .map_err(|e| cli::usage(e.to_string()))?;
    let default_blocks =
        ((2u64 << 30) / probe.block_bytes_all_layers()).clamp(1, u32::MAX as u64) as u32;
    let layout = layout(&args.pool, args.num_blocks.unwrap_or(default_blocks))?;
    let addrs = listen_addresses(args.listen.as_deref(), args.iface.as_deref())?;
    let token = token()?;
    let auth = if token.is_some() {
        "NODELINK_TOKEN required"
    } else {
        "no authentication"
    };
    let (model, tp_rank, tp, num_blocks) = (
        layout.shape.model.clone(),
        layout.tp_rank,
        layout.tp,
        layout.num_blocks,
    );
    let description = format!(
        "{} blocks x {} = {} ({} {}, block {} tokens)",
        layout.num_blocks,
        measure::format_bytes(layout.block_bytes_all_layers()),
        measure::format_bytes(layout.pool_bytes()),
        layout.shape.dtype.name(),
        layout.shape.order.name(),
        layout.shape.block_size,
    );
    // Bind first (a bad address or a port in use fails before the pool is committed),
    // commit (and for RDMA register) the pool, and only then listen: a decode that
    // connects during a commit of several GB is refused at once, not left waiting for a
    // greeting that cannot come until the commit ends.
    let sockets = addrs
        .iter()
        .map(|&addr| fabric::tcp::bind(addr, None))
        .collect::<Result<Vec<_>, _>>()?;
    let bound = sockets
        .iter()
        .map(fabric::tcp::Bound::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let agent = PrefillAgent::new(
        layout,
        prefill_config(
            &args,
            token,
            if bound.len() > 1 {
                bound.clone()
            } else {
                Vec::new()
            },
        ),
    )?;
    let shown: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let bound = if shown.len() > 1 {
        format!("{} ({} rails)", shown.join(", "), shown.len())
    } else {
        shown.join(", ")
    };
    let rdma = match agent.rdma_status() {
        Ok(()) => "RDMA and TCP".to_string(),
        Err(why) => format!("TCP only: {why}"),
    };
    let listeners = sockets
        .into_iter()
        .map(fabric::tcp::Bound::listen)
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "kvxfer prefill: ready: listening on {bound} ({auth}; {rdma}): {model}, TP rank {tp_rank} of {tp}, DP rank {}, {description}; pool of {num_blocks} blocks committed in {:.2} s",
        args.pool.dp_rank,
        agent.commit_time().as_secs_f64(),
    );
    if addrs.iter().any(|a| a.ip().is_unspecified()) {
        eprintln!("kvxfer prefill: serving on all addresses: pass --iface or --listen to restrict");
    }
    agent.serve_all(listeners)?;
    Ok(cli::exit::OK)
}

/// Every address to listen on: one per rail when `--listen` or `--iface` lists several.
pub(crate) fn listen_addresses(
    listen: Option<&str>,
    iface: Option<&str>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let listens: Vec<&str> = listen.map_or(Vec::new(), |l| l.split(',').map(str::trim).collect());
    let ifaces: Vec<&str> = iface.map_or(Vec::new(), |i| i.split(',').map(str::trim).collect());
    if listens.len() > 1 || ifaces.len() > 1 {
        if !listens.is_empty() && !ifaces.is_empty() {
            return Err(cli::usage(
                "rails: give --listen ADDR,ADDR or --iface IFACE,IFACE, not both",
            ));
        }
        let addrs = if listens.is_empty() {
            ifaces
                .iter()
                .map(|i| listen_address(None, Some(i)))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            listens
                .iter()
                .map(|l| listen_address(Some(l), None))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        if let Some(bad) = addrs.iter().find(|a| a.ip().is_unspecified()) {
            return Err(cli::usage(format!(
                "rail address {bad}: each rail listens on its own NIC's address, not on all addresses"
            )));
        }
        for (i, a) in addrs.iter().enumerate() {
            if addrs[..i].contains(a) {
                return Err(cli::usage(format!("rail address {a} given twice")));
            }
        }
        if addrs.len() > kvcache::rails::MAX_RAILS {
            return Err(cli::usage(format!(
                "{} rails: at most {}",
                addrs.len(),
                kvcache::rails::MAX_RAILS
            )));
        }
        return Ok(addrs);
    }
    Ok(vec![listen_address(listen, iface)?])
}

/// `--listen`, else the `--iface` address, else all addresses; port 18600 unless given.
fn listen_address(listen: Option<&str>, iface: Option<&str>) -> anyhow::Result<SocketAddr> {
    use fabric::tcp::IfaceAddress;
    if let Some(listen) = listen {
        let addr = fabric::tcp::resolve_peer(listen, kvcache::DEFAULT_PORT)
            .map_err(|e| cli::usage(format!("--listen {listen}: {e}")))?;
        if let Some(iface) = iface {
            // Both given: they must agree; the interface used to be ignored silently.
            let on_iface = fabric::tcp::iface_addresses(iface)?;
            if !on_iface.contains(&addr.ip()) {
                return Err(cli::usage(format!(
                    "--listen {listen} is not on --iface {iface} (it has {}): give one of the two, or an address of that interface",
                    if on_iface.is_empty() { "no address".to_string() } else {
                        on_iface.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                )));
            }
        }
        return Ok(addr);
    }
    let ip = match iface {
        None => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(iface) => match fabric::tcp::iface_address(iface)? {
            IfaceAddress::Found(ip) => ip,
            IfaceAddress::NoAddress => {
                anyhow::bail!("interface {iface} has no IP address: add one, or pass --listen")
            }
            IfaceAddress::NoSuchInterface => {
                return Err(cli::usage(format!(
                    "no interface named {iface} (see `ip -br addr`)"
                )))
            }
        },
    };
    Ok(SocketAddr::new(ip, kvcache::DEFAULT_PORT))
}

/// Resolves `--peer` and attaches to every prefill rank.
fn decode_agent(peers: &PeerArgs, num_blocks: u32) -> anyhow::Result<std::sync::Arc<DecodeAgent>> {
    let layout = layout(&peers.pool, peers.num_blocks.unwrap_or(num_blocks))?;
    let addrs = peer_addresses(peers)?;
    decode_agent_on(layout, addrs, peers)
}

/// `--peer`'s addresses, in the order given.
pub(crate) fn peer_addresses(peers: &PeerArgs) -> anyhow::Result<Vec<SocketAddr>> {
    peers
        .peer
        .split(',')
        .map(|p| {
            fabric::tcp::resolve_peer(p.trim(), kvcache::DEFAULT_PORT)
                .map_err(|e| cli::usage(format!("--peer {p}: {e}")))
        })
        .collect()
}

/// A decode agent with this pool `layout`, attached to `addrs`.
pub(crate) fn decode_agent_on(
    layout: KvLayout,
    addrs: Vec<SocketAddr>,
    peers: &PeerArgs,
) -> anyhow::Result<std::sync::Arc<DecodeAgent>> {
    Ok(DecodeAgent::new(
        layout,
        DecodeConfig {
            peers: addrs,
            dp_rank: peers.pool.dp_rank,
            token: token()?,
            timeout: peers.timeout,
            checksums: !peers.no_checksum,
            verify: peers.verify,
            rails: !peers.no_rails,
            rdma: (peers.transport == Transport::Rdma).then(|| peers.rdma.options()),
        },
    )?)
}

/// Blocks a request of `tokens` tokens needs at `block_size`.
fn blocks_for(tokens: u64, block_size: u32) -> anyhow::Result<u32> {
    u32::try_from(tokens.div_ceil(block_size as u64))
        .map_err(|_| cli::usage(format!("--input-len {tokens} is too long")))
}

fn decode(args: DecodeArgs) -> anyhow::Result<u8> {
    args.output.resolve("kvxfer decode", cli::Honours::JSON)?;
    let needed = blocks_for(args.input_len, args.peers.pool.block_size)?;
    let local_needed = args
        .local_blocks
        .as_ref()
        .and_then(|b| b.iter().max().map(|m| m + 1))
        .unwrap_or(0)
        .max(needed);
    let agent = decode_agent(&args.peers, local_needed)?;
    if args.remote_blocks.is_some() && agent.sources().len() != 1 {
        return Err(cli::usage(
            "--remote-blocks names one prefill rank's blocks, but this decode rank reads several: drop it",
        ));
    }
    let mut links = agent.links();
    let result = (|| -> Result<kvcache::decode::Transferred, kvcache::KvError> {
        if args.no_prefill {
            let remote = vec![args.remote_blocks.clone().unwrap_or_default()];
            return agent.pull_request(
                &mut links,
                &args.request_id,
                &remote,
                args.local_blocks.as_deref(),
            );
        }
        if args.remote_blocks.is_none() && args.local_blocks.is_none() {
            return agent.transfer(
                &mut links,
                &args.request_id,
                args.input_len,
                args.pull_after,
            );
        }
        // Explicit ids: prefill first (to get a lease), then pull what was asked.
        let mut remote = Vec::new();
        let prefilled = agent.prefill_all(&mut links, &args.request_id, args.input_len)?;
        for blocks in prefilled {
            remote.push(args.remote_blocks.clone().unwrap_or(blocks));
        }
        std::thread::sleep(args.pull_after);
        agent.pull_request(
            &mut links,
            &args.request_id,
            &remote,
            args.local_blocks.as_deref(),
        )
    })();
    links.close();
    let done = result?;
    let gbps = done.bytes as f64 * 8.0 / done.transfer.as_secs_f64().max(1e-9) / 1e9;
    if args.output.json {
        let doc = serde_json::json!({
            "request_id": args.request_id,
            "bytes": done.bytes,
            "transfer_ms": done.transfer.as_secs_f64() * 1e3,
            "throughput_gbps": gbps,
            "checksums": !args.peers.no_checksum,
            "verified": args.peers.verify,
            "verify_ms": done.verify.as_secs_f64() * 1e3,
        });
        measure::record::print_json("kvxfer", "decode", &doc)?;
    } else {
        println!(
            "request {}: {} in {:.3} ms ({:.2} Gbit/s){}",
            args.request_id,
            measure::format_bytes(done.bytes),
            done.transfer.as_secs_f64() * 1e3,
            gbps,
            match (args.peers.verify, args.peers.no_checksum) {
                (true, _) => format!(
                    ", content verified in {:.3} ms",
                    done.verify.as_secs_f64() * 1e3
                ),
                (false, false) => ", checksums matched".into(),
                (false, true) => String::new(),
            }
        );
    }
    Ok(cli::exit::OK)
}
