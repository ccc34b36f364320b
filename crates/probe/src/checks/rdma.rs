//! RDMA ports and the GID NCCL will use, and the memlock limit that RDMA registration needs.

use super::{Check, Status};
use crate::facts::{Facts, RdmaGid, RdmaVerbs};
use serde_json::json;

pub(crate) fn ports(facts: &Facts) -> Check {
    let hca = facts.env("NCCL_IB_HCA");
    let gid_index = facts.env("NCCL_IB_GID_INDEX");
    let evidence =
        json!({"devices": facts.rdma, "NCCL_IB_GID_INDEX": gid_index, "verbs": facts.rdma_verbs});
    // The same verdict `linkbench --transport rdma` gives (fabric::rdma::check).
    let verbs_problem = match &facts.rdma_verbs {
        RdmaVerbs::Unavailable { reason } => Some(reason.as_str()),
        _ => None,
    };
    if let (true, None, Some(reason)) = (facts.rdma.is_empty(), hca, verbs_problem) {
        return Check::new(
            "rdma.ports",
            Status::Info,
            format!("{reason} (NCCL and NIXL will use TCP sockets)"),
            evidence,
        );
    }
    if facts.rdma.is_empty() {
        return if hca.is_some() {
            Check::new(
                "rdma.ports",
                Status::Fail,
                format!("NCCL_IB_HCA='{}' asks for RDMA but /sys/class/infiniband has no devices", hca.unwrap_or_default()),
                evidence,
            )
            .fix("load the NIC's RDMA driver (mlx5_ib, irdma, ...) and check `ibv_devices`, or unset NCCL_IB_HCA")
        } else {
            Check::new(
                "rdma.ports",
                Status::Info,
                "no RDMA devices: NCCL and NIXL will use TCP sockets",
                evidence,
            )
        };
    }
    let ports: Vec<String> = facts
        .rdma
        .iter()
        .flat_map(|d| {
            d.ports.iter().map(move |p| {
                format!(
                    "{}:{} {} {} {}",
                    d.name,
                    p.number,
                    p.state.as_deref().unwrap_or("?"),
                    p.link_layer.as_deref().unwrap_or("?"),
                    p.rate.as_deref().unwrap_or("")
                )
            })
        })
        .collect();
    let listing = ports.join("; ");
    let roce_ports: Vec<(&str, &crate::facts::RdmaPort)> = facts
        .rdma
        .iter()
        .flat_map(|d| d.ports.iter().map(move |p| (d.name.as_str(), p)))
        .filter(|(_, p)| p.is_active() && p.link_layer.as_deref() == Some("Ethernet"))
        .collect();
    if let Some(raw) = gid_index {
        let Ok(index) = raw.trim().parse::<u32>() else {
            return Check::new("rdma.ports", Status::Fail, format!("NCCL_IB_GID_INDEX='{raw}' is not a number"), evidence)
                .fix("unset it (NCCL picks a RoCE v2 GID itself) or set it to the index `show_gids` lists for your interface");
        };
        for (device, port) in &roce_ports {
            let gid = port.gids.iter().find(|g| g.index == index);
            let problem = match gid {
                None => Some("is empty".to_string()),
                Some(g) if g.is_empty() => Some("is empty".to_string()),
                Some(g) if g.is_link_local() => Some(format!("is link-local ({})", g.gid)),
                Some(g) if !g.is_roce_v2() => Some(format!(
                    "is {} not RoCE v2",
                    g.gid_type.as_deref().unwrap_or("of unknown type")
                )),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                let better = roce_v2_gid(facts, &port.gids);
                return Check::new(
                    "rdma.ports",
                    Status::Fail,
                    format!("NCCL_IB_GID_INDEX={index} on {device}:{} {problem}: RoCE traffic will not route", port.number),
                    evidence,
                )
                .fix(match better {
                    Some(g) => format!("export NCCL_IB_GID_INDEX={}", g.index),
                    None => "assign an IPv4 address to the RoCE netdev, then pick its RoCE v2 GID index".to_string(),
                });
            }
        }
    }
    if !facts
        .rdma
        .iter()
        .any(|d| d.ports.iter().any(super::super::facts::RdmaPort::is_active))
    {
        return Check::new(
            "rdma.ports",
            Status::Warn,
            format!("no RDMA port is ACTIVE ({listing}): NCCL falls back to sockets"),
            evidence,
        )
        .fix("check the cable and subnet manager (`ibstat`; `systemctl start opensm` on one IB node)");
    }
    if let Some(reason) = verbs_problem {
        return Check::new(
            "rdma.ports",
            Status::Warn,
            format!("{listing}: sysfs shows a port but verbs cannot use it: {reason}"),
            evidence,
        );
    }
    // RoCE: the GID NCCL should use is the RoCE v2 one bound to --iface.
    let bound_here = roce_ports.iter().any(|(_, p)| {
        p.gids
            .iter()
            .any(|g| g.netdev.as_deref() == Some(facts.iface.name.as_str()))
    });
    if bound_here {
        let gid = roce_ports
            .iter()
            .find_map(|(_, p)| roce_v2_gid(facts, &p.gids));
        return match gid {
            Some(g) => Check::new(
                "rdma.ports",
                Status::Pass,
                format!(
                    "{listing}; RoCE v2 GID {} ({}) is bound to {}",
                    g.index, g.gid, facts.iface.name
                ),
                evidence,
            )
            .fix(format!("export NCCL_IB_GID_INDEX={}", g.index)),
            None => Check::new(
                "rdma.ports",
                Status::Warn,
                format!(
                    "{listing}; no RoCE v2 GID carries {}'s IPv4 address",
                    facts.iface.name
                ),
                evidence,
            )
            .fix(format!(
                "give {} an IPv4 address so the RoCE v2 GID appears",
                facts.iface.name
            )),
        };
    }
    Check::new("rdma.ports", Status::Pass, listing, evidence)
}

