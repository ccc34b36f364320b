//! The pair checks: pure functions of both nodes' summaries and what the session
//! measured. Node A connected (`--peer`), node B listened (`--listen`); the text names
//! them by hostname and address, so both print the same lines.

use super::{Measured, NodeSummary, PortOutcome, Way};
use crate::checks::{Check, Status};
use serde_json::json;

/// Every pair check, in a fixed order.
pub fn pair_checks(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Vec<Check> {
    vec![
        route(a, b, m),
        ports(a, b, m),
        nat(a, b, m),
        mtu(a, b, m),
        versions(a, b),
        transport(a, b),
        bandwidth(a, b, m),
        latency(m),
        clock(m),
        dns(a, b, m),
    ]
}

fn names<'a>(
    a: &'a NodeSummary,
    b: &'a NodeSummary,
    way: Way,
) -> (&'a NodeSummary, &'a NodeSummary) {
    match way {
        Way::AtoB => (a, b),
        Way::BtoA => (b, a),
    }
}

fn route(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let evidence = json!({ "a_to_b": m.route_a_to_b, "b_to_a": m.route_b_to_a });
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    for (from, to, view) in [(a, b, &m.route_a_to_b), (b, a, &m.route_b_to_a)] {
        let (Some(view), Some(dest)) = (view, to.address()) else {
            continue;
        };
        let right_iface = view.iface.as_deref() == Some(from.iface.as_str());
        let right_source = from.addresses.contains(&view.source);
        if !right_iface || !right_source {
            problems.push(format!(
                "from {} to {dest} the kernel picks {} with source {}, not {} ({})",
                from.hostname,
                view.iface.as_deref().unwrap_or("an unknown interface"),
                view.source,
                from.iface,
                from.address()
                    .map_or_else(|| "no address".into(), |a| a.to_string())
            ));
            if let Some(source) = from.address() {
                fixes.push(format!(
                    "on {}: ip route add {dest}/32 dev {} src {source}",
                    from.hostname, from.iface
                ));
            }
        }
    }
    if m.route_a_to_b.is_none() && m.route_b_to_a.is_none() {
        return Check::new(
            "pair.route",
            Status::Skip,
            "no route was measured",
            evidence,
        );
    }
    if problems.is_empty() {
        return Check::new(
            "pair.route",
            Status::Pass,
            format!(
                "traffic between {} and {} leaves by {} and {}, from their addresses",
                a.label(),
                b.label(),
                a.iface,
                b.iface
            ),
            evidence,
        );
    }
    Check::new("pair.route", Status::Fail, problems.join("; "), evidence).fix(fixes.join("; "))
}

fn ports(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let evidence = json!({ "results": m.ports });
    if m.ports.is_empty() {
        return Check::new("pair.ports", Status::Skip, "no port was probed", evidence);
    }
    let mut blocked = Vec::new();
    let mut fixes = Vec::new();
    let mut untested = Vec::new();
    for r in &m.ports {
        let (from, to) = names(a, b, r.way);
        let how = match &r.outcome {
            PortOutcome::Open => continue,
            PortOutcome::NotTested(why) => {
                untested.push(format!("{} on {}: {why}", r.port, to.hostname));
                continue;
            }
            PortOutcome::TimedOut => "no answer: dropped by a firewall",
            PortOutcome::Refused => "refused: rejected by a firewall",
            PortOutcome::Error(e) => e.as_str(),
        };
        blocked.push(format!(
            "TCP {} ({}) from {} to {} is blocked ({how})",
            r.port,
            r.purpose,
            from.label(),
            to.label()
        ));
        let source = from
            .address()
            .map_or_else(|| "PEER".to_string(), |a| a.to_string());
        fixes.push(format!(
            "on {}: nft add rule inet filter input ip saddr {source} tcp dport {} accept (or: ufw allow from {source} to any port {} proto tcp)",
            to.hostname, r.port, r.port
        ));
    }
    let tested = m.ports.len() - untested.len();
    if !blocked.is_empty() {
        return Check::new("pair.ports", Status::Fail, blocked.join("; "), evidence)
            .fix(fixes.join("; "));
    }
    let mut summary = format!(
        "{tested} TCP connects open both ways between {} and {}",
        a.hostname, b.hostname
    );
    if !untested.is_empty() {
        summary.push_str(&format!("; not tested: {}", untested.join(", ")));
    }
    Check::new("pair.ports", Status::Pass, summary, evidence)
}

