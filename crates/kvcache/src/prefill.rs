//! The prefill agent: owns a KV pool, "prefills" requests into it (allocates their blocks
//! and writes their contents), holds each request's blocks under a lease, and streams the
//! byte ranges decode asks for. One thread per decode connection; the lease table is the
//! only shared state.

use crate::compat::{compat_hash, mismatch};
use crate::log_budget::{Admit, LogBudget};
use crate::plan::{plan, stream_bytes_per_block, Batches, Piece, BATCH_PIECES};
use crate::pool::KvPool;
use crate::rails::{self, MAX_RAILS};
use crate::rdma::{self, RdmaOptions};
use crate::wire::{self, Granted, KvMessage, Prefilled, Refused, Sending, Sent, Welcome};
use crate::{pattern, KvError, KvLayout, TOOL};
use fabric::channel::Channel;
use fabric::control::Message;
use fabric::rdma::{Endpoint, Registration};
use fabric::{handshake, FabricError};
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod state;

pub use state::{Allocation, Event, PrefillState, SessionId, StateConfig};

/// The largest decode TP group an Attach may claim.
const MAX_DECODE_TP: u32 = crate::layout::MAX_TP;

/// How long a decode connection may sit idle between requests by default; decode opens
/// a fresh one when it finds its link closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PrefillConfig {
    pub dp_rank: u32,
    pub lease: Duration,
    /// Bound on every socket wait and on waiting for free blocks.
    pub io_timeout: Duration,
    /// An attached connection with no request for this long is closed (it holds a thread).
    pub idle_timeout: Duration,
    pub token: Option<Vec<u8>>,
    /// Device and GID for decode ranks that pull over RDMA.
    pub rdma: RdmaOptions,
    /// Multi-rail: the address this agent listens on for each rail (two or more), which
    /// decode stripes transfers over; empty for one.
    pub rails: Vec<SocketAddr>,
    /// Most blocks one connection may hold in requests it prefilled and has not yet
    /// completed [None: half the pool]. Its first such request is always taken, however
    /// large, so a single-request decode is never refused by its own quota.
    pub session_quota: Option<u32>,
    pub log: measure::Log,
}

/// Forgets a session's rail cookie (and any rail connections not taken) when it ends.
struct RailCookie<'a> {
    agent: &'a PrefillAgent,
    cookie: &'a str,
}

impl Drop for RailCookie<'_> {
    fn drop(&mut self) {
        if self.cookie.is_empty() {
            return;
        }
        if let Ok(mut joins) = self.agent.rail_joins.lock() {
            joins.sessions.remove(self.cookie);
        }
    }
}

/// Rail connections that joined a session, by the session's cookie; the session takes
/// them on its first striped pull.
#[derive(Default)]
struct RailJoins {
    sessions: HashMap<String, Vec<Option<TcpStream>>>,
}

/// Counters for the log and for tests.
#[derive(Debug, Default)]
pub struct PrefillStats {
    pub prefilled: AtomicU64,
    pub pulls: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub refused: AtomicU64,
    pub expired: AtomicU64,
    /// Looks at a pool with too few free blocks: a queued request looks once, then once
    /// per wake-up (blocks freed, or the next lease's expiry).
    pub waits_for_blocks: AtomicU64,
    /// Peer-caused log lines dropped by the line budget.
    pub log_lines_dropped: AtomicU64,
}

pub struct PrefillAgent {
    /// Before `pool`: the registration is dropped (deregistered) before the memory.
    /// Without RDMA: (the short cause for the banner, the sentence a decode is refused with).
    registration: Result<Registration, (String, String)>,
    pool: KvPool,
    /// Leases, free blocks, ownership and quotas; `freed` wakes prefills waiting for blocks.
    state: Mutex<PrefillState>,
    freed: Condvar,
    config: PrefillConfig,
    next_session: AtomicU64,
    rail_joins: Mutex<RailJoins>,
    /// Bounds the lines that peers' requests cause (refusals, ignored completions).
    peer_lines: Mutex<LogBudget>,
    pub stats: PrefillStats,
}

