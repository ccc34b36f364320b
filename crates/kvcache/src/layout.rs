//! Where every KV byte lives in a paged pool. Per layer the pool holds one tensor
//! `[2, num_blocks, block_size, kv_heads / TP, head_dim]` (NHD, vLLM's default) or
//! `[2, num_blocks, kv_heads / TP, block_size, head_dim]` (HND); layers follow each other.

use crate::KvError;
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub use measure::Dtype;

/// Order of the two inner dimensions of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Token-major: one token's heads are adjacent.
    Nhd,
    /// Head-major: one head's tokens are adjacent.
    Hnd,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Nhd => "NHD",
            Order::Hnd => "HND",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kv {
    K = 0,
    V = 1,
}

/// The model-side facts of a KV cache: what both ends of a transfer must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvShape {
    pub model: String,
    pub layers: u32,
    /// KV heads of the whole model (before TP).
    pub kv_heads: u32,
    pub head_dim: u32,
    pub dtype: Dtype,
    pub block_size: u32,
    pub order: Order,
}

impl KvShape {
    /// The largest block [`KvShape::raw`] can describe.
    pub const RAW_MAX: u64 = 256 << 20;

    /// A model-free pool of `block_bytes`-byte blocks (a power of two, 2 B ..
    /// [`KvShape::RAW_MAX`]), for block-size sweeps as nixlbench runs them: one layer,
    /// one fp8 head, so each block is two contiguous halves (K and V).
    pub fn raw(block_bytes: u64) -> Result<KvShape, KvError> {
        if !block_bytes.is_power_of_two() || !(2..=Self::RAW_MAX).contains(&block_bytes) {
            return Err(KvError::Config(format!(
                "raw block of {block_bytes} bytes: give a power of two from 2 B to {} MiB",
                Self::RAW_MAX >> 20
            )));
        }
        let head_dim = (block_bytes / 2).min(65536);
        let shape = KvShape {
            model: format!("raw-{block_bytes}"),
            layers: 1,
            kv_heads: 1,
            head_dim: head_dim as u32,
            dtype: Dtype::Fp8,
            block_size: (block_bytes / 2 / head_dim) as u32,
            order: Order::Nhd,
        };
        shape.validate()?;
        Ok(shape)
    }

    pub fn from_model(
        model: &model::ModelShape,
        dtype: Option<Dtype>,
        block_size: u32,
        order: Order,
    ) -> Result<KvShape, KvError> {
        let dtype = dtype.unwrap_or(model.dtype);
        let shape = KvShape {
            model: model.name.clone(),
            layers: u32::try_from(model.layers).unwrap_or(u32::MAX),
            kv_heads: u32::try_from(model.kv_heads).unwrap_or(u32::MAX),
            head_dim: u32::try_from(model.head_dim).unwrap_or(u32::MAX),
            dtype,
            block_size,
            order,
        };
        shape.validate()?;
        Ok(shape)
    }

    pub fn validate(&self) -> Result<(), KvError> {
        if self.layers == 0 || self.kv_heads == 0 || self.head_dim == 0 {
            return Err(KvError::Config(format!(
                "model {} has a zero in layers/kv_heads/head_dim: fix its config",
                self.model
            )));
        }
        if self.block_size == 0 || self.block_size > 4096 {
            return Err(KvError::Config(format!(
                "block size {} is outside 1..=4096 tokens: set {} to 16 (vLLM's default)",
                self.block_size,
                measure::Setting::BlockSize
            )));
        }
        if self.layers > 4096 || self.kv_heads > 4096 || self.head_dim > 65536 {
            return Err(KvError::Config(format!(
                "model {} is implausibly large (layers {}, kv_heads {}, head_dim {}): fix its config",
                self.model, self.layers, self.kv_heads, self.head_dim
            )));
        }
        Ok(())
    }

    /// Bytes of one head's vector for one token.
    pub fn head_bytes(&self) -> u64 {
        self.head_dim as u64 * self.dtype.size() as u64
    }

    /// KV bytes per token over the whole model (all heads, K and V, every layer).
    pub fn bytes_per_token(&self) -> u64 {
        2 * self.layers as u64 * self.kv_heads as u64 * self.head_bytes()
    }

