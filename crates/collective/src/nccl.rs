//! Finding NCCL and a GPU for `--backend nccl`. The search is a pure function over the
//! places users have libnccl: `--nccl-lib`, LD_LIBRARY_PATH, system paths, and Python
//! site-packages (`nvidia/nccl/lib`, what the `nvidia-nccl-cu12` wheel installs).

use std::path::{Path, PathBuf};

pub const SONAME: &str = "libnccl.so.2";

/// Directories to search, in order.
pub fn search_dirs(ld_library_path: Option<&str>, site_packages: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ld_library_path
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for system in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/local/cuda/lib64",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(system));
    }
    for site in site_packages {
        dirs.push(site.join("nvidia/nccl/lib"));
    }
    dirs
}

/// Finds libnccl.so.2: an explicit path must exist; otherwise the first directory holding it.
pub fn find_library(explicit: Option<&Path>, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "--nccl-lib {} does not exist: pass the path of {SONAME}",
                path.display()
            ))
        };
    }
    dirs.iter()
        .map(|dir| dir.join(SONAME))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "{SONAME} not found in LD_LIBRARY_PATH, system library paths or Python site-packages: install NCCL (`pip install nvidia-nccl-cu12` or the libnccl2 package) or pass --nccl-lib PATH"
            )
        })
}

/// Why `--backend nccl` cannot run here, or Ok(library path) when NCCL and a GPU exist.
pub fn check_environment(
    explicit: Option<&Path>,
    dirs: &[PathBuf],
    proc_root: &Path,
) -> Result<PathBuf, String> {
    let gpus = proc_root.join("proc/driver/nvidia/gpus");
    let has_gpu = std::fs::read_dir(&gpus)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has_gpu {
        return Err(
            "no NVIDIA GPU on this node (/proc/driver/nvidia/gpus is empty or missing): the nccl backend needs GPUs; use --backend tcp to measure the network from the CPU"
                .to_string(),
        );
    }
    find_library(explicit, dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_is_ld_path_then_system_then_site_packages() {
        let dirs = search_dirs(
            Some("/opt/a::/opt/b"),
            &[PathBuf::from("/venv/lib/python3.11/site-packages")],
        );
        assert_eq!(dirs[0], PathBuf::from("/opt/a"));
        assert_eq!(dirs[1], PathBuf::from("/opt/b"));
        assert_eq!(
            dirs.last().unwrap(),
            &PathBuf::from("/venv/lib/python3.11/site-packages/nvidia/nccl/lib")
        );
    }

    #[test]
    fn finds_the_wheel_library_and_rejects_a_missing_explicit_path() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("nvidia/nccl/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join(SONAME), b"").unwrap();
        let dirs = search_dirs(None, &[dir.path().to_path_buf()]);
        assert_eq!(find_library(None, &dirs).unwrap(), lib.join(SONAME));
        let missing = find_library(Some(Path::new("/nope/libnccl.so.2")), &dirs).unwrap_err();
        assert!(missing.contains("--nccl-lib /nope/libnccl.so.2 does not exist"));
        assert!(find_library(None, &[])
            .unwrap_err()
            .contains("pip install nvidia-nccl-cu12"));
    }

    #[test]
    fn no_gpu_is_one_clear_sentence() {
        let root = tempfile::tempdir().unwrap();
        let error = check_environment(None, &[], root.path()).unwrap_err();
        assert!(error.contains("no NVIDIA GPU") && error.contains("--backend tcp"));
    }
}
