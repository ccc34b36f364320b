//! reduce_scatter: rank r ends with block r of the reduction. busbw factor (n-1)/n.

use super::{input, ring_reduce_scatter, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::Builder;

pub struct ReduceScatter;

impl Collective for ReduceScatter {
    fn name(&self) -> &'static str {
        "reduce_scatter"
    }
    fn bus_factor(&self, n: usize) -> f64 {
        (n as f64 - 1.0) / n as f64
    }
    fn has_redop(&self) -> bool {
        true
    }
    fn shape(&self, count: usize, rank: usize, world: usize) -> Shape {
        let block = count / world;
        Shape {
            send_count: block * world,
            recv_count: block,
            work_count: block * world,
            send_at: 0,
            recv_at: rank * block,
        }
    }
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder) {
        ring_reduce_scatter(ctx, builder, 0, ctx.shape.send_count);
    }
    fn expected(&self, ctx: &Ctx, op: RedOp, index: usize) -> Option<f64> {
        let global = ctx.rank * ctx.shape.recv_count + index;
        Some(op.fold((0..ctx.world).map(|r| input(r, global))))
    }
}
