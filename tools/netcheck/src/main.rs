//! netcheck: the pre-flight users run on every node before `ray start`. Parses flags,
//! gathers facts once, runs the checks, prints a table or one JSON document, and exits
//! 0 (all pass), 1 (warnings), 2 (a failure) or 64 (bad invocation). Flags are in
//! `flags`; the modes across nodes in `pair` (`--peer`/`--listen`) and `cluster`.

use document::{FingerprintDocument, LocalDocument, PairDocument};
use flags::Args;
use measure::Table;
use pair::{pair_options, run_pair};
use probe::{Check, CheckOptions, GatherOptions, Status, Summary};
use std::time::Duration;

mod cluster;
mod document;
mod flags;
mod pair;

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
        let document = LocalDocument {
            host: &facts.hostname,
            iface: &facts.iface.name,
            checks: &checks,
            summary: &summary,
            fingerprint: FingerprintDocument {
                python: facts.fingerprint.python.as_deref(),
                packages: &facts.fingerprint.packages,
                nccl_net_plugins: &facts.fingerprint.nccl_net_plugins,
                gpu_model: facts.gpu.gpus.first().and_then(|g| g.model.as_deref()),
                gpu_count: facts.gpu.gpus.len(),
                driver: facts.gpu.driver_version.as_deref(),
                env: facts
                    .env
                    .iter()
                    .filter(|(k, _)| {
                        k.starts_with("NCCL_") || k.starts_with("GLOO_") || k.starts_with("VLLM_")
                    })
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            },
            pair: pair.as_ref().map(|p| PairDocument {
                a: &p.a,
                b: &p.b,
                measured: &p.measured,
                checks: &p.checks,
            }),
            exit_code: code,
        };
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
