//! all_reduce: every rank ends with the reduction of all inputs (ring reduce-scatter, then
//! ring all-gather). busbw factor 2(n-1)/n.

use super::{input, ring_all_gather, ring_reduce_scatter, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::{Action, Builder};

/// Largest total a rank sends with the direct algorithm; must stay below the engine's
/// single-thread threshold.
const DIRECT_MAX_BYTES: usize = 16 * 1024;

pub struct AllReduce;

impl Collective for AllReduce {
    fn name(&self) -> &'static str {
        "all_reduce"
    }
    fn bus_factor(&self, n: usize) -> f64 {
        2.0 * (n as f64 - 1.0) / n as f64
    }
    fn has_redop(&self) -> bool {
        true
    }
    fn reads_source(&self) -> bool {
        true
    }
    fn shape(&self, count: usize, _rank: usize, _world: usize) -> Shape {
        Shape {
            send_count: count,
            recv_count: count,
            work_count: count,
            send_at: 0,
            recv_at: 0,
        }
    }
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder) {
        let bytes = ctx.shape.work_count * ctx.elem;
        if bytes * ctx.world.saturating_sub(1) <= DIRECT_MAX_BYTES {
            // One round instead of 2(n-1): latency wins for tiny messages. All sends go out
            // before any receive is reduced in (single-threaded engine path), so peers get
            // our original input.
            let all = ctx.bytes(0..ctx.shape.work_count);
            builder.step();
            for k in 1..ctx.world {
                if ctx.out_of_place {
                    builder.send_source((ctx.rank + k) % ctx.world, all.clone());
                } else {
                    builder.send((ctx.rank + k) % ctx.world, all.clone());
                }
            }
            for k in 1..ctx.world {
                let first = k == 1 && ctx.out_of_place;
                let action = if first {
                    Action::ReduceSource
                } else {
                    Action::Reduce
                };
                builder.recv(ctx.back(k), all.clone(), action);
            }
            return;
        }
        ring_reduce_scatter(ctx, builder, 0, ctx.shape.work_count);
        ring_all_gather(ctx, builder, 0, ctx.shape.work_count);
    }
    fn expected(&self, ctx: &Ctx, op: RedOp, index: usize) -> Option<f64> {
        Some(op.fold((0..ctx.world).map(|r| input(r, index))))
    }
}
const _: () = assert!(DIRECT_MAX_BYTES <= crate::comm::INLINE_BYTES);
