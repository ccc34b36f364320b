//! `linkbench bw` and `lat` over TCP (RDMA runs branch off to `rdma`).

use crate::flags::{BwArgs, LatArgs, Transport};
use crate::{connect, rdma, report, resolve_common, resolve_rails};
use anyhow::Context;
use fabric::perf::{self, BwSpec, LatSpec, Mode, Until};
use std::time::Duration;

pub(crate) fn bw(args: BwArgs) -> anyhow::Result<u8> {
    if args.reverse && args.bidir {
        return Err(cli::usage(
            "--reverse and --bidir contradict each other: --bidir already measures both directions",
        ));
    }
    if args.streams == 0 || args.streams > perf::MAX_STREAMS {
        return Err(cli::usage(format!(
            "-P/--parallel must be 1 .. {}",
            perf::MAX_STREAMS
        )));
    }
    if let Some(window) = args.window {
        if window == 0 || window > perf::MAX_WINDOW {
            return Err(cli::usage("--window must be 1 byte .. 1 GiB"));
        }
    }
    if args.common.transport == Transport::Rdma {
        return rdma::rdma_bw(args);
    }
    if args.iters.is_some() {
        return Err(cli::usage(
            "-n/--iters counts RDMA messages: TCP bandwidth runs for -t/--time",
        ));
    }
    let plan = resolve_common(&args.common, args.size, 1 << 20)?;
    let omit = args.omit.unwrap_or(Duration::ZERO);
    if omit > perf::MAX_DURATION {
        return Err(cli::usage("-O/--omit must be at most 24h"));
    }
    let rails = resolve_rails(args.rails.as_deref(), &args.common)?;
    if let Some(interval) = args.interval {
        if interval < Duration::from_millis(100) {
            return Err(cli::usage(
                "-i/--interval must be at least 100ms (the client samples every 100 ms)",
            ));
        }
        if plan.sweep {
            return Err(cli::usage(
                "-i/--interval reports one test as it runs: drop -a/--all-sizes, or -i",
            ));
        }
    }
    let duration = args.time.unwrap_or(if plan.sweep {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    });
    if duration < Duration::from_millis(100) || duration > perf::MAX_DURATION {
        return Err(cli::usage("-t/--time must be 100ms .. 24h"));
    }
    let mode = if args.bidir {
        Mode::Bidir
    } else if args.reverse {
        Mode::Reverse
    } else {
        Mode::Forward
    };
    let per_rail = args.streams;
    let streams = per_rail * rails.len().max(1) as u32;
    if streams > perf::MAX_STREAMS {
        return Err(cli::usage(format!(
            "-P {per_rail} on {} rails is {streams} streams; at most {} in all",
            rails.len(),
            perf::MAX_STREAMS
        )));
    }
    if let Some(set) = args.working_set {
        // Each stream holds its own working set on each side, under the server's budget.
        let largest = plan.sizes.iter().copied().max().unwrap_or(0);
        let holding = u64::from(streams) * if args.bidir { 2 } else { 1 };
        let committed = holding.saturating_mul(set.max(largest));
        if set == 0 || committed > perf::MAX_TEST_BUFFERS {
            return Err(cli::usage(format!(
                "--working-set {set} x {holding} streams commits {} MiB on each side; it must be \
                 at least 1 byte and streams x working set at most {} MiB (lower -P or the working set)",
                committed >> 20,
                perf::MAX_TEST_BUFFERS >> 20
            )));
        }
    }
    let mut client = connect(&plan)?;
    let total = (omit + duration) * plan.sizes.len() as u32;
    let live = args.interval.is_some() && !plan.output.json;
    let bar = cli::progress(
        total.as_millis() as u64,
        "bandwidth",
        "ms of test time",
        !plan.quiet && !live && total > Duration::from_secs(2),
    );
    let mut intervals = report::Intervals::new(args.interval, omit, mode);
    if live {
        intervals.print_header();
    }
    let mut reports = Vec::new();
    for (i, &size) in plan.sizes.iter().enumerate() {
        let spec = BwSpec {
            mode,
            streams,
            size,
            duration,
            omit,
            window: args.window,
            congestion: args.congestion.clone(),
            zerocopy: args.zerocopy,
            no_delay: args.no_delay,
            working_set: args.working_set,
            rails: rails.clone(),
        };
        let done_before = (omit + duration) * i as u32;
        let report = client
            .bandwidth(&spec, &mut |elapsed, bytes| {
                bar.set_position((done_before + elapsed.min(omit + duration)).as_millis() as u64);
                intervals.sample(elapsed, bytes, live);
            })
            .with_context(|| format!("bandwidth test with {size}-byte messages"))?;
        intervals.finish(live);
        reports.push(report);
    }
    bar.finish_and_clear();
    client.close();
    report::bandwidth(&plan.output, plan.sweep, &reports, &intervals, &rails)?;
    Ok(cli::exit::OK)
}

pub(crate) fn lat(args: LatArgs) -> anyhow::Result<u8> {
    if args.iters.is_some() && args.time.is_some() {
        return Err(cli::usage(
            "-n/--iters and -t/--time both say when to stop: give one of them",
        ));
    }
    if args.common.transport == Transport::Rdma {
        return rdma::rdma_lat(args);
    }
    let plan = resolve_common(&args.common, args.size, 64)?;
    let until = match (args.iters, args.time) {
        (_, Some(time)) if time.is_zero() || time > perf::MAX_DURATION => {
            return Err(cli::usage("-t/--time must be more than 0 and at most 24h"))
        }
        (_, Some(time)) => Until::Elapsed(time),
        (Some(n), None) => Until::Iterations(n),
        (None, None) => Until::Iterations(if plan.sweep { 1000 } else { 10_000 }),
    };
    let mut client = connect(&plan)?;
    let (total, visible) = match until {
        Until::Iterations(n) => (
            n * plan.sizes.len() as u64,
            n * plan.sizes.len() as u64 > 50_000,
        ),
        Until::Elapsed(d) => (
            (d * plan.sizes.len() as u32).as_millis() as u64,
            d * plan.sizes.len() as u32 > Duration::from_secs(2),
        ),
    };
    let unit = match until {
        Until::Iterations(_) => "round trips",
        Until::Elapsed(_) => "ms of test time",
    };
    let bar = cli::progress(total, "latency", unit, !plan.quiet && visible);
    let mut reports = Vec::new();
    for (i, &size) in plan.sizes.iter().enumerate() {
        let spec = LatSpec {
            size,
            until,
            busy_poll: args.busy_poll,
        };
        let report = client
            .latency(&spec, &mut |count, elapsed| match until {
                Until::Iterations(n) => bar.set_position(n * i as u64 + count),
                Until::Elapsed(d) => {
                    bar.set_position(((d * i as u32) + elapsed.min(d)).as_millis() as u64);
                }
            })
            .with_context(|| format!("latency test with {size}-byte messages"))?;
        reports.push(report);
    }
    bar.finish_and_clear();
    client.close();
    report::latency(&plan.output, plan.sweep, &reports)?;
    Ok(cli::exit::OK)
}
