//! The one harness: for each size it lays out buffers, warms up, times out-of-place and
//! in-place runs, checks every output element against the descriptor's expectation, and
//! averages time and #wrong over ranks. Each collective only describes itself.

use crate::comm::Communicator;
use crate::dtype::{Dtype, RedOp};
use crate::error::CollError;
use crate::ops::{all, input, Collective, Ctx};
use crate::schedule::{Builder, Schedule};
use measure::LatencyRecorder;
use std::time::Instant;

#[derive(Clone)]
pub struct RunConfig {
    pub op: &'static dyn Collective,
    pub dtype: Dtype,
    pub redop: RedOp,
    pub root: usize,
    pub sizes: Vec<u64>,
    pub iters: usize,
    pub warmup: usize,
    pub check: bool,
}

impl RunConfig {
    /// What no backend can run: a root outside the job, a type without arithmetic.
    pub fn validate(&self, world: usize) -> Result<(), CollError> {
        if self.root >= world {
            return Err(CollError::Invalid(format!(
                "root {} is not a rank of this {world}-rank job: the root must be 0..{}",
                self.root,
                world - 1
            )));
        }
        if !crate::dtype::is_supported(self.dtype) {
            return Err(CollError::Invalid(format!(
                "the collectives have no {} arithmetic: use fp32, fp16, bf16 or i32",
                self.dtype
            )));
        }
        Ok(())
    }
}

/// nccl-tests' timings, and one size's row, are the records collbench prints and explain reads.
pub use measure::record::{CollectiveRow as Row, CollectiveTiming as Timing};

/// Builds the schedule of `op` for this rank.
pub fn plan(
    op: &dyn Collective,
    comm: &Communicator,
    count: usize,
    dtype: Dtype,
    root: usize,
) -> (Ctx, Schedule) {
    plan_with(op, comm, count, dtype, root, false)
}

/// [`plan`], choosing the out-of-place variant where the descriptor has one.
pub fn plan_with(
    op: &dyn Collective,
    comm: &Communicator,
    count: usize,
    dtype: Dtype,
    root: usize,
    out_of_place: bool,
) -> (Ctx, Schedule) {
    let shape = op.shape(count, comm.rank, comm.world);
    let ctx = Ctx {
        rank: comm.rank,
        world: comm.world,
        root,
        elem: dtype.size(),
        shape,
        out_of_place: out_of_place && op.reads_source(),
    };
    let mut builder = Builder::new(dtype.size());
    op.schedule(&ctx, &mut builder);
    (ctx, builder.build())
}

/// [`plan`] for a collective among `group` (job ranks, in ring order) only, e.g. one TP
/// group inside a pipeline-parallel job; `comm.rank` must be in `group`. Ranks outside it
/// run nothing. The schedule addresses job ranks.
pub fn plan_group(
    op: &dyn Collective,
    comm: &Communicator,
    group: &[usize],
    count: usize,
    dtype: Dtype,
) -> Result<Schedule, CollError> {
    let index = group.iter().position(|&r| r == comm.rank).ok_or_else(|| {
        CollError::Invalid(format!("rank {} is not in the group {group:?}", comm.rank))
    })?;
    if let Some(&outside) = group.iter().find(|&&r| r >= comm.world) {
        return Err(CollError::Invalid(format!(
            "rank {outside} of group {group:?} is not a rank of this {}-rank job",
            comm.world
        )));
    }
    let ctx = Ctx {
        rank: index,
        world: group.len(),
        root: 0,
        elem: dtype.size(),
        shape: op.shape(count, index, group.len()),
        out_of_place: false,
    };
    let mut builder = Builder::new(dtype.size());
    op.schedule(&ctx, &mut builder);
    let mut schedule = builder.build();
    for send in &mut schedule.sends {
        send.peer = group[send.peer];
    }
    for recv in &mut schedule.recvs {
        recv.peer = group[recv.peer];
    }
    Ok(schedule)
}

pub(crate) fn words_for(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(8)]
}

