//! The one element type enum: model shapes, the KV cache and the collectives all name their
//! elements with it, so a dtype means the same thing in every tool and every file.

use serde::{Deserialize, Deserializer, Serialize};

/// An element type. Serialized as its name (`"bf16"`), as the KV wire and the JSON records
/// carry it; read back from any spelling [`Dtype::parse`] takes (a model config's
/// `"bfloat16"` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 8-bit float (e4m3 or e5m2: the same size, which is all a byte count needs).
    Fp8,
    Fp16,
    Bf16,
    Fp32,
    I32,
}

impl Dtype {
    pub const ALL: [Dtype; 5] = [
        Dtype::Fp8,
        Dtype::Fp16,
        Dtype::Bf16,
        Dtype::Fp32,
        Dtype::I32,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::Fp8 => 1,
            Dtype::Fp16 | Dtype::Bf16 => 2,
            Dtype::Fp32 | Dtype::I32 => 4,
        }
    }

    /// The canonical name (the serialized form).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Fp8 => "fp8",
            Dtype::Fp16 => "fp16",
            Dtype::Bf16 => "bf16",
            Dtype::Fp32 => "fp32",
            Dtype::I32 => "i32",
        }
    }

    /// The name nccl-tests prints in its `type` column.
    pub fn nccl_tests_name(self) -> &'static str {
        match self {
            Dtype::Fp8 => "f8e4m3",
            Dtype::Fp16 => "half",
            Dtype::Bf16 => "bfloat16",
            Dtype::Fp32 => "float",
            Dtype::I32 => "int32",
        }
    }

    /// Any common spelling, case-insensitive: `bf16`/`bfloat16`, `fp16`/`f16`/`half`/
    /// `float16`, `fp32`/`f32`/`float`/`float32`, `fp8`/`f8`/`int8`, `i32`/`int`/`int32`.
    pub fn parse(text: &str) -> Option<Dtype> {
        Some(match text.to_ascii_lowercase().as_str() {
            "fp8" | "f8" | "int8" | "f8e4m3" | "fp8_e4m3" | "fp8_e5m2" => Dtype::Fp8,
            "fp16" | "f16" | "half" | "float16" => Dtype::Fp16,
            "bf16" | "bfloat16" => Dtype::Bf16,
            "fp32" | "f32" | "float" | "float32" => Dtype::Fp32,
            "i32" | "int" | "int32" => Dtype::I32,
            _ => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Dtype {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Dtype::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown dtype {text:?}: use fp8, fp16, bf16, fp32 or i32"
            ))
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A reduction, as NCCL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedOp {
    Sum,
    Max,
    Min,
}

impl RedOp {
    pub fn parse(text: &str) -> Option<RedOp> {
        match text.to_ascii_lowercase().as_str() {
            "sum" => Some(RedOp::Sum),
            "max" => Some(RedOp::Max),
            "min" => Some(RedOp::Min),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RedOp::Sum => "sum",
            RedOp::Max => "max",
            RedOp::Min => "min",
        }
    }

    /// Folds `values` the way this op reduces them (for expected results).
    pub fn fold(self, values: impl Iterator<Item = f64>) -> f64 {
        match self {
            RedOp::Sum => values.sum(),
            RedOp::Max => values.fold(f64::MIN, f64::max),
            RedOp::Min => values.fold(f64::MAX, f64::min),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_and_serializes_as_its_name() {
        for dtype in Dtype::ALL {
            assert_eq!(Dtype::parse(dtype.name()), Some(dtype));
            assert_eq!(Dtype::parse(dtype.nccl_tests_name()), Some(dtype));
            let json = serde_json::to_string(&dtype).unwrap();
            assert_eq!(json, format!("\"{}\"", dtype.name()));
            assert_eq!(serde_json::from_str::<Dtype>(&json).unwrap(), dtype);
        }
        assert_eq!(Dtype::parse("BFloat16"), Some(Dtype::Bf16));
        assert_eq!(Dtype::parse("fp64"), None);
        assert_eq!(
            serde_json::from_str::<Dtype>("\"bfloat16\"").unwrap(),
            Dtype::Bf16
        );
        let error = serde_json::from_str::<Dtype>("\"fp64\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown dtype \"fp64\""), "{error}");
    }
}