fn nat(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let evidence = json!({ "a_addresses": a.addresses, "a_seen_by_b": m.a_seen_by_b });
    let Some(seen) = m.a_seen_by_b else {
        return Check::new(
            "pair.nat",
            Status::Skip,
            "no source address was seen",
            evidence,
        );
    };
    if a.addresses.contains(&seen) {
        return Check::new(
            "pair.nat",
            Status::Pass,
            format!(
                "{} sees {} as {seen}, its own address: no NAT between them",
                b.hostname, a.hostname
            ),
            evidence,
        );
    }
    Check::new(
        "pair.nat",
        Status::Fail,
        format!(
            "{} sees {}'s connections come from {seen}, but {} has {}: NAT or masquerade between them, so the address Ray and NCCL advertise for {} is not the one {} can reach back",
            b.hostname,
            a.hostname,
            a.iface,
            a.address().map_or_else(|| "no address".into(), |x| x.to_string()),
            a.hostname,
            b.hostname
        ),
        evidence,
    )
    .fix(format!(
        "connect the nodes without NAT (same subnet, or routed), or advertise the reachable address: VLLM_HOST_IP={seen} and ray start --node-ip-address={seen} on {}",
        a.hostname
    ))
}

fn mtu(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let rdma_mtu = |n: &NodeSummary| {
        n.rdma
            .iter()
            .find_map(|r| r.active_mtu.map(|mtu| (r.device.clone(), mtu)))
    };
    let evidence = json!({
        "a_mtu": a.mtu, "b_mtu": b.mtu, "df_probes": m.df, "udp_ok": m.udp_ok,
        "a_rdma_active_mtu": rdma_mtu(a), "b_rdma_active_mtu": rdma_mtu(b),
    });
    if let (Some((da, ma)), Some((db, mb))) = (rdma_mtu(a), rdma_mtu(b)) {
        if ma != mb {
            return Check::new(
                "pair.mtu",
                Status::Fail,
                format!(
                    "RDMA active MTU {ma} on {} ({da}) but {mb} on {} ({db}): queue pairs fall back to the smaller, and a peer that assumes its own posts messages the other side reports as length errors (IBV_WC_LOC_LEN_ERR) or hangs",
                    a.hostname, b.hostname
                ),
                evidence,
            )
            .fix("make both ports' active MTU equal: RoCE follows the netdev's MTU (ip link set IFACE mtu ...), InfiniBand the subnet manager's partition MTU (opensm partitions.conf mtu=)");
        }
    }
    if let (Some(ma), Some(mb)) = (a.mtu, b.mtu) {
        if ma != mb {
            let (big, small) = if ma > mb { (a, mb) } else { (b, ma) };
            return Check::new(
                "pair.mtu",
                Status::Fail,
                format!(
                    "MTU {ma} on {} ({}) but {mb} on {} ({}): small messages pass, then large ones hang (NCCL: IBV_WC_LOC_LEN_ERR or a stalled all-reduce)",
                    a.hostname, a.iface, b.hostname, b.iface
                ),
                evidence,
            )
            .fix(format!(
                "on {}: ip link set {} mtu {small} (or raise the other side, and every switch port between them)",
                big.hostname, big.iface
            ));
        }
    }
    let lost: Vec<String> =
        m.df.iter()
            .filter(|p| !p.delivered)
            .map(|p| {
                let (from, to) = names(a, b, p.way);
                format!(
                    "a {}-byte don't-fragment packet from {} never reached {}",
                    p.packet_bytes, from.hostname, to.hostname
                )
            })
            .collect();
    if m.udp_ok == Some(true) && !lost.is_empty() {
        return Check::new(
            "pair.mtu",
            Status::Fail,
            format!(
                "{}: a path MTU black hole (a hop between them has a smaller MTU than the interfaces)",
                lost.join("; ")
            ),
            evidence,
        )
        .fix("find the hop with the smaller MTU (tracepath PEER) and raise it, or lower both interfaces' MTU to the path's");
    }
    let mtu = a
        .mtu
        .or(b.mtu)
        .map_or_else(|| "unknown".into(), |m| m.to_string());
    let probed = if m.udp_ok == Some(true) && !m.df.is_empty() {
        ", and full-size don't-fragment packets cross both ways"
    } else {
        ""
    };
    Check::new(
        "pair.mtu",
        Status::Pass,
        format!("MTU {mtu} on both{probed}"),
        evidence,
    )
}

