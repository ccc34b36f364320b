//! Variables and devices that broke real runs: UCX_TLS / UCX_NET_DEVICES (NIXL over UCX),
//! VLLM_NIXL_SIDE_CHANNEL_HOST, proxies without no_proxy, and /dev/infiniband inside a
//! container whose sysfs shows RDMA devices.

use super::{Check, Status};
use crate::facts::Facts;
use serde_json::json;
use std::net::IpAddr;

pub(crate) fn ucx(facts: &Facts) -> Check {
    let tls = facts.env("UCX_TLS");
    let devices = facts.env("UCX_NET_DEVICES");
    let evidence = json!({ "UCX_TLS": tls, "UCX_NET_DEVICES": devices });
    if let Some(devices) = devices.filter(|d| d.trim() != "all") {
        let rdma_names: Vec<&str> = facts.rdma.iter().map(|d| d.name.as_str()).collect();
        let missing: Vec<&str> = devices
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .filter(|entry| {
                let name = entry.split(':').next().unwrap_or(entry);
                !rdma_names.contains(&name) && facts.interface(name).is_none()
            })
            .collect();
        if !missing.is_empty() {
            let mut known = rdma_names.clone();
            known.extend(facts.interface_names());
            return Check::new(
                "env.ucx",
                Status::Fail,
                format!(
                    "UCX_NET_DEVICES names {} that this node does not have (it has: {}): UCX fails or silently picks another device",
                    missing.join(", "),
                    known.join(", ")
                ),
                evidence,
            )
            .fix(format!(
                "export UCX_NET_DEVICES={} (an RDMA device:port or interface of this node), or unset it",
                facts
                    .rdma
                    .first()
                    .map_or_else(|| facts.iface.name.clone(), |d| format!("{}:1", d.name))
            ));
        }
    }
    if let Some(tls) = tls {
        let tcp_only = tls.split(',').map(str::trim).all(|t| {
            matches!(t, "tcp" | "self" | "sm" | "shm") || t.starts_with("cuda") || t.is_empty()
        });
        if tcp_only && facts.rdma_in_use() {
            return Check::new(
                "env.ucx",
                Status::Warn,
                format!("UCX_TLS={tls} leaves out RDMA on a node with an ACTIVE RDMA port: NIXL/UCX move the KV cache over TCP"),
                evidence,
            )
            .fix(format!("export UCX_TLS={tls},rc (or unset UCX_TLS)"));
        }
    }
    if tls.is_none() && devices.is_none() {
        return Check::new(
            "env.ucx",
            Status::Info,
            "UCX_TLS and UCX_NET_DEVICES are unset: UCX picks its transports itself",
            evidence,
        );
    }
    Check::new(
        "env.ucx",
        Status::Pass,
        "UCX variables name devices and transports this node has",
        evidence,
    )
}

pub(crate) fn nixl(facts: &Facts) -> Check {
    let host = facts.env("VLLM_NIXL_SIDE_CHANNEL_HOST");
    let evidence = json!({ "VLLM_NIXL_SIDE_CHANNEL_HOST": host, "VLLM_NIXL_SIDE_CHANNEL_PORT": facts.env("VLLM_NIXL_SIDE_CHANNEL_PORT") });
    let address = facts.iface.global_ipv4();
    let Some(host) = host else {
        let check = Check::new(
            "env.nixl",
            Status::Info,
            "VLLM_NIXL_SIDE_CHANNEL_HOST is unset: vLLM's NIXL connector advertises localhost, which only works when prefill and decode share a node",
            evidence,
        );
        return match address {
            Some(a) => check.fix(format!(
                "for P/D across nodes: export VLLM_NIXL_SIDE_CHANNEL_HOST={a}"
            )),
            None => check,
        };
    };
    let parsed: Option<IpAddr> = host.trim().parse().ok();
    let ours = parsed.is_some_and(|ip| facts.interfaces.iter().any(|i| i.has_addr(ip)));
    if parsed.is_some() && !ours {
        let check = Check::new(
            "env.nixl",
            Status::Fail,
            format!("VLLM_NIXL_SIDE_CHANNEL_HOST={host} is not an address of this node: the other side's handshake goes elsewhere and the KV transfer never starts"),
            evidence,
        );
        return match address {
            Some(a) => check.fix(format!("export VLLM_NIXL_SIDE_CHANNEL_HOST={a}")),
            None => check,
        };
    }
    if parsed.is_some_and(|ip| ip.is_loopback()) {
        return Check::new(
            "env.nixl",
            Status::Warn,
            format!("VLLM_NIXL_SIDE_CHANNEL_HOST={host} is loopback: only a decode on this node can reach it"),
            evidence,
        );
    }
    Check::new(
        "env.nixl",
        Status::Pass,
        format!("VLLM_NIXL_SIDE_CHANNEL_HOST={host}"),
        evidence,
    )
}

