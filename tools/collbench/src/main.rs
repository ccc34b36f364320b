//! collbench: nccl-tests for any node. Resolves who this rank is (flags or the launcher's
//! environment), joins the job, runs the sweep through the collective harness, and prints
//! nccl-tests' columns (rank 0 only) or one JSON document. Flags are in `flags`; each
//! mode in its own file: `sweep` (no subcommand), `synthetic` (synthetic-step), `shaped`
//! (model).

mod flags;
mod shaped;
mod sweep;
mod synthetic;

use anyhow::Context;
use collective::{BootstrapFlags, Communicator};
use flags::{Cli, JobArgs, Mode};
use std::time::Duration;

/// This tool's flag for each setting the libraries' hints name.
const FLAGS: &[(measure::Setting, &str)] = &[
    (measure::Setting::Master, "--master"),
    (measure::Setting::Rank, "--rank"),
    (measure::Setting::WorldSize, "--world"),
    (measure::Setting::TcpTransport, "--backend tcp"),
    (measure::Setting::NcclLibrary, "--nccl-lib"),
];

fn main() -> std::process::ExitCode {
    cli::main("collbench", FLAGS, run)
}

/// The job as resolved from flags and the environment.
pub struct Job {
    pub local_ranks: Option<usize>,
    pub boot: Option<collective::Bootstrap>,
}

fn resolve_job(args: &JobArgs) -> anyhow::Result<Job> {
    let flags = BootstrapFlags {
        rank: args.rank,
        world: args.world,
        master: args.master.clone(),
    };
    if let Some(n) = args.ranks {
        if args.rank.is_some() || args.world.is_some() {
            return Err(cli::usage("--ranks runs every rank in this process; it cannot be combined with --rank/--world"));
        }
        if n == 0 || n > 64 {
            return Err(cli::usage(format!("--ranks {n}: pass 1..64")));
        }
        return Ok(Job {
            local_ranks: Some(n),
            boot: None,
        });
    }
    let boot = collective::rendezvous::resolve(&flags, |k| std::env::var(k).ok())
        .map_err(|e| cli::usage(e.to_string()))?;
    Ok(Job {
        local_ranks: if boot.is_none() { Some(1) } else { None },
        boot,
    })
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.mode {
        None => sweep::sweep(cli.sweep),
        Some(Mode::SyntheticStep(step)) => {
            let args = step.into_args()?;
            let job = resolve_job(&args.job)?;
            synthetic::run(&args, &job)
        }
        Some(Mode::Model(model)) => {
            let args = model.into_args()?;
            let job = resolve_job(&args.job)?;
            shaped::run(&args, &job)
        }
    }
}

/// Runs `body` on every local rank (threads) or on this process's rank; returns rank 0's
/// result (or this rank's, in a multi-process job).
pub fn on_ranks<T: Send>(
    job: &Job,
    timeout: Duration,
    body: impl Fn(&mut Communicator) -> Result<T, collective::CollError> + Sync,
) -> anyhow::Result<T> {
    if let Some(n) = job.local_ranks {
        let results = collective::run_local(n, timeout, body)?;
        return results.into_iter().next().context("no ranks ran");
    }
    let boot = job.boot.as_ref().context("no bootstrap")?;
    let token = fabric::handshake::token_from_env().map_err(|e| cli::usage(e.to_string()))?;
    if boot.rank == 0 {
        eprintln!(
            "collbench: rank 0: rendezvous on {} for {} ranks ({})",
            boot.master,
            boot.world,
            if token.is_some() {
                "NODELINK_TOKEN required"
            } else {
                "no authentication"
            }
        );
    }
    let mut comm = Communicator::join(
        boot,
        timeout,
        None,
        token.as_deref(),
        &cli::log_to_stderr("collbench"),
    )
    .with_context(|| {
        format!(
            "rank {} of {} joining via {} ({})",
            boot.rank, boot.world, boot.master, boot.source
        )
    })?;
    let rank = boot.rank;
    body(&mut comm).with_context(|| format!("rank {rank}"))
}
