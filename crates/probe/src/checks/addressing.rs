//! Which address the frameworks will pick: vLLM's get_ip() and Ray use the source address
//! of the default route unless VLLM_HOST_IP / RAY_NODE_IP_ADDRESS pin one; Gloo resolves
//! the hostname unless GLOO_SOCKET_IFNAME is set.

use super::{Check, Status};
use crate::facts::Facts;
use serde_json::json;
use std::net::IpAddr;

pub(crate) fn ip_selection(facts: &Facts) -> Check {
    let iface = &facts.iface;
    let wanted = iface.global_ipv4();
    let route_iface = facts.default_route.as_ref().map(|r| r.iface.clone());
    let route_source = route_iface
        .as_deref()
        .and_then(|name| facts.interface(name))
        .and_then(super::super::facts::Interface::global_ipv4);
    let vllm_host_ip = facts.env("VLLM_HOST_IP");
    let ray_ip = facts.env("RAY_NODE_IP_ADDRESS");
    let evidence = json!({
        "iface_address": wanted, "default_route_iface": route_iface,
        "default_route_source": route_source, "VLLM_HOST_IP": vllm_host_ip,
        "RAY_NODE_IP_ADDRESS": ray_ip,
    });
    let Some(wanted) = wanted else {
        return Check::new(
            "ip.selection",
            Status::Skip,
            format!(
                "{} has no global IPv4 address to compare (see iface.up)",
                iface.name
            ),
            evidence,
        );
    };
    let ray_start =
        format!("export VLLM_HOST_IP={wanted}; ray start --node-ip-address={wanted} ...");
    for (name, value) in [
        ("VLLM_HOST_IP", vllm_host_ip),
        ("RAY_NODE_IP_ADDRESS", ray_ip),
    ] {
        let Some(value) = value else { continue };
        let pinned: Option<IpAddr> = value.trim().parse().ok();
        if pinned != Some(IpAddr::V4(wanted)) {
            let owner = pinned.and_then(|addr| facts.interfaces.iter().find(|i| i.has_addr(addr)));
            return Check::new(
                "ip.selection",
                Status::Fail,
                match (pinned, owner) {
                    (None, _) => format!("{name}='{value}' is not an IP address"),
                    (Some(_), Some(other)) => format!(
                        "{name}={value} belongs to {}, not to {} ({wanted})",
                        other.name, iface.name
                    ),
                    (Some(_), None) => format!("{name}={value} is not an address of this node"),
                },
                evidence,
            )
            .fix(ray_start);
        }
    }
    if vllm_host_ip.is_some() || ray_ip.is_some() {
        return Check::new(
            "ip.selection",
            Status::Pass,
            format!("the node address is pinned to {wanted} on {}", iface.name),
            evidence,
        )
        .fix(ray_start);
    }
    match (route_iface.as_deref(), route_source) {
        (None, _) => Check::new(
            "ip.selection",
            Status::Warn,
            "no default route: vLLM's get_ip() and Ray cannot guess the node address",
            evidence,
        )
        .fix(ray_start),
        (Some(_), Some(source)) if source == wanted => Check::new(
            "ip.selection",
            Status::Pass,
            format!(
                "the default route leaves through {} with {wanted}: vLLM and Ray will pick it",
                iface.name
            ),
            evidence,
        )
        .fix(ray_start),
        (Some(route), source) => Check::new(
            "ip.selection",
            Status::Fail,
            format!(
                "vLLM and Ray will pick {} (default route via {route}), not {wanted} on {}",
                source.map_or("no address".to_string(), |s| s.to_string()),
                iface.name
            ),
            evidence,
        )
        .fix(ray_start),
    }
}