pub(crate) fn proxy(facts: &Facts) -> Check {
    let proxy = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]
        .iter()
        .find_map(|k| facts.env(k).map(|v| (*k, v)));
    let no_proxy = facts.env("no_proxy").or_else(|| facts.env("NO_PROXY"));
    let evidence = json!({ "proxy": proxy.map(|(k, v)| format!("{k}={v}")), "no_proxy": no_proxy });
    match (proxy, no_proxy) {
        (None, _) => Check::new("env.proxy", Status::Pass, "no HTTP proxy is set", evidence),
        (Some((key, value)), None) => {
            let subnet = facts
                .iface
                .ipv4
                .first()
                .map(|n| format!("{}/{}", n.addr, n.prefix))
                .unwrap_or_else(|| "the cluster's subnet".into());
            Check::new(
                "env.proxy",
                Status::Warn,
                format!("{key}={value} is set and no_proxy is not: vLLM, Ray and NIXL requests to other nodes go through the proxy (vllm#5779)"),
                evidence,
            )
            .fix(format!("export no_proxy=localhost,127.0.0.1,{subnet}"))
        }
        (Some(_), Some(np)) => Check::new(
            "env.proxy",
            Status::Pass,
            format!("a proxy is set with no_proxy={np}"),
            evidence,
        ),
    }
}

pub(crate) fn uverbs(facts: &Facts) -> Check {
    let evidence = json!({ "in_container": facts.in_container, "uverbs": facts.uverbs, "rdma_devices": facts.rdma.len() });
    if facts.rdma.is_empty() {
        return Check::new(
            "rdma.uverbs",
            Status::Skip,
            "no RDMA device in sysfs",
            evidence,
        );
    }
    let usable = facts.uverbs.iter().filter(|(_, ok)| *ok).count();
    if usable > 0 {
        return Check::new(
            "rdma.uverbs",
            Status::Pass,
            format!("{usable} /dev/infiniband/uverbs* device(s) can be opened"),
            evidence,
        );
    }
    let why = if facts.uverbs.is_empty() {
        "/dev/infiniband/uverbs* is missing"
    } else {
        "/dev/infiniband/uverbs* cannot be opened by this user"
    };
    let fix = if facts.in_container {
        "pass the devices in: `docker run --device /dev/infiniband --cap-add IPC_LOCK`, or the RDMA device plugin (rdma/hca resources) in Kubernetes"
    } else {
        "load the uverbs module (`modprobe ib_uverbs`) and give the user access (the rdma group, or udev rules for /dev/infiniband)"
    };
    Check::new(
        "rdma.uverbs",
        Status::Fail,
        format!("sysfs shows {} RDMA device(s), but {why}: verbs (NCCL IB, NIXL/UCX) cannot open them, and NCCL falls back to sockets", facts.rdma.len()),
        evidence,
    )
    .fix(fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::{facts, with_env};
    use crate::facts::RdmaDevice;

    fn rdma_device(name: &str) -> RdmaDevice {
        RdmaDevice {
            name: name.into(),
            netdevs: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn ucx_devices_must_exist_and_tcp_only_warns_on_rdma_nodes() {
        let f = with_env(facts(), &[("UCX_NET_DEVICES", "mlx5_9:1")]);
        let check = ucx(&f);
        assert_eq!(check.status, Status::Fail, "{check:?}");
        assert!(check.summary.contains("mlx5_9:1"), "{}", check.summary);
        let mut f = with_env(facts(), &[("UCX_NET_DEVICES", "mlx5_0:1,eth0")]);
        f.rdma = vec![rdma_device("mlx5_0")];
        assert_eq!(ucx(&f).status, Status::Pass);
        let f = with_env(facts(), &[("UCX_TLS", "tcp"), ("NCCL_IB_HCA", "mlx5_0")]);
        assert_eq!(ucx(&f).status, Status::Warn);
        assert_eq!(ucx(&facts()).status, Status::Info);
    }

    #[test]
    fn the_nixl_side_channel_host_must_be_ours() {
        let c = nixl(&facts());
        assert_eq!(c.status, Status::Info);
        assert!(
            c.fix.contains("VLLM_NIXL_SIDE_CHANNEL_HOST=10.0.0.5"),
            "{}",
            c.fix
        );
        let c = nixl(&with_env(
            facts(),
            &[("VLLM_NIXL_SIDE_CHANNEL_HOST", "10.9.9.9")],
        ));
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            nixl(&with_env(
                facts(),
                &[("VLLM_NIXL_SIDE_CHANNEL_HOST", "10.0.0.5")]
            ))
            .status,
            Status::Pass
        );
    }

    #[test]
    fn proxy_credentials_never_reach_a_report() {
        assert_eq!(
            crate::facts::redact_url("http://u:p@proxy:3128"),
            "http://***@proxy:3128"
        );
        assert_eq!(
            crate::facts::redact_url("http://proxy:3128"),
            "http://proxy:3128"
        );
    }

    #[test]
    fn a_proxy_without_no_proxy_warns() {
        let c = proxy(&with_env(facts(), &[("https_proxy", "http://p:3128")]));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.fix.contains("no_proxy=localhost,127.0.0.1,10.0.0.5/24"),
            "{}",
            c.fix
        );
        let c = proxy(&with_env(
            facts(),
            &[("https_proxy", "http://p:3128"), ("no_proxy", "10.0.0.0/8")],
        ));
        assert_eq!(c.status, Status::Pass);
    }

    #[test]
    fn a_container_without_uverbs_fails_when_sysfs_shows_rdma() {
        let mut f = facts();
        f.rdma = vec![rdma_device("mlx5_0")];
        f.in_container = true;
        let c = uverbs(&f);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.contains("--device /dev/infiniband"), "{}", c.fix);
        f.uverbs = vec![("/dev/infiniband/uverbs0".into(), true)];
        assert_eq!(uverbs(&f).status, Status::Pass);
        assert_eq!(uverbs(&facts()).status, Status::Skip);
    }
}
