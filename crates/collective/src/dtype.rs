//! Element types and reductions. Reductions run over whole slices of one type so the
//! compiler vectorises them; f16/bf16 go through f32 the way NCCL's CPU reference does.

use half::{bf16, f16};

pub use measure::{Dtype, RedOp};

/// The types the collectives reduce: fp8 has no arithmetic here (nccl-tests runs it only
/// on NCCL builds that have it).
pub const SUPPORTED: [Dtype; 4] = [Dtype::Fp32, Dtype::Fp16, Dtype::Bf16, Dtype::I32];

pub fn is_supported(dtype: Dtype) -> bool {
    SUPPORTED.contains(&dtype)
}

/// Writes `value(i)` for every element of `bytes`.
pub fn fill(dtype: Dtype, bytes: &mut [u8], value: impl Fn(usize) -> f64) {
    match dtype {
        Dtype::Fp32 => each_mut::<f32>(bytes, |i, x| *x = value(i) as f32),
        Dtype::I32 => each_mut::<i32>(bytes, |i, x| *x = value(i) as i32),
        Dtype::Fp16 => each_mut::<f16>(bytes, |i, x| *x = f16::from_f64(value(i))),
        Dtype::Bf16 => each_mut::<bf16>(bytes, |i, x| *x = bf16::from_f64(value(i))),
        // Unsupported (refused before a run): small integers as bytes, never a panic.
        Dtype::Fp8 => each_mut::<u8>(bytes, |i, x| *x = value(i) as u8),
    }
}

/// Counts elements that differ from `expected(i)` (values are small integers, exact in
/// every type, so equality is the right test).
pub fn count_wrong(dtype: Dtype, bytes: &[u8], expected: impl Fn(usize) -> f64) -> u64 {
    let mut wrong = 0;
    let mut check = |i: usize, got: f64| {
        if got != expected(i) {
            wrong += 1;
        }
    };
    match dtype {
        Dtype::Fp32 => each::<f32>(bytes, |i, x| check(i, x as f64)),
        Dtype::I32 => each::<i32>(bytes, |i, x| check(i, x as f64)),
        Dtype::Fp16 => each::<f16>(bytes, |i, x| check(i, x.to_f64())),
        Dtype::Bf16 => each::<bf16>(bytes, |i, x| check(i, x.to_f64())),
        Dtype::Fp8 => each::<u8>(bytes, |i, x| check(i, x as f64)),
    }
    wrong
}

fn each_mut<T: bytemuck::Pod>(bytes: &mut [u8], mut f: impl FnMut(usize, &mut T)) {
    for (i, x) in bytemuck::cast_slice_mut::<u8, T>(bytes)
        .iter_mut()
        .enumerate()
    {
        f(i, x);
    }
}

fn each<T: bytemuck::Pod>(bytes: &[u8], mut f: impl FnMut(usize, T)) {
    for (i, x) in bytemuck::cast_slice::<u8, T>(bytes).iter().enumerate() {
        f(i, *x);
    }
}

/// `dst[i] = op(dst[i], src[i])`. Both slices hold whole elements of `dtype` and are
/// aligned to it (buffers are allocated as u64 words, offsets are element multiples).
pub fn reduce_into(dtype: Dtype, op: RedOp, dst: &mut [u8], src: &[u8]) {
    debug_assert_eq!(dst.len(), src.len());
    match dtype {
        Dtype::Fp32 => native::<f32>(op, dst, src),
        Dtype::I32 => integer(op, dst, src),
        Dtype::Fp16 => widened::<f16>(op, dst, src, f16::to_f32, f16::from_f32),
        Dtype::Bf16 => widened::<bf16>(op, dst, src, bf16::to_f32, bf16::from_f32),
        Dtype::Fp8 => bytes(op, dst, src),
    }
}

fn native<T>(op: RedOp, dst: &mut [u8], src: &[u8])
where
    T: bytemuck::Pod + std::ops::Add<Output = T> + PartialOrd,
{
    let dst: &mut [T] = bytemuck::cast_slice_mut(dst);
    let src: &[T] = bytemuck::cast_slice(src);
    match op {
        RedOp::Sum => dst.iter_mut().zip(src).for_each(|(d, s)| *d = *d + *s),
        RedOp::Max => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = if *s > *d { *s } else { *d }),
        RedOp::Min => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = if *s < *d { *s } else { *d }),
    }
}

/// i32 sums wrap like NCCL's (repeated in-place timing runs grow values without bound).
fn integer(op: RedOp, dst: &mut [u8], src: &[u8]) {
    let dst: &mut [i32] = bytemuck::cast_slice_mut(dst);
    let src: &[i32] = bytemuck::cast_slice(src);
    match op {
        RedOp::Sum => dst
            .iter_mut()
            .zip(src)
            .for_each(|(d, s)| *d = d.wrapping_add(*s)),
        RedOp::Max => dst.iter_mut().zip(src).for_each(|(d, s)| *d = (*d).max(*s)),
        RedOp::Min => dst.iter_mut().zip(src).for_each(|(d, s)| *d = (*d).min(*s)),
    }
}

/// Unsupported fp8 (refused before a run) reduces as wrapping bytes rather than panic.
fn bytes(op: RedOp, dst: &mut [u8], src: &[u8]) {
    let zip = dst.iter_mut().zip(src);
    match op {
        RedOp::Sum => zip.for_each(|(d, s)| *d = d.wrapping_add(*s)),
        RedOp::Max => zip.for_each(|(d, s)| *d = (*d).max(*s)),
        RedOp::Min => zip.for_each(|(d, s)| *d = (*d).min(*s)),
    }
}

fn widened<T: bytemuck::Pod>(
    op: RedOp,
    dst: &mut [u8],
    src: &[u8],
    to: fn(T) -> f32,
    from: fn(f32) -> T,
) {
    let dst: &mut [T] = bytemuck::cast_slice_mut(dst);
    let src: &[T] = bytemuck::cast_slice(src);
    let combine: fn(f32, f32) -> f32 = match op {
        RedOp::Sum => |a, b| a + b,
        RedOp::Max => f32::max,
        RedOp::Min => f32::min,
    };
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, s)| *d = from(combine(to(*d), to(*s))));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<u64> {
        vec![0; n]
    }

    #[test]
    fn every_type_and_op_reduces() {
        for dtype in SUPPORTED {
            for op in [RedOp::Sum, RedOp::Max, RedOp::Min] {
                let mut a = words(4);
                let mut b = words(4);
                let count = 32 / dtype.size();
                let a_bytes =
                    &mut bytemuck::cast_slice_mut::<u64, u8>(&mut a)[..count * dtype.size()];
                fill(dtype, a_bytes, |i| (i % 5) as f64);
                let b_bytes =
                    &mut bytemuck::cast_slice_mut::<u64, u8>(&mut b)[..count * dtype.size()];
                fill(dtype, b_bytes, |i| (i % 3) as f64 - 1.0);
                reduce_into(dtype, op, a_bytes, b_bytes);
                let expected =
                    |i: usize| op.fold([(i % 5) as f64, (i % 3) as f64 - 1.0].into_iter());
                assert_eq!(count_wrong(dtype, a_bytes, expected), 0, "{dtype:?} {op:?}");
            }
        }
    }
}
