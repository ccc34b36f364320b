//! Result records. Every tool's `--json` is one document under one envelope,
//! `{"tool", "version", "test", ...}`, made by [`document`]; [`Record::from_json`] reads a
//! document back into its typed record by that envelope, so a reader (explain) never
//! guesses a file's shape from the fields it happens to have.

use crate::{Dtype, LatencySummary, RedOp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The release every record is stamped with (one workspace version for every tool).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which tool wrote a record, in which release, for which test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub tool: String,
    pub version: String,
    pub test: String,
}

/// The envelope, then the body's own fields: the one shape of every `--json` document.
/// A body that is not a JSON object lands under `"result"`.
pub fn document(tool: &str, test: &str, body: &impl Serialize) -> serde_json::Result<Value> {
    let mut fields = Map::new();
    fields.insert("tool".into(), tool.into());
    fields.insert("version".into(), VERSION.into());
    fields.insert("test".into(), test.into());
    match serde_json::to_value(body)? {
        Value::Object(body) => {
            for (key, value) in body {
                // The envelope is the writer's, not the body's to overwrite.
                fields.entry(key).or_insert(value);
            }
        }
        Value::Null => {}
        other => {
            fields.insert("result".into(), other);
        }
    }
    Ok(Value::Object(fields))
}

/// [`document`], pretty-printed to stdout (the `--json` output of every tool).
pub fn print_json(tool: &str, test: &str, body: &impl Serialize) -> serde_json::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&document(tool, test, body)?)?
    );
    Ok(())
}

/// Why a document could not be read back as a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON document ({0})")]
    NotJson(serde_json::Error),
    #[error("not a nodelink result: it has no \"tool\"/\"version\"/\"test\" envelope ({0})")]
    NoEnvelope(serde_json::Error),
    #[error("a {tool} {test} record from release {version}, which this release ({VERSION}) reads differently: {source}")]
    Body {
        tool: String,
        test: String,
        version: String,
        source: serde_json::Error,
    },
}

/// A record read back, by what wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    CollectiveSweep(CollectiveSweep),
    LinkBw(LinkBw),
    LinkLat(LinkLat),
    LinkCompare(LinkCompare),
    KvBench(KvBench),
    KvDecode(KvDecode),
    KvSweep(KvSweep),
    NetcheckLocal(NetcheckLocal),
    NetcheckPair(NetcheckPair),
    NetcheckCluster(NetcheckCluster),
    SyntheticStep(SyntheticStep),
    CollectiveModel(CollectiveModel),
    ExplainPlans(ExplainPlans),
    ExplainStep(ExplainStep),
    /// A test this version does not know (a newer tool's, say): the envelope alone.
    Other(Envelope),
}

impl Record {
    /// The tool and test that wrote it, "linkbench bw", for messages.
    pub fn written_by(&self) -> String {
        let (tool, test) = match self {
            Record::CollectiveSweep(_) => ("collbench", "sweep"),
            Record::LinkBw(_) => ("linkbench", "bw"),
            Record::LinkLat(_) => ("linkbench", "lat"),
            Record::LinkCompare(_) => ("linkbench", "compare"),
            Record::KvBench(_) => ("kvxfer", "bench"),
            Record::KvDecode(_) => ("kvxfer", "decode"),
            Record::KvSweep(_) => ("kvxfer", "sweep"),
            Record::NetcheckLocal(_) => ("netcheck", "local"),
            Record::NetcheckPair(_) => ("netcheck", "pair"),
            Record::NetcheckCluster(_) => ("netcheck", "cluster"),
            Record::SyntheticStep(_) => ("collbench", "synthetic-step"),
            Record::CollectiveModel(_) => ("collbench", "model"),
            Record::ExplainPlans(_) => ("explain", "plans"),
            Record::ExplainStep(_) => ("explain", "predict-step"),
            Record::Other(envelope) => return format!("{} {}", envelope.tool, envelope.test),
        };
        format!("{tool} {test}")
    }

