//! netcheck across a whole cluster: every node joins rank 0 (one control connection per
//! node, never O(N^2)), rank 0 schedules pair sessions in rounds of disjoint pairs
//! ([`schedule`]), the nodes run them against each other and report back, and rank 0
//! builds the bandwidth and latency matrices, names slow links and nodes ([`outliers`],
//! confirmed by a second pass), and sends every node the cluster's verdict.

pub mod expect;
pub mod outliers;
pub mod schedule;
pub mod wire;

use crate::checks::{Check, Status};
use crate::facts::Facts;
use crate::pair::{self, Measured, NodeSummary, PairError, PairOptions};
use fabric::bootstrap::Bootstrap;
use fabric::channel::Channel;
use fabric::control::Message;
use fabric::{handshake, FabricError};
use outliers::Matrix;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};
pub use wire::{ClusterMessage, LocalVerdict};

/// How a cluster run is set up.
#[derive(Clone)]
pub struct ClusterOptions {
    pub boot: Bootstrap,
    /// Rank 0's control address (host and port).
    pub master: SocketAddr,
    pub pair: PairOptions,
    /// Test every pair (else a ring plus `partners` random partners per node).
    pub full_mesh: bool,
    pub partners: usize,
    /// The figures every link and node must reach (`--expect FILE.toml`).
    pub expect: expect::Expect,
}

/// One node as rank 0 saw it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeEntry {
    pub rank: usize,
    pub summary: Option<NodeSummary>,
    pub local: Option<LocalVerdict>,
    /// Why this node took no (further) part: never joined, or stopped answering.
    pub error: Option<String>,
}

/// One pair session: `a` connected to `b`.
#[derive(Debug, Clone, Serialize)]
pub struct PairRun {
    pub a: usize,
    pub b: usize,
    /// 1 for the scheduled rounds, 2 for the second pass that confirms a slow node.
    pub pass: u8,
    pub measured: Option<Measured>,
    pub error: Option<String>,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub world: usize,
    pub nodes: Vec<NodeEntry>,
    pub rounds: usize,
    pub pairs: Vec<PairRun>,
    /// `bandwidth_gbps[i][j]`: Gbit/s from rank i to rank j.
    pub bandwidth_gbps: Matrix,
    /// One-way latency p50, microseconds.
    pub latency_us: Matrix,
    pub median_gbps: Option<f64>,
    /// (from, to, Gbit/s).
    pub slow_links: Vec<(usize, usize, f64)>,
    /// Slow in the matrix and again in the second pass.
    pub slow_nodes: Vec<usize>,
    /// Every figure with an expectation, OK or FAILED.
    pub expectations: Vec<expect::Verdict>,
    /// Every failing or warning finding, grouped by cause ("pair.mtu: ...").
    pub findings: Vec<Finding>,
    pub exit_code: u8,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub cause: String,
    pub status: Status,
    pub text: String,
    pub fix: String,
}

fn label(nodes: &[NodeEntry], rank: usize) -> String {
    match nodes.get(rank).and_then(|n| n.summary.as_ref()) {
        Some(s) => format!("rank {rank} {}", s.label()),
        None => format!("rank {rank}"),
    }
}

fn own_ip(facts: &Facts) -> Result<IpAddr, PairError> {
    NodeSummary::of(facts).address().ok_or_else(|| {
        PairError::Setup(format!(
            "{} has no address for the cluster checks (see iface.up)",
            facts.iface.name
        ))
    })
}

fn recv(channel: &mut Channel, timeout: Duration, what: &str) -> Result<ClusterMessage, PairError> {
    match channel.recv_as::<ClusterMessage>(timeout, what)? {
        ClusterMessage::Error(why) => Err(PairError::Peer(why)),
        other => Ok(other),
    }
}

