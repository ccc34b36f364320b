//! reduce: the root ends with the reduction of all inputs, along a pipelined chain
//! root+1 -> root+2 -> ... -> root. busbw factor 1.

use super::{input, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::{Action, Builder};

pub struct Reduce;

impl Collective for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
    }
    fn bus_factor(&self, _n: usize) -> f64 {
        1.0
    }
    fn has_redop(&self) -> bool {
        true
    }
    fn has_root(&self) -> bool {
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
        let all = ctx.bytes(0..ctx.shape.work_count);
        // Chain position: root+1 starts (0), the root ends (n-1).
        let position = (ctx.rank + 2 * ctx.world - ctx.root - 1) % ctx.world;
        if position > 0 {
            builder.step().recv(ctx.prev(), all.clone(), Action::Reduce);
        }
        if position + 1 < ctx.world {
            builder.step().send(ctx.next(), all);
        }
    }
    fn expected(&self, ctx: &Ctx, op: RedOp, index: usize) -> Option<f64> {
        (ctx.rank == ctx.root).then(|| op.fold((0..ctx.world).map(|r| input(r, index))))
    }
}
