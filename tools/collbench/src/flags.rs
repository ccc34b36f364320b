//! collbench's flags: the sweep's (nccl-tests') and each subcommand's.

use clap::Parser;
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
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) mode: Option<Mode>,
    #[command(flatten)]
    pub(crate) sweep: Args,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Mode {
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
pub(crate) struct JobArgs {
    /// Run N ranks as threads in this process, over loopback.
    #[arg(long, value_name = "N")]
    pub(crate) ranks: Option<usize>,
    /// This process's rank (with --world and --master).
    #[arg(long)]
    pub(crate) rank: Option<usize>,
    /// Number of ranks in the job.
    #[arg(long)]
    pub(crate) world: Option<usize>,
    /// Rank 0's rendezvous address HOST:PORT (default port 29500).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) master: Option<String>,
    /// Longest wait for a rank, at rendezvous and during collectives.
    #[arg(long, default_value = "30s", value_parser = cli::duration_arg)]
    pub(crate) timeout: Duration,
}

/// What `synthetic-step` and `model` run per batch size. They print a table (`-q`: the
/// summary line alone) or JSON; no CSV or chart.
#[derive(clap::Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON_QUIET)))]
pub(crate) struct RunArgs {
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub(crate) batch: Vec<u64>,
    /// Timed iterations: steps, or runs per message size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub(crate) iters: usize,
    /// Warm-up iterations.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub(crate) warmup: usize,
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}

impl RunArgs {
    /// Checks the output flags for `mode` and hands the rest to the shared job flags.
    pub(crate) fn fill(self, mode: &str, args: &mut Args) -> anyhow::Result<()> {
        self.output.resolve(mode, cli::Honours::JSON_QUIET)?;
        (args.batch, args.iters) = (self.batch, self.iters);
        (args.warmup, args.output) = (self.warmup, self.output);
        Ok(())
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct StepArgs {
    #[command(flatten)]
    pub(crate) job: JobArgs,
    /// Layers per step.
    #[arg(long, default_value_t = 8)]
    pub(crate) layers: u64,
    /// Hidden size.
    #[arg(long, default_value_t = 4096)]
    pub(crate) hidden: u64,
    /// Busy compute per layer, microseconds.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) compute_us: f64,
    /// Ranks per stage [default: the world / --pp].
    #[arg(long)]
    pub(crate) tp: Option<usize>,
    /// Pipeline stages (world = tp x pp).
    #[arg(long)]
    pub(crate) pp: Option<usize>,
    /// Micro-batches in flight, 1 to --pp [default: min(--pp, batch), as vLLM].
    #[arg(long, value_name = "K")]
    pub(crate) micro_batches: Option<usize>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ModelArgs {
    #[command(flatten)]
    pub(crate) job: JobArgs,
    /// Model whose messages to run (configs/models/*.toml).
    #[arg(long)]
    pub(crate) model: String,
    /// Tensor-parallel group size (the job's world must equal it).
    #[arg(long)]
    pub(crate) tp: Option<usize>,
    /// Pipeline stages (the job's world must equal it when --tp is not given).
    #[arg(long)]
    pub(crate) pp: Option<usize>,
    /// decode (tokens = batch) or prefill (tokens = batch x --input-len).
    #[arg(long, default_value = "decode")]
    pub(crate) phase: String,
    /// Prompt length for --phase prefill.
    #[arg(long, default_value_t = 2000)]
    pub(crate) input_len: u64,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// The size sweep's flags; the other modes fill the fields they use (the rest keep
/// their defaults) and run on the same plumbing.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// tcp (CPU ring over TCP, runs anywhere) or nccl (GPUs).
    #[arg(long, default_value = "tcp")]
    pub(crate) backend: String,
    /// all_reduce, all_gather, reduce_scatter, broadcast, reduce, alltoall, sendrecv.
    #[arg(long, default_value = "all_reduce")]
    pub(crate) op: String,
    /// Smallest size (bytes; 4K, 1M ...).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = cli::size_arg)]
    pub(crate) min_bytes: u64,
    /// Largest size.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = cli::size_arg)]
    pub(crate) max_bytes: u64,
    /// Multiplication factor between sizes.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    pub(crate) step_factor: u64,
    /// Fixed increment between sizes (instead of -f).
    #[arg(short = 'i', long = "stepbytes", value_parser = cli::size_arg)]
    pub(crate) step_bytes: Option<u64>,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    pub(crate) iters: usize,
    /// Warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    pub(crate) warmup: usize,
    /// f32, f16, bf16 or i32.
    #[arg(short = 'd', long = "datatype", default_value = "f32")]
    pub(crate) dtype: String,
    /// sum, max or min.
    #[arg(short = 'o', long = "op_reduce", default_value = "sum")]
    pub(crate) redop: String,
    /// Root rank for broadcast and reduce.
    #[arg(short = 'r', long, default_value_t = 0)]
    pub(crate) root: usize,
    /// Check results (1) or not (0).
    #[arg(short = 'c', long, default_value_t = 1)]
    pub(crate) check: u8,
    /// Add per-iteration p50/p99 (rank 0) columns.
    #[arg(long)]
    pub(crate) percentiles: bool,
    #[command(flatten)]
    pub(crate) job: JobArgs,
    // Filled by `synthetic-step` and `model`; not flags of the sweep.
    #[arg(skip = 8u64)]
    pub(crate) layers: u64,
    #[arg(skip = 4096u64)]
    pub(crate) hidden: u64,
    #[arg(skip = 200.0)]
    pub(crate) compute_us: f64,
    #[arg(skip)]
    pub(crate) model: Option<String>,
    #[arg(skip)]
    pub(crate) tp: Option<usize>,
    #[arg(skip)]
    pub(crate) pp: Option<usize>,
    #[arg(skip)]
    pub(crate) micro_batches: Option<usize>,
    #[arg(skip = String::from("decode"))]
    pub(crate) phase: String,
    #[arg(skip = vec![1u64, 8, 32, 128])]
    pub(crate) batch: Vec<u64>,
    #[arg(skip = 2000u64)]
    pub(crate) input_len: u64,
    /// GPU ordinal for --backend nccl [default: LOCAL_RANK (or rank) modulo the GPU count].
    #[arg(long)]
    pub(crate) device: Option<usize>,
    /// Path of libnccl.so.2 for --backend nccl.
    #[arg(long, value_name = "PATH")]
    pub(crate) nccl_lib: Option<PathBuf>,
    // -q: only the summary lines (out-of-bounds count, average bus bandwidth).
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}

impl Args {
    /// The sweep's defaults, for the modes that fill in only what they use.
    pub(crate) fn defaults(job: JobArgs) -> anyhow::Result<Args> {
        let mut args = Cli::try_parse_from(["collbench"])?.sweep;
        args.job = job;
        Ok(args)
    }
}

impl StepArgs {
    pub(crate) fn into_args(self) -> anyhow::Result<Args> {
        const MODE: &str = "collbench synthetic-step";
        let mut args = Args::defaults(self.job)?;
        (args.layers, args.hidden, args.compute_us) = (self.layers, self.hidden, self.compute_us);
        (args.tp, args.pp, args.micro_batches) = (self.tp, self.pp, self.micro_batches);
        self.run.fill(MODE, &mut args)?;
        Ok(args)
    }
}

impl ModelArgs {
    pub(crate) fn into_args(self) -> anyhow::Result<Args> {
        const MODE: &str = "collbench model";
        let mut args = Args::defaults(self.job)?;
        (args.model, args.tp, args.pp) = (Some(self.model), self.tp, self.pp);
        (args.phase, args.input_len) = (self.phase, self.input_len);
        self.run.fill(MODE, &mut args)?;
        Ok(args)
    }
}
