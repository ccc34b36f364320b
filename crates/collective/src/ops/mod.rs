//! Each collective is a small descriptor: its name, its buffers, its bus-bandwidth factor,
//! its schedule, and the value every output element must hold. The harness does the rest.
//!
//! Bus bandwidth (nccl-tests): algbw = size / time; busbw = algbw x factor, with factor
//! 2(n-1)/n for all_reduce, (n-1)/n for all_gather, reduce_scatter and alltoall, and 1 for
//! broadcast, reduce and sendrecv.

mod all_gather;
mod all_reduce;
mod alltoall;
mod broadcast;
mod reduce;
mod reduce_scatter;
mod sendrecv;

use crate::dtype::RedOp;
use crate::schedule::{chunk, Action, Builder};
use std::ops::Range;

/// Element counts and where send and receive data live in the one work buffer
/// (in-place layout, as NCCL defines it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub send_count: usize,
    pub recv_count: usize,
    pub work_count: usize,
    pub send_at: usize,
    pub recv_at: usize,
}

/// Who runs the collective and how big elements are.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub rank: usize,
    pub world: usize,
    pub root: usize,
    pub elem: usize,
    pub shape: Shape,
    /// Build the out-of-place variant: read the caller's source buffer directly
    /// (only for descriptors whose `reads_source` is true).
    pub out_of_place: bool,
}

impl Ctx {
    pub fn next(&self) -> usize {
        (self.rank + 1) % self.world
    }

    pub fn prev(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    /// `rank - k` on the ring.
    pub fn back(&self, k: usize) -> usize {
        (self.rank + self.world * 2 - k % self.world) % self.world
    }

    /// Element range -> byte range.
    pub fn bytes(&self, elements: Range<usize>) -> Range<usize> {
        elements.start * self.elem..elements.end * self.elem
    }
}

/// The input element `index` of `rank`'s send buffer: small integers, exact in every dtype
/// even summed over 8 ranks.
pub fn input(rank: usize, index: usize) -> f64 {
    (((rank + 1) * (index % 13 + 1)) % 17) as f64
}

pub trait Collective: Sync {
    fn name(&self) -> &'static str;
    fn bus_factor(&self, world: usize) -> f64;
    fn has_redop(&self) -> bool {
        false
    }
    fn has_root(&self) -> bool {
        false
    }
    /// Whether `schedule` honours `ctx.out_of_place` by reading the source buffer itself
    /// (otherwise the harness copies the source into the work buffer first).
    fn reads_source(&self) -> bool {
        false
    }
    /// Buffers for nccl-tests' `count` (the larger side's elements).
    fn shape(&self, count: usize, rank: usize, world: usize) -> Shape;
    fn schedule(&self, ctx: &Ctx, builder: &mut Builder);
    /// What receive element `index` must hold; None where the result is unspecified.
    fn expected(&self, ctx: &Ctx, op: RedOp, index: usize) -> Option<f64>;
}

pub fn by_name(name: &str) -> Option<&'static dyn Collective> {
    all()
        .into_iter()
        .find(|c| c.name() == name.replace('-', "_"))
}

pub fn all() -> [&'static dyn Collective; 7] {
    [
        &all_reduce::AllReduce,
        &all_gather::AllGather,
        &reduce_scatter::ReduceScatter,
        &broadcast::Broadcast,
        &reduce::Reduce,
        &alltoall::AllToAll,
        &sendrecv::SendRecv,
    ]
}

/// Ring reduce-scatter over `count` elements at `base`: afterwards this rank's chunk
/// `rank` holds the reduction over all ranks.
pub(crate) fn ring_reduce_scatter(ctx: &Ctx, builder: &mut Builder, base: usize, count: usize) {
    let n = ctx.world;
    let at = |c: usize| {
        let r = chunk(count, n, c);
        ctx.bytes(base + r.start..base + r.end)
    };
    // Out-of-place: step 0 sends raw input, and each chunk's single reduction reads the
    // source, so the work buffer needs no copy of the input.
    let (first, reduce) = if ctx.out_of_place {
        (true, Action::ReduceSource)
    } else {
        (false, Action::Reduce)
    };
    for step in 0..n.saturating_sub(1) {
        let builder = builder.step();
        if step == 0 && first {
            builder.send_source(ctx.next(), at(ctx.back(1)));
        } else {
            builder.send(ctx.next(), at(ctx.back(step + 1)));
        }
        builder.recv(ctx.prev(), at(ctx.back(step + 2)), reduce);
    }
}

/// Ring all-gather over `count` elements at `base`, each rank starting with its own chunk.
pub(crate) fn ring_all_gather(ctx: &Ctx, builder: &mut Builder, base: usize, count: usize) {
    let n = ctx.world;
    let at = |c: usize| {
        let r = chunk(count, n, c);
        ctx.bytes(base + r.start..base + r.end)
    };
    for step in 0..n.saturating_sub(1) {
        builder.step().send(ctx.next(), at(ctx.back(step))).recv(
            ctx.prev(),
            at(ctx.back(step + 1)),
            Action::Copy,
        );
    }
}
