//! `--synthetic-step`: a decode step without a GPU. Per layer, a fixed busy compute (a
//! spin of --compute-us) then the two real TP all-reduces (batch x hidden bf16) over the
//! TCP backend, timed over many steps. `explain --predict-step` must predict its time from
//! an all_reduce sweep on the same links; that is how the cost model is validated.

use crate::{on_ranks, Args, Job};
use anyhow::Context;
use collective::{ops, Communicator, DType, RedOp};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
struct StepRow {
    batch: u64,
    allreduce_bytes: u64,
    /// Mean over steps and ranks, milliseconds.
    step_ms: f64,
    /// Of which inside the all-reduces.
    comm_ms: f64,
}

/// Busy until `duration` has passed, yielding the core between checks: a GPU kernel leaves
/// the host CPU to the communication threads, and so must the stand-in for one (a pure
/// spin on a small host would starve the ring's sender threads, which no GPU node does).
fn spin(duration: Duration) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        std::thread::yield_now();
    }
}

pub fn run(args: &Args, job: &Job) -> anyhow::Result<u8> {
    if args.layers == 0 || args.hidden == 0 {
        return Err(cli::usage(
            "--synthetic-step needs --layers and --hidden of at least 1",
        ));
    }
    if !args.compute_us.is_finite() || args.compute_us < 0.0 {
        return Err(cli::usage("--compute-us must be 0 or more microseconds"));
    }
    if args.batch.is_empty() || args.batch.contains(&0) {
        return Err(cli::usage("--batch needs positive sizes, e.g. --batch 8"));
    }
    if args.backend != "tcp" {
        return Err(cli::usage(
            "--synthetic-step runs on --backend tcp only; drop --backend",
        ));
    }
    let compute = Duration::from_nanos((args.compute_us * 1e3) as u64);
    let op = ops::by_name("all_reduce").context("the all_reduce descriptor is built in")?;
    type Ranked = (Vec<StepRow>, usize, usize);
    let body = |comm: &mut Communicator| -> Result<Ranked, collective::CollError> {
        let mut rows = Vec::new();
        for &batch in &args.batch {
            let count = (batch * args.hidden) as usize;
            let (ctx, schedule) = collective::plan(op, comm, count, DType::Bf16, 0);
            let bytes = ctx.shape.work_count * DType::Bf16.size();
            // Built once: no allocation inside the timed loop.
            let mut words = vec![0u64; bytes.div_ceil(8)];
            let buffer: &mut [u8] = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes];
            let mut step = |comm: &mut Communicator| -> Result<Duration, collective::CollError> {
                let mut in_comm = Duration::ZERO;
                for _ in 0..args.layers {
                    spin(compute);
                    let began = Instant::now();
                    comm.execute(&schedule, buffer, DType::Bf16, RedOp::Sum)?;
                    comm.execute(&schedule, buffer, DType::Bf16, RedOp::Sum)?;
                    in_comm += began.elapsed();
                }
                Ok(in_comm)
            };
            for _ in 0..args.warmup {
                step(comm)?;
            }
            comm.barrier()?;
            let start = Instant::now();
            let mut in_comm = Duration::ZERO;
            for _ in 0..args.iters {
                in_comm += step(comm)?;
            }
            let steps = args.iters.max(1) as f64;
            let step_ms = start.elapsed().as_secs_f64() * 1e3 / steps;
            let comm_ms = in_comm.as_secs_f64() * 1e3 / steps;
            let summed = collective::sum_over_ranks(comm, &[step_ms as f32, comm_ms as f32])?;
            let world = comm.world as f64;
            rows.push(StepRow {
                batch,
                allreduce_bytes: (count * DType::Bf16.size()) as u64,
                step_ms: summed[0] as f64 / world,
                comm_ms: summed[1] as f64 / world,
            });
        }
        Ok((rows, comm.world, comm.rank))
    };
    let (rows, world, rank) =
        on_ranks(job, args.timeout, body).context("running synthetic steps")?;
    if rank != 0 {
        return Ok(cli::exit::OK);
    }
    if args.json {
        let mut document = serde_json::json!({
            "synthetic_step": true, "op": "all_reduce", "backend": "tcp", "dtype": "bf16",
            "world": world, "layers": args.layers, "hidden": args.hidden,
            "compute_us": args.compute_us, "steps": args.iters, "warmup": args.warmup,
            "rows": rows,
        });
        if let ([row], Some(fields)) = (rows.as_slice(), document.as_object_mut()) {
            fields.insert("batch".into(), row.batch.into());
            fields.insert("step_ms".into(), row.step_ms.into());
            fields.insert("comm_ms".into(), row.comm_ms.into());
        }
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else if !args.quiet {
        println!(
            "# synthetic decode step: {} layers x ({} us compute + 2 all-reduces of batch x {} bf16), {world} ranks, {} steps",
            args.layers, args.compute_us, args.hidden, args.iters
        );
        let mut table = measure::Table::new([
            "batch",
            "all-reduce (B)",
            "step (ms)",
            "in all-reduces (ms)",
        ]);
        for r in &rows {
            table.push([
                r.batch.to_string(),
                r.allreduce_bytes.to_string(),
                format!("{:.3}", r.step_ms),
                format!("{:.3}", r.comm_ms),
            ]);
        }
        println!("{}", table.render());
    }
    Ok(cli::exit::OK)
}
