//! The cost model behind `explain`: per decode step and per prefill, compute (HBM bytes or
//! FLOPs, whichever is slower), TP all-reduces, PP activation sends, the pipeline bubble
//! and the P/D KV transfer, from a model, a GPU, a plan and two priced links. Pure.
//! The formulas and their assumptions are written out in the README (`explain` section).

use crate::{GpuSpec, LinkModel, ModelError, ModelShape, Plan};
use serde::Serialize;

/// What the users run: prompt and output lengths and either a fixed concurrency or a rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    pub input_len: u64,
    pub output_len: u64,
    /// Requests in flight over the whole deployment (closed loop).
    pub concurrency: f64,
    /// Open loop: requests per second; concurrency then follows from Little's law.
    pub qps: Option<f64>,
}

/// Efficiencies the model applies to datasheet peaks (stated in every report).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assumptions {
    /// Share of HBM bandwidth decode kernels reach.
    pub hbm_efficiency: f64,
    /// Share of dense bf16 peak prefill and decode matmuls reach.
    pub flops_efficiency: f64,
    /// Share of GPU memory for weights + KV (vLLM's gpu_memory_utilization).
    pub memory_utilization: f64,
    /// Fixed cost of one forward pass on one stage (launches, syncs, sampling), us.
    pub step_overhead_us: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            hbm_efficiency: 0.8,
            flops_efficiency: 0.5,
            memory_utilization: 0.9,
            step_overhead_us: 300.0,
        }
    }
}

/// Milliseconds: all but `kv_transfer` are per output token (they sum to TPOT);
/// `kv_transfer` is per request (part of TTFT).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Breakdown {
    pub compute: f64,
    pub tp_comm: f64,
    pub pp_comm: f64,
    pub bubble: f64,
    pub kv_transfer: f64,
    /// Fixed per-forward-pass cost, once per stage a token passes.
    pub overhead: f64,
    /// Cross-node control per step: the driver's broadcast of the scheduler output to
    /// the remote workers (on the critical path only where TP spans nodes) and the
    /// sampled tokens coming back.
    pub control: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub name: String,
    pub gpus: u64,
    pub tpot_ms: f64,
    pub ttft_ms: f64,
    pub output_tok_s: f64,
    pub req_s: f64,
    pub breakdown_ms: Breakdown,
    /// Prefill of one prompt, milliseconds (TTFT less the KV transfer).
    pub prefill_ms: f64,
    /// Requests in flight per replica, and the micro-batches the pipeline splits them into.
    pub concurrency_per_replica: f64,
    pub micro_batches: f64,
    /// Facts the verdict names.
    pub tp_link: String,
    pub pp_link: String,
    pub allreduces_per_step: u64,
    pub pp_sends_across_nodes: u64,
    pub pp_sends_in_node: u64,
    /// Most requests per replica that fit in memory.
    pub max_concurrency_per_replica: f64,
    /// Offered load (`qps`) beyond what the plan can serve: the figures are the
    /// saturated ones, at the most requests that fit.
    pub saturated: bool,
}

struct Costs<'a> {
    model: &'a ModelShape,
    gpu: &'a GpuSpec,
    plan: &'a Plan,
    intra: &'a LinkModel,
    inter: &'a LinkModel,
    a: &'a Assumptions,
}

/// One pass of `tokens` tokens through one pipeline stage, split into its parts (us).
struct Stage {
    compute_us: f64,
    tp_us: f64,
    pp_us: f64,
}