/// The RoCE v2 GID bound to the interface and carrying its IPv4 address.
fn roce_v2_gid<'a>(facts: &Facts, gids: &'a [RdmaGid]) -> Option<&'a RdmaGid> {
    let addr = facts.iface.global_ipv4()?;
    gids.iter().find(|g| {
        g.is_roce_v2()
            && g.netdev.as_deref() == Some(facts.iface.name.as_str())
            && g.ipv4() == Some(addr)
    })
}

pub(crate) fn memlock(facts: &Facts) -> Check {
    let memlock = &facts.memlock;
    let evidence = json!({"soft_bytes": memlock.soft_bytes, "cap_ipc_lock": memlock.cap_ipc_lock, "rdma_in_use": facts.rdma_in_use()});
    let limit = memlock
        .soft_bytes
        .map_or("unlimited".to_string(), measure::format_bytes);
    if memlock.soft_bytes.is_none() || memlock.cap_ipc_lock {
        return Check::new(
            "limits.memlock",
            Status::Pass,
            format!(
                "RLIMIT_MEMLOCK {limit}{}",
                if memlock.cap_ipc_lock {
                    ", CAP_IPC_LOCK held"
                } else {
                    ""
                }
            ),
            evidence,
        );
    }
    if facts.rdma_in_use() {
        return Check::new(
            "limits.memlock",
            Status::Warn,
            format!("RLIMIT_MEMLOCK is {limit} without CAP_IPC_LOCK: RDMA memory registration will fail"),
            evidence,
        )
        .fix("`ulimit -l unlimited` (or `memlock unlimited` in /etc/security/limits.conf; containers: --ulimit memlock=-1 --cap-add IPC_LOCK)");
    }
    Check::new(
        "limits.memlock",
        Status::Info,
        format!("RLIMIT_MEMLOCK {limit}; fine while RDMA is not used"),
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::{facts, with_env};
    use std::fs;
    use std::path::Path;

    /// A RoCE NIC as the kernel lays it out: GID 0 link-local v1, 1 link-local v2,
    /// 2 IPv4-mapped v1, 3 IPv4-mapped v2 for 10.0.0.5, all on eth0.
    fn roce_fixture(root: &Path, state: &str) {
        let port = root.join("sys/class/infiniband/mlx5_0/ports/1");
        for dir in ["gids", "gid_attrs/types", "gid_attrs/ndevs"] {
            fs::create_dir_all(port.join(dir)).unwrap();
        }
        fs::create_dir_all(root.join("sys/class/infiniband/mlx5_0/device/net/eth0")).unwrap();
        fs::write(port.join("state"), format!("{state}\n")).unwrap();
        fs::write(port.join("phys_state"), "5: LinkUp\n").unwrap();
        fs::write(port.join("rate"), "100 Gb/sec (4X EDR)\n").unwrap();
        fs::write(port.join("link_layer"), "Ethernet\n").unwrap();
        let gids = [
            ("fe80:0000:0000:0000:0000:00ff:fe00:0005", "IB/RoCE v1"),
            ("fe80:0000:0000:0000:0000:00ff:fe00:0005", "RoCE v2"),
            ("0000:0000:0000:0000:0000:ffff:0a00:0005", "IB/RoCE v1"),
            ("0000:0000:0000:0000:0000:ffff:0a00:0005", "RoCE v2"),
        ];
        for (index, (gid, kind)) in gids.iter().enumerate() {
            fs::write(
                port.join("gids").join(index.to_string()),
                format!("{gid}\n"),
            )
            .unwrap();
            fs::write(
                port.join("gid_attrs/types").join(index.to_string()),
                format!("{kind}\n"),
            )
            .unwrap();
            fs::write(
                port.join("gid_attrs/ndevs").join(index.to_string()),
                "eth0\n",
            )
            .unwrap();
        }
        // An empty slot: the kernel lists it, its type is unreadable.
        fs::write(
            port.join("gids/4"),
            "0000:0000:0000:0000:0000:0000:0000:0000\n",
        )
        .unwrap();
    }

    fn facts_with_fixture(state: &str) -> Facts {
        let dir = tempfile::tempdir().unwrap();
        roce_fixture(dir.path(), state);
        let mut f = facts();
        f.rdma = crate::sysfs::read_rdma_devices(dir.path());
        f
    }

    #[test]
    fn fixture_tree_is_read_with_gid_types_and_netdevs() {
        let f = facts_with_fixture("4: ACTIVE");
        let port = &f.rdma[0].ports[0];
        assert_eq!(f.rdma[0].netdevs, vec!["eth0"]);
        assert_eq!(port.state.as_deref(), Some("ACTIVE"));
        assert_eq!(port.gids.len(), 5);
        assert!(port.gids[4].is_empty() && port.gids[4].gid_type.is_none());
        assert_eq!(port.gids[3].ipv4(), Some(crate::checks::fixture::ADDR));
    }

    #[test]
    fn active_roce_port_passes_and_names_the_v2_gid_index() {
        let check = ports(&facts_with_fixture("4: ACTIVE"));
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert_eq!(check.fix, "export NCCL_IB_GID_INDEX=3");
    }

    #[test]
    fn gid_index_pointing_at_link_local_v1_or_empty_fails() {
        for (index, word) in [
            ("0", "link-local"),
            ("1", "link-local"),
            ("2", "not RoCE v2"),
            ("4", "empty"),
            ("9", "empty"),
        ] {
            let f = with_env(
                facts_with_fixture("4: ACTIVE"),
                &[("NCCL_IB_GID_INDEX", index)],
            );
            let check = ports(&f);
            assert_eq!(check.status, Status::Fail, "index {index}");
            assert!(check.summary.contains(word), "{index}: {}", check.summary);
            assert_eq!(check.fix, "export NCCL_IB_GID_INDEX=3");
        }
        let f = with_env(
            facts_with_fixture("4: ACTIVE"),
            &[("NCCL_IB_GID_INDEX", "3")],
        );
        assert_eq!(ports(&f).status, Status::Pass);
        let f = with_env(
            facts_with_fixture("4: ACTIVE"),
            &[("NCCL_IB_GID_INDEX", "three")],
        );
        assert_eq!(ports(&f).status, Status::Fail);
    }

    #[test]
    fn down_port_warns_and_missing_devices_are_info_unless_asked_for() {
        assert_eq!(ports(&facts_with_fixture("1: DOWN")).status, Status::Warn);
        assert_eq!(ports(&facts()).status, Status::Info);
        assert_eq!(
            ports(&with_env(facts(), &[("NCCL_IB_HCA", "mlx5")])).status,
            Status::Fail
        );
    }

    #[test]
    fn the_verbs_verdict_is_linkbench_s_sentence() {
        let reason = fabric::rdma::Unavailable::NoKernel.to_string();
        let mut f = facts();
        f.rdma_verbs = RdmaVerbs::Unavailable {
            reason: reason.clone(),
        };
        let check = ports(&f);
        assert_eq!(check.status, Status::Info, "{check:?}");
        assert!(
            check
                .summary
                .contains("kernel has no RDMA support (ENOSYS)"),
            "{}",
            check.summary
        );
        // netcheck has no --transport flag: the shared verdict must not suggest one.
        assert!(
            !check.summary.contains("--transport") && !check.fix.contains("--transport"),
            "{check:?}"
        );
        // sysfs lists an ACTIVE port, but verbs cannot open it: a warning naming why.
        let mut f = facts_with_fixture("4: ACTIVE");
        f.rdma_verbs = RdmaVerbs::Unavailable { reason };
        let check = ports(&f);
        assert_eq!(check.status, Status::Warn, "{check:?}");
        assert!(
            check.summary.contains("verbs cannot use it"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn memlock_warns_only_when_rdma_is_used() {
        let mut f = facts();
        f.memlock.soft_bytes = Some(8 << 20);
        f.memlock.cap_ipc_lock = false;
        assert_eq!(memlock(&f).status, Status::Info);
        let mut f = facts_with_fixture("4: ACTIVE");
        f.memlock.soft_bytes = Some(8 << 20);
        f.memlock.cap_ipc_lock = false;
        assert_eq!(memlock(&f).status, Status::Warn);
        f.memlock.soft_bytes = None;
        assert_eq!(memlock(&f).status, Status::Pass);
    }
}
