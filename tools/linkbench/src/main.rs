//! `linkbench`: node-to-node TCP and RDMA bandwidth and latency in one tool. This file
//! parses (`flags`), resolves the flags every client mode shares into a plan (rejecting
//! contradictions in one place) and dispatches to the mode: `tcp`, `rdma`, `compare`,
//! `serve`; `report` prints the records.
//!
//! Exit codes: 0 measured, 2 failed (peer dead, refused, timed out), 64 bad invocation.

mod compare;
mod flags;
mod rdma;
mod report;
mod serve;
mod tcp;

use anyhow::Context;
use fabric::perf::{self, Client, ClientConfig};
use fabric::tcp::IfaceAddress;
use flags::{Cli, Command, Common, Transport};
use std::net::{IpAddr, SocketAddr};

/// Message sizes of a sweep: 2 B .. 8 MiB, like perftest's -a.
fn sweep_sizes() -> Vec<u64> {
    (1..=23).map(|p| 1u64 << p).collect()
}

/// What a client run will do, after every flag has been checked.
struct Plan {
    config: ClientConfig,
    sizes: Vec<u64>,
    sweep: bool,
    output: report::Output,
    quiet: bool,
}

fn resolve_common(common: &Common, size: Option<u64>, default_size: u64) -> anyhow::Result<Plan> {
    if common.all_sizes && size.is_some() {
        return Err(cli::usage(
            "--all-sizes sweeps the message size, so --size cannot be given with it",
        ));
    }
    if common.output.plot.is_some() && !common.all_sizes {
        return Err(cli::usage("--plot draws a size sweep: add -a/--all-sizes"));
    }
    common.output.resolve("this test", cli::Honours::ALL)?;
    if common.transport == Transport::Tcp {
        if let Some(flag) = common.rdma.given() {
            return Err(cli::usage(format!(
                "{flag} applies to RDMA tests: add --transport rdma, or drop {flag}"
            )));
        }
    }
    let size = size.unwrap_or(default_size);
    if size == 0 || size > perf::MAX_MESSAGE {
        return Err(cli::usage(format!(
            "--size must be 1 byte .. {} MiB",
            perf::MAX_MESSAGE >> 20
        )));
    }
    let peer = fabric::tcp::resolve_peer(&common.peer, common.port).map_err(|e| match e {
        fabric::FabricError::Config(text) => cli::usage(format!("--peer: {text}")),
        other => anyhow::Error::new(other).context("--peer"),
    })?;
    Ok(Plan {
        config: ClientConfig {
            peer,
            connect_timeout: common.connect_timeout,
            token: token()?,
            iface: common.iface.clone(),
            stall: fabric::perf::STALL_TIMEOUT,
        },
        sizes: if common.all_sizes {
            sweep_sizes()
        } else {
            vec![size]
        },
        sweep: common.all_sizes,
        output: report::Output {
            json: common.output.json,
            quiet: common.output.quiet,
            csv: common.output.csv.clone(),
            plot: common.output.plot.clone(),
            peer: peer.to_string(),
        },
        quiet: common.output.quiet || common.output.json,
    })
}

fn token() -> anyhow::Result<Option<Vec<u8>>> {
    fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))
}

/// `--rails`: each rail's server address (port from --peer's), at least two, no repeats.
fn resolve_rails(rails: Option<&[String]>, common: &Common) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(rails) = rails else {
        return Ok(Vec::new());
    };
    if common.iface.is_some() {
        return Err(cli::usage(
            "--iface pins every stream to one interface, --rails spreads them over several: give one of the two (each rail's route picks its NIC)",
        ));
    }
    let port = fabric::tcp::resolve_peer(&common.peer, common.port)
        .map(|a| a.port())
        .unwrap_or(common.port);
    let mut resolved: Vec<SocketAddr> = Vec::with_capacity(rails.len());
    for rail in rails {
        let addr = fabric::tcp::resolve_peer(rail.trim(), port)
            .map_err(|e| cli::usage(format!("--rails {rail}: {e}")))?;
        if resolved.contains(&addr) {
            return Err(cli::usage(format!(
                "--rails names {addr} twice: give each rail's address once"
            )));
        }
        resolved.push(addr);
    }
    if resolved.len() < 2 {
        return Err(cli::usage(
            "--rails needs two or more addresses (one per rail); for one, use --peer alone",
        ));
    }
    Ok(resolved)
}

fn connect(plan: &Plan) -> anyhow::Result<Client> {
    Client::connect(plan.config.clone())
        .with_context(|| format!("linkbench server at {}", plan.config.peer))
}

/// The address of `iface`, so the listener binds there and not to every address.
fn iface_address(iface: &str) -> anyhow::Result<IpAddr> {
    match fabric::tcp::iface_address(iface)? {
        IfaceAddress::Found(ip) => Ok(ip),
        IfaceAddress::NoAddress => {
            anyhow::bail!("interface {iface} has no IP address: add one, or pass --bind")
        }
        IfaceAddress::NoSuchInterface => Err(cli::usage(format!(
            "no interface named {iface} (see `ip -br addr`)"
        ))),
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Bw(args) => tcp::bw(args).map_err(rdma::rdma_hint),
        Command::Lat(args) => tcp::lat(args).map_err(rdma::rdma_hint),
        Command::Compare(args) => compare::compare(args),
    }
}

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::ListenPort, "--port"),
    (measure::Setting::GidIndex, "--gid-index"),
    (measure::Setting::SendQueueDepth, "--tx-depth"),
    (measure::Setting::TcpTransport, "--transport tcp"),
];

fn main() -> std::process::ExitCode {
    cli::main("linkbench", FLAGS, run)
}
