//! broadcast: the root's buffer reaches every rank along a pipelined chain
//! root -> root+1 -> ... busbw factor 1.

use super::{input, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::{Action, Builder};

pub struct Broadcast;

impl Collective for Broadcast {
    fn name(&self) -> &'static str {
        "broadcast"
    }
    fn bus_factor(&self, _n: usize) -> f64 {
        1.0
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
        let position = (ctx.rank + ctx.world - ctx.root) % ctx.world;
        if position > 0 {
            builder.step().recv(ctx.prev(), all.clone(), Action::Copy);
        }
        if position + 1 < ctx.world {
            builder.step().send(ctx.next(), all);
        }
    }
    fn expected(&self, ctx: &Ctx, _op: RedOp, index: usize) -> Option<f64> {
        Some(input(ctx.root, index))
    }
}
