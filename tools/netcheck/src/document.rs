//! netcheck's `--json` documents for one node and for a pair, as written: typed over
//! probe's checks and facts (`measure::record::{NetcheckLocal, NetcheckPair}` are the
//! parts readers take).

use probe::{Check, Summary};
use std::collections::BTreeMap;

/// `netcheck --json` on one node (test "local"), or with `--peer`/`--listen` ("pair"):
/// what it writes; `measure::record::{NetcheckLocal, NetcheckPair}` are what readers take.
#[derive(serde::Serialize)]
pub(crate) struct LocalDocument<'a> {
    pub(crate) host: &'a str,
    pub(crate) iface: &'a str,
    pub(crate) checks: &'a [Check],
    pub(crate) summary: &'a Summary,
    pub(crate) fingerprint: FingerprintDocument<'a>,
    pub(crate) pair: Option<PairDocument<'a>>,
    pub(crate) exit_code: u8,
}

/// What the node runs, for comparing nodes: Python, packages, NCCL plugins, GPUs, env.
#[derive(serde::Serialize)]
pub(crate) struct FingerprintDocument<'a> {
    pub(crate) python: Option<&'a str>,
    pub(crate) packages: &'a BTreeMap<String, String>,
    pub(crate) nccl_net_plugins: &'a [String],
    pub(crate) gpu_model: Option<&'a str>,
    pub(crate) gpu_count: usize,
    pub(crate) driver: Option<&'a str>,
    /// NCCL_*, GLOO_* and VLLM_* variables.
    pub(crate) env: BTreeMap<&'a str, &'a str>,
}

/// Both nodes' summaries, what was measured between them, and the pair checks.
#[derive(serde::Serialize)]
pub(crate) struct PairDocument<'a> {
    pub(crate) a: &'a probe::pair::NodeSummary,
    pub(crate) b: &'a probe::pair::NodeSummary,
    pub(crate) measured: &'a probe::pair::Measured,
    pub(crate) checks: &'a [Check],
}
