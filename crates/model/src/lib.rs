//! Model shapes from `configs/models/*.toml` and the message sizes tensor and pipeline
//! parallelism put on the network, plus the GPU specs, link prices, parallel plans and cost
//! model that `explain` uses. Pure data and formulas.

mod cost;
mod gpu;
mod link;
mod plan;

pub use cost::{estimate, verdict, Assumptions, Breakdown, Estimate, Workload};
pub use gpu::{find_gpu, load_gpus, GpuSpec};
pub use link::{LinkModel, Measured, INTER_PROFILES, INTRA_PROFILES};
pub use plan::Plan;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("unknown model '{name}': known models are {known} (files in {dir})")]
    Unknown {
        name: String,
        known: String,
        dir: String,
    },
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("unknown {what} '{name}': known ones are {known}")]
    UnknownName {
        what: &'static str,
        name: String,
        known: String,
    },
    /// A plan, workload or link file that cannot be priced; the text says why and the fix.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelShape {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub layers: u64,
    pub hidden: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    #[serde(default)]
    pub intermediate: u64,
    #[serde(default)]
    pub vocab: u64,
    pub dtype: String,
    pub params: f64,
}

impl ModelShape {
    pub fn dtype_bytes(&self) -> u64 {
        match self.dtype.as_str() {
            "f32" | "fp32" | "float32" => 4,
            "fp8" | "f8" | "int8" => 1,
            _ => 2,
        }
    }

    /// KV cache bytes per token: K and V, every layer, every KV head.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes()
    }

    /// Bytes of one TP all-reduce (or one PP activation send) for `tokens` tokens.
    pub fn activation_bytes(&self, tokens: u64) -> u64 {
        tokens * self.hidden * self.dtype_bytes()
    }

    /// TP all-reduces per forward step: one after attention, one after the MLP, per layer.
    pub fn tp_allreduces_per_step(&self) -> u64 {
        2 * self.layers
    }

    /// Weight bytes: parameters x dtype bytes.
    pub fn weight_bytes(&self) -> f64 {
        self.params * self.dtype_bytes() as f64
    }
}

/// The configs directory: `NODELINK_CONFIGS`, else `configs/` next to the workspace root or
/// the current directory.
pub fn configs_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("NODELINK_CONFIGS") {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("configs");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"))
}

/// Every `*.toml` in `dir`, parsed as `T`.
pub(crate) fn load_tomls<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::Read {
        path: dir.display().to_string(),
        reason: format!(
            "{e}: run from the nodelink checkout or set NODELINK_CONFIGS to its configs/ directory"
        ),
    })?;
    let mut items = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let item: T = toml::from_str(&text).map_err(|e| ModelError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        items.push(item);
    }
    Ok(items)
}

/// All model shapes in `dir/models/*.toml`, sorted by name.
pub fn load_models(dir: &Path) -> Result<Vec<ModelShape>, ModelError> {
    let mut models: Vec<ModelShape> = load_tomls(&dir.join("models"))?;
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Finds a model by name or alias, case-insensitively.
pub fn find_model(dir: &Path, name: &str) -> Result<ModelShape, ModelError> {
    let models = load_models(dir)?;
    let wanted = name.to_ascii_lowercase();
    models
        .iter()
        .find(|m| m.name == wanted || m.aliases.contains(&wanted))
        .cloned()
        .ok_or_else(|| ModelError::Unknown {
            name: name.to_string(),
            known: models
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            dir: dir.join("models").display().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_models_match_the_reference_kv_bytes_per_token() {
        let dir = configs_dir();
        let expected = [
            ("llama-3.1-8b", 131_072),
            ("llama-3.2-3b", 114_688),
            ("llama-3-70b", 327_680),
            ("qwen2.5-32b", 262_144),
            ("qwen2.5-1.5b", 28_672),
        ];
        for (name, bytes) in expected {
            let model = find_model(&dir, name).unwrap();
            assert_eq!(model.kv_bytes_per_token(), bytes, "{name}");
        }
        // A 2,000-token Llama-3.1-8B prompt is 250 MiB of KV.
        let llama = find_model(&dir, "Llama-3.1-8B").unwrap();
        assert_eq!(llama.kv_bytes_per_token() * 2000, 250 * 1024 * 1024);
        assert_eq!(llama.activation_bytes(32), 32 * 4096 * 2);
        assert_eq!(llama.tp_allreduces_per_step(), 64);
        assert_eq!(
            find_model(&dir, "deepseek-r1-distill-qwen-1.5b")
                .unwrap()
                .name,
            "qwen2.5-1.5b"
        );
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let error = find_model(&configs_dir(), "gpt-5").unwrap_err().to_string();
        assert!(
            error.contains("llama-3.1-8b") && error.contains("qwen2.5-32b"),
            "{error}"
        );
    }
}
