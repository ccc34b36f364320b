//! Every operation x dtype x reduction on 2, 3 and 4 ranks (threads over loopback), odd
//! sizes, in-place and out-of-place, with the harness's own element-by-element check.

use collective::{ops, run, run_local, Dtype, RedOp, RunConfig};
use std::time::Duration;

const DTYPES: [Dtype; 4] = [Dtype::Fp32, Dtype::Fp16, Dtype::Bf16, Dtype::I32];
const REDOPS: [RedOp; 3] = [RedOp::Sum, RedOp::Max, RedOp::Min];

fn matrix(world: usize) {
    let results = run_local(world, Duration::from_secs(20), |comm| {
        let mut failures = Vec::new();
        for op in ops::all() {
            for dtype in DTYPES {
                let elem = dtype.size() as u64;
                // 1 and 7 elements (fewer than ranks for some ops), an odd count, and one
                // large enough to use several pipeline segments and the sender thread.
                let mut sizes = vec![elem, 7 * elem, 1001 * elem];
                if dtype == Dtype::Fp32 || dtype == Dtype::Bf16 {
                    sizes.push(600_001 * elem);
                }
                let redops: &[RedOp] = if op.has_redop() { &REDOPS } else { &REDOPS[..1] };
                for &redop in redops {
                    for root in 0..if op.has_root() { world } else { 1 } {
                        let config = RunConfig { op, dtype, redop, root, sizes: sizes.clone(), iters: 1, warmup: 0, check: true };
                        let rows = run(comm, &config, |_| {})?;
                        for row in rows {
                            if row.wrong != 0 || row.in_place.wrong != 0 {
                                failures.push(format!(
                                    "{} {:?} {:?} root {root} {} B: {} wrong out-of-place, {} in-place",
                                    op.name(), dtype, redop, row.bytes, row.wrong, row.in_place.wrong
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(failures)
    })
    .expect("the local job runs");
    let failures: Vec<String> = results.into_iter().flatten().collect();
    assert!(
        failures.is_empty(),
        "{world} ranks:\n{}",
        failures.join("\n")
    );
}

#[test]
fn two_ranks() {
    matrix(2);
}

#[test]
fn three_ranks() {
    matrix(3);
}

#[test]
fn four_ranks() {
    matrix(4);
}

#[test]
fn one_rank_is_a_copy() {
    matrix(1);
}

#[test]
fn the_check_catches_a_wrong_result() {
    // A schedule that skips the all-gather half leaves other ranks' chunks unreduced.
    let wrong = run_local(2, Duration::from_secs(10), |comm| {
        let op = ops::by_name("all_reduce").unwrap();
        let (ctx, _) = collective::plan(op, comm, 64, Dtype::Fp32, 0);
        let mut builder = collective::Builder::new(4);
        let mut words = vec![0u64; 32];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        collective::dtype::fill(Dtype::Fp32, bytes, |i| ops::input(comm.rank, i));
        let count = ctx.shape.work_count;
        for step in 0..1 {
            let send = collective::chunk(count, 2, (comm.rank + 2 - step - 1) % 2);
            let recv = collective::chunk(count, 2, (comm.rank + 4 - step - 2) % 2);
            builder
                .step()
                .send((comm.rank + 1) % 2, ctx.bytes(send))
                .recv(
                    (comm.rank + 1) % 2,
                    ctx.bytes(recv),
                    collective::Action::Reduce,
                );
        }
        comm.execute(&builder.build(), bytes, Dtype::Fp32, RedOp::Sum)?;
        Ok(collective::dtype::count_wrong(Dtype::Fp32, bytes, |i| {
            op.expected(&ctx, RedOp::Sum, i).unwrap()
        }))
    })
    .unwrap();
    assert!(wrong.iter().all(|&w| w == 32), "{wrong:?}");
}

#[test]
fn an_all_reduce_over_a_group_sums_only_that_group() {
    // Two TP groups of two in a four-rank job (a TP2 x PP2 layout): each group sums its own
    // ranks' values and never talks to the other group.
    let op = ops::by_name("all_reduce").unwrap();
    let sums = run_local(4, Duration::from_secs(20), |comm| {
        let group: Vec<usize> = if comm.rank < 2 {
            vec![0, 1]
        } else {
            vec![2, 3]
        };
        let schedule = collective::plan_group(op, comm, &group, 4, Dtype::Fp32)?;
        // u64 words: the engine wants an 8-byte-aligned buffer.
        let mut words = [0u64; 2];
        let values: &mut [f32] = bytemuck::cast_slice_mut(&mut words);
        values.fill((comm.rank + 1) as f32);
        comm.execute(
            &schedule,
            bytemuck::cast_slice_mut(&mut words),
            Dtype::Fp32,
            RedOp::Sum,
        )?;
        Ok(bytemuck::cast_slice::<u64, f32>(&words)[0])
    })
    .unwrap();
    assert_eq!(sums, vec![3.0, 3.0, 7.0, 7.0]);
    let outside = run_local(2, Duration::from_secs(10), |comm| {
        Ok(collective::plan_group(op, comm, &[5, 6], 4, Dtype::Fp32).is_err())
    })
    .unwrap();
    assert_eq!(outside, vec![true, true]);
}