    pub fn from_json(text: &str) -> Result<Record, RecordError> {
        let value: Value = serde_json::from_str(text).map_err(RecordError::NotJson)?;
        let envelope = Envelope::deserialize(&value).map_err(RecordError::NoEnvelope)?;
        let body = |source| RecordError::Body {
            tool: envelope.tool.clone(),
            test: envelope.test.clone(),
            version: envelope.version.clone(),
            source,
        };
        Ok(match (envelope.tool.as_str(), envelope.test.as_str()) {
            ("collbench", "sweep") => {
                Record::CollectiveSweep(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("linkbench", "bw") => Record::LinkBw(Deserialize::deserialize(&value).map_err(body)?),
            ("linkbench", "lat") => {
                Record::LinkLat(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("linkbench", "compare") => {
                Record::LinkCompare(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("kvxfer", "bench") => Record::KvBench(Deserialize::deserialize(&value).map_err(body)?),
            ("kvxfer", "decode") => {
                Record::KvDecode(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("kvxfer", "sweep") => Record::KvSweep(Deserialize::deserialize(&value).map_err(body)?),
            ("netcheck", "local") => {
                Record::NetcheckLocal(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("netcheck", "pair") => {
                Record::NetcheckPair(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("netcheck", "cluster") => {
                Record::NetcheckCluster(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("collbench", "synthetic-step") => {
                Record::SyntheticStep(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("collbench", "model") => {
                Record::CollectiveModel(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("explain", "plans") => {
                Record::ExplainPlans(Deserialize::deserialize(&value).map_err(body)?)
            }
            ("explain", "predict-step") => {
                Record::ExplainStep(Deserialize::deserialize(&value).map_err(body)?)
            }
            _ => Record::Other(envelope),
        })
    }
}

/// One collective's timings at one size, nccl-tests' columns.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CollectiveTiming {
    pub time_us: f64,
    pub algbw_gbs: f64,
    pub busbw_gbs: f64,
    pub wrong: u64,
}

/// One size of a collbench sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveRow {
    pub bytes: u64,
    pub count: u64,
    pub dtype: Dtype,
    pub redop: Option<RedOp>,
    pub root: i64,
    /// Out-of-place figures (nccl-tests' left block).
    pub time_us: f64,
    pub algbw_gbs: f64,
    pub busbw_gbs: f64,
    pub wrong: u64,
    pub in_place: CollectiveTiming,
    /// Rank 0's per-iteration latency percentiles (out-of-place), microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
}

impl CollectiveRow {
    /// The `type` column as nccl-tests prints it.
    pub fn dtype_name(&self) -> &'static str {
        self.dtype.nccl_tests_name()
    }
}

/// `collbench --json` (test "sweep"): one operation over a range of sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveSweep {
    pub op: String,
    pub backend: String,
    pub world: u64,
    pub dtype: Dtype,
    pub redop: Option<RedOp>,
    pub rows: Vec<CollectiveRow>,
    pub avg_busbw_gbs: f64,
    pub wrong: u64,
}

/// One size of a linkbench bandwidth test (the fields a reader needs; the document has
/// per-stream, per-direction and CPU detail besides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BwPoint {
    pub transport: String,
    pub streams: u32,
    pub msg_size: u64,
    pub seconds: f64,
    pub bytes: u64,
    /// Decimal Gbit/s at the receiver.
    pub throughput_gbps: f64,
    /// The senders' smoothed RTT under load: not the link's idle latency.
    pub rtt_us: Option<f64>,
}

/// `linkbench bw --json`: one size, or a sweep (`-a`) with one point per size. (A field
/// of the flattened point must not be one of the outer record's: the outer would take it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkBw {
    pub peer: String,
    #[serde(flatten)]
    pub one: Option<BwPoint>,
    #[serde(default)]
    pub sweep: Vec<BwPoint>,
}

impl LinkBw {
    /// The best rate over the sizes measured, Gbit/s.
    pub fn best_gbps(&self) -> Option<f64> {
        self.one
            .iter()
            .chain(&self.sweep)
            .map(|p| p.throughput_gbps)
            .fold(None, |best: Option<f64>, x| {
                Some(best.map_or(x, |b| b.max(x)))
            })
    }
}

/// One size of a linkbench latency test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatPoint {
    pub transport: String,
    pub msg_size: u64,
    /// One way = round trip / 2, microseconds.
    pub latency_us: LatencySummary,
}

/// `linkbench lat --json`: one size, or a sweep (`-a`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkLat {
    pub peer: String,
    pub one_way: String,
    #[serde(flatten)]
    pub one: Option<LatPoint>,
    #[serde(default)]
    pub sweep: Vec<LatPoint>,
}

/// The TCP half of `linkbench compare`: a bandwidth and an idle latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareTcp {
    pub msg_size: u64,
    pub throughput_gbps: f64,
    pub lat_msg_size: u64,
    pub latency_us: LatencySummary,
}

/// The RDMA half of `linkbench compare`, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareRdma {
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// write, read or send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_gbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<LatencySummary>,
}

/// RDMA over TCP: bandwidth, and p50 latency (none without RDMA).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompareRatio {
    pub throughput: Option<f64>,
    pub latency_p50: Option<f64>,
}

/// `linkbench compare --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkCompare {
    pub peer: String,
    pub tcp: CompareTcp,
    pub rdma: CompareRdma,
    pub ratio: CompareRatio,
}

/// Per-request latency of a kvxfer bench, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KvLatency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// One decode group's share of a kvxfer bench (`--scheme`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvDecoderShare {
    /// The prefill addresses this group reads.
    pub peers: Vec<String>,
    pub requests: u64,
    pub failed: u64,
    pub throughput_gbps: f64,
}

/// How many requests were asked to be in flight, and how many workers ran.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KvConcurrency {
    pub requested: u32,
    pub effective: u32,
}

/// `kvxfer bench --json`: whole requests' KV pulled from a prefill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvBench {
    pub requests: u64,
    pub failed: u64,
    /// Blocks whose CRC32C or content did not match: never counted complete.
    pub integrity_failures: u64,
    pub num_prompts: u64,
    pub bytes_per_request: u64,
    pub duration_s: f64,
    pub throughput_gbps: f64,
    pub throughput_gbyte_s: f64,
    /// Poisson arrivals per second; infinite (all at once) is written "inf", as vllm bench.
    #[serde(with = "inf_as_word")]
    pub request_rate: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    pub num_warmups: u64,
    pub latency_ms: KvLatency,
    pub checksums: bool,
    pub verified: bool,
    /// The content check's own rate (`--verify`), GB/s per worker.
    pub verify_gbyte_s: Option<f64>,
    pub transport: String,
    pub rails: usize,
    pub scheme: String,
    pub decoders: Vec<KvDecoderShare>,
    pub concurrency: KvConcurrency,
    /// The link rate given with `--link-gbps`, and the share of it reached.
    pub link_gbps: Option<f64>,
    pub link_share: Option<f64>,
    pub prefill_tp: u32,
    pub decode_tp: u32,
    pub decode_rank: u32,
    /// The first few distinct errors.
    pub errors: Vec<String>,
    /// Why the bench stopped before every prompt was tried.
    pub stopped: Option<String>,
}

/// An `f64` that JSON cannot hold when infinite: written as the word "inf".
mod inf_as_word {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, to: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            to.serialize_f64(*value)
        } else {
            to.serialize_str("inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrWord {
        Number(f64),
        Word(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<f64, D::Error> {
        match NumberOrWord::deserialize(from)? {
            NumberOrWord::Number(x) => Ok(x),
            NumberOrWord::Word(w) if w == "inf" => Ok(f64::INFINITY),
            NumberOrWord::Word(w) => Err(serde::de::Error::custom(format!(
                "request_rate {w:?}: a number or \"inf\""
            ))),
        }
    }
}

/// What `netcheck --peer` measured between the two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMeasured {
    pub bw_a_to_b_gbps: Option<f64>,
    pub bw_b_to_a_gbps: Option<f64>,
    /// One way, idle, microseconds.
    pub latency_p50_us: Option<f64>,
}

/// The pair section (besides what was measured it holds both nodes' summaries and the pair
/// checks, which no reader here needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairSection {
    pub measured: PairMeasured,
}

/// `netcheck --peer ... --json` (test "pair"): the local checks and the pair section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetcheckPair {
    pub pair: PairSection,
}

/// `kvxfer decode --json`: one request moved into this node's pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvDecode {
    pub request_id: String,
    pub bytes: u64,
    pub transfer_ms: f64,
    pub throughput_gbps: f64,
    pub checksums: bool,
    pub verified: bool,
    /// Comparing the bytes after the timed window (0 without `--verify`).
    pub verify_ms: f64,
}

/// Per-request latency of one block size of a sweep, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SweepLatency {
    pub mean: f64,
    pub p50: f64,
    pub p99: f64,
}

