//! Every decoder that reads a peer's bytes or a user's file, as one function of arbitrary
//! bytes. Each must return on any input: no panic (an overflow, an index, an `expect`),
//! no hang, no allocation out of proportion to the input. A decoded message must also
//! survive its own round trip (what we accept, we can send back unchanged).
//!
//! `fuzz/` runs these under libFuzzer (cargo-fuzz, nightly: `scripts/fuzz`); the tests run
//! them on stable over the in-tree seed corpus (`fuzz/corpus/<target>/`) and a fixed set of
//! mutations of it, so CI keeps every past finding fixed.

mod seeds;

use fabric::control::{decode, encode, Wire};
use std::fmt::Debug;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// Runs the decoder on `data`: true when the input was accepted whole, false when it
    /// was refused; panics only on a bug.
    pub run: fn(&[u8]) -> bool,
    /// Valid inputs to start from (the corpus in `fuzz/corpus/<name>/` holds them).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "frame_control",
        run: frame_control,
        seeds: seeds::control,
    },
    Target {
        name: "frame_kvxfer",
        run: frame_kvxfer,
        seeds: seeds::kvxfer,
    },
    Target {
        name: "frame_pair",
        run: frame_pair,
        seeds: seeds::pair,
    },
    Target {
        name: "frame_cluster",
        run: frame_cluster,
        seeds: seeds::cluster,
    },
    Target {
        name: "rendezvous",
        run: rendezvous,
        seeds: seeds::rendezvous,
    },
    Target {
        name: "rdma_endpoint",
        run: rdma_endpoint,
        seeds: seeds::rdma_endpoint,
    },
    Target {
        name: "kv_layout",
        run: kv_layout,
        seeds: seeds::kv_layout,
    },
    Target {
        name: "units",
        run: units,
        seeds: seeds::units,
    },
    Target {
        name: "user_files",
        run: user_files,
        seeds: seeds::user_files,
    },
];

pub fn by_name(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Decodes frames of message set `M` from a byte stream, as a session reads them, and
/// checks that each decoded message re-encodes to a frame that decodes to the same message.
fn frames<M: Wire + PartialEq + Debug>(mut data: &[u8]) -> bool {
    let mut decoded = false;
    while let Ok(Some((message, used))) = decode::<M>(data) {
        decoded = true;
        assert!(
            used > 0 && used <= data.len(),
            "decode used {used} of {}",
            data.len()
        );
        let mut again = Vec::new();
        encode(&message, &mut again);
        match decode::<M>(&again) {
            Ok(Some((back, n))) => {
                assert_eq!(n, again.len());
                assert_eq!(
                    back, message,
                    "a decoded message did not survive its round trip"
                );
            }
            other => panic!("{message:?} re-encoded to a frame that decodes as {other:?}"),
        }
        data = &data[used..];
    }
    decoded && data.is_empty()
}

pub fn frame_control(data: &[u8]) -> bool {
    frames::<fabric::perf::wire::PerfMessage>(data)
}

pub fn frame_kvxfer(data: &[u8]) -> bool {
    frames::<kvcache::wire::KvMessage>(data)
}

pub fn frame_pair(data: &[u8]) -> bool {
    frames::<probe::pair::wire::PairMessage>(data)
}

pub fn frame_cluster(data: &[u8]) -> bool {
    frames::<probe::cluster::ClusterMessage>(data)
}

/// The collective rendezvous's message set on the session frame (its own, larger bound).
pub fn rendezvous(data: &[u8]) -> bool {
    frames::<collective::rendezvous::Message>(data)
}

/// An RDMA request as a server receives it: the test's bounds, then the peer's endpoint
/// and region checked against them, then the offsets the data path would compute.
pub fn rdma_endpoint(data: &[u8]) -> bool {
    use fabric::rdma::handshake::{check_endpoint, RdmaRequest};
    let Ok(request) = serde_json::from_slice::<RdmaRequest>(data) else {
        return false;
    };
    if request.test.validate().is_err() {
        return false;
    }
    let layout = request.test.layout();
    assert!(layout.slots >= 1, "a valid test has at least one slot");
    for qp in 0..request.test.qps.min(64) {
        for n in [0, 1, layout.slots, u64::MAX] {
            let offset = request.test.slot_offset(&layout, qp, n);
            assert!(
                offset + request.test.size <= layout.region,
                "slot {n} of QP {qp} lies outside the region"
            );
        }
    }
    if check_endpoint(&request.test, &request.endpoint).is_err() {
        return false;
    }
    let region = request.endpoint.region;
    // Every slot a valid test addresses lies inside a region that passed the check.
    for qp in 0..request.test.qps.min(64) {
        let offset = request.test.slot_offset(&layout, qp, layout.slots - 1);
        assert!(region.at(offset, request.test.size).is_ok());
    }
    true
}

/// Reads little-endian integers off the front of the fuzz input.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u32(&mut self) -> u32 {
        let (head, rest) = self.0.split_at(self.0.len().min(4));
        self.0 = rest;
        let mut word = [0u8; 4];
        word[..head.len()].copy_from_slice(head);
        u32::from_le_bytes(word)
    }
}

