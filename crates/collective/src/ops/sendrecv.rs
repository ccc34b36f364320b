//! sendrecv: every rank sends its buffer to rank+1 and receives rank-1's, as nccl-tests'
//! sendrecv does; the pipeline-parallel activation hop. busbw factor 1.

use super::{input, Collective, Ctx, Shape};
use crate::dtype::RedOp;
use crate::schedule::{Action, Builder};

pub struct SendRecv;

impl Collective for SendRecv {
    fn name(&self) -> &'static str {
        "sendrecv"
    }
    fn bus_factor(&self, _n: usize) -> f64 {
        1.0
    }
    fn shape(&self, count: usize, _rank: usize, _world: usize) -> Shape {
        Shape {
            send_count: count,
            recv_count: count,
            work_count: 2 * count,
            send_at: 0,
            recv_at: count,
        }
    }
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder) {
        let send = ctx.bytes(0..ctx.shape.send_count);
        let recv = ctx.bytes(ctx.shape.recv_at..ctx.shape.recv_at + ctx.shape.recv_count);
        if ctx.world == 1 {
            builder.local_copy(send, recv);
            return;
        }
        builder
            .step()
            .send(ctx.next(), send)
            .recv(ctx.prev(), recv, Action::Copy);
    }
    fn expected(&self, ctx: &Ctx, _op: RedOp, index: usize) -> Option<f64> {
        Some(input(ctx.prev(), index))
    }
}
