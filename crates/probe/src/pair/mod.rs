//! netcheck across two nodes: what each node tells the other about itself
//! ([`NodeSummary`]), what the pair session measures between them ([`Measured`]), the
//! pair checks as pure functions of those ([`pair_checks`]), the message set
//! ([`wire`]) and the I/O shell that runs a session over fabric's control channel
//! ([`session`]). Both nodes compute the same checks from the same data, so they print
//! the same verdict.

mod checks;
pub mod session;
pub mod wire;

pub use checks::pair_checks;
pub use session::{connect, serve, PairError, PairOptions, PairOutcome};

use crate::facts::Facts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where `netcheck --listen` waits for its peer.
pub const DEFAULT_PORT: u16 = 18516;
/// The tool name in the control channel's Hello.
pub const TOOL: &str = "netcheck";

/// What a node reports about itself to its peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub hostname: String,
    pub iface: String,
    /// The interface's addresses, IPv4 first: what Ray and NCCL advertise.
    pub addresses: Vec<IpAddr>,
    pub mtu: Option<u32>,
    pub python: Option<String>,
    pub packages: BTreeMap<String, String>,
    /// NCCL net plugin file names (not paths).
    pub nccl_net_plugins: Vec<String>,
    pub gpu_model: Option<String>,
    pub gpu_count: usize,
    pub driver: Option<String>,
    /// NCCL_*, GLOO_*, UCX_* and the proxy variables.
    pub env: BTreeMap<String, String>,
    /// ACTIVE RDMA ports.
    pub rdma: Vec<RdmaSummary>,
    /// The type of the GID NCCL_IB_GID_INDEX names on the first ACTIVE port, if set.
    pub nccl_gid_type: Option<String>,
    pub software: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RdmaSummary {
    pub device: String,
    pub port: u32,
    pub link_layer: String,
    /// Bytes; None when the verbs could not say.
    #[serde(default)]
    pub active_mtu: Option<u32>,
}

impl NodeSummary {
    pub fn of(facts: &Facts) -> NodeSummary {
        let mut addresses: Vec<IpAddr> = facts
            .iface
            .ipv4
            .iter()
            .map(|n| IpAddr::V4(n.addr))
            .collect();
        addresses.extend(
            facts
                .iface
                .ipv6
                .iter()
                .filter(|n| (n.addr.segments()[0] & 0xffc0) != 0xfe80)
                .map(|n| IpAddr::V6(n.addr)),
        );
        let mut env: BTreeMap<String, String> = facts
            .env
            .iter()
            .filter(|(k, _)| {
                k.starts_with("NCCL_") || k.starts_with("GLOO_") || k.starts_with("UCX_")
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for key in [
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
        ] {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.to_string(), crate::facts::redact_url(&value));
            }
        }
        let rdma: Vec<RdmaSummary> = facts
            .rdma
            .iter()
            .flat_map(|d| {
                d.ports
                    .iter()
                    .filter(|p| p.is_active())
                    .map(|p| RdmaSummary {
                        device: d.name.clone(),
                        port: p.number,
                        link_layer: p.link_layer.clone().unwrap_or_else(|| "unknown".into()),
                        active_mtu: p.active_mtu,
                    })
            })
            .collect();
        let nccl_gid_type = facts
            .env("NCCL_IB_GID_INDEX")
            .and_then(|i| i.trim().parse::<u32>().ok())
            .and_then(|index| {
                facts
                    .rdma
                    .iter()
                    .flat_map(|d| d.ports.iter().filter(|p| p.is_active()))
                    .next()
                    .and_then(|p| p.gids.iter().find(|g| g.index == index))
                    .map(|g| g.gid_type.clone().unwrap_or_else(|| "empty".into()))
            });
        NodeSummary {
            hostname: facts.hostname.clone(),
            iface: facts.iface.name.clone(),
            addresses,
            mtu: facts.iface.mtu,
            python: facts.fingerprint.python.clone(),
            packages: facts.fingerprint.packages.clone(),
            nccl_net_plugins: facts
                .fingerprint
                .nccl_net_plugins
                .iter()
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
                .collect(),
            gpu_model: facts.gpu.gpus.first().and_then(|g| g.model.clone()),
            gpu_count: facts.gpu.gpus.len(),
            driver: facts.gpu.driver_version.clone(),
            env,
            rdma,
            nccl_gid_type,
            software: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The address Ray and NCCL will advertise for this node.
    pub fn address(&self) -> Option<IpAddr> {
        self.addresses.first().copied()
    }

    /// "node1 (10.0.0.1)".
    pub fn label(&self) -> String {
        match self.address() {
            Some(addr) => format!("{} ({addr})", self.hostname),
            None => self.hostname.clone(),
        }
    }
}

/// Which way a probe went: from the connecting node (A, `--peer`) to the listening node
/// (B, `--listen`), or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Way {
    AtoB,
    BtoA,
}

/// Why a port was probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port: u16,
    /// "Ray GCS", "--port", "NIXL side channel", "NCCL/Gloo ephemeral".
    pub purpose: String,
}

/// One TCP connect from one node to a port the other listened on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortResult {
    pub port: u16,
    pub purpose: String,
    pub way: Way,
    pub outcome: PortOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortOutcome {
    Open,
    /// No answer (a firewall dropping it).
    TimedOut,
    /// Refused (a firewall rejecting it, or nothing listening).
    Refused,
    /// The listening side could not listen there (in use by something that is not
    /// listening, say); not tested.
    NotTested(String),
    Error(String),
}

/// The interface and source address the kernel picks to reach the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub iface: Option<String>,
    pub source: IpAddr,
}

/// One don't-fragment UDP datagram of `size` bytes (IP packet size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DfProbe {
    pub way: Way,
    pub packet_bytes: u32,
    pub delivered: bool,
}

/// Everything the session measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub ports: Vec<PortResult>,
    /// The source address B saw A's connection come from.
    pub a_seen_by_b: Option<IpAddr>,
    pub route_a_to_b: Option<RouteView>,
    pub route_b_to_a: Option<RouteView>,
    pub df: Vec<DfProbe>,
    /// Whether a small datagram crossed at all (else the DF probes prove nothing).
    pub udp_ok: Option<bool>,
    pub bw_a_to_b_gbps: Option<f64>,
    pub bw_b_to_a_gbps: Option<f64>,
    pub latency_p50_us: Option<f64>,
    /// Why bandwidth or latency could not be measured.
    pub perf_error: Option<String>,
    /// RDMA WRITE from A to B, where both have an ACTIVE RDMA port.
    #[serde(default)]
    pub rdma_write_gbps: Option<f64>,
    /// Why that RDMA WRITE failed (both have RDMA, so NCCL's IB transport would too).
    #[serde(default)]
    pub rdma_error: Option<String>,
    /// B's clock minus A's, from the control round trip.
    pub clock_offset_ms: Option<f64>,
    pub clock_rtt_ms: Option<f64>,
    /// B resolving A's hostname, and A resolving B's.
    pub a_name_on_b: Option<Result<Vec<IpAddr>, String>>,
    pub b_name_on_a: Option<Result<Vec<IpAddr>, String>>,
}
