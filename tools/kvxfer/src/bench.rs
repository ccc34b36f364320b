//! `kvxfer bench`: `vllm bench serve` for the KV path. Workers (one per request in
//! flight, each with its own connections) prefill and pull requests until all prompts
//! are done; the report gives successes, failures, throughput, per-request transfer
//! latency and the share of the link.

use crate::decode::blocks_for;
use crate::flags::BenchArgs;
use anyhow::Context;
use kvcache::decode::DecodeAgent;
use measure::LatencyRecorder;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Decode pool size the bench allocates by default, at most.
const DEFAULT_POOL_BYTES: u64 = 2 << 30;

#[derive(Default)]
pub(crate) struct Tally {
    pub latency: LatencyRecorder,
    pub bytes: u64,
    /// Time spent in the content checks (--verify), after each timed transfer.
    pub verify: Duration,
    pub ok: u64,
    pub failed: u64,
    /// Of the failures, those whose data arrived but failed a check (a block's CRC32C,
    /// or with --verify its content): never counted complete.
    pub integrity_failures: u64,
    /// First few distinct failure sentences, for the report.
    pub errors: Vec<String>,
    /// Why the bench stopped early (a prefill that is gone): the prompts not tried are
    /// counted as failed, not retried one by one against a dead peer.
    pub stopped: Option<String>,
}

impl Tally {
    /// Counts one failed request, and keeps its sentence if it is new.
    fn fail(&mut self, e: &kvcache::KvError) {
        self.failed += 1;
        if matches!(e, kvcache::KvError::Integrity(_)) {
            self.integrity_failures += 1;
        }
        let sentence = e.to_string();
        if self.errors.len() < 5 && !self.errors.contains(&sentence) {
            self.errors.push(sentence);
        }
    }

