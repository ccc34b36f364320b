//! Block-size sweeps as nixlbench runs them: `kvxfer prefill --sweep-block 1K..64M` serves
//! one raw pool per power-of-two block size (size i on port + i), and `kvxfer bench
//! --sweep-block` with the same range moves `--num-prompts` requests of `--batch` blocks
//! at each size, one row per size: bandwidth, blocks/s, latency per request and per block.

use crate::bench::drive;
use crate::flags::{BenchArgs, PrefillArgs};
use anyhow::Context;
use kvcache::prefill::PrefillAgent;
use kvcache::{KvLayout, KvShape};
use measure::record::{KvSweepRow as Row, SweepLatency as Latency};
use std::net::SocketAddr;

/// A sweep point's decode pool, at most: workers are cut so the pool fits.
const MAX_POOL_BYTES: u64 = 2 << 30;
/// A request's bytes, at most: --batch shrinks for large blocks (16 x 1 MiB, 1 x 16 MiB),
/// so requests fit the prefill's default 64 MiB pool four at a time.
const MAX_REQUEST_BYTES: u64 = 16 << 20;

pub fn prefill(args: PrefillArgs) -> anyhow::Result<u8> {
    let sizes = args.sweep_block.clone().map(|s| s.0).unwrap_or_default();
    if args.num_blocks.is_some() {
        return Err(cli::usage(
            "--num-blocks sizes a model's pool; a sweep sizes each raw pool with --sweep-pool",
        ));
    }
    if args.lease.is_zero() || args.timeout.is_zero() {
        return Err(cli::usage("--lease and --timeout must be at least 1ms"));
    }
    let addrs = crate::prefill::listen_addresses(args.listen.as_deref(), args.iface.as_deref())?;
    let [base] = addrs[..] else {
        return Err(cli::usage(
            "--sweep-block serves one address (sizes on consecutive ports): give one --listen or --iface",
        ));
    };
    let last = base.port() as usize + sizes.len() - 1;
    if last > u16::MAX as usize {
        return Err(cli::usage(format!(
            "{} sizes from port {} run past port 65535: give a lower port",
            sizes.len(),
            base.port()
        )));
    }
    let token = crate::token()?;
    let mut served = Vec::with_capacity(sizes.len());
    let mut committed = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        let blocks = (args.sweep_pool / size).clamp(4, u32::MAX as u64) as u32;
        let layout = KvLayout::new(KvShape::raw(size)?, 1, 0, blocks)?;
        committed += layout.pool_bytes();
        let agent = PrefillAgent::new(
            layout,
            crate::prefill::prefill_config(&args, token.clone(), Vec::new()),
        )?;
        let addr = SocketAddr::new(base.ip(), base.port() + i as u16);
        served.push((agent, fabric::tcp::listen(addr, None)?));
    }
    eprintln!(
        "kvxfer prefill: ready: listening on {}:{}..{} ({}): raw pools for a block-size sweep, {} sizes {}..{} (size i on port {} + i), {} committed",
        base.ip(),
        base.port(),
        last,
        if token.is_some() {
            "NODELINK_TOKEN required"
        } else {
            "no authentication"
        },
        sizes.len(),
        measure::format_bytes(sizes[0]),
        measure::format_bytes(sizes[sizes.len() - 1]),
        base.port(),
        measure::format_bytes(committed),
    );
    let mut handles = Vec::new();
    for (agent, listener) in served {
        handles.push(std::thread::spawn(move || agent.serve(listener)));
    }
    for handle in handles {
        if let Ok(Err(e)) = handle.join() {
            return Err(e.into());
        }
    }
    Ok(cli::exit::OK)
}

/// Blocks per request when --batch is not given.
const DEFAULT_BATCH: u32 = 16;

