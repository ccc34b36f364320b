//! Prices every plan, the verdict between them and the what-ifs, and renders them as a
//! table, one JSON document, or stacked bars.

use crate::{Args, Resolved};
use measure::record::LinkUsed;
use model::{estimate, verdict, Estimate, LinkModel, Plan, INTER_PROFILES};
use serde::Serialize;

/// `explain --json` (test "plans") as written; `measure::record::ExplainPlans` is what a
/// reader takes from it.
#[derive(Serialize)]
struct PlansDocument<'a> {
    model: &'a str,
    gpu: &'a str,
    workload: WorkloadDocument,
    links: LinksDocument,
    assumptions: &'a model::Assumptions,
    modelled_as: &'a str,
    /// The measured runs given with --run, then --run-vs.
    runs: Vec<&'a model::runs::MeasuredRun>,
    calibration: Option<&'a model::calibrate::Calibration>,
    attribution: Option<&'a model::calibrate::Attribution>,
    saturated: &'a [String],
    plans: &'a [Estimate],
    verdict: &'a str,
    what_ifs: Vec<WhatIfDocument<'a>>,
}

#[derive(Serialize)]
struct WorkloadDocument {
    input_len: u64,
    output_len: u64,
    concurrency: f64,
    qps: Option<f64>,
}

#[derive(Serialize)]
struct LinksDocument {
    intra_node: LinkUsed,
    inter_node: LinkUsed,
}

/// A what-if: the plan priced, or why it cannot run.
#[derive(Serialize)]
struct WhatIfDocument<'a> {
    what: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a Estimate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<&'a String>,
}

struct WhatIf {
    what: String,
    result: Result<Estimate, String>,
}

fn price(r: &Resolved, plan: &Plan, inter: &LinkModel) -> Result<Estimate, model::ModelError> {
    estimate(
        &r.model,
        &r.gpu,
        plan,
        &r.workload,
        &r.intra,
        inter,
        &r.assumptions,
    )
}

/// The same plan over IB, PP and TP swapped across the node boundary, DP replicas instead.
fn what_ifs(r: &Resolved, plan: &Plan) -> Vec<WhatIf> {
    let mut out = Vec::new();
    let mut add = |what: String, plan: Plan, inter: &LinkModel| {
        out.push(WhatIf {
            what,
            result: price(r, &plan, inter).map_err(|e| e.to_string()),
        });
    };
    let crosses = plan.nodes_used() > 1;
    if crosses {
        for ib in ["ib-ndr400", "tcp-100g"] {
            if r.inter.name != ib {
                if let Ok(link) = LinkModel::named(ib, INTER_PROFILES, "inter-node link") {
                    add(format!("{} over {ib}", plan.name()), *plan, &link);
                }
            }
        }
    }
    let (across, _) = plan.pp_boundaries();
    if across > 0 {
        // PP across the boundary -> one TP group spanning the nodes.
        let tp = Plan {
            tp: plan.tp * plan.pp,
            pp: 1,
            ..*plan
        };
        add(
            format!("TP across the node boundary instead: {}", tp.name()),
            tp,
            &r.inter,
        );
    } else if plan.tp_spans_nodes() {
        let g = plan.gpus_per_node;
        let pp = Plan {
            tp: g,
            pp: plan.pp * plan.tp.div_ceil(g),
            ..*plan
        };
        add(
            format!("PP across the node boundary instead: {}", pp.name()),
            pp,
            &r.inter,
        );
    }
    if crosses && (plan.pp > 1 || plan.tp_spans_nodes()) {
        let tp = plan.tp.min(plan.gpus_per_node);
        let dp = Plan {
            tp,
            pp: 1,
            dp: plan.dp * plan.tp * plan.pp / tp,
            ..*plan
        };
        add(
            format!("DP replicas instead (one per {} GPUs): {}", tp, dp.name()),
            dp,
            &r.inter,
        );
    }
    out
}

