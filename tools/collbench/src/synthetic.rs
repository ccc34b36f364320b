//! `collbench synthetic-step`: a decode step without a GPU, shaped like vLLM's. Ranks form `--pp`
//! stages of `--tp` ranks (stage = rank / tp). A step's batch is split into
//! `--micro-batches` micro-batches that move through the stages as a pipeline: per stage and
//! micro-batch, layers/pp x (a busy spin of --compute-us, then the two TP all-reduces of
//! tokens x hidden bf16 inside the stage), then the hidden states and the residual
//! (2 x tokens x hidden bf16, each TP rank its 1/tp share) to the next stage. Rank 0 is also
//! the driver: when it schedules a micro-batch it sends the scheduler output to every rank
//! of the later stages, and the last stage sends the sampled tokens back; a micro-batch's
//! next step starts when its tokens are back (vLLM's batch queue keeps at most pp in
//! flight). The step time is rank 0's time between completed rounds. `explain
//! predict-step` must predict it from sweeps on the same links: that validates the model.

use crate::flags::Args;
use crate::{on_ranks, Job};
use anyhow::Context;
use collective::{ops, CollError, Communicator, Dtype, RedOp, Schedule};
use measure::record::SyntheticStepRow as StepRow;
use std::time::{Duration, Instant};

/// The last part of a compute wait is spun, so a late timer wake-up cannot lengthen it.
const SPIN_TAIL: Duration = Duration::from_micros(80);

/// Waits `duration` the way a GPU kernel does: without the host CPU, which belongs to the
/// communication threads (on a small host, a spinning stand-in per rank would starve the
/// other stage's all-reduces, which no GPU node does). Sleeps, then yields the core
/// between checks for the tail.
fn compute(duration: Duration) {
    let end = Instant::now() + duration;
    if let Some(sleep) = duration.checked_sub(SPIN_TAIL) {
        std::thread::sleep(sleep);
    }
    while Instant::now() < end {
        std::thread::yield_now();
    }
}

/// Asks for exact sleeps on this thread (Linux rounds them up by 50 us by default).
fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Where this rank sits in the TP x PP layout, and the job's shape.
#[derive(Debug, Clone, Copy)]
struct Layout {
    tp: usize,
    pp: usize,
    micro_batches: usize,
    rank: usize,
}

impl Layout {
    fn stage(&self) -> usize {
        self.rank / self.tp
    }
    fn lane(&self) -> usize {
        self.rank % self.tp
    }
    fn last_stage(&self) -> bool {
        self.stage() + 1 == self.pp
    }
}

/// Resolves --tp, --pp and --micro-batches against the job's world.
fn layout_of(args: &Args, world: usize) -> anyhow::Result<(usize, usize)> {
    let pp = args.pp.unwrap_or(1);
    if pp == 0 || args.tp == Some(0) {
        return Err(cli::usage("--tp and --pp must be at least 1"));
    }
    let tp = args.tp.unwrap_or(world / pp);
    if tp * pp != world {
        return Err(cli::usage(match args.tp {
            Some(tp) => format!(
                "synthetic-step with --tp {tp} x --pp {pp} needs {} ranks; this job has {world}",
                tp * pp
            ),
            None => format!(
                "--pp {pp} splits the job's {world} ranks into equal stages; run a multiple of {pp} ranks"
            ),
        }));
    }
    if !args.layers.is_multiple_of(pp as u64) {
        return Err(cli::usage(format!(
            "--layers {} cannot be split into --pp {pp} equal stages; pass a multiple of {pp}",
            args.layers
        )));
    }
    if let Some(k) = args.micro_batches.filter(|&k| k == 0 || k > pp) {
        return Err(cli::usage(format!(
            "--micro-batches {k}: vLLM keeps 1 to --pp ({pp}) micro-batches in flight"
        )));
    }
    for &b in &args.batch {
        let k = micro_batches_for(args, pp, b);
        if !b.is_multiple_of(k as u64) {
            return Err(cli::usage(format!(
                "--batch {b} does not split into {k} equal micro-batches; pass a multiple of {k} (or --micro-batches)"
            )));
        }
    }
    Ok((tp, pp))
}

/// Micro-batches for one batch size: --micro-batches, else as vLLM, min(pp, batch).
fn micro_batches_for(args: &Args, pp: usize, batch: u64) -> usize {
    args.micro_batches
        .unwrap_or_else(|| pp.min(batch.try_into().unwrap_or(usize::MAX)))
}

fn world_of(job: &Job) -> usize {
    job.boot
        .as_ref()
        .map_or(job.local_ranks.unwrap_or(1), |b| b.world)
}