impl Costs<'_> {
    fn kv_split(&self) -> f64 {
        self.plan.tp.min(self.model.kv_heads).max(1) as f64
    }

    fn weights_per_gpu(&self) -> f64 {
        self.model.weight_bytes() / self.plan.replica_gpus() as f64
    }

    /// KV bytes one GPU holds for `requests` requests of `tokens` tokens each.
    fn kv_per_gpu(&self, requests: f64, tokens: f64) -> f64 {
        requests * tokens * self.model.kv_bytes_per_token() as f64
            / self.plan.pp as f64
            / self.kv_split()
    }

    /// `tokens` new tokens on one stage, each attending to `context` tokens
    /// (`causal`: prefill, where the mean context is half the prompt).
    fn stage(&self, tokens: f64, context: f64, read_kv: bool) -> Stage {
        let m = self.model;
        let p = self.plan;
        let stage_layers = m.layers as f64 / p.pp as f64;
        let hbm_bytes = self.weights_per_gpu()
            + if read_kv {
                self.kv_per_gpu(tokens, context)
            } else {
                0.0
            };
        let flops = 2.0 * m.params / p.replica_gpus() as f64 * tokens
            + 4.0 * stage_layers * context * (m.heads * m.head_dim) as f64 / p.tp as f64 * tokens;
        let memory_us = hbm_bytes / (self.gpu.hbm_gbs * self.a.hbm_efficiency * 1e3);
        let math_us = flops / (self.gpu.bf16_tflops * self.a.flops_efficiency * 1e6);
        let message = m.activation_bytes(1) as f64 * tokens;
        // vLLM hands over the hidden states and the residual at each stage boundary.
        let handover = 2.0 * message;
        let tp_link = if p.tp_spans_nodes() {
            self.inter
        } else {
            self.intra
        };
        let (across, inside) = p.pp_boundaries();
        Stage {
            compute_us: memory_us.max(math_us),
            tp_us: 2.0 * stage_layers * tp_link.all_reduce_us(message, p.tp),
            pp_us: across as f64 * self.inter.send_us(handover)
                + inside as f64 * self.intra.send_us(handover),
        }
    }
}

/// Prices `plan` for `model` on `gpu` under `workload`; rejects plans that do not fit.
pub fn estimate(
    model: &ModelShape,
    gpu: &GpuSpec,
    plan: &Plan,
    workload: &Workload,
    intra: &LinkModel,
    inter: &LinkModel,
    a: &Assumptions,
) -> Result<Estimate, ModelError> {
    plan.check_model(model)?;
    if workload.input_len == 0 || workload.output_len == 0 {
        return Err(ModelError::Invalid(format!(
            "{} and {} must be at least 1 token",
            measure::Setting::InputLength,
            measure::Setting::OutputLength
        )));
    }
    let costs = Costs {
        model,
        gpu,
        plan,
        intra,
        inter,
        a,
    };
    let memory = gpu.memory_gib * (1u64 << 30) as f64 * a.memory_utilization;
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let weights = costs.weights_per_gpu();
    if weights >= memory {
        return Err(ModelError::Invalid(format!(
            "{}: {} weights need {:.1} GiB per GPU but a {} offers {:.1} GiB ({:.0} % of {} GiB); use more TP or PP",
            plan.name(), model.name, gib(weights), gpu.name, gib(memory),
            a.memory_utilization * 100.0, gpu.memory_gib
        )));
    }
    let seq = (workload.input_len + workload.output_len) as f64;
    let max_per_replica = (memory - weights) / costs.kv_per_gpu(1.0, seq);
    let price = |per_replica: f64| price(&costs, workload, per_replica);
    let dp = plan.dp as f64;
    let mut saturated = false;
    let per_replica = match workload.qps {
        None => workload.concurrency / dp,
        Some(qps) => {
            // Little's law: in flight = rate x latency, solved by fixed-point iteration.
            let mut c = 1.0f64;
            for _ in 0..100 {
                let e = price(c);
                let latency_s = (e.ttft_ms + (workload.output_len - 1) as f64 * e.tpot_ms) / 1e3;
                c = (qps / dp * latency_s).clamp(1.0, max_per_replica.max(1.0));
            }
            // At the memory limit the plan serves at most its saturated rate: more offered
            // load only queues (TTFT grows without bound in practice).
            let at_limit = price(max_per_replica.max(1.0));
            saturated = qps > at_limit.req_s * 1.0001 && c >= max_per_replica.max(1.0) * 0.999;
            c
        }
    };
    if per_replica > max_per_replica {
        return Err(ModelError::Invalid(format!(
            "{}: {:.0} requests per replica of {} tokens need {:.1} GiB of KV per GPU but only {:.1} GiB is left after the weights; lower {} to {:.0} or use more GPUs",
            plan.name(), per_replica, seq, gib(costs.kv_per_gpu(per_replica, seq)),
            gib(memory - weights), measure::Setting::Concurrency, (max_per_replica * dp).floor()
        )));
    }
    let mut e = price(per_replica.max(1.0));
    e.max_concurrency_per_replica = max_per_replica;
    e.saturated = saturated;
    Ok(e)
}

