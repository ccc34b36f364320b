//! The interface itself: up with an address, fast enough, not a container veth, usable
//! address family, NUMA placement next to the GPUs.

use super::{Check, Status};
use crate::facts::Facts;
use measure::Setting;
use serde_json::json;

pub(crate) fn up(facts: &Facts) -> Check {
    let iface = &facts.iface;
    let evidence = json!({
        "name": iface.name, "operstate": iface.operstate, "carrier": iface.carrier,
        "mtu": iface.mtu, "kind": iface.kind, "driver": iface.driver,
        "ipv4": iface.ipv4.iter().map(|n| format!("{}/{}", n.addr, n.prefix)).collect::<Vec<_>>(),
        "ipv6": iface.ipv6.iter().map(|n| format!("{}/{}", n.addr, n.prefix)).collect::<Vec<_>>(),
    });
    let name = &iface.name;
    if !iface.exists {
        let known = facts.interface_names().join(", ");
        return Check::new(
            "iface.up",
            Status::Fail,
            format!("interface {name} does not exist (this node has: {known})"),
            json!({"name": name, "interfaces": facts.interface_names()}),
        )
        .fix(format!(
            "set {} to one of the existing interfaces: {known}",
            Setting::Interface
        ));
    }
    if !iface.is_up() {
        return Check::new(
            "iface.up",
            Status::Fail,
            format!(
                "{name} is {} (carrier {})",
                iface.operstate.as_deref().unwrap_or("in an unknown state"),
                match iface.carrier {
                    Some(true) => "present",
                    Some(false) => "lost",
                    None => "unknown",
                }
            ),
            evidence,
        )
        .fix(format!("bring it up: `ip link set {name} up`, and check the cable/switch port if carrier stays down"));
    }
    if iface.kind == "loopback" {
        let candidates = super::candidate_interfaces(facts);
        let why = if facts.default_route.is_none() {
            "this node has no default route, so nothing says which interface carries inter-node traffic, and "
        } else {
            ""
        };
        return Check::new(
            "iface.up",
            Status::Fail,
            format!(
                "{why}{name} is the loopback interface: other nodes cannot reach it; candidates: {}",
                if candidates.is_empty() { "none (no other interface is up with a global IPv4 address)".to_string() } else { candidates.join(", ") }
            ),
            evidence,
        )
        .fix(match candidates.first() {
            Some(first) => format!(
                "set {} to the interface that carries inter-node traffic, e.g. {}",
                Setting::Interface,
                first.split(' ').next().unwrap_or("eno1")
            ),
            None => format!("bring up the inter-node interface and give it an address, then set {} to it", Setting::Interface),
        });
    }
    match iface.global_ipv4() {
        Some(addr) => Check::new(
            "iface.up",
            Status::Pass,
            format!("{name} is up with {addr}, MTU {}", iface.mtu.unwrap_or(0)),
            evidence,
        ),
        None => Check::new(
            "iface.up",
            Status::Fail,
            format!("{name} is up but has no global IPv4 address"),
            evidence,
        )
        .fix(format!(
            "assign one: `ip addr add <ADDR>/<PREFIX> dev {name}` (or fix DHCP/netplan)"
        )),
    }
}

pub(crate) fn speed(facts: &Facts) -> Check {
    let iface = &facts.iface;
    let evidence = json!({"name": iface.name, "speed_mbps": iface.speed_mbps});
    match iface.speed_mbps {
        None => Check::new(
            "iface.speed",
            Status::Info,
            format!("{} reports no link speed (virtual NIC or driver without ethtool speed)", iface.name),
            evidence,
        )
        .fix("measure it instead: `linkbench bw --peer OTHER_NODE`"),
        Some(mbps) if mbps < 25_000 => Check::new(
            "iface.speed",
            Status::Warn,
            format!(
                "{} links at {} Gbit/s: tensor-parallel all-reduces across nodes need 25 Gbit/s or more",
                iface.name,
                mbps as f64 / 1000.0
            ),
            evidence,
        )
        .fix("use a faster NIC (25/100 Gbit/s or InfiniBand) for inter-node traffic, or keep TP inside one node and use PP across nodes"),
        Some(mbps) => Check::new(
            "iface.speed",
            Status::Pass,
            format!("{} links at {} Gbit/s", iface.name, mbps as f64 / 1000.0),
            evidence,
        ),
    }
}

