//! alltoall: block j of rank i's send buffer lands in block i of rank j's receive buffer.
//! Step s pairs rank r with r+s (send) and r-s (receive). busbw factor (n-1)/n.

use super::{input, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::{Action, Builder};

pub struct AllToAll;

impl Collective for AllToAll {
    fn name(&self) -> &'static str {
        "alltoall"
    }
    fn bus_factor(&self, n: usize) -> f64 {
        (n as f64 - 1.0) / n as f64
    }
    fn shape(&self, count: usize, _rank: usize, world: usize) -> Shape {
        let total = count / world * world;
        Shape {
            send_count: total,
            recv_count: total,
            work_count: 2 * total,
            send_at: 0,
            recv_at: total,
        }
    }
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder) {
        let block = ctx.shape.send_count / ctx.world;
        let send_block = |j: usize| ctx.bytes(j * block..(j + 1) * block);
        let recv_block = |j: usize| {
            ctx.bytes(ctx.shape.recv_at + j * block..ctx.shape.recv_at + (j + 1) * block)
        };
        builder.local_copy(send_block(ctx.rank), recv_block(ctx.rank));
        for step in 1..ctx.world {
            let to = (ctx.rank + step) % ctx.world;
            let from = ctx.back(step);
            builder
                .step()
                .send(to, send_block(to))
                .recv(from, recv_block(from), Action::Copy);
        }
    }
    fn expected(&self, ctx: &Ctx, _op: RedOp, index: usize) -> Option<f64> {
        let block = ctx.shape.send_count / ctx.world;
        Some(input(index / block, ctx.rank * block + index % block))
    }
}
