//! `netcheck --cluster`: resolves rank, world and rank 0's address (flags, --hosts, or
//! the launcher's environment), runs probe's cluster mode, prints the report (rank 0) or
//! the verdict (the others), writes the bundle, and exits with the cluster's verdict.

use crate::flags::Args;
use crate::pair::pair_options;
use anyhow::Context;
use measure::Table;
use probe::cluster::{self, ClusterOptions, ClusterReport, LocalVerdict};
use probe::{Check, Status};
use std::net::{IpAddr, SocketAddr};

/// The nodes up to which every pair is tested by default.
const FULL_MESH_UP_TO: usize = 16;

pub fn run(
    args: &Args,
    facts: &probe::Facts,
    checks: &[Check],
    token: Option<Vec<u8>>,
) -> anyhow::Result<u8> {
    let boot = bootstrap(args, facts)?;
    let host = boot
        .master
        .rsplit_once(':')
        .map_or(boot.master.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    // The launcher's MASTER_PORT belongs to the job itself (torchrun binds it): netcheck
    // uses its own port unless --master names one.
    let port = match args.master.as_deref() {
        Some(m) if fabric::tcp::resolve_peer(m, 0).is_ok_and(|a| a.port() != 0) => {
            fabric::tcp::resolve_peer(m, 0)?.port()
        }
        _ => args.pair_port,
    };
    let master = fabric::tcp::resolve_peer(&host, port)
        .map_err(|e| cli::usage(format!("rank 0's address {host}: {e}")))?;
    let mut expect = match &args.expect {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cli::usage(format!("--expect {}: {e}", path.display())))?;
            probe::cluster::expect::Expect::parse(&path.display().to_string(), &text)
                .map_err(|e| cli::usage(format!("--expect {e}")))?
        }
        None => Default::default(),
    };
    if let Some(gbps) = args.expect_gbps {
        if !gbps.is_finite() || gbps <= 0.0 {
            return Err(cli::usage(format!(
                "--expect-gbps {gbps}: give a positive rate"
            )));
        }
        expect.link.tcp_min_gbps = Some(gbps);
    }
    let options = ClusterOptions {
        boot: boot.clone(),
        master,
        pair: pair_options(args, facts, token),
        full_mesh: args.full_mesh || boot.world <= FULL_MESH_UP_TO,
        partners: 2,
        expect,
    };
    let local = local_verdict(checks);
    if boot.rank != 0 {
        // A node that cannot reach rank 0 often has the cause in its own checks (its
        // interface down, no address): say so with the error.
        let own: Vec<String> = local
            .problems
            .iter()
            .filter(|p| p.starts_with("FAIL"))
            .cloned()
            .collect();
        let (code, summary) = cluster::run_node(facts, local, &options).map_err(|e| {
            let own = if own.is_empty() {
                String::new()
            } else {
                format!(
                    "; this node's own checks fail, likely why: {}",
                    own.join("; ")
                )
            };
            anyhow::anyhow!(
                "cluster checks (rank {} of {}): {e}{own}",
                boot.rank,
                boot.world
            )
        })?;
        if args.output.json {
            measure::record::print_json(
                "netcheck",
                "cluster",
                &measure::record::NetcheckCluster {
                    rank: Some(boot.rank),
                    world: boot.world,
                    verdict: Some(summary),
                    exit_code: code,
                    median_gbps: None,
                    slow_nodes: Vec::new(),
                },
            )?;
        } else {
            println!(
                "netcheck --cluster: rank {} of {}: rank 0's verdict: {summary} -> exit {code}",
                boot.rank, boot.world
            );
        }
        return Ok(code);
    }
    let listener =
        fabric::tcp::bind_listener(SocketAddr::new(bind_ip(facts, master.ip()), master.port()))
            .with_context(|| {
                format!(
                    "rank 0 listening on port {} (pass another --pair-port)",
                    master.port()
                )
            })?;
    eprintln!(
        "netcheck: rank 0 of {}: ready: listening on {} ({}); start `netcheck --cluster` on every node",
        boot.world,
        listener.local_addr()?,
        if options.pair.token.is_some() { "NODELINK_TOKEN required" } else { "no authentication" }
    );
    let mut report = cluster::run_rank0(facts, local, &options, listener)
        .map_err(|e| anyhow::anyhow!("cluster checks: {e}"))?;
    for finding in &mut report.findings {
        finding.text = measure::name_flags(&finding.text, crate::FLAGS);
        finding.fix = measure::name_flags(&finding.fix, crate::FLAGS);
    }
    if let Some(dir) = &args.out {
        write_bundle(dir, &report)?;
    }
    if args.output.json {
        println!("{}", serde_json::to_string_pretty(&document(&report))?);
    } else {
        print_report(&report);
    }
    Ok(report.exit_code)
}

