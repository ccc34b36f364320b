//! The decode side: a link to one prefill rank (attach, prefill, pull, complete) and the
//! agent that moves a whole request from every prefill rank holding its heads straight
//! into the local pool. Data is read with vectored reads into the destination blocks;
//! nothing stages a whole request.

use crate::compat::compat_hash;
use crate::plan::{plan, sources, stream_bytes_per_block, Batches, Piece, Source, BATCH_PIECES};
use crate::pool::{BlockAllocator, KvPool};
use crate::prefill::block_checksums;
use crate::rails;
use crate::rdma::{self, RdmaOptions};
use crate::wire::{self, Attach, AttachRail, Complete, KvMessage, Pull, ReadDone, Welcome};
use crate::{pattern, KvError, KvLayout, KvShape, TOOL};
use fabric::channel::Channel;
use fabric::rdma::{Endpoint, RemoteRegion};
use fabric::tcp::{self, SocketOptions};
use fabric::{handshake, FabricError};
use std::io::{IoSliceMut, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod state;

pub use state::{Expect, Next, PullState};

/// Who this decode rank is and how it talks to a prefill rank.
pub struct LinkParams<'a> {
    pub shape: &'a KvShape,
    pub decode_tp: u32,
    pub decode_rank: u32,
    /// The DP rank decode addresses (prefill refuses any other).
    pub dp_rank: u32,
    pub token: Option<&'a [u8]>,
    pub timeout: Duration,
    /// Pull with RDMA READ into this pool (which must outlive the link).
    pub rdma: Option<(&'a KvPool, &'a RdmaOptions)>,
    /// Stripe pulls over every rail the prefill announces (TCP only).
    pub rails: bool,
}

/// One decode connection to one prefill rank.
pub struct PrefillLink {
    channel: Channel,
    pub welcome: Welcome,
    remote: KvLayout,
    dp_rank: u32,
    timeout: Duration,
    pieces: Vec<Piece>,
    /// Connected QP and prefill's registered pool, when pulling over RDMA.
    rdma: Option<(Endpoint, RemoteRegion)>,
    /// Multi-rail: connections to prefill's other rails (rail 1..), and each rail's
    /// share of the current plan (reused from pull to pull).
    rails: Vec<(TcpStream, String)>,
    rail_pieces: Vec<Vec<Piece>>,
}

impl PrefillLink {
    pub fn connect(addr: SocketAddr, params: &LinkParams) -> Result<PrefillLink, KvError> {
        let (shape, timeout) = (params.shape, params.timeout);
        let (decode_tp, decode_rank, token) = (params.decode_tp, params.decode_rank, params.token);
        let options = SocketOptions {
            nodelay: true,
            ..SocketOptions::default()
        };
        let stream = tcp::connect(addr, timeout, &options)?;
        let mut channel = Channel::new(stream, addr.to_string());
        handshake::open_client_within(&mut channel, TOOL, token, timeout)?;
        channel.send(
            &KvMessage::Attach(Attach {
                shape: shape.clone(),
                hash: compat_hash(shape),
                decode_tp,
                decode_rank,
            }),
            timeout,
        )?;
        let welcome = match channel.recv_as::<KvMessage>(timeout, "waiting for Welcome from")? {
            KvMessage::Welcome(w) => w,
            KvMessage::Refused(r) => {
                return Err(KvError::Refused(format!(
                    "prefill {addr} refused: {}",
                    r.message
                )))
            }
            other => return Err(FabricError::unexpected("Welcome", &other).into()),
        };
        if welcome.shape != *shape || welcome.hash != compat_hash(shape) {
            return Err(KvError::Refused(format!(
                "prefill {addr} welcomed a different KV layout (hash {} here, {} there): run the same kvxfer version on both nodes",
                compat_hash(shape),
                welcome.hash
            )));
        }
        let remote = KvLayout::new(
            welcome.shape.clone(),
            welcome.tp,
            welcome.tp_rank,
            welcome.num_blocks,
        )
        .map_err(|e| {
            KvError::Refused(format!(
                "prefill {addr} announced an impossible layout: {e}"
            ))
        })?;
        let rdma = match params.rdma {
            Some((pool, options)) => {
                Some(connect_rdma(&mut channel, &remote, pool, options, timeout)?)
            }
            None => None,
        };
        let rails = if params.rails && rdma.is_none() && welcome.rails.len() > 1 {
            connect_rails(&welcome, addr, params)?
        } else {
            Vec::new()
        };
        Ok(PrefillLink {
            channel,
            welcome,
            remote,
            dp_rank: params.dp_rank,
            timeout,
            pieces: Vec::new(),
            rdma,
            rails,
            rail_pieces: Vec::new(),
        })
    }