    /// Adds another decode agent's tally to this one.
    fn absorb(&mut self, other: Tally) {
        self.latency.merge(&other.latency);
        self.bytes += other.bytes;
        self.verify += other.verify;
        self.ok += other.ok;
        self.failed += other.failed;
        self.integrity_failures += other.integrity_failures;
        for error in other.errors {
            if self.errors.len() < 5 && !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
        self.stopped = self.stopped.take().or(other.stopped);
    }
}

/// Errors that end the whole bench: the prefill itself is gone or unreachable, so every
/// later request would fail the same way.
fn fatal(e: &kvcache::KvError) -> bool {
    use fabric::FabricError as F;
    matches!(
        e,
        kvcache::KvError::Fabric(
            F::PeerClosed { .. } | F::Io { .. } | F::ConnectTimeout { .. } | F::Timeout { .. }
        )
    )
}

/// When each request arrives, after the start: a Poisson process of `rate` requests a
/// second (exponential gaps, as vllm bench serve draws them), or all at once for inf.
fn arrivals(count: u64, rate: f64, seed: u64) -> Vec<Duration> {
    if !rate.is_finite() {
        return vec![Duration::ZERO; count as usize];
    }
    let mut state = seed;
    let mut at = 0.0f64;
    (0..count)
        .map(|_| {
            // splitmix64 -> a uniform in (0, 1] -> an exponential gap.
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let uniform = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            at += -uniform.ln() / rate;
            Duration::from_secs_f64(at)
        })
        .collect()
}

/// `linkbench bw -R -t 2s` against `peer`: the plain-TCP rate in the KV direction.
fn measure_link(peer: &str, timeout: Duration) -> anyhow::Result<f64> {
    use fabric::perf::{BwSpec, Client, ClientConfig, Mode};
    let addr = fabric::tcp::resolve_peer(peer, fabric::perf::DEFAULT_PORT)
        .map_err(|e| cli::usage(format!("--link-peer {peer}: {e}")))?;
    let mut client = Client::connect(ClientConfig {
        peer: addr,
        connect_timeout: timeout,
        token: crate::token()?,
        iface: None,
        stall: fabric::perf::STALL_TIMEOUT,
    })
    .map_err(|e| anyhow::anyhow!("--link-peer {peer}: {e}"))?;
    let spec = BwSpec {
        mode: Mode::Reverse,
        streams: 1,
        size: 1 << 20,
        duration: Duration::from_secs(2),
        omit: Duration::ZERO,
        window: None,
        congestion: None,
        zerocopy: false,
        no_delay: false,
        working_set: None,
        rails: Vec::new(),
    };
    let report = client.bandwidth(&spec, &mut |_, _| {})?;
    client.close();
    Ok(report.throughput_gbps)
}

pub fn run(mut args: BenchArgs) -> anyhow::Result<u8> {
    args.output.resolve("kvxfer bench", cli::Honours::ALL)?;
    if args.sweep_block.is_some() {
        return crate::sweep::bench(args);
    }
    if args.output.plot.is_some() {
        return Err(cli::usage(
            "--plot draws a block-size sweep: add --sweep-block MIN..MAX",
        ));
    }
    if args.batch.is_some() {
        return Err(cli::usage(
            "--batch sets blocks per request in a sweep: add --sweep-block, or give --input-len",
        ));
    }
    if let Some(peer) = args.link_peer.clone() {
        args.link_gbps = Some(measure_link(&peer, args.peers.timeout)?);
    }
    let block_size = args.peers.pool.block_size;
    let per_request = blocks_for(args.input_len, block_size)?;
    let groups = scheme_groups(&args)?;
    // Probe the block size of this rank's layout to size the default pool; several
    // decode agents share the default budget.
    let block_bytes = crate::layout(&args.peers.pool, 1)?.block_bytes_all_layers();
    let budget = DEFAULT_POOL_BYTES / groups.len() as u64;
    let fits = (budget / block_bytes / per_request.max(1) as u64).max(1);
    let default_blocks = per_request as u64 * fits.min(args.concurrency as u64);
    let mut agents = Vec::with_capacity(groups.len());
    for group in &groups {
        let layout = crate::layout(
            &args.peers.pool,
            args.peers
                .num_blocks
                .unwrap_or(default_blocks.min(u32::MAX as u64) as u32),
        )?;
        let agent = crate::decode::decode_agent_on(layout, group.clone(), &args.peers)?;
        if args.scheme == Some(crate::flags::Scheme::OneToMany) && agent.prefill_tp() > 1 {
            return Err(cli::usage(format!(
                "--scheme one-to-many pulls from independent prefills, but {} is one of {} TP ranks: list the ranks of one group with --scheme tp",
                group[0],
                agent.prefill_tp()
            )));
        }
        agents.push(agent);
    }
    let agent = &agents[0];
    let pool_requests = agent.layout().num_blocks / per_request;
    if pool_requests == 0 {
        return Err(cli::usage(format!(
            "--num-blocks {} cannot hold one request of {} tokens ({per_request} blocks): raise --num-blocks",
            agent.layout().num_blocks,
            args.input_len
        )));
    }
    let workers = args.concurrency.min(pool_requests);
    let prefix = args.id_prefix.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("bench-{}-{nanos:08x}", std::process::id())
    });
    let bar = cli::progress(
        args.num_prompts,
        "kvxfer bench",
        "requests",
        !args.output.quiet && !args.output.json,
    );
    // Every agent at once, the prompts split between them.
    let count = agents.len() as u64;
    let outcomes: Vec<anyhow::Result<(Tally, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let prompts =
                    args.num_prompts / count + u64::from((i as u64) < args.num_prompts % count);
                let prefix = if count > 1 {
                    format!("{prefix}-d{i}")
                } else {
                    prefix.clone()
                };
                let (args, bar) = (&args, &bar);
                scope.spawn(move || {
                    drive(
                        agent,
                        (args, prompts),
                        args.input_len,
                        workers,
                        &prefix,
                        bar,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a decode agent's thread panicked")))
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut tally = Tally::default();
    let mut duration = Duration::ZERO;
    let mut per_decoder = Vec::with_capacity(outcomes.len());
    for (outcome, group) in outcomes.into_iter().zip(&groups) {
        let (part, took) = outcome?;
        duration = duration.max(took);
        per_decoder.push(measure::record::KvDecoderShare {
            peers: group.iter().map(ToString::to_string).collect(),
            requests: part.ok,
            failed: part.failed,
            throughput_gbps: measure::gbit_per_s(part.bytes, took.as_secs_f64().max(1e-9)),
        });
        tally.absorb(part);
    }
    let scheme = SchemeReport {
        name: scheme_name(&args, &groups),
        decoders: per_decoder,
    };
    report(
        &args,
        agent,
        &tally,
        duration,
        workers * count as u32,
        &scheme,
    )?;
    Ok(if tally.failed == 0 {
        cli::exit::OK
    } else if tally.ok > 0 {
        cli::exit::WARN
    } else {
        cli::exit::FAIL
    })
}

/// Which decode agents a scheme runs, each with the prefill addresses it attaches to.
fn scheme_groups(args: &BenchArgs) -> anyhow::Result<Vec<Vec<std::net::SocketAddr>>> {
    use crate::flags::Scheme;
    let peers = crate::decode::peer_addresses(&args.peers)?;
    let scheme = args.scheme.unwrap_or(if peers.len() > 1 {
        Scheme::Tp
    } else {
        Scheme::Pairwise
    });
    if args.decoders.is_some() && scheme != Scheme::ManyToOne {
        return Err(cli::usage(
            "--decoders sets how many decode agents share one prefill: add --scheme many-to-one",
        ));
    }
    Ok(match scheme {
        Scheme::Pairwise if peers.len() > 1 => {
            return Err(cli::usage(
                "--scheme pairwise pulls from one prefill: give one --peer (several are --scheme tp or one-to-many)",
            ))
        }
        Scheme::Tp | Scheme::OneToMany if peers.len() < 2 => {
            return Err(cli::usage(format!(
                "--scheme {} pulls from several prefill ranks: list them in --peer A,B",
                if scheme == Scheme::Tp { "tp" } else { "one-to-many" }
            )))
        }
        Scheme::Pairwise | Scheme::Tp => vec![peers],
        Scheme::ManyToOne => vec![peers; args.decoders.unwrap_or(4) as usize],
        Scheme::OneToMany => peers.into_iter().map(|p| vec![p]).collect(),
    })
}

fn scheme_name(args: &BenchArgs, groups: &[Vec<std::net::SocketAddr>]) -> &'static str {
    use crate::flags::Scheme;
    match args.scheme {
        Some(Scheme::ManyToOne) => "many-to-one",
        Some(Scheme::OneToMany) => "one-to-many",
        Some(Scheme::Tp) => "tp",
        Some(Scheme::Pairwise) => "pairwise",
        None if groups[0].len() > 1 => "tp",
        None => "pairwise",
    }
}

/// The scheme a run used and each decode agent's share.
struct SchemeReport {
    name: &'static str,
    decoders: Vec<measure::record::KvDecoderShare>,
}

/// Runs the warm-ups, then `args.num_prompts` requests of `tokens` tokens on `workers`
/// workers (paced by --request-rate); returns the tally and the timed duration.
pub(crate) fn drive(
    agent: &Arc<DecodeAgent>,
    (args, prompts): (&BenchArgs, u64),
    tokens: u64,
    workers: u32,
    prefix: &str,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Tally, Duration)> {
    // Warm-ups: one worker's connections, the same requests, nothing counted.
    if args.num_warmups > 0 {
        let mut links = agent.links();
        for index in 0..args.num_warmups {
            let id = format!("{prefix}-warmup-{index}");
            agent
                .transfer(&mut links, &id, tokens, Duration::ZERO)
                .map_err(|e| anyhow::anyhow!("warm-up request {index} failed: {e}"))?;
        }
        links.close();
    }
    let schedule = arrivals(
        prompts,
        args.request_rate.unwrap_or(f64::INFINITY),
        args.seed,
    );
    let next = AtomicU64::new(0);
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                worker(
                    agent,
                    tokens,
                    prefix,
                    (&next, &schedule, started),
                    &tally,
                    bar,
                );
            });
        }
    });
    let duration = started.elapsed();
    let mut tally = tally.into_inner().unwrap_or_default();
    if tally.stopped.is_some() {
        tally.failed = prompts - tally.ok;
    }
    Ok((tally, duration))
}

