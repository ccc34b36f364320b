//! netcheck: the pre-flight users run on every node before `ray start`. Parses flags,
//! gathers facts once, runs the checks, prints a table or one JSON document, and exits
//! 0 (all pass), 1 (warnings), 2 (a failure) or 64 (bad invocation).

use clap::Parser;
use measure::Table;
use probe::pair::{PairOptions, PairOutcome, PortSpec};
use probe::{Check, CheckOptions, GatherOptions, Status, Summary};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Pre-flight checks for multi-node LLM inference (vLLM, SGLang, Ray, NCCL).
///
/// Exit codes: 0 all pass (info allowed), 1 warnings only, 2 any failure, 64 bad invocation.
#[derive(Parser, Debug)]
#[command(name = "netcheck", version)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON_QUIET)))]
pub struct Args {
    /// Interface that carries inter-node traffic [default: the default route's interface].
    #[arg(long, value_name = "IFACE")]
    iface: Option<String>,
    /// Extra TCP ports that must be free on the interface address (Ray's 6379 is always checked).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Number of GPUs this node must expose; a different count is a failure.
    #[arg(long, value_name = "N")]
    expect_gpus: Option<usize>,
    /// Treat warnings as failures (exit 2).
    #[arg(long)]
    strict: bool,
    /// Warnings you know about and accept (check ids, comma-separated, e.g.
    /// iface.speed,container.network): reported as INFO, never counted. A failure cannot
    /// be accepted.
    #[arg(long, value_delimiter = ',', value_name = "CHECK,CHECK")]
    accept: Vec<String>,
    // -q: only warnings and failures.
    #[command(flatten)]
    output: cli::OutputArgs,
    /// Also print each check's evidence.
    #[arg(short, long, conflicts_with = "quiet")]
    verbose: bool,
    /// Wait for one peer (`netcheck --peer` on another node), run the pair checks with it,
    /// print both, and exit with the combined verdict.
    #[arg(long, conflicts_with_all = ["peer", "emit_env"])]
    listen: bool,
    /// Run the pair checks against a node that runs `netcheck --listen`.
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "emit_env")]
    peer: Option<String>,
    /// The pair checks' control port (both sides).
    #[arg(long, default_value_t = probe::pair::DEFAULT_PORT, value_name = "PORT")]
    pair_port: u16,
    /// Bound on every wait of the pair checks, and on waiting for the peer.
    #[arg(long, default_value = "60s", value_parser = cli::duration_arg, value_name = "DURATION")]
    timeout: Duration,
    /// Shorter bandwidth tests (1 s instead of 2 s, half of it each way).
    #[arg(long)]
    quick: bool,
    /// Print the `export` lines this node should use (NCCL_SOCKET_IFNAME,
    /// GLOO_SOCKET_IFNAME, VLLM_HOST_IP, NCCL_IB_GID_INDEX on RoCE), for `eval`; nothing
    /// and a non-zero exit when a check fails.
    #[arg(long, conflicts_with = "json")]
    emit_env: bool,
    /// Check the whole cluster: every node runs `netcheck --cluster`; rank 0 gathers the
    /// nodes, schedules the pair checks and prints one report; every node exits with the
    /// cluster's verdict. Rank/world/rank 0 come from --rank/--world/--master, --hosts, or
    /// the launcher (torchrun, Slurm, Open MPI, PMI, LeaderWorkerSet).
    #[arg(long, conflicts_with_all = ["listen", "peer", "emit_env"])]
    cluster: bool,
    /// This node's rank (cluster mode).
    #[arg(long, requires = "cluster")]
    rank: Option<usize>,
    /// Number of nodes (cluster mode).
    #[arg(long, requires = "cluster")]
    world: Option<usize>,
    /// Rank 0's address, HOST[:PORT] (cluster mode; port default --pair-port).
    #[arg(long, requires = "cluster", value_name = "HOST[:PORT]")]
    master: Option<String>,
    /// Every node's address, rank order, comma-separated; this node's rank is found by
    /// its own address (cluster mode).
    #[arg(long, requires = "cluster", value_delimiter = ',', value_name = "ADDR,ADDR,...", conflicts_with_all = ["rank", "world", "master", "hostfile"])]
    hosts: Vec<String>,
    /// Like --hosts, one address per line.
    #[arg(long, requires = "cluster", value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// Test every pair of nodes [default: up to 16 nodes; beyond, a ring plus 2 random
    /// partners per node].
    #[arg(long, requires = "cluster")]
    full_mesh: bool,
    /// Expectations: per-link minimum Gbit/s and maximum latency, required MTU and GPU
    /// count (configs/expect/*.toml); each measured figure is marked OK or FAILED.
    #[arg(long, requires = "cluster", value_name = "FILE.toml")]
    expect: Option<PathBuf>,
    /// A link below this many Gbit/s fails (overrides the file's link.tcp_min_gbps).
    #[arg(long, requires = "cluster", value_name = "GBIT")]
    expect_gbps: Option<f64>,
    /// Write the cluster bundle here: report.json, bandwidth.csv, latency.csv and
    /// bandwidth.svg (rank 0).
    #[arg(long, requires = "cluster", value_name = "DIR")]
    out: Option<PathBuf>,
    /// Read /sys, /proc and /dev/shm under this root (fixture trees in tests).
    #[arg(long, hide = true, default_value = "/")]
    sysroot: PathBuf,
}