pub(crate) fn container_network(facts: &Facts) -> Check {
    let iface = &facts.iface;
    let docker_address = iface
        .ipv4
        .iter()
        .any(|net| net.addr.octets()[0] == 172 && net.addr.octets()[1] == 17);
    let bridge_name = ["docker", "br-", "cni", "flannel", "cali", "veth"]
        .iter()
        .any(|prefix| iface.name.starts_with(prefix));
    let evidence = json!({
        "name": iface.name, "kind": iface.kind, "in_container": facts.in_container,
        "docker_default_subnet": docker_address,
    });
    if iface.kind == "veth" || iface.kind == "bridge" || docker_address || bridge_name {
        return Check::new(
            "container.network",
            Status::Warn,
            format!(
                "{} is a container {} interface{}: other nodes may not reach this address, and NAT halves throughput",
                iface.name,
                if iface.kind == "bridge" { "bridge" } else { "veth" },
                if docker_address { " on Docker's default 172.17.0.0/16" } else { "" },
            ),
            evidence,
        )
        .fix("run the container with host networking (`docker run --network host`, `hostNetwork: true` in Kubernetes) and pass the host NIC");
    }
    Check::new(
        "container.network",
        if facts.in_container {
            Status::Info
        } else {
            Status::Pass
        },
        if facts.in_container {
            format!(
                "inside a container, but {} is not a container veth/bridge (host networking)",
                iface.name
            )
        } else {
            format!("{} is a {} interface", iface.name, iface.kind)
        },
        evidence,
    )
}

pub(crate) fn ip_family(facts: &Facts) -> Check {
    let iface = &facts.iface;
    let only_link_local_v6 = iface.global_ipv4().is_none()
        && !iface.ipv6.is_empty()
        && iface.ipv6.iter().all(|n| n.addr.is_unicast_link_local());
    let first_resolved = facts
        .hostname_addrs
        .as_ref()
        .ok()
        .and_then(|a| a.first().copied());
    let evidence = json!({
        "ipv4": iface.ipv4.len(), "ipv6": iface.ipv6.iter().map(|n| n.addr.to_string()).collect::<Vec<_>>(),
        "hostname_first_address": first_resolved,
    });
    if only_link_local_v6 {
        return Check::new(
            "ip.family",
            Status::Warn,
            format!("{} has only link-local IPv6 (fe80::): NCCL and Gloo cannot route to it across nodes", iface.name),
            evidence,
        )
        .fix(format!("give {} an IPv4 or global IPv6 address", iface.name));
    }
    if let Some(std::net::IpAddr::V6(v6)) = first_resolved {
        return Check::new(
            "ip.family",
            Status::Warn,
            format!("hostname {} resolves to IPv6 {v6} first: Gloo/torch.distributed will try IPv6", facts.hostname),
            evidence,
        )
        .fix("put the IPv4 address first in /etc/hosts, or set NCCL_SOCKET_FAMILY=AF_INET and GLOO_SOCKET_IFNAME");
    }
    Check::new(
        "ip.family",
        Status::Pass,
        "IPv4 is available and preferred",
        evidence,
    )
}

