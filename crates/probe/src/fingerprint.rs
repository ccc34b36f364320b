//! A node's version fingerprint: the software that must match across nodes for a
//! multi-node run (python, ray, vllm, torch, NCCL wheels, NCCL net plugins).

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Python packages whose versions must agree between nodes.
const PACKAGES: [&str; 8] = [
    "ray",
    "vllm",
    "torch",
    "sglang",
    "nixl",
    "nvidia-nccl-cu12",
    "nvidia-nccl-cu11",
    "nvidia-nccl-cu13",
];

#[derive(Debug, Clone, Serialize, Default)]
pub struct Fingerprint {
    pub python: Option<String>,
    pub packages: BTreeMap<String, String>,
    /// NCCL network plugins found (libnccl-net*.so), by path.
    pub nccl_net_plugins: Vec<String>,
}

/// `vllm-0.6.3.post1.dist-info` -> ("vllm", "0.6.3.post1"); names normalised to
/// lowercase with `-` (PEP 503), so `nvidia_nccl_cu12` becomes `nvidia-nccl-cu12`.
pub fn parse_dist_info_name(dir_name: &str) -> Option<(String, String)> {
    let stem = dir_name.strip_suffix(".dist-info")?;
    let (name, version) = stem.split_once('-')?;
    if name.is_empty() || version.is_empty() {
        return None;
    }
    Some((
        name.to_ascii_lowercase().replace(['_', '.'], "-"),
        version.to_string(),
    ))
}

impl Fingerprint {
    /// Asks python3 for its version and sys.path (bounded by `timeout`), then reads
    /// dist-info directory names. No python means an empty fingerprint, not an error.
    pub fn gather(timeout: Duration) -> Fingerprint {
        let mut fingerprint = Fingerprint::default();
        if let Some(output) = python_report(timeout) {
            let mut lines = output.lines();
            fingerprint.python = lines.next().map(str::to_string);
            for dir in lines {
                fingerprint.add_site_packages(Path::new(dir));
            }
        }
        fingerprint.nccl_net_plugins = find_nccl_net_plugins();
        fingerprint
    }

    pub fn add_site_packages(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if let Some((package, version)) = parse_dist_info_name(&name.to_string_lossy()) {
                if PACKAGES.contains(&package.as_str()) {
                    self.packages.entry(package).or_insert(version);
                }
            }
        }
    }
}

fn python_report(timeout: Duration) -> Option<String> {
    let mut child = Command::new("python3")
        .args([
            "-S",
            "-c",
            "import sys, site; print(sys.version.split()[0]); \
             [print(p) for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path if p]",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn find_nccl_net_plugins() -> Vec<String> {
    let mut dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/local/lib",
            "/opt/amazon/ofi-nccl/lib",
        ]
        .map(String::from),
    );
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("libnccl-net") && name.contains(".so") {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_info_names_are_normalised() {
        assert_eq!(
            parse_dist_info_name("vllm-0.6.3.post1.dist-info"),
            Some(("vllm".into(), "0.6.3.post1".into()))
        );
        assert_eq!(
            parse_dist_info_name("nvidia_nccl_cu12-2.21.5.dist-info"),
            Some(("nvidia-nccl-cu12".into(), "2.21.5".into()))
        );
        assert_eq!(parse_dist_info_name("vllm.egg-info"), None);
        assert_eq!(parse_dist_info_name("-1.0.dist-info"), None);
    }

    #[test]
    fn site_packages_scan_keeps_only_the_packages_that_matter() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "torch-2.4.0.dist-info",
            "numpy-2.0.dist-info",
            "ray-2.35.0.dist-info",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let mut fingerprint = Fingerprint::default();
        fingerprint.add_site_packages(dir.path());
        assert_eq!(
            fingerprint.packages.get("torch").map(String::as_str),
            Some("2.4.0")
        );
        assert_eq!(
            fingerprint.packages.get("ray").map(String::as_str),
            Some("2.35.0")
        );
        assert!(!fingerprint.packages.contains_key("numpy"));
    }
}