    /// How many rails this link stripes pulls over (1: its own connection only).
    pub fn rails(&self) -> usize {
        self.rails.len() + 1
    }

    pub fn peer(&self) -> &str {
        self.channel.peer()
    }

    fn recv_within(&mut self, wait: Duration, what: &str, id: &str) -> Result<KvMessage, KvError> {
        match self.channel.recv_as::<KvMessage>(wait, what)? {
            KvMessage::Refused(r) if r.request_id.as_deref() == Some(id) => {
                Err(KvError::Refused(format!(
                    "prefill {} refused request {id}: {}",
                    self.channel.peer(),
                    r.message
                )))
            }
            // Refusing the whole session (not one request): the connection is done.
            KvMessage::Refused(r) => Err(FabricError::Remote(r.message).into()),
            other => Ok(other),
        }
    }

    /// Asks this rank to prefill `tokens` tokens of `request_id`; returns its block ids.
    pub fn prefill(&mut self, request: &wire::Prefill) -> Result<Vec<u32>, KvError> {
        self.channel
            .send(&KvMessage::Prefill(request.clone()), self.timeout)?;
        // Prefill waits up to the same timeout for free blocks before it refuses; waiting a
        // little longer lets its "pool full" arrive instead of our own timeout.
        let wait = self.timeout + ANSWER_GRACE;
        match self.recv_within(
            wait,
            "waiting for prefilled blocks from",
            &request.request_id,
        )? {
            KvMessage::Prefilled(p) if p.request_id == request.request_id => {
                let expected = request.tokens.div_ceil(self.remote.shape.block_size as u64);
                if p.blocks.len() as u64 != expected {
                    return Err(KvError::Integrity(format!(
                        "prefill {} returned {} blocks for {} tokens ({expected} expected)",
                        self.peer(),
                        p.blocks.len(),
                        request.tokens
                    )));
                }
                Ok(p.blocks)
            }
            other => Err(FabricError::unexpected("Prefilled", &other).into()),
        }
    }