/// Rank 0: gathers every node, runs the schedule, builds the report, sends the verdict.
pub fn run_rank0(
    facts: &Facts,
    local: LocalVerdict,
    options: &ClusterOptions,
    listener: TcpListener,
) -> Result<ClusterReport, PairError> {
    let started = Instant::now();
    let world = options.boot.world;
    let t = options.pair.timeout;
    let mut nodes: Vec<NodeEntry> = (0..world)
        .map(|rank| NodeEntry {
            rank,
            summary: None,
            local: None,
            error: None,
        })
        .collect();
    nodes[0].summary = Some(NodeSummary::of(facts));
    nodes[0].local = Some(local);
    let mut links: Vec<Option<Channel>> = (0..world).map(|_| None).collect();
    gather(&listener, options, &mut nodes, &mut links)?;
    for node in nodes.iter_mut().filter(|n| n.summary.is_none()) {
        node.error = Some(format!(
            "never joined within {:?} (rank 0 at {})",
            t, options.master
        ));
    }

    let plan = schedule::plan(world, options.full_mesh, options.partners, 0x6e6c);
    let mut pairs = Vec::new();
    let mut next_id = 0u32;
    for round in &plan {
        let runnable: Vec<(usize, usize)> = round
            .iter()
            .copied()
            .filter(|&(a, b)| nodes[a].error.is_none() && nodes[b].error.is_none())
            .collect();
        pairs.extend(run_round(
            facts,
            options,
            &runnable,
            1,
            &mut next_id,
            &mut nodes,
            &mut links,
        ));
    }
    let (bw, lat) = matrices(world, &pairs);
    let expect_gbps = options.expect.link.tcp_min_gbps;
    let found = outliers::find(&bw, expect_gbps);

    // Second pass: pair each suspect with two nodes whose links are all good.
    let mut slow_nodes = Vec::new();
    for &suspect in &found.slow_nodes {
        let good: Vec<usize> = (0..world)
            .filter(|&g| {
                // Good: no slow link other than the ones shared with a suspect.
                g != suspect
                    && nodes[g].error.is_none()
                    && !found.slow_nodes.contains(&g)
                    && !found.slow_links.iter().any(|&(x, y, _)| {
                        (x == g || y == g)
                            && !found.slow_nodes.contains(&x)
                            && !found.slow_nodes.contains(&y)
                    })
            })
            .take(2)
            .collect();
        let mut confirmed = !good.is_empty();
        for g in good {
            let runs = run_round(
                facts,
                options,
                &[(g, suspect)],
                2,
                &mut next_id,
                &mut nodes,
                &mut links,
            );
            let floor = found
                .median_gbps
                .map_or(0.0, |m| m * outliers::SLOW_FRACTION);
            let floor = expect_gbps.map_or(floor, |e| floor.max(e));
            let slow_again = runs.iter().any(|r| {
                r.measured.as_ref().is_some_and(|m| {
                    m.bw_a_to_b_gbps.is_some_and(|x| x < floor)
                        || m.bw_b_to_a_gbps.is_some_and(|x| x < floor)
                })
            });
            confirmed &= slow_again;
            pairs.extend(runs);
        }
        if confirmed {
            slow_nodes.push(suspect);
        }
    }

    let expectations = verdicts(&options.expect, &nodes, (&bw, &lat), &pairs);
    let mut findings = findings(&nodes, &pairs, &found, &slow_nodes, expect_gbps);
    for v in expectations.iter().filter(|v| !v.ok) {
        findings.push(Finding {
            cause: "expect".into(),
            status: Status::Fail,
            text: format!("{}: {} FAILED (expected {})", v.what, v.measured, v.expected),
            fix: format!(
                "see the matching pair and local checks; or relax {} if the cluster is meant to be slower",
                measure::Setting::Expectations
            ),
        });
    }
    let exit_code = if findings.iter().any(|f| f.status == Status::Fail) {
        2
    } else {
        u8::from(findings.iter().any(|f| f.status == Status::Warn))
    };
    let summary = format!(
        "{} of {world} nodes checked, {} pair sessions, {} failing and {} warning findings",
        nodes.iter().filter(|n| n.error.is_none()).count(),
        pairs.len(),
        findings.iter().filter(|f| f.status == Status::Fail).count(),
        findings.iter().filter(|f| f.status == Status::Warn).count(),
    );
    for link in links.iter_mut().flatten() {
        let _ = link.send(
            &ClusterMessage::Verdict {
                exit_code,
                summary: summary.clone(),
            },
            Duration::from_secs(2),
        );
    }
    Ok(ClusterReport {
        world,
        nodes,
        rounds: plan.len(),
        pairs,
        bandwidth_gbps: bw,
        latency_us: lat,
        median_gbps: found.median_gbps,
        slow_links: found.slow_links,
        slow_nodes,
        expectations,
        findings,
        exit_code,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Accepts joins until every rank is in or the timeout passes; each connection's opening
/// runs on its own thread, so a silent stranger holds up nobody.
fn gather(
    listener: &TcpListener,
    options: &ClusterOptions,
    nodes: &mut [NodeEntry],
    links: &mut [Option<Channel>],
) -> Result<(), PairError> {
    let world = nodes.len();
    let deadline = Instant::now() + options.pair.timeout;
    listener
        .set_nonblocking(true)
        .map_err(|e| FabricError::io("setting the listener non-blocking", e))?;
    let (tx, rx) = mpsc::channel();
    while links.iter().skip(1).any(Option::is_none) && Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let tx = tx.clone();
                let token = options.pair.token.clone();
                std::thread::spawn(move || {
                    let mut channel = Channel::new(stream, peer.to_string());
                    let joined = open_join(&mut channel, token.as_deref());
                    let _ = tx.send((channel, peer, joined));
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                (options.pair.log)(&format!("accepting a node failed: {e}; retrying"));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        while let Ok((mut channel, peer, joined)) = rx.try_recv() {
            match joined {
                Ok((rank, their_world, summary, local)) => {
                    let problem = if their_world != world {
                        Some(format!("this node was started with a world of {their_world}, rank 0 with {world}: give every node the same world size"))
                    } else if rank == 0 || rank >= world {
                        Some(format!(
                            "rank {rank} is not a worker rank of a {world}-node cluster (1..{})",
                            world - 1
                        ))
                    } else if links[rank].is_some() {
                        Some(format!("rank {rank} already joined from another node: give every node its own rank"))
                    } else {
                        None
                    };
                    if let Some(problem) = problem {
                        (options.pair.log)(&format!("{peer}: refused: {problem}"));
                        let _ =
                            channel.send(&ClusterMessage::Error(problem), Duration::from_secs(1));
                        continue;
                    }
                    nodes[rank].summary = Some(*summary);
                    nodes[rank].local = Some(local);
                    links[rank] = Some(channel);
                }
                Err(e) => (options.pair.log)(&format!("{peer}: {e}")),
            }
        }
    }
    Ok(())
}

type Joined = (usize, usize, Box<NodeSummary>, LocalVerdict);

fn open_join(channel: &mut Channel, token: Option<&[u8]>) -> Result<Joined, PairError> {
    let wait = handshake::HANDSHAKE_TIMEOUT.min(Duration::from_secs(5));
    let hello = match channel.recv(wait, "waiting for the greeting from")? {
        Message::Hello(hello) => hello,
        other => return Err(FabricError::unexpected("Hello", &other).into()),
    };
    if let Err(e) = handshake::open_server(channel, &hello, pair::TOOL, token) {
        let _ = channel.send(
            &ClusterMessage::Error(e.to_string()),
            Duration::from_secs(1),
        );
        return Err(e.into());
    }
    match recv(channel, wait, "waiting for the Join of")? {
        ClusterMessage::Join {
            rank,
            world,
            summary,
            local,
        } => Ok((rank, world, summary, local)),
        other => Err(FabricError::unexpected("Join", &other).into()),
    }
}

/// Rank 0's local part of a pair: a thread running the session against the peer.
enum Side<'a> {
    Local(std::thread::ScopedJoinHandle<'a, Result<pair::PairOutcome, PairError>>),
    Remote,
}

#[allow(clippy::too_many_arguments)]
fn run_round(
    facts: &Facts,
    options: &ClusterOptions,
    round: &[(usize, usize)],
    pass: u8,
    next_id: &mut u32,
    nodes: &mut [NodeEntry],
    links: &mut [Option<Channel>],
) -> Vec<PairRun> {
    let t = options.pair.timeout;
    let mut runs: Vec<PairRun> = Vec::new();
    std::thread::scope(|scope| {
        let mut sessions: Vec<(u32, usize, usize, Side, Side)> = Vec::new();
        for &(a, b) in round {
            let id = *next_id;
            *next_id += 1;
            let fail = |why: String| PairRun {
                a,
                b,
                pass,
                measured: None,
                error: Some(why),
                checks: Vec::new(),
            };
            let Some(b_ip) = nodes[b].summary.as_ref().and_then(NodeSummary::address) else {
                runs.push(fail(format!("{} has no address", label(nodes, b))));
                continue;
            };
            // B listens.
            let (b_side, port) = if b == 0 {
                match TcpListener::bind((b_ip, 0)) {
                    Ok(listener) => {
                        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                        let opts = options.pair.clone();
                        (
                            Side::Local(scope.spawn(move || pair::serve(listener, facts, &opts))),
                            port,
                        )
                    }
                    Err(e) => {
                        runs.push(fail(format!("rank 0 could not listen: {e}")));
                        continue;
                    }
                }
            } else {
                let link = links[b].as_mut().expect("joined");
                let asked = link
                    .send(
                        &ClusterMessage::ListenFor {
                            pair: id,
                            peer_rank: a,
                        },
                        t,
                    )
                    .map_err(PairError::from)
                    .and_then(|()| recv(link, t, "waiting for the pair port of"));
                match asked {
                    Ok(ClusterMessage::Listening { pair, port }) if pair == id => {
                        (Side::Remote, port)
                    }
                    Ok(other) => {
                        runs.push(fail(format!(
                            "{} answered {} instead of its pair port",
                            label(nodes, b),
                            other.name_of()
                        )));
                        continue;
                    }
                    Err(e) => {
                        lost(nodes, links, b, &e);
                        runs.push(fail(format!("{} stopped answering: {e}", label(nodes, b))));
                        continue;
                    }
                }
            };
            // A connects.
            let addr = SocketAddr::new(b_ip, port);
            let a_side = if a == 0 {
                let opts = options.pair.clone();
                Side::Local(scope.spawn(move || pair::connect(addr, facts, &opts)))
            } else {
                let link = links[a].as_mut().expect("joined");
                match link.send(
                    &ClusterMessage::ConnectTo {
                        pair: id,
                        peer_rank: b,
                        addr,
                    },
                    t,
                ) {
                    Ok(()) => Side::Remote,
                    Err(e) => {
                        let e = PairError::from(e);
                        lost(nodes, links, a, &e);
                        runs.push(fail(format!("{} stopped answering: {e}", label(nodes, a))));
                        continue;
                    }
                }
            };
            sessions.push((id, a, b, a_side, b_side));
        }
        for (id, a, b, a_side, b_side) in sessions {
            let mut measured = None;
            let mut errors = Vec::new();
            // The connecting side has the measurements; both must say they finished.
            for (rank, side) in [(a, a_side), (b, b_side)] {
                let result = match side {
                    Side::Local(handle) => match handle.join() {
                        Ok(Ok(outcome)) => Ok(Some(outcome.measured)),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the session thread panicked".into()),
                    },
                    Side::Remote => {
                        let Some(link) = links[rank].as_mut() else {
                            errors.push(format!("{} is gone", label(nodes, rank)));
                            continue;
                        };
                        // A pair session takes a few seconds; allow it the timeout twice.
                        match recv(link, t * 2, "waiting for the pair result of") {
                            Ok(ClusterMessage::PairDone {
                                pair,
                                measured,
                                error,
                            }) if pair == id => match error {
                                Some(e) => Err(e),
                                None => Ok(measured.map(|m| *m)),
                            },
                            Ok(other) => {
                                Err(format!("answered {} instead of PairDone", other.name_of()))
                            }
                            Err(e) => {
                                lost(nodes, links, rank, &e);
                                Err(format!("stopped answering: {e}"))
                            }
                        }
                    }
                };
                match result {
                    Ok(Some(m)) if rank == a => measured = Some(m),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{}: {e}", label(nodes, rank))),
                }
            }
            let checks = match (&measured, &nodes[a].summary, &nodes[b].summary) {
                (Some(m), Some(sa), Some(sb)) => pair::pair_checks(sa, sb, m),
                _ => Vec::new(),
            };
            runs.push(PairRun {
                a,
                b,
                pass,
                measured,
                error: (!errors.is_empty()).then(|| errors.join("; ")),
                checks,
            });
        }
    });
    runs
}

/// A node that stopped answering takes no further part.
fn lost(nodes: &mut [NodeEntry], links: &mut [Option<Channel>], rank: usize, e: &PairError) {
    if rank == 0 {
        return;
    }
    links[rank] = None;
    nodes[rank]
        .error
        .get_or_insert_with(|| format!("stopped answering rank 0 mid-run: {e}"));
}

fn matrices(world: usize, pairs: &[PairRun]) -> (Matrix, Matrix) {
    let mut bw: Matrix = vec![vec![None; world]; world];
    let mut lat: Matrix = vec![vec![None; world]; world];
    for run in pairs.iter().filter(|r| r.pass == 1) {
        let Some(m) = &run.measured else { continue };
        bw[run.a][run.b] = m.bw_a_to_b_gbps;
        bw[run.b][run.a] = m.bw_b_to_a_gbps;
        lat[run.a][run.b] = m.latency_p50_us;
        lat[run.b][run.a] = m.latency_p50_us;
    }
    (bw, lat)
}

fn findings(
    nodes: &[NodeEntry],
    pairs: &[PairRun],
    found: &outliers::Outliers,
    slow_nodes: &[usize],
    expect: Option<f64>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for node in nodes {
        if let Some(e) = &node.error {
            out.push(Finding {
                cause: "node".into(),
                status: Status::Fail,
                text: format!("{} {e}", label(nodes, node.rank)),
                fix: "start netcheck --cluster on every node with the same world size and rank 0's address".into(),
            });
        }
    }
    // The same local finding on many nodes is one line naming the ranks.
    let mut local: Vec<(String, Vec<usize>)> = Vec::new();
    for node in nodes {
        for problem in node.local.iter().flat_map(|l| &l.problems) {
            match local.iter_mut().find(|(text, _)| text == problem) {
                Some((_, ranks)) => ranks.push(node.rank),
                None => local.push((problem.clone(), vec![node.rank])),
            }
        }
    }
    for (problem, ranks) in local {
        let (status, text) = match problem.split_once(' ') {
            Some(("FAIL", rest)) => (Status::Fail, rest.to_string()),
            Some((_, rest)) => (Status::Warn, rest.to_string()),
            None => (Status::Warn, problem.clone()),
        };
        let which = if ranks.len() == nodes.len() {
            "every node".to_string()
        } else {
            format!(
                "rank{} {}",
                if ranks.len() > 1 { "s" } else { "" },
                ranks
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(Finding {
            cause: "local".into(),
            status,
            text: format!("{which}: {text}"),
            fix: "run `netcheck --iface IFACE` on that node for the fix".into(),
        });
    }
    for run in pairs {
        if let Some(e) = &run.error {
            out.push(Finding {
                cause: "pair".into(),
                status: Status::Fail,
                text: format!("{} <-> {}: {e}", label(nodes, run.a), label(nodes, run.b)),
                fix: String::new(),
            });
        }
        for check in run.checks.iter().filter(|c| c.status >= Status::Warn) {
            // Pair checks repeat for every pair a bad node is in; keep each text once.
            if out
                .iter()
                .any(|f: &Finding| f.cause == check.id && f.text == check.summary)
            {
                continue;
            }
            out.push(Finding {
                cause: check.id.to_string(),
                status: check.status,
                text: check.summary.clone(),
                fix: check.fix.clone(),
            });
        }
    }
    for &node in slow_nodes {
        out.push(Finding {
            cause: "slow.node".into(),
            status: Status::Fail,
            text: format!(
                "{} is slow: most of its links are below {} and a second pass against two good nodes confirmed it",
                label(nodes, node),
                floor_text(found.median_gbps, expect)
            ),
            fix: format!("drain {} and check its NIC, cable, switch port and tc/qos settings", label(nodes, node)),
        });
    }
    let slowest = found
        .slow_links
        .iter()
        .filter(|&&(a, b, _)| !slow_nodes.contains(&a) && !slow_nodes.contains(&b))
        .min_by(|x, y| x.2.total_cmp(&y.2));
    for &(a, b, rate) in found
        .slow_links
        .iter()
        .filter(|&&(a, b, _)| !slow_nodes.contains(&a) && !slow_nodes.contains(&b))
    {
        let below_expect = expect.is_some_and(|e| rate < e);
        out.push(Finding {
            cause: "slow.link".into(),
            status: if below_expect {
                Status::Fail
            } else {
                Status::Warn
            },
            text: format!(
                "{} -> {}: {rate:.3} Gbit/s, below {}{}",
                label(nodes, a),
                label(nodes, b),
                floor_text(found.median_gbps, expect),
                if Some(&(a, b, rate)) == slowest {
                    " (the slowest link)"
                } else {
                    ""
                }
            ),
            fix: "check the path between those two nodes (switch ports, cabling, ECMP/bonding)"
                .into(),
        });
    }
    out
}

/// Each measured figure against `expect`: links (both directions), latency (each pair),
/// and each node's MTU and GPU count.
fn verdicts(
    expect: &expect::Expect,
    nodes: &[NodeEntry],
    (bw, lat): (&Matrix, &Matrix),
    pairs: &[PairRun],
) -> Vec<expect::Verdict> {
    let mut out = Vec::new();
    // RDMA WRITE runs A -> B in each pair session where both nodes have RDMA.
    if let Some(min) = expect.link.rdma_min_gbps {
        for run in pairs {
            if let Some(rate) = run.measured.as_ref().and_then(|m| m.rdma_write_gbps) {
                out.push(expect::Verdict {
                    what: format!("rdma {} -> {} Gbit/s", run.a, run.b),
                    measured: rate,
                    expected: format!(">= {min}"),
                    ok: rate >= min,
                });
            }
        }
    }
    for (i, row) in bw.iter().enumerate() {
        for (j, cell) in row.iter().enumerate() {
            if let (Some(rate), Some(min)) = (cell, expect.link.tcp_min_gbps) {
                out.push(expect::Verdict {
                    what: format!("tcp {i} -> {j} Gbit/s"),
                    measured: *rate,
                    expected: format!(">= {min}"),
                    ok: *rate >= min,
                });
            }
        }
    }
    for (i, row) in lat.iter().enumerate() {
        for (j, cell) in row.iter().enumerate().skip(i + 1) {
            if let (Some(us), Some(max)) = (cell, expect.link.max_latency_us) {
                out.push(expect::Verdict {
                    what: format!("latency {i} <-> {j} us"),
                    measured: *us,
                    expected: format!("<= {max}"),
                    ok: *us <= max,
                });
            }
        }
    }
    for node in nodes {
        let Some(summary) = &node.summary else {
            continue;
        };
        if let (Some(mtu), Some(want)) = (summary.mtu, expect.node.mtu) {
            out.push(expect::Verdict {
                what: format!("mtu rank {}", node.rank),
                measured: mtu as f64,
                expected: format!("= {want}"),
                ok: mtu == want,
            });
        }
        if let Some(want) = expect.node.gpus {
            out.push(expect::Verdict {
                what: format!("gpus rank {}", node.rank),
                measured: summary.gpu_count as f64,
                expected: format!("= {want}"),
                ok: summary.gpu_count == want,
            });
        }
    }
    out
}

fn floor_text(median: Option<f64>, expect: Option<f64>) -> String {
    let m = median.map(|m| {
        format!(
            "80 % of the median link ({:.3} Gbit/s)",
            m * outliers::SLOW_FRACTION
        )
    });
    match (m, expect) {
        (Some(m), Some(e)) => format!("{m} or the expected {e} Gbit/s"),
        (Some(m), None) => m,
        (None, Some(e)) => format!("the expected {e} Gbit/s"),
        (None, None) => "the floor".into(),
    }
}

/// A worker node: joins rank 0, runs the pair sessions it is given, and returns the
/// cluster's verdict (exit code, one line).
pub fn run_node(
    facts: &Facts,
    local: LocalVerdict,
    options: &ClusterOptions,
) -> Result<(u8, String), PairError> {
    let t = options.pair.timeout;
    let deadline = Instant::now() + t;
    let here = own_ip(facts)?;
    // Rank 0 may start after us: retry until the timeout.
    let stream = loop {
        match fabric::tcp::connect(
            options.master,
            Duration::from_secs(2),
            &fabric::tcp::SocketOptions {
                nodelay: true,
                ..Default::default()
            },
        ) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() + Duration::from_millis(300) < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => {
                return Err(PairError::Setup(format!(
                    "rank 0 at {} never answered within {t:?}: {e}",
                    options.master
                )))
            }
        }
    };
    let mut channel = Channel::new(stream, options.master.to_string());
    handshake::open_client(&mut channel, pair::TOOL, options.pair.token.as_deref())?;
    channel.send(
        &ClusterMessage::Join {
            rank: options.boot.rank,
            world: options.boot.world,
            summary: Box::new(NodeSummary::of(facts)),
            local,
        },
        t,
    )?;
    loop {
        // Rank 0 may take the whole join timeout before the first round, then rounds.
        match recv(&mut channel, t * 3, "waiting for rank 0's next step from")? {
            ClusterMessage::ListenFor { pair: id, .. } => {
                let listener = TcpListener::bind((here, 0))
                    .map_err(|e| FabricError::io("listening for a pair session", e))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| FabricError::io("reading the pair port", e))?
                    .port();
                channel.send(&ClusterMessage::Listening { pair: id, port }, t)?;
                let outcome = pair::serve(listener, facts, &options.pair);
                channel.send(
                    &ClusterMessage::PairDone {
                        pair: id,
                        measured: None,
                        error: outcome.err().map(|e| e.to_string()),
                    },
                    t,
                )?;
            }
            ClusterMessage::ConnectTo { pair: id, addr, .. } => {
                let outcome = pair::connect(addr, facts, &options.pair);
                let (measured, error) = match outcome {
                    Ok(o) => (Some(Box::new(o.measured)), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                channel.send(
                    &ClusterMessage::PairDone {
                        pair: id,
                        measured,
                        error,
                    },
                    t,
                )?;
            }
            ClusterMessage::Verdict { exit_code, summary } => return Ok((exit_code, summary)),
            other => return Err(FabricError::unexpected("a cluster step", &other).into()),
        }
    }
}

impl ClusterMessage {
    fn name_of(&self) -> &'static str {
        fabric::control::Wire::name(self)
    }
}
