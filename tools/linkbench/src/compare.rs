//! `linkbench compare`: TCP and RDMA on the same link, one table.

use crate::flags::CompareArgs;
use crate::{connect, iface_address, report, token, Plan};
use anyhow::Context;
use fabric::perf::{self, BwSpec, ClientConfig, LatSpec, Mode, RdmaOptions, Until};
use fabric::rdma::{RdmaOp, RdmaTest};
use fabric::test_kind::TestKind;
use std::time::Duration;

pub(crate) fn compare(args: CompareArgs) -> anyhow::Result<u8> {
    args.output
        .resolve("linkbench compare", cli::Honours::JSON)?;
    let peer = fabric::tcp::resolve_peer(&args.peer, args.port).map_err(|e| match e {
        fabric::FabricError::Config(text) => cli::usage(format!("--peer: {text}")),
        other => anyhow::Error::new(other).context("--peer"),
    })?;
    for (size, flag) in [(args.size, "--size"), (args.lat_size, "--lat-size")] {
        if size == 0 || size > perf::MAX_MESSAGE {
            return Err(cli::usage(format!(
                "{flag} must be 1 byte .. {} MiB",
                perf::MAX_MESSAGE >> 20
            )));
        }
    }
    let plan = Plan {
        config: ClientConfig {
            peer,
            connect_timeout: args.connect_timeout,
            token: token()?,
            iface: args.iface.clone(),
            stall: fabric::perf::STALL_TIMEOUT,
        },
        sizes: vec![args.size],
        sweep: false,
        output: report::Output {
            json: args.output.json,
            quiet: false,
            csv: None,
            plot: None,
            peer: peer.to_string(),
        },
        quiet: true,
    };
    let mut client = connect(&plan)?;
    let bar = cli::progress(
        4,
        "linkbench compare: TCP bandwidth",
        "tests",
        !args.output.json,
    );
    let tcp_bw = client
        .bandwidth(
            &BwSpec {
                mode: Mode::Forward,
                streams: 1,
                size: args.size,
                duration: args.time,
                omit: Duration::ZERO,
                window: None,
                congestion: None,
                zerocopy: false,
                no_delay: false,
                working_set: None,
                rails: Vec::new(),
            },
            &mut |_, _| {},
        )
        .context("TCP bandwidth test")?;
    bar.inc(1);
    bar.set_message("linkbench compare: TCP latency");
    let tcp_lat = client
        .latency(
            &LatSpec {
                size: args.lat_size,
                until: Until::Iterations(args.iters),
                busy_poll: true,
            },
            &mut |_, _| {},
        )
        .context("TCP latency test")?;
    bar.inc(1);
    bar.set_message("linkbench compare: RDMA");
    let address = match &args.iface {
        Some(iface) => Some(iface_address(iface)?),
        None => None,
    };
    let options = RdmaOptions {
        device: args.device.clone(),
        gid_index: args.gid_index,
        address,
    };
    let rdma = match fabric::rdma::check(args.device.as_deref()) {
        Err(why) => Err(why.to_string()),
        Ok(_) => {
            let bw = RdmaTest {
                kind: TestKind::Bw,
                op: RdmaOp::Write,
                size: args.size,
                qps: 1,
                tx_depth: 128,
                iterations: args.iters,
                validate: false,
                inline: 0,
                seed: 1,
            };
            let lat = RdmaTest {
                kind: TestKind::Lat,
                size: args.lat_size,
                tx_depth: 1,
                inline: 220,
                ..bw.clone()
            };
            client
                .rdma_bandwidth(&bw, &options)
                .and_then(|b| client.rdma_latency(&lat, &options).map(|l| (b, l)))
                .map_err(|e| format!("RDMA test failed: {e}"))
        }
    };
    client.close();
    bar.finish_and_clear();
    report::compare(&plan.output, &tcp_bw, &tcp_lat, &rdma)?;
    Ok(cli::exit::OK)
}