/// The next request's index, and when each request arrives after `started`.
type Queue<'a> = (&'a AtomicU64, &'a [Duration], Instant);

fn worker(
    agent: &Arc<DecodeAgent>,
    tokens: u64,
    prefix: &str,
    (next, schedule, started): Queue,
    tally: &Mutex<Tally>,
    bar: &indicatif::ProgressBar,
) {
    let mut links = agent.links();
    let mut local = LatencyRecorder::new();
    loop {
        if tally.lock().map_or(true, |t| t.stopped.is_some()) {
            break;
        }
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index as usize >= schedule.len() {
            break;
        }
        // Not before its arrival: a free worker waits for the next request to come.
        if let Some(wait) =
            (started + schedule[index as usize]).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        let id = format!("{prefix}-{index}");
        let result = agent.transfer(&mut links, &id, tokens, Duration::ZERO);
        let Ok(mut tally) = tally.lock() else { break };
        if let Err(e) = &result {
            if fatal(e) && tally.stopped.is_none() {
                tally.stopped = Some(format!("stopped after request {index}: {e}"));
            }
        }
        match result {
            Ok(done) => {
                tally.ok += 1;
                tally.bytes += done.bytes;
                tally.verify += done.verify;
                local.record(done.transfer);
            }
            Err(e) => tally.fail(&e),
        }
        bar.inc(1);
    }
    links.close();
    if let Ok(mut tally) = tally.lock() {
        tally.latency.merge(&local);
    }
}