/// Waits for `buffer.len()` bytes from a pipeline peer. It blocks: a GPU waiting for the
/// previous stage costs its host nothing, so neither may the stand-in (a polling wait
/// would take a core from the sends and the other stage on a small host).
fn receive(
    stream: &mut Option<std::net::TcpStream>,
    peer: usize,
    buffer: &mut [u8],
) -> Result<(), CollError> {
    use std::io::Read;
    let Some(stream) = stream.as_mut() else {
        return Err(CollError::Invalid(format!(
            "no pipeline connection to rank {peer}"
        )));
    };
    stream
        .read_exact(buffer)
        .map_err(|e| CollError::RankFailed {
            rank: peer,
            reason: match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                    "timed out: rank {peer} sent no pipeline data within --timeout: is it stuck?"
                ),
                _ => format!("rank {peer} stopped mid-step ({e}): did it die?"),
            },
        })
}

/// A zeroed, 8-byte-aligned buffer of `bytes` (the engine's alignment).
fn buffer(bytes: usize) -> Vec<u64> {
    vec![0u64; bytes.div_ceil(8).max(1)]
}

/// Everything one rank sends and receives for one batch size, built before the timed
/// loop. Pipeline sends go through the rank's proxy thread (see [`Proxy`]).
struct Plan {
    all_reduce: Schedule,
    allreduce_bytes: usize,
    handover_from: Option<usize>,
    handover_to: Option<usize>,
    handover_share: usize,
    control_to: std::ops::Range<usize>,
    control_from: Option<usize>,
    control: usize,
    tokens_to: Option<usize>,
    tokens_from: Option<usize>,
    tokens: usize,
}

impl Plan {
    /// The ranks this rank exchanges pipeline messages with.
    fn pipeline_peers(&self) -> impl Iterator<Item = usize> + '_ {
        self.handover_to
            .into_iter()
            .chain(self.control_to.clone())
            .chain(self.tokens_to)
            .chain(self.handover_from)
            .chain(self.control_from)
            .chain(self.tokens_from)
    }
}

/// A rank's sender thread, as NCCL's proxy thread: the rank hands it (peer, bytes) and goes
/// on computing while it writes them, in order, to the peer's connection; the GPU stream
/// is not held up by the socket. The queue is bounded (a few messages, as NCCL's slots)
/// and preallocated, and the bytes come from one zeroed buffer: no allocation per message.
struct Proxy {
    queue: std::sync::mpsc::SyncSender<(usize, usize)>,
}

const PROXY_SLOTS: usize = 8;

impl Proxy {
    fn send(&self, peer: usize, bytes: usize) -> Result<(), collective::CollError> {
        self.queue.send((peer, bytes)).map_err(|_| {
            collective::CollError::PeerGone(
                "the proxy thread stopped (its send failed; see the error that follows)".into(),
            )
        })
    }
}

/// The proxy's loop: writes each queued message to its peer until the queue closes.
fn proxy_loop(
    mut streams: Vec<Option<std::net::TcpStream>>,
    queue: std::sync::mpsc::Receiver<(usize, usize)>,
    largest: usize,
) -> Result<(), collective::CollError> {
    use std::io::Write;
    let zeros = vec![0u8; largest];
    for (peer, bytes) in queue {
        let stream = streams
            .get_mut(peer)
            .and_then(Option::as_mut)
            .ok_or_else(|| {
                collective::CollError::Invalid(format!("no proxy connection to rank {peer}"))
            })?;
        stream
            .write_all(&zeros[..bytes])
            .map_err(|e| collective::CollError::RankFailed {
                rank: peer,
                reason: format!(
                    "rank {peer} stopped taking pipeline data ({e}): did it die, or is its link down?"
                ),
            })?;
    }
    Ok(())
}

fn plan(
    comm: &Communicator,
    at: Layout,
    tokens: u64,
    hidden: u64,
) -> Result<Plan, collective::CollError> {
    let all_reduce_op = ops::by_name("all_reduce")
        .ok_or_else(|| collective::CollError::Invalid("no all_reduce descriptor".into()))?;
    let stage = at.stage();
    let group: Vec<usize> = (stage * at.tp..(stage + 1) * at.tp).collect();
    let count = (tokens * hidden) as usize;
    let all_reduce = collective::plan_group(all_reduce_op, comm, &group, count, Dtype::Bf16)?;
    // Hidden states and residual; each TP rank sends its share to the same lane next stage.
    let handover = 2 * count * Dtype::Bf16.size();
    let handover_share = collective::chunk(handover, at.tp, at.lane()).len();
    // The scheduler output, sized as `explain` prices it.
    let control = model::control_bytes(tokens as f64) as usize;
    let token_bytes = 8 * tokens as usize;
    let last_first = (at.pp - 1) * at.tp;
    let driver = at.rank == 0 && at.pp > 1;
    Ok(Plan {
        all_reduce,
        allreduce_bytes: count * Dtype::Bf16.size(),
        handover_from: (stage > 0).then(|| at.rank - at.tp),
        handover_to: (!at.last_stage()).then_some(at.rank + at.tp),
        handover_share,
        control_to: if driver { at.tp..comm.world } else { 0..0 },
        control_from: (stage > 0).then_some(0),
        control,
        tokens_to: (at.pp > 1 && at.last_stage() && at.lane() == 0).then_some(0),
        tokens_from: driver.then_some(last_first),
        tokens: token_bytes,
    })
}

