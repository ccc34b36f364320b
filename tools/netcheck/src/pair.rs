//! `netcheck --peer` and `--listen`: the pair checks between two nodes.

use crate::flags::Args;
use probe::pair::{PairOptions, PairOutcome, PortSpec};
use std::time::Duration;

/// The pair sessions' settings, shared by `--listen`/`--peer` and `--cluster`.
pub fn pair_options(args: &Args, facts: &probe::Facts, token: Option<Vec<u8>>) -> PairOptions {
    let mut env = facts.env.clone();
    for key in ["VLLM_NIXL_SIDE_CHANNEL_PORT", "VLLM_DP_RANK"] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.into(), v);
        }
    }
    PairOptions {
        token,
        ports: pair_ports(&args.ports, &env),
        timeout: args.timeout,
        // A pair's bandwidth test: 2 s (--quick 1 s), half of it each way.
        bw_duration: if args.quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(1)
        },
        log: cli::log_to_stderr("netcheck"),
    }
}

/// The ports tested both ways between two nodes: Ray's, the user's, NIXL's side channel
/// and a sample of the ephemeral range NCCL and Gloo open their data sockets in.
pub fn pair_ports(user: &[u16], env: &std::collections::BTreeMap<String, String>) -> Vec<PortSpec> {
    let mut specs = vec![PortSpec {
        port: 6379,
        purpose: "Ray GCS".into(),
    }];
    let mut add = |port: u16, purpose: &str| {
        if !specs.iter().any(|s| s.port == port) {
            specs.push(PortSpec {
                port,
                purpose: purpose.into(),
            });
        }
    };
    for &port in user {
        add(port, "--port");
    }
    let nixl = env
        .get("VLLM_NIXL_SIDE_CHANNEL_PORT")
        .and_then(|p| p.trim().parse::<u16>().ok())
        .unwrap_or(5600);
    let dp_rank = env
        .get("VLLM_DP_RANK")
        .and_then(|r| r.trim().parse::<u16>().ok())
        .unwrap_or(0);
    add(nixl.saturating_add(dp_rank), "NIXL side channel");
    for port in [35000, 45000, 55000] {
        add(port, "NCCL/Gloo ephemeral range");
    }
    specs
}

pub(crate) fn run_pair(
    args: &Args,
    facts: &probe::Facts,
    options: &PairOptions,
) -> anyhow::Result<PairOutcome> {
    if args.listen {
        let ip = facts
            .iface
            .global_ipv4()
            .filter(|_| facts.iface.kind != "loopback")
            .map(std::net::IpAddr::V4)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no global IPv4 address to listen on for the pair checks: fix iface.up first, or pass --iface",
                    facts.iface.name
                )
            })?;
        let listener = fabric::tcp::bind_listener((ip, args.pair_port).into()).map_err(|e| {
            anyhow::anyhow!(
                "listening on {ip}:{} for the pair checks: {e}; pass another --pair-port",
                args.pair_port
            )
        })?;
        eprintln!(
            "netcheck: ready: listening on {ip}:{} for one peer ({}); run `netcheck --iface IFACE --peer {ip}` on the other node",
            args.pair_port,
            if options.token.is_some() { "NODELINK_TOKEN required" } else { "no authentication" }
        );
        return probe::pair::serve(listener, facts, options)
            .map_err(|e| anyhow::anyhow!("pair checks: {e}"));
    }
    let peer = args.peer.as_deref().unwrap_or_default();
    let addr = fabric::tcp::resolve_peer(peer, args.pair_port)
        .map_err(|e| cli::usage(format!("--peer {peer}: {e}")))?;
    probe::pair::connect(addr, facts, options)
        .map_err(|e| anyhow::anyhow!("pair checks with {addr}: {e}"))
}
