//! netcheck: the pre-flight users run on every node before `ray start`. Parses flags,
//! gathers facts once, runs the checks, prints a table or one JSON document, and exits
//! 0 (all pass), 1 (warnings), 2 (a failure) or 64 (bad invocation).

use clap::Parser;
use measure::Table;
use probe::{CheckOptions, GatherOptions, Status, Summary};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Pre-flight checks for multi-node LLM inference (vLLM, SGLang, Ray, NCCL).
///
/// Exit codes: 0 all pass (info allowed), 1 warnings only, 2 any failure, 64 bad invocation.
#[derive(Parser, Debug)]
#[command(name = "netcheck", version)]
struct Args {
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
    /// Print one JSON document on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Show only warnings and failures.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Also print each check's evidence.
    #[arg(short, long)]
    verbose: bool,
    /// Read /sys, /proc and /dev/shm under this root (fixture trees in tests).
    #[arg(long, hide = true, default_value = "/")]
    sysroot: PathBuf,
}

fn main() -> std::process::ExitCode {
    cli::main("netcheck", run)
}

fn run(args: Args) -> anyhow::Result<u8> {
    let mut ports = vec![6379];
    for port in &args.ports {
        if *port == 0 {
            return Err(cli::usage("--port 0 is not a port: pass 1..65535"));
        }
        if !ports.contains(port) {
            ports.push(*port);
        }
    }
    let facts = probe::gather(&GatherOptions {
        root: args.sysroot.clone(),
        iface: args.iface.clone(),
        ports,
        timeout: Duration::from_millis(600),
    });
    let checks = probe::run_checks(
        &facts,
        &CheckOptions {
            expect_gpus: args.expect_gpus,
        },
    );
    let summary = Summary::of(&checks);
    let code = if summary.fail > 0 || (args.strict && summary.warn > 0) {
        cli::exit::FAIL
    } else if summary.warn > 0 {
        cli::exit::WARN
    } else {
        cli::exit::OK
    };

    if args.json {
        let document = json!({
            "tool": "netcheck",
            "version": env!("CARGO_PKG_VERSION"),
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
            "exit_code": code,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
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
    let mut table = Table::new(["check", "status", "finding", "fix"]);
    let mut fixes = Vec::new();
    for check in checks
        .iter()
        .filter(|c| !args.quiet || c.status >= Status::Warn)
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
