//! collbench: nccl-tests for any node. Resolves who this rank is (flags or the launcher's
//! environment), joins the job, runs the sweep through the collective harness, and prints
//! nccl-tests' columns (rank 0 only) or one JSON document.

mod shaped;
mod synthetic;

use anyhow::Context;
use clap::Parser;
use collective::{avg_busbw, ops, BootstrapFlags, Communicator, Dtype, RedOp, Row, RunConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Collective benchmarks (all_reduce, all_gather, reduce_scatter, broadcast, reduce,
/// alltoall, sendrecv) with nccl-tests semantics: algbw = size/time, busbw = algbw x factor.
/// Without a subcommand: the size sweep (the flags below). `collbench synthetic-step` and
/// `collbench model` take their own flags (see their --help).
///
/// Ranks: --ranks N runs N ranks as threads here; --rank/--world/--master, or torchrun,
/// Slurm, Open MPI, PMI or LeaderWorkerSet variables, run one rank per process.
#[derive(Parser, Debug)]
#[command(name = "collbench", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    sweep: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Time a synthetic decode step shaped like vLLM's: per layer, busy compute then two
    /// all-reduces of batch x hidden bf16; with --pp, a pipeline of stages with
    /// hidden-state handovers and a driver on rank 0.
    SyntheticStep(StepArgs),
    /// Run a model's tensor-parallel all-reduces (--tp) or pipeline sends (--pp) at the
    /// sizes a serving step puts on the network, priced per step.
    Model(ModelArgs),
}

/// Who the ranks are: the same in every mode.
#[derive(clap::Args, Debug, Clone)]
pub struct JobArgs {
    /// Run N ranks as threads in this process, over loopback.
    #[arg(long, value_name = "N")]
    ranks: Option<usize>,
    /// This process's rank (with --world and --master).
    #[arg(long)]
    rank: Option<usize>,
    /// Number of ranks in the job.
    #[arg(long)]
    world: Option<usize>,
    /// Rank 0's rendezvous address HOST:PORT (default port 29500).
    #[arg(long, value_name = "HOST:PORT")]
    master: Option<String>,
    /// Longest wait for a rank, at rendezvous and during collectives.
    #[arg(long, default_value = "30s", value_parser = cli::duration_arg)]
    timeout: Duration,
}

/// What `synthetic-step` and `model` run per batch size. They print a table (`-q`: the
/// summary line alone) or JSON; no CSV or chart.
#[derive(clap::Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON_QUIET)))]
pub struct RunArgs {
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    batch: Vec<u64>,
    /// Timed iterations: steps, or runs per message size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    iters: usize,
    /// Warm-up iterations.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: usize,
    #[command(flatten)]
    output: cli::OutputArgs,
}

impl RunArgs {
    /// Checks the output flags for `mode` and hands the rest to the shared job flags.
    fn fill(self, mode: &str, args: &mut Args) -> anyhow::Result<()> {
        self.output.resolve(mode, cli::Honours::JSON_QUIET)?;
        (args.batch, args.iters) = (self.batch, self.iters);
        (args.warmup, args.output) = (self.warmup, self.output);
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub struct StepArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Layers per step.
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// Hidden size.
    #[arg(long, default_value_t = 4096)]
    hidden: u64,
    /// Busy compute per layer, microseconds.
    #[arg(long, default_value_t = 200.0)]
    compute_us: f64,
    /// Ranks per stage [default: the world / --pp].
    #[arg(long)]
    tp: Option<usize>,
    /// Pipeline stages (world = tp x pp).
    #[arg(long)]
    pp: Option<usize>,
    /// Micro-batches in flight, 1 to --pp [default: min(--pp, batch), as vLLM].
    #[arg(long, value_name = "K")]
    micro_batches: Option<usize>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Model whose messages to run (configs/models/*.toml).
    #[arg(long)]
    model: String,
    /// Tensor-parallel group size (the job's world must equal it).
    #[arg(long)]
    tp: Option<usize>,
    /// Pipeline stages (the job's world must equal it when --tp is not given).
    #[arg(long)]
    pp: Option<usize>,
    /// decode (tokens = batch) or prefill (tokens = batch x --input-len).
    #[arg(long, default_value = "decode")]
    phase: String,
    /// Prompt length for --phase prefill.
    #[arg(long, default_value_t = 2000)]
    input_len: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// The size sweep's flags; the other modes fill the fields they use (the rest keep
/// their defaults) and run on the same plumbing.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// tcp (CPU ring over TCP, runs anywhere) or nccl (GPUs).
    #[arg(long, default_value = "tcp")]
    backend: String,
    /// all_reduce, all_gather, reduce_scatter, broadcast, reduce, alltoall, sendrecv.
    #[arg(long, default_value = "all_reduce")]
    op: String,
    /// Smallest size (bytes; 4K, 1M ...).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = cli::size_arg)]
    min_bytes: u64,
    /// Largest size.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = cli::size_arg)]
    max_bytes: u64,
    /// Multiplication factor between sizes.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    step_factor: u64,
    /// Fixed increment between sizes (instead of -f).
    #[arg(short = 'i', long = "stepbytes", value_parser = cli::size_arg)]
    step_bytes: Option<u64>,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    iters: usize,
    /// Warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: usize,
    /// f32, f16, bf16 or i32.
    #[arg(short = 'd', long = "datatype", default_value = "f32")]
    dtype: String,
    /// sum, max or min.
    #[arg(short = 'o', long = "op_reduce", default_value = "sum")]
    redop: String,
    /// Root rank for broadcast and reduce.
    #[arg(short = 'r', long, default_value_t = 0)]
    root: usize,
    /// Check results (1) or not (0).
    #[arg(short = 'c', long, default_value_t = 1)]
    check: u8,
    /// Add per-iteration p50/p99 (rank 0) columns.
    #[arg(long)]
    percentiles: bool,
    #[command(flatten)]
    job: JobArgs,
    // Filled by `synthetic-step` and `model`; not flags of the sweep.
    #[arg(skip = 8u64)]
    layers: u64,
    #[arg(skip = 4096u64)]
    hidden: u64,
    #[arg(skip = 200.0)]
    compute_us: f64,
    #[arg(skip)]
    model: Option<String>,
    #[arg(skip)]
    tp: Option<usize>,
    #[arg(skip)]
    pp: Option<usize>,
    #[arg(skip)]
    micro_batches: Option<usize>,
    #[arg(skip = String::from("decode"))]
    phase: String,
    #[arg(skip = vec![1u64, 8, 32, 128])]
    batch: Vec<u64>,
    #[arg(skip = 2000u64)]
    input_len: u64,
    /// GPU ordinal for --backend nccl [default: LOCAL_RANK (or rank) modulo the GPU count].
    #[arg(long)]
    device: Option<usize>,
    /// Path of libnccl.so.2 for --backend nccl.
    #[arg(long, value_name = "PATH")]
    nccl_lib: Option<PathBuf>,
    // -q: only the summary lines (out-of-bounds count, average bus bandwidth).
    #[command(flatten)]
    output: cli::OutputArgs,
}

impl Args {
    /// The sweep's defaults, for the modes that fill in only what they use.
    fn defaults(job: JobArgs) -> anyhow::Result<Args> {
        let mut args = Cli::try_parse_from(["collbench"])?.sweep;
        args.job = job;
        Ok(args)
    }
}

impl StepArgs {
    fn into_args(self) -> anyhow::Result<Args> {
        const MODE: &str = "collbench synthetic-step";
        let mut args = Args::defaults(self.job)?;
        (args.layers, args.hidden, args.compute_us) = (self.layers, self.hidden, self.compute_us);
        (args.tp, args.pp, args.micro_batches) = (self.tp, self.pp, self.micro_batches);
        self.run.fill(MODE, &mut args)?;
        Ok(args)
    }
}

impl ModelArgs {
    fn into_args(self) -> anyhow::Result<Args> {
        const MODE: &str = "collbench model";
        let mut args = Args::defaults(self.job)?;
        (args.model, args.tp, args.pp) = (Some(self.model), self.tp, self.pp);
        (args.phase, args.input_len) = (self.phase, self.input_len);
        self.run.fill(MODE, &mut args)?;
        Ok(args)
    }
}

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::Master, "--master"),
    (measure::Setting::Rank, "--rank"),
    (measure::Setting::WorldSize, "--world"),
    (measure::Setting::TcpTransport, "--backend tcp"),
    (measure::Setting::NcclLibrary, "--nccl-lib"),
];

fn main() -> std::process::ExitCode {
    cli::main("collbench", FLAGS, run)
}

/// The job as resolved from flags and the environment.
pub struct Job {
    pub local_ranks: Option<usize>,
    pub boot: Option<collective::Bootstrap>,
}

fn resolve_job(args: &JobArgs) -> anyhow::Result<Job> {
    let flags = BootstrapFlags {
        rank: args.rank,
        world: args.world,
        master: args.master.clone(),
    };
    if let Some(n) = args.ranks {
        if args.rank.is_some() || args.world.is_some() {
            return Err(cli::usage("--ranks runs every rank in this process; it cannot be combined with --rank/--world"));
        }
        if n == 0 || n > 64 {
            return Err(cli::usage(format!("--ranks {n}: pass 1..64")));
        }
        return Ok(Job {
            local_ranks: Some(n),
            boot: None,
        });
    }
    let boot = collective::rendezvous::resolve(&flags, |k| std::env::var(k).ok())
        .map_err(|e| cli::usage(e.to_string()))?;
    Ok(Job {
        local_ranks: if boot.is_none() { Some(1) } else { None },
        boot,
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.mode {
        None => sweep(cli.sweep),
        Some(Mode::SyntheticStep(step)) => {
            let args = step.into_args()?;
            let job = resolve_job(&args.job)?;
            synthetic::run(&args, &job)
        }
        Some(Mode::Model(model)) => {
            let args = model.into_args()?;
            let job = resolve_job(&args.job)?;
            shaped::run(&args, &job)
        }
    }
}

fn sweep(args: Args) -> anyhow::Result<u8> {
    let op = ops::by_name(&args.op).ok_or_else(|| {
        let known: Vec<&str> = ops::all().iter().map(|c| c.name()).collect();
        cli::usage(format!(
            "--op {}: unknown operation; choose one of {}",
            args.op,
            known.join(", ")
        ))
    })?;
    let dtype = Dtype::parse(&args.dtype)
        .filter(|d| collective::dtype::is_supported(*d))
        .ok_or_else(|| {
            cli::usage(format!(
                "-d {}: not a collective datatype; choose float, half, bfloat16 or int32 (or fp32, fp16, bf16, i32)",
                args.dtype
            ))
        })?;
    let redop = RedOp::parse(&args.redop).ok_or_else(|| {
        cli::usage(format!(
            "-o {}: unknown reduction; choose sum, max or min",
            args.redop
        ))
    })?;
    if args.iters == 0 {
        return Err(cli::usage("-n 0: at least one timed iteration is needed"));
    }
    if args.min_bytes > args.max_bytes {
        return Err(cli::usage(format!(
            "-b {} is larger than -e {}: the sweep would be empty",
            args.min_bytes, args.max_bytes
        )));
    }
    if args.step_factor < 2 && args.step_bytes.is_none() {
        return Err(cli::usage(format!(
            "-f {}: the step factor multiplies each size, so it must be 2 or more (or step by bytes with -i)",
            args.step_factor
        )));
    }
    if args.step_bytes == Some(0) {
        return Err(cli::usage(
            "-i 0: the step must be at least one byte (or leave -i out and step by -f)",
        ));
    }
    args.output.resolve("collbench", cli::Honours::ALL)?;
    let job = resolve_job(&args.job)?;
    // Each rank in this process holds about three buffers of the largest size (work,
    // source, check): refuse a sweep that cannot fit before allocating any of it.
    let local = job.local_ranks.unwrap_or(1) as u64;
    cli::check_fits("-e", args.max_bytes, 3 * local)?;
    let nccl = match args.backend.as_str() {
        "tcp" => None,
        "nccl" => {
            let site = python_site_packages();
            let ld_path = std::env::var("LD_LIBRARY_PATH").ok();
            let dirs = collective::nccl::search_dirs(ld_path.as_deref(), &site);
            let root = std::path::Path::new("/");
            let library =
                collective::nccl::check_environment(args.nccl_lib.as_deref(), &dirs, root)
                    .map_err(anyhow::Error::msg)?;
            Some(collective::nccl::NcclLib::open(&library).map_err(anyhow::Error::msg)?)
        }
        other => return Err(cli::usage(format!("--backend {other}: choose tcp or nccl"))),
    };
    let config = RunConfig {
        op,
        dtype,
        redop,
        root: args.root,
        sizes: collective::sweep(
            args.min_bytes,
            args.max_bytes,
            args.step_factor,
            args.step_bytes.unwrap_or(0),
        ),
        iters: args.iters,
        warmup: args.warmup,
        check: args.check != 0,
    };
    let body =
        |comm: &mut Communicator| -> Result<(Vec<Row>, usize, usize), collective::CollError> {
            let printing = comm.rank == 0 && !args.output.json && !args.output.quiet;
            if printing {
                print_header(&args, op, comm.world, config.iters, config.warmup);
            }
            let print = |row: &Row| {
                if printing {
                    print_row(row, args.percentiles);
                }
            };
            let rows = match &nccl {
                Some(lib) => collective::nccl::run(comm, lib, args.device, &config, print)?,
                None => collective::run(comm, &config, print)?,
            };
            Ok((rows, comm.rank, comm.world))
        };
    let (rows, rank, world) = on_ranks(&job, args.job.timeout, body)?;
    if rank != 0 {
        return Ok(if rows.iter().any(|r| r.wrong + r.in_place.wrong > 0) {
            cli::exit::FAIL
        } else {
            cli::exit::OK
        });
    }
    let wrong: u64 = rows.iter().map(|r| r.wrong + r.in_place.wrong).sum();
    let average = avg_busbw(&rows);
    // Results first: a file that fails to write must not take the printed rows with it.
    if args.output.json {
        let sweep = measure::record::CollectiveSweep {
            op: op.name().to_string(),
            backend: args.backend.clone(),
            world: world as u64,
            dtype,
            redop: op.has_redop().then_some(redop),
            rows: rows.clone(),
            avg_busbw_gbs: average,
            wrong,
        };
        measure::record::print_json("collbench", "sweep", &sweep)?;
    } else {
        println!(
            "# Out of bounds values : {wrong} {}",
            if wrong == 0 { "OK" } else { "FAILED" }
        );
        println!("# Avg bus bandwidth    : {average:.4} GB/s");
    }
    if let Some(path) = &args.output.csv {
        write_csv(path, &rows).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.output.plot {
        let series = |name: &str, pick: fn(&Row) -> f64| measure::Series {
            name: name.to_string(),
            points: rows.iter().map(|r| (r.bytes as f64, pick(r))).collect(),
        };
        let chart = measure::Chart {
            title: format!(
                "{} busbw, {world} ranks, {} backend",
                op.name(),
                args.backend
            ),
            x_label: "message size (bytes)".into(),
            y_label: "bus bandwidth (GB/s, 1e9 B/s)".into(),
            x_log2_bytes: true,
            secondary: None,
            series: vec![
                series("out-of-place", |r| r.busbw_gbs),
                series("in-place", |r| r.in_place.busbw_gbs),
            ],
        };
        measure::write_chart(path, &chart)?;
    }
    if wrong > 0 {
        anyhow::bail!("{wrong} output elements were wrong: the transport corrupted data or ranks disagree on the operation");
    }
    Ok(cli::exit::OK)
}

/// Runs `body` on every local rank (threads) or on this process's rank; returns rank 0's
/// result (or this rank's, in a multi-process job).
pub fn on_ranks<T: Send>(
    job: &Job,
    timeout: Duration,
    body: impl Fn(&mut Communicator) -> Result<T, collective::CollError> + Sync,
) -> anyhow::Result<T> {
    if let Some(n) = job.local_ranks {
        let results = collective::run_local(n, timeout, body)?;
        return results.into_iter().next().context("no ranks ran");
    }
    let boot = job.boot.as_ref().context("no bootstrap")?;
    let token = fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))?;
    if boot.rank == 0 {
        eprintln!(
            "collbench: rank 0: rendezvous on {} for {} ranks ({})",
            boot.master,
            boot.world,
            if token.is_some() {
                "NODELINK_TOKEN required"
            } else {
                "no authentication"
            }
        );
    }
    let mut comm = Communicator::join(
        boot,
        timeout,
        None,
        token.as_deref(),
        &cli::log_to_stderr("collbench"),
    )
    .with_context(|| {
        format!(
            "rank {} of {} joining via {} ({})",
            boot.rank, boot.world, boot.master, boot.source
        )
    })?;
    let rank = boot.rank;
    body(&mut comm).with_context(|| format!("rank {rank}"))
}

fn print_header(
    args: &Args,
    op: &dyn collective::ops::Collective,
    world: usize,
    iters: usize,
    warmup: usize,
) {
    println!(
        "# collbench {}: {} over backend {}, {world} ranks; iters {iters}, warmup {warmup}, check {} (times: CUDA events for nccl, wall clock for tcp)",
        env!("CARGO_PKG_VERSION"),
        op.name(),
        args.backend,
        if args.check != 0 { "on" } else { "off" }
    );
    println!(
        "# GB/s = 1e9 bytes/s; algbw = size/time; busbw = algbw x {:.3} for {world} ranks",
        op.bus_factor(world)
    );
    println!("#");
    let extra = if args.percentiles {
        "   p50(us)   p99(us)"
    } else {
        ""
    };
    println!("# {:>62}{:>36}", "out-of-place", "in-place");
    println!(
        "# {:>10} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}{extra}",
        "size",
        "count",
        "type",
        "redop",
        "root",
        "time",
        "algbw",
        "busbw",
        "#wrong",
        "time",
        "algbw",
        "busbw",
        "#wrong"
    );
    println!(
        "# {:>10} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}",
        "(B)",
        "(elements)",
        "",
        "",
        "",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        "",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        ""
    );
}

fn print_row(row: &Row, percentiles: bool) {
    let mut line = format!(
        "  {:>10} {:>12} {:>9} {:>6} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6}",
        row.bytes,
        row.count,
        row.dtype_name(),
        row.redop.map_or("none", |r| r.name()),
        row.root,
        row.time_us,
        row.algbw_gbs,
        row.busbw_gbs,
        row.wrong,
        row.in_place.time_us,
        row.in_place.algbw_gbs,
        row.in_place.busbw_gbs,
        row.in_place.wrong
    );
    if percentiles {
        line.push_str(&format!(" {:>9.2} {:>9.2}", row.p50_us, row.p99_us));
    }
    println!("{line}");
}

fn write_csv(path: &std::path::Path, rows: &[Row]) -> std::io::Result<()> {
    let mut table = measure::Table::new([
        "bytes",
        "count",
        "dtype",
        "redop",
        "root",
        "time_us",
        "algbw_gbs",
        "busbw_gbs",
        "wrong",
        "in_place_time_us",
        "in_place_algbw_gbs",
        "in_place_busbw_gbs",
        "in_place_wrong",
        "p50_us",
        "p99_us",
    ]);
    for r in rows {
        table.push([
            r.bytes.to_string(),
            r.count.to_string(),
            r.dtype_name().to_string(),
            r.redop.map_or("none", |o| o.name()).to_string(),
            r.root.to_string(),
            format!("{:.3}", r.time_us),
            format!("{:.6}", r.algbw_gbs),
            format!("{:.6}", r.busbw_gbs),
            r.wrong.to_string(),
            format!("{:.3}", r.in_place.time_us),
            format!("{:.6}", r.in_place.algbw_gbs),
            format!("{:.6}", r.in_place.busbw_gbs),
            r.in_place.wrong.to_string(),
            format!("{:.3}", r.p50_us),
            format!("{:.3}", r.p99_us),
        ]);
    }
    measure::write_csv(path, &table)
}

/// Python site-packages directories (for the nvidia-nccl-cu12 wheel); empty without python.
fn python_site_packages() -> Vec<PathBuf> {
    std::process::Command::new("python3")
        .args(["-c", "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))"])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect())
        .unwrap_or_default()
}
