//! TP-ratio mapping and transfer plans. A decode rank needs the KV heads of its shard;
//! with prefill TP p and decode TP d those heads sit on one prefill rank (p = d), on a
//! slice of one (p < d), or on several (p > d). A plan lists, in stream order, which
//! source bytes go to which destination bytes: the sender writes the sources in that
//! order and the receiver scatters the stream straight into its pool.

use crate::layout::{Kv, KvLayout, KvShape, Order};
use crate::KvError;
use std::ops::Range;

/// One prefill rank a decode rank reads, and which global heads it reads there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub prefill_rank: u32,
    pub heads: Range<u32>,
}

/// The prefill ranks decode rank `decode_rank` of `decode_tp` reads from, in head order.
/// Where a head is replicated on several prefill ranks, decode ranks spread over them.
pub fn sources(
    shape: &KvShape,
    prefill_tp: u32,
    decode_tp: u32,
    decode_rank: u32,
) -> Result<Vec<Source>, KvError> {
    let wanted = shape.shard(decode_tp, decode_rank)?;
    let shards: Vec<Range<u32>> = (0..prefill_tp)
        .map(|rank| shape.shard(prefill_tp, rank))
        .collect::<Result<_, _>>()?;
    let mut out: Vec<Source> = Vec::new();
    for head in wanted {
        let holders: Vec<u32> = (0..prefill_tp)
            .filter(|&rank| shards[rank as usize].contains(&head))
            .collect();
        // Empty only for a prefill TP of 0, which a peer may announce (found by fuzzing).
        if holders.is_empty() {
            return Err(KvError::Config(format!(
                "no prefill rank of TP {prefill_tp} holds KV head {head}: the prefill's TP size must be at least 1"
            )));
        }
        let rank = holders[decode_rank as usize % holders.len()];
        match out.last_mut() {
            Some(last) if last.prefill_rank == rank && last.heads.end == head => {
                last.heads.end += 1;
            }
            _ => out.push(Source {
                prefill_rank: rank,
                heads: head..head + 1,
            }),
        }
    }
    Ok(out)
}

/// How many decode ranks read from prefill rank `prefill_rank`: its lease must see that
/// many completion notices.
pub fn readers(
    shape: &KvShape,
    prefill_tp: u32,
    decode_tp: u32,
    prefill_rank: u32,
) -> Result<u32, KvError> {
    let mut count = 0;
    for rank in 0..decode_tp {
        if sources(shape, prefill_tp, decode_tp, rank)?
            .iter()
            .any(|s| s.prefill_rank == prefill_rank)
        {
            count += 1;
        }
    }
    Ok(count)
}

/// `len` bytes from `src` in the sender's pool to `dst` in the receiver's; `block` is the
/// index of the block pair within the request (pieces never span two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Piece {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
    pub block: u32,
}

/// An IO batch holds at most this many pieces ...
pub(crate) const BATCH_PIECES: usize = 64;
/// ... and this many bytes, so that a batch's checksums read it while it is still in
/// the core's cache: right after the kernel copied it, CRC32C ran at 71 GB/s over 128 KiB
/// and 30 GB/s over 512 KiB here. On this project's veth pair one 250 MiB request ran
/// at 35 Gbit/s with checksums at 112 KiB, 15 at 512 KiB. Sizes that are multiples of
/// 64 KiB (64K, 128K, 192K, 256K) measured 13-25: keep it off them (see #15's note).
pub(crate) const BATCH_BYTES: u64 = 112 << 10;

/// Hands out `pieces` as IO batches, cutting pieces larger than what is left of
/// [`BATCH_BYTES`]. Cut pieces keep their block, so per-block checksums appended batch by
/// batch see the same bytes in the same order. No allocation: one fixed array, reused.
pub(crate) struct Batches<'p> {
    pieces: &'p [Piece],
    /// The next piece and the offset into it.
    index: usize,
    offset: u64,
    batch: [Piece; BATCH_PIECES],
}

impl<'p> Batches<'p> {
    pub(crate) fn new(pieces: &'p [Piece]) -> Self {
        Batches {
            pieces,
            index: 0,
            offset: 0,
            batch: [Piece::default(); BATCH_PIECES],
        }
    }

