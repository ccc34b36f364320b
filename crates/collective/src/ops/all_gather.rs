//! all_gather: every rank ends with every rank's block, in rank order. busbw factor (n-1)/n.

use super::{input, ring_all_gather, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::Builder;

pub struct AllGather;

impl Collective for AllGather {
    fn name(&self) -> &'static str {
        "all_gather"
    }
    fn bus_factor(&self, n: usize) -> f64 {
        (n as f64 - 1.0) / n as f64
    }
    fn shape(&self, count: usize, rank: usize, world: usize) -> Shape {
        let block = count / world;
        Shape {
            send_count: block,
            recv_count: block * world,
            work_count: block * world,
            send_at: rank * block,
            recv_at: 0,
        }
    }
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder) {
        ring_all_gather(ctx, builder, 0, ctx.shape.recv_count);
    }
    fn expected(&self, ctx: &Ctx, _op: RedOp, index: usize) -> Option<f64> {
        let block = ctx.shape.send_count;
        Some(input(index / block, index % block))
    }
}