    /// Pulls global `heads` of `remote_blocks` into `local_blocks` of `pool`, checking the
    /// per-block CRC32C when `checksums`. The caller holds `local_blocks` exclusively.
    pub fn pull(
        &mut self,
        request_id: &str,
        remote_blocks: &[u32],
        heads: std::ops::Range<u32>,
        pool: &KvPool,
        local_blocks: &[u32],
        checksums: bool,
    ) -> Result<u64, KvError> {
        if remote_blocks.len() != local_blocks.len() {
            return Err(KvError::Config(format!(
                "{} remote blocks but {} local blocks: give one local block per remote block",
                remote_blocks.len(),
                local_blocks.len()
            )));
        }
        for &block in local_blocks {
            pool.layout().check_block(block)?;
        }
        self.channel.send(
            &KvMessage::Pull(Pull {
                request_id: request_id.into(),
                dp_rank: self.dp_rank,
                tp_rank: self.remote.tp_rank,
                blocks: remote_blocks.to_vec(),
                head_start: heads.start,
                head_end: heads.end,
                checksums,
                rdma: self.rdma.is_some(),
                rails: if self.rails.is_empty() {
                    0
                } else {
                    self.rails.len() as u32 + 1
                },
            }),
            self.timeout,
        )?;
        let expected =
            stream_bytes_per_block(&self.remote.shape, &heads) * remote_blocks.len() as u64;
        let peer = self.channel.peer().to_string();
        // The timeout bounds the whole transfer, not each read: a prefill that drips a
        // byte a second cannot hold this side for longer.
        let mut state = PullState::new(
            request_id,
            &peer,
            remote_blocks,
            Expect {
                bytes: expected,
                checksums,
                rdma: self.rdma.is_some(),
            },
            Instant::now(),
            self.timeout,
        );
        let wanted = Wanted {
            request_id,
            heads,
            remote_blocks,
            local_blocks,
            checksums,
        };
        loop {
            let message = self.recv_within(
                state
                    .deadline()
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
                state.waiting_for(),
                request_id,
            )?;
            let ours = match state.on_message(message, Instant::now())? {
                Next::Done { bytes } => return Ok(bytes),
                Next::Await => continue,
                Next::Read => self.read_rdma(&wanted, pool)?,
                Next::Receive { .. } => self.receive(&wanted, pool, state.deadline())?,
            };
            if let Next::Done { bytes } = state.landed(ours, Instant::now())? {
                return Ok(bytes);
            }
        }
    }