pub(crate) fn fill_input(ctx: &Ctx, dtype: Dtype, work: &mut [u8]) {
    let send = ctx.bytes(ctx.shape.send_at..ctx.shape.send_at + ctx.shape.send_count);
    let rank = ctx.rank;
    crate::dtype::fill(dtype, &mut work[send], |i| input(rank, i));
}

pub(crate) fn count_wrong(
    op: &dyn Collective,
    ctx: &Ctx,
    dtype: Dtype,
    redop: RedOp,
    work: &[u8],
) -> u64 {
    let recv = ctx.bytes(ctx.shape.recv_at..ctx.shape.recv_at + ctx.shape.recv_count);
    if op.expected(ctx, redop, 0).is_none() && ctx.shape.recv_count > 0 {
        return 0;
    }
    crate::dtype::count_wrong(dtype, &work[recv], |i| {
        op.expected(ctx, redop, i).unwrap_or(f64::NAN)
    })
}

/// Sums small f32 figures over all ranks (times, error counts) with the TCP all_reduce.
pub fn sum_over_ranks(comm: &mut Communicator, values: &[f32]) -> Result<Vec<f32>, CollError> {
    let op = all()[0];
    let (_, schedule) = plan(op, comm, values.len(), Dtype::Fp32, 0);
    let mut words = words_for(values.len() * 4);
    let bytes: &mut [u8] = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..values.len() * 4];
    bytes.copy_from_slice(bytemuck::cast_slice(values));
    comm.execute(&schedule, bytes, Dtype::Fp32, RedOp::Sum)?;
    Ok(bytemuck::cast_slice::<u8, f32>(bytes).to_vec())
}