/// "2.35.0" -> "2.35".
fn minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn versions(a: &NodeSummary, b: &NodeSummary) -> Check {
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let show = |v: Option<&String>| v.map_or_else(|| "none".to_string(), Clone::clone);
    let python = (
        a.python.as_deref().map(minor),
        b.python.as_deref().map(minor),
    );
    if python.0 != python.1 {
        fails.push(format!(
            "Python {} on {}, {} on {}",
            show(a.python.as_ref()),
            a.hostname,
            show(b.python.as_ref()),
            b.hostname
        ));
    }
    // Ray refuses a different minor version ("Version mismatch"); the others must match exactly.
    for (package, compare_minor) in [
        ("ray", true),
        ("vllm", false),
        ("torch", false),
        ("nvidia-nccl-cu12", false),
        ("nvidia-nccl-cu11", false),
        ("sglang", false),
    ] {
        let (va, vb) = (a.packages.get(package), b.packages.get(package));
        let differ = if compare_minor {
            va.map(|v| minor(v)) != vb.map(|v| minor(v))
        } else {
            va != vb
        };
        if differ {
            fails.push(format!(
                "{package} {} on {}, {} on {}",
                show(va),
                a.hostname,
                show(vb),
                b.hostname
            ));
        }
    }
    if a.nccl_net_plugins != b.nccl_net_plugins {
        fails.push(format!(
            "NCCL net plugins [{}] on {}, [{}] on {}",
            a.nccl_net_plugins.join(", "),
            a.hostname,
            b.nccl_net_plugins.join(", "),
            b.hostname
        ));
    }
    for (what, va, vb) in [
        ("GPU driver", a.driver.as_ref(), b.driver.as_ref()),
        ("GPU model", a.gpu_model.as_ref(), b.gpu_model.as_ref()),
    ] {
        if va != vb {
            warns.push(format!(
                "{what} {} on {}, {} on {}",
                show(va),
                a.hostname,
                show(vb),
                b.hostname
            ));
        }
    }
    let keys: std::collections::BTreeSet<&String> = a
        .env
        .keys()
        .chain(b.env.keys())
        .filter(|k| k.starts_with("NCCL_") || k.starts_with("GLOO_") || k.starts_with("UCX_"))
        .collect();
    for key in keys {
        // Interface names and addresses may differ by design; values that set behaviour must not.
        if key.ends_with("IFNAME") || key.contains("HCA") {
            continue;
        }
        let (va, vb) = (a.env.get(key), b.env.get(key));
        if va != vb {
            warns.push(format!(
                "{key}={} on {}, {} on {}",
                show(va),
                a.hostname,
                show(vb),
                b.hostname
            ));
        }
    }
    let evidence = json!({
        "a": { "python": a.python, "packages": a.packages, "driver": a.driver, "gpu_model": a.gpu_model, "nccl_net_plugins": a.nccl_net_plugins, "software": a.software },
        "b": { "python": b.python, "packages": b.packages, "driver": b.driver, "gpu_model": b.gpu_model, "nccl_net_plugins": b.nccl_net_plugins, "software": b.software },
    });
    if !fails.is_empty() {
        let all = fails.iter().chain(&warns).cloned().collect::<Vec<_>>();
        return Check::new("pair.versions", Status::Fail, all.join("; "), evidence).fix(
            "install the same versions on every node (one image or one lock file); Ray refuses to join across minor versions",
        );
    }
    if !warns.is_empty() {
        return Check::new("pair.versions", Status::Warn, warns.join("; "), evidence)
            .fix("align drivers, GPU types and NCCL/Gloo/UCX variables across nodes unless the difference is intended");
    }
    Check::new(
        "pair.versions",
        Status::Pass,
        "Python, Ray, vLLM, torch, NCCL and its plugins match",
        evidence,
    )
}