/// One block size of `kvxfer bench --sweep-block`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvSweepRow {
    pub block_bytes: u64,
    /// Blocks per request.
    pub batch: u32,
    pub requests: u64,
    pub failed: u64,
    pub concurrency: u32,
    pub bandwidth_gbyte_s: f64,
    pub bandwidth_gbps: f64,
    pub blocks_per_s: f64,
    /// Per request (first pull to last byte in place).
    pub latency_us: SweepLatency,
    /// The request's latency over its blocks.
    pub per_block_mean_us: f64,
}

/// `kvxfer bench --sweep-block --json`: one row per block size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvSweep {
    pub num_prompts: u64,
    pub batch: u32,
    pub checksums: bool,
    pub verified: bool,
    pub sweep: Vec<KvSweepRow>,
    /// The first error of each size that had one.
    pub errors: Vec<String>,
}

/// One check of netcheck, as a reader needs it (the document has its fix and detail too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub id: String,
    /// pass, info, skip, warn or fail.
    pub status: String,
    pub summary: String,
}

/// `netcheck --json` on one node (test "local"): the checks and the exit code they give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetcheckLocal {
    pub host: String,
    pub checks: Vec<CheckRow>,
    pub exit_code: u8,
}

/// `netcheck --cluster --json`: rank 0 has the matrix and the findings; every other rank
/// its verdict and exit code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetcheckCluster {
    /// Ranks other than 0 write their rank and rank 0's verdict in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    pub world: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    pub exit_code: u8,
    /// Rank 0: the median pair bandwidth, Gbit/s.
    #[serde(default)]
    pub median_gbps: Option<f64>,
    /// Rank 0: nodes slow in the matrix and again in the second pass.
    #[serde(default)]
    pub slow_nodes: Vec<usize>,
}