pub fn run(args: &Args, job: &Job) -> anyhow::Result<u8> {
    if args.layers == 0 || args.hidden == 0 {
        return Err(cli::usage(
            "synthetic-step needs --layers and --hidden of at least 1",
        ));
    }
    if !args.compute_us.is_finite() || args.compute_us < 0.0 {
        return Err(cli::usage("--compute-us must be 0 or more microseconds"));
    }
    if args.batch.is_empty() || args.batch.contains(&0) {
        return Err(cli::usage("--batch needs positive sizes, e.g. --batch 8"));
    }
    let (tp, pp) = layout_of(args, world_of(job))?;
    let compute_time = Duration::from_nanos((args.compute_us * 1e3) as u64);
    let stage_layers = args.layers / pp as u64;
    let rounds = args.warmup + args.iters.max(1);
    type Ranked = (Vec<StepRow>, usize, usize);
    let body = |comm: &mut Communicator| -> Result<Ranked, collective::CollError> {
        precise_sleeps();
        let mut rows = Vec::new();
        for &batch in &args.batch {
            let at = Layout {
                tp,
                pp,
                micro_batches: micro_batches_for(args, pp, batch),
                rank: comm.rank,
            };
            let tokens = batch / at.micro_batches as u64;
            let p = plan(comm, at, tokens, args.hidden)?;
            // Built once: no allocation inside the timed loop.
            let mut activations = buffer(p.allreduce_bytes);
            let activations: &mut [u8] =
                &mut bytemuck::cast_slice_mut::<u64, u8>(&mut activations)[..p.allreduce_bytes];
            let mut handover = buffer(p.handover_share);
            let handover: &mut [u8] = bytemuck::cast_slice_mut(&mut handover);
            let mut control = buffer(p.control);
            let control: &mut [u8] = bytemuck::cast_slice_mut(&mut control);
            let mut token_ids = buffer(p.tokens);
            let token_ids: &mut [u8] = bytemuck::cast_slice_mut(&mut token_ids);
            // Pipeline messages bypass the collective engine: sends go through the proxy,
            // receives block on their own handle of the same connections.
            let mut streams: Vec<Option<std::net::TcpStream>> =
                (0..comm.world).map(|_| None).collect();
            let mut inbound: Vec<Option<std::net::TcpStream>> =
                (0..comm.world).map(|_| None).collect();
            for peer in p.pipeline_peers() {
                if streams[peer].is_none() {
                    streams[peer] = Some(comm.stream_to(peer)?);
                    inbound[peer] = Some(comm.stream_to(peer)?);
                }
            }
            let largest = p.handover_share.max(p.control).max(p.tokens);
            let (queue, jobs) = std::sync::mpsc::sync_channel(PROXY_SLOTS);
            comm.barrier()?;
            let (timed, proxied) = std::thread::scope(|scope| {
                let worker = scope.spawn(move || proxy_loop(streams, jobs, largest));
                let proxy = Proxy { queue };
                let timed = (|| -> Result<(Instant, Instant, Duration), CollError> {
                    let start = Instant::now();
                    let mut timed_from = start;
                    let mut last_round_done = start;
                    let mut in_comm = Duration::ZERO;
                    for round in 0..rounds {
                        for micro in 0..at.micro_batches {
                            if let (true, Some(last)) = (round > 0, p.tokens_from) {
                                // A micro-batch's previous step is complete when its tokens
                                // are back.
                                receive(&mut inbound[last], last, token_ids)?;
                                if micro + 1 == at.micro_batches {
                                    last_round_done = Instant::now();
                                    if round == args.warmup {
                                        timed_from = last_round_done;
                                    }
                                }
                            }
                            for peer in p.control_to.clone() {
                                proxy.send(peer, p.control)?;
                            }
                            if let Some(driver) = p.control_from {
                                receive(&mut inbound[driver], driver, control)?;
                            }
                            if let Some(previous) = p.handover_from {
                                receive(&mut inbound[previous], previous, handover)?;
                            }
                            for _ in 0..stage_layers {
                                compute(compute_time);
                                let began = Instant::now();
                                comm.execute(&p.all_reduce, activations, Dtype::Bf16, RedOp::Sum)?;
                                comm.execute(&p.all_reduce, activations, Dtype::Bf16, RedOp::Sum)?;
                                if round >= args.warmup {
                                    in_comm += began.elapsed();
                                }
                            }
                            if let Some(next) = p.handover_to {
                                proxy.send(next, p.handover_share)?;
                            }
                            if let Some(driver) = p.tokens_to {
                                proxy.send(driver, p.tokens)?;
                            }
                        }
                        if p.tokens_from.is_none() {
                            last_round_done = Instant::now();
                            if round + 1 == args.warmup {
                                timed_from = last_round_done;
                            }
                        }
                    }
                    if let Some(last) = p.tokens_from {
                        for _ in 0..at.micro_batches {
                            receive(&mut inbound[last], last, token_ids)?;
                        }
                        last_round_done = Instant::now();
                    }
                    Ok((timed_from, last_round_done, in_comm))
                })();
                drop(proxy);
                let proxied = worker.join().unwrap_or_else(|_| {
                    Err(CollError::Invalid("the proxy thread panicked".into()))
                });
                (timed, proxied)
            });
            // A failed proxy send explains the failure better than what it caused; every
            // rank then names the same failed rank.
            let (timed_from, last_round_done, in_comm) =
                proxied.and(timed).map_err(|e| comm.settle(e))?;
            let steps = args.iters.max(1) as f64;
            let step_ms = if at.rank == 0 {
                (last_round_done - timed_from).as_secs_f64() * 1e3 / steps
            } else {
                0.0
            };
            let comm_ms = in_comm.as_secs_f64() * 1e3 / steps;
            let summed = collective::sum_over_ranks(comm, &[step_ms as f32, comm_ms as f32])?;
            rows.push(StepRow {
                batch,
                micro_batches: at.micro_batches,
                micro_batch: tokens,
                allreduce_bytes: p.allreduce_bytes as u64,
                handover_bytes: if pp > 1 {
                    2 * p.allreduce_bytes as u64
                } else {
                    0
                },
                control_bytes: if pp > 1 { p.control as u64 } else { 0 },
                token_bytes: if pp > 1 { p.tokens as u64 } else { 0 },
                step_ms: summed[0] as f64,
                comm_ms: summed[1] as f64 / comm.world as f64,
            });
        }
        Ok((rows, comm.world, comm.rank))
    };
    let (rows, world, rank) =
        on_ranks(job, args.job.timeout, body).context("running synthetic steps")?;
    if rank != 0 {
        return Ok(cli::exit::OK);
    }
    if args.output.json {
        let one = match rows.as_slice() {
            [row] => Some(row.clone()),
            _ => None,
        };
        let document = measure::record::SyntheticStep {
            op: "all_reduce".into(),
            backend: "tcp".into(),
            dtype: measure::Dtype::Bf16,
            world,
            tp,
            pp,
            layers: args.layers,
            hidden: args.hidden,
            compute_us: args.compute_us,
            steps: args.iters,
            warmup: args.warmup,
            batch: one.as_ref().map(|r| r.batch),
            micro_batches: one.as_ref().map(|r| r.micro_batches),
            step_ms: one.as_ref().map(|r| r.step_ms),
            comm_ms: one.as_ref().map(|r| r.comm_ms),
            rows,
        };
        measure::record::print_json("collbench", "synthetic-step", &document)?;
    } else if !args.output.quiet {
        println!(
            "# synthetic decode step: TP {tp} x PP {pp} ({world} ranks), min(PP, batch) micro-batches unless --micro-batches; {} layers x ({} us compute + 2 all-reduces of tokens x {} bf16); {} steps",
            args.layers, args.compute_us, args.hidden, args.iters
        );
        let mut table = measure::Table::new([
            "batch",
            "micro-batches",
            "all-reduce (B)",
            "handover (B)",
            "step (ms)",
            "in all-reduces (ms)",
        ]);
        for r in &rows {
            table.push([
                r.batch.to_string(),
                r.micro_batches.to_string(),
                r.allreduce_bytes.to_string(),
                r.handover_bytes.to_string(),
                format!("{:.3}", r.step_ms),
                format!("{:.3}", r.comm_ms),
            ]);
        }
        println!("{}", table.render());
    } else {
        // -q: the summary line alone, one figure per batch size.
        let steps: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {:.3}", r.batch, r.step_ms))
            .collect();
        println!("# Step (ms) by batch  : {}", steps.join(", "));
    }
    Ok(cli::exit::OK)
}