    /// Receives a TCP pull's data into the local blocks (striped over the rails when there
    /// are several); returns each block's CRC32C (empty without `checksums`).
    fn receive(
        &mut self,
        wanted: &Wanted,
        pool: &KvPool,
        deadline: Instant,
    ) -> Result<Vec<u32>, KvError> {
        let (request_id, checksums) = (wanted.request_id, wanted.checksums);
        let remote_blocks = wanted.remote_blocks;
        self.plan_pull(
            remote_blocks,
            wanted.heads.clone(),
            pool,
            wanted.local_blocks,
        )?;
        let peer = self.channel.peer().to_string();
        let blocks = remote_blocks.len();
        // One rail's share, checksummed batch by batch as it lands.
        // SAFETY: the caller holds local_blocks exclusively; pieces stay inside them (each
        // rail its own), and a batch is read only after its mutable views are gone.
        let receive_rail = |stream: &TcpStream, pieces: &[Piece]| {
            let mut crcs = vec![0u32; if checksums { blocks } else { 0 }];
            let received = read_pieces(
                stream,
                pieces,
                deadline,
                |p| unsafe { pool.slice_mut(p.dst, p.len) },
                |landed| {
                    if checksums {
                        for piece in landed {
                            let crc = &mut crcs[piece.block as usize];
                            *crc = crate::integrity::crc32c_append(*crc, unsafe {
                                pool.slice(piece.dst, piece.len)
                            });
                        }
                    }
                },
            );
            (crcs, received)
        };
        let mut outcomes = if self.rails.is_empty() {
            vec![receive_rail(self.channel.stream(), &self.pieces)]
        } else {
            // Striped: rail 0 is this connection, on this thread; the others in parallel.
            rails::split(&self.pieces, self.rails.len() + 1, &mut self.rail_pieces);
            let others = self.rails.iter().map(|(stream, _)| stream);
            rails::on_every_rail(
                self.channel.stream(),
                others,
                &self.rail_pieces,
                &receive_rail,
            )
        };
        if let Some(rail) = outcomes.iter().position(|(_, received)| received.is_err()) {
            let Some((_, Err(e))) = outcomes.drain(rail..).next() else {
                unreachable!("position found an error at {rail}");
            };
            let on = match rail {
                0 if self.rails.is_empty() => String::new(),
                0 => " on rail 0".to_string(),
                r => format!(" on rail {r} ({})", self.rails[r - 1].1),
            };
            let what = format!("receiving request {request_id} from {peer}{on}");
            return Err(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => FabricError::PeerClosed {
                    what,
                    detail: " in the middle of the KV data".into(),
                },
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    FabricError::Timeout {
                        what,
                        after: self.timeout,
                    }
                }
                _ => FabricError::io(what, e),
            }
            .into());
        }
        Ok(if outcomes.len() == 1 {
            outcomes.pop().map(|(crcs, _)| crcs).unwrap_or_default()
        } else {
            let per_rail: Vec<Vec<u32>> = outcomes.into_iter().map(|(crcs, _)| crcs).collect();
            rails::merge_checksums(&per_rail, if checksums { blocks } else { 0 })
        })
    }

    /// Checks the remote ids against prefill's pool and plans the pull into `self.pieces`.
    fn plan_pull(
        &mut self,
        remote_blocks: &[u32],
        heads: std::ops::Range<u32>,
        pool: &KvPool,
        local_blocks: &[u32],
    ) -> Result<(), KvError> {
        for block in remote_blocks {
            self.remote
                .check_block(*block)
                .map_err(|e| KvError::Integrity(e.to_string()))?;
        }
        plan(
            &self.remote,
            remote_blocks,
            pool.layout(),
            local_blocks,
            heads,
            &mut self.pieces,
        );
        Ok(())
    }

    /// The RDMA half of [`Self::pull`], once granted: READs every piece, says ReadDone,
    /// and returns each block's CRC32C of what landed.
    fn read_rdma(&mut self, wanted: &Wanted, pool: &KvPool) -> Result<Vec<u32>, KvError> {
        let (request_id, remote_blocks) = (wanted.request_id, wanted.remote_blocks);
        self.plan_pull(
            remote_blocks,
            wanted.heads.clone(),
            pool,
            wanted.local_blocks,
        )?;
        let Some((endpoint, region)) = self.rdma.as_mut() else {
            return Err(KvError::Config(
                "an RDMA pull on a link without RDMA".into(),
            ));
        };
        let read = rdma::read_pieces(endpoint, region, &self.pieces, self.timeout, request_id);
        // Tell prefill the blocks are free to reuse whatever happened to the READs.
        let done = self.channel.send(
            &KvMessage::ReadDone(ReadDone {
                request_id: request_id.into(),
            }),
            self.timeout,
        );
        read?;
        done?;
        if !wanted.checksums {
            return Ok(Vec::new());
        }
        // SAFETY: the caller holds local_blocks; the READs have completed.
        Ok(block_checksums(
            &self.pieces,
            remote_blocks.len(),
            |p| unsafe { pool.slice(p.dst, p.len) },
        ))
    }

    pub fn complete(&mut self, request_id: &str, ok: bool) -> Result<(), KvError> {
        self.channel.send(
            &KvMessage::Complete(Complete {
                request_id: request_id.into(),
                ok,
            }),
            self.timeout,
        )?;
        Ok(())
    }

    pub fn close(mut self) {
        let _ = self.channel.send(&KvMessage::Bye, Duration::from_secs(1));
    }
}