fn transport(a: &NodeSummary, b: &NodeSummary) -> Check {
    let evidence = json!({
        "a_rdma": a.rdma, "b_rdma": b.rdma,
        "a_nccl_gid_type": a.nccl_gid_type, "b_nccl_gid_type": b.nccl_gid_type,
    });
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let disabled = |n: &NodeSummary| n.env.get("NCCL_IB_DISABLE").map(String::as_str) == Some("1");
    let rdma_a = !a.rdma.is_empty() && !disabled(a);
    let rdma_b = !b.rdma.is_empty() && !disabled(b);
    if rdma_a != rdma_b {
        let (with, without) = if rdma_a { (a, b) } else { (b, a) };
        fails.push(format!(
            "{} has an ACTIVE RDMA port and {} has none: NCCL picks IB on one side and sockets on the other, and init hangs",
            with.hostname, without.hostname
        ));
    } else if rdma_a {
        let layers = |n: &NodeSummary| {
            let mut l: Vec<String> = n.rdma.iter().map(|r| r.link_layer.clone()).collect();
            l.sort();
            l.dedup();
            l
        };
        if layers(a) != layers(b) {
            fails.push(format!(
                "RDMA link layer {:?} on {}, {:?} on {}: InfiniBand and RoCE do not talk to each other",
                layers(a),
                a.hostname,
                layers(b),
                b.hostname
            ));
        }
        if a.nccl_gid_type != b.nccl_gid_type {
            fails.push(format!(
                "NCCL_IB_GID_INDEX names a {} GID on {} but a {} GID on {}: both ends must use the same RoCE version",
                a.nccl_gid_type.as_deref().unwrap_or("default"),
                a.hostname,
                b.nccl_gid_type.as_deref().unwrap_or("default"),
                b.hostname
            ));
        }
    }
    for (n, rdma) in [(a, rdma_a), (b, rdma_b)] {
        if let Some(tls) = n.env.get("UCX_TLS") {
            let tcp_only = tls.split(',').all(|t| {
                let t = t.trim();
                t == "tcp" || t == "self" || t == "sm" || t.starts_with("cuda")
            });
            if rdma && tcp_only {
                warns.push(format!(
                    "UCX_TLS={tls} on {} leaves out RDMA although the node has it: NIXL/UCX silently move KV over TCP",
                    n.hostname
                ));
            }
        }
        let proxy = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"]
            .iter()
            .find_map(|k| n.env.get(*k));
        if let Some(proxy) = proxy {
            let no_proxy = n
                .env
                .get("no_proxy")
                .or_else(|| n.env.get("NO_PROXY"))
                .cloned()
                .unwrap_or_default();
            let other = if std::ptr::eq(n, a) { b } else { a };
            let covered = other.address().is_some_and(|addr| {
                let text = addr.to_string();
                no_proxy.split(',').any(|entry| {
                    let entry = entry.trim();
                    !entry.is_empty()
                        && (text.starts_with(entry.trim_end_matches('*'))
                            || entry == "*"
                            || entry == other.hostname)
                })
            });
            if !covered {
                warns.push(format!(
                    "{} sets a proxy ({proxy}) and no_proxy does not cover {}: vLLM and Ray requests to the other node go through the proxy",
                    n.hostname,
                    other.label()
                ));
            }
        }
    }
    if !fails.is_empty() {
        return Check::new("pair.transport", Status::Fail, fails.join("; "), evidence).fix(
            "give every node the same transport: RDMA on all (same link layer, same GID type via NCCL_IB_GID_INDEX) or NCCL_IB_DISABLE=1 on all",
        );
    }
    if !warns.is_empty() {
        return Check::new("pair.transport", Status::Warn, warns.join("; "), evidence)
            .fix("include rc/ud/dc (or ib) in UCX_TLS on RDMA nodes; add the peers' addresses to no_proxy");
    }
    let what = if rdma_a {
        "RDMA on both"
    } else {
        "TCP sockets on both (no ACTIVE RDMA port on either)"
    };
    Check::new(
        "pair.transport",
        Status::Pass,
        format!("both nodes make the same transport choice: {what}"),
        evidence,
    )
}