fn transport_name(transport: crate::flags::Transport) -> &'static str {
    match transport {
        crate::flags::Transport::Tcp => "tcp (prefill streams)",
        crate::flags::Transport::Rdma => "rdma (decode READs)",
    }
}

fn report(
    args: &BenchArgs,
    agent: &DecodeAgent,
    tally: &Tally,
    duration: Duration,
    workers: u32,
    scheme: &SchemeReport,
) -> anyhow::Result<()> {
    let seconds = duration.as_secs_f64().max(1e-9);
    let gbps = measure::gbit_per_s(tally.bytes, seconds);
    let gbyte = measure::gbyte_per_s(tally.bytes, seconds);
    let latency = tally.latency.summary_scaled(1e-3);
    let layout = agent.layout();
    let bytes_per_request = agent.bytes_per_request(args.input_len);
    let share = args.link_gbps.map(|link| gbps / link);
    let request_throughput = tally.ok as f64 / seconds;
    let rate = args.request_rate.unwrap_or(f64::INFINITY);
    // The content check runs on the workers after each transfer: its own rate, per worker.
    let verify_gbyte = (args.peers.verify && !tally.verify.is_zero())
        .then(|| tally.bytes as f64 / tally.verify.as_secs_f64() / 1e9);
    let integrity = match (args.peers.verify, args.peers.no_checksum) {
        (true, _) => "CRC32C per block + every byte's content",
        (false, false) => "CRC32C per block",
        (false, true) => "none (--no-checksum)",
    };
    if args.output.json {
        let doc = measure::record::KvBench {
            requests: tally.ok,
            failed: tally.failed,
            integrity_failures: tally.integrity_failures,
            num_prompts: args.num_prompts,
            bytes_per_request,
            duration_s: seconds,
            throughput_gbps: gbps,
            throughput_gbyte_s: gbyte,
            request_rate: rate,
            request_throughput,
            num_warmups: args.num_warmups,
            latency_ms: measure::record::KvLatency {
                mean: latency.mean,
                p50: latency.p50,
                p90: latency.p90,
                p99: latency.p99,
            },
            checksums: !args.peers.no_checksum,
            verified: args.peers.verify,
            verify_gbyte_s: verify_gbyte,
            transport: transport_name(args.peers.transport).into(),
            rails: agent.rails(),
            scheme: scheme.name.into(),
            decoders: scheme.decoders.clone(),
            concurrency: measure::record::KvConcurrency {
                requested: args.concurrency,
                effective: workers,
            },
            link_gbps: args.link_gbps,
            link_share: share,
            prefill_tp: agent.prefill_tp(),
            decode_tp: layout.tp,
            decode_rank: layout.tp_rank,
            errors: tally.errors.clone(),
            stopped: tally.stopped.clone(),
        };
        measure::record::print_json("kvxfer", "bench", &doc)?;
        return write_csv(args, tally, seconds, request_throughput, &latency);
    }
    let sources: Vec<String> = agent
        .sources()
        .iter()
        .map(|s| {
            format!(
                "heads {}..{} from prefill rank {}",
                s.heads.start, s.heads.end, s.prefill_rank
            )
        })
        .collect();
    let row = |label: &str, value: String| println!("{label:<34}{value}");
    if args.output.quiet {
        // -q: the outcome, the rate and the latency that matter, nothing else.
        row("Successful requests:", tally.ok.to_string());
        row("Failed requests:", tally.failed.to_string());
        if tally.integrity_failures > 0 {
            row(
                "  of which failed a check:",
                tally.integrity_failures.to_string(),
            );
        }
        if let Some(why) = &tally.stopped {
            row("Stopped early:", why.clone());
        }
        row("Throughput (Gbit/s):", format!("{gbps:.3}"));
        row("Median latency (ms):", format!("{:.3}", latency.p50));
        row("P99 latency (ms):", format!("{:.3}", latency.p99));
        for error in &tally.errors {
            println!("error: {}", measure::name_flags(error, crate::FLAGS));
        }
        return write_csv(args, tally, seconds, request_throughput, &latency);
    }
    println!("{:=^60}", " kvxfer bench: KV transfer ");
    row(
        "Model / layout:",
        format!(
            "{} {} {}, block {} tokens",
            layout.shape.model,
            layout.shape.dtype.name(),
            layout.shape.order.name(),
            layout.shape.block_size
        ),
    );
    row(
        "Prefill TP -> decode TP:",
        format!(
            "{} -> {} (rank {}: {})",
            agent.prefill_tp(),
            layout.tp,
            layout.tp_rank,
            sources.join(", ")
        ),
    );
    row("Transport:", transport_name(args.peers.transport).into());
    row(
        "Scheme:",
        if scheme.decoders.len() > 1 {
            format!(
                "{} ({} decode agents at once)",
                scheme.name,
                scheme.decoders.len()
            )
        } else {
            scheme.name.into()
        },
    );
    if agent.rails() > 1 {
        row(
            "Rails:",
            format!(
                "{} per prefill rank, block i on rail i mod {}",
                agent.rails(),
                agent.rails()
            ),
        );
    }
    row("Successful requests:", tally.ok.to_string());
    row("Failed requests:", tally.failed.to_string());
    if tally.integrity_failures > 0 {
        row(
            "  of which failed a check:",
            format!(
                "{} (checksum or content; never counted complete)",
                tally.integrity_failures
            ),
        );
    }
    if let Some(why) = &tally.stopped {
        row("Stopped early:", why.clone());
    }
    row(
        "Concurrency (asked/effective):",
        format!("{} / {workers}", args.concurrency),
    );
    row(
        "Request rate (req/s):",
        if rate.is_finite() {
            format!("{rate} (Poisson, seed {})", args.seed)
        } else {
            "inf".into()
        },
    );
    if args.num_warmups > 0 {
        row(
            "Warm-up requests (not counted):",
            args.num_warmups.to_string(),
        );
    }
    row("Duration (s):", format!("{seconds:.2}"));
    row(
        "Request throughput (req/s):",
        format!("{request_throughput:.2}"),
    );
    row(
        "Bytes per request:",
        measure::format_bytes(bytes_per_request),
    );
    row("Total transferred:", measure::format_bytes(tally.bytes));
    row("Throughput (GB/s):", format!("{gbyte:.3}"));
    row("Throughput (Gbit/s):", format!("{gbps:.3}"));
    if let (Some(link), Some(share)) = (args.link_gbps, share) {
        row(
            "Share of link:",
            format!("{:.1} % of {link} Gbit/s", share * 100.0),
        );
    }
    println!("{:-^60}", " Transfer latency ");
    row("Mean (ms):", format!("{:.3}", latency.mean));
    row("Median (ms):", format!("{:.3}", latency.p50));
    row("P90 (ms):", format!("{:.3}", latency.p90));
    row("P99 (ms):", format!("{:.3}", latency.p99));
    row("Integrity checks:", integrity.into());
    if let Some(rate) = verify_gbyte {
        row(
            "Content check (GB/s per worker):",
            format!("{rate:.2}, after each transfer, not in its latency"),
        );
    }
    for error in &tally.errors {
        println!("error: {}", measure::name_flags(error, crate::FLAGS));
    }
    println!("{}", "=".repeat(60));
    write_csv(args, tally, seconds, request_throughput, &latency)
}

