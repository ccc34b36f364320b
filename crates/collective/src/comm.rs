//! A communicator: this rank's TCP connections to every other rank (a full mesh built by
//! the rendezvous), and the engine that runs a collective's send/receive schedule over it.

use crate::abort::{self, Report};
use crate::dtype::{reduce_into, Dtype, RedOp};
use crate::error::CollError;
use crate::rendezvous::roster::{Claim, Roster, Verdict};
use crate::rendezvous::{self, Bootstrap, Message};
use crate::schedule::{Action, Schedule};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Below this many bytes sent per call, sends and receives interleave on one thread (the
/// kernel socket buffers absorb them); above it a sender thread overlaps with receiving.
pub(crate) const INLINE_BYTES: usize = 64 * 1024;
/// Socket buffer size asked for on mesh connections.
const SOCKET_BUFFER: usize = 4 << 20;
/// How long rank 0 gathers failure reports from other ranks once it failed itself.
const REPORT_WINDOW: Duration = Duration::from_millis(500);
/// How long a failed rank waits for rank 0's verdict (rank 0 may first have to notice
/// the failure itself, then gathers for [`REPORT_WINDOW`]).
const VERDICT_WAIT: Duration = Duration::from_millis(1500);
/// Bound on sending one report or verdict.
const SEND_GRACE: Duration = Duration::from_millis(300);

pub struct Communicator {
    pub rank: usize,
    pub world: usize,
    peers: Vec<Option<TcpStream>>,
    /// Non-zero ranks: the link to rank 0. Rank 0: links to ranks 1..n (index rank-1).
    coordinator: Vec<TcpStream>,
    scratch: Vec<u64>,
    timeout: Duration,
}

impl Communicator {
    /// Joins the job: rendezvous, full mesh, barrier; all within `timeout`, a deadline
    /// for the whole join. With `token` (NODELINK_TOKEN) every rank proves it holds it;
    /// mesh connections prove their rank with the job key rank 0 hands out, so a stranger
    /// can neither take a rank's place nor stall or abort the job.
    /// Rank 0 may pass a listener already bound to the master address (tests, `--ranks`).
    pub fn join(
        boot: &Bootstrap,
        timeout: Duration,
        master_listener: Option<TcpListener>,
        token: Option<&[u8]>,
        log: &measure::Log,
    ) -> Result<Self, CollError> {
        let deadline = Instant::now() + timeout;
        let master_addr = rendezvous::resolve_addr(&boot.master)?;
        let (data_listener, table, job_key, coordinator) = if boot.rank == 0 {
            let listener = match master_listener {
                Some(l) => l,
                None => fabric::tcp::bind_listener(master_addr).map_err(|e| CollError::Io {
                    context: format!(
                        "rank 0 binding the master address {master_addr} (is another job using the port? give {} another port)",
                        measure::Setting::Master
                    ),
                    source: e,
                })?,
            };
            let data = TcpListener::bind(SocketAddr::new(master_addr.ip(), 0))
                .map_err(CollError::io("binding rank 0's data listener"))?;
            let data_addr = data
                .local_addr()
                .map_err(CollError::io("reading the data address"))?;
            let (table, job_key, links) =
                gather_ranks(boot, timeout, deadline, &listener, data_addr, token, log)?;
            (data, table, job_key, links)
        } else {
            let (link, data, table, job_key) = join_rank0(boot, master_addr, deadline, token)?;
            (data, table, job_key, vec![link])
        };

        // Full mesh: connect to higher ranks, accept lower ones; every caller proves its
        // rank with the job key over the callee's nonce.
        let mut peers: Vec<Option<TcpStream>> = (0..boot.world).map(|_| None).collect();
        for (rank, addr) in table.iter().enumerate().skip(boot.rank + 1) {
            let what = format!("rank {rank}");
            let (mut stream, nonce) = rendezvous::connect_greeted(*addr, deadline, &what, token)?;
            let mac = rendezvous::peer_proof(&job_key, &nonce, boot.rank, rank);
            rendezvous::send(
                &mut stream,
                &Message::Peer {
                    rank: boot.rank,
                    mac,
                },
                deadline,
            )?;
            peers[rank] = Some(stream);
        }
        if boot.rank > 0 {
            let me = boot.rank;
            let key = job_key.clone();
            let secret = token.map(<[u8]>::to_vec);
            let greet = move |stream: TcpStream, until: Instant| {
                let (mut stream, nonce) =
                    rendezvous::greet_caller(stream, until, secret.as_deref())?;
                match rendezvous::receive(&mut stream, until, "a mesh caller")? {
                    Message::Peer { rank, mac }
                        if rank < me
                            && rendezvous::peer_is_authentic(&key, &nonce, rank, me, &mac) =>
                    {
                        Ok((rank, stream))
                    }
                    Message::Peer { rank, .. } => Err(CollError::Protocol(format!(
                        "a caller claiming rank {rank} could not prove it"
                    ))),
                    other => Err(CollError::Protocol(format!(
                        "a mesh caller sent {} instead of Peer",
                        rendezvous::name(&other)
                    ))),
                }
            };
            let complete =
                rendezvous::serve_greetings(&data_listener, deadline, greet, |from, outcome| {
                    match outcome {
                        Ok((rank, stream)) if peers[rank].is_none() => peers[rank] = Some(stream),
                        Ok((rank, _)) => log(&format!(
                        "rank {me}: a second connection proving rank {rank} from {from} ignored"
                    )),
                        Err(e) => log(&format!(
                            "rank {me}: ignoring a connection from {from}: {e}"
                        )),
                    }
                    Ok(peers[..me].iter().all(Option::is_some))
                })?;
            if !complete {
                let missing: Vec<String> = (0..me)
                    .filter(|r| peers[*r].is_none())
                    .map(|r| r.to_string())
                    .collect();
                return Err(CollError::Timeout(format!(
                    "rank {} never connected to rank {me}",
                    missing.join(", ")
                )));
            }
        }
        for stream in peers.iter().flatten() {
            tune(stream)?;
        }
        let mut comm = Communicator {
            rank: boot.rank,
            world: boot.world,
            peers,
            coordinator,
            scratch: Vec::new(),
            timeout,
        };
        comm.set_timeout(timeout)?;
        comm.barrier_until(deadline)?;
        Ok(comm)
    }

    /// Sets how long any one wait for a peer may take during collectives.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CollError> {
        self.timeout = timeout;
        for stream in self.peers.iter().flatten() {
            stream
                .set_read_timeout(Some(timeout))
                .map_err(CollError::io("setting a socket timeout"))?;
            stream
                .set_write_timeout(Some(timeout))
                .map_err(CollError::io("setting a socket timeout"))?;
        }
        Ok(())
    }

    /// Another handle on the connection to `rank`, for messages the caller moves itself
    /// (a pipeline's handovers, sent from a proxy thread as NCCL's are). While it is in
    /// use, no schedule may exchange data with `rank`. The socket's timeouts apply.
    pub fn stream_to(&self, rank: usize) -> Result<TcpStream, CollError> {
        peer(&self.peers, rank)?
            .try_clone()
            .map_err(CollError::io("cloning a peer connection"))
    }

    pub fn barrier(&mut self) -> Result<(), CollError> {
        self.barrier_until(Instant::now() + self.timeout)
    }

    fn barrier_until(&mut self, deadline: Instant) -> Result<(), CollError> {
        if self.rank == 0 {
            for (index, link) in self.coordinator.iter_mut().enumerate() {
                match rendezvous::receive(link, deadline, &format!("rank {}", index + 1))? {
                    Message::Ready => {}
                    other => {
                        return Err(CollError::Protocol(format!(
                            "expected Ready, got {other:?}"
                        )))
                    }
                }
            }
            for link in &mut self.coordinator {
                rendezvous::send(link, &Message::Go, deadline)?;
            }
        } else if let Some(link) = self.coordinator.first_mut() {
            rendezvous::send(link, &Message::Ready, deadline)?;
            match rendezvous::receive(link, deadline, "rank 0")? {
                Message::Go => {}
                other => return Err(CollError::Protocol(format!("expected Go, got {other:?}"))),
            }
        }
        Ok(())
    }

    /// A collective failed on this rank because of `error`. When it blames a peer rank,
    /// every rank should name the same one: a non-zero rank reports to rank 0 and waits
    /// (bounded) for rank 0's verdict; rank 0 gathers the reports that arrive within a
    /// short window, picks the cause ([`abort::verdict`]) and tells every rank. Returns
    /// the verdict as [`CollError::JobFailed`]. Other errors come back as they are.
    pub fn settle(&mut self, error: CollError) -> CollError {
        let CollError::RankFailed { rank, reason } = error else {
            return error;
        };
        let own = Report {
            reporter: self.rank,
            failed: rank,
            reason,
        };
        let verdict = if self.rank == 0 {
            let mut reports = vec![own];
            reports.extend(gather_reports(&mut self.coordinator, REPORT_WINDOW));
            let verdict = abort::verdict(&reports)
                .cloned()
                .unwrap_or_else(|| reports[0].clone());
            let abort = Message::Abort {
                reason: verdict.sentence(),
                failed: Some(verdict.failed),
            };
            let soon = Instant::now() + SEND_GRACE;
            for link in &mut self.coordinator {
                let _ = rendezvous::send(link, &abort, soon);
            }
            verdict
        } else {
            let told = self.coordinator.first_mut().and_then(|link| {
                let report = Message::Abort {
                    reason: own.reason.clone(),
                    failed: Some(own.failed),
                };
                let _ = rendezvous::send(link, &report, Instant::now() + SEND_GRACE);
                match rendezvous::receive_any(link, Instant::now() + VERDICT_WAIT, "rank 0") {
                    Ok(Message::Abort {
                        reason,
                        failed: Some(failed),
                    }) => Some(CollError::JobFailed {
                        rank: failed,
                        reason,
                    }),
                    // Rank 0 is gone or silent: what this rank saw is all there is.
                    _ => None,
                }
            });
            if let Some(told) = told {
                return told;
            }
            own
        };
        CollError::JobFailed {
            rank: verdict.failed,
            reason: verdict.sentence(),
        }
    }

    /// Runs `schedule` over `buffer` (bytes of `dtype` elements, u64-aligned).
    pub fn execute(
        &mut self,
        schedule: &Schedule,
        buffer: &mut [u8],
        dtype: Dtype,
        op: RedOp,
    ) -> Result<(), CollError> {
        self.execute_from(schedule, None, buffer, dtype, op)
    }

    /// Like [`execute`](Self::execute), with a separate source buffer for schedules that
    /// read it (`send_source`, `ReduceSource`); without one they read `buffer` itself.
    /// Source offsets are the same as the buffer's.
    pub fn execute_from(
        &mut self,
        schedule: &Schedule,
        source: Option<&[u8]>,
        buffer: &mut [u8],
        dtype: Dtype,
        op: RedOp,
    ) -> Result<(), CollError> {
        self.run_schedule(schedule, source, buffer, dtype, op)
            .map_err(|e| self.settle(e))
    }

    fn run_schedule(
        &mut self,
        schedule: &Schedule,
        source: Option<&[u8]>,
        buffer: &mut [u8],
        dtype: Dtype,
        op: RedOp,
    ) -> Result<(), CollError> {
        if let Some(source) = source {
            if source.len() != buffer.len() {
                return Err(CollError::Invalid("source and buffer sizes differ".into()));
            }
        }
        for (from, to) in &schedule.local_copies {
            buffer.copy_within(from.clone(), to.start);
        }
        let scratch_words = schedule.max_segment.div_ceil(8);
        if self.scratch.len() < scratch_words {
            self.scratch.resize(scratch_words, 0);
        }
        let peers = &self.peers;
        let scratch: &mut [u8] = bytemuck::cast_slice_mut(&mut self.scratch);
        let base = SharedBuffer {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
        };
        // The source is only ever read; aliasing `buffer` when absent is the in-place case.
        let source = source.map_or(base, |s| SharedBuffer {
            ptr: s.as_ptr() as *mut u8,
            len: s.len(),
        });
        let timeout = self.timeout;
        let run = Run {
            poll: schedule.send_bytes <= INLINE_BYTES,
            peers,
            source,
            buffer: base,
            dtype,
            op,
            timeout,
        };
        // Nothing to overlap when a rank only sends or only receives (a pipeline handover,
        // a broadcast leaf): one thread, no sender thread to start.
        let one_sided = schedule.sends.is_empty() || schedule.recvs.is_empty();
        if schedule.send_bytes <= INLINE_BYTES || one_sided {
            return run_interleaved(schedule, &run, scratch);
        }
        let progress = Progress {
            done: Mutex::new(Ok(0)),
            changed: Condvar::new(),
        };
        let send_failed = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sender = scope.spawn(|| {
                let sent = run_sends(schedule, peers, base, source, &progress, timeout);
                if matches!(sent, Err(CollError::RankFailed { .. })) {
                    // The receiver may be blocked on a live peer that waits for the failed
                    // one: wake it (the job is over), so this rank reports at once.
                    send_failed.store(true, std::sync::atomic::Ordering::Release);
                    for recv in &schedule.recvs {
                        if let Ok(stream) = peer(peers, recv.peer) {
                            let _ = stream.shutdown(std::net::Shutdown::Read);
                        }
                    }
                }
                sent
            });
            let received = run_receives(schedule, &run, scratch, &progress);
            if let Err(e) = &received {
                progress.fail(e.to_string());
            }
            let sent = sender
                .join()
                .unwrap_or_else(|_| Err(CollError::Invalid("sender thread panicked".into())));
            if send_failed.load(std::sync::atomic::Ordering::Acquire) {
                // The receiver's error is the wake-up; the send's is the cause.
                return sent;
            }
            received.and(sent)
        })
    }
}