fn bandwidth(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let evidence = json!({
        "a_to_b_gbps": m.bw_a_to_b_gbps, "b_to_a_gbps": m.bw_b_to_a_gbps, "error": m.perf_error,
        "rdma_write_a_to_b_gbps": m.rdma_write_gbps, "rdma_error": m.rdma_error,
    });
    if let Some(e) = &m.rdma_error {
        return Check::new(
            "pair.bandwidth",
            Status::Fail,
            format!(
                "both nodes have an ACTIVE RDMA port, but an RDMA WRITE from {} to {} failed: {e}; NCCL's IB transport will fail or hang the same way",
                a.hostname, b.hostname
            ),
            evidence,
        )
        .fix("run `linkbench serve` on one node and `linkbench bw --transport rdma --peer` on the other; check the GID index (NCCL_IB_GID_INDEX), that both ports are on the same fabric, and memlock limits");
    }
    let rdma = m
        .rdma_write_gbps
        .map(|g| {
            format!(
                "; RDMA WRITE {g:.3} Gbit/s from {} to {} (64 KiB messages)",
                a.hostname, b.hostname
            )
        })
        .unwrap_or_default();
    match (m.bw_a_to_b_gbps, m.bw_b_to_a_gbps) {
        (Some(ab), Some(ba)) => Check::new(
            "pair.bandwidth",
            Status::Info,
            format!(
                "TCP {ab:.3} Gbit/s from {} to {}, {ba:.3} Gbit/s back (one stream, linkbench's engine){rdma}",
                a.hostname, b.hostname
            ),
            evidence,
        ),
        _ => Check::new(
            "pair.bandwidth",
            Status::Warn,
            format!(
                "no bandwidth figure: {}",
                m.perf_error.as_deref().unwrap_or("not measured")
            ),
            evidence,
        )
        .fix("run `linkbench serve` on one node and `linkbench bw --peer` on the other to see why"),
    }
}

fn latency(m: &Measured) -> Check {
    let evidence = json!({ "p50_us": m.latency_p50_us });
    match m.latency_p50_us {
        Some(p50) => Check::new(
            "pair.latency",
            Status::Info,
            format!("TCP one-way latency p50 {p50:.1} us (64 B ping-pong / 2)"),
            evidence,
        ),
        None => Check::new(
            "pair.latency",
            Status::Skip,
            "latency not measured",
            evidence,
        ),
    }
}

fn clock(m: &Measured) -> Check {
    let evidence = json!({ "offset_ms": m.clock_offset_ms, "rtt_ms": m.clock_rtt_ms });
    match m.clock_offset_ms {
        Some(offset) if offset.abs() > 1000.0 => Check::new(
            "pair.clock",
            Status::Warn,
            format!("the clocks differ by {:.1} s: logs and traces will not line up, and TLS or token expiry may fail", offset / 1000.0),
            evidence,
        )
        .fix("run chrony or systemd-timesyncd on every node"),
        Some(offset) => Check::new(
            "pair.clock",
            Status::Info,
            format!("clock offset {offset:+.1} ms (within the control round trip)"),
            evidence,
        ),
        None => Check::new("pair.clock", Status::Skip, "clock offset not measured", evidence),
    }
}