pub(crate) fn hostname_resolve(facts: &Facts) -> Check {
    let wanted = facts.iface.global_ipv4().map(IpAddr::V4);
    let gloo = facts.env("GLOO_SOCKET_IFNAME");
    let addrs = match &facts.hostname_addrs {
        Ok(addrs) => addrs.clone(),
        Err(error) => {
            return Check::new(
                "hostname.resolve",
                Status::Warn,
                format!("hostname '{}' does not resolve: {error}", facts.hostname),
                json!({"hostname": facts.hostname, "error": error}),
            )
            .fix(hosts_fix(facts, wanted));
        }
    };
    let evidence =
        json!({"hostname": facts.hostname, "addresses": addrs, "GLOO_SOCKET_IFNAME": gloo});
    if wanted.is_some_and(|w| addrs.contains(&w)) {
        return Check::new(
            "hostname.resolve",
            Status::Pass,
            format!(
                "{} resolves to {}",
                facts.hostname,
                wanted.unwrap_or(IpAddr::from([0, 0, 0, 0]))
            ),
            evidence,
        );
    }
    if addrs.iter().any(|a| !a.is_loopback()) {
        return Check::new(
            "hostname.resolve",
            Status::Warn,
            format!(
                "{} resolves to {}, not to {}'s address",
                facts.hostname,
                join(&addrs),
                facts.iface.name
            ),
            evidence,
        )
        .fix(hosts_fix(facts, wanted));
    }
    let status = if gloo.is_some() {
        Status::Warn
    } else {
        Status::Fail
    };
    Check::new(
        "hostname.resolve",
        status,
        format!(
            "{} resolves only to loopback ({}){}",
            facts.hostname,
            join(&addrs),
            if gloo.is_some() {
                ": Gloo is pinned by GLOO_SOCKET_IFNAME, other tools still get loopback"
            } else {
                ": Gloo/torch.distributed will bind 127.0.0.1 and other nodes hang connecting"
            }
        ),
        evidence,
    )
    .fix(format!(
        "export GLOO_SOCKET_IFNAME={}; and {}",
        facts.iface.name,
        hosts_fix(facts, wanted)
    ))
}

fn hosts_fix(facts: &Facts, wanted: Option<IpAddr>) -> String {
    match wanted {
        Some(addr) => format!(
            "add `{addr} {}` to /etc/hosts on every node",
            facts.hostname
        ),
        None => format!(
            "map {} to this node's address in /etc/hosts",
            facts.hostname
        ),
    }
}

fn join(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(std::string::ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture;

    #[test]
    fn selection_passes_when_default_route_uses_the_interface() {
        let check = ip_selection(&fixture::facts());
        assert_eq!(check.status, Status::Pass);
        assert!(check.fix.contains("ray start --node-ip-address=10.0.0.5"));
    }

    #[test]
    fn selection_fails_when_default_route_uses_another_interface() {
        let mut facts = fixture::facts();
        facts.default_route.as_mut().unwrap().iface = "eth1".into();
        let check = ip_selection(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("192.168.7.5"), "{}", check.summary);
        // Pinning the right address fixes it.
        let facts = fixture::with_env(facts, &[("VLLM_HOST_IP", "10.0.0.5")]);
        assert_eq!(ip_selection(&facts).status, Status::Pass);
    }

    #[test]
    fn selection_fails_when_vllm_host_ip_is_not_on_the_interface() {
        let facts = fixture::with_env(fixture::facts(), &[("VLLM_HOST_IP", "192.168.7.5")]);
        let check = ip_selection(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.summary.contains("belongs to eth1"),
            "{}",
            check.summary
        );
        let facts = fixture::with_env(fixture::facts(), &[("RAY_NODE_IP_ADDRESS", "not-an-ip")]);
        assert_eq!(ip_selection(&facts).status, Status::Fail);
    }

    #[test]
    fn selection_warns_without_default_route() {
        let mut facts = fixture::facts();
        facts.default_route = None;
        assert_eq!(ip_selection(&facts).status, Status::Warn);
    }

    #[test]
    fn hostname_on_loopback_fails_unless_gloo_is_pinned() {
        let mut facts = fixture::facts();
        assert_eq!(hostname_resolve(&facts).status, Status::Pass);
        facts.hostname_addrs = Ok(vec!["127.0.1.1".parse().unwrap()]);
        let check = hostname_resolve(&facts);
        assert_eq!(check.status, Status::Fail);
        assert!(check.fix.contains("GLOO_SOCKET_IFNAME=eth0"));
        let facts = fixture::with_env(facts, &[("GLOO_SOCKET_IFNAME", "eth0")]);
        assert_eq!(hostname_resolve(&facts).status, Status::Warn);
    }

    #[test]
    fn hostname_on_another_address_warns() {
        let mut facts = fixture::facts();
        facts.hostname_addrs = Ok(vec!["192.168.7.5".parse().unwrap()]);
        assert_eq!(hostname_resolve(&facts).status, Status::Warn);
        facts.hostname_addrs = Err("Name or service not known".into());
        assert_eq!(hostname_resolve(&facts).status, Status::Warn);
    }
}