/// One batch of `collbench synthetic-step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticStepRow {
    pub batch: u64,
    /// Micro-batches in flight.
    pub micro_batches: usize,
    /// Tokens per micro-batch.
    pub micro_batch: u64,
    pub allreduce_bytes: u64,
    /// Hidden states + residual handed to the next stage per micro-batch (all TP ranks).
    pub handover_bytes: u64,
    /// Scheduler output per micro-batch, to each rank of a later stage.
    pub control_bytes: u64,
    /// Sampled token ids back to the driver per micro-batch.
    pub token_bytes: u64,
    /// Mean time per step (rank 0, between completed rounds), milliseconds.
    pub step_ms: f64,
    /// Of which inside the TP all-reduces, mean over the ranks, milliseconds.
    pub comm_ms: f64,
}

/// `collbench synthetic-step --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticStep {
    /// The TP collective (all_reduce), its backend and dtype.
    pub op: String,
    pub backend: String,
    pub dtype: Dtype,
    pub world: usize,
    pub tp: usize,
    pub pp: usize,
    pub layers: u64,
    pub hidden: u64,
    /// Stand-in compute per layer, microseconds.
    pub compute_us: f64,
    pub steps: usize,
    pub warmup: usize,
    pub rows: Vec<SyntheticStepRow>,
    /// With one batch size, its figures also at the top level (for scripts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_ms: Option<f64>,
}

