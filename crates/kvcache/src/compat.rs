//! The compatibility check at the handshake: both sides must describe the KV cache the
//! same way, or blocks would land in the wrong heads and decode would read garbage. TP
//! size is not part of it: the TP-ratio mapping handles different TP on each side.

use crate::layout::KvShape;
use sha2::{Digest, Sha256};

/// Bumped whenever the kvxfer messages or the stream order change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Short hex digest of every field that must match, plus the protocol version.
pub fn compat_hash(shape: &KvShape) -> String {
    let canonical = format!(
        "kvxfer-v{PROTOCOL_VERSION}|{}|{}|{}|{}|{}|{}|{}",
        shape.model,
        shape.dtype.name(),
        shape.layers,
        shape.kv_heads,
        shape.head_dim,
        shape.block_size,
        shape.order.name()
    );
    let digest = Sha256::digest(canonical.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `None` when compatible, else one sentence naming the first differing field, with
/// `ours` described as `ours_role` ("prefill", "decode").
pub fn mismatch(
    ours: &KvShape,
    theirs: &KvShape,
    ours_role: &str,
    their_role: &str,
) -> Option<String> {
    let fields: [(&str, String, String, &str); 7] = [
        ("model", ours.model.clone(), theirs.model.clone(), "--model"),
        (
            "dtype",
            ours.dtype.name().into(),
            theirs.dtype.name().into(),
            "--dtype",
        ),
        (
            "layers",
            ours.layers.to_string(),
            theirs.layers.to_string(),
            "--model",
        ),
        (
            "kv_heads",
            ours.kv_heads.to_string(),
            theirs.kv_heads.to_string(),
            "--model",
        ),
        (
            "head_dim",
            ours.head_dim.to_string(),
            theirs.head_dim.to_string(),
            "--model",
        ),
        (
            "block_size",
            ours.block_size.to_string(),
            theirs.block_size.to_string(),
            "--block-size",
        ),
        (
            "layout order",
            ours.order.name().into(),
            theirs.order.name().into(),
            "--layout",
        ),
    ];
    fields.into_iter().find(|(_, a, b, _)| a != b).map(|(field, a, b, flag)| {
        format!(
            "KV layout mismatch: {field} is {a} on {ours_role} but {b} on {their_role}; start both with the same {flag}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Dtype, Order};

    fn shape() -> KvShape {
        KvShape {
            model: "llama-3.1-8b".into(),
            layers: 32,
            kv_heads: 8,
            head_dim: 128,
            dtype: Dtype::Bf16,
            block_size: 16,
            order: Order::Nhd,
        }
    }

    #[test]
    fn every_field_changes_the_hash_and_is_named_in_the_refusal() {
        let base = shape();
        let variants: Vec<(KvShape, &str)> = vec![
            (
                KvShape {
                    model: "other".into(),
                    ..shape()
                },
                "model",
            ),
            (
                KvShape {
                    dtype: Dtype::Fp16,
                    ..shape()
                },
                "dtype",
            ),
            (
                KvShape {
                    layers: 16,
                    ..shape()
                },
                "layers",
            ),
            (
                KvShape {
                    kv_heads: 4,
                    ..shape()
                },
                "kv_heads",
            ),
            (
                KvShape {
                    head_dim: 64,
                    ..shape()
                },
                "head_dim",
            ),
            (
                KvShape {
                    block_size: 32,
                    ..shape()
                },
                "block_size",
            ),
            (
                KvShape {
                    order: Order::Hnd,
                    ..shape()
                },
                "layout order",
            ),
        ];
        for (variant, field) in variants {
            assert_ne!(compat_hash(&variant), compat_hash(&base), "{field}");
            let sentence = mismatch(&base, &variant, "prefill", "decode").unwrap();
            assert!(sentence.contains(field), "{sentence}");
        }
        assert_eq!(compat_hash(&base), compat_hash(&shape()));
        assert_eq!(mismatch(&base, &shape(), "prefill", "decode"), None);
        let sentence = mismatch(
            &base,
            &KvShape {
                block_size: 32,
                ..shape()
            },
            "prefill",
            "decode",
        )
        .unwrap();
        assert_eq!(
            sentence,
            "KV layout mismatch: block_size is 16 on prefill but 32 on decode; start both with the same --block-size"
        );
    }
}
