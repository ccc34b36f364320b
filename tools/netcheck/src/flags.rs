//! netcheck's flags: one struct for every mode (node, pair, cluster).

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Pre-flight checks for multi-node LLM inference (vLLM, SGLang, Ray, NCCL).
///
/// Exit codes: 0 all pass (info allowed), 1 warnings only, 2 any failure, 64 bad invocation.
#[derive(Parser, Debug)]
#[command(name = "netcheck", version)]
#[command(mut_args(cli::hide_outputs(cli::Honours::JSON_QUIET)))]
pub(crate) struct Args {
    /// Interface that carries inter-node traffic [default: the default route's interface].
    #[arg(long, value_name = "IFACE")]
    pub(crate) iface: Option<String>,
    /// Extra TCP ports that must be free on the interface address (Ray's 6379 is always checked).
    #[arg(long = "port", value_name = "PORT")]
    pub(crate) ports: Vec<u16>,
    /// Number of GPUs this node must expose; a different count is a failure.
    #[arg(long, value_name = "N")]
    pub(crate) expect_gpus: Option<usize>,
    /// Treat warnings as failures (exit 2).
    #[arg(long)]
    pub(crate) strict: bool,
    /// Warnings you know about and accept (check ids, comma-separated, e.g.
    /// iface.speed,container.network): reported as INFO, never counted. A failure cannot
    /// be accepted.
    #[arg(long, value_delimiter = ',', value_name = "CHECK,CHECK")]
    pub(crate) accept: Vec<String>,
    // -q: only warnings and failures.
    #[command(flatten)]
    pub(crate) output: cli::OutputArgs,
    /// Also print each check's evidence.
    #[arg(short, long, conflicts_with = "quiet")]
    pub(crate) verbose: bool,
    /// Wait for one peer (`netcheck --peer` on another node), run the pair checks with it,
    /// print both, and exit with the combined verdict.
    #[arg(long, conflicts_with_all = ["peer", "emit_env"])]
    pub(crate) listen: bool,
    /// Run the pair checks against a node that runs `netcheck --listen`.
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "emit_env")]
    pub(crate) peer: Option<String>,
    /// The pair checks' control port (both sides).
    #[arg(long, default_value_t = probe::pair::DEFAULT_PORT, value_name = "PORT")]
    pub(crate) pair_port: u16,
    /// Bound on every wait of the pair checks, and on waiting for the peer.
    #[arg(long, default_value = "60s", value_parser = cli::duration_arg, value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// Shorter bandwidth tests (1 s instead of 2 s, half of it each way).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Print the `export` lines this node should use (NCCL_SOCKET_IFNAME,
    /// GLOO_SOCKET_IFNAME, VLLM_HOST_IP, NCCL_IB_GID_INDEX on RoCE), for `eval`; nothing
    /// and a non-zero exit when a check fails.
    #[arg(long, conflicts_with = "json")]
    pub(crate) emit_env: bool,
    /// Check the whole cluster: every node runs `netcheck --cluster`; rank 0 gathers the
    /// nodes, schedules the pair checks and prints one report; every node exits with the
    /// cluster's verdict. Rank/world/rank 0 come from --rank/--world/--master, --hosts, or
    /// the launcher (torchrun, Slurm, Open MPI, PMI, LeaderWorkerSet).
    #[arg(long, conflicts_with_all = ["listen", "peer", "emit_env"])]
    pub(crate) cluster: bool,
    /// This node's rank (cluster mode).
    #[arg(long, requires = "cluster")]
    pub(crate) rank: Option<usize>,
    /// Number of nodes (cluster mode).
    #[arg(long, requires = "cluster")]
    pub(crate) world: Option<usize>,
    /// Rank 0's address, HOST[:PORT] (cluster mode; port default --pair-port).
    #[arg(long, requires = "cluster", value_name = "HOST[:PORT]")]
    pub(crate) master: Option<String>,
    /// Every node's address, rank order, comma-separated; this node's rank is found by
    /// its own address (cluster mode).
    #[arg(long, requires = "cluster", value_delimiter = ',', value_name = "ADDR,ADDR,...", conflicts_with_all = ["rank", "world", "master", "hostfile"])]
    pub(crate) hosts: Vec<String>,
    /// Like --hosts, one address per line.
    #[arg(long, requires = "cluster", value_name = "FILE")]
    pub(crate) hostfile: Option<PathBuf>,
    /// Test every pair of nodes [default: up to 16 nodes; beyond, a ring plus 2 random
    /// partners per node].
    #[arg(long, requires = "cluster")]
    pub(crate) full_mesh: bool,
    /// Expectations: per-link minimum Gbit/s and maximum latency, required MTU and GPU
    /// count (configs/expect/*.toml); each measured figure is marked OK or FAILED.
    #[arg(long, requires = "cluster", value_name = "FILE.toml")]
    pub(crate) expect: Option<PathBuf>,
    /// A link below this many Gbit/s fails (overrides the file's link.tcp_min_gbps).
    #[arg(long, requires = "cluster", value_name = "GBIT")]
    pub(crate) expect_gbps: Option<f64>,
    /// Write the cluster bundle here: report.json, bandwidth.csv, latency.csv and
    /// bandwidth.svg (rank 0).
    #[arg(long, requires = "cluster", value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Read /sys, /proc and /dev/shm under this root (fixture trees in tests).
    #[arg(long, hide = true, default_value = "/")]
    pub(crate) sysroot: PathBuf,
}