/// Listen where rank 0's address points if it is ours, else on the interface address.
fn bind_ip(facts: &probe::Facts, master: IpAddr) -> IpAddr {
    let summary = probe::pair::NodeSummary::of(facts);
    if summary.addresses.contains(&master) {
        master
    } else {
        summary.address().unwrap_or(master)
    }
}

fn bootstrap(args: &Args, facts: &probe::Facts) -> anyhow::Result<fabric::bootstrap::Bootstrap> {
    let mut hosts = args.hosts.clone();
    if let Some(file) = &args.hostfile {
        let text = std::fs::read_to_string(file)
            .map_err(|e| cli::usage(format!("--hostfile {}: {e}", file.display())))?;
        hosts = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    }
    if !hosts.is_empty() {
        let mine = probe::pair::NodeSummary::of(facts).addresses;
        let ranks: Vec<usize> = hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| fabric::tcp::resolve_peer(h, 1).is_ok_and(|a| mine.contains(&a.ip())))
            .map(|(i, _)| i)
            .collect();
        let rank = match ranks.as_slice() {
            [rank] => *rank,
            [] => {
                return Err(cli::usage(format!(
                    "none of the hosts ({}) is an address of {} ({}): list this node's address, or pass --iface",
                    hosts.join(", "),
                    facts.iface.name,
                    mine.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                )))
            }
            many => {
                return Err(cli::usage(format!(
                    "this node's address appears {} times in the hosts list: list each node once",
                    many.len()
                )))
            }
        };
        return Ok(fabric::bootstrap::Bootstrap {
            rank,
            world: hosts.len(),
            master: hosts[0].clone(),
            source: "hosts",
        });
    }
    let flags = fabric::bootstrap::BootstrapFlags {
        rank: args.rank,
        world: args.world,
        master: args.master.clone(),
    };
    fabric::bootstrap::resolve(&flags, |k| std::env::var(k).ok())
        .map_err(|e| cli::usage(e.to_string()))?
        .ok_or_else(|| {
            cli::usage("--cluster needs this node's rank: pass --rank R --world N --master HOST, or --hosts A,B,C, or run under torchrun, srun, mpirun or LeaderWorkerSet")
        })
}

fn local_verdict(checks: &[Check]) -> LocalVerdict {
    LocalVerdict {
        pass: checks.iter().filter(|c| c.status == Status::Pass).count(),
        warn: checks.iter().filter(|c| c.status == Status::Warn).count(),
        fail: checks.iter().filter(|c| c.status == Status::Fail).count(),
        problems: checks
            .iter()
            .filter(|c| c.status >= Status::Warn)
            .map(|c| {
                format!(
                    "{} {}: {}",
                    c.status.as_str().to_uppercase(),
                    c.id,
                    c.summary
                )
            })
            .collect(),
    }
}

fn name(report: &ClusterReport, rank: usize) -> String {
    match report.nodes[rank].summary.as_ref() {
        Some(s) => format!(
            "{rank}: {}",
            s.address()
                .map_or_else(|| s.hostname.clone(), |a| a.to_string())
        ),
        None => format!("{rank}: (absent)"),
    }
}

