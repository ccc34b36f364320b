//! NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME and the NCCL_IB_* variables, read against the
//! interfaces and RDMA devices that really exist.

use super::{Check, Status};
use crate::facts::{Facts, RdmaPort};
use crate::nccl_ifname::IfnameSpec;
use serde_json::json;

pub(crate) fn nccl_socket_ifname(facts: &Facts) -> Check {
    let names = facts.interface_names();
    let iface = facts.iface.name.as_str();
    let Some(value) = facts.env("NCCL_SOCKET_IFNAME") else {
        return Check::new(
            "env.nccl_socket_ifname",
            Status::Info,
            "NCCL_SOCKET_IFNAME is unset: NCCL picks an interface itself (not lo or docker*)",
            json!({"NCCL_SOCKET_IFNAME": null, "interfaces": names}),
        )
        .fix(format!("export NCCL_SOCKET_IFNAME={iface}"));
    };
    let spec = IfnameSpec::parse(value);
    let selected = spec.selected(&names);
    let evidence = json!({
        "NCCL_SOCKET_IFNAME": value, "exclude": spec.exclude, "exact": spec.exact,
        "selected": selected, "interfaces": names,
    });
    let exact_fix = format!("export NCCL_SOCKET_IFNAME=={iface}");
    if selected.is_empty() {
        return Check::new(
            "env.nccl_socket_ifname",
            Status::Fail,
            format!(
                "NCCL_SOCKET_IFNAME='{value}' matches no interface (this node has: {}): NCCL fails with 'no socket interface found'",
                names.join(", ")
            ),
            evidence,
        )
        .fix(exact_fix);
    }
    if !selected.contains(&iface) {
        return Check::new(
            "env.nccl_socket_ifname",
            Status::Warn,
            format!(
                "NCCL_SOCKET_IFNAME='{value}' selects {}, not {iface}",
                selected.join(", ")
            ),
            evidence,
        )
        .fix(exact_fix);
    }
    if selected.len() > 1 {
        return Check::new(
            "env.nccl_socket_ifname",
            Status::Warn,
            format!(
                "NCCL_SOCKET_IFNAME='{value}' {} also matches {}: NCCL may use those too",
                if spec.exclude {
                    "excludes too little and"
                } else {
                    "is a prefix that"
                },
                selected
                    .iter()
                    .filter(|n| **n != iface)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence,
        )
        .fix(exact_fix);
    }
    Check::new(
        "env.nccl_socket_ifname",
        Status::Pass,
        format!("NCCL_SOCKET_IFNAME='{value}' selects only {iface}"),
        evidence,
    )
}

pub(crate) fn gloo_socket_ifname(facts: &Facts) -> Check {
    let iface = facts.iface.name.as_str();
    let Some(value) = facts.env("GLOO_SOCKET_IFNAME") else {
        return Check::new(
            "env.gloo_socket_ifname",
            Status::Info,
            "GLOO_SOCKET_IFNAME is unset: Gloo uses the address the hostname resolves to",
            json!({"GLOO_SOCKET_IFNAME": null}),
        )
        .fix(format!("export GLOO_SOCKET_IFNAME={iface}"));
    };
    let evidence = json!({"GLOO_SOCKET_IFNAME": value, "interfaces": facts.interface_names()});
    if value.contains(['^', '=', ',']) {
        return Check::new(
            "env.gloo_socket_ifname",
            Status::Fail,
            format!("GLOO_SOCKET_IFNAME='{value}' uses NCCL syntax: Gloo takes exactly one interface name"),
            evidence,
        )
        .fix(format!("export GLOO_SOCKET_IFNAME={iface}"));
    }
    if facts.interface(value).is_none() {
        return Check::new(
            "env.gloo_socket_ifname",
            Status::Fail,
            format!(
                "GLOO_SOCKET_IFNAME='{value}' is not an interface of this node (it has: {})",
                facts.interface_names().join(", ")
            ),
            evidence,
        )
        .fix(format!("export GLOO_SOCKET_IFNAME={iface}"));
    }
    if value != iface {
        return Check::new(
            "env.gloo_socket_ifname",
            Status::Warn,
            format!(
                "GLOO_SOCKET_IFNAME={value} differs from {} ({iface})",
                measure::Setting::Interface
            ),
            evidence,
        )
        .fix(format!("export GLOO_SOCKET_IFNAME={iface}"));
    }
    Check::new(
        "env.gloo_socket_ifname",
        Status::Pass,
        format!("GLOO_SOCKET_IFNAME={value}"),
        evidence,
    )
}

pub(crate) fn nccl_ib(facts: &Facts) -> Check {
    let disable = facts.env("NCCL_IB_DISABLE");
    let hca = facts.env("NCCL_IB_HCA");
    let host_ip = facts.env("HOST_IP");
    let vllm_host_ip = facts.env("VLLM_HOST_IP");
    let active_ports: Vec<String> = facts
        .rdma
        .iter()
        .flat_map(|d| {
            d.ports
                .iter()
                .filter(|p| p.is_active())
                .map(move |p: &RdmaPort| format!("{}:{}", d.name, p.number))
        })
        .collect();
    let devices: Vec<&str> = facts.rdma.iter().map(|d| d.name.as_str()).collect();
    let evidence = json!({
        "NCCL_IB_DISABLE": disable, "NCCL_IB_HCA": hca, "HOST_IP": host_ip,
        "VLLM_HOST_IP": vllm_host_ip, "rdma_devices": devices, "active_ports": active_ports,
    });
    if let Some(hca) = hca {
        let spec = IfnameSpec::parse(hca);
        let missing = if spec.exclude {
            Vec::new()
        } else {
            spec.unmatched_items(&devices)
        };
        if !missing.is_empty() {
            return Check::new(
                "env.nccl_ib",
                Status::Fail,
                format!(
                    "NCCL_IB_HCA='{hca}' names {} but this node has {}",
                    missing.join(", "),
                    if devices.is_empty() {
                        "no RDMA devices".to_string()
                    } else {
                        devices.join(", ")
                    }
                ),
                evidence,
            )
            .fix(if devices.is_empty() {
                "unset NCCL_IB_HCA, or load the RDMA driver (check `ibv_devices`)".to_string()
            } else {
                format!("export NCCL_IB_HCA={}", devices.join(","))
            });
        }
    }
    match disable {
        Some("1") if !active_ports.is_empty() => {
            return Check::new(
                "env.nccl_ib",
                Status::Warn,
                format!(
                    "NCCL_IB_DISABLE=1 while {} is ACTIVE: NCCL falls back to TCP sockets",
                    active_ports.join(", ")
                ),
                evidence,
            )
            .fix("unset NCCL_IB_DISABLE to let NCCL use RDMA");
        }
        Some("0" | "1") | None => {}
        Some(other) => {
            return Check::new(
                "env.nccl_ib",
                Status::Warn,
                format!("NCCL_IB_DISABLE='{other}' is not 0 or 1"),
                evidence,
            )
            .fix("set NCCL_IB_DISABLE=0 (use RDMA) or 1 (sockets only)");
        }
    }
    if host_ip.is_some() && vllm_host_ip.is_none() {
        return Check::new(
            "env.nccl_ib",
            Status::Warn,
            "HOST_IP is set but VLLM_HOST_IP is not: current vLLM ignores HOST_IP",
            evidence,
        )
        .fix(format!(
            "export VLLM_HOST_IP={}",
            host_ip.unwrap_or_default()
        ));
    }
    Check::new(
        "env.nccl_ib",
        if hca.is_some() || disable.is_some() {
            Status::Pass
        } else {
            Status::Info
        },
        if active_ports.is_empty() {
            "NCCL IB settings consistent; no ACTIVE RDMA port, NCCL will use sockets".to_string()
        } else {
            format!(
                "NCCL IB settings consistent; ACTIVE ports: {}",
                active_ports.join(", ")
            )
        },
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::{facts, with_env};
    use crate::facts::{RdmaDevice, RdmaPort};

    fn status(check: Check) -> Status {
        check.status
    }

    #[test]
    fn socket_ifname_unset_is_info() {
        assert_eq!(status(nccl_socket_ifname(&facts())), Status::Info);
    }

    #[test]
    fn socket_ifname_exact_passes_and_prefix_of_several_warns() {
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "=eth0")]
            ))),
            Status::Pass
        );
        let check = nccl_socket_ifname(&with_env(facts(), &[("NCCL_SOCKET_IFNAME", "eth")]));
        assert_eq!(check.status, Status::Warn);
        assert!(check.summary.contains("eth1"), "{}", check.summary);
        assert_eq!(check.fix, "export NCCL_SOCKET_IFNAME==eth0");
    }

    #[test]
    fn socket_ifname_matching_nothing_fails() {
        let check = nccl_socket_ifname(&with_env(facts(), &[("NCCL_SOCKET_IFNAME", "ib")]));
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("matches no interface"));
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "=eth")]
            ))),
            Status::Fail
        );
    }

    #[test]
    fn socket_ifname_exclude_rules() {
        // Excludes everything but eth0: pass.
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "^lo,eth1")]
            ))),
            Status::Pass
        );
        // Leaves eth1 selected as well: warn.
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "^lo")]
            ))),
            Status::Warn
        );
        // Excludes the interface we want: warn (differs from --iface).
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "^=eth0")]
            ))),
            Status::Warn
        );
        // Excludes everything: fail.
        assert_eq!(
            status(nccl_socket_ifname(&with_env(
                facts(),
                &[("NCCL_SOCKET_IFNAME", "^e,lo")]
            ))),
            Status::Fail
        );
    }

    #[test]
    fn gloo_ifname_rules() {
        assert_eq!(status(gloo_socket_ifname(&facts())), Status::Info);
        assert_eq!(
            status(gloo_socket_ifname(&with_env(
                facts(),
                &[("GLOO_SOCKET_IFNAME", "eth0")]
            ))),
            Status::Pass
        );
        assert_eq!(
            status(gloo_socket_ifname(&with_env(
                facts(),
                &[("GLOO_SOCKET_IFNAME", "eth1")]
            ))),
            Status::Warn
        );
        for bad in ["^lo", "=eth0", "eth0,eth1", "eno7"] {
            assert_eq!(
                status(gloo_socket_ifname(&with_env(
                    facts(),
                    &[("GLOO_SOCKET_IFNAME", bad)]
                ))),
                Status::Fail,
                "{bad}"
            );
        }
    }

    fn with_active_port(mut f: crate::facts::Facts) -> crate::facts::Facts {
        f.rdma.push(RdmaDevice {
            name: "mlx5_0".into(),
            netdevs: vec!["eth0".into()],
            ports: vec![RdmaPort {
                number: 1,
                state: Some("ACTIVE".into()),
                phys_state: Some("LinkUp".into()),
                rate: Some("100 Gb/sec (4X EDR)".into()),
                link_layer: Some("InfiniBand".into()),
                gids: vec![],
                active_mtu: Some(4096),
            }],
        });
        f
    }

    #[test]
    fn ib_disable_with_active_port_warns() {
        assert_eq!(status(nccl_ib(&with_active_port(facts()))), Status::Info);
        let check = nccl_ib(&with_env(
            with_active_port(facts()),
            &[("NCCL_IB_DISABLE", "1")],
        ));
        assert_eq!(check.status, Status::Warn);
        assert!(check.summary.contains("mlx5_0:1"));
        assert_eq!(
            status(nccl_ib(&with_env(facts(), &[("NCCL_IB_DISABLE", "1")]))),
            Status::Pass
        );
        assert_eq!(
            status(nccl_ib(&with_env(facts(), &[("NCCL_IB_DISABLE", "yes")]))),
            Status::Warn
        );
    }

    #[test]
    fn ib_hca_naming_a_missing_device_fails() {
        assert_eq!(
            status(nccl_ib(&with_env(facts(), &[("NCCL_IB_HCA", "mlx5_0")]))),
            Status::Fail
        );
        let f = with_env(with_active_port(facts()), &[("NCCL_IB_HCA", "mlx5_0:1")]);
        assert_eq!(status(nccl_ib(&f)), Status::Pass);
        let f = with_env(
            with_active_port(facts()),
            &[("NCCL_IB_HCA", "=mlx5_0,mlx5_3")],
        );
        let check = nccl_ib(&f);
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("mlx5_3"));
    }

    #[test]
    fn host_ip_without_vllm_host_ip_warns() {
        assert_eq!(
            status(nccl_ib(&with_env(facts(), &[("HOST_IP", "10.0.0.5")]))),
            Status::Warn
        );
        let f = with_env(
            facts(),
            &[("HOST_IP", "10.0.0.5"), ("VLLM_HOST_IP", "10.0.0.5")],
        );
        assert_ne!(status(nccl_ib(&f)), Status::Warn);
    }
}