/// One batch of `collbench model`: the model's own messages, measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMessagesRow {
    pub batch: u64,
    pub tokens: u64,
    /// TP: all-reduces per forward step (2 per layer), their size and measured time.
    pub allreduces_per_step: u64,
    pub allreduce_bytes: u64,
    pub allreduce_us: f64,
    pub tp_comm_ms_per_step: f64,
    pub tp_comm_ms_per_token: f64,
    /// PP: one activation hop per stage boundary per step.
    pub pp_boundaries: u64,
    pub pp_send_us: f64,
    pub pp_comm_ms_per_step: f64,
}

/// `collbench model --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectiveModel {
    pub model: String,
    pub tp: usize,
    pub pp: usize,
    /// decode or prefill.
    pub phase: String,
    pub world: usize,
    pub backend: String,
    pub dtype: Dtype,
    pub rows: Vec<ModelMessagesRow>,
}

/// One plan's figures in `explain --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFigures {
    pub name: String,
    pub gpus: u64,
    pub tpot_ms: f64,
    pub ttft_ms: f64,
    pub output_tok_s: f64,
    pub req_s: f64,
    pub saturated: bool,
}

/// `explain --json` (test "plans"): the plans priced and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainPlans {
    pub model: String,
    pub gpu: String,
    pub plans: Vec<PlanFigures>,
    pub verdict: String,
}

/// Where a predicted step's time goes, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepBreakdown {
    pub compute: f64,
    pub tp_comm: f64,
    pub pp_comm: f64,
    pub bubble: f64,
    pub control: f64,
}

/// A link as explain priced it: one hop's latency, the rate, and where both came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkUsed {
    pub name: String,
    pub alpha_us: f64,
    /// GB/s (1e9 B/s) per direction.
    pub gbs: f64,
    pub source: String,
}