    /// Which KV heads TP rank `rank` of `tp` holds. With fewer KV heads than ranks, each
    /// head is replicated on `tp / kv_heads` consecutive ranks (as vLLM does).
    pub fn shard(&self, tp: u32, rank: u32) -> Result<Range<u32>, KvError> {
        if tp == 0 || rank >= tp {
            return Err(KvError::Config(format!(
                "TP rank {rank} is outside TP size {tp}: ranks run from 0 to TP-1"
            )));
        }
        // A peer announces its TP size; the TP-ratio mapping walks every rank of it.
        if tp > MAX_TP {
            return Err(KvError::Config(format!(
                "TP size {tp} is above {MAX_TP}: no deployment has that many ranks in one TP group"
            )));
        }
        if self.kv_heads >= tp {
            if !self.kv_heads.is_multiple_of(tp) {
                return Err(KvError::Config(format!(
                    "{} KV heads do not split evenly over TP {tp}: use a TP size that divides {}",
                    self.kv_heads, self.kv_heads
                )));
            }
            let per = self.kv_heads / tp;
            Ok(rank * per..(rank + 1) * per)
        } else {
            if !tp.is_multiple_of(self.kv_heads) {
                return Err(KvError::Config(format!(
                    "TP {tp} is not a multiple of the model's {} KV heads: use a TP size that divides or is a multiple of it",
                    self.kv_heads
                )));
            }
            let head = rank / (tp / self.kv_heads);
            Ok(head..head + 1)
        }
    }
}

/// The largest TP group either side may announce.
pub const MAX_TP: u32 = 1024;

/// One rank's pool: the shape, which heads it holds, and how many blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLayout {
    pub shape: KvShape,
    pub tp: u32,
    pub tp_rank: u32,
    pub heads: Range<u32>,
    pub num_blocks: u32,
}

impl KvLayout {
    pub fn new(shape: KvShape, tp: u32, tp_rank: u32, num_blocks: u32) -> Result<Self, KvError> {
        shape.validate()?;
        let heads = shape.shard(tp, tp_rank)?;
        if num_blocks == 0 {
            return Err(KvError::Config(format!(
                "a pool of 0 blocks holds nothing: set {} to 1 or more",
                measure::Setting::PoolBlocks
            )));
        }
        Ok(KvLayout {
            shape,
            tp,
            tp_rank,
            heads,
            num_blocks,
        })
    }

    pub fn local_heads(&self) -> u64 {
        (self.heads.end - self.heads.start) as u64
    }

    /// Bytes of one block of K (or V) in one layer on this rank.
    pub fn block_bytes(&self) -> u64 {
        self.shape.block_size as u64 * self.local_heads() * self.shape.head_bytes()
    }

    /// Bytes a block occupies across all layers, K and V.
    pub fn block_bytes_all_layers(&self) -> u64 {
        2 * self.shape.layers as u64 * self.block_bytes()
    }

    pub fn layer_bytes(&self) -> u64 {
        2 * self.num_blocks as u64 * self.block_bytes()
    }

    pub fn pool_bytes(&self) -> u64 {
        self.shape.layers as u64 * self.layer_bytes()
    }

    /// Offset of (layer, K|V, block) in the pool.
    pub fn block_offset(&self, layer: u32, kv: Kv, block: u32) -> u64 {
        layer as u64 * self.layer_bytes()
            + (kv as u64 * self.num_blocks as u64 + block as u64) * self.block_bytes()
    }

    /// Offset of one token's vector of global head `head` (which this rank must hold).
    pub fn row_offset(&self, layer: u32, kv: Kv, block: u32, token: u32, head: u32) -> u64 {
        debug_assert!(self.heads.contains(&head));
        let h = (head - self.heads.start) as u64;
        let t = token as u64;
        let inner = match self.shape.order {
            Order::Nhd => t * self.local_heads() + h,
            Order::Hnd => h * self.shape.block_size as u64 + t,
        };
        self.block_offset(layer, kv, block) + inner * self.shape.head_bytes()
    }

    /// The byte ranges of (layer, K|V, block, global heads), in increasing order.
    pub fn ranges(&self, layer: u32, kv: Kv, block: u32, heads: Range<u32>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for_each_run(self, layer, kv, block, heads, |start, len| {
            out.push(start..start + len);
        });
        out
    }

    pub fn check_block(&self, block: u32) -> Result<(), KvError> {
        if block >= self.num_blocks {
            return Err(KvError::Refused(format!(
                "block id {block} is out of range: this pool has {} blocks (0..{})",
                self.num_blocks, self.num_blocks
            )));
        }
        Ok(())
    }
}