mod cluster;

/// The ports tested both ways between two nodes: Ray's, the user's, NIXL's side channel
/// and a sample of the ephemeral range NCCL and Gloo open their data sockets in.
/// `--accept`: the named warnings become INFO, marked as accepted; unknown ids are a
/// bad invocation (a typo must not silently accept nothing).
fn accept_warnings(mut checks: Vec<Check>, accepted: &[String]) -> anyhow::Result<Vec<Check>> {
    for id in accepted {
        if !checks.iter().any(|c| c.id == id.as_str()) {
            let known: Vec<&str> = checks.iter().map(|c| c.id).collect();
            return Err(cli::usage(format!(
                "--accept {id}: no such check (local checks: {})",
                known.join(", ")
            )));
        }
    }
    for check in &mut checks {
        check.summary = measure::name_flags(&check.summary, FLAGS);
        check.fix = measure::name_flags(&check.fix, FLAGS);
        if check.status == Status::Warn && accepted.iter().any(|a| a == check.id) {
            check.status = Status::Info;
            check.summary = format!("accepted warning (--accept): {}", check.summary);
        }
    }
    Ok(checks)
}

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

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::ListenPort, "--pair-port"),
    (measure::Setting::Master, "--master"),
    (measure::Setting::Rank, "--rank"),
    (measure::Setting::WorldSize, "--world"),
    (measure::Setting::ExpectedGpus, "--expect-gpus"),
    (measure::Setting::Interface, "--iface"),
    (measure::Setting::Expectations, "--expect"),
];

fn main() -> std::process::ExitCode {
    cli::main("netcheck", FLAGS, run)
}

