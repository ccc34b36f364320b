//! Pre-flight checks: each is a pure function of [`Facts`] returning a [`Check`] with an
//! id, a status, the evidence it saw, and the exact fix.

mod addressing;
mod env;
mod gpu;
mod iface;
mod lint;
mod ports;
mod rdma;
mod shm;

use crate::facts::Facts;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Info,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Info => "info",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub fix: String,
}

impl Check {
    pub(crate) fn new(
        id: &'static str,
        status: Status,
        summary: impl Into<String>,
        evidence: serde_json::Value,
    ) -> Self {
        Check {
            id,
            status,
            summary: summary.into(),
            evidence,
            fix: String::new(),
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
    pub info: usize,
    pub skip: usize,
}

impl Summary {
    pub fn of(checks: &[Check]) -> Summary {
        let mut summary = Summary::default();
        for check in checks {
            match check.status {
                Status::Pass => summary.pass += 1,
                Status::Warn => summary.warn += 1,
                Status::Fail => summary.fail += 1,
                Status::Info => summary.info += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        summary
    }
}

/// What the user asked of the checks (not facts about the host).
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--expect-gpus N`: a different visible GPU count is a failure.
    pub expect_gpus: Option<usize>,
}

/// Checks whose findings are about the interface: meaningless when it does not exist.
const NEED_IFACE: [&str; 9] = [
    "iface.speed",
    "ip.selection",
    "hostname.resolve",
    "env.nccl_socket_ifname",
    "env.gloo_socket_ifname",
    "container.network",
    "ip.family",
    "numa.affinity",
    "ports.free",
];

/// Interfaces another node could reach this one by: up, not loopback, with a global
/// IPv4 address ("eth0 (10.0.0.5)").
pub(crate) fn candidate_interfaces(facts: &Facts) -> Vec<String> {
    facts
        .interfaces
        .iter()
        .filter(|i| i.kind != "loopback" && i.is_up())
        .filter_map(|i| i.global_ipv4().map(|a| format!("{} ({a})", i.name)))
        .collect()
}

/// Runs every check in a fixed order.
pub fn run_checks(facts: &Facts, options: &CheckOptions) -> Vec<Check> {
    let mut checks = all_checks(facts, options);
    if facts.iface.kind == "loopback" {
        // Never recommend loopback as the inter-node interface (a node without a default
        // route used to be told `export NCCL_SOCKET_IFNAME=lo`).
        let lo = facts.iface.name.as_str();
        for check in &mut checks {
            if check.fix.contains(&format!("IFNAME={lo}"))
                || check.fix.contains(&format!("IFNAME=={lo}"))
            {
                check.fix = "name the inter-node interface first (see iface.up)".into();
            }
        }
    }
    if facts.iface.exists {
        return checks;
    }
    checks
        .into_iter()
        .map(|check| {
            if NEED_IFACE.contains(&check.id) {
                Check::new(
                    check.id,
                    Status::Skip,
                    format!(
                        "skipped: interface {} does not exist (see iface.up)",
                        facts.iface.name
                    ),
                    serde_json::json!({}),
                )
            } else {
                check
            }
        })
        .collect()
}

fn all_checks(facts: &Facts, options: &CheckOptions) -> Vec<Check> {
    vec![
        iface::up(facts),
        iface::speed(facts),
        addressing::ip_selection(facts),
        addressing::hostname_resolve(facts),
        env::nccl_socket_ifname(facts),
        env::gloo_socket_ifname(facts),
        env::nccl_ib(facts),
        shm::size(facts),
        rdma::ports(facts),
        rdma::memlock(facts),
        gpu::inventory(facts, options.expect_gpus),
        lint::ucx(facts),
        lint::nixl(facts),
        lint::proxy(facts),
        lint::uverbs(facts),
        iface::container_network(facts),
        iface::ip_family(facts),
        iface::numa_affinity(facts),
        ports::free(facts),
    ]
}

/// A healthy node for tests: each test breaks one thing.
#[cfg(test)]
pub(crate) mod fixture {
    use crate::facts::*;
    use crate::fingerprint::Fingerprint;
    use std::collections::BTreeMap;
    use std::net::{IpAddr, Ipv4Addr};

    pub const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    pub fn interface(name: &str, addr: Option<Ipv4Addr>) -> Interface {
        Interface {
            name: name.into(),
            exists: true,
            operstate: Some("up".into()),
            carrier: Some(true),
            flags: Some(0x1003),
            mtu: Some(9000),
            speed_mbps: Some(100_000),
            mac: Some("02:00:00:00:00:05".into()),
            kind: "physical".into(),
            numa_node: Some(0),
            driver: Some("mlx5_core".into()),
            ipv4: addr
                .map(|a| IpNet {
                    addr: a,
                    prefix: 24,
                })
                .into_iter()
                .collect(),
            ipv6: Vec::new(),
        }
    }

    pub fn facts() -> Facts {
        let eth0 = interface("eth0", Some(ADDR));
        let mut lo = interface("lo", Some(Ipv4Addr::LOCALHOST));
        lo.kind = "loopback".into();
        lo.operstate = Some("unknown".into());
        lo.speed_mbps = None;
        Facts {
            hostname: "node1".into(),
            iface: eth0.clone(),
            interfaces: vec![
                lo,
                eth0,
                interface("eth1", Some(Ipv4Addr::new(192, 168, 7, 5))),
            ],
            default_route: Some(DefaultRoute {
                iface: "eth0".into(),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            }),
            hostname_addrs: Ok(vec![IpAddr::V4(ADDR)]),
            env: BTreeMap::new(),
            shm: Some(Shm {
                total_bytes: 16 << 30,
                free_bytes: 15 << 30,
                stale_nccl: Vec::new(),
            }),
            rdma: Vec::new(),
            rdma_verbs: crate::facts::RdmaVerbs::NotProbed,
            memlock: Memlock {
                soft_bytes: None,
                cap_ipc_lock: true,
            },
            gpu: GpuFacts::default(),
            ports: vec![PortProbe {
                port: 6379,
                addr: IpAddr::V4(ADDR),
                bind_error: None,
                in_use: false,
            }],
            in_container: false,
            uverbs: Vec::new(),
            fingerprint: Fingerprint::default(),
        }
    }

    pub fn with_env(mut facts: Facts, pairs: &[(&str, &str)]) -> Facts {
        for (key, value) in pairs {
            facts.env.insert(key.to_string(), value.to_string());
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_node_has_no_failures_or_warnings() {
        let checks = run_checks(&fixture::facts(), &CheckOptions::default());
        let bad: Vec<_> = checks
            .iter()
            .filter(|c| c.status >= Status::Warn)
            .map(|c| (c.id, c.summary.clone()))
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(checks.len(), 19);
        let summary = Summary::of(&checks);
        assert_eq!(summary.pass + summary.info + summary.skip, 19);
    }

    #[test]
    fn a_missing_interface_fails_once_and_skips_what_depends_on_it() {
        let mut facts = fixture::facts();
        facts.iface = crate::sysfs::read_interface(std::path::Path::new("/nonexistent"), "eno9");
        let checks = run_checks(&facts, &CheckOptions::default());
        let summary = Summary::of(&checks);
        assert_eq!(summary.fail, 1);
        let skipped = checks
            .iter()
            .filter(|c| c.status == Status::Skip && NEED_IFACE.contains(&c.id))
            .count();
        assert_eq!(skipped, NEED_IFACE.len());
        assert!(checks
            .iter()
            .all(|c| !c.fix.contains("eno9") || c.id == "iface.up"));
    }
}
