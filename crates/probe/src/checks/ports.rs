//! Ports the cluster needs (Ray's GCS on 6379, plus `--port` values) must be free to bind
//! on the interface address, or `ray start --head` dies with "address already in use".

use super::{Check, Status};
use crate::facts::Facts;
use serde_json::json;

pub(crate) fn free(facts: &Facts) -> Check {
    let evidence = json!({"ports": facts.ports});
    if facts.ports.is_empty() {
        return Check::new(
            "ports.free",
            Status::Skip,
            format!(
                "{} has no IPv4 address to bind (see iface.up)",
                facts.iface.name
            ),
            evidence,
        );
    }
    let busy: Vec<String> = facts
        .ports
        .iter()
        .filter(|p| p.bind_error.is_some())
        .map(|p| {
            if p.in_use {
                format!("{}:{} is in use", p.addr, p.port)
            } else {
                format!(
                    "{}:{} cannot be bound ({})",
                    p.addr,
                    p.port,
                    p.bind_error.as_deref().unwrap_or("")
                )
            }
        })
        .collect();
    let listed: Vec<String> = facts.ports.iter().map(|p| p.port.to_string()).collect();
    if busy.is_empty() {
        return Check::new(
            "ports.free",
            Status::Pass,
            format!(
                "free to bind on {}: {}",
                facts.ports[0].addr,
                listed.join(", ")
            ),
            evidence,
        );
    }
    let first = facts
        .ports
        .iter()
        .find(|p| p.bind_error.is_some())
        .map_or(0, |p| p.port);
    Check::new("ports.free", Status::Fail, busy.join("; "), evidence).fix(format!(
        "find the owner with `ss -ltnp 'sport = :{first}'` and stop it (a leftover `ray stop --force`), or choose another port (ray start --port=...)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::fixture::facts;

    #[test]
    fn bound_port_fails_free_port_passes() {
        let mut f = facts();
        assert_eq!(free(&f).status, Status::Pass);
        f.ports[0].bind_error = Some("Address already in use (os error 98)".into());
        f.ports[0].in_use = true;
        let check = free(&f);
        assert_eq!(check.status, Status::Fail);
        assert!(check.summary.contains("10.0.0.5:6379 is in use"));
        f.ports.clear();
        assert_eq!(free(&f).status, Status::Skip);
    }

    #[test]
    fn a_real_bound_port_is_seen_as_in_use() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut f = facts();
        f.iface.ipv4[0].addr = std::net::Ipv4Addr::LOCALHOST;
        f.iface.kind = "physical".into();
        let probes = crate::facts::probe_ports(&f.iface, &[port]);
        assert!(probes[0].in_use, "{probes:?}");
    }
}
