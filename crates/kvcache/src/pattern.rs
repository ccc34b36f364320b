//! Deterministic KV contents: every (request, layer, K|V, global head, token) row gets
//! bytes derived from those coordinates alone. Prefill fills its shard with them; decode
//! checks its own pool against them, which proves each byte reached the right place
//! whatever the TP sizes on either side (a single-rank prefill would write the same).

use crate::layout::{Kv, KvLayout};
use crate::pool::KvPool;

/// FNV-1a of the request id: the seed of all its rows.
pub fn request_seed(request_id: &str) -> u64 {
    request_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn row_seed(seed: u64, layer: u32, kv: Kv, head: u32, token: u64) -> u64 {
    let coords = ((layer as u64) << 48) ^ ((kv as u64) << 47) ^ ((head as u64) << 32) ^ token;
    splitmix(seed ^ splitmix(coords))
}

/// Word `i` of a row is a mix of `seed + (i + 1) * GOLDEN`: distinct per row (the seed)
/// and per position (the index), and every word independent of the others, so filling
/// and checking vectorise (no serial chain as in a PRNG stream).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn row_word(seed: u64, index: u64) -> u64 {
    let x = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN));
    x ^ (x >> 29)
}

fn fill_row(seed: u64, out: &mut [u8]) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut words = 0u64;
    for chunk in &mut chunks {
        chunk.copy_from_slice(&row_word(seed, words).to_le_bytes());
        words += 1;
    }
    let tail = chunks.into_remainder();
    let last = row_word(seed, words).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// Whether `got` is exactly the row `fill_row(seed, ..)` writes; no buffer, no branch
/// per word.
fn row_matches(seed: u64, got: &[u8]) -> bool {
    let mut chunks = got.chunks_exact(8);
    let mut diff = 0u64;
    for (i, chunk) in (&mut chunks).enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        diff |= word ^ row_word(seed, i as u64);
    }
    let tail = chunks.remainder();
    let last = row_word(seed, (got.len() / 8) as u64).to_le_bytes();
    diff == 0 && tail == &last[..tail.len()]
}

/// Calls `row(layer, kv, block_index, block, token_in_block, head)` for every row.
fn for_each_row(
    layout: &KvLayout,
    blocks: &[u32],
    mut row: impl FnMut(u32, Kv, usize, u32, u32, u32),
) {
    for (index, &block) in blocks.iter().enumerate() {
        for layer in 0..layout.shape.layers {
            for kv in [Kv::K, Kv::V] {
                for head in layout.heads.clone() {
                    for token in 0..layout.shape.block_size {
                        row(layer, kv, index, block, token, head);
                    }
                }
            }
        }
    }
}

/// Writes the request's rows into `blocks` (the request's blocks, in token order).
///
/// The caller must hold `blocks` exclusively.
pub fn fill(pool: &KvPool, blocks: &[u32], seed: u64) {
    let layout = pool.layout();
    let hb = layout.shape.head_bytes();
    let bs = layout.shape.block_size as u64;
    for_each_row(layout, blocks, |layer, kv, index, block, token, head| {
        let offset = layout.row_offset(layer, kv, block, token, head);
        // SAFETY: the caller holds these blocks exclusively.
        let out = unsafe { pool.slice_mut(offset, hb) };
        fill_row(
            row_seed(seed, layer, kv, head, index as u64 * bs + token as u64),
            out,
        );
    });
}

/// Where a check found a wrong byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub block_index: usize,
    pub layer: u32,
    pub kv: Kv,
    pub head: u32,
    pub token: u64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrong bytes at block {} of the request (layer {}, {:?}, head {}, token {})",
            self.block_index, self.layer, self.kv, self.head, self.token
        )
    }
}

/// Checks that `blocks` hold exactly the request's rows for this rank's heads.
///
/// No thread may write `blocks` during the check.
pub fn check(pool: &KvPool, blocks: &[u32], seed: u64) -> Result<(), Mismatch> {
    let layout = pool.layout();
    let hb = layout.shape.head_bytes();
    let bs = layout.shape.block_size as u64;
    let mut first = None;
    for_each_row(layout, blocks, |layer, kv, index, block, token, head| {
        if first.is_some() {
            return;
        }
        let position = index as u64 * bs + token as u64;
        // SAFETY: nobody writes these blocks during the check (caller's contract).
        let got = unsafe { pool.slice(layout.row_offset(layer, kv, block, token, head), hb) };
        if !row_matches(row_seed(seed, layer, kv, head, position), got) {
            first = Some(Mismatch {
                block_index: index,
                layer,
                kv,
                head,
                token: position,
            });
        }
    });
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_matches_only_itself() {
        for len in [1usize, 7, 8, 9, 64, 250, 256] {
            let mut row = vec![0u8; len];
            fill_row(42, &mut row);
            assert!(row_matches(42, &row), "len {len}");
            assert!(!row_matches(43, &row), "another row's seed, len {len}");
            for at in [0, len / 2, len - 1] {
                let mut bad = row.clone();
                bad[at] ^= 0x10;
                assert!(!row_matches(42, &bad), "byte {at} of {len} flipped");
            }
        }
        // A row shifted by one word is not the row.
        let mut row = vec![0u8; 64];
        fill_row(7, &mut row);
        let mut shifted = row.clone();
        shifted.rotate_left(8);
        assert!(!row_matches(7, &shifted));
    }
}