/// A KV shape from arbitrary numbers (what an Attach or Welcome may carry), then the
/// layout, shards, readers and a transfer plan between two such layouts.
pub fn kv_layout(data: &[u8]) -> bool {
    use kvcache::{Dtype, KvLayout, KvShape, Order};
    let mut c = Cursor(data);
    let dtypes = [Dtype::Fp8, Dtype::Bf16, Dtype::Fp16, Dtype::Fp32];
    let shape = KvShape {
        model: "fuzz".into(),
        layers: c.u32(),
        kv_heads: c.u32(),
        head_dim: c.u32(),
        dtype: dtypes[c.u32() as usize % dtypes.len()],
        block_size: c.u32(),
        order: if c.u32() % 2 == 0 {
            Order::Nhd
        } else {
            Order::Hnd
        },
    };
    let (prefill_tp, decode_tp) = (c.u32(), c.u32());
    let blocks = c.u32();
    if shape.validate().is_err() {
        return false;
    }
    for rank in 0..decode_tp.min(16) {
        if let Ok(sources) = kvcache::plan::sources(&shape, prefill_tp, decode_tp, rank) {
            for source in &sources {
                assert!(source.prefill_rank < prefill_tp && !source.heads.is_empty());
            }
        }
    }
    let _ = kvcache::plan::readers(&shape, prefill_tp, decode_tp, 0);
    // Keep the plan small: the property is arithmetic, not memory.
    if shape.layers > 64 || shape.kv_heads > 256 {
        return false;
    }
    let (Ok(src), Ok(dst)) = (
        KvLayout::new(shape.clone(), prefill_tp.min(8), 0, blocks % 64 + 1),
        KvLayout::new(shape.clone(), decode_tp.min(8), 0, blocks % 32 + 1),
    ) else {
        return false;
    };
    let last = src.num_blocks - 1;
    assert!(src.check_block(last).is_ok() && src.check_block(src.num_blocks).is_err());
    let heads = src.heads.start.max(dst.heads.start)..src.heads.end.min(dst.heads.end);
    if heads.is_empty() {
        return false;
    }
    let mut pieces = Vec::new();
    kvcache::plan::plan(&src, &[last], &dst, &[0], heads, &mut pieces);
    for piece in &pieces {
        assert!(piece.src + piece.len <= src.pool_bytes());
        assert!(piece.dst + piece.len <= dst.pool_bytes());
    }
    !pieces.is_empty()
}

/// The size and duration parsers every tool's flags use.
pub fn units(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let size = measure::parse_size(&text).map(measure::format_bytes);
    let duration = measure::parse_duration(&text).map(measure::format_duration);
    size.is_ok() || duration.is_ok()
}

/// Files users hand to the tools: vLLM run results, link measurements, plans and netcheck
/// expectations. The first byte picks the reader.
pub fn user_files(data: &[u8]) -> bool {
    let Some((&which, rest)) = data.split_first() else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 4 {
        0 => model::runs::parse_runs("fuzz.json", &text).is_ok(),
        1 => model::LinkModel::from_json("fuzz.json", &text).is_ok(),
        2 => model::Plan::parse(&text, 8).is_ok(),
        _ => probe::cluster::expect::Expect::parse("fuzz.toml", &text).is_ok(),
    }
}