fn one_line(e: &Estimate) -> String {
    let b = &e.breakdown_ms;
    format!(
        "{}: TPOT {:.2} ms = compute {:.2} + TP all-reduces {:.2} + PP sends {:.2} + bubble {:.2} + overhead {:.2} + cross-node control {:.2}; TTFT {:.1} ms.",
        e.name, e.tpot_ms, b.compute, b.tp_comm, b.pp_comm, b.bubble, b.overhead, b.control, e.ttft_ms
    )
}

/// Prices `plan` at the load a measured run was taken under.
fn price_run(
    r: &Resolved,
    plan: &Plan,
    run: &model::runs::MeasuredRun,
) -> Result<Estimate, model::ModelError> {
    let w = model::calibrate::workload_of(run, r.workload.input_len, r.workload.output_len);
    estimate(
        &r.model,
        &r.gpu,
        plan,
        &w,
        &r.intra,
        &r.inter,
        &r.assumptions,
    )
}

pub fn run(args: &Args, r: &Resolved) -> anyhow::Result<u8> {
    let mut estimates = Vec::new();
    for plan in &r.plans {
        let e = price(r, plan, &r.inter).map_err(|e| cli::usage(e.to_string()))?;
        estimates.push(e);
    }
    // Measured runs: both plans priced at the first run's load, and the difference split.
    let attribution = match (r.runs.first(), r.runs_vs.first(), r.plans.get(1)) {
        (Some(a_run), Some(b_run), Some(b_plan)) => {
            let pa = price_run(r, &r.plans[0], a_run).map_err(|e| cli::usage(e.to_string()))?;
            let pb = price_run(r, b_plan, b_run).map_err(|e| cli::usage(e.to_string()))?;
            Some((model::calibrate::attribute(a_run, b_run, &pa, &pb), pa, pb))
        }
        _ => None,
    };
    let saturated: Vec<String> = estimates
        .iter()
        .filter(|e| e.saturated)
        .map(|e| {
            format!(
                "offered load {} req/s exceeds what {} can serve (about {:.2} req/s with {:.0} requests in flight per replica): the figures are at saturation, and queueing adds to TTFT without bound",
                r.workload.qps.unwrap_or_default(),
                e.name,
                e.req_s,
                e.max_concurrency_per_replica
            )
        })
        .collect();
    let concurrency = r.workload.concurrency;
    let text = match estimates.as_slice() {
        [a, b] => verdict(a, b, concurrency),
        [a] => one_line(a),
        _ => String::new(),
    };
    let base = r.plans.last().copied().unwrap_or(r.plans[0]);
    let ifs = what_ifs(r, &base);
    if let Some(path) = &args.output.plot {
        let mut shown: Vec<(String, &Estimate)> =
            estimates.iter().map(|e| (e.name.clone(), e)).collect();
        shown.extend(ifs.iter().filter_map(|w| {
            let e = w.result.as_ref().ok()?;
            let label = w.what.rsplit(": ").next().unwrap_or(&w.what);
            Some((format!("what if: {label}"), e))
        }));
        write_plot(path, &shown, r)?;
    }
    if args.output.json {
        let link = |l: &LinkModel| LinkUsed {
            name: l.name.clone(),
            alpha_us: l.alpha_us,
            gbs: l.gbs,
            source: l.source.clone(),
        };
        let document = PlansDocument {
            model: &r.model.name,
            gpu: &r.gpu.name,
            workload: WorkloadDocument {
                input_len: r.workload.input_len,
                output_len: r.workload.output_len,
                concurrency: r.workload.concurrency,
                qps: r.workload.qps,
            },
            links: LinksDocument {
                intra_node: link(&r.intra),
                inter_node: link(&r.inter),
            },
            assumptions: &r.assumptions,
            modelled_as: MODELLED_AS,
            runs: r.runs.iter().chain(&r.runs_vs).collect(),
            calibration: r.calibration.as_ref(),
            attribution: attribution.as_ref().map(|(a, _, _)| a),
            saturated: &saturated,
            plans: &estimates,
            verdict: &text,
            what_ifs: ifs
                .iter()
                .map(|w| WhatIfDocument {
                    what: &w.what,
                    plan: w.result.as_ref().ok(),
                    rejected: w.result.as_ref().err(),
                })
                .collect(),
        };
        measure::record::print_json("explain", "plans", &document)?;
        return Ok(cli::exit::OK);
    }
    println!(
        "# explain: {} on {} ({} GiB, {} GB/s HBM, {} TFLOP/s bf16); {} in / {} out, {}",
        r.model.name,
        r.gpu.name,
        r.gpu.memory_gib,
        r.gpu.hbm_gbs,
        r.gpu.bf16_tflops,
        r.workload.input_len,
        r.workload.output_len,
        match r.workload.qps {
            Some(q) => format!("{q} req/s offered"),
            None => format!("concurrency {}", r.workload.concurrency),
        }
    );
    for (what, l) in [("intra-node", &r.intra), ("inter-node", &r.inter)] {
        println!(
            "# {what}: {} = {:.3} GB/s per direction, {:.1} us per hop ({})",
            l.name, l.gbs, l.alpha_us, l.source
        );
    }
    println!("{}", table(estimates.iter().map(|e| (e.name.clone(), e))));
    println!("{text}");
    for line in &saturated {
        println!("warning: {line}");
    }
    if let Some(c) = &r.calibration {
        println!(
            "\nCalibrated on {} measured run(s) of {}: HBM efficiency {:.3} (default {:.2}), fixed per-step overhead {:.0} us (default {:.0} us); {:.1} % rms error left",
            c.runs.len(),
            r.plans[0].name(),
            c.hbm_efficiency,
            c.default_hbm_efficiency,
            c.step_overhead_us,
            c.default_step_overhead_us,
            c.rms_error * 100.0
        );
        if c.rms_error > 0.25 {
            println!(
                "warning: the model does not fit these runs ({:.0} % rms error): they may not be closed-loop at the concurrency they name (a run of fewer prompts than its concurrency is one wave, not a steady state), or the GPU profile is wrong; read the attribution below with care",
                c.rms_error * 100.0
            );
        }
        let mut t = measure::Table::new([
            "run",
            "TPOT ms measured",
            "TPOT ms model",
            "req/s measured",
            "req/s model",
        ]);
        for f in &c.runs {
            t.push([
                f.source.clone(),
                format!("{:.2}", f.measured_tpot_ms),
                format!("{:.2}", f.predicted_tpot_ms),
                format!("{:.3}", f.measured_req_s),
                format!("{:.3}", f.predicted_req_s),
            ]);
        }
        println!("{}", t.render());
    }
    if let Some((a, pa, pb)) = &attribution {
        println!(
            "\nMeasured: {} is {:+.2} ms per token (TPOT), {:+.1} ms TTFT, {:+.3} req/s against {}; model at the same load: {:+.2} ms TPOT.",
            pb.name, a.measured_tpot_diff_ms, a.measured_ttft_diff_ms, a.measured_req_s_diff, pa.name,
            pb.tpot_ms - pa.tpot_ms
        );
        let mut t = measure::Table::new(["TPOT term", "ms per token"]);
        for (term, ms) in &a.terms {
            t.push([term.clone(), format!("{ms:+.3}")]);
        }
        t.push([
            "unexplained".to_string(),
            format!("{:+.3}", a.unexplained_ms),
        ]);
        t.push([
            "measured difference".to_string(),
            format!("{:+.3}", a.measured_tpot_diff_ms),
        ]);
        println!("{}", t.render());
        println!("{}", a.likely);
    }
    if !ifs.is_empty() {
        println!("\nWhat if ({}):", base.name());
        let mut t = measure::Table::new(["what if", "TPOT ms", "TTFT ms", "out tok/s", "req/s"]);
        for w in &ifs {
            match &w.result {
                Ok(e) => t.push([
                    w.what.clone(),
                    format!("{:.2}", e.tpot_ms),
                    format!("{:.1}", e.ttft_ms),
                    format!("{:.0}", e.output_tok_s),
                    format!("{:.2}", e.req_s),
                ]),
                Err(reason) => t.push([
                    w.what.clone(),
                    "rejected".into(),
                    reason.clone(),
                    String::new(),
                    String::new(),
                ]),
            }
        }
        println!("{}", t.render());
    }
    println!(
        "# assumed: {:.0} % of HBM bandwidth, {:.0} % of bf16 peak, {:.0} us fixed per stage forward pass, {:.0} % of memory for weights + KV; breakdown columns are ms per output token (KV transfer: per request)",
        r.assumptions.hbm_efficiency * 100.0,
        r.assumptions.flops_efficiency * 100.0,
        r.assumptions.step_overhead_us,
        r.assumptions.memory_utilization * 100.0
    );
    println!("# {MODELLED_AS}");
    Ok(cli::exit::OK)
}

