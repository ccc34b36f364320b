//! `kvxfer`: the prefill-to-decode KV-block path. `prefill` serves a KV pool, `decode`
//! moves one request into a local pool, `bench` drives many requests like
//! `vllm bench serve` does for the KV path. This file dispatches to the mode (`prefill`,
//! `decode`, `bench`, `sweep` for `--sweep-block`) and holds what they share: the pool's
//! shape and layout from `flags`, the token; the agents are in the `kvcache` crate.
//!
//! Exit codes: 0 done, 1 some requests failed (bench), 2 failed, 64 bad invocation.

mod bench;
mod decode;
mod flags;
mod prefill;
mod sweep;

use flags::{Cli, Command, LayoutOrder, PoolArgs};
use kvcache::{KvLayout, KvShape, Order};

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::ListenPort, "--listen"),
    (measure::Setting::GidIndex, "--gid-index"),
    (measure::Setting::SendQueueDepth, "--tx-depth"),
    (measure::Setting::TcpTransport, "--transport tcp"),
    (measure::Setting::PoolBlocks, "--num-blocks"),
    (measure::Setting::BlockSize, "--block-size"),
    (measure::Setting::KvDtype, "--dtype"),
    (measure::Setting::Model, "--model"),
    (measure::Setting::KvLayout, "--layout"),
    (measure::Setting::PrefillAddress, "--peer"),
    (measure::Setting::DpRank, "--dp-rank"),
];

fn main() -> std::process::ExitCode {
    cli::main("kvxfer", FLAGS, |cli: Cli| match cli.command {
        Command::Prefill(args) if args.sweep_block.is_some() => sweep::prefill(args),
        Command::Prefill(args) => prefill::prefill(args),
        Command::Decode(args) => decode::decode(args).map_err(rdma_hint),
        Command::Bench(args) => bench::run(args).map_err(rdma_hint),
    })
}

/// RDMA missing here: the library says why; the tool adds its own way around it.
fn rdma_hint(error: anyhow::Error) -> anyhow::Error {
    use fabric::FabricError::RdmaUnavailable;
    let unavailable = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<kvcache::KvError>(),
            Some(kvcache::KvError::Fabric(RdmaUnavailable(_)))
        ) || matches!(
            cause.downcast_ref::<fabric::FabricError>(),
            Some(RdmaUnavailable(_))
        )
    });
    if unavailable {
        anyhow::anyhow!("{}, or use --transport tcp", cli::sentence(&error))
    } else {
        error
    }
}

fn check_device(device: &str) -> anyhow::Result<()> {
    if device == "cpu" {
        return Ok(());
    }
    let Some(index) =
        device
            .strip_prefix("cuda:")
            .or(if device == "cuda" { Some("0") } else { None })
    else {
        return Err(cli::usage(format!("--device {device}: use cpu or cuda:N")));
    };
    if index.parse::<u32>().is_err() {
        return Err(cli::usage(format!("--device {device}: use cpu or cuda:N")));
    }
    if probe::read_gpus(std::path::Path::new("/")).gpus.is_empty() {
        anyhow::bail!(
            "--device {device}: no NVIDIA GPU on this node (/proc/driver/nvidia/gpus is empty or missing); use --device cpu"
        );
    }
    anyhow::bail!(
        "--device {device}: GPU-resident KV pools are not implemented in this build (host pools only); use --device cpu"
    )
}

fn shape(pool: &PoolArgs) -> anyhow::Result<KvShape> {
    let model = model::find_model(&model::configs_dir(), &pool.model)
        .map_err(|e| cli::usage(e.to_string()))?;
    let order = match pool.layout {
        LayoutOrder::Nhd => Order::Nhd,
        LayoutOrder::Hnd => Order::Hnd,
    };
    KvShape::from_model(&model, pool.dtype, pool.block_size, order)
        .map_err(|e| cli::usage(e.to_string()))
}

fn layout(pool: &PoolArgs, num_blocks: u32) -> anyhow::Result<KvLayout> {
    if pool.tp_rank >= pool.tp {
        return Err(cli::usage(format!(
            "--tp-rank {} with --tp {}: ranks run from 0 to {}",
            pool.tp_rank,
            pool.tp,
            pool.tp - 1
        )));
    }
    check_device(&pool.device)?;
    KvLayout::new(shape(pool)?, pool.tp, pool.tp_rank, num_blocks)
        .map_err(|e| cli::usage(e.to_string()))
}

pub(crate) fn token() -> anyhow::Result<Option<Vec<u8>>> {
    fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))
}