/// Opens one connection to each of prefill's other rails and joins it to the session.
fn connect_rails(
    welcome: &Welcome,
    primary: SocketAddr,
    params: &LinkParams,
) -> Result<Vec<(TcpStream, String)>, KvError> {
    if welcome.rails.len() > crate::rails::MAX_RAILS {
        return Err(KvError::Refused(format!(
            "prefill {primary} announced {} rails: at most {}",
            welcome.rails.len(),
            crate::rails::MAX_RAILS
        )));
    }
    let mut rails = Vec::with_capacity(welcome.rails.len() - 1);
    for (index, text) in welcome.rails.iter().enumerate().skip(1) {
        let addr: SocketAddr = text.parse().map_err(|_| {
            KvError::Refused(format!(
                "prefill {primary} announced rail {index} as {text:?}, not an address"
            ))
        })?;
        let joined = (|| -> Result<TcpStream, KvError> {
            let stream = tcp::connect(addr, params.timeout, &SocketOptions::default())?;
            let mut channel = Channel::new(stream, addr.to_string());
            handshake::open_client_within(&mut channel, TOOL, params.token, params.timeout)?;
            channel.send(
                &KvMessage::AttachRail(AttachRail {
                    cookie: welcome.rail_cookie.clone(),
                    index: index as u32,
                }),
                params.timeout,
            )?;
            match channel.recv_as::<KvMessage>(params.timeout, "waiting for the rail to join at")? {
                KvMessage::RailAttached => Ok(channel.into_stream()),
                KvMessage::Refused(r) => Err(KvError::Refused(r.message)),
                other => Err(FabricError::unexpected("RailAttached", &other).into()),
            }
        })();
        let stream = joined.map_err(|e| {
            KvError::Fabric(FabricError::Remote(format!(
                "rail {index} of prefill {primary} ({addr}): {e}; check that this node reaches {} (a route per rail), or pull without rails",
                addr.ip()
            )))
        })?;
        rails.push((stream, addr.ip().to_string()));
    }
    Ok(rails)
}

/// Registers our pool, sends our QP address, connects to prefill's.
fn connect_rdma(
    channel: &mut Channel,
    remote: &KvLayout,
    pool: &KvPool,
    options: &RdmaOptions,
    timeout: Duration,
) -> Result<(Endpoint, RemoteRegion), KvError> {
    let mut endpoint = rdma::endpoint_over(pool, options)?;
    channel.send(&KvMessage::RdmaConnect(endpoint.local()), timeout)?;
    let theirs = match channel.recv_as::<KvMessage>(timeout, "waiting for the RDMA answer from")? {
        KvMessage::RdmaConnected(endpoint) => endpoint,
        KvMessage::Refused(r) => {
            return Err(KvError::Config(format!(
                "prefill {} cannot serve RDMA: {}",
                channel.peer(),
                r.message
            )))
        }
        other => return Err(FabricError::unexpected("RdmaConnected", &other).into()),
    };
    theirs
        .region
        .validate(remote.pool_bytes())
        .map_err(|e| KvError::Integrity(format!("prefill {}: {e}", channel.peer())))?;
    endpoint.connect(&theirs)?;
    Ok((endpoint, theirs.region))
}

/// One pull's arguments, for the halves that move its data.
struct Wanted<'a> {
    request_id: &'a str,
    heads: std::ops::Range<u32>,
    remote_blocks: &'a [u32],
    local_blocks: &'a [u32],
    checksums: bool,
}

