//! The data path: one blocking thread per stream (like iperf3 -P), buffers allocated once
//! per stream, every wait bounded by socket timeouts so a dead peer is an error.

use super::wire::{Direction, StreamStats};
use crate::cpu::{CpuMeter, CpuTime, Scope};
use crate::error::{FabricError, Result};
use crate::tcp::{enable_zerocopy, tcp_info, ZeroCopyWriter};
use measure::LatencyRecorder;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a stream may stall (no byte in or out) before the peer counts as dead.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past its duration a stream may take to drain before it is cut.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Receive buffer, iperf3's default block. Against 1 MiB reads (which keep the socket
/// owned while they drain its backlog), 128 KiB measured 1.23-1.35x with 1 MiB writes
/// (veth and loopback, one stream), 1.12-1.17x at -P 4, and 0.98-1.03x with 128 KiB
/// writes. 64 KiB measured about the same in other runs (1.42-1.44x, 0.99-1.04x) at twice
/// the reads; 256 KiB only 1.02-1.14x.
const RECV_CHUNK: usize = 128 * 1024;

/// How often a stream near its end re-arms its socket timeout. Re-arming on every call
/// (a setsockopt, which takes the socket lock, per read) cost a receiving stream ~7 % of
/// its rate; a call may now outlive the hard end by at most this.
const RETIME: Duration = Duration::from_millis(50);

/// Says when a stream's socket timeout is due to be re-armed (at most every [`RETIME`]).
#[derive(Default)]
struct Retimer {
    next: Option<Instant>,
}

impl Retimer {
    fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        self.next = Some(now + RETIME);
        true
    }
}

/// A zeroed buffer that starts on a page boundary: the kernel copies page-aligned user
/// memory faster (and MSG_ZEROCOPY pins whole pages). Allocated once per stream. A
/// working set of 2 MiB or more sits on huge pages where the kernel allows them, as
/// kvxfer's KV pool does, so that both pay the same TLB cost.
struct PageBuffer {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl PageBuffer {
    const PAGE: usize = 4096;
    const HUGE_PAGE: usize = 2 << 20;

    fn new(len: usize) -> Self {
        let align = if len >= Self::HUGE_PAGE {
            Self::HUGE_PAGE
        } else {
            Self::PAGE
        };
        let storage = vec![0u8; len + align];
        let offset = storage.as_ptr().align_offset(align).min(align);
        if align == Self::HUGE_PAGE {
            // SAFETY: advice on memory this Vec owns; a refusal only costs huge pages.
            unsafe {
                libc::madvise(
                    storage.as_ptr().add(offset).cast_mut().cast(),
                    len,
                    libc::MADV_HUGEPAGE,
                )
            };
        }
        Self {
            storage,
            offset,
            len,
        }
    }

    fn as_ref(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// One stream's figures from this side, and the CPU its thread used.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    pub stats: StreamStats,
    pub cpu: CpuTime,
}

fn nanos_since(start: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(start).as_nanos() as u64
}

fn stream_error(what: &str, error: std::io::Error) -> FabricError {
    match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => FabricError::Timeout {
            what: what.to_string(),
            after: STALL_TIMEOUT,
        },
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            FabricError::PeerClosed {
                what: what.to_string(),
                detail: format!(" mid-test ({error}); did the peer process die?"),
            }
        }
        _ => FabricError::io(what, error),
    }
}

fn set_timeouts(stream: &TcpStream, what: &str) -> Result<()> {
    set_stall(stream, STALL_TIMEOUT, what)
}

fn set_stall(stream: &TcpStream, stall: Duration, what: &str) -> Result<()> {
    stream
        .set_read_timeout(Some(stall))
        .and_then(|()| stream.set_write_timeout(Some(stall)))
        .map_err(|e| FabricError::io(what, e))
}

/// What a sending stream does.
#[derive(Debug, Clone, Copy)]
pub struct SendPlan {
    pub size: usize,
    /// Whole sending time, the omitted warm-up included.
    pub duration: Duration,
    pub zerocopy: bool,
    /// Bytes the messages rotate through (0: one message, written again and again).
    pub working_set: usize,
}

/// What a receiving stream measures.
#[derive(Debug, Clone, Copy)]
pub struct ReceivePlan {
    /// Whole test time, the omitted warm-up included.
    pub duration: Duration,
    /// Bytes before this long after the test's start are not counted (iperf3's -O).
    pub omit: Duration,
    /// Bytes the reads rotate through (0: one read-sized buffer).
    pub working_set: usize,
}