/// `--csv`: the summary as one row, raw numbers, units in the column names.
fn write_csv(
    args: &BenchArgs,
    tally: &Tally,
    seconds: f64,
    request_throughput: f64,
    latency: &measure::LatencySummary,
) -> anyhow::Result<()> {
    let Some(path) = &args.output.csv else {
        return Ok(());
    };
    let mut table = measure::Table::new([
        "requests",
        "failed",
        "concurrency",
        "request_rate",
        "duration_s",
        "bytes",
        "throughput_gbps",
        "request_throughput",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_p99_ms",
    ]);
    table.push([
        tally.ok.to_string(),
        tally.failed.to_string(),
        args.concurrency.to_string(),
        args.request_rate.unwrap_or(f64::INFINITY).to_string(),
        seconds.to_string(),
        tally.bytes.to_string(),
        measure::gbit_per_s(tally.bytes, seconds).to_string(),
        request_throughput.to_string(),
        latency.mean.to_string(),
        latency.p50.to_string(),
        latency.p90.to_string(),
        latency.p99.to_string(),
    ]);
    measure::write_csv(path, &table).with_context(|| format!("writing --csv {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{arrivals, Tally};
    use kvcache::KvError;

    #[test]
    fn failed_checks_are_counted_apart_from_other_failures() {
        let mut tally = Tally::default();
        tally.fail(&KvError::Integrity("block 3 arrived corrupted".into()));
        tally.fail(&KvError::Refused("pool full".into()));
        tally.fail(&KvError::Integrity("block 3 arrived corrupted".into()));
        assert_eq!((tally.failed, tally.integrity_failures), (3, 2));
        assert_eq!(tally.errors.len(), 2, "each sentence once");
        let mut total = Tally::default();
        total.absorb(tally);
        assert_eq!(total.integrity_failures, 2);
    }
    use std::time::Duration;

    #[test]
    fn poisson_arrivals_have_the_asked_rate_and_repeat_with_the_seed() {
        let times = arrivals(20_000, 50.0, 0);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
        // 20,000 arrivals at 50/s take about 400 s (the mean gap is within 3 %).
        let total = times.last().unwrap().as_secs_f64();
        assert!((388.0..412.0).contains(&total), "{total}");
        // Exponential gaps: about 1 - 1/e of them are shorter than the mean.
        let gaps: Vec<f64> = times
            .windows(2)
            .map(|w| w[1].checked_sub(w[0]).unwrap().as_secs_f64())
            .collect();
        let short = gaps.iter().filter(|&&g| g < 0.02).count() as f64 / gaps.len() as f64;
        assert!((0.60..0.66).contains(&short), "{short}");
        assert_eq!(times, arrivals(20_000, 50.0, 0));
        assert_ne!(times, arrivals(20_000, 50.0, 1));
        assert!(arrivals(5, f64::INFINITY, 0)
            .iter()
            .all(|t| *t == Duration::ZERO));
    }
}