    /// The next batch; `None` once every byte was handed out.
    pub(crate) fn next_batch(&mut self) -> Option<&[Piece]> {
        let (mut count, mut bytes) = (0, 0u64);
        while self.index < self.pieces.len() && count < BATCH_PIECES && bytes < BATCH_BYTES {
            let piece = self.pieces[self.index];
            let take = (piece.len - self.offset).min(BATCH_BYTES - bytes);
            self.batch[count] = Piece {
                src: piece.src + self.offset,
                dst: piece.dst + self.offset,
                len: take,
                block: piece.block,
            };
            (count, bytes, self.offset) = (count + 1, bytes + take, self.offset + take);
            if self.offset >= piece.len {
                (self.index, self.offset) = (self.index + 1, 0);
            }
        }
        (count > 0).then(|| &self.batch[..count])
    }
}

fn push(out: &mut Vec<Piece>, piece: Piece) {
    if let Some(last) = out.last_mut() {
        if last.block == piece.block
            && last.src + last.len == piece.src
            && last.dst + last.len == piece.dst
        {
            last.len += piece.len;
            return;
        }
    }
    out.push(piece);
}

/// Fills `out` with the plan moving global `heads` of `src_blocks` (sender) into
/// `dst_blocks` (receiver), block pair by block pair. Stream order: block, layer, K then
/// V, then the sender's own order within the block. Both sides compute it the same way.
/// The receiver's layout may be `src` itself when only the sender's side is needed.
pub fn plan(
    src: &KvLayout,
    src_blocks: &[u32],
    dst: &KvLayout,
    dst_blocks: &[u32],
    heads: Range<u32>,
    out: &mut Vec<Piece>,
) {
    debug_assert_eq!(src_blocks.len(), dst_blocks.len());
    debug_assert!(src.heads.start <= heads.start && heads.end <= src.heads.end);
    debug_assert!(dst.heads.start <= heads.start && heads.end <= dst.heads.end);
    out.clear();
    let hb = src.shape.head_bytes();
    let (mut src_runs, mut dst_runs) = (Vec::new(), Vec::new());
    for (index, (&sb, &db)) in src_blocks.iter().zip(dst_blocks).enumerate() {
        let block = index as u32;
        for layer in 0..src.shape.layers {
            for kv in [Kv::K, Kv::V] {
                if src.shape.order == dst.shape.order {
                    // Same row order on both sides: pair the two run lists.
                    src_runs.clear();
                    dst_runs.clear();
                    src_runs.extend(src.ranges(layer, kv, sb, heads.clone()));
                    dst_runs.extend(dst.ranges(layer, kv, db, heads.clone()));
                    zip_runs(&src_runs, &dst_runs, block, out);
                } else {
                    // Different orders: row by row in the sender's order.
                    let (tokens, heads) = (0..src.shape.block_size, heads.clone());
                    let mut row = |token: u32, head: u32| {
                        push(
                            out,
                            Piece {
                                src: src.row_offset(layer, kv, sb, token, head),
                                dst: dst.row_offset(layer, kv, db, token, head),
                                len: hb,
                                block,
                            },
                        );
                    };
                    match src.shape.order {
                        Order::Nhd => tokens.for_each(|t| heads.clone().for_each(|h| row(t, h))),
                        Order::Hnd => heads.for_each(|h| tokens.clone().for_each(|t| row(t, h))),
                    }
                }
            }
        }
    }
}

fn zip_runs(src: &[Range<u64>], dst: &[Range<u64>], block: u32, out: &mut Vec<Piece>) {
    let (mut i, mut j) = (0, 0);
    let (mut s, mut d) = (src[0].start, dst[0].start);
    while i < src.len() && j < dst.len() {
        let len = (src[i].end - s).min(dst[j].end - d);
        push(
            out,
            Piece {
                src: s,
                dst: d,
                len,
                block,
            },
        );
        s += len;
        d += len;
        if s == src[i].end {
            i += 1;
            if i < src.len() {
                s = src[i].start;
            }
        }
        if d == dst[j].end {
            j += 1;
            if j < dst.len() {
                d = dst[j].start;
            }
        }
    }
    debug_assert!(
        i == src.len() && j == dst.len(),
        "run lists differ in length"
    );
}

