//! `collbench model --model M --tp N` (or `--pp N`): the exact messages tensor and pipeline parallelism put on
//! the network per forward step (tokens x hidden x dtype), measured, then priced per step
//! and per token.

use crate::flags::Args;
use crate::{on_ranks, Job};
use anyhow::Context;
use collective::{ops, Communicator, Dtype, RedOp, RunConfig};
use measure::record::ModelMessagesRow as ShapedRow;

pub fn run(args: &Args, job: &Job) -> anyhow::Result<u8> {
    let name = args
        .model
        .as_deref()
        .ok_or_else(|| cli::usage("collbench model needs --model NAME (see configs/models)"))?;
    let shape =
        model::find_model(&model::configs_dir(), name).map_err(|e| cli::usage(e.to_string()))?;
    let world = job
        .local_ranks
        .or(job.boot.as_ref().map(|b| b.world))
        .unwrap_or(1);
    if let (Some(tp), Some(pp)) = (args.tp, args.pp) {
        return Err(cli::usage(format!(
            "--tp {tp} and --pp {pp} together: this mode measures one group at a time; run --tp {tp} (the TP all-reduces) and --pp {pp} (the stage sends) as two runs"
        )));
    }
    let tp = args.tp.unwrap_or(1);
    let pp = args.pp.unwrap_or(1);
    let group = if args.tp.is_some() { tp } else { pp };
    if group != world {
        return Err(cli::usage(format!(
            "--{} {group} needs {group} ranks but this job has {world}: launch {group} ranks (e.g. --ranks {group}) or pass --{} {world}",
            if args.tp.is_some() { "tp" } else { "pp" },
            if args.tp.is_some() { "tp" } else { "pp" }
        )));
    }
    let prefill = match args.phase.as_str() {
        "decode" => false,
        "prefill" => true,
        other => {
            return Err(cli::usage(format!(
                "--phase {other}: choose decode or prefill"
            )))
        }
    };
    if args.batch.is_empty() || args.batch.contains(&0) {
        return Err(cli::usage(
            "--batch needs positive sizes, e.g. --batch 1,8,32",
        ));
    }
    let dtype = if shape.dtype_bytes() == 4 {
        Dtype::Fp32
    } else {
        Dtype::Bf16
    };
    let bar = cli::progress(
        args.batch.len() as u64,
        &format!("collbench {} {}", shape.name, args.phase),
        "batch sizes",
        !args.output.json && !args.output.quiet,
    );
    let body = |comm: &mut Communicator| -> Result<Vec<ShapedRow>, collective::CollError> {
        let mut rows = Vec::new();
        for &batch in &args.batch {
            if comm.rank == 0 {
                bar.inc(1);
            }
            let tokens = if prefill {
                batch * args.input_len
            } else {
                batch
            };
            let bytes = shape.activation_bytes(tokens);
            let measure = |comm: &mut Communicator, op: &'static str| {
                let config = RunConfig {
                    op: ops::by_name(op).expect("built-in op"),
                    dtype,
                    redop: RedOp::Sum,
                    root: 0,
                    sizes: vec![bytes],
                    iters: args.iters,
                    warmup: args.warmup,
                    check: args.check != 0,
                };
                collective::run(comm, &config, |_| {})
                    .map(|rows| rows.first().map_or(0.0, |r| r.time_us))
            };
            let allreduce_us = if tp > 1 {
                measure(comm, "all_reduce")?
            } else {
                0.0
            };
            let pp_send_us = if pp > 1 {
                measure(comm, "sendrecv")?
            } else {
                0.0
            };
            let per_step = shape.tp_allreduces_per_step();
            let tp_ms = if tp > 1 {
                per_step as f64 * allreduce_us / 1e3
            } else {
                0.0
            };
            rows.push(ShapedRow {
                batch,
                tokens,
                allreduces_per_step: if tp > 1 { per_step } else { 0 },
                allreduce_bytes: bytes,
                allreduce_us,
                tp_comm_ms_per_step: tp_ms,
                tp_comm_ms_per_token: tp_ms / batch as f64,
                pp_boundaries: (pp - 1) as u64,
                pp_send_us,
                pp_comm_ms_per_step: (pp - 1) as f64 * pp_send_us / 1e3,
            });
        }
        Ok(rows)
    };
    let rows = on_ranks(job, args.job.timeout, body).context("measuring the model's messages")?;
    bar.finish_and_clear();
    if args.output.json {
        let document = measure::record::CollectiveModel {
            model: shape.name.clone(),
            tp,
            pp,
            phase: args.phase.clone(),
            world,
            backend: args.backend.clone(),
            dtype,
            rows,
        };
        measure::record::print_json("collbench", "model", &document)?;
        return Ok(cli::exit::OK);
    }
    if args.output.quiet {
        // The summary line alone, one figure per batch size.
        let per_step: Vec<String> = rows
            .iter()
            .map(|r| {
                let comm_ms = r.tp_comm_ms_per_step + r.pp_comm_ms_per_step;
                format!("{} {comm_ms:.3}", r.batch)
            })
            .collect();
        println!("# Comm/step (ms) by batch: {}", per_step.join(", "));
        return Ok(cli::exit::OK);
    }
    println!(
        "# {} {} step, TP {tp} x PP {pp} over {world} ranks ({}): {} layers, hidden {}, {} all-reduces per step",
        shape.name, args.phase, args.backend, shape.layers, shape.hidden, shape.tp_allreduces_per_step()
    );
    let mut table = measure::Table::new([
        "batch",
        "tokens",
        "msg",
        "all-reduce (us)",
        "TP comm/step (ms)",
        "TP comm/token (ms)",
        "PP hop (us)",
        "PP comm/step (ms)",
    ]);
    for r in &rows {
        table.push([
            r.batch.to_string(),
            r.tokens.to_string(),
            measure::format_bytes(r.allreduce_bytes),
            format!("{:.1}", r.allreduce_us),
            format!("{:.3}", r.tp_comm_ms_per_step),
            format!("{:.4}", r.tp_comm_ms_per_token),
            format!("{:.1}", r.pp_send_us),
            format!("{:.3}", r.pp_comm_ms_per_step),
        ]);
    }
    println!("{}", table.render());
    Ok(cli::exit::OK)
}
