//! The compatibility check at the handshake: both sides must describe the KV cache the
//! same way, or blocks would land in the wrong heads and decode would read garbage. TP
//! size is not part of it: the TP-ratio mapping handles different TP on each side.

use crate::layout::KvShape;
use measure::Setting;
use sha2::{Digest, Sha256};

/// Bumped whenever the kvxfer messages or the stream order change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Every field that must match: its name, its value, and the setting that sets it.
type Field = (&'static str, fn(&KvShape) -> String, Setting);
const FIELDS: [Field; 7] = [
    ("model", |s| s.model.clone(), Setting::Model),
    ("dtype", |s| s.dtype.name().into(), Setting::KvDtype),
    ("layers", |s| s.layers.to_string(), Setting::Model),
    ("kv_heads", |s| s.kv_heads.to_string(), Setting::Model),
    ("head_dim", |s| s.head_dim.to_string(), Setting::Model),
    (
        "block_size",
        |s| s.block_size.to_string(),
        Setting::BlockSize,
    ),
    ("layout order", |s| s.order.name().into(), Setting::KvLayout),
];

/// Short hex digest of every field that must match, plus the protocol version.
pub fn compat_hash(shape: &KvShape) -> String {
    let mut canonical = format!("kvxfer-v{PROTOCOL_VERSION}");
    for (_, value, _) in FIELDS {
        canonical.push('|');
        canonical.push_str(&value(shape));
    }
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
    FIELDS.into_iter().find_map(|(field, value, flag)| {
        let (a, b) = (value(ours), value(theirs));
        (a != b).then(|| {
            format!(
                "KV layout mismatch: {field} is {a} on {ours_role} but {b} on {their_role}; start both with {flag} the same"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{tests::llama8b, Dtype, Order};

    fn shape() -> KvShape {
        llama8b(Order::Nhd)
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
            "KV layout mismatch: block_size is 16 on prefill but 32 on decode; start both with the block size setting the same"
        );
    }
}