/// A stream's buffer: `unit` bytes, or as many whole units as fit in `working_set`, so
/// that a copy never wraps. Past the caches, every byte then comes from or goes to
/// memory, as a KV pool's blocks do; one unit stays in cache.
fn working_buffer(unit: usize, working_set: usize) -> PageBuffer {
    PageBuffer::new((working_set / unit).max(1) * unit)
}

/// Sends `size`-byte messages for `duration`, then closes its half and waits for the
/// receiver to finish, so TCP_INFO includes every retransmit.
pub fn send_for(
    stream: TcpStream,
    index: u32,
    direction: Direction,
    plan: SendPlan,
    start: Instant,
    meter: &AtomicU64,
    what: &str,
) -> Result<StreamOutcome> {
    let SendPlan {
        size,
        duration,
        zerocopy,
        working_set,
    } = plan;
    let cpu = CpuMeter::start(Scope::Thread);
    set_timeouts(&stream, what)?;
    if zerocopy {
        enable_zerocopy(&stream)?;
    }
    // Not all zeros: some paths (compression, zero-page tricks) would flatter them.
    let mut storage = working_buffer(size, working_set);
    for (i, byte) in storage.as_mut().iter_mut().enumerate() {
        *byte = (i * 131 % 251) as u8;
    }
    let buffer = storage.as_ref();
    // Where the message being written starts in the buffer.
    let mut base = 0usize;
    let mut bytes = 0u64;
    let first = Instant::now();
    let deadline = first + duration;
    // The duration bounds the test: past it (plus a grace for the tail to drain) the
    // stream is cut, even when a tiny window or a stalled path keeps data queued.
    let hard_end = deadline + DRAIN_GRACE;
    let mut zc = zerocopy.then(|| ZeroCopyWriter::new(&stream));
    let mut offset = 0usize;
    let mut cut = false;
    let mut retimer = Retimer::default();
    let last = loop {
        let now = Instant::now();
        if now >= deadline {
            break now;
        }
        let written = match zc.as_mut() {
            Some(writer) => writer.write_all(&buffer[base..base + size]).map(|()| size),
            None => {
                let left = hard_end.saturating_duration_since(now);
                if left < STALL_TIMEOUT && retimer.due(now) {
                    stream
                        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
                        .map_err(|e| stream_error(what, e))?;
                }
                (&stream).write(&buffer[base + offset..base + size])
            }
        };
        match written {
            Ok(0) => return Err(stream_error(what, ErrorKind::WriteZero.into())),
            Ok(n) => {
                bytes += n as u64;
                meter.fetch_add(n as u64, Ordering::Relaxed);
                offset += n;
                if offset >= size {
                    offset = 0;
                    base = (base + size) % buffer.len();
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && Instant::now() >= deadline =>
            {
                cut = true;
                break Instant::now();
            }
            Err(e) => return Err(stream_error(what, e)),
        }
    };
    if let Some(writer) = zc.as_mut() {
        let _ = writer.flush();
    }
    if !cut {
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| stream_error(what, e))?;
        // The receiver closes after reading everything; a reset here still means it got
        // our FIN. Waiting is bounded by the same hard end.
        let mut sink = [0u8; 64];
        loop {
            let left = hard_end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                cut = true;
                break;
            }
            let _ = stream.set_read_timeout(Some(left.min(STALL_TIMEOUT)));
            match (&stream).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= hard_end {
                        cut = true;
                        break;
                    }
                    return Err(stream_error(what, e));
                }
                Err(_) => break,
            }
        }
    }
    let info = tcp_info(&stream);
    if cut {
        // Drop what is still queued: a reset ends the receiver's read at once.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
    Ok(StreamOutcome {
        stats: StreamStats {
            index,
            direction,
            bytes,
            first_ns: nanos_since(start, first),
            last_ns: nanos_since(start, last),
            retransmits: info.map(|i| i.total_retrans),
            rtt_us: info.map(|i| i.rtt_us),
        },
        cpu: cpu.used(),
    })
}

