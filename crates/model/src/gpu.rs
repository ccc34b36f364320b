//! GPU figures the cost model needs (HBM bandwidth, dense bf16 peak, memory, intra-node
//! link), read from `configs/gpus/*.toml`, where each file names its source.

use crate::ModelError;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct GpuSpec {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// HBM bandwidth, GB/s (1e9 B/s).
    pub hbm_gbs: f64,
    /// Dense bf16 (or fp16) tensor peak, TFLOP/s.
    pub bf16_tflops: f64,
    /// Memory per GPU, GiB.
    pub memory_gib: f64,
    /// The intra-node link's profile name (nvlink4, pcie4 ...).
    pub intra_link: String,
    /// Intra-node link rate per direction, GB/s.
    pub intra_link_gbs: f64,
}

/// All GPU specs: the built-in ones and `dir/gpus/*.toml`, sorted by name.
pub fn load_gpus(dir: &Path) -> Result<Vec<GpuSpec>, ModelError> {
    let mut gpus: Vec<GpuSpec> =
        crate::load_configs(crate::SHIPPED_GPUS, dir, "gpus", |g: &GpuSpec| &g.name)?;
    gpus.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(gpus)
}

/// Finds a GPU by name or alias, case-insensitively; the error lists the known ones.
pub fn find_gpu(dir: &Path, name: &str) -> Result<GpuSpec, ModelError> {
    let gpus = load_gpus(dir)?;
    let wanted = name.to_ascii_lowercase();
    gpus.iter()
        .find(|g| g.name == wanted || g.aliases.contains(&wanted))
        .cloned()
        .ok_or_else(|| ModelError::UnknownName {
            what: "GPU",
            name: name.to_string(),
            known: gpus
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs_dir;

    #[test]
    fn shipped_gpus_load_with_their_datasheet_figures() {
        let h100 = find_gpu(&configs_dir(), "H100").unwrap();
        assert_eq!(h100.name, "h100-sxm");
        assert_eq!(h100.hbm_gbs, 3350.0);
        assert_eq!(h100.bf16_tflops, 989.0);
        let names: Vec<String> = load_gpus(&configs_dir())
            .unwrap()
            .into_iter()
            .map(|g| g.name)
            .collect();
        for wanted in [
            "a100-sxm",
            "h100-pcie",
            "h100-sxm",
            "l40s",
            "mi210",
            "v100-16gb",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
    }

    #[test]
    fn unknown_gpu_lists_the_known_ones() {
        let error = find_gpu(&configs_dir(), "b300").unwrap_err().to_string();
        assert!(
            error.contains("h100-sxm") && error.contains("l40s"),
            "{error}"
        );
    }
}