fn run(args: Args) -> anyhow::Result<u8> {
    args.output.resolve("netcheck", cli::Honours::JSON_QUIET)?;
    let mut ports = vec![6379];
    for port in &args.ports {
        if *port == 0 {
            return Err(cli::usage("--port 0 is not a port: pass 1..65535"));
        }
        if !ports.contains(port) {
            ports.push(*port);
        }
    }
    if args.pair_port == 0 {
        return Err(cli::usage("--pair-port 0 is not a port: pass 1..65535"));
    }
    let token = fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))?;
    let facts = probe::gather(&GatherOptions {
        root: args.sysroot.clone(),
        iface: args.iface.clone(),
        ports,
        timeout: Duration::from_millis(600),
    });
    let checks = accept_warnings(
        probe::run_checks(
            &facts,
            &CheckOptions {
                expect_gpus: args.expect_gpus,
            },
        ),
        &args.accept,
    )?;
    if args.emit_env {
        return emit_env(&facts, &checks);
    }
    if args.cluster {
        return cluster::run(&args, &facts, &checks, token);
    }
    let pair = if args.listen || args.peer.is_some() {
        let options = pair_options(&args, &facts, token);
        Some(run_pair(&args, &facts, &options)?)
    } else {
        None
    };
    let all: Vec<Check> = checks
        .iter()
        .cloned()
        .chain(pair.iter().flat_map(|p| p.checks.iter().cloned()))
        .collect();
    let summary = Summary::of(&all);
    let code = if summary.fail > 0 || (args.strict && summary.warn > 0) {
        cli::exit::FAIL
    } else if summary.warn > 0 {
        cli::exit::WARN
    } else {
        cli::exit::OK
    };

    if args.output.json {
        let document = json!({
            "host": facts.hostname,
            "iface": facts.iface.name,
            "checks": checks,
            "summary": summary,
            "fingerprint": {
                "python": facts.fingerprint.python,
                "packages": facts.fingerprint.packages,
                "nccl_net_plugins": facts.fingerprint.nccl_net_plugins,
                "gpu_model": facts.gpu.gpus.first().and_then(|g| g.model.clone()),
                "gpu_count": facts.gpu.gpus.len(),
                "driver": facts.gpu.driver_version,
                "env": facts.env.iter()
                    .filter(|(k, _)| k.starts_with("NCCL_") || k.starts_with("GLOO_") || k.starts_with("VLLM_"))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            },
            "pair": pair.as_ref().map(|p| json!({
                "a": p.a, "b": p.b, "measured": p.measured, "checks": p.checks,
            })),
            "exit_code": code,
        });
        let test = if pair.is_some() { "pair" } else { "local" };
        measure::record::print_json("netcheck", test, &document)?;
        return Ok(code);
    }

    println!(
        "netcheck {} on {}, interface {}",
        env!("CARGO_PKG_VERSION"),
        facts.hostname,
        facts.iface.name
    );
    // Fixes are printed whole below the table, never wrapped inside a cell: they are
    // commands to copy and paste.
    if let Some(p) = &pair {
        println!(
            "pair checks between {} (--peer side) and {} (--listen side)",
            p.a.label(),
            p.b.label()
        );
    }
    let mut table = Table::new(["check", "status", "finding", "fix"]);
    let mut fixes = Vec::new();
    for check in all
        .iter()
        .filter(|c| !args.output.quiet || c.status >= Status::Warn)
    {
        let mut finding = check.summary.clone();
        if args.verbose {
            finding.push_str(&format!("\n{}", check.evidence));
        }
        let fix = if check.fix.is_empty() {
            String::new()
        } else {
            fixes.push(format!("[{}] {}: {}", fixes.len() + 1, check.id, check.fix));
            format!("[{}]", fixes.len())
        };
        table.push([
            check.id.to_string(),
            check.status.as_str().to_uppercase(),
            finding,
            fix,
        ]);
    }
    println!("{}", table.render());
    if !fixes.is_empty() {
        println!("fixes:");
        for fix in &fixes {
            println!("{fix}");
        }
    }
    println!(
        "{} pass, {} warn, {} fail, {} info, {} skip -> exit {code}",
        summary.pass, summary.warn, summary.fail, summary.info, summary.skip
    );
    Ok(code)
}

fn run_pair(
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

fn emit_env(facts: &probe::Facts, checks: &[Check]) -> anyhow::Result<u8> {
    match probe::environment(facts, checks) {
        Ok(vars) => {
            print!("{}", probe::export_lines(&vars));
            Ok(cli::exit::OK)
        }
        Err(failed) => {
            for check in checks.iter().filter(|c| failed.contains(&c.id)) {
                eprintln!("netcheck: FAIL {}: {}", check.id, check.summary);
                if !check.fix.is_empty() {
                    eprintln!("netcheck:   fix: {}", check.fix);
                }
            }
            anyhow::bail!(
                "{} failed: no environment emitted; fix the failures above and run again",
                failed.join(", ")
            )
        }
    }
}