/// Reads until the sender closes, or until `duration` after the first byte plus the drain
/// grace (the sender cuts a stream that cannot drain, and so does this side); counts bytes
/// and the first/last byte times, from the end of the omitted warm-up when there is one.
/// `meter` counts every byte as it arrives, for interval reports.
pub fn receive(
    stream: TcpStream,
    index: u32,
    direction: Direction,
    start: Instant,
    plan: ReceivePlan,
    meter: &AtomicU64,
    what: &str,
) -> Result<StreamOutcome> {
    let ReceivePlan {
        duration,
        omit,
        working_set,
    } = plan;
    let counted_from = start + omit;
    // Bytes read before the warm-up ended; they do not count.
    let mut omitted: Option<u64> = None;
    let cpu = CpuMeter::start(Scope::Thread);
    set_timeouts(&stream, what)?;
    let mut storage = working_buffer(RECV_CHUNK, working_set);
    let buffer = storage.as_mut();
    // Commit every page now, not in page faults inside the timed window.
    buffer.fill(1);
    let mut base = 0usize;
    let mut bytes = 0u64;
    let mut first = None;
    let mut last = start;
    let mut hard_end: Option<Instant> = None;
    let mut limited = false;
    let mut retimer = Retimer::default();
    loop {
        if let Some(end) = hard_end {
            let now = Instant::now();
            let left = end.saturating_duration_since(now);
            if left.is_zero() {
                break;
            }
            if left < STALL_TIMEOUT && retimer.due(now) {
                stream
                    .set_read_timeout(Some(left))
                    .map_err(|e| stream_error(what, e))?;
                limited = true;
            }
        }
        match (&stream).read(&mut buffer[base..base + RECV_CHUNK]) {
            Ok(0) => break,
            Ok(n) => {
                // The next read lands right after this one, as a KV pool fills.
                base += n;
                if buffer.len() - base < RECV_CHUNK {
                    base = 0;
                }
                last = Instant::now();
                if first.is_none() {
                    hard_end = Some(last + duration + DRAIN_GRACE + DRAIN_GRACE);
                }
                bytes += n as u64;
                meter.fetch_add(n as u64, Ordering::Relaxed);
                if omitted.is_none() && (omit.is_zero() || last >= counted_from) {
                    // Counting starts here: with no warm-up at the first byte (its bytes
                    // count), after one at this read (the bytes up to now do not).
                    omitted = Some(if omit.is_zero() { 0 } else { bytes });
                    first = Some(last);
                } else if first.is_none() {
                    first = Some(last);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Cut by the sender at its hard end, or ours reached: the test is over.
            Err(e)
                if hard_end.is_some_and(|end| Instant::now() + DRAIN_GRACE >= end)
                    && matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) =>
            {
                break
            }
            Err(e)
                if limited && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break
            }
            Err(e) => return Err(stream_error(what, e)),
        }
    }
    let info = tcp_info(&stream);
    drop(stream);
    // A stream that ended inside the warm-up has nothing counted.
    let counted = omitted.map_or(0, |before| bytes - before);
    if omitted.is_none() {
        last = first.unwrap_or(start);
    }
    Ok(StreamOutcome {
        stats: StreamStats {
            index,
            direction,
            bytes: counted,
            first_ns: nanos_since(start, first.unwrap_or(start)),
            last_ns: nanos_since(start, last),
            retransmits: None,
            rtt_us: info.map(|i| i.rtt_us),
        },
        cpu: cpu.used(),
    })
}

/// How long a ping-pong receive polls before it sleeps in `recv`. Waking a sleeping
/// reader costs tens of microseconds on virtual machines (an idle vCPU halts), which would
/// otherwise dominate what `lat` reports; past this the reader blocks and costs no CPU.
const POLL_BEFORE_BLOCK: Duration = Duration::from_micros(200);

/// How long `busy` mode spins before it too sleeps. Round trips in a running test are
/// microseconds apart, so this never shows in `lat`; a peer that connects and then goes
/// quiet costs one core for this long, not for the whole stall timeout.
const BUSY_POLL_BEFORE_BLOCK: Duration = Duration::from_millis(50);

/// One receive: polls with MSG_DONTWAIT first, then blocks in `recv` (bounded by the
/// socket's read timeout). With `busy` it polls longer, the way sockperf and perftest's
/// polling mode measure: no wake-up on the reply's path, at the price of a busy core.
fn read_some(stream: &TcpStream, buf: &mut [u8], busy: bool) -> std::io::Result<usize> {
    let fd = stream.as_raw_fd();
    let started = Instant::now();
    let mut spins = 0u32;
    loop {
        // SAFETY: buf is a live, writable slice of buf.len() bytes.
        let rc = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let error = std::io::Error::last_os_error();
        match error.kind() {
            ErrorKind::WouldBlock => {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins & 63 == 0 {
                    let poll_for = if busy {
                        BUSY_POLL_BEFORE_BLOCK
                    } else {
                        POLL_BEFORE_BLOCK
                    };
                    if started.elapsed() > poll_for {
                        return (&*stream).read(buf);
                    }
                }
            }
            ErrorKind::Interrupted => {}
            _ => return Err(error),
        }
    }
}

/// Fills `buf` completely; EOF before that is an error.
fn read_full(stream: &TcpStream, buf: &mut [u8], busy: bool) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_some(stream, &mut buf[filled..], busy) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// When a latency test ends: after a number of round trips or at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Iterations(u64),
    Elapsed(Duration),
}

