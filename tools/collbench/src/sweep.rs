//! The size sweep (collbench without a subcommand): nccl-tests' rows per size.

use crate::flags::Args;
use crate::{on_ranks, resolve_job};
use anyhow::Context;
use collective::{avg_busbw, ops, Communicator, Dtype, RedOp, Row, RunConfig};
use std::path::PathBuf;

pub(crate) fn sweep(args: Args) -> anyhow::Result<u8> {
    let op = ops::by_name(&args.op).ok_or_else(|| {
        let known: Vec<&str> = ops::all().iter().map(|c| c.name()).collect();
        cli::usage(format!(
            "--op {}: unknown operation; choose one of {}",
            args.op,
            known.join(", ")
        ))
    })?;
    let dtype = Dtype::parse(&args.dtype)
        .filter(|d| collective::dtype::is_supported(*d))
        .ok_or_else(|| {
            cli::usage(format!(
                "-d {}: not a collective datatype; choose float, half, bfloat16 or int32 (or fp32, fp16, bf16, i32)",
                args.dtype
            ))
        })?;
    let redop = RedOp::parse(&args.redop).ok_or_else(|| {
        cli::usage(format!(
            "-o {}: unknown reduction; choose sum, max or min",
            args.redop
        ))
    })?;
    if args.iters == 0 {
        return Err(cli::usage("-n 0: at least one timed iteration is needed"));
    }
    if args.min_bytes > args.max_bytes {
        return Err(cli::usage(format!(
            "-b {} is larger than -e {}: the sweep would be empty",
            args.min_bytes, args.max_bytes
        )));
    }
    if args.step_factor < 2 && args.step_bytes.is_none() {
        return Err(cli::usage(format!(
            "-f {}: the step factor multiplies each size, so it must be 2 or more (or step by bytes with -i)",
            args.step_factor
        )));
    }
    if args.step_bytes == Some(0) {
        return Err(cli::usage(
            "-i 0: the step must be at least one byte (or leave -i out and step by -f)",
        ));
    }
    args.output.resolve("collbench", cli::Honours::ALL)?;
    let job = resolve_job(&args.job)?;
    // Each rank in this process holds about three buffers of the largest size (work,
    // source, check): refuse a sweep that cannot fit before allocating any of it.
    let local = job.local_ranks.unwrap_or(1) as u64;
    cli::check_fits("-e", args.max_bytes, 3 * local)?;
    let nccl = match args.backend.as_str() {
        "tcp" => None,
        "nccl" => {
            let site = python_site_packages();
            let ld_path = std::env::var("LD_LIBRARY_PATH").ok();
            let dirs = collective::nccl::search_dirs(ld_path.as_deref(), &site);
            let root = std::path::Path::new("/");
            let library =
                collective::nccl::check_environment(args.nccl_lib.as_deref(), &dirs, root)
                    .map_err(anyhow::Error::msg)?;
            Some(collective::nccl::NcclLib::open(&library).map_err(anyhow::Error::msg)?)
        }
        other => return Err(cli::usage(format!("--backend {other}: choose tcp or nccl"))),
    };
    let config = RunConfig {
        op,
        dtype,
        redop,
        root: args.root,
        sizes: collective::sweep(
            args.min_bytes,
            args.max_bytes,
            args.step_factor,
            args.step_bytes.unwrap_or(0),
        ),
        iters: args.iters,
        warmup: args.warmup,
        check: args.check != 0,
    };
    let body =
        |comm: &mut Communicator| -> Result<(Vec<Row>, usize, usize), collective::CollError> {
            let printing = comm.rank == 0 && !args.output.json && !args.output.quiet;
            if printing {
                print_header(&args, op, comm.world, config.iters, config.warmup);
            }
            let print = |row: &Row| {
                if printing {
                    print_row(row, args.percentiles);
                }
            };
            let rows = match &nccl {
                Some(lib) => collective::nccl::run(comm, lib, args.device, &config, print)?,
                None => collective::run(comm, &config, print)?,
            };
            Ok((rows, comm.rank, comm.world))
        };
    let (rows, rank, world) = on_ranks(&job, args.job.timeout, body)?;
    if rank != 0 {
        return Ok(if rows.iter().any(|r| r.wrong + r.in_place.wrong > 0) {
            cli::exit::FAIL
        } else {
            cli::exit::OK
        });
    }
    let wrong: u64 = rows.iter().map(|r| r.wrong + r.in_place.wrong).sum();
    let average = avg_busbw(&rows);
    // Results first: a file that fails to write must not take the printed rows with it.
    if args.output.json {
        let sweep = measure::record::CollectiveSweep {
            op: op.name().to_string(),
            backend: args.backend.clone(),
            world: world as u64,
            dtype,
            redop: op.has_redop().then_some(redop),
            rows: rows.clone(),
            avg_busbw_gbs: average,
            wrong,
        };
        measure::record::print_json("collbench", "sweep", &sweep)?;
    } else {
        println!(
            "# Out of bounds values : {wrong} {}",
            if wrong == 0 { "OK" } else { "FAILED" }
        );
        println!("# Avg bus bandwidth    : {average:.4} GB/s");
    }
    if let Some(path) = &args.output.csv {
        write_csv(path, &rows).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.output.plot {
        let series = |name: &str, pick: fn(&Row) -> f64| measure::Series {
            name: name.to_string(),
            points: rows.iter().map(|r| (r.bytes as f64, pick(r))).collect(),
        };
        let chart = measure::Chart {
            title: format!(
                "{} busbw, {world} ranks, {} backend",
                op.name(),
                args.backend
            ),
            x_label: "message size (bytes)".into(),
            y_label: "bus bandwidth (GB/s, 1e9 B/s)".into(),
            x_log2_bytes: true,
            secondary: None,
            series: vec![
                series("out-of-place", |r| r.busbw_gbs),
                series("in-place", |r| r.in_place.busbw_gbs),
            ],
        };
        measure::write_chart(path, &chart)?;
    }
    if wrong > 0 {
        anyhow::bail!("{wrong} output elements were wrong: the transport corrupted data or ranks disagree on the operation");
    }
    Ok(cli::exit::OK)
}

fn print_header(
    args: &Args,
    op: &dyn collective::ops::Collective,
    world: usize,
    iters: usize,
    warmup: usize,
) {
    println!(
        "# collbench {}: {} over backend {}, {world} ranks; iters {iters}, warmup {warmup}, check {} (times: CUDA events for nccl, wall clock for tcp)",
        env!("CARGO_PKG_VERSION"),
        op.name(),
        args.backend,
        if args.check != 0 { "on" } else { "off" }
    );
    println!(
        "# GB/s = 1e9 bytes/s; algbw = size/time; busbw = algbw x {:.3} for {world} ranks",
        op.bus_factor(world)
    );
    println!("#");
    let extra = if args.percentiles {
        "   p50(us)   p99(us)"
    } else {
        ""
    };
    println!("# {:>62}{:>36}", "out-of-place", "in-place");
    println!(
        "# {:>10} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}{extra}",
        "size",
        "count",
        "type",
        "redop",
        "root",
        "time",
        "algbw",
        "busbw",
        "#wrong",
        "time",
        "algbw",
        "busbw",
        "#wrong"
    );
    println!(
        "# {:>10} {:>12} {:>9} {:>6} {:>6} {:>9} {:>7} {:>7} {:>6} {:>9} {:>7} {:>7} {:>6}",
        "(B)",
        "(elements)",
        "",
        "",
        "",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        "",
        "(us)",
        "(GB/s)",
        "(GB/s)",
        ""
    );
}

fn print_row(row: &Row, percentiles: bool) {
    let mut line = format!(
        "  {:>10} {:>12} {:>9} {:>6} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6} {:>9.2} {:>7.3} {:>7.3} {:>6}",
        row.bytes,
        row.count,
        row.dtype_name(),
        row.redop.map_or("none", |r| r.name()),
        row.root,
        row.time_us,
        row.algbw_gbs,
        row.busbw_gbs,
        row.wrong,
        row.in_place.time_us,
        row.in_place.algbw_gbs,
        row.in_place.busbw_gbs,
        row.in_place.wrong
    );
    if percentiles {
        line.push_str(&format!(" {:>9.2} {:>9.2}", row.p50_us, row.p99_us));
    }
    println!("{line}");
}

fn write_csv(path: &std::path::Path, rows: &[Row]) -> std::io::Result<()> {
    let mut table = measure::Table::new([
        "bytes",
        "count",
        "dtype",
        "redop",
        "root",
        "time_us",
        "algbw_gbs",
        "busbw_gbs",
        "wrong",
        "in_place_time_us",
        "in_place_algbw_gbs",
        "in_place_busbw_gbs",
        "in_place_wrong",
        "p50_us",
        "p99_us",
    ]);
    for r in rows {
        table.push([
            r.bytes.to_string(),
            r.count.to_string(),
            r.dtype_name().to_string(),
            r.redop.map_or("none", |o| o.name()).to_string(),
            r.root.to_string(),
            format!("{:.3}", r.time_us),
            format!("{:.6}", r.algbw_gbs),
            format!("{:.6}", r.busbw_gbs),
            r.wrong.to_string(),
            format!("{:.3}", r.in_place.time_us),
            format!("{:.6}", r.in_place.algbw_gbs),
            format!("{:.6}", r.in_place.busbw_gbs),
            r.in_place.wrong.to_string(),
            format!("{:.3}", r.p50_us),
            format!("{:.3}", r.p99_us),
        ]);
    }
    measure::write_csv(path, &table)
}

/// Python site-packages directories (for the nvidia-nccl-cu12 wheel); empty without python.
fn python_site_packages() -> Vec<PathBuf> {
    std::process::Command::new("python3")
        .args(["-c", "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))"])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect())
        .unwrap_or_default()
}