/// One decode round of a pipeline run as vLLM's batch queue runs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub round_us: f64,
    /// Time one stage works per round (micro-batches x stage time).
    pub busy_us: f64,
    /// Time a stage idles per round beyond the handovers and the control.
    pub bubble_us: f64,
}

/// `micro_batches` micro-batches, each passing `pp` stages of `stage_us`, with
/// `handover_us` summed over the stage boundaries and `control_us` on its critical path.
/// A micro-batch's next step waits for its own pass, so the round is the longer of that
/// pass and the work one stage does per round.
pub fn pipeline_round(
    stage_us: f64,
    micro_batches: f64,
    pp: f64,
    handover_us: f64,
    control_us: f64,
) -> Round {
    let busy_us = micro_batches * stage_us;
    let pass_us = pp * stage_us + handover_us + control_us;
    if busy_us >= pass_us {
        return Round {
            round_us: busy_us,
            busy_us,
            bubble_us: 0.0,
        };
    }
    Round {
        round_us: pass_us,
        busy_us,
        // Each stage idles while the other stages work on its micro-batches' passes.
        bubble_us: (pp - micro_batches).max(0.0) * stage_us,
    }
}

/// Scheduler output per micro-batch: about 1 KiB plus 64 B per request.
pub fn control_bytes(requests: f64) -> f64 {
    1024.0 + 64.0 * requests
}

/// The driver's per-step control on a micro-batch's critical path: the scheduler output
/// out (`out_us`) and the sampled token ids back (`back_us`). Remote TP workers wait for
/// the output before they start; later PP stages receive it while the first stage
/// computes (`first_stage_us`), so only what outlasts that counts there.
pub fn control_on_path(
    out_us: f64,
    back_us: f64,
    first_stage_us: f64,
    tp_spans_nodes: bool,
) -> f64 {
    let out = if tp_spans_nodes {
        out_us
    } else {
        (out_us - first_stage_us).max(0.0)
    };
    out + back_us
}

fn price(costs: &Costs, w: &Workload, per_replica: f64) -> Estimate {
    let plan = costs.plan;
    let pp = plan.pp as f64;
    // Decode: b requests per replica in k micro-batches of m tokens.
    let b = per_replica.max(1.0);
    let k = pp.min(b.ceil());
    let m = b / k;
    let context = w.input_len as f64 + w.output_len as f64 / 2.0;
    let s = costs.stage(m, context, true);
    let o = costs.a.step_overhead_us;
    let stage_us = s.compute_us + s.tp_us + o;
    // A replica over several nodes pays, per micro-batch, the driver's broadcast of the
    // scheduler output and the sampled token ids coming back over the inter-node link.
    let (across, _) = plan.pp_boundaries();
    let control_us = if plan.tp_spans_nodes() || across > 0 {
        control_on_path(
            costs.inter.send_us(control_bytes(m)),
            costs.inter.send_us(8.0 * m),
            stage_us,
            plan.tp_spans_nodes(),
        )
    } else {
        0.0
    };
    let r = pipeline_round(stage_us, k, pp, s.pp_us, control_us);
    let round = r.round_us;
    let mut breakdown = Breakdown {
        compute: k * s.compute_us / 1e3,
        tp_comm: k * s.tp_us / 1e3,
        pp_comm: s.pp_us / 1e3,
        bubble: r.bubble_us / 1e3,
        kv_transfer: 0.0,
        overhead: k * o / 1e3,
        control: control_us / 1e3,
    };
    // Prefill: one prompt through every stage in turn; mean causal context is half of it.
    let t = w.input_len as f64;
    let p = costs.stage(t, t / 2.0, false);
    let prefill_ms = (pp * (p.compute_us + p.tp_us + o) + p.pp_us) / 1e3;
    if plan.pd {
        let kv = t * costs.model.kv_bytes_per_token() as f64;
        breakdown.kv_transfer = costs.inter.send_us(kv) / 1e3;
    }
    let tpot_ms = round / 1e3;
    let ttft_ms = prefill_ms + breakdown.kv_transfer;
    let latency_s = (ttft_ms + (w.output_len - 1) as f64 * tpot_ms) / 1e3;
    let req_s = plan.dp as f64 * b / latency_s;
    let (across, inside) = plan.pp_boundaries();
    Estimate {
        name: plan.name(),
        gpus: plan.gpus(),
        tpot_ms,
        ttft_ms,
        output_tok_s: req_s * w.output_len as f64,
        req_s,
        breakdown_ms: breakdown,
        prefill_ms,
        concurrency_per_replica: b,
        micro_batches: k,
        tp_link: if plan.tp <= 1 {
            "none".into()
        } else if plan.tp_spans_nodes() {
            costs.inter.name.clone()
        } else {
            costs.intra.name.clone()
        },
        pp_link: if across > 0 {
            costs.inter.name.clone()
        } else if inside > 0 {
            costs.intra.name.clone()
        } else {
            "none".into()
        },
        allreduces_per_step: if plan.tp > 1 {
            costs.model.tp_allreduces_per_step()
        } else {
            0
        },
        pp_sends_across_nodes: across,
        pp_sends_in_node: inside,
        max_concurrency_per_replica: 0.0,
        saturated: false,
    }
}