/// Calls `run(offset, len)` for each contiguous run of (layer, kv, block, heads).
fn for_each_run(
    layout: &KvLayout,
    layer: u32,
    kv: Kv,
    block: u32,
    heads: Range<u32>,
    mut run: impl FnMut(u64, u64),
) {
    let hb = layout.shape.head_bytes();
    let count = (heads.end - heads.start) as u64;
    match layout.shape.order {
        Order::Hnd => run(
            layout.row_offset(layer, kv, block, 0, heads.start),
            count * layout.shape.block_size as u64 * hb,
        ),
        Order::Nhd if heads == layout.heads => {
            run(layout.block_offset(layer, kv, block), layout.block_bytes());
        }
        Order::Nhd => {
            for t in 0..layout.shape.block_size {
                run(
                    layout.row_offset(layer, kv, block, t, heads.start),
                    count * hb,
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn llama8b(order: Order) -> KvShape {
        KvShape {
            model: "llama-3.1-8b".into(),
            layers: 32,
            kv_heads: 8,
            head_dim: 128,
            dtype: Dtype::Bf16,
            block_size: 16,
            order,
        }
    }

    #[test]
    fn llama_8b_is_128_kib_per_token_and_2_mib_per_block() {
        let shape = llama8b(Order::Nhd);
        assert_eq!(shape.bytes_per_token(), 131_072);
        let layout = KvLayout::new(shape, 1, 0, 10).unwrap();
        assert_eq!(layout.block_bytes(), 16 * 8 * 256);
        assert_eq!(layout.block_bytes_all_layers(), 2 << 20);
        assert_eq!(layout.pool_bytes(), 20 << 20);
        assert_eq!(
            layout.block_offset(1, Kv::V, 3),
            2 * 10 * 32768 + 13 * 32768
        );
    }

    #[test]
    fn shards_split_heads_and_replicate_when_tp_exceeds_them() {
        let shape = llama8b(Order::Nhd);
        assert_eq!(shape.shard(2, 1).unwrap(), 4..8);
        assert_eq!(shape.shard(8, 7).unwrap(), 7..8);
        assert_eq!(shape.shard(16, 3).unwrap(), 1..2);
        assert!(shape
            .shard(3, 0)
            .unwrap_err()
            .to_string()
            .contains("evenly"));
        assert!(shape.shard(2, 2).is_err());
        assert!(shape.shard(12, 0).is_err());
    }

    #[test]
    fn ranges_follow_the_order() {
        let nhd = KvLayout::new(llama8b(Order::Nhd), 2, 0, 4).unwrap();
        // NHD: a sub-range of heads is one run per token.
        let runs = nhd.ranges(0, Kv::K, 1, 1..3);
        assert_eq!(runs.len(), 16);
        let base = nhd.block_offset(0, Kv::K, 1);
        assert_eq!(runs[0], base + 256..base + 768);
        assert_eq!(runs[1].start, base + 4 * 256 + 256);
        // All of the rank's heads: the whole block in one run.
        assert_eq!(
            nhd.ranges(0, Kv::K, 1, 0..4),
            vec![base..base + 16 * 4 * 256]
        );
        // HND: a head range is one run.
        let hnd = KvLayout::new(llama8b(Order::Hnd), 2, 1, 4).unwrap();
        let base = hnd.block_offset(2, Kv::V, 3);
        assert_eq!(
            hnd.ranges(2, Kv::V, 3, 5..7),
            vec![base + 16 * 256..base + 3 * 16 * 256]
        );
    }

    #[test]
    fn out_of_range_blocks_are_refused_with_the_pool_size() {
        let layout = KvLayout::new(llama8b(Order::Nhd), 1, 0, 4).unwrap();
        assert!(layout.check_block(3).is_ok());
        let e = layout.check_block(4).unwrap_err().to_string();
        assert!(e.contains("out of range") && e.contains("4 blocks"), "{e}");
    }

    #[test]
    fn raw_blocks_are_exactly_the_asked_size() {
        for bytes in [2u64, 1 << 10, 64 << 10, 1 << 20, 64 << 20, KvShape::RAW_MAX] {
            let layout = KvLayout::new(KvShape::raw(bytes).unwrap(), 1, 0, 4).unwrap();
            assert_eq!(layout.block_bytes_all_layers(), bytes, "{bytes}");
        }
        for bad in [0u64, 3, 1000, KvShape::RAW_MAX * 2] {
            assert!(KvShape::raw(bad).is_err(), "{bad}");
        }
    }
}
