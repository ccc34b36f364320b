//! `linkbench bw` and `lat` with `--transport rdma`: perftest's tests over verbs.

use crate::flags::{BwArgs, Common, LatArgs, OpArg};
use crate::{connect, iface_address, report, resolve_common, Plan};
use anyhow::Context;
use fabric::perf::{Client, RdmaOptions};
use fabric::rdma::{RdmaOp, RdmaTest};
use fabric::test_kind::TestKind;

/// An RDMA run after its flags were checked: the test template and the local device.
struct RdmaPlan {
    plan: Plan,
    test: RdmaTest,
    options: RdmaOptions,
}

fn resolve_rdma(
    common: &Common,
    kind: TestKind,
    size: Option<u64>,
    iters: u64,
) -> anyhow::Result<RdmaPlan> {
    let default_size = 65536;
    let lat_default_size = 2;
    let plan = resolve_common(
        common,
        size,
        if kind == TestKind::Bw {
            default_size
        } else {
            lat_default_size
        },
    )?;
    let flags = &common.rdma;
    let op = match flags.op.unwrap_or(OpArg::Write) {
        OpArg::Write => RdmaOp::Write,
        OpArg::Read => RdmaOp::Read,
        OpArg::Send => RdmaOp::Send,
    };
    let qps = flags.qps.unwrap_or(1);
    if kind == TestKind::Lat && qps != 1 {
        return Err(cli::usage(
            "--qps applies to bandwidth: a latency test uses one QP",
        ));
    }
    if kind == TestKind::Lat && flags.validate {
        return Err(cli::usage(
            "--validate checks bandwidth tests: drop it from lat",
        ));
    }
    let address = match &common.iface {
        Some(iface) => Some(iface_address(iface)?),
        None => None,
    };
    let test = RdmaTest {
        kind,
        op,
        size: plan.sizes[0],
        qps,
        tx_depth: flags
            .tx_depth
            .unwrap_or(if kind == TestKind::Bw { 128 } else { 1 }),
        iterations: iters,
        validate: flags.validate,
        inline: flags
            .inline_size
            .unwrap_or(if kind == TestKind::Bw { 0 } else { 220 }),
        seed: 0x6e6f_6465_6c69_6e6b,
    };
    test.validate().map_err(cli::usage)?;
    // Fail before connecting when this host cannot do RDMA at all.
    fabric::rdma::check(flags.device.as_deref())?;
    Ok(RdmaPlan {
        plan,
        test,
        options: RdmaOptions {
            device: flags.device.clone(),
            gid_index: flags.gid_index,
            address,
        },
    })
}

pub(crate) fn rdma_bw(args: BwArgs) -> anyhow::Result<u8> {
    let tcp_only = [
        (args.streams != 1, "-P/--parallel (use --qps)"),
        (args.reverse, "-R/--reverse"),
        (args.bidir, "--bidir"),
        (args.window.is_some(), "-w/--window"),
        (args.congestion.is_some(), "-C/--congestion"),
        (args.zerocopy, "-Z/--zerocopy"),
        (args.no_delay, "-N/--no-delay"),
        (args.working_set.is_some(), "--working-set"),
        (
            args.time.is_some(),
            "-t/--time (RDMA counts messages: use -n)",
        ),
        (args.interval.is_some(), "-i/--interval"),
        (args.rails.is_some(), "--rails"),
        (args.omit.is_some(), "-O/--omit"),
    ];
    if let Some((_, flag)) = tcp_only.iter().find(|(given, _)| *given) {
        return Err(cli::usage(format!(
            "{flag} applies to --transport tcp only"
        )));
    }
    let iters = args.iters.unwrap_or(5000);
    let run = resolve_rdma(&args.common, TestKind::Bw, args.size, iters)?;
    let reports = rdma_sweep(&run, "bandwidth", Client::rdma_bandwidth)?;
    report::rdma_bandwidth(&run.plan.output, run.plan.sweep, &reports)?;
    if let Some(bad) = reports.iter().find(|r| r.wrong_bytes > 0) {
        anyhow::bail!(
            "--validate found {} wrong bytes of {} checked at {} B messages: the data path corrupts data",
            bad.wrong_bytes,
            bad.checked_bytes,
            bad.msg_size
        );
    }
    Ok(cli::exit::OK)
}

/// One RDMA test per size of the plan, over one control connection.
fn rdma_sweep<R>(
    run: &RdmaPlan,
    what: &str,
    test_one: fn(&mut Client, &RdmaTest, &RdmaOptions) -> fabric::Result<R>,
) -> anyhow::Result<Vec<R>> {
    let mut client = connect(&run.plan)?;
    let mut reports = Vec::new();
    for &size in &run.plan.sizes {
        let test = RdmaTest {
            size,
            ..run.test.clone()
        };
        let report = test_one(&mut client, &test, &run.options)
            .with_context(|| format!("RDMA {what} test with {size}-byte messages"))?;
        reports.push(report);
    }
    client.close();
    Ok(reports)
}

pub(crate) fn rdma_lat(args: LatArgs) -> anyhow::Result<u8> {
    if args.time.is_some() {
        return Err(cli::usage(
            "-t/--time applies to TCP: RDMA latency counts round trips, use -n",
        ));
    }
    if args.busy_poll {
        return Err(cli::usage(
            "--busy-poll applies to TCP: RDMA latency always polls",
        ));
    }
    let run = resolve_rdma(
        &args.common,
        TestKind::Lat,
        args.size,
        args.iters.unwrap_or(1000),
    )?;
    let reports = rdma_sweep(&run, "latency", Client::rdma_latency)?;
    report::rdma_latency(&run.plan.output, run.plan.sweep, &reports)?;
    Ok(cli::exit::OK)
}

/// RDMA missing here: the library says why; the tool adds its own way around it.
pub(crate) fn rdma_hint(error: anyhow::Error) -> anyhow::Error {
    let unavailable = error.chain().any(|cause| {
        cause.downcast_ref::<fabric::rdma::Unavailable>().is_some()
            || matches!(
                cause.downcast_ref::<fabric::FabricError>(),
                Some(fabric::FabricError::RdmaUnavailable(_))
            )
    });
    if unavailable {
        anyhow::anyhow!("{}, or use --transport tcp", cli::sentence(&error))
    } else {
        error
    }
}
