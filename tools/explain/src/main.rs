//! explain: answers "why is my 2-node plan slower than my 1-node plan, and what would fix
//! it?" from the model, the GPU, the plans and the links (named or measured). Parses and
//! resolves here (flags in `flags`); `predict-step` is in `predict`, the cost model in
//! `model`, the rendering in `report`.

mod flags;
mod predict;
mod report;

use anyhow::Context;
use flags::{Args, Cli, Mode, PLAN_OUTPUTS};
use model::{Assumptions, LinkModel, Plan, Workload, INTER_PROFILES, INTRA_PROFILES};
use std::path::Path;

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::InputLength, "--input-len"),
    (measure::Setting::OutputLength, "--output-len"),
    (measure::Setting::Concurrency, "--concurrency"),
];

fn main() -> std::process::ExitCode {
    cli::main("explain", FLAGS, run)
}

/// Everything the report needs, resolved and checked.
pub struct Resolved {
    /// The measured runs of --plan and --vs (first load point of each is compared).
    pub runs: Vec<model::runs::MeasuredRun>,
    pub runs_vs: Vec<model::runs::MeasuredRun>,
    pub calibration: Option<model::calibrate::Calibration>,
    pub model: model::ModelShape,
    pub gpu: model::GpuSpec,
    pub plans: Vec<Plan>,
    pub workload: Workload,
    pub intra: LinkModel,
    pub inter: LinkModel,
    pub assumptions: Assumptions,
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let args = match cli.mode {
        Some(Mode::PredictStep(step)) => return predict::run(&step),
        None => cli.plans,
    };
    args.output.resolve("explain", PLAN_OUTPUTS)?;
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
    let json_name = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if json_name || path.is_file() {
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
    let read_runs = |path: &Path| -> anyhow::Result<Vec<model::runs::MeasuredRun>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| cli::usage(format!("reading the run {}: {e}", path.display())))?;
        model::runs::parse_runs(&path.display().to_string(), &text).map_err(usage)
    };
    let mut runs = Vec::new();
    for path in &args.run {
        runs.extend(read_runs(path)?);
    }
    let runs_vs = match &args.run_vs {
        Some(path) => read_runs(path)?,
        None => Vec::new(),
    };
    // The workload comes from the run where it says; a flag that says otherwise is a
    // contradiction, never silently dropped.
    let from_run = |pick: fn(&model::runs::MeasuredRun) -> Option<f64>| runs.first().and_then(pick);
    let agree = |flag: &str, given: Option<f64>, run: Option<f64>| -> anyhow::Result<Option<f64>> {
        match (given, run) {
            (Some(g), Some(r)) if (g - r).abs() > 0.5 => Err(cli::usage(format!(
                "{flag} {g} contradicts the run, which measured {r}: drop {flag} or pass the matching run"
            ))),
            (g, r) => Ok(g.or(r)),
        }
    };
    let input_len = agree(
        "--input-len",
        args.input_len.map(|v| v as f64),
        from_run(|r| r.input_len),
    )?
    .map_or(2000, |v| v.round() as u64);
    let output_len = agree(
        "--output-len",
        args.output_len.map(|v| v as f64),
        from_run(|r| r.output_len),
    )?
    .map_or(2000, |v| v.round() as u64);
    let run_concurrency = from_run(|r| r.max_concurrency);
    let run_qps = if run_concurrency.is_none() {
        from_run(|r| r.request_rate)
    } else {
        None
    };
    let concurrency_arg = agree("--concurrency", args.concurrency, run_concurrency)?;
    let qps_arg = agree("--qps", args.qps, run_qps)?;
    let concurrency = concurrency_arg.unwrap_or(16.0);
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
    let workload = Workload {
        input_len,
        output_len,
        concurrency,
        qps: qps_arg,
    };
    let mut assumptions = Assumptions::default();
    let calibration = if runs.is_empty() {
        None
    } else {
        let setup = model::calibrate::Setup {
            model: &shape,
            gpu: &gpu,
            intra: &intra,
            inter: &inter,
            base: assumptions,
        };
        let points: Vec<_> = runs
            .iter()
            .map(|r| {
                (
                    r.clone(),
                    model::calibrate::workload_of(r, input_len, output_len),
                )
            })
            .collect();
        let fitted = model::calibrate::calibrate(&setup, &plans[0], &points).map_err(usage)?;
        assumptions.hbm_efficiency = fitted.hbm_efficiency;
        assumptions.step_overhead_us = fitted.step_overhead_us;
        Some(fitted)
    };
    Ok(Resolved {
        model: shape,
        gpu,
        plans,
        workload,
        runs,
        runs_vs,
        calibration,
        intra,
        inter,
        assumptions,
    })
}