fn matrix_table(report: &ClusterReport, values: &[Vec<Option<f64>>], decimals: usize) -> Table {
    let mut header = vec!["from \\ to".to_string()];
    header.extend((0..report.world).map(|r| name(report, r)));
    let mut table = Table::new(header);
    for (i, row) in values.iter().enumerate() {
        let mut cells = vec![name(report, i)];
        cells.extend(row.iter().enumerate().map(|(j, v)| match v {
            Some(v) => format!("{v:.decimals$}"),
            None if i == j => "-".into(),
            None => "?".into(),
        }));
        table.push(cells);
    }
    table
}

fn print_report(report: &ClusterReport) {
    println!(
        "netcheck --cluster: {} nodes, {} rounds of pair checks, {} sessions, {:.1} s",
        report.world,
        report.rounds,
        report.pairs.len(),
        report.seconds
    );
    println!("bandwidth, Gbit/s (1e9 bit/s), one TCP stream, row -> column:");
    println!(
        "{}",
        matrix_table(report, &report.bandwidth_gbps, 3).render()
    );
    println!("latency p50, one-way us:");
    println!("{}", matrix_table(report, &report.latency_us, 1).render());
    if let Some(m) = report.median_gbps {
        println!("median link {m:.3} Gbit/s");
    }
    if !report.expectations.is_empty() {
        let failed = report.expectations.iter().filter(|v| !v.ok).count();
        println!(
            "expectations: {} figures, {} OK, {failed} FAILED",
            report.expectations.len(),
            report.expectations.len() - failed
        );
        let mut table = Table::new(["figure", "measured", "expected", "verdict"]);
        for v in &report.expectations {
            table.push([
                v.what.clone(),
                format!("{:.3}", v.measured),
                v.expected.clone(),
                if v.ok {
                    "OK".into()
                } else {
                    "FAILED".to_string()
                },
            ]);
        }
        println!("{}", table.render());
    }
    if report.findings.is_empty() {
        println!("no failing or warning findings");
    } else {
        println!("findings, by cause:");
        let mut causes: Vec<&str> = report.findings.iter().map(|f| f.cause.as_str()).collect();
        causes.dedup();
        let mut seen = Vec::new();
        for cause in causes {
            if seen.contains(&cause) {
                continue;
            }
            seen.push(cause);
            for f in report.findings.iter().filter(|f| f.cause == cause) {
                println!(
                    "  {} {}: {}",
                    f.status.as_str().to_uppercase(),
                    f.cause,
                    f.text
                );
                if !f.fix.is_empty() {
                    println!("    fix: {}", f.fix);
                }
            }
        }
    }
    println!("cluster verdict -> exit {}", report.exit_code);
}

fn document(report: &ClusterReport) -> serde_json::Value {
    measure::record::document("netcheck", "cluster", report).unwrap_or_default()
}

fn csv_matrix(report: &ClusterReport, values: &[Vec<Option<f64>>], unit: &str) -> Table {
    let mut header = vec![format!("from_rank\\to_rank ({unit})")];
    header.extend((0..report.world).map(|r| r.to_string()));
    let mut table = Table::new(header);
    for (i, row) in values.iter().enumerate() {
        let mut cells = vec![i.to_string()];
        cells.extend(
            row.iter()
                .map(|v| v.map_or_else(String::new, |v| v.to_string())),
        );
        table.push(cells);
    }
    table
}

fn write_bundle(dir: &std::path::Path, report: &ClusterReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&document(report))?,
    )
    .with_context(|| format!("writing {}", dir.join("report.json").display()))?;
    measure::write_csv(
        &dir.join("bandwidth.csv"),
        &csv_matrix(report, &report.bandwidth_gbps, "gbps"),
    )?;
    measure::write_csv(
        &dir.join("latency.csv"),
        &csv_matrix(report, &report.latency_us, "us"),
    )?;
    measure::write_heatmap(
        &dir.join("bandwidth.svg"),
        &measure::Heatmap {
            title: format!(
                "netcheck --cluster: TCP bandwidth between {} nodes",
                report.world
            ),
            unit: "Gbit/s (1e9 bit/s), one stream, row -> column".into(),
            labels: (0..report.world).map(|r| name(report, r)).collect(),
            values: report.bandwidth_gbps.clone(),
        },
    )?;
    Ok(())
}