/// Plain words for why `b` differs from `a`, largest contribution first.
pub fn verdict(a: &Estimate, b: &Estimate, concurrency: f64) -> String {
    let pct = (b.tpot_ms / a.tpot_ms - 1.0) * 100.0;
    let (da, db) = (&a.breakdown_ms, &b.breakdown_ms);
    let mut parts: Vec<(f64, String)> = vec![
        (
            db.compute - da.compute,
            "compute (HBM reads and matmuls per GPU)".to_string(),
        ),
        (
            db.tp_comm - da.tp_comm,
            format!(
                "TP all-reduces ({} per step over {} vs {} over {})",
                b.allreduces_per_step, b.tp_link, a.allreduces_per_step, a.tp_link
            ),
        ),
        (
            db.pp_comm - da.pp_comm,
            format!(
                "{} activation send(s) per step across nodes over {}{}",
                b.pp_sends_across_nodes,
                b.pp_link,
                if b.pp_sends_in_node > 0 {
                    format!(" and {} inside a node", b.pp_sends_in_node)
                } else {
                    String::new()
                }
            ),
        ),
        (
            db.overhead - da.overhead,
            "fixed per-stage forward-pass overhead (launches, syncs, sampling)".to_string(),
        ),
        (
            db.control - da.control,
            "cross-node control per step (scheduler output out, sampled tokens back)".to_string(),
        ),
        (
            db.bubble - da.bubble,
            format!(
                "pipeline bubble at concurrency {concurrency:.0} ({:.0} micro-batch(es) for {} stages)",
                b.micro_batches,
                b.name.split(" over").next().unwrap_or(&b.name)
            ),
        ),
    ];
    parts.retain(|(ms, _)| ms.abs() >= 0.005);
    parts.sort_by(|x, y| y.0.abs().total_cmp(&x.0.abs()));
    let reasons: Vec<String> = parts
        .iter()
        .map(|(ms, what)| format!("{ms:+.2} ms from {what}"))
        .collect();
    let speed = if pct >= 0.0 { "slower" } else { "faster" };
    let mut text = format!(
        "{} is {:.1} % {speed} per token than {} ({:.2} vs {:.2} ms TPOT)",
        b.name,
        pct.abs(),
        a.name,
        b.tpot_ms,
        a.tpot_ms
    );
    if !reasons.is_empty() {
        text.push_str(": ");
        text.push_str(&reasons.join(", "));
    }
    let dkv = db.kv_transfer - da.kv_transfer;
    if dkv.abs() >= 0.005 {
        text.push_str(&format!(
            "; TTFT {dkv:+.1} ms from moving each prompt's KV cache"
        ));
    }
    text.push_str(&format!(
        "; {:.2} vs {:.2} req/s on {} vs {} GPUs.",
        b.req_s, a.req_s, b.gpus, a.gpus
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{configs_dir, find_gpu, find_model, INTER_PROFILES, INTRA_PROFILES};

    fn toy_model() -> ModelShape {
        ModelShape {
            name: "toy".into(),
            aliases: vec![],
            layers: 2,
            hidden: 1000,
            heads: 4,
            kv_heads: 4,
            head_dim: 250,
            intermediate: 0,
            vocab: 0,
            dtype: measure::Dtype::Bf16,
            params: 1e9,
        }
    }

    fn toy_gpu() -> GpuSpec {
        GpuSpec {
            name: "toy".into(),
            aliases: vec![],
            hbm_gbs: 1000.0,
            bf16_tflops: 100.0,
            memory_gib: 80.0,
            intra_link: "x".into(),
            intra_link_gbs: 100.0,
        }
    }

    const IDEAL: Assumptions = Assumptions {
        hbm_efficiency: 1.0,
        flops_efficiency: 1.0,
        memory_utilization: 1.0,
        step_overhead_us: 0.0,
    };

    /// The toy model on the toy GPU under ideal assumptions.
    fn toy_estimate(
        plan: &Plan,
        concurrency: f64,
        intra: &LinkModel,
        inter: &LinkModel,
    ) -> Estimate {
        estimate(
            &toy_model(),
            &toy_gpu(),
            plan,
            &work(concurrency),
            intra,
            inter,
            &IDEAL,
        )
        .unwrap()
    }

    fn work(concurrency: f64) -> Workload {
        Workload {
            input_len: 100,
            output_len: 101,
            concurrency,
            qps: None,
        }
    }

    #[test]
    fn single_gpu_decode_is_weights_over_hbm() {
        // 2e9 weight bytes / 1000 GB/s = 2 ms; KV: 1 token x 150.5 context x 4000 B = 0.6 us.
        let plan = Plan::parse("tp1", 8).unwrap();
        let link = LinkModel::new("l", 100.0, 1.0);
        let e = toy_estimate(&plan, 1.0, &link, &link);
        let kv = 150.5 * 8000.0 / 1e6; // 8,000 KV B/token; us at 1000 GB/s = 1e6 B/us
        assert!((e.tpot_ms - (2.0 + kv / 1e3)).abs() < 1e-9, "{}", e.tpot_ms);
        assert_eq!(e.breakdown_ms.tp_comm, 0.0);
        // Prefill of 100 tokens: 2e11 FLOPs + attention 4 x 2 x 50 x 1000 x 100 = 4e7;
        // at 100 TFLOP/s = 2.0004 ms, above the 2 ms weight read.
        assert!((e.prefill_ms - 2.0004).abs() < 1e-9, "{}", e.prefill_ms);
        // Closed loop: 1 request / (TTFT + 100 x TPOT).
        let expect = 1.0 / ((e.ttft_ms + 100.0 * e.tpot_ms) / 1e3);
        assert!((e.req_s - expect).abs() < 1e-9);
    }

    #[test]
    fn tp_adds_two_ring_all_reduces_per_layer() {
        // TP2, 1 token: message 2,000 B; ring of 2: 2 x 1 us + 1 x 2000 B / 1e5 B/us = 2.02 us;
        // 2 layers x 2 = 4 all-reduces = 80.8 us.
        let plan = Plan::parse("tp2", 8).unwrap();
        let link = LinkModel::new("l", 100.0, 1.0);
        let e = toy_estimate(&plan, 1.0, &link, &link);
        assert!(
            (e.breakdown_ms.tp_comm - 0.00808).abs() < 1e-12,
            "{:?}",
            e.breakdown_ms
        );
        assert!((e.breakdown_ms.compute - (1.0 + 150.5 * 4000.0 / 1e6 / 1e3)).abs() < 1e-9);
    }

    #[test]
    fn control_and_pipeline_rounds_follow_the_batch_queue() {
        // TP across nodes waits for the scheduler output: the whole round trip counts.
        assert_eq!(control_on_path(30.0, 10.0, 500.0, true), 40.0);
        // Later PP stages get it while stage 1 computes; only what outlasts that counts.
        assert_eq!(control_on_path(30.0, 10.0, 500.0, false), 10.0);
        assert_eq!(control_on_path(530.0, 10.0, 500.0, false), 40.0);
        // PP2, one micro-batch: the round is the pass; the other stage idles one stage.
        let r = pipeline_round(100.0, 1.0, 2.0, 20.0, 10.0);
        assert_eq!((r.round_us, r.busy_us, r.bubble_us), (230.0, 100.0, 100.0));
        // Two micro-batches fill both stages.
        let r = pipeline_round(100.0, 2.0, 2.0, 20.0, 10.0);
        assert_eq!((r.round_us, r.bubble_us), (230.0, 0.0));
    }

    #[test]
    fn pp_adds_sends_and_a_bubble_when_micro_batches_run_short() {
        // PP2 over 2 nodes of 1 GPU, concurrency 1: one micro-batch, so each stage waits
        // for the other: bubble = (pp - k) x stage time; one send of hidden states and
        // residual, 2 x 2,000 B, at 1 GB/s + 10 us.
        let plan = Plan::parse("pp2@2x1", 8).unwrap();
        let intra = LinkModel::new("intra", 100.0, 1.0);
        let inter = LinkModel::new("inter", 1.0, 10.0);
        let e = toy_estimate(&plan, 1.0, &intra, &inter);
        assert!(
            (e.breakdown_ms.pp_comm - 0.014).abs() < 1e-12,
            "{:?}",
            e.breakdown_ms
        );
        assert!((e.breakdown_ms.bubble - e.breakdown_ms.compute).abs() < 1e-12);
        // The driver's control: the 1,088 B scheduler output reaches stage 2 while stage 1
        // computes, so only the 8 B of tokens back count (10 us + 8 ns).
        assert!(
            (e.breakdown_ms.control - 0.010008).abs() < 1e-9,
            "{:?}",
            e.breakdown_ms
        );
        let sum = e.breakdown_ms.compute
            + e.breakdown_ms.pp_comm
            + e.breakdown_ms.bubble
            + e.breakdown_ms.control;
        assert!((sum - e.tpot_ms).abs() < 1e-12);
        // Two requests fill both stages: no bubble.
        let e2 = toy_estimate(&plan, 2.0, &intra, &inter);
        assert_eq!(e2.breakdown_ms.bubble, 0.0);
        assert_eq!(e2.micro_batches, 2.0);
    }

    #[test]
    fn pd_adds_the_kv_transfer_to_ttft() {
        // 100 tokens x 2 x 2 layers x 4 heads x 250 x 2 B = 800,000 B at 1 GB/s + 10 us.
        let plan = Plan::parse("pd", 8).unwrap();
        let intra = LinkModel::new("intra", 100.0, 1.0);
        let inter = LinkModel::new("inter", 1.0, 10.0);
        let e = toy_estimate(&plan, 1.0, &intra, &inter);
        assert!((e.breakdown_ms.kv_transfer - 0.81).abs() < 1e-12);
        assert!((e.ttft_ms - e.prefill_ms - 0.81).abs() < 1e-12);
    }

    #[test]
    fn plans_that_do_not_fit_in_memory_are_rejected_with_the_reason() {
        let dir = configs_dir();
        let model = find_model(&dir, "llama-3-70b").unwrap();
        let gpu = find_gpu(&dir, "h100-sxm").unwrap();
        let (intra, inter) = links("tcp-25g");
        let plan = Plan::parse("tp1", 8).unwrap();
        let error = estimate(
            &model,
            &gpu,
            &plan,
            &work(1.0),
            &intra,
            &inter,
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("weights need") && error.contains("more TP"),
            "{error}"
        );
        let plan = Plan::parse("tp4", 8).unwrap();
        let heavy = Workload {
            input_len: 100_000,
            output_len: 1000,
            concurrency: 64.0,
            qps: None,
        };
        let error = estimate(
            &model,
            &gpu,
            &plan,
            &heavy,
            &intra,
            &inter,
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("lower the concurrency setting"), "{error}");
    }

    fn links(inter: &str) -> (LinkModel, LinkModel) {
        (
            LinkModel::named("nvlink4", INTRA_PROFILES, "intra").unwrap(),
            LinkModel::named(inter, INTER_PROFILES, "inter").unwrap(),
        )
    }

    // Published runs (DESIGN.md). Assumed hardware is written next to each.

    #[test]
    fn published_tp4_single_node_beats_tp4_pp2_over_two_nodes_on_ib() {
        // Assumed: Llama-3-70B on H100 SXM, 4 GPUs per node, NVLink 4 inside, IB HDR 200
        // between nodes; ShareGPT-like 220 in / 200 out at concurrency 16.
        // Published: 1.59 req/s on TP4 (1 node) vs 1.32 on TP4xPP2 (2 nodes).
        let dir = configs_dir();
        let model = find_model(&dir, "llama-3-70b").unwrap();
        let gpu = find_gpu(&dir, "h100-sxm").unwrap();
        let (intra, inter) = links("ib-hdr200");
        let w = Workload {
            input_len: 220,
            output_len: 200,
            concurrency: 16.0,
            qps: None,
        };
        let a = Assumptions::default();
        let one = Plan::parse("tp4@1x4", 4).unwrap();
        let two = Plan::parse("tp4,pp2@2x4", 4).unwrap();
        let e1 = estimate(&model, &gpu, &one, &w, &intra, &inter, &a).unwrap();
        let e2 = estimate(&model, &gpu, &two, &w, &intra, &inter, &a).unwrap();
        assert!(e2.req_s < e1.req_s, "{} vs {}", e2.req_s, e1.req_s);
        assert!(e2.tpot_ms > e1.tpot_ms);
        assert!(e2.breakdown_ms.pp_comm > 0.0 && e1.breakdown_ms.pp_comm == 0.0);
        let text = verdict(&e1, &e2, 16.0);
        assert!(
            text.contains("slower") && text.contains("ib-hdr200"),
            "{text}"
        );
    }

    #[test]
    fn published_pd_disaggregation_raises_ttft_over_colocated_dp() {
        // Assumed: Llama-3.1-8B on H100 SXM, 8 GPUs per node, IB NDR 400 between the
        // prefill and decode pods; 2000 in / 2000 out. Published: TTFT 47 ms (DP, c=16)
        // vs 280 ms (P/D, c=32); TPOT about equal (7.31 vs 7.25 ms).
        let dir = configs_dir();
        let model = find_model(&dir, "llama-3.1-8b").unwrap();
        let gpu = find_gpu(&dir, "h100-sxm").unwrap();
        let (intra, inter) = links("ib-ndr400");
        let a = Assumptions::default();
        let w = |c: f64| Workload {
            input_len: 2000,
            output_len: 2000,
            concurrency: c,
            qps: None,
        };
        let dp = Plan::parse("dp16", 8).unwrap();
        let pd = Plan::parse("dp8,pd", 8).unwrap();
        let e_dp = estimate(&model, &gpu, &dp, &w(16.0), &intra, &inter, &a).unwrap();
        let e_pd = estimate(&model, &gpu, &pd, &w(32.0), &intra, &inter, &a).unwrap();
        assert!(e_pd.ttft_ms > e_dp.ttft_ms);
        assert!(e_pd.breakdown_ms.kv_transfer > 0.0);
        // Same order of magnitude TPOT as published (7.3 ms), within a factor of two.
        assert!(
            e_dp.tpot_ms > 3.6 && e_dp.tpot_ms < 14.6,
            "{}",
            e_dp.tpot_ms
        );
    }

    #[test]
    fn published_tp4_pp2_tpot_grows_from_qps_1_to_saturation() {
        // Assumed: Llama-3-70B on H100 SXM, TP4xPP2 over 2 nodes of 4, IB HDR 200;
        // ShareGPT-like 220 in / 200 out. Published: TPOT 44 ms at QPS 1, 78 ms at QPS inf.
        let dir = configs_dir();
        let model = find_model(&dir, "llama-3-70b").unwrap();
        let gpu = find_gpu(&dir, "h100-sxm").unwrap();
        let (intra, inter) = links("ib-hdr200");
        let plan = Plan::parse("tp4,pp2@2x4", 4).unwrap();
        let a = Assumptions::default();
        let w = |qps: Option<f64>, c: f64| Workload {
            input_len: 220,
            output_len: 200,
            concurrency: c,
            qps,
        };
        let low = estimate(&model, &gpu, &plan, &w(Some(1.0), 1.0), &intra, &inter, &a).unwrap();
        let high = estimate(&model, &gpu, &plan, &w(None, 200.0), &intra, &inter, &a).unwrap();
        assert!(
            high.tpot_ms > low.tpot_ms,
            "{} vs {}",
            high.tpot_ms,
            low.tpot_ms
        );
        assert!(high.output_tok_s > low.output_tok_s);
    }
}