/// What the client side of a ping-pong does.
#[derive(Debug, Clone, Copy)]
pub struct PingPlan {
    pub size: usize,
    pub until: Until,
    pub busy_poll: bool,
    /// The longest wait for one answer before the peer counts as stalled.
    pub stall: Duration,
}

/// Client side of the ping-pong: records every round trip, in nanoseconds.
pub fn ping(
    stream: &TcpStream,
    plan: PingPlan,
    recorder: &mut LatencyRecorder,
    progress: &mut dyn FnMut(u64, Duration),
    what: &str,
) -> Result<u64> {
    let PingPlan {
        size,
        until,
        busy_poll,
        stall,
    } = plan;
    set_stall(stream, stall, what)?;
    let out: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    let start = Instant::now();
    let mut done = 0u64;
    let mut next_progress = 0u64;
    loop {
        match until {
            Until::Iterations(n) if done >= n => break,
            Until::Elapsed(d) if start.elapsed() >= d => break,
            _ => {}
        }
        let sent = Instant::now();
        let mut s = stream;
        s.write_all(&out).map_err(|e| stream_error(what, e))?;
        read_full(stream, &mut back, busy_poll).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => FabricError::PeerClosed {
                what: what.to_string(),
                detail: " mid-test; did the peer process die?".into(),
            },
            ErrorKind::WouldBlock | ErrorKind::TimedOut => FabricError::Timeout {
                what: what.to_string(),
                after: stall,
            },
            _ => stream_error(what, e),
        })?;
        recorder.record(sent.elapsed());
        done += 1;
        if done >= next_progress {
            progress(done, start.elapsed());
            next_progress = done + 1000;
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| stream_error(what, e))?;
    Ok(done)
}

/// Server side of the ping-pong: echoes whole messages until the client closes.
pub fn echo(stream: TcpStream, size: usize, busy_poll: bool, what: &str) -> Result<(u64, CpuTime)> {
    let cpu = CpuMeter::start(Scope::Thread);
    set_timeouts(&stream, what)?;
    let mut buffer = vec![0u8; size];
    let mut count = 0u64;
    let mut s = &stream;
    loop {
        // Read the first byte separately: EOF there is the normal end, anywhere else it is not.
        let mut filled = match read_some(&stream, &mut buffer, busy_poll) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(what, e)),
        };
        while filled < size {
            match read_some(&stream, &mut buffer[filled..], busy_poll) {
                Ok(0) => {
                    return Err(FabricError::PeerClosed {
                        what: what.to_string(),
                        detail: " in the middle of a ping".into(),
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(what, e)),
            }
        }
        s.write_all(&buffer).map_err(|e| stream_error(what, e))?;
        count += 1;
    }
    Ok((count, cpu.used()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// With a working set, successive messages come from successive places in it (here
    /// three 4 KiB messages fit in 12 KiB + 100 bytes), not from one message again.
    #[test]
    fn a_working_set_sends_successive_messages_from_successive_places() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = vec![0u8; 64 << 10];
            stream.read_exact(&mut head).unwrap();
            std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
            head
        });
        let plan = SendPlan {
            size: 4096,
            duration: Duration::from_millis(200),
            zerocopy: false,
            working_set: 3 * 4096 + 100,
        };
        let stream = TcpStream::connect(address).unwrap();
        let meter = AtomicU64::new(0);
        let direction = Direction::ClientToServer;
        send_for(stream, 0, direction, plan, Instant::now(), &meter, "test").unwrap();
        let head = reader.join().unwrap();
        for (i, &byte) in head.iter().enumerate() {
            assert_eq!(byte, (i % (3 * 4096) * 131 % 251) as u8, "byte {i}");
        }
    }

    /// A busy-poll echo whose client connects and then says nothing must not spin a core
    /// for the whole wait: it sleeps after a short poll, and still echoes the late ping.
    #[test]
    fn busy_echo_sleeps_while_the_client_is_quiet() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            echo(stream, 64, true, "test echo").unwrap()
        });
        let mut client = TcpStream::connect(address).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        client.write_all(&[7u8; 64]).unwrap();
        let mut back = [0u8; 64];
        client.read_exact(&mut back).unwrap();
        assert_eq!(back, [7u8; 64]);
        client.shutdown(Shutdown::Write).unwrap();
        let (count, cpu) = server.join().unwrap();
        assert_eq!(count, 1);
        let used = cpu.user + cpu.system;
        // Spinning through the quiet 1.5 s would cost about that much CPU.
        assert!(
            used < Duration::from_millis(700),
            "echo used {used:?} of CPU"
        );
    }
}