impl PrefillAgent {
    /// Commits the pool and, where RDMA is usable, registers it: everything a decode
    /// connection needs is in place before the caller starts listening.
    pub fn new(layout: KvLayout, config: PrefillConfig) -> Result<Arc<PrefillAgent>, KvError> {
        let state = PrefillState::new(
            layout.clone(),
            StateConfig {
                dp_rank: config.dp_rank,
                lease: config.lease,
                session_quota: config.session_quota,
            },
        );
        let pool = KvPool::new(layout)?;
        let registration = match fabric::rdma::check(config.rdma.device.as_deref()) {
            Ok(_) => {
                rdma::register_pool(&pool, &config.rdma).map_err(|e| (e.to_string(), e.to_string()))
            }
            Err(e) => Err((e.cause(), e.to_string())),
        };
        Ok(Arc::new(PrefillAgent {
            registration,
            pool,
            state: Mutex::new(state),
            freed: Condvar::new(),
            config,
            next_session: AtomicU64::new(1),
            rail_joins: Mutex::new(RailJoins::default()),
            peer_lines: Mutex::new(LogBudget::default()),
            stats: PrefillStats::default(),
        }))
    }

    pub fn layout(&self) -> &KvLayout {
        self.pool.layout()
    }

    /// How long committing the pool took.
    pub fn commit_time(&self) -> Duration {
        self.pool.commit_time()
    }

    /// Whether decode ranks can pull over RDMA, and if not, why (the cause alone).
    pub fn rdma_status(&self) -> Result<(), &str> {
        self.registration
            .as_ref()
            .map(|_| ())
            .map_err(|(cause, _)| cause.as_str())
    }

    pub fn free_blocks(&self) -> u32 {
        self.state.lock().map_or(0, |s| s.free_blocks())
    }