fn dns(a: &NodeSummary, b: &NodeSummary, m: &Measured) -> Check {
    let evidence = json!({ "a_name_on_b": m.a_name_on_b, "b_name_on_a": m.b_name_on_a });
    let mut fails = Vec::new();
    let mut warns = Vec::new();
    let mut fixes = Vec::new();
    for (named, resolver, result) in [(a, b, &m.a_name_on_b), (b, a, &m.b_name_on_a)] {
        let Some(result) = result else { continue };
        let Some(want) = named.address() else {
            continue;
        };
        match result {
            Err(e) => {
                warns.push(format!(
                    "{} cannot resolve {}: {e}",
                    resolver.hostname, named.hostname
                ));
                fixes.push(format!(
                    "on {}: add `{want} {}` to /etc/hosts",
                    resolver.hostname, named.hostname
                ));
            }
            Ok(addrs) if addrs.contains(&want) => {}
            Ok(addrs) => {
                let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                fails.push(format!(
                    "on {}, {} resolves to {} instead of {want}: Gloo connects there and hangs",
                    resolver.hostname,
                    named.hostname,
                    if shown.is_empty() {
                        "nothing".into()
                    } else {
                        shown.join(", ")
                    }
                ));
                fixes.push(format!(
                    "on {}: add `{want} {}` to /etc/hosts",
                    resolver.hostname, named.hostname
                ));
            }
        }
    }
    if m.a_name_on_b.is_none() && m.b_name_on_a.is_none() {
        return Check::new(
            "pair.dns",
            Status::Skip,
            "names were not resolved",
            evidence,
        );
    }
    if !fails.is_empty() {
        let all = fails.iter().chain(&warns).cloned().collect::<Vec<_>>();
        return Check::new("pair.dns", Status::Fail, all.join("; "), evidence)
            .fix(fixes.join("; "));
    }
    if !warns.is_empty() {
        return Check::new("pair.dns", Status::Warn, warns.join("; "), evidence)
            .fix(fixes.join("; "));
    }
    Check::new(
        "pair.dns",
        Status::Pass,
        format!(
            "{} and {} resolve each other's hostname to the interface address",
            a.hostname, b.hostname
        ),
        evidence,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{DfProbe, PortResult, RdmaSummary, RouteView};
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, addr: &str) -> NodeSummary {
        NodeSummary {
            hostname: name.into(),
            iface: "eth0".into(),
            addresses: vec![addr.parse().unwrap()],
            mtu: Some(1500),
            python: Some("3.11.2".into()),
            packages: BTreeMap::from([
                ("ray".into(), "2.35.0".into()),
                ("vllm".into(), "0.6.3".into()),
            ]),
            nccl_net_plugins: vec![],
            gpu_model: None,
            gpu_count: 0,
            driver: None,
            env: BTreeMap::new(),
            rdma: vec![],
            nccl_gid_type: None,
            software: "0.1.0".into(),
        }
    }

    fn clean() -> (NodeSummary, NodeSummary, Measured) {
        let (a, b) = (node("a", "10.0.0.1"), node("b", "10.0.0.2"));
        let m = Measured {
            ports: vec![
                PortResult {
                    port: 6379,
                    purpose: "Ray GCS".into(),
                    way: Way::AtoB,
                    outcome: PortOutcome::Open,
                },
                PortResult {
                    port: 6379,
                    purpose: "Ray GCS".into(),
                    way: Way::BtoA,
                    outcome: PortOutcome::Open,
                },
            ],
            a_seen_by_b: Some("10.0.0.1".parse().unwrap()),
            route_a_to_b: Some(RouteView {
                iface: Some("eth0".into()),
                source: "10.0.0.1".parse().unwrap(),
            }),
            route_b_to_a: Some(RouteView {
                iface: Some("eth0".into()),
                source: "10.0.0.2".parse().unwrap(),
            }),
            df: vec![DfProbe {
                way: Way::AtoB,
                packet_bytes: 1500,
                delivered: true,
            }],
            udp_ok: Some(true),
            bw_a_to_b_gbps: Some(9.4),
            bw_b_to_a_gbps: Some(9.3),
            latency_p50_us: Some(20.0),
            perf_error: None,
            rdma_write_gbps: None,
            rdma_error: None,
            clock_offset_ms: Some(0.2),
            clock_rtt_ms: Some(0.1),
            a_name_on_b: Some(Ok(vec!["10.0.0.1".parse().unwrap()])),
            b_name_on_a: Some(Ok(vec!["10.0.0.2".parse().unwrap()])),
        };
        (a, b, m)
    }

    fn status(checks: &[Check], id: &str) -> (Status, String, String) {
        let c = checks.iter().find(|c| c.id == id).unwrap();
        (c.status, c.summary.clone(), c.fix.clone())
    }

    #[test]
    fn a_clean_pair_passes_every_check() {
        let (a, b, m) = clean();
        let checks = pair_checks(&a, &b, &m);
        for c in &checks {
            assert!(c.status < Status::Warn, "{c:?}");
        }
    }

    #[test]
    fn a_blocked_port_names_the_port_the_direction_and_the_rule() {
        let (a, b, mut m) = clean();
        m.ports[1].outcome = PortOutcome::TimedOut;
        let (s, summary, fix) = status(&pair_checks(&a, &b, &m), "pair.ports");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("TCP 6379 (Ray GCS) from b (10.0.0.2) to a (10.0.0.1) is blocked"),
            "{summary}"
        );
        assert!(
            fix.contains(
                "on a: nft add rule inet filter input ip saddr 10.0.0.2 tcp dport 6379 accept"
            ),
            "{fix}"
        );
        assert!(
            fix.contains("ufw allow from 10.0.0.2 to any port 6379"),
            "{fix}"
        );
    }

    #[test]
    fn nat_mtu_route_and_dns_faults_fail_with_their_fix() {
        let (a, mut b, mut m) = clean();
        m.a_seen_by_b = Some("192.168.9.9".parse().unwrap());
        b.mtu = Some(9000);
        m.route_a_to_b = Some(RouteView {
            iface: Some("eth1".into()),
            source: "172.16.0.5".parse().unwrap(),
        });
        m.a_name_on_b = Some(Ok(vec!["127.0.1.1".parse().unwrap()]));
        let checks = pair_checks(&a, &b, &m);
        let (s, summary, fix) = status(&checks, "pair.nat");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("192.168.9.9") && fix.contains("--node-ip-address=192.168.9.9"),
            "{summary} {fix}"
        );
        let (s, summary, fix) = status(&checks, "pair.mtu");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("MTU 1500 on a") && fix.contains("on b: ip link set eth0 mtu 1500"),
            "{summary} {fix}"
        );
        let (s, _, fix) = status(&checks, "pair.route");
        assert_eq!(s, Status::Fail);
        assert!(
            fix.contains("on a: ip route add 10.0.0.2/32 dev eth0 src 10.0.0.1"),
            "{fix}"
        );
        let (s, summary, _) = status(&checks, "pair.dns");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("resolves to 127.0.1.1 instead of 10.0.0.1"),
            "{summary}"
        );
    }

    #[test]
    fn a_black_hole_is_found_only_when_udp_itself_works() {
        let (a, b, mut m) = clean();
        m.df[0].delivered = false;
        assert_eq!(status(&pair_checks(&a, &b, &m), "pair.mtu").0, Status::Fail);
        m.udp_ok = Some(false);
        assert_eq!(status(&pair_checks(&a, &b, &m), "pair.mtu").0, Status::Pass);
    }

    #[test]
    fn version_skew_fails_and_driver_skew_warns() {
        let (a, mut b, m) = clean();
        b.packages.insert("ray".into(), "2.35.2".into());
        assert_eq!(
            status(&pair_checks(&a, &b, &m), "pair.versions").0,
            Status::Pass
        );
        b.driver = Some("550.54".into());
        assert_eq!(
            status(&pair_checks(&a, &b, &m), "pair.versions").0,
            Status::Warn
        );
        b.packages.insert("ray".into(), "2.36.0".into());
        let (s, summary, _) = status(&pair_checks(&a, &b, &m), "pair.versions");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("ray 2.35.0 on a, 2.36.0 on b"),
            "{summary}"
        );
        b.python = Some("3.10.12".into());
        assert!(status(&pair_checks(&a, &b, &m), "pair.versions")
            .1
            .contains("Python 3.11.2 on a, 3.10.12 on b"));
    }

    #[test]
    fn rdma_on_one_side_only_fails_and_tcp_only_ucx_warns() {
        let (mut a, b, m) = clean();
        a.rdma = vec![RdmaSummary {
            device: "mlx5_0".into(),
            port: 1,
            link_layer: "Ethernet".into(),
            active_mtu: None,
        }];
        let (s, summary, _) = status(&pair_checks(&a, &b, &m), "pair.transport");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("a has an ACTIVE RDMA port and b has none"),
            "{summary}"
        );
        let mut b = b;
        b.rdma = a.rdma.clone();
        a.env.insert("UCX_TLS".into(), "tcp,self".into());
        let (s, summary, _) = status(&pair_checks(&a, &b, &m), "pair.transport");
        assert_eq!(s, Status::Warn);
        assert!(summary.contains("UCX_TLS=tcp,self on a"), "{summary}");
        a.env.clear();
        a.env
            .insert("http_proxy".into(), "http://proxy:3128".into());
        assert_eq!(
            status(&pair_checks(&a, &b, &m), "pair.transport").0,
            Status::Warn
        );
        a.env.insert("no_proxy".into(), "10.0.0.".into());
        assert_eq!(
            status(&pair_checks(&a, &b, &m), "pair.transport").0,
            Status::Pass
        );
    }

    #[test]
    fn an_rdma_write_is_reported_and_its_failure_between_rdma_nodes_fails() {
        let (a, b, mut m) = clean();
        m.rdma_write_gbps = Some(97.5);
        let (s, summary, _) = status(&pair_checks(&a, &b, &m), "pair.bandwidth");
        assert_eq!(s, Status::Info);
        assert!(
            summary.contains("RDMA WRITE 97.500 Gbit/s from a to b"),
            "{summary}"
        );
        m.rdma_write_gbps = None;
        m.rdma_error = Some("no answer from the peer's QP".into());
        let (s, summary, fix) = status(&pair_checks(&a, &b, &m), "pair.bandwidth");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("an RDMA WRITE from a to b failed"),
            "{summary}"
        );
        assert!(fix.contains("NCCL_IB_GID_INDEX"), "{fix}");
    }

    #[test]
    fn rdma_active_mtus_that_differ_fail_the_mtu_check_naming_both() {
        let (mut a, mut b, m) = clean();
        let port = |device: &str, mtu: u32| RdmaSummary {
            device: device.into(),
            port: 1,
            link_layer: "InfiniBand".into(),
            active_mtu: Some(mtu),
        };
        a.rdma = vec![port("mlx5_0", 4096)];
        b.rdma = vec![port("mlx5_1", 2048)];
        let (s, summary, fix) = status(&pair_checks(&a, &b, &m), "pair.mtu");
        assert_eq!(s, Status::Fail);
        assert!(
            summary.contains("RDMA active MTU 4096 on a (mlx5_0) but 2048 on b (mlx5_1)"),
            "{summary}"
        );
        assert!(fix.contains("partition MTU"), "{fix}");
        b.rdma = vec![port("mlx5_1", 4096)];
        assert_eq!(status(&pair_checks(&a, &b, &m), "pair.mtu").0, Status::Pass);
        // Unknown on one side (verbs could not open it): nothing to compare.
        b.rdma[0].active_mtu = None;
        assert_eq!(status(&pair_checks(&a, &b, &m), "pair.mtu").0, Status::Pass);
    }
}