/// `explain predict-step --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainStep {
    pub predicted_step_ms: f64,
    pub breakdown_ms: StepBreakdown,
    /// One TP all-reduce of a micro-batch's activations, and its size.
    pub all_reduce_us: f64,
    pub all_reduce_bytes: f64,
    /// Hidden states + residual handed to the next stage per micro-batch.
    pub handover_bytes: f64,
    pub layers: u64,
    pub hidden: u64,
    pub batch: u64,
    pub compute_us: f64,
    pub world: u64,
    pub pp: u64,
    pub micro_batches: u64,
    /// The TP link (none with one rank per stage) and the stage-to-stage link.
    pub link: Option<LinkUsed>,
    pub pp_link: Option<LinkUsed>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_the_envelope_then_the_body_and_reads_back_by_it() {
        let sweep = CollectiveSweep {
            op: "all_reduce".into(),
            backend: "tcp".into(),
            world: 4,
            dtype: Dtype::Fp32,
            redop: Some(RedOp::Sum),
            rows: vec![],
            avg_busbw_gbs: 1.5,
            wrong: 0,
        };
        let doc = document("collbench", "sweep", &sweep).unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(&keys[..3], ["tool", "version", "test"]);
        let text = doc.to_string();
        assert_eq!(
            Record::from_json(&text).unwrap(),
            Record::CollectiveSweep(sweep)
        );
        // A body cannot overwrite its envelope.
        let doc = document("kvxfer", "bench", &serde_json::json!({"tool": "x"})).unwrap();
        assert_eq!(doc["tool"], "kvxfer");
    }

    #[test]
    fn a_file_without_the_envelope_or_with_a_broken_body_is_refused_by_name() {
        let error = Record::from_json(r#"{"throughput_gbps": 9.0}"#).unwrap_err();
        assert!(matches!(error, RecordError::NoEnvelope(_)), "{error}");
        let error = Record::from_json(
            r#"{"tool":"linkbench","version":"0.1.0","test":"compare","peer":"x"}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("linkbench compare record")
                && error.to_string().contains("tcp"),
            "{error}"
        );
        // explain's plans have a record type: a body without its fields is refused.
        assert!(
            Record::from_json(r#"{"tool":"explain","version":"0.1.0","test":"plans"}"#)
                .unwrap_err()
                .to_string()
                .contains("explain plans record")
        );
        // A test this version does not know reads as its envelope alone.
        assert!(matches!(
            Record::from_json(r#"{"tool":"explain","version":"9.0.0","test":"later"}"#).unwrap(),
            Record::Other(_)
        ));
    }

    /// Where the record is what the tool writes (not a reader's view of a larger
    /// document), writing and reading back gives the same value, "inf" rates included.
    #[test]
    fn the_records_tools_write_read_back_unchanged() {
        fn round_trip<T: Serialize>(tool: &str, test: &str, record: &T) -> Record {
            let text = document(tool, test, record).unwrap().to_string();
            Record::from_json(&text).unwrap()
        }
        let model = CollectiveModel {
            model: "llama-3.1-8b".into(),
            tp: 2,
            pp: 1,
            phase: "decode".into(),
            world: 2,
            backend: "tcp".into(),
            dtype: Dtype::Bf16,
            rows: vec![],
        };
        assert_eq!(
            round_trip("collbench", "model", &model),
            Record::CollectiveModel(model)
        );
        let step = SyntheticStep {
            op: "all_reduce".into(),
            backend: "tcp".into(),
            dtype: Dtype::Bf16,
            world: 2,
            tp: 1,
            pp: 2,
            layers: 8,
            hidden: 4096,
            compute_us: 200.0,
            steps: 20,
            warmup: 5,
            rows: vec![],
            batch: Some(8),
            micro_batches: Some(2),
            step_ms: Some(3.5),
            comm_ms: Some(0.0),
        };
        assert_eq!(
            round_trip("collbench", "synthetic-step", &step),
            Record::SyntheticStep(step)
        );
        let compare = LinkCompare {
            peer: "10.0.0.2:5201".into(),
            tcp: CompareTcp {
                msg_size: 1 << 20,
                throughput_gbps: 20.0,
                lat_msg_size: 2,
                latency_us: LatencySummary {
                    min: 20.0,
                    mean: 25.0,
                    p50: 24.0,
                    p90: 30.0,
                    p99: 40.0,
                    p999: 60.0,
                    max: 90.0,
                    stdev: 3.0,
                    samples: 1000,
                },
            },
            rdma: CompareRdma {
                available: false,
                reason: Some("no RDMA device".into()),
                device: None,
                op: None,
                throughput_gbps: None,
                latency_us: None,
            },
            ratio: CompareRatio {
                throughput: None,
                latency_p50: None,
            },
        };
        assert_eq!(
            round_trip("linkbench", "compare", &compare),
            Record::LinkCompare(compare)
        );
        let rate = |text: &str| {
            let json = format!(
                r#"{{"tool":"kvxfer","version":"0","test":"bench","request_rate":{text}}}"#
            );
            Record::from_json(&json).unwrap_err().to_string()
        };
        // A bench record without its fields is refused; a rate that is a word other than
        // "inf" names itself.
        assert!(rate("\"fast\"").contains("kvxfer bench record"));
    }

    #[test]
    fn a_linkbench_bw_record_is_one_size_or_a_sweep() {
        let one = r#"{"tool":"linkbench","version":"0.1.0","test":"bw","peer":"h:5201",
            "transport":"tcp","streams":1,"msg_size":1048576,"seconds":1.0,"bytes":100,
            "throughput_gbps":9.5,"rtt_us":40.0}"#;
        let Record::LinkBw(bw) = Record::from_json(one).unwrap() else {
            panic!("not a bw record")
        };
        assert!(bw.one.is_some() && bw.sweep.is_empty());
        assert_eq!(bw.best_gbps(), Some(9.5));
        let sweep = r#"{"tool":"linkbench","version":"0.1.0","test":"bw","peer":"h:5201",
            "transport":"tcp","sweep":[
            {"transport":"tcp","streams":1,"msg_size":2,"seconds":1.0,"bytes":1,"throughput_gbps":0.1,"rtt_us":null},
            {"transport":"tcp","streams":1,"msg_size":4096,"seconds":1.0,"bytes":1,"throughput_gbps":3.0,"rtt_us":null}]}"#;
        let Record::LinkBw(bw) = Record::from_json(sweep).unwrap() else {
            panic!("not a bw record")
        };
        assert!(bw.one.is_none());
        assert_eq!(bw.best_gbps(), Some(3.0));
    }
}