    fn state(&self) -> Result<MutexGuard<'_, PrefillState>, KvError> {
        self.state.lock().map_err(|_| KvError::poisoned())
    }

    /// Logs and counts what the state did, and wakes waiters when blocks came free.
    fn drain_events(&self, state: &mut PrefillState) {
        while let Some(event) = state.poll_event() {
            let line = match event {
                Event::Expired { request_id, blocks } => {
                    self.stats.expired.fetch_add(1, Ordering::Relaxed);
                    format!(
                        "lease of request {} expired; {blocks} blocks freed",
                        shown(&request_id)
                    )
                }
                Event::CompletionForUnknown { request_id } => format!(
                    "completion for unknown request {} ignored",
                    shown(&request_id)
                ),
                Event::CompletionFromStranger { request_id } => format!(
                    "completion for request {} from a connection that does not hold it ignored",
                    shown(&request_id)
                ),
                Event::GaveUp { request_id } => {
                    format!("decode gave up on request {}", shown(&request_id))
                }
            };
            self.log_peer(&line);
        }
        if state.take_wake_waiters() {
            self.freed.notify_all();
        }
    }

    /// Logs a line a peer caused, within the peer-line budget; dropped lines are counted
    /// in the stats and in the next line written.
    fn log_peer(&self, line: &str) {
        let admit = match self.peer_lines.lock() {
            Ok(mut budget) => budget.admit(Instant::now()),
            Err(_) => Admit::Write { dropped_before: 0 },
        };
        match admit {
            Admit::Drop => {
                self.stats.log_lines_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Admit::Write { dropped_before: 0 } => (self.config.log)(line),
            Admit::Write { dropped_before } => (self.config.log)(&format!(
                "({dropped_before} similar lines caused by peers not shown) {line}"
            )),
        }
    }

    /// Accepts decode connections for as long as the process runs; each gets its own
    /// thread. A failed accept (out of descriptors, say) is logged, at most once a
    /// second, and retried after a pause: a flood of connections never stops the server.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> Result<(), KvError> {
        self.serve_all(vec![listener])
    }

    /// Serves every listener (one per rail) until the process ends.
    pub fn serve_all(self: &Arc<Self>, mut listeners: Vec<TcpListener>) -> Result<(), KvError> {
        let Some(first) = listeners.pop() else {
            return Err(KvError::Config("nothing to listen on".into()));
        };
        for listener in listeners {
            let agent = Arc::clone(self);
            std::thread::Builder::new()
                .name("kv-accept".into())
                .spawn(move || agent.accept_loop(listener))
                .map_err(|e| FabricError::io("starting an accept thread", e))?;
        }
        self.accept_loop(first)
    }

    fn accept_loop(self: &Arc<Self>, listener: TcpListener) -> Result<(), KvError> {
        let mut last_logged: Option<Instant> = None;
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => {
                    if last_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        (self.config.log)(&format!(
                            "accepting a decode connection failed: {e}; retrying"
                        ));
                        last_logged = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let agent = Arc::clone(self);
            let session = self.next_session.fetch_add(1, Ordering::Relaxed);
            let spawned = std::thread::Builder::new()
                .name(format!("kv-{peer}"))
                .spawn(move || {
                    if let Err(e) = agent.session(stream, peer, session) {
                        agent.log_peer(&format!("{peer}: {e}"));
                    }
                    agent.forget(session);
                });
            if let Err(e) = spawned {
                (self.config.log)(&format!("{peer}: cannot start a thread: {e}"));
            }
        }
    }

    fn session(&self, stream: TcpStream, peer: SocketAddr, session: u64) -> Result<(), KvError> {
        let _ = stream.set_nodelay(true);
        let timeout = self.config.io_timeout;
        let mut channel = Channel::new(stream, peer.to_string());
        // --timeout bounds the whole opening, as it bounds every other operation.
        let opened = std::time::Instant::now();
        let hello =
            match answer_errors(&mut channel, true, timeout, "waiting for the greeting from")? {
                Message::Hello(hello) => hello,
                other => return Err(FabricError::unexpected("Hello", &other).into()),
            };
        let rest = timeout.saturating_sub(opened.elapsed());
        if let Err(e) = handshake::open_server_within(
            &mut channel,
            &hello,
            TOOL,
            self.config.token.as_deref(),
            rest,
        ) {
            // The client is still in the opening, reading that message set: an Error
            // there reads as the token sentence, not as "unknown message kind".
            let _ = channel.send(
                &Message::Error(fabric::control::ErrorMsg {
                    message: e.to_string(),
                }),
                Duration::from_secs(1),
            );
            return Err(e.into());
        }
        let attach = match answer_errors::<KvMessage>(
            &mut channel,
            false,
            timeout,
            "waiting for Attach from",
        )? {
            KvMessage::Attach(attach) => attach,
            KvMessage::AttachRail(join) => return self.join_rail(channel, join),
            other => return Err(FabricError::unexpected("Attach", &other).into()),
        };
        let layout = self.layout();
        let problem = (attach.decode_tp == 0
            || attach.decode_tp > MAX_DECODE_TP
            || attach.decode_rank >= attach.decode_tp)
            .then(|| {
                format!(
                    "decode says it is TP rank {} of {}: ranks run from 0 to TP-1, and TP is 1 to {MAX_DECODE_TP}",
                    attach.decode_rank, attach.decode_tp
                )
            });
        let problem = problem.or_else(|| mismatch(&layout.shape, &attach.shape, "prefill", "decode")).or_else(|| {
            (attach.hash != compat_hash(&attach.shape)).then(|| {
                "decode's compatibility hash does not match its own layout: run the same kvxfer version on both nodes".to_string()
            })
        });
        if let Some(problem) = problem {
            refuse(&mut channel, None, &problem, timeout);
            return Err(KvError::Refused(problem));
        }
        // Rails: this connection's address first, then the others; a session that may be
        // striped gets a cookie its rail connections present.
        let here = channel.stream().local_addr().ok();
        let rails: Vec<SocketAddr> = match here {
            Some(here) if self.config.rails.len() > 1 && self.config.rails.contains(&here) => {
                std::iter::once(here)
                    .chain(self.config.rails.iter().copied().filter(|a| *a != here))
                    .collect()
            }
            _ => Vec::new(),
        };
        let cookie = if rails.is_empty() {
            String::new()
        } else {
            let cookie = fabric::control::nonce()?;
            self.rail_joins
                .lock()
                .map_err(|_| KvError::poisoned())?
                .sessions
                .insert(cookie.clone(), Vec::new());
            cookie
        };
        let _joins = RailCookie {
            agent: self,
            cookie: &cookie,
        };
        channel.send(
            &KvMessage::Welcome(Welcome {
                shape: layout.shape.clone(),
                hash: compat_hash(&layout.shape),
                tp: layout.tp,
                tp_rank: layout.tp_rank,
                dp_rank: self.config.dp_rank,
                num_blocks: layout.num_blocks,
                lease_ms: self.config.lease.as_millis() as u64,
                rails: rails.iter().map(ToString::to_string).collect(),
                rail_cookie: cookie.clone(),
            }),
            timeout,
        )?;
        let mut pieces = Vec::new();
        let mut rail_pieces: Vec<Vec<Piece>> = Vec::new();
        // Rails 1.. of this session, taken from the joins on the first striped pull.
        let mut rail_streams: Vec<TcpStream> = Vec::new();
        // Registered on the first RdmaConnect; dropped (deregistered) with the session.
        let mut rdma: Option<Endpoint> = None;
        loop {
            let message = match answer_errors::<KvMessage>(
                &mut channel,
                false,
                self.config.idle_timeout,
                "waiting for the next request from",
            ) {
                Ok(m) => m,
                Err(FabricError::PeerClosed { detail, .. }) if detail.is_empty() => return Ok(()),
                Err(FabricError::Timeout { .. }) if channel.idle() => {
                    // Idle, not stuck mid-frame: say goodbye; decode reconnects when needed.
                    let _ = channel.send(&KvMessage::Bye, Duration::from_secs(1));
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            match message {
                KvMessage::Prefill(request) => {
                    let id = request.request_id.clone();
                    match self.prefill(request, session) {
                        Ok(blocks) => channel.send(
                            &KvMessage::Prefilled(Prefilled {
                                request_id: id,
                                blocks,
                            }),
                            timeout,
                        )?,
                        Err(e) => self.refuse_request(&mut channel, id, e)?,
                    }
                }
                KvMessage::Pull(pull) if pull.rdma && rdma.is_none() => {
                    let e = KvError::Refused("an RDMA pull before RdmaConnect".into());
                    self.refuse_request(&mut channel, pull.request_id, e)?;
                }
                KvMessage::Pull(pull) if pull.rails > 1 && !pull.rdma => {
                    match self.take_rails(&cookie, pull.rails as usize, &mut rail_streams) {
                        Ok(()) => {
                            let rails = &rail_streams[..pull.rails as usize - 1];
                            let buffers = (&mut pieces, &mut rail_pieces);
                            self.pull(&mut channel, pull, buffers, session, rails)?;
                        }
                        Err(e) => self.refuse_request(&mut channel, pull.request_id, e)?,
                    }
                }
                KvMessage::Pull(pull) => {
                    let buffers = (&mut pieces, &mut rail_pieces);
                    self.pull(&mut channel, pull, buffers, session, &[])?;
                }
                KvMessage::RdmaConnect(theirs) if rdma.is_none() => {
                    let registration = self
                        .registration
                        .as_ref()
                        .map_err(|(_, why)| KvError::Config(why.clone()));
                    match registration
                        .and_then(|r| rdma::endpoint_on(r, &self.config.rdma))
                        .and_then(|mut ep| ep.connect(&theirs).map(|()| ep).map_err(KvError::from))
                    {
                        Ok(ep) => {
                            channel.send(&KvMessage::RdmaConnected(ep.local()), timeout)?;
                            rdma = Some(ep);
                        }
                        Err(e) => {
                            refuse(&mut channel, None, &e.to_string(), timeout);
                            return Err(e);
                        }
                    }
                }
                KvMessage::Complete(done) => {
                    self.complete(&done.request_id, done.ok, &peer, session);
                }
                KvMessage::Bye => return Ok(()),
                other => {
                    let e = FabricError::unexpected("Prefill, Pull, Complete or Bye", &other);
                    refuse(&mut channel, None, &e.to_string(), timeout);
                    return Err(e.into());
                }
            }
        }
    }

    fn refuse_request(
        &self,
        channel: &mut Channel,
        id: String,
        error: KvError,
    ) -> Result<(), KvError> {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.log_peer(&format!(
            "{}: refused request {}: {error}",
            channel.peer(),
            shown(&id)
        ));
        channel.send(
            &KvMessage::Refused(Refused {
                request_id: Some(id),
                message: error.to_string(),
            }),
            self.config.io_timeout,
        )?;
        Ok(())
    }

    fn prefill(&self, request: wire::Prefill, session: u64) -> Result<Vec<u32>, KvError> {
        let started = Instant::now();
        let deadline = started + self.config.io_timeout;
        let mut state = self.state()?;
        let blocks = loop {
            let now = Instant::now();
            let allocation = state.prefill(session, &request, now);
            self.drain_events(&mut state);
            match allocation? {
                Allocation::Attached(blocks) => return Ok(blocks),
                Allocation::Fresh(blocks) => break blocks,
                Allocation::Wait { retry_at, .. } => {
                    self.stats.waits_for_blocks.fetch_add(1, Ordering::Relaxed);
                    if now >= deadline {
                        return Err(state.pool_full(&request, now - started));
                    }
                    let until = retry_at.map_or(deadline, |t| t.clamp(now, deadline));
                    state = self
                        .freed
                        .wait_timeout(state, until - now)
                        .map_err(|_| KvError::poisoned())?
                        .0;
                }
            }
        };
        drop(state);
        if request.fill {
            // The blocks are ours alone until `publish` leases them.
            pattern::fill(
                &self.pool,
                &blocks,
                pattern::request_seed(&request.request_id),
            );
        }
        let mut state = self.state()?;
        let published = state.publish(session, &request, blocks, Instant::now());
        self.drain_events(&mut state);
        if published.is_ok() {
            self.stats.prefilled.fetch_add(1, Ordering::Relaxed);
        }
        published
    }

    fn begin_pull(&self, pull: &wire::Pull, session: u64) -> Result<Instant, KvError> {
        let mut state = self.state()?;
        let deadline = state.begin_pull(session, pull, Instant::now());
        self.drain_events(&mut state);
        deadline
    }

    fn end_pull(&self, id: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.end_pull(id, Instant::now());
            self.drain_events(&mut state);
        }
    }

    /// Serves one pull; `buffers` are the session's reusable plan lists (all pieces, and
    /// each rail's), `rails` its rail connections 1.. when the pull is striped.
    fn pull(
        &self,
        channel: &mut Channel,
        pull: wire::Pull,
        buffers: (&mut Vec<Piece>, &mut Vec<Vec<Piece>>),
        session: u64,
        rails: &[TcpStream],
    ) -> Result<(), KvError> {
        let deadline = match self.begin_pull(&pull, session) {
            Ok(deadline) => deadline,
            Err(e) => return self.refuse_request(channel, pull.request_id, e),
        };
        let (pieces, rail_pieces) = buffers;
        let result = if pull.rdma {
            self.grant(channel, &pull, pieces)
        } else {
            self.stream(channel, &pull, (pieces, rail_pieces), deadline, rails)
        };
        self.end_pull(&pull.request_id);
        result
    }

    /// An RDMA pull: sends the checksums, then holds the blocks until decode's READs are
    /// done (ReadDone), or the connection or the timeout ends the wait.
    fn grant(
        &self,
        channel: &mut Channel,
        pull: &wire::Pull,
        pieces: &mut Vec<Piece>,
    ) -> Result<(), KvError> {
        let crc32c = if pull.checksums {
            let layout = self.layout();
            plan(
                layout,
                &pull.blocks,
                layout,
                &pull.blocks,
                pull.head_start..pull.head_end,
                pieces,
            );
            // SAFETY: the lease keeps these blocks allocated and unwritten while active_pulls > 0.
            block_checksums(pieces, pull.blocks.len(), |p| unsafe {
                self.pool.slice(p.src, p.len)
            })
        } else {
            Vec::new()
        };
        let id = pull.request_id.clone();
        channel.send(
            &KvMessage::Granted(Granted {
                request_id: id.clone(),
                crc32c,
            }),
            self.config.io_timeout,
        )?;
        match channel.recv_as::<KvMessage>(
            self.config.io_timeout,
            "waiting for the end of RDMA READs from",
        )? {
            KvMessage::ReadDone(done) if done.request_id == id => {
                self.stats.pulls.fetch_add(1, Ordering::Relaxed);
                let bytes =
                    stream_bytes_per_block(&self.layout().shape, &(pull.head_start..pull.head_end));
                self.stats
                    .bytes_sent
                    .fetch_add(bytes * pull.blocks.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            other => Err(FabricError::unexpected("ReadDone", &other).into()),
        }
    }

    /// Streams a pull's bytes; the lease is the transfer's deadline, so a reader that
    /// trickles cannot hold the blocks past it.
    fn stream(
        &self,
        channel: &mut Channel,
        pull: &wire::Pull,
        (pieces, rail_pieces): (&mut Vec<Piece>, &mut Vec<Vec<Piece>>),
        deadline: Instant,
        rails: &[TcpStream],
    ) -> Result<(), KvError> {
        let layout = self.layout();
        let heads = pull.head_start..pull.head_end;
        plan(
            layout,
            &pull.blocks,
            layout,
            &pull.blocks,
            heads.clone(),
            pieces,
        );
        let bytes = stream_bytes_per_block(&layout.shape, &heads) * pull.blocks.len() as u64;
        let timeout = self.config.io_timeout;
        channel.send(
            &KvMessage::Sending(Sending {
                request_id: pull.request_id.clone(),
                bytes,
            }),
            timeout,
        )?;
        let peer = channel.peer().to_string();
        let (blocks, checksums) = (pull.blocks.len(), pull.checksums);
        // SAFETY: the lease keeps these blocks allocated and unwritten while active_pulls > 0.
        let bytes_of = |p: &Piece| unsafe { self.pool.slice(p.src, p.len) };
        // One rail's share: each batch's checksums are taken right after the kernel copied
        // it, while the bytes are still in cache and the socket drains meanwhile.
        let send_rail = |stream: &TcpStream, pieces: &[Piece]| {
            let mut crcs = vec![0u32; if checksums { blocks } else { 0 }];
            let sent = write_pieces(stream, pieces, deadline, bytes_of, |batch| {
                if checksums {
                    for piece in batch {
                        let crc = &mut crcs[piece.block as usize];
                        *crc = crate::integrity::crc32c_append(*crc, bytes_of(piece));
                    }
                }
            });
            (crcs, sent)
        };
        let mut outcomes = if rails.is_empty() {
            vec![send_rail(channel.stream(), pieces)]
        } else {
            // Striped: rail 0 is this connection, on this thread; the others in parallel.
            rails::split(pieces, rails.len() + 1, rail_pieces);
            rails::on_every_rail(channel.stream(), rails.iter(), rail_pieces, &send_rail)
        };
        if let Some(rail) = outcomes.iter().position(|(_, sent)| sent.is_err()) {
            let Some((_, Err(e))) = outcomes.drain(rail..).next() else {
                unreachable!("position found an error at {rail}");
            };
            let on = match rail {
                0 if rails.is_empty() => String::new(),
                0 => " on rail 0".to_string(),
                r => format!(
                    " on rail {r} ({})",
                    rails[r - 1]
                        .local_addr()
                        .map_or_else(|_| "?".into(), |a| a.ip().to_string())
                ),
            };
            let what = format!("sending request {} to {peer}{on}", shown(&pull.request_id));
            return Err(
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) {
                    KvError::Refused(format!(
                        "{what}: the pull outlived the request's lease ({} ms): decode reads too slowly",
                        self.config.lease.as_millis()
                    ))
                } else {
                    FabricError::io(what, e).into()
                },
            );
        }
        let crc32c = if !checksums {
            Vec::new()
        } else if outcomes.len() == 1 {
            outcomes.pop().map(|(crcs, _)| crcs).unwrap_or_default()
        } else {
            let per_rail: Vec<Vec<u32>> = outcomes.into_iter().map(|(crcs, _)| crcs).collect();
            rails::merge_checksums(&per_rail, blocks)
        };
        channel.send(
            &KvMessage::Sent(Sent {
                request_id: pull.request_id.clone(),
                crc32c,
            }),
            timeout,
        )?;
        self.stats.pulls.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// A rail connection joins the session that holds `join.cookie`; it carries data only.
    fn join_rail(&self, mut channel: Channel, join: wire::AttachRail) -> Result<(), KvError> {
        let timeout = self.config.io_timeout;
        let index = join.index as usize;
        let placed = (|| {
            if index == 0 || index >= MAX_RAILS {
                return Err(format!(
                    "rail index {index}: rails 1 to {} join a session (0 is its own connection)",
                    MAX_RAILS - 1
                ));
            }
            let stream = channel
                .stream()
                .try_clone()
                .map_err(|e| format!("cannot keep the rail connection: {e}"))?;
            let mut joins = self
                .rail_joins
                .lock()
                .map_err(|_| KvError::poisoned().to_string())?;
            let slots = joins.sessions.get_mut(&join.cookie).ok_or_else(|| {
                "no session has that rail cookie (it ended, or this prefill restarted): reconnect"
                    .to_string()
            })?;
            if slots.len() <= index {
                slots.resize_with(index + 1, || None);
            }
            if slots[index].is_some() {
                return Err(format!("rail {index} of that session already joined"));
            }
            slots[index] = Some(stream);
            Ok(())
        })();
        match placed {
            // The session owns the socket now (its own descriptor); this one only acks.
            Ok(()) => Ok(channel.send(&KvMessage::RailAttached, timeout)?),
            Err(problem) => {
                refuse(&mut channel, None, &problem, timeout);
                Err(KvError::Refused(problem))
            }
        }
    }

    /// Makes sure the session holds rails 1..count, taking them from the joins.
    fn take_rails(
        &self,
        cookie: &str,
        count: usize,
        streams: &mut Vec<TcpStream>,
    ) -> Result<(), KvError> {
        if count > MAX_RAILS {
            return Err(KvError::Refused(format!(
                "a pull striped over {count} rails: at most {MAX_RAILS}"
            )));
        }
        if streams.len() + 1 >= count {
            return Ok(());
        }
        let mut joins = self.rail_joins.lock().map_err(|_| KvError::poisoned())?;
        let slots = joins.sessions.get_mut(cookie).ok_or_else(|| {
            KvError::Refused(
                "a striped pull, but this prefill serves one rail: pull without rails".into(),
            )
        })?;
        while streams.len() + 1 < count {
            let index = streams.len() + 1;
            match slots.get_mut(index).and_then(Option::take) {
                Some(stream) => streams.push(stream),
                None => {
                    return Err(KvError::Refused(format!(
                        "a pull striped over {count} rails, but rail {index} has not joined: attach every rail first"
                    )))
                }
            }
        }
        Ok(())
    }

    /// A connection closed: its requests lose that reader (see [`PrefillState::closed`]).
    fn forget(&self, session: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.closed(session);
            self.drain_events(&mut state);
        }
    }

    fn complete(&self, id: &str, ok: bool, peer: &SocketAddr, session: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.complete(session, id, ok);
            while let Some(event) = state.poll_event() {
                // These lines name the connection that caused them.
                let line = match event {
                    Event::CompletionForUnknown { request_id } => format!(
                        "{peer}: completion for unknown request {} ignored",
                        shown(&request_id)
                    ),
                    Event::CompletionFromStranger { request_id } => format!(
                        "{peer}: completion for request {} from a connection that does not hold it ignored",
                        shown(&request_id)
                    ),
                    Event::GaveUp { request_id } => {
                        format!("{peer}: decode gave up on request {}", shown(&request_id))
                    }
                    Event::Expired { .. } => continue,
                };
                self.log_peer(&line);
            }
            if state.take_wake_waiters() {
                self.freed.notify_all();
            }
        }
    }
}

