//! Model shapes from `configs/models/*.toml` and the message sizes tensor and pipeline
//! parallelism put on the network, plus the GPU specs, link prices, parallel plans and cost
//! model that `explain` uses. Pure data and formulas.

pub mod calibrate;
mod cost;
mod gpu;
mod link;
mod plan;
pub mod runs;

pub use cost::{
    control_bytes, control_on_path, estimate, pipeline_round, verdict, Assumptions, Breakdown,
    Estimate, Round, Workload,
};
pub use gpu::{find_gpu, load_gpus, GpuSpec};
pub use link::{LinkModel, Measured, INTER_PROFILES, INTRA_PROFILES};
pub use plan::Plan;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("unknown model '{name}': known models are {known} (add one as a .toml in a folder's models/ and point NODELINK_CONFIGS at that folder)")]
    Unknown { name: String, known: String },
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
    pub dtype: measure::Dtype,
    pub params: f64,
}

impl ModelShape {
    pub fn dtype_bytes(&self) -> u64 {
        self.dtype.size() as u64
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

/// The shipped model shapes, built into every binary: the tools work from any folder,
/// whatever `configs/` it may hold.
pub(crate) const SHIPPED_MODELS: &[(&str, &str)] = &[
    (
        "llama-3-70b.toml",
        include_str!("../../../configs/models/llama-3-70b.toml"),
    ),
    (
        "llama-3.1-8b.toml",
        include_str!("../../../configs/models/llama-3.1-8b.toml"),
    ),
    (
        "llama-3.2-3b.toml",
        include_str!("../../../configs/models/llama-3.2-3b.toml"),
    ),
    (
        "qwen2.5-1.5b.toml",
        include_str!("../../../configs/models/qwen2.5-1.5b.toml"),
    ),
    (
        "qwen2.5-32b.toml",
        include_str!("../../../configs/models/qwen2.5-32b.toml"),
    ),
];

/// The shipped GPU figures, built in like the models.
pub(crate) const SHIPPED_GPUS: &[(&str, &str)] = &[
    (
        "a100-sxm.toml",
        include_str!("../../../configs/gpus/a100-sxm.toml"),
    ),
    (
        "h100-pcie.toml",
        include_str!("../../../configs/gpus/h100-pcie.toml"),
    ),
    (
        "h100-sxm.toml",
        include_str!("../../../configs/gpus/h100-sxm.toml"),
    ),
    ("l40s.toml", include_str!("../../../configs/gpus/l40s.toml")),
    (
        "mi210.toml",
        include_str!("../../../configs/gpus/mi210.toml"),
    ),
    (
        "v100-16gb.toml",
        include_str!("../../../configs/gpus/v100-16gb.toml"),
    ),
];

/// Where extra or overriding configs live: `NODELINK_CONFIGS` (a folder with `models/`
/// and/or `gpus/`), else none (an empty path): the built-in files alone.
pub fn configs_dir() -> PathBuf {
    std::env::var_os("NODELINK_CONFIGS")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Items named by `name`: the built-in `shipped`, then every `*.toml` in `dir/sub` (when
/// `dir` is not empty) added or replacing the built-in one of the same name.
pub(crate) fn load_configs<T: DeserializeOwned>(
    shipped: &[(&str, &str)],
    dir: &Path,
    sub: &str,
    name: impl Fn(&T) -> &str,
) -> Result<Vec<T>, ModelError> {
    let mut items = Vec::new();
    for (file, text) in shipped {
        let item: T = toml::from_str(text).map_err(|e| ModelError::Read {
            path: format!("built-in {sub}/{file}"),
            reason: e.to_string(),
        })?;
        items.push(item);
    }
    if dir.as_os_str().is_empty() {
        return Ok(items);
    }
    if !dir.is_dir() {
        return Err(ModelError::Read {
            path: dir.display().to_string(),
            reason: "NODELINK_CONFIGS names no folder: point it at a folder with models/ or gpus/, or unset it".into(),
        });
    }
    let folder = dir.join(sub);
    if !folder.is_dir() {
        return Ok(items);
    }
    for extra in load_tomls::<T>(&folder)? {
        items.retain(|i| name(i) != name(&extra));
        items.push(extra);
    }
    Ok(items)
}

/// Every `*.toml` in `dir`, parsed as `T`.
pub(crate) fn load_tomls<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::Read {
        path: dir.display().to_string(),
        reason: e.to_string(),
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

/// All model shapes: the built-in ones and `dir/models/*.toml`, sorted by name.
pub fn load_models(dir: &Path) -> Result<Vec<ModelShape>, ModelError> {
    let mut models: Vec<ModelShape> =
        load_configs(SHIPPED_MODELS, dir, "models", |m: &ModelShape| &m.name)?;
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// A Hugging Face id as a run file names it (`meta-llama/Llama-3.1-8B-Instruct`,
/// `deepseek-ai/DeepSeek-R1-Distill-Qwen-32B`) as a shipped name or alias: the part after
/// the organisation, lowercase, without the -Instruct/-Chat/-hf suffixes.
fn hub_id_to_name(name: &str) -> String {
    let mut n = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    for suffix in ["-instruct", "-chat", "-hf", "-it"] {
        if let Some(stripped) = n.strip_suffix(suffix) {
            n = stripped.to_string();
        }
    }
    n.replace("meta-llama-", "llama-")
}

/// Finds a model by name or alias (or Hugging Face id), case-insensitively.
pub fn find_model(dir: &Path, name: &str) -> Result<ModelShape, ModelError> {
    let models = load_models(dir)?;
    let wanted = hub_id_to_name(name);
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
    fn every_shipped_file_is_built_in() {
        let on_disk = |kind: &str| {
            let mut names: Vec<String> = std::fs::read_dir(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs").to_string() + "/" + kind,
            )
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                std::path::Path::new(n)
                    .extension()
                    .is_some_and(|e| e == "toml")
            })
            .collect();
            names.sort();
            names
        };
        let built_in =
            |list: &[(&str, &str)]| list.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            on_disk("models"),
            built_in(SHIPPED_MODELS),
            "add new files to SHIPPED_MODELS"
        );
        assert_eq!(
            on_disk("gpus"),
            built_in(SHIPPED_GPUS),
            "add new files to SHIPPED_GPUS"
        );
    }

    #[test]
    fn a_configs_folder_adds_and_overrides_but_never_hides_the_shipped_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("models")).unwrap();
        let mut tweaked = find_model(Path::new(""), "llama-3.1-8b").unwrap();
        assert_eq!(tweaked.layers, 32);
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/models/llama-3.1-8b.toml"
        ))
        .unwrap()
        .replace("layers = 32", "layers = 33");
        std::fs::write(dir.path().join("models/mine.toml"), text).unwrap();
        tweaked = find_model(dir.path(), "llama-3.1-8b").unwrap();
        assert_eq!(tweaked.layers, 33);
        // The others are still there, and a folder without gpus/ leaves the GPUs alone.
        assert!(find_model(dir.path(), "qwen2.5-32b").is_ok());
        assert!(crate::find_gpu(dir.path(), "h100-sxm").is_ok());
        let e = find_model(Path::new("/nonexistent/nodelink"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("NODELINK_CONFIGS names no folder"), "{e}");
    }

    #[test]
    fn hugging_face_ids_map_to_the_shipped_models() {
        let dir = configs_dir();
        assert_eq!(
            find_model(&dir, "meta-llama/Llama-3.1-8B-Instruct")
                .unwrap()
                .name,
            "llama-3.1-8b"
        );
        assert_eq!(
            find_model(&dir, "meta-llama/Meta-Llama-3-70B-Instruct")
                .unwrap()
                .name,
            "llama-3-70b"
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