fn tune(stream: &TcpStream) -> Result<(), CollError> {
    stream
        .set_nodelay(true)
        .map_err(CollError::io("setting TCP_NODELAY"))?;
    let socket = socket2::SockRef::from(stream);
    // Best effort: the kernel caps these at net.core.{w,r}mem_max.
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    Ok(())
}

/// The collective's buffer, shared by the sender thread (reading) and the receiver
/// (writing).
///
/// SAFETY argument, upheld by every schedule: a send segment is only read once the receive
/// segments it depends on are complete, and no receive writes a byte range while a send of
/// that range can still be in flight: ring and chain algorithms only overwrite a chunk
/// after data derived from our earlier send of it has come back around, which cannot
/// happen before that send finished.
#[derive(Clone, Copy)]
struct SharedBuffer {
    ptr: *mut u8,
    len: usize,
}

unsafe impl Send for SharedBuffer {}
unsafe impl Sync for SharedBuffer {}

impl SharedBuffer {
    /// # Safety
    /// The range must not be written concurrently (see the type's safety argument).
    unsafe fn slice(&self, range: &std::ops::Range<usize>) -> &[u8] {
        assert!(range.end <= self.len);
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// # Safety
    /// The range must not be read or written concurrently.
    #[allow(clippy::mut_from_ref)] // disjointness is the caller's contract, as documented
    unsafe fn slice_mut(&self, range: &std::ops::Range<usize>) -> &mut [u8] {
        assert!(range.end <= self.len);
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// How many receive segments are complete (or why the receiver stopped).
struct Progress {
    done: Mutex<Result<usize, String>>,
    changed: Condvar,
}

impl Progress {
    fn advance(&self, count: usize) {
        if let Ok(mut done) = self.done.lock() {
            if done.is_ok() {
                *done = Ok(count);
            }
        }
        self.changed.notify_all();
    }

    fn fail(&self, reason: String) {
        if let Ok(mut done) = self.done.lock() {
            *done = Err(reason);
        }
        self.changed.notify_all();
    }

    fn wait_for(&self, count: usize, timeout: Duration) -> Result<(), CollError> {
        let mut done = self
            .done
            .lock()
            .map_err(|_| CollError::Invalid("progress lock poisoned".into()))?;
        let deadline = Instant::now() + timeout;
        loop {
            match &*done {
                Ok(n) if *n >= count => return Ok(()),
                Err(reason) => return Err(CollError::Aborted(reason.clone())),
                Ok(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CollError::Timeout("waiting for data to forward".into()));
            }
            done = self
                .changed
                .wait_timeout(done, left)
                .map_err(|_| CollError::Invalid("progress lock poisoned".into()))?
                .0;
        }
    }
}

fn peer(peers: &[Option<TcpStream>], rank: usize) -> Result<&TcpStream, CollError> {
    peers
        .get(rank)
        .and_then(Option::as_ref)
        .ok_or_else(|| CollError::Invalid(format!("no connection to rank {rank}")))
}

fn io_error(rank: usize, sending: bool, timeout: Duration) -> impl Fn(std::io::Error) -> CollError {
    move |e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => CollError::RankFailed {
            rank,
            reason: format!(
                "timed out: rank {rank} {} for {:.0?}: it is stuck or its link is down",
                if sending {
                    "accepted no data"
                } else {
                    "sent nothing"
                },
                timeout
            ),
        },
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe => CollError::RankFailed {
            rank,
            reason: format!("rank {rank} closed its connection mid-collective (killed or crashed)"),
        },
        _ => CollError::Io {
            context: format!(
                "{} rank {rank}",
                if sending {
                    "sending to"
                } else {
                    "receiving from"
                }
            ),
            source: e,
        },
    }
}

fn run_sends(
    schedule: &Schedule,
    peers: &[Option<TcpStream>],
    buffer: SharedBuffer,
    source: SharedBuffer,
    progress: &Progress,
    timeout: Duration,
) -> Result<(), CollError> {
    for send in &schedule.sends {
        progress.wait_for(send.after, timeout)?;
        let from = if send.from_source { source } else { buffer };
        // SAFETY: the segment's dependencies are complete and nothing rewrites it (see SharedBuffer).
        let bytes = unsafe { from.slice(&send.range) };
        let mut stream = peer(peers, send.peer)?;
        stream
            .write_all(bytes)
            .map_err(io_error(send.peer, true, timeout))?;
    }
    Ok(())
}

/// How long a small receive polls before it blocks: a sleeping reader costs a wake-up
/// (tens of microseconds on a loaded VM), which dominates tiny collectives.
const POLL_BUDGET: Duration = Duration::from_micros(500);

/// Reads `into` fully, first with non-blocking receives and `sched_yield` between them (so
/// oversubscribed ranks still make progress), then blocking once the budget is spent.
fn read_polling(stream: &TcpStream, into: &mut [u8]) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let started = Instant::now();
    let mut filled = 0;
    while filled < into.len() && started.elapsed() < POLL_BUDGET {
        // SAFETY: initialised bytes viewed as MaybeUninit for socket2's recv; it only writes.
        let window =
            unsafe { &mut *(&mut into[filled..] as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
        match socket.recv_with_flags(window, libc::MSG_DONTWAIT) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    (&mut &*stream).read_exact(&mut into[filled..])
}

/// What every receive needs: the connections, the buffer, the element type and reduction.
struct Run<'a> {
    /// Poll before blocking (small, latency-bound schedules).
    poll: bool,
    /// The caller's input for out-of-place schedules (the buffer itself otherwise).
    source: SharedBuffer,
    peers: &'a [Option<TcpStream>],
    buffer: SharedBuffer,
    dtype: Dtype,
    op: RedOp,
    timeout: Duration,
}

fn receive_one(
    recv: &crate::schedule::Recv,
    run: &Run,
    scratch: &mut [u8],
) -> Result<(), CollError> {
    let (buffer, timeout) = (run.buffer, run.timeout);
    let stream = peer(run.peers, recv.peer)?;
    // SAFETY: no send reads this range while it is being received (see SharedBuffer).
    let target = unsafe { buffer.slice_mut(&recv.range) };
    let read = |into: &mut [u8]| {
        if run.poll {
            read_polling(stream, into)
        } else {
            (&mut &*stream).read_exact(into)
        }
    };
    match recv.action {
        Action::Copy => read(target).map_err(io_error(recv.peer, false, timeout)),
        Action::Reduce | Action::ReduceSource => {
            let incoming = &mut scratch[..target.len()];
            read(incoming).map_err(io_error(recv.peer, false, timeout))?;
            if recv.action == Action::ReduceSource && run.source.ptr != buffer.ptr {
                // SAFETY: the source is never written during the collective.
                target.copy_from_slice(unsafe { run.source.slice(&recv.range) });
            }
            reduce_into(run.dtype, run.op, target, incoming);
            Ok(())
        }
    }
}

fn run_receives(
    schedule: &Schedule,
    run: &Run,
    scratch: &mut [u8],
    progress: &Progress,
) -> Result<(), CollError> {
    for (index, recv) in schedule.recvs.iter().enumerate() {
        receive_one(recv, run, scratch)?;
        progress.advance(index + 1);
    }
    Ok(())
}

/// Small messages: one thread, sends written as soon as their inputs are complete.
fn run_interleaved(schedule: &Schedule, run: &Run, scratch: &mut [u8]) -> Result<(), CollError> {
    let (peers, buffer, timeout) = (run.peers, run.buffer, run.timeout);
    let mut next_send = 0;
    let mut received = 0;
    loop {
        while let Some(send) = schedule
            .sends
            .get(next_send)
            .filter(|s| s.after <= received)
        {
            let from = if send.from_source { run.source } else { buffer };
            // SAFETY: single thread; the range is not borrowed elsewhere.
            let bytes = unsafe { from.slice(&send.range) };
            peer(peers, send.peer)?
                .write_all(bytes)
                .map_err(io_error(send.peer, true, timeout))?;
            next_send += 1;
        }
        let Some(recv) = schedule.recvs.get(received) else {
            break;
        };
        receive_one(recv, run, scratch)?;
        received += 1;
    }
    if next_send != schedule.sends.len() {
        return Err(CollError::Invalid(
            "schedule has sends that depend on receives that never come".into(),
        ));
    }
    Ok(())
}

/// Rank 0: reads the failure reports ranks 1.. send within `window` (ranks whose link
/// closes, or that stay silent, report nothing), in arrival order.
fn gather_reports(links: &mut [TcpStream], window: Duration) -> Vec<Report> {
    let deadline = Instant::now() + window;
    let mut open: Vec<bool> = vec![true; links.len()];
    let mut reports = Vec::new();
    while open.iter().any(|o| *o) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = links
            .iter()
            .zip(&open)
            .map(|(link, &o)| libc::pollfd {
                fd: if o { link.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let millis = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for (index, fd) in fds.iter().enumerate() {
            if fd.fd < 0 || fd.revents == 0 {
                continue;
            }
            let from = format!("rank {}", index + 1);
            match rendezvous::receive_any(&mut links[index], deadline, &from) {
                Ok(Message::Abort {
                    reason,
                    failed: Some(failed),
                }) => {
                    reports.push(Report {
                        reporter: index + 1,
                        failed,
                        reason,
                    });
                    open[index] = false;
                }
                Ok(_) => {}
                Err(_) => open[index] = false,
            }
        }
    }
    reports
}

/// What a joining rank told rank 0, once its session opened.
struct Joined {
    rank: usize,
    world: usize,
    data_addr: SocketAddr,
    stream: TcpStream,
}

/// Rank 0's side: greets every connection concurrently, keeps the claims of those whose
/// session opened (tool, version and token checked), and
/// sends each rank the address table. Returns the table, the job key and the links to
/// ranks 1..n.
fn gather_ranks(
    boot: &Bootstrap,
    timeout: Duration,
    deadline: Instant,
    listener: &TcpListener,
    data_addr: SocketAddr,
    token: Option<&[u8]>,
    log: &measure::Log,
) -> Result<(Vec<SocketAddr>, String, Vec<TcpStream>), CollError> {
    let world = boot.world;
    let key = token.map(<[u8]>::to_vec);
    let greet = move |stream: TcpStream, until: Instant| {
        let (mut stream, _) = rendezvous::greet_caller(stream, until, key.as_deref())?;
        match rendezvous::receive(&mut stream, until, "a joining process")? {
            Message::Join {
                rank,
                world,
                data_addr,
            } => Ok(Joined {
                rank,
                world,
                data_addr,
                stream,
            }),
            other => Err(CollError::Protocol(format!(
                "it sent {} instead of Join",
                rendezvous::name(&other)
            ))),
        }
    };
    let mut roster = Roster::new(world, deadline, timeout, &boot.master, token.is_some());
    let mut verdict = roster.poll(Instant::now());
    if verdict == Verdict::Wait {
        rendezvous::serve_greetings(listener, deadline, greet, |from, outcome| {
            let joiner = match outcome {
                Ok(j) => j,
                Err(e) => {
                    log(&format!("rank 0: ignoring a connection from {from}: {e}"));
                    return Ok(false);
                }
            };
            let claim = Claim {
                rank: joiner.rank,
                world: joiner.world,
                from,
            };
            let refused;
            (verdict, refused) = roster.offer(claim, joiner, Instant::now());
            if let (Verdict::Abort(reason), Some(mut joiner)) = (&verdict, refused) {
                // The process whose claim broke the job hears why, as the others will.
                let abort = Message::Abort {
                    reason: reason.clone(),
                    failed: None,
                };
                let _ = rendezvous::send(
                    &mut joiner.stream,
                    &abort,
                    Instant::now() + Duration::from_secs(1),
                );
            }
            Ok(verdict != Verdict::Wait)
        })?;
        if verdict == Verdict::Wait {
            verdict = roster.poll(deadline);
        }
    }
    let failure = match verdict {
        Verdict::Abort(reason) => Some((reason.clone(), CollError::Bootstrap(reason))),
        Verdict::TimedOut(reason) => Some((reason.clone(), CollError::Timeout(reason))),
        Verdict::Wait | Verdict::Complete => None,
    };
    if let Some((reason, error)) = failure {
        // Every rank that joined stops with the same sentence.
        let abort = Message::Abort {
            reason,
            failed: None,
        };
        let soon = Instant::now() + Duration::from_secs(1);
        for j in roster.joined_mut() {
            let _ = rendezvous::send(&mut j.stream, &abort, soon);
        }
        return Err(error);
    }
    let joined = roster.into_ranks();
    let mut table = vec![data_addr];
    table.extend(joined.iter().map(|j| j.data_addr));
    let job_key = rendezvous::fresh_nonce()?;
    let mut links = Vec::with_capacity(world - 1);
    for j in joined {
        let mut stream = j.stream;
        let message = Message::Table {
            addrs: table.clone(),
            job_key: job_key.clone(),
        };
        rendezvous::send(&mut stream, &message, deadline)?;
        links.push(stream);
    }
    Ok((table, job_key, links))
}

/// A non-zero rank's side: opens the session with rank 0 (the token's proofs both ways),
/// claims its rank, gets the table.
fn join_rank0(
    boot: &Bootstrap,
    master_addr: SocketAddr,
    deadline: Instant,
    token: Option<&[u8]>,
) -> Result<(TcpStream, TcpListener, Vec<SocketAddr>, String), CollError> {
    let (mut link, _) =
        rendezvous::connect_greeted(master_addr, deadline, "rank 0 (the master)", token)?;
    let local_ip = link
        .local_addr()
        .map_err(CollError::io("reading the local address"))?
        .ip();
    let data = TcpListener::bind(SocketAddr::new(local_ip, 0))
        .map_err(CollError::io("binding the data listener"))?;
    let data_addr = data
        .local_addr()
        .map_err(CollError::io("reading the data address"))?;
    let claim = Message::Join {
        rank: boot.rank,
        world: boot.world,
        data_addr,
    };
    rendezvous::send(&mut link, &claim, deadline)?;
    // Rank 0 owns the join's deadline and answers by it, with the table or with the reason
    // it gave up; waiting a little past our own deadline lets that reason arrive instead
    // of a bare timeout here.
    let verdict = deadline + Duration::from_secs(2);
    match rendezvous::receive(&mut link, verdict, "rank 0")? {
        Message::Table { addrs, job_key } if addrs.len() == boot.world => {
            Ok((link, data, addrs, job_key))
        }
        Message::Table { addrs, .. } => Err(CollError::Protocol(format!(
            "rank 0 sent a table of {} ranks for a world of {}",
            addrs.len(),
            boot.world
        ))),
        other => Err(CollError::Protocol(format!(
            "rank 0 answered {} instead of the address table",
            rendezvous::name(&other)
        ))),
    }
}