pub fn bench(args: BenchArgs) -> anyhow::Result<u8> {
    let sizes = args.sweep_block.clone().map(|s| s.0).unwrap_or_default();
    let batch = args.batch.unwrap_or(DEFAULT_BATCH);
    let addrs = crate::decode::peer_addresses(&args.peers)?;
    let [base] = addrs[..] else {
        return Err(cli::usage(
            "--sweep-block pulls from one prefill's raw pools: give one --peer",
        ));
    };
    if base.port() as usize + sizes.len() - 1 > u16::MAX as usize {
        return Err(cli::usage(
            "the sweep's ports run past 65535: give a lower port",
        ));
    }
    let prefix = format!("sweep-{}", std::process::id());
    let bar = cli::progress(
        args.num_prompts * sizes.len() as u64,
        "kvxfer bench --sweep-block",
        "requests",
        !args.output.quiet && !args.output.json,
    );
    let mut rows = Vec::with_capacity(sizes.len());
    let mut errors = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let shape = KvShape::raw(size)?;
        // Large blocks: fewer per request, so one request fits the prefill's pool.
        let batch = batch.min((MAX_REQUEST_BYTES / size).max(1) as u32);
        let tokens = batch as u64 * shape.block_size as u64;
        let request_bytes = batch as u64 * size;
        let workers = args
            .concurrency
            .min((MAX_POOL_BYTES / request_bytes).clamp(1, u32::MAX as u64) as u32);
        let layout = KvLayout::new(shape, 1, 0, workers * batch)?;
        let peer = SocketAddr::new(base.ip(), base.port() + i as u16);
        let agent = crate::decode::decode_agent_on(layout, vec![peer], &args.peers).with_context(|| {
            format!(
                "block size {}: the prefill's pool for it on {peer} (start `kvxfer prefill --sweep-block` with the same range)",
                measure::format_bytes(size)
            )
        })?;
        let (tally, duration) = drive(
            &agent,
            (&args, args.num_prompts),
            tokens,
            workers,
            &format!("{prefix}-{size}"),
            &bar,
        )?;
        let seconds = duration.as_secs_f64().max(1e-9);
        let latency = tally.latency.summary_scaled(1e-3);
        errors.extend(tally.errors.iter().take(1).cloned());
        rows.push(Row {
            block_bytes: size,
            batch,
            requests: tally.ok,
            failed: tally.failed,
            concurrency: workers,
            bandwidth_gbyte_s: measure::gbyte_per_s(tally.bytes, seconds),
            bandwidth_gbps: measure::gbit_per_s(tally.bytes, seconds),
            blocks_per_s: (tally.ok * batch as u64) as f64 / seconds,
            latency_us: Latency {
                mean: latency.mean * 1e3,
                p50: latency.p50 * 1e3,
                p99: latency.p99 * 1e3,
            },
            per_block_mean_us: latency.mean * 1e3 / batch as f64,
        });
        if tally.stopped.is_some() {
            break;
        }
    }
    bar.finish_and_clear();
    report(&args, batch, &rows, &errors)?;
    let failed = rows.iter().any(|r| r.failed > 0) || rows.len() < sizes.len();
    let any_ok = rows.iter().any(|r| r.requests > 0);
    Ok(match (failed, any_ok) {
        (false, _) => cli::exit::OK,
        (true, true) => cli::exit::WARN,
        (true, false) => cli::exit::FAIL,
    })
}

fn report(args: &BenchArgs, batch: u32, rows: &[Row], errors: &[String]) -> anyhow::Result<()> {
    let header = [
        "block",
        "batch",
        "requests",
        "failed",
        "GB/s",
        "Gbit/s",
        "blocks/s",
        "latency mean (us)",
        "latency p99 (us)",
        "per block (us)",
    ];
    let mut shown = measure::Table::new(header);
    let mut csv = measure::Table::new([
        "block_bytes",
        "batch",
        "requests",
        "failed",
        "bandwidth_gbyte_s",
        "bandwidth_gbps",
        "blocks_per_s",
        "latency_mean_us",
        "latency_p99_us",
        "per_block_mean_us",
    ]);
    for r in rows {
        shown.push([
            measure::format_bytes(r.block_bytes),
            r.batch.to_string(),
            r.requests.to_string(),
            r.failed.to_string(),
            format!("{:.3}", r.bandwidth_gbyte_s),
            format!("{:.3}", r.bandwidth_gbps),
            format!("{:.0}", r.blocks_per_s),
            format!("{:.1}", r.latency_us.mean),
            format!("{:.1}", r.latency_us.p99),
            format!("{:.1}", r.per_block_mean_us),
        ]);
        csv.push([
            r.block_bytes.to_string(),
            r.batch.to_string(),
            r.requests.to_string(),
            r.failed.to_string(),
            r.bandwidth_gbyte_s.to_string(),
            r.bandwidth_gbps.to_string(),
            r.blocks_per_s.to_string(),
            r.latency_us.mean.to_string(),
            r.latency_us.p99.to_string(),
            r.per_block_mean_us.to_string(),
        ]);
    }
    if args.output.json {
        let doc = measure::record::KvSweep {
            num_prompts: args.num_prompts,
            batch,
            checksums: !args.peers.no_checksum,
            verified: args.peers.verify,
            sweep: rows.to_vec(),
            errors: errors.to_vec(),
        };
        measure::record::print_json("kvxfer", "sweep", &doc)?;
    } else {
        if !args.output.quiet {
            println!(
                "kvxfer bench --sweep-block: {} requests of {} block(s) per size, up to {} in flight; GB/s = 1e9 B/s over the whole run; latency per request, first pull to last byte",
                args.num_prompts, batch, args.concurrency
            );
        }
        print!("{}", shown.render());
        for error in errors {
            println!("error: {}", measure::name_flags(error, crate::FLAGS));
        }
    }
    if let Some(path) = &args.output.csv {
        measure::write_csv(path, &csv)
            .with_context(|| format!("writing --csv {}", path.display()))?;
    }
    if let Some(path) = &args.output.plot {
        let points = |value: fn(&Row) -> f64| {
            rows.iter()
                .map(|r| (r.block_bytes as f64, value(r)))
                .collect::<Vec<_>>()
        };
        let chart = measure::Chart {
            title: format!("kvxfer bench: block-size sweep, batch {batch}"),
            x_label: "block size (bytes)".into(),
            y_label: "bandwidth (GB/s)".into(),
            x_log2_bytes: true,
            series: vec![measure::Series {
                name: "GB/s".into(),
                points: points(|r| r.bandwidth_gbyte_s),
            }],
            secondary: Some(measure::Axis {
                label: "latency per request (us)".into(),
                series: vec![
                    measure::Series {
                        name: "mean us".into(),
                        points: points(|r| r.latency_us.mean),
                    },
                    measure::Series {
                        name: "p99 us".into(),
                        points: points(|r| r.latency_us.p99),
                    },
                ],
            }),
        };
        measure::write_chart(path, &chart)?;
    }
    Ok(())
}