pub(crate) fn numa_affinity(facts: &Facts) -> Check {
    let nic = facts.iface.numa_node;
    let gpu_nodes: Vec<Option<i32>> = facts.gpu.gpus.iter().map(|g| g.numa_node).collect();
    let evidence = json!({"nic_numa_node": nic, "gpu_numa_nodes": gpu_nodes});
    let summary = match nic {
        None => format!(
            "{} has no NUMA node (virtual NIC or single-socket host)",
            facts.iface.name
        ),
        Some(node) if gpu_nodes.is_empty() => {
            format!("{} is on NUMA node {node}; no GPUs seen", facts.iface.name)
        }
        Some(node) => {
            let far = gpu_nodes
                .iter()
                .filter(|g| g.is_some_and(|g| g != node))
                .count();
            format!(
                "{} is on NUMA node {node}; {far} of {} GPUs sit on another node (traffic crosses the socket link)",
                facts.iface.name,
                gpu_nodes.len()
            )
        }
    };
    Check::new("numa.affinity", Status::Info, summary, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture;
    use crate::facts::IpNet;

    #[test]
    fn up_passes_with_a_global_address() {
        let check = up(&fixture::facts());
        assert_eq!(check.status, Status::Pass, "{check:?}");
        assert!(check.summary.contains("10.0.0.5"));
    }

    #[test]
    fn up_fails_for_unknown_names_and_lists_the_real_ones() {
        let mut facts = fixture::facts();
        facts.iface = crate::sysfs::read_interface(std::path::Path::new("/nonexistent"), "eno9");
        let check = up(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.summary.contains("lo, eth0, eth1"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn up_fails_when_down_or_without_address_or_loopback() {
        let mut facts = fixture::facts();
        facts.iface.operstate = Some("down".into());
        facts.iface.carrier = Some(false);
        assert_eq!(up(&facts).status, Status::Fail);

        let mut facts = fixture::facts();
        facts.iface.ipv4.clear();
        assert_eq!(up(&facts).status, Status::Fail);

        let mut facts = fixture::facts();
        facts.iface = facts.interface("lo").unwrap().clone();
        let check = up(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("loopback"));
    }

    /// No default route and no --iface: netcheck used to settle on lo and recommend
    /// `export NCCL_SOCKET_IFNAME=lo`. It fails, lists the real candidates, and never
    /// recommends loopback anywhere.
    #[test]
    fn without_a_default_route_loopback_is_never_recommended() {
        let mut facts = fixture::facts();
        facts.default_route = None;
        facts.iface = facts.interface("lo").unwrap().clone();
        let check = up(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.summary.contains("no default route"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("candidates: eth0 (10.0.0.5)"),
            "{}",
            check.summary
        );
        assert!(
            check
                .fix
                .contains("set the interface setting to the interface that carries inter-node traffic, e.g. eth0"),
            "{}",
            check.fix
        );
        for c in crate::run_checks(&facts, &Default::default()) {
            assert!(
                !c.fix.contains("IFNAME=lo") && !c.fix.contains("IFNAME==lo"),
                "{c:?}"
            );
        }
    }

    #[test]
    fn speed_warns_below_25g_and_is_info_when_unknown() {
        let mut facts = fixture::facts();
        assert_eq!(speed(&facts).status, Status::Pass);
        facts.iface.speed_mbps = Some(10_000);
        assert_eq!(speed(&facts).status, Status::Warn);
        facts.iface.speed_mbps = None;
        assert_eq!(speed(&facts).status, Status::Info);
    }

    #[test]
    fn container_veth_warns() {
        let mut facts = fixture::facts();
        assert_eq!(container_network(&facts).status, Status::Pass);
        facts.iface.kind = "veth".into();
        facts.in_container = true;
        let check = container_network(&facts);
        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.contains("--network host"));
        let mut facts = fixture::facts();
        facts.iface.ipv4[0].addr = "172.17.0.2".parse().unwrap();
        assert_eq!(container_network(&facts).status, Status::Warn);
    }

    #[test]
    fn link_local_only_ipv6_or_ipv6_first_warns() {
        let mut facts = fixture::facts();
        assert_eq!(ip_family(&facts).status, Status::Pass);
        facts.iface.ipv4.clear();
        facts.iface.ipv6.push(IpNet {
            addr: "fe80::1".parse().unwrap(),
            prefix: 64,
        });
        assert_eq!(ip_family(&facts).status, Status::Warn);
        let mut facts = fixture::facts();
        facts.hostname_addrs = Ok(vec![
            "2001:db8::5".parse().unwrap(),
            "10.0.0.5".parse().unwrap(),
        ]);
        assert_eq!(ip_family(&facts).status, Status::Warn);
    }

    #[test]
    fn numa_is_info_and_counts_far_gpus() {
        let mut facts = fixture::facts();
        facts.gpu.gpus = vec![
            crate::facts::Gpu {
                bus_id: "a".into(),
                model: None,
                numa_node: Some(0),
            },
            crate::facts::Gpu {
                bus_id: "b".into(),
                model: None,
                numa_node: Some(1),
            },
        ];
        let check = numa_affinity(&facts);
        assert_eq!(check.status, Status::Info);
        assert!(check.summary.contains("1 of 2 GPUs"), "{}", check.summary);
    }
}
