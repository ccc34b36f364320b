//! Who this process is in an N-rank job and where rank 0 listens: from flags, else the
//! launcher's environment (torchrun, Slurm, Open MPI, PMI, Kubernetes LeaderWorkerSet),
//! in that order. One implementation for every cross-node tool (collbench's rendezvous,
//! netcheck's cluster mode).

use measure::Setting;

/// The rendezvous port when neither flags nor environment name one (torchrun's).
pub const DEFAULT_PORT: u16 = 29500;

/// A launcher environment or flag combination that names no usable rank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(pub String);

/// Who this process is and where rank 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub rank: usize,
    pub world: usize,
    pub master: String,
    /// Where rank/world came from: "flags", "torchrun", "slurm", "openmpi", "pmi", "lws".
    pub source: &'static str,
}

/// What the user typed; any of it may be missing.
#[derive(Debug, Clone, Default)]
pub struct BootstrapFlags {
    pub rank: Option<usize>,
    pub world: Option<usize>,
    pub master: Option<String>,
}

/// Resolves rank, world and master from flags, then torchrun, Slurm, Open MPI, PMI and
/// LeaderWorkerSet variables, in that order. `Ok(None)`: nothing says this is multi-rank.
pub fn resolve(
    flags: &BootstrapFlags,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Bootstrap>, BootstrapError> {
    let number = |key: &str| -> Result<Option<usize>, BootstrapError> {
        match env(key) {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                BootstrapError(format!(
                    "{key}='{v}' is not a number: fix the launcher environment"
                ))
            }),
        }
    };
    let (rank, world, source, launcher_master) = match (flags.rank, flags.world) {
        (Some(rank), Some(world)) => (rank, world, "flags", None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(BootstrapError(format!(
                "{} and {} go together: pass both, or neither to read the launcher's environment",
                Setting::Rank,
                Setting::WorldSize
            )))
        }
        (None, None) => {
            let master_from = |addr: &str, port: &str| {
                env(addr).map(|a| {
                    format!(
                        "{a}:{}",
                        env(port).unwrap_or_else(|| DEFAULT_PORT.to_string())
                    )
                })
            };
            if let (Some(r), Some(w)) = (number("RANK")?, number("WORLD_SIZE")?) {
                (r, w, "torchrun", master_from("MASTER_ADDR", "MASTER_PORT"))
            } else if let (Some(r), Some(w)) = (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
                (
                    r,
                    w,
                    "slurm",
                    master_from("SLURM_LAUNCH_NODE_IPADDR", "MASTER_PORT"),
                )
            } else if let (Some(r), Some(w)) = (
                number("OMPI_COMM_WORLD_RANK")?,
                number("OMPI_COMM_WORLD_SIZE")?,
            ) {
                (r, w, "openmpi", None)
            } else if let (Some(r), Some(w)) = (number("PMI_RANK")?, number("PMI_SIZE")?) {
                (r, w, "pmi", None)
            } else if let (Some(r), Some(w)) =
                (number("LWS_WORKER_INDEX")?, number("LWS_GROUP_SIZE")?)
            {
                (
                    r,
                    w,
                    "lws",
                    master_from("LWS_LEADER_ADDRESS", "MASTER_PORT"),
                )
            } else {
                return Ok(None);
            }
        }
    };
    if world == 0 || rank >= world {
        return Err(BootstrapError(format!(
            "rank {rank} is outside a world of {world} ranks (from {source}): ranks are 0..world-1"
        )));
    }
    let master = flags.master.clone().or(launcher_master).or_else(|| {
        env("MASTER_ADDR").map(|a| {
            format!(
                "{a}:{}",
                env("MASTER_PORT").unwrap_or_else(|| DEFAULT_PORT.to_string())
            )
        })
    });
    let master = match master {
        Some(m) => with_default_port(&m),
        None if world == 1 => format!("127.0.0.1:{DEFAULT_PORT}"),
        None => {
            return Err(BootstrapError(format!(
                "rank {rank} of {world} (from {source}) has no rendezvous address: pass {} (HOST:PORT) or set MASTER_ADDR",
                Setting::Master
            )))
        }
    };
    Ok(Some(Bootstrap {
        rank,
        world,
        master,
        source,
    }))
}

/// `HOST[:PORT]` with the rendezvous port filled in: `10.0.0.1`, `node:1234`, `fe80::1`
/// (a bare IPv6 address) and `[fe80::1]:1234` all work.
pub fn with_default_port(text: &str) -> String {
    let has_port = if text.starts_with('[') {
        text.contains("]:")
    } else {
        text.matches(':').count() == 1
    };
    match (
        has_port,
        text.matches(':').count() > 1 && !text.starts_with('['),
    ) {
        (true, _) => text.to_string(),
        (false, true) => format!("[{text}]:{DEFAULT_PORT}"),
        (false, false) => format!("{text}:{DEFAULT_PORT}"),
    }
}
