//! explain's flags: plan comparison (no subcommand) and `predict-step`.

use clap::Parser;
use std::path::PathBuf;

/// Prices parallel plans (TPOT, TTFT, tok/s, req/s) and attributes the difference between
/// them to compute, TP all-reduces, PP activation sends, the pipeline bubble and the P/D
/// KV transfer.
///
/// Plans: tp4, tp4,pp2, dp2,tp4, dp8,pd (P/D disaggregated); append @NODESxGPUS to place
/// one explicitly (tp4,pp2@2x4). Links: a profile name or a collbench/linkbench/kvxfer
/// --json FILE (a measurement wins over a profile). `explain predict-step` prices one
/// synthetic step instead (see its --help).
#[derive(Parser, Debug)]
#[command(name = "explain", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) mode: Option<Mode>,
    #[command(flatten)]
    pub(crate) plans: Args,
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum Mode {
    /// Predict `collbench synthetic-step`: layers x (compute + 2 all-reduces) over --link,
    /// and with --pp the pipeline over --pp-link, with the model's own arithmetic.
    PredictStep(StepArgs),
}

#[derive(clap::Args, Debug)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON)))]
pub(crate) struct StepArgs {
    /// Layers per step.
    #[arg(long, default_value_t = 8)]
    pub(crate) layers: u64,
    /// Hidden size.
    #[arg(long, default_value_t = 4096)]
    pub(crate) hidden: u64,
    /// Tokens per step.
    #[arg(long, default_value_t = 8)]
    pub(crate) batch: u64,
    /// Busy compute per layer, microseconds.
    #[arg(long, default_value_t = 200.0)]
    pub(crate) compute_us: f64,
    /// Ranks in the TP group (ranks per stage with --pp).
    #[arg(long, default_value_t = 2)]
    pub(crate) world: u64,
    /// The collbench all_reduce --json measured on the TP group's links.
    #[arg(long, value_name = "FILE.json")]
    pub(crate) link: Option<PathBuf>,
    /// Pipeline stages.
    #[arg(long, default_value_t = 1)]
    pub(crate) pp: u64,
    /// Micro-batches in flight, 1 to --pp [default: --pp].
    #[arg(long, value_name = "K")]
    pub(crate) micro_batches: Option<u64>,
    /// The linkbench lat -a --json (or collbench sendrecv --json) measured between stages
    /// (with --pp).
    #[arg(long, value_name = "FILE.json")]
    pub(crate) pp_link: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}

/// Plan pricing prints a table, JSON, or a chart of the plans' breakdowns.
pub(crate) const PLAN_OUTPUTS: cli::Honours = cli::Honours {
    plot: true,
    ..cli::Honours::JSON
};

/// Plan pricing's flags.
#[derive(clap::Args, Debug)]
#[command(mut_args(cli::hide_outputs(PLAN_OUTPUTS)))]
pub(crate) struct Args {
    /// Model (configs/models/*.toml).
    #[arg(long, default_value = "llama-3.1-8b")]
    pub(crate) model: String,
    /// GPU (configs/gpus/*.toml).
    #[arg(long, default_value = "h100-sxm")]
    pub(crate) gpu: String,
    /// The plan to explain (the baseline).
    #[arg(long, default_value = "tp4")]
    pub(crate) plan: String,
    /// A second plan to compare against --plan.
    #[arg(long, value_name = "PLAN")]
    pub(crate) vs: Option<String>,
    /// GPUs per node, for plans without @NODESxGPUS.
    #[arg(long, default_value_t = 8)]
    pub(crate) gpus_per_node: u64,
    /// Prompt tokens per request [default: the run's, else 2000].
    #[arg(long)]
    pub(crate) input_len: Option<u64>,
    /// Output tokens per request [default: the run's, else 2000].
    #[arg(long)]
    pub(crate) output_len: Option<u64>,
    /// A measured run of --plan (`vllm bench serve --save-result` JSON, vLLM's serving
    /// table JSON, or CSV with the same keys); repeat for several loads. The model's HBM
    /// efficiency and per-step overhead are fitted to it.
    #[arg(long, value_name = "FILE")]
    pub(crate) run: Vec<PathBuf>,
    /// A measured run of --vs, at the same load: the measured difference is split into
    /// the modelled terms plus what the model does not explain.
    #[arg(long, value_name = "FILE", requires = "vs")]
    pub(crate) run_vs: Option<PathBuf>,
    /// Requests in flight over the whole deployment (closed loop) [default: 16].
    #[arg(long)]
    pub(crate) concurrency: Option<f64>,
    /// Requests per second (open loop) instead of --concurrency.
    #[arg(long)]
    pub(crate) qps: Option<f64>,
    /// tcp-10g, tcp-25g, tcp-100g, ib-hdr200, ib-ndr400, or a --json FILE.
    #[arg(long, default_value = "tcp-25g", value_name = "PROFILE|FILE.json")]
    pub(crate) inter_node: String,
    /// nvlink4, nvlink3, pcie4, pcie5 ..., or a --json FILE [default: the GPU's own link].
    #[arg(long, value_name = "PROFILE|FILE.json")]
    pub(crate) intra_node: Option<String>,
    // --plot: the per-token breakdown of every plan as stacked bars.
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
}