/// How much longer than its timeout decode waits for an answer whose refusal prefill
/// decides on the same timeout.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Reads the stream into every piece's destination in order (a batch of at most 64
/// pieces and 512 KiB a call, see [`Batches`](crate::plan::Batches)),
/// all of it before `deadline` (a timeout error after it, however the peer paces writes).
/// `landed` sees each batch of pieces as soon as it is in place, while it is still in
/// cache (the checksums are taken there, not in a second pass over the request).
fn read_pieces<'a>(
    mut stream: &TcpStream,
    pieces: &[Piece],
    deadline: Instant,
    bytes: impl Fn(&Piece) -> &'a mut [u8],
    mut landed: impl FnMut(&[Piece]),
) -> std::io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    // One timer for the whole transfer; each read also checks the clock.
    stream.set_read_timeout(Some(left))?;
    let mut slices: [IoSliceMut<'a>; BATCH_PIECES] =
        std::array::from_fn(|_| IoSliceMut::new(&mut []));
    let mut batches = Batches::new(pieces);
    while let Some(chunk) = batches.next_batch() {
        for (slot, piece) in slices.iter_mut().zip(chunk) {
            *slot = IoSliceMut::new(bytes(piece));
        }
        let mut pending = &mut slices[..chunk.len()];
        while !pending.is_empty() {
            let read = match stream.read_vectored(pending) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            IoSliceMut::advance_slices(&mut pending, read);
            if !pending.is_empty() && Instant::now() >= deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
        // Let go of the batch's mutable views before anyone reads it.
        for slot in &mut slices {
            *slot = IoSliceMut::new(&mut []);
        }
        landed(chunk);
    }
    Ok(())
}

/// Where the decode agent's prefill peers are and how it talks to them.
#[derive(Debug, Clone)]
pub struct DecodeConfig {
    /// Prefill ranks of the target DP rank, any order; each reports its TP rank.
    pub peers: Vec<SocketAddr>,
    pub dp_rank: u32,
    pub token: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Per-block CRC32C, compared with the sender's: a block counts only if it matches.
    pub checksums: bool,
    /// Also check every byte's content against the request's pattern (prefill writes it),
    /// after the timed transfer.
    pub verify: bool,
    /// Pull with RDMA READ instead of a TCP stream.
    pub rdma: Option<RdmaOptions>,
    /// Stripe TCP pulls over every rail a prefill announces.
    pub rails: bool,
}

/// What one request cost.
#[derive(Debug, Clone, Copy)]
pub struct Transferred {
    pub bytes: u64,
    /// From the first Pull to the last byte in place, checksums compared.
    pub transfer: Duration,
    /// The content check after it (zero without verify).
    pub verify: Duration,
}

/// The decode agent: a local pool shared by many worker threads, each with its own
/// links (one per prefill rank it reads).
pub struct DecodeAgent {
    pub pool: KvPool,
    pub blocks: BlockAllocator,
    pub config: DecodeConfig,
    /// The prefill TP size and which peer address serves which rank, from the Welcomes.
    prefill_tp: u32,
    rank_peers: Vec<SocketAddr>,
    sources: Vec<Source>,
    rails: usize,
}

impl DecodeAgent {
    /// Allocates the pool and attaches once to every peer to learn the prefill TP layout.
    pub fn new(layout: KvLayout, config: DecodeConfig) -> Result<Arc<DecodeAgent>, KvError> {
        if config.peers.is_empty() {
            return Err(KvError::Config(format!(
                "no prefill peer given: pass {} (HOST:PORT)",
                measure::Setting::PrefillAddress
            )));
        }
        if let Some(options) = &config.rdma {
            rdma::check(options)?;
        }
        let mut ranks: Vec<(u32, u32, SocketAddr)> = Vec::new();
        let mut announced_rails = 1;
        for &peer in &config.peers {
            let params = LinkParams {
                shape: &layout.shape,
                decode_tp: layout.tp,
                decode_rank: layout.tp_rank,
                dp_rank: config.dp_rank,
                token: config.token.as_deref(),
                timeout: config.timeout,
                rdma: None,
                rails: false,
            };
            let link = PrefillLink::connect(peer, &params)?;
            let w = &link.welcome;
            announced_rails = announced_rails.max(w.rails.len());
            if w.dp_rank != config.dp_rank {
                return Err(KvError::Config(format!(
                    "prefill {peer} is DP rank {}, not {}: list the prefill ranks of one DP rank, or set {} to {}",
                    w.dp_rank, config.dp_rank, measure::Setting::DpRank, w.dp_rank
                )));
            }
            ranks.push((w.tp_rank, w.tp, peer));
            link.close();
        }
        ranks.sort();
        let prefill_tp = ranks[0].1;
        let listed: Vec<u32> = ranks.iter().map(|r| r.0).collect();
        if ranks.iter().any(|r| r.1 != prefill_tp) || listed != (0..prefill_tp).collect::<Vec<_>>()
        {
            return Err(KvError::Config(format!(
                "the prefill peers report TP ranks {listed:?} of TP sizes {:?}: list every prefill TP rank of the DP rank exactly once",
                ranks.iter().map(|r| r.1).collect::<Vec<_>>()
            )));
        }
        let sources = sources(&layout.shape, prefill_tp, layout.tp, layout.tp_rank)?;
        let blocks = BlockAllocator::new(layout.num_blocks);
        Ok(Arc::new(DecodeAgent {
            pool: KvPool::new(layout)?,
            blocks,
            rank_peers: ranks.iter().map(|r| r.2).collect(),
            prefill_tp,
            sources,
            rails: if config.rails && config.rdma.is_none() {
                announced_rails
            } else {
                1
            },
            config,
        }))
    }

    /// Rails each pull is striped over (1: the one connection per prefill rank).
    pub fn rails(&self) -> usize {
        self.rails
    }

    pub fn layout(&self) -> &KvLayout {
        self.pool.layout()
    }

    pub fn prefill_tp(&self) -> u32 {
        self.prefill_tp
    }

    /// The prefill ranks this decode rank reads, with their heads.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Bytes this rank pulls for a request of `tokens` tokens.
    pub fn bytes_per_request(&self, tokens: u64) -> u64 {
        let blocks = tokens.div_ceil(self.layout().shape.block_size as u64);
        self.sources
            .iter()
            .map(|s| stream_bytes_per_block(&self.layout().shape, &s.heads) * blocks)
            .sum()
    }

    /// One worker's links, one per source, connected lazily and dropped on failure.
    pub fn links(self: &Arc<Self>) -> Links {
        Links {
            slots: self.sources.iter().map(|_| None).collect(),
            _pool_owner: Arc::clone(self),
        }
    }

    fn link<'l>(&self, links: &'l mut Links, index: usize) -> Result<&'l mut PrefillLink, KvError> {
        let slot = &mut links.slots[index];
        if slot.as_ref().is_some_and(|link| link.channel.is_stale()) {
            // Prefill closed the session (idle too long, or restarted): start a new one.
            *slot = None;
        }
        if slot.is_none() {
            let peer = self.rank_peers[self.sources[index].prefill_rank as usize];
            let layout = self.layout();
            let params = LinkParams {
                shape: &layout.shape,
                decode_tp: layout.tp,
                decode_rank: layout.tp_rank,
                dp_rank: self.config.dp_rank,
                token: self.config.token.as_deref(),
                timeout: self.config.timeout,
                rdma: self
                    .config
                    .rdma
                    .as_ref()
                    .map(|options| (&self.pool, options)),
                rails: self.config.rails,
            };
            *slot = Some(PrefillLink::connect(peer, &params)?);
        }
        Ok(slot.as_mut().expect("connected above"))
    }

    /// Has every source prefill `request_id`, then pulls it; see [`Self::pull_request`].
    pub fn transfer(
        &self,
        links: &mut Links,
        request_id: &str,
        tokens: u64,
        pull_after: Duration,
    ) -> Result<Transferred, KvError> {
        let remote = self.prefill_all(links, request_id, tokens)?;
        if !pull_after.is_zero() {
            std::thread::sleep(pull_after);
        }
        self.pull_request(links, request_id, &remote, None)
    }

    /// Asks every source to prefill the request; returns each one's block ids.
    pub fn prefill_all(
        &self,
        links: &mut Links,
        request_id: &str,
        tokens: u64,
    ) -> Result<Vec<Vec<u32>>, KvError> {
        let mut remote = Vec::with_capacity(self.sources.len());
        for index in 0..self.sources.len() {
            let rank = self.sources[index].prefill_rank;
            let request = wire::Prefill {
                request_id: request_id.into(),
                tokens,
                dp_rank: self.config.dp_rank,
                tp_rank: rank,
                readers: crate::plan::readers(
                    &self.layout().shape,
                    self.prefill_tp,
                    self.layout().tp,
                    rank,
                )?,
                fill: self.config.verify,
            };
            remote.push(self.with_link(links, index, |link| link.prefill(&request))?);
        }
        Ok(remote)
    }

    /// Pulls `remote[i]` (block ids on source i) into freshly taken local blocks (or
    /// `local` when given), verifies, and tells every source it is complete. On any
    /// failure the request is failed: sources hear `ok: false` and nothing is kept.
    pub fn pull_request(
        &self,
        links: &mut Links,
        request_id: &str,
        remote: &[Vec<u32>],
        local: Option<&[u32]>,
    ) -> Result<Transferred, KvError> {
        let count = remote.first().map_or(0, std::vec::Vec::len);
        if remote.len() != self.sources.len() || remote.iter().any(|r| r.len() != count) {
            return Err(KvError::Config(
                "every source must name the same number of blocks".into(),
            ));
        }
        let owned;
        let local_blocks = match local {
            Some(blocks) => blocks,
            None => {
                owned = LocalBlocks::take(&self.blocks, count as u32, self.config.timeout)?;
                &owned.ids
            }
        };
        let started = Instant::now();
        let mut result = self.pull_into(links, request_id, remote, local_blocks);
        let transfer = started.elapsed();
        if result.is_ok() && self.config.verify {
            result = pattern::check(&self.pool, local_blocks, pattern::request_seed(request_id))
                .map(|()| result.unwrap_or_default())
                .map_err(|m| {
                    KvError::Integrity(format!(
                        "request {request_id}: {m}: the blocks reached the wrong place (layout or TP mapping disagree)"
                    ))
                });
        }
        let verify = started.elapsed().checked_sub(transfer).unwrap();
        for index in 0..self.sources.len() {
            // A failed link cannot carry the notice; its lease expires instead.
            if let Some(link) = links.slots[index].as_mut() {
                if link.complete(request_id, result.is_ok()).is_err() {
                    links.slots[index] = None;
                }
            }
        }
        result.map(|bytes| Transferred {
            bytes,
            transfer,
            verify,
        })
    }

    fn pull_into(
        &self,
        links: &mut Links,
        request_id: &str,
        remote: &[Vec<u32>],
        local: &[u32],
    ) -> Result<u64, KvError> {
        let mut bytes = 0;
        for (index, blocks) in remote.iter().enumerate() {
            let heads = self.sources[index].heads.clone();
            let checksums = self.config.checksums;
            bytes += self.with_link(links, index, |link| {
                link.pull(
                    request_id,
                    blocks,
                    heads.clone(),
                    &self.pool,
                    local,
                    checksums,
                )
            })?;
        }
        Ok(bytes)
    }

    /// Runs `op` on source `index`'s link. A link that failed in transport or protocol is
    /// dropped so the next request reconnects; after a refusal or a bad checksum the
    /// session is still in step and stays.
    fn with_link<T>(
        &self,
        links: &mut Links,
        index: usize,
        op: impl FnOnce(&mut PrefillLink) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let link = self.link(links, index)?;
        let result = op(link);
        if matches!(&result, Err(e) if !matches!(e, KvError::Refused(_) | KvError::Integrity(_))) {
            links.slots[index] = None;
        }
        result
    }
}

/// A worker's connections to its sources. It keeps the agent alive: an RDMA link has
/// the agent's pool registered.
pub struct Links {
    // Field order is drop order: the links (and their registrations) before the pool.
    slots: Vec<Option<PrefillLink>>,
    _pool_owner: Arc<DecodeAgent>,
}

impl Links {
    pub fn close(self) {
        for link in self.slots.into_iter().flatten() {
            link.close();
        }
    }
}

/// Local blocks held for one request, returned to the allocator however it ends.
struct LocalBlocks<'a> {
    allocator: &'a BlockAllocator,
    ids: Vec<u32>,
}

impl<'a> LocalBlocks<'a> {
    fn take(allocator: &'a BlockAllocator, count: u32, timeout: Duration) -> Result<Self, KvError> {
        Ok(LocalBlocks {
            allocator,
            ids: allocator.take(count, timeout)?,
        })
    }
}

impl Drop for LocalBlocks<'_> {
    fn drop(&mut self) {
        self.allocator.release(&self.ids);
    }
}