/// Bytes of one block pair in the stream.
pub fn stream_bytes_per_block(shape: &KvShape, heads: &Range<u32>) -> u64 {
    2 * shape.layers as u64
        * shape.block_size as u64
        * (heads.end - heads.start) as u64
        * shape.head_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Dtype;
    use crate::pattern;

    #[test]
    fn batches_hand_out_every_byte_once_in_order_within_their_bounds() {
        // Merged whole blocks (2 MiB), small pieces, an empty one, and a tail.
        let mut pieces = vec![
            Piece {
                src: 0,
                dst: 1 << 30,
                len: 2 << 20,
                block: 0,
            },
            Piece {
                src: 2 << 20,
                dst: 0,
                len: 0,
                block: 1,
            },
        ];
        pieces.extend((0..100u64).map(|i| Piece {
            src: (4 << 20) + i * 4096,
            dst: (8 << 20) + i * 4096,
            len: 4096,
            block: 2 + (i / 50) as u32,
        }));
        pieces.push(Piece {
            src: 64 << 20,
            dst: 96 << 20,
            len: 700_001,
            block: 4,
        });
        let mut batches = Batches::new(&pieces);
        let mut handed: Vec<Piece> = Vec::new();
        while let Some(chunk) = batches.next_batch() {
            assert!(chunk.iter().map(|p| p.len).sum::<u64>() <= BATCH_BYTES);
            handed.extend_from_slice(chunk);
        }
        assert!(batches.next_batch().is_none());
        // Glued back together, the cut pieces are the pieces.
        let glue = |cut: &[Piece]| {
            let mut whole: Vec<Piece> = Vec::new();
            for &piece in cut {
                match whole.last_mut() {
                    Some(last)
                        if last.block == piece.block
                            && last.src + last.len == piece.src
                            && last.dst + last.len == piece.dst
                            && piece.len > 0 =>
                    {
                        last.len += piece.len;
                    }
                    _ => whole.push(piece),
                }
            }
            whole
        };
        assert_eq!(glue(&handed), glue(&pieces));
    }
    use crate::pool::KvPool;

    fn shape(order: Order) -> KvShape {
        // Small but with every dimension > 1, so misplaced bytes cannot line up by luck.
        KvShape {
            model: "tiny".into(),
            layers: 3,
            kv_heads: 8,
            head_dim: 4,
            dtype: Dtype::Bf16,
            block_size: 4,
            order,
        }
    }

    /// Moves a 3-block request from prefill TP p to decode TP d through plans and checks
    /// every decode pool byte-for-byte against what a TP 1 prefill would have written.
    fn transfer(p: u32, p_order: Order, d: u32, d_order: Order) {
        let seed = pattern::request_seed("req-7");
        let prefill_blocks = [5u32, 1, 3];
        let decode_blocks = [0u32, 4, 2];
        let prefill: Vec<KvPool> = (0..p)
            .map(|r| {
                let pool = KvPool::new(KvLayout::new(shape(p_order), p, r, 6).unwrap()).unwrap();
                pattern::fill(&pool, &prefill_blocks, seed);
                pool
            })
            .collect();
        let mut pieces = Vec::new();
        for rank in 0..d {
            let decode = KvPool::new(KvLayout::new(shape(d_order), d, rank, 5).unwrap()).unwrap();
            for source in sources(&shape(p_order), p, d, rank).unwrap() {
                let from = &prefill[source.prefill_rank as usize];
                plan(
                    from.layout(),
                    &prefill_blocks,
                    decode.layout(),
                    &decode_blocks,
                    source.heads,
                    &mut pieces,
                );
                for piece in &pieces {
                    unsafe {
                        decode
                            .slice_mut(piece.dst, piece.len)
                            .copy_from_slice(from.slice(piece.src, piece.len));
                    }
                }
            }
            pattern::check(&decode, &decode_blocks, seed)
                .unwrap_or_else(|m| panic!("p={p} d={d} rank {rank}: {m}"));
            // And the reference: a TP 1 prefill pool, read head by head, equals decode's.
            let reference = KvPool::new(KvLayout::new(shape(d_order), 1, 0, 5).unwrap()).unwrap();
            pattern::fill(&reference, &decode_blocks, seed);
            let heads = decode.layout().heads.clone();
            for layer in 0..3 {
                for kv in [Kv::K, Kv::V] {
                    for &b in &decode_blocks {
                        for t in 0..4 {
                            for h in heads.clone() {
                                let mine = unsafe {
                                    decode.slice(decode.layout().row_offset(layer, kv, b, t, h), 8)
                                };
                                let theirs = unsafe {
                                    reference
                                        .slice(reference.layout().row_offset(layer, kv, b, t, h), 8)
                                };
                                assert_eq!(
                                    mine, theirs,
                                    "p={p} d={d} layer {layer} block {b} token {t} head {h}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn equal_tp_copies_byte_for_byte() {
        transfer(1, Order::Nhd, 1, Order::Nhd);
        transfer(2, Order::Nhd, 2, Order::Nhd);
        transfer(4, Order::Hnd, 4, Order::Hnd);
    }

    #[test]
    fn smaller_prefill_tp_than_decode_copies_byte_for_byte() {
        transfer(1, Order::Nhd, 2, Order::Nhd);
        transfer(2, Order::Nhd, 8, Order::Nhd);
        transfer(1, Order::Hnd, 4, Order::Hnd);
    }

    #[test]
    fn larger_prefill_tp_than_decode_copies_byte_for_byte() {
        transfer(2, Order::Nhd, 1, Order::Nhd);
        transfer(8, Order::Nhd, 2, Order::Nhd);
        transfer(4, Order::Hnd, 1, Order::Hnd);
    }

    #[test]
    fn different_orders_and_replicated_heads_still_land_right() {
        transfer(2, Order::Hnd, 1, Order::Nhd);
        transfer(1, Order::Nhd, 4, Order::Hnd);
        transfer(16, Order::Nhd, 2, Order::Nhd);
        transfer(2, Order::Nhd, 16, Order::Nhd);
    }

    #[test]
    fn a_prefill_tp_of_zero_is_refused_not_a_panic() {
        // A Welcome may carry tp 0; sources() divided by the number of holders (fuzzing).
        let s = shape(Order::Nhd);
        assert!(sources(&s, 0, 1, 0).is_err());
        // A huge TP size (a multiple of the heads, so it shards) is refused before the
        // mapping walks every one of its ranks.
        let huge = s.kv_heads * (u32::MAX / s.kv_heads);
        assert!(sources(&s, huge, 1, 0).is_err());
        assert!(sources(&s, 2, huge, 0).is_err());
    }

    #[test]
    fn sources_and_readers_follow_the_ratio() {
        let s = shape(Order::Nhd);
        assert_eq!(
            sources(&s, 2, 1, 0).unwrap(),
            vec![
                Source {
                    prefill_rank: 0,
                    heads: 0..4
                },
                Source {
                    prefill_rank: 1,
                    heads: 4..8
                },
            ]
        );
        assert_eq!(
            sources(&s, 1, 2, 1).unwrap(),
            vec![Source {
                prefill_rank: 0,
                heads: 4..8
            }]
        );
        assert_eq!(readers(&s, 1, 4, 0).unwrap(), 4);
        assert_eq!(readers(&s, 4, 1, 2).unwrap(), 1);
        assert_eq!(readers(&s, 2, 2, 1).unwrap(), 1);
        // Replicated head 0 (TP 16 holds it on ranks 0 and 1): two decode ranks spread.
        assert_eq!(
            sources(&s, 16, 16, 1).unwrap(),
            vec![Source {
                prefill_rank: 1,
                heads: 0..1
            }]
        );
    }

    #[test]
    fn plans_of_whole_shards_are_one_piece_per_layer_and_half() {
        let layout = KvLayout::new(shape(Order::Nhd), 1, 0, 4).unwrap();
        let mut pieces = Vec::new();
        plan(&layout, &[1, 2], &layout, &[3, 0], 0..8, &mut pieces);
        assert_eq!(pieces.len(), 2 * 3 * 2);
        assert_eq!(
            pieces.iter().map(|p| p.len).sum::<u64>(),
            2 * stream_bytes_per_block(layout_shape(&layout), &(0..8))
        );
    }

    fn layout_shape(layout: &KvLayout) -> &KvShape {
        &layout.shape
    }
}
