//! GPUs the node will use (CUDA_VISIBLE_DEVICES applied), the driver, and nvidia_peermem
//! for GPUDirect RDMA.

use super::{Check, Status};
use crate::facts::Facts;
use serde_json::json;

/// How many GPUs CUDA exposes under CUDA_VISIBLE_DEVICES: CUDA stops at the first entry
/// that is not a valid index or UUID.
pub(crate) fn visible_count(total: usize, cuda_visible_devices: Option<&str>) -> usize {
    let Some(list) = cuda_visible_devices else {
        return total;
    };
    let mut count = 0;
    for item in list.split(',').map(str::trim) {
        let valid = match item.parse::<usize>() {
            Ok(index) => index < total,
            Err(_) => item.starts_with("GPU-") || item.starts_with("MIG-"),
        };
        if !valid {
            break;
        }
        count += 1;
    }
    count.min(total)
}

pub(crate) fn inventory(facts: &Facts, expect: Option<usize>) -> Check {
    let total = facts.gpu.gpus.len();
    let cvd = facts.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str);
    let visible = visible_count(total, cvd);
    let models: Vec<&str> = facts
        .gpu
        .gpus
        .iter()
        .filter_map(|g| g.model.as_deref())
        .collect();
    let evidence = json!({
        "driver_version": facts.gpu.driver_version, "gpus": facts.gpu.gpus,
        "visible": visible, "CUDA_VISIBLE_DEVICES": cvd, "nvidia_peermem": facts.gpu.peermem_loaded,
    });
    let described = if total == 0 {
        "no NVIDIA GPUs (/proc/driver/nvidia absent)".to_string()
    } else {
        format!(
            "{visible} of {total} GPUs visible ({}), driver {}",
            models.first().copied().unwrap_or("unknown model"),
            facts.gpu.driver_version.as_deref().unwrap_or("unknown")
        )
    };
    if let Some(expected) = expect {
        if visible != expected {
            return Check::new(
                "gpu.inventory",
                Status::Fail,
                format!("expected {expected} GPUs, found {described}"),
                evidence,
            )
            .fix(if total < expected {
                "check `nvidia-smi` and the driver; a missing GPU is a hardware or driver fault"
                    .to_string()
            } else {
                format!(
                    "fix CUDA_VISIBLE_DEVICES, or set {} right",
                    measure::Setting::ExpectedGpus
                )
            });
        }
    }
    if total > 0 && facts.rdma_in_use() && !facts.gpu.peermem_loaded {
        return Check::new(
            "gpu.inventory",
            Status::Warn,
            format!("{described}; RDMA is in use but nvidia_peermem is not loaded: no GPUDirect RDMA, transfers bounce through host memory"),
            evidence,
        )
        .fix("`modprobe nvidia_peermem` (or use the DMA-BUF path: NCCL_DMABUF_ENABLE=1 with a recent driver)");
    }
    Check::new(
        "gpu.inventory",
        if total == 0 && expect.is_none() {
            Status::Info
        } else {
            Status::Pass
        },
        described,
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::{facts, with_env};
    use crate::facts::Gpu;

    fn with_gpus(n: usize) -> Facts {
        let mut f = facts();
        f.gpu.driver_version = Some("550.54.15".into());
        f.gpu.gpus = (0..n)
            .map(|i| Gpu {
                bus_id: format!("0000:{i:02x}:00.0"),
                model: Some("NVIDIA H100 80GB HBM3".into()),
                numa_node: Some(0),
            })
            .collect();
        f
    }

    #[test]
    fn cuda_visible_devices_follows_cuda_rules() {
        assert_eq!(visible_count(8, None), 8);
        assert_eq!(visible_count(8, Some("0,1,2,3")), 4);
        assert_eq!(visible_count(8, Some("")), 0);
        assert_eq!(visible_count(8, Some("-1")), 0);
        assert_eq!(visible_count(4, Some("0,9,1")), 1);
        assert_eq!(visible_count(8, Some("GPU-8a3c,GPU-77ff")), 2);
    }

    #[test]
    fn expected_count_mismatch_fails() {
        assert_eq!(inventory(&with_gpus(8), Some(8)).status, Status::Pass);
        assert_eq!(inventory(&with_gpus(7), Some(8)).status, Status::Fail);
        let f = with_env(with_gpus(8), &[("CUDA_VISIBLE_DEVICES", "0,1,2,3")]);
        let check = inventory(&f, Some(8));
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("4 of 8"), "{}", check.summary);
        assert_eq!(inventory(&facts(), None).status, Status::Info);
        assert_eq!(inventory(&facts(), Some(1)).status, Status::Fail);
    }

    #[test]
    fn rdma_without_peermem_warns() {
        let f = with_env(with_gpus(8), &[("NCCL_IB_HCA", "mlx5_0")]);
        assert_eq!(inventory(&f, None).status, Status::Warn);
        let mut f = f;
        f.gpu.peermem_loaded = true;
        assert_eq!(inventory(&f, None).status, Status::Pass);
    }
}