/// Reads one frame; a frame that breaks the protocol (bad magic, another version, an
/// oversize or malformed message) gets an answer saying so before the connection
/// closes, instead of a silent close.
/// The answer goes in the message set the peer is reading: the opening's (linkbench
/// `Message::Error`) before the handshake, kvxfer's `Refused` after it.
fn answer_errors<M: fabric::control::Wire>(
    channel: &mut Channel,
    opening: bool,
    wait: Duration,
    what: &str,
) -> Result<M, FabricError> {
    match channel.recv_as::<M>(wait, what) {
        Err(FabricError::Protocol(problem)) => {
            let message = format!("kvxfer prefill refused this connection: {problem}");
            if opening {
                let _ = channel.send(
                    &Message::Error(fabric::control::ErrorMsg { message }),
                    Duration::from_secs(1),
                );
            } else {
                refuse(channel, None, &message, Duration::from_secs(1));
            }
            Err(FabricError::Protocol(problem))
        }
        other => other,
    }
}

/// A peer-supplied string made safe to log: control characters (newlines, ANSI escapes)
/// are escaped, so a request id cannot forge log lines.
fn shown(text: &str) -> String {
    text.escape_debug().to_string()
}

fn refuse(channel: &mut Channel, request_id: Option<String>, message: &str, timeout: Duration) {
    let _ = channel.send(
        &KvMessage::Refused(Refused {
            request_id,
            message: message.to_string(),
        }),
        timeout.min(Duration::from_secs(1)),
    );
}

