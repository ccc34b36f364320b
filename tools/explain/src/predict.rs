//! `explain predict-step`: the step time `collbench synthetic-step` should measure, priced from
//! the same link fits and the same pipeline arithmetic (`model::cost::pipeline_round`,
//! `control_on_path`) `explain` uses for plans. This is how the cost model is validated
//! against real all-reduces and stage handovers (scripts/bench/explain-validate).

use crate::flags::StepArgs as Args;
use anyhow::Context;
use measure::record::{ExplainStep, LinkUsed, StepBreakdown};
use model::LinkModel;
use model::{control_bytes, control_on_path, pipeline_round};
use std::path::Path;

fn read_link(path: &Path) -> anyhow::Result<LinkModel> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| cli::usage(cli::sentence(&e)))?;
    LinkModel::from_json(&path.display().to_string(), &text).map_err(|e| cli::usage(e.to_string()))
}

fn link_used(link: &Option<LinkModel>) -> Option<LinkUsed> {
    link.as_ref().map(|l| LinkUsed {
        name: l.name.clone(),
        alpha_us: l.alpha_us,
        gbs: l.gbs,
        source: l.source.clone(),
    })
}

pub fn run(args: &Args) -> anyhow::Result<u8> {
    args.output
        .resolve("explain predict-step", cli::Honours::JSON)?;
    if args.layers == 0 || args.hidden == 0 || args.batch == 0 || args.world == 0 || args.pp == 0 {
        return Err(cli::usage(
            "--layers, --hidden, --batch, --world and --pp must be at least 1",
        ));
    }
    if args.compute_us.is_nan() || args.compute_us < 0.0 {
        return Err(cli::usage("--compute-us must be 0 or more"));
    }
    let pp = args.pp;
    let k = args.micro_batches.unwrap_or(pp);
    if k == 0 || k > pp {
        return Err(cli::usage(format!(
            "--micro-batches {k}: 1 to --pp ({pp}) micro-batches are in flight"
        )));
    }
    if !args.batch.is_multiple_of(k) || !args.layers.is_multiple_of(pp) {
        return Err(cli::usage(format!(
            "--batch {} must split into --micro-batches {k} and --layers {} into --pp {pp} equal parts",
            args.batch, args.layers
        )));
    }
    let tp_link = match (&args.link, args.world) {
        (Some(path), _) => Some(read_link(path)?),
        (None, 1) => None,
        (None, _) => return Err(cli::usage(
            "predict-step needs --link FILE.json (collbench all_reduce --json measured on the TP group's links)",
        )),
    };
    let pp_link = match (&args.pp_link, pp) {
        (Some(path), _) => Some(read_link(path)?),
        (None, 1) => None,
        (None, _) => {
            return Err(cli::usage(
                "--pp needs --pp-link FILE.json (collbench sendrecv --json measured between the stages)",
            ))
        }
    };
    let tokens = (args.batch / k) as f64;
    let stage_layers = (args.layers / pp) as f64;
    let bytes = tokens * args.hidden as f64 * 2.0;
    let all_reduce_us = tp_link
        .as_ref()
        .map_or(0.0, |l| l.all_reduce_us(bytes, args.world));
    let stage_us = stage_layers * (args.compute_us + 2.0 * all_reduce_us);
    let (handover_us, control_us) = match &pp_link {
        Some(l) => (
            (pp - 1) as f64 * l.send_us(2.0 * bytes),
            control_on_path(
                l.send_us(control_bytes(tokens)),
                l.send_us(8.0 * tokens),
                stage_us,
                false,
            ),
        ),
        None => (0.0, 0.0),
    };
    let round = pipeline_round(stage_us, k as f64, pp as f64, handover_us, control_us);
    let step_ms = round.round_us / 1e3;
    let compute_ms = k as f64 * stage_layers * args.compute_us / 1e3;
    let tp_ms = k as f64 * stage_layers * 2.0 * all_reduce_us / 1e3;
    if args.output.json {
        let document = ExplainStep {
            predicted_step_ms: step_ms,
            breakdown_ms: StepBreakdown {
                compute: compute_ms,
                tp_comm: tp_ms,
                pp_comm: handover_us / 1e3,
                bubble: round.bubble_us / 1e3,
                control: control_us / 1e3,
            },
            all_reduce_us,
            all_reduce_bytes: bytes,
            handover_bytes: 2.0 * bytes,
            layers: args.layers,
            hidden: args.hidden,
            batch: args.batch,
            compute_us: args.compute_us,
            world: args.world,
            pp,
            micro_batches: k,
            link: link_used(&tp_link),
            pp_link: link_used(&pp_link),
        };
        measure::record::print_json("explain", "predict-step", &document)?;
        return Ok(cli::exit::OK);
    }
    let mut table = measure::Table::new(["quantity", "value"]);
    for (what, link) in [("TP link", &tp_link), ("stage link", &pp_link)] {
        if let Some(l) = link {
            table.push([what.to_string(), l.source.clone()]);
            table.push([
                format!("{what}: alpha, rate"),
                format!("{:.2} us per hop, {:.4} GB/s", l.alpha_us, l.gbs),
            ]);
        }
    }
    table.push([
        "all-reduce (us)".into(),
        format!(
            "{all_reduce_us:.1} for {bytes:.0} B ({tokens} x {} x 2) over {} ranks",
            args.hidden, args.world
        ),
    ]);
    table.push([
        "stage (us)".into(),
        format!(
            "{stage_us:.1} = {stage_layers} x ({} + 2 x {all_reduce_us:.1})",
            args.compute_us
        ),
    ]);
    if pp > 1 {
        table.push([
            "handovers (us)".into(),
            format!("{handover_us:.1} over {} boundaries", pp - 1),
        ]);
        table.push(["control (us)".into(), format!("{control_us:.1}")]);
        table.push(["bubble (us)".into(), format!("{:.1}", round.bubble_us)]);
    }
    table.push([
        "predicted step (ms)".into(),
        format!("{step_ms:.3} ({k} micro-batch(es), {pp} stage(s))"),
    ]);
    println!("{}", table.render());
    Ok(cli::exit::OK)
}