/// How the model runs a plan across nodes, stated with every report.
pub const MODELLED_AS: &str = "modelled as vLLM runs it: each PP boundary hands over the hidden states and the residual (2 x tokens x hidden x dtype); at most PP micro-batches in flight, the batch split among them; per micro-batch the driver sends the scheduler output (1 KiB + 64 B per request; on the critical path only where TP spans nodes, later PP stages get it while the first computes) and gets the sampled tokens back (8 B per request) over the inter-node link; a collbench sendrecv or all_reduce sweep as --inter-node prices each message size from the measured rows, not from the bandwidth line";

fn table<'a>(rows: impl Iterator<Item = (String, &'a Estimate)>) -> String {
    let mut t = measure::Table::new([
        "plan",
        "GPUs",
        "TPOT ms",
        "TTFT ms",
        "out tok/s",
        "req/s",
        "compute",
        "TP comm",
        "PP comm",
        "bubble",
        "overhead",
        "control",
        "KV xfer",
    ]);
    for (name, e) in rows {
        let b = &e.breakdown_ms;
        t.push([
            name,
            e.gpus.to_string(),
            format!("{:.2}", e.tpot_ms),
            format!("{:.1}", e.ttft_ms),
            format!("{:.0}", e.output_tok_s),
            format!("{:.2}", e.req_s),
            format!("{:.2}", b.compute),
            format!("{:.2}", b.tp_comm),
            format!("{:.2}", b.pp_comm),
            format!("{:.2}", b.bubble),
            format!("{:.2}", b.overhead),
            format!("{:.2}", b.control),
            format!("{:.2}", b.kv_transfer),
        ]);
    }
    t.render()
}

