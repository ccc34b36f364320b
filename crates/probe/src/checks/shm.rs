//! /dev/shm: NCCL's shared-memory transport and vLLM's workers need more than Docker's
//! 64 MiB default, and stale nccl-* segments eat it.

use super::{Check, Status};
use crate::facts::Facts;
use measure::format_bytes;
use serde_json::json;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

pub(crate) fn size(facts: &Facts) -> Check {
    let Some(shm) = &facts.shm else {
        return Check::new(
            "shm.size",
            Status::Fail,
            "/dev/shm is missing or unreadable: NCCL's shared-memory transport cannot start",
            json!({"mounted": false}),
        )
        .fix("mount it: `mount -t tmpfs -o size=16g tmpfs /dev/shm` (containers: --shm-size=16g or --ipc=host)");
    };
    let evidence = json!({
        "total_bytes": shm.total_bytes, "free_bytes": shm.free_bytes,
        "stale_nccl": shm.stale_nccl,
    });
    let sizes = format!(
        "/dev/shm is {} ({} free)",
        format_bytes(shm.total_bytes),
        format_bytes(shm.free_bytes)
    );
    let grow =
        "grow it: `mount -o remount,size=16g /dev/shm` (containers: --shm-size=16g or --ipc=host)";
    if shm.total_bytes <= 64 * MIB {
        return Check::new(
            "shm.size",
            Status::Fail,
            format!("{sizes}: the container default, NCCL fails with 'unhandled system error' or bus errors"),
            evidence,
        )
        .fix(grow);
    }
    if shm.total_bytes < GIB {
        return Check::new(
            "shm.size",
            Status::Warn,
            format!("{sizes}: less than 1 GiB"),
            evidence,
        )
        .fix(grow);
    }
    if shm.free_bytes * 2 < shm.total_bytes {
        return Check::new(
            "shm.size",
            Status::Warn,
            format!("{sizes}: less than half free"),
            evidence,
        )
        .fix("remove what fills it (`ls -la /dev/shm`), or grow it");
    }
    if !shm.stale_nccl.is_empty() {
        return Check::new(
            "shm.size",
            Status::Warn,
            format!(
                "{sizes}; {} stale nccl-* segments left by crashed runs",
                shm.stale_nccl.len()
            ),
            evidence,
        )
        .fix("with no NCCL job running: `rm -f /dev/shm/nccl-*`");
    }
    Check::new("shm.size", Status::Pass, sizes, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::facts;
    use crate::facts::Shm;

    fn with_shm(total: u64, free: u64, stale: &[&str]) -> Facts {
        let mut f = facts();
        f.shm = Some(Shm {
            total_bytes: total,
            free_bytes: free,
            stale_nccl: stale.iter().map(std::string::ToString::to_string).collect(),
        });
        f
    }

    #[test]
    fn thresholds() {
        assert_eq!(
            size(&with_shm(16 * GIB, 15 * GIB, &[])).status,
            Status::Pass
        );
        assert_eq!(
            size(&with_shm(64 * MIB, 64 * MIB, &[])).status,
            Status::Fail
        );
        assert_eq!(
            size(&with_shm(512 * MIB, 500 * MIB, &[])).status,
            Status::Warn
        );
        assert_eq!(size(&with_shm(16 * GIB, 4 * GIB, &[])).status, Status::Warn);
        let check = size(&with_shm(16 * GIB, 15 * GIB, &["nccl-abc123"]));
        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.contains("rm -f /dev/shm/nccl-*"));
        let mut f = facts();
        f.shm = None;
        assert_eq!(size(&f).status, Status::Fail);
    }

    #[test]
    fn stale_segments_are_listed_from_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev/shm")).unwrap();
        for name in ["nccl-A1b2", "nccl-zz", "sem.mp-x"] {
            std::fs::write(dir.path().join("dev/shm").join(name), b"").unwrap();
        }
        assert_eq!(
            crate::sysfs::read_shm_listing(dir.path()),
            vec!["nccl-A1b2", "nccl-zz"]
        );
    }
}