/// Writes every piece's bytes in order with vectored writes (a batch of at most 64
/// pieces and 512 KiB a call, see [`Batches`]),
/// all of it before `deadline` (a timeout error after it, however the peer paces reads).
pub(crate) fn write_pieces<'a>(
    stream: &TcpStream,
    pieces: &[Piece],
    deadline: Instant,
    bytes: impl Fn(&Piece) -> &'a [u8],
    mut sent: impl FnMut(&[Piece]),
) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    // One timer for the whole transfer; each write also checks the clock.
    stream.set_write_timeout(Some(left))?;
    let mut slices: [IoSlice<'a>; BATCH_PIECES] = [IoSlice::new(&[]); BATCH_PIECES];
    let mut batches = Batches::new(pieces);
    while let Some(chunk) = batches.next_batch() {
        for (slot, piece) in slices.iter_mut().zip(chunk) {
            *slot = IoSlice::new(bytes(piece));
        }
        let mut pending = &mut slices[..chunk.len()];
        while !pending.is_empty() {
            // sendmsg with MSG_NOSIGNAL, not writev: the tools restore SIGPIPE's default
            // (for `| head`), and a decode that dies mid-transfer must cost this prefill
            // one failed pull, not the process.
            let written = match socket2::SockRef::from(stream)
                .send_vectored_with_flags(pending, libc::MSG_NOSIGNAL)
            {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            IoSlice::advance_slices(&mut pending, written);
            if !pending.is_empty() && Instant::now() >= deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
        sent(chunk);
    }
    Ok(())
}

/// CRC32C of each block pair's bytes, in stream order.
pub(crate) fn block_checksums<'a>(
    pieces: &[Piece],
    blocks: usize,
    bytes: impl Fn(&Piece) -> &'a [u8],
) -> Vec<u32> {
    let mut crcs = vec![0u32; blocks];
    for piece in pieces {
        let crc = &mut crcs[piece.block as usize];
        *crc = crate::integrity::crc32c_append(*crc, bytes(piece));
    }
    crcs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Hole: the tools restore SIGPIPE's default (for `| head`), and the prefill's
    /// vectored writes used writev, so a decode killed mid-transfer killed the whole
    /// prefill (exit 141, 23 times in 100 kills). A write to a reset peer must be an
    /// error, not a signal. (Without the fix this test process dies of SIGPIPE.)
    #[test]
    fn a_reset_peer_fails_the_write_instead_of_killing_the_process() {
        // SAFETY: restores one signal's default disposition, as every tool's main does.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        // Close with a reset (linger 0), as a killed process's socket does mid-transfer.
        socket2::SockRef::from(&reader)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(reader);
        std::thread::sleep(Duration::from_millis(50));
        let data = vec![7u8; 1 << 20];
        let pieces: Vec<Piece> = (0..64)
            .map(|i| Piece {
                src: i * (16 << 10),
                dst: 0,
                len: 16 << 10,
                block: 0,
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The first write after the reset reports it (ECONNRESET); later ones are EPIPE,
        // which is where writev raised SIGPIPE.
        let errors: Vec<std::io::ErrorKind> = (0..4)
            .filter_map(|_| {
                write_pieces(
                    &sender,
                    &pieces,
                    deadline,
                    |p| &data[p.src as usize..(p.src + p.len) as usize],
                    |_| {},
                )
                .err()
                .map(|e| e.kind())
            })
            .collect();
        assert!(
            errors.contains(&std::io::ErrorKind::BrokenPipe),
            "{errors:?}"
        );
    }
}