fn write_plot(
    path: &std::path::Path,
    shown: &[(String, &Estimate)],
    r: &Resolved,
) -> anyhow::Result<()> {
    let part = |name: &str, pick: fn(&Estimate) -> f64| {
        (
            name.to_string(),
            shown.iter().map(|(_, e)| pick(e)).collect(),
        )
    };
    let chart = measure::BarChart {
        title: format!(
            "{} on {}: ms per output token, by cause",
            r.model.name, r.gpu.name
        ),
        y_label: "ms per output token".into(),
        categories: shown.iter().map(|(name, _)| name.clone()).collect(),
        stacks: vec![
            part("compute", |e| e.breakdown_ms.compute),
            part("TP all-reduces", |e| e.breakdown_ms.tp_comm),
            part("PP sends", |e| e.breakdown_ms.pp_comm),
            part("bubble", |e| e.breakdown_ms.bubble),
            part("overhead", |e| e.breakdown_ms.overhead),
            part("cross-node control", |e| e.breakdown_ms.control),
            // Per request, spread over its output tokens so it stacks with the rest.
            (
                "P/D KV transfer (per request / output tokens)".to_string(),
                shown
                    .iter()
                    .map(|(_, e)| e.breakdown_ms.kv_transfer / r.workload.output_len.max(1) as f64)
                    .collect(),
            ),
        ],
    };
    measure::write_bar_chart(path, &chart)?;
    Ok(())
}