/// Runs the sweep; every rank returns the same rows.
pub fn run(
    comm: &mut Communicator,
    config: &RunConfig,
    mut on_row: impl FnMut(&Row),
) -> Result<Vec<Row>, CollError> {
    let op = config.op;
    let dtype = config.dtype;
    let elem = dtype.size() as u64;
    config.validate(comm.world)?;
    let mut rows = Vec::new();
    for &size in &config.sizes {
        let count = (size / elem) as usize;
        let (ctx, schedule) = plan(op, comm, count, dtype, config.root);
        if ctx.shape.send_count == 0 || ctx.shape.recv_count == 0 {
            continue; // smaller than one element per rank
        }
        let work_bytes = ctx.shape.work_count * dtype.size();
        let mut work_words = words_for(work_bytes);
        let work: &mut [u8] =
            &mut bytemuck::cast_slice_mut::<u64, u8>(&mut work_words)[..work_bytes];
        let send_range = ctx.bytes(ctx.shape.send_at..ctx.shape.send_at + ctx.shape.send_count);
        let mut source_words = words_for(send_range.len());
        let source: &mut [u8] =
            &mut bytemuck::cast_slice_mut::<u64, u8>(&mut source_words)[..send_range.len()];
        let rank = comm.rank;
        crate::dtype::fill(dtype, source, |i| input(rank, i));

        // The out-of-place variant reads a source as large as the work buffer.
        let reads_source = op.reads_source() && send_range == (0..work_bytes) && comm.world > 1;
        let (_, direct) = plan_with(op, comm, count, dtype, config.root, reads_source);
        let mut timings = [Timing::default(); 2];
        let mut latency = LatencyRecorder::new();
        for (mode, in_place) in [false, true].into_iter().enumerate() {
            let once = |comm: &mut Communicator, work: &mut [u8]| -> Result<(), CollError> {
                if in_place {
                    return comm.execute(&schedule, work, dtype, config.redop);
                }
                if reads_source {
                    // The schedule reads the separate send buffer itself (no copy).
                    return comm.execute_from(&direct, Some(&*source), work, dtype, config.redop);
                }
                // Otherwise the send buffer is copied into place first.
                work[send_range.clone()].copy_from_slice(source);
                comm.execute(&schedule, work, dtype, config.redop)
            };
            fill_input(&ctx, dtype, work);
            for _ in 0..config.warmup {
                once(comm, work)?;
            }
            comm.barrier()?;
            let start = Instant::now();
            for _ in 0..config.iters {
                let began = Instant::now();
                once(comm, work)?;
                if !in_place {
                    latency.record(began.elapsed());
                }
            }
            let seconds = start.elapsed().as_secs_f64() / config.iters.max(1) as f64;
            let mut wrong = 0;
            if config.check {
                fill_input(&ctx, dtype, work);
                once(comm, work)?;
                wrong = count_wrong(op, &ctx, dtype, config.redop, work);
            }
            timings[mode] = Timing {
                time_us: seconds * 1e6,
                wrong,
                ..Timing::default()
            };
        }
        let row = summarize(comm, op, &ctx, config, timings, &latency)?;
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Averages time and sums #wrong over ranks (through the TCP communicator), then derives
/// algbw and busbw: one row, whichever backend moved the data.
pub fn summarize(
    comm: &mut Communicator,
    op: &dyn Collective,
    ctx: &Ctx,
    config: &RunConfig,
    timings: [Timing; 2],
    latency: &LatencyRecorder,
) -> Result<Row, CollError> {
    let summed = sum_over_ranks(
        comm,
        &[
            timings[0].time_us as f32,
            timings[1].time_us as f32,
            timings[0].wrong as f32,
            timings[1].wrong as f32,
        ],
    )?;
    let world = comm.world as f64;
    let elem = config.dtype.size() as u64;
    let bytes = (ctx.shape.send_count.max(ctx.shape.recv_count) as u64) * elem;
    let finish = |time_sum: f32, wrong: f32| {
        let time_us = time_sum as f64 / world;
        let algbw = if time_us > 0.0 {
            bytes as f64 / (time_us * 1e-6) / 1e9
        } else {
            0.0
        };
        Timing {
            time_us,
            algbw_gbs: algbw,
            busbw_gbs: algbw * op.bus_factor(comm.world),
            wrong: wrong as u64,
        }
    };
    let out_of_place = finish(summed[0], summed[2]);
    let in_place = finish(summed[1], summed[3]);
    let summary = latency.summary();
    Ok(Row {
        bytes,
        count: bytes / elem,
        dtype: config.dtype,
        redop: op.has_redop().then_some(config.redop),
        root: if op.has_root() {
            config.root as i64
        } else {
            -1
        },
        time_us: out_of_place.time_us,
        algbw_gbs: out_of_place.algbw_gbs,
        busbw_gbs: out_of_place.busbw_gbs,
        wrong: out_of_place.wrong,
        in_place,
        p50_us: summary.p50,
        p99_us: summary.p99,
    })
}

/// nccl-tests' "Avg bus bandwidth": the mean of out-of-place and in-place busbw.
pub fn avg_busbw(rows: &[Row]) -> f64 {
    if rows.is_empty() {
        return 0.0;
    }
    rows.iter()
        .map(|r| r.busbw_gbs + r.in_place.busbw_gbs)
        .sum::<f64>()
        / (2 * rows.len()) as f64
}

/// The sizes `-b -e -f` (or `-i`) give, as nccl-tests computes them.
pub fn sweep(begin: u64, end: u64, factor: u64, increment: u64) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut size = begin.max(1);
    while size <= end {
        sizes.push(size);
        let next = if increment > 0 {
            size + increment
        } else {
            size.saturating_mul(factor.max(2))
        };
        if next <= size {
            break;
        }
        size = next;
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_matches_nccl_tests() {
        assert_eq!(sweep(8, 64, 2, 0), vec![8, 16, 32, 64]);
        assert_eq!(sweep(8, 100, 4, 0), vec![8, 32]);
        assert_eq!(sweep(8, 24, 2, 8), vec![8, 16, 24]);
        assert_eq!(sweep(64, 8, 2, 0), Vec::<u64>::new());
    }
}
