//! explain: answers "why is my 2-node plan slower than my 1-node plan, and what would fix
//! it?" from the model, the GPU, the plans and the links (named or measured). Parses and
//! resolves here; the cost model lives in `model`, the rendering in report.rs.

mod predict;
mod report;

use anyhow::Context;
use clap::Parser;
use model::{Assumptions, LinkModel, Plan, Workload, INTER_PROFILES, INTRA_PROFILES};
use std::path::{Path, PathBuf};

/// Prices parallel plans (TPOT, TTFT, tok/s, req/s) and attributes the difference between
/// them to compute, TP all-reduces, PP activation sends, the pipeline bubble and the P/D
/// KV transfer.
///
/// Plans: tp4, tp4,pp2, dp2,tp4, dp8,pd (P/D disaggregated); append @NODESxGPUS to place
/// one explicitly (tp4,pp2@2x4). Links: a profile name or a collbench/linkbench/kvxfer
/// --json FILE (a measurement wins over a profile).
#[derive(Parser, Debug)]
#[command(name = "explain", version)]
pub struct Args {
    /// Model (configs/models/*.toml).
    #[arg(long, default_value = "llama-3.1-8b")]
    model: String,
    /// GPU (configs/gpus/*.toml).
    #[arg(long, default_value = "h100-sxm")]
    gpu: String,
    /// The plan to explain (the baseline).
    #[arg(long, default_value = "tp4")]
    plan: String,
    /// A second plan to compare against --plan.
    #[arg(long, value_name = "PLAN")]
    vs: Option<String>,
    /// GPUs per node, for plans without @NODESxGPUS.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: u64,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 2000)]
    input_len: u64,
    /// Output tokens per request.
    #[arg(long, default_value_t = 2000)]
    output_len: u64,
    /// Requests in flight over the whole deployment (closed loop) [default: 16].
    #[arg(long)]
    concurrency: Option<f64>,
    /// Requests per second (open loop) instead of --concurrency.
    #[arg(long)]
    qps: Option<f64>,
    /// tcp-10g, tcp-25g, tcp-100g, ib-hdr200, ib-ndr400, or a --json FILE.
    #[arg(long, default_value = "tcp-25g", value_name = "PROFILE|FILE.json")]
    inter_node: String,
    /// nvlink4, nvlink3, pcie4, pcie5 ..., or a --json FILE [default: the GPU's own link].
    #[arg(long, value_name = "PROFILE|FILE.json")]
    intra_node: Option<String>,
    /// Print one JSON document on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Draw the per-token breakdown of every plan as stacked bars (FILE.svg).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Predict collbench --synthetic-step: L x (compute + 2 all-reduces) over --link.
    #[arg(long)]
    predict_step: bool,
    /// --predict-step: layers per step.
    #[arg(long, default_value_t = 8)]
    layers: u64,
    /// --predict-step: hidden size.
    #[arg(long, default_value_t = 4096)]
    hidden: u64,
    /// --predict-step: tokens per step.
    #[arg(long, default_value_t = 8)]
    batch: u64,
    /// --predict-step: busy compute per layer, microseconds.
    #[arg(long, default_value_t = 200.0)]
    compute_us: f64,
    /// --predict-step: ranks in the TP group.
    #[arg(long, default_value_t = 2)]
    world: u64,
    /// --predict-step: the collbench all_reduce --json measured on the same links.
    #[arg(long, value_name = "FILE.json")]
    link: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    cli::main("explain", run)
}

/// Everything the report needs, resolved and checked.
pub struct Resolved {
    pub model: model::ModelShape,
    pub gpu: model::GpuSpec,
    pub plans: Vec<Plan>,
    pub workload: Workload,
    pub intra: LinkModel,
    pub inter: LinkModel,
    pub assumptions: Assumptions,
}

fn run(args: Args) -> anyhow::Result<u8> {
    cli::check_plot_path(args.plot.as_deref())?;
    if args.predict_step {
        return predict::run(&args);
    }
    let resolved = resolve(&args)?;
    report::run(&args, &resolved)
}

fn usage(error: model::ModelError) -> anyhow::Error {
    cli::usage(error.to_string())
}

/// A profile name or a measurement file.
fn link(
    text: &str,
    profiles: &[(&str, f64, f64, &str)],
    what: &'static str,
) -> anyhow::Result<LinkModel> {
    let path = Path::new(text);
    if text.ends_with(".json") || path.is_file() {
        let body = std::fs::read_to_string(path)
            .with_context(|| format!("reading {what} measurement {text}"))
            .map_err(|e| cli::usage(cli::sentence(&e)))?;
        return LinkModel::from_json(text, &body).map_err(usage);
    }
    LinkModel::named(text, profiles, what).map_err(usage)
}

fn resolve(args: &Args) -> anyhow::Result<Resolved> {
    let dir = model::configs_dir();
    let shape = model::find_model(&dir, &args.model).map_err(usage)?;
    let gpu = model::find_gpu(&dir, &args.gpu).map_err(usage)?;
    if let (Some(concurrency), Some(qps)) = (args.concurrency, args.qps) {
        return Err(cli::usage(format!(
            "--concurrency {concurrency} and --qps {qps} contradict each other: a closed loop (--concurrency) or an open loop (--qps), not both"
        )));
    }
    let concurrency = args.concurrency.unwrap_or(16.0);
    if concurrency.is_nan() || concurrency < 1.0 {
        return Err(cli::usage(format!(
            "--concurrency {concurrency}: pass at least 1"
        )));
    }
    if let Some(qps) = args.qps {
        if qps.is_nan() || qps <= 0.0 {
            return Err(cli::usage(format!("--qps {qps}: pass a positive rate")));
        }
    }
    if args.gpus_per_node == 0 {
        return Err(cli::usage("--gpus-per-node 0: pass at least 1"));
    }
    let mut plans = vec![Plan::parse(&args.plan, args.gpus_per_node).map_err(usage)?];
    if let Some(vs) = &args.vs {
        plans.push(Plan::parse(vs, args.gpus_per_node).map_err(usage)?);
    }
    let inter = link(&args.inter_node, INTER_PROFILES, "inter-node link")?;
    let intra = match &args.intra_node {
        Some(text) => link(text, INTRA_PROFILES, "intra-node link")?,
        None => LinkModel::named(&gpu.intra_link, INTRA_PROFILES, "intra-node link")
            .unwrap_or_else(|_| LinkModel::new(&gpu.intra_link, gpu.intra_link_gbs, 3.0)),
    };
    Ok(Resolved {
        model: shape,
        gpu,
        plans,
        workload: Workload {
            input_len: args.input_len,
            output_len: args.output_len,
            concurrency,
            qps: args.qps,
        },
        intra,
        inter,
        assumptions: Assumptions::default(),
    })
}
