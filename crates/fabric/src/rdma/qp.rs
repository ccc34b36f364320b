//! RC queue pairs over one registered region and one completion queue: creation, the
//! INIT -> RTR -> RTS walk from the peer's handshake half, and the data path.
//!
//! The data path builds each work request on the stack (no allocation per post) through
//! the safe [`super::verbs`] layer. Polling never blocks: callers loop with a
//! [`Watchdog`], so a dead peer is an error after a bounded time, not a hang.

use super::device::{mtu_bytes, mtu_from_bytes, Device, GidChoice, GidInfo};
use super::handshake::{path_mtu, QpAddress, RdmaEndpoint};
use super::mr::{Buffer, RemoteRegion};
use super::verbs::abi::{self, ibv_wc};
use super::verbs::{Cq, Mr, Pd, PostError, PostSend, Qp};
use crate::error::{FabricError, Result};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to build.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub qps: u32,
    /// Send work requests in flight per QP.
    pub tx_depth: u32,
    /// Receive work requests posted per QP.
    pub rx_depth: u32,
    /// Largest inline message.
    pub inline: u32,
    /// Registered bytes.
    pub region: u64,
    pub gid: GidChoice,
}

/// Memory registered once on a device and shared by many endpoints (a KV pool served to
/// many decode connections): registration pins every page, which costs seconds for a
/// large pool, so it happens before a server says it is ready, not per connection.
pub struct Registration {
    pd: Arc<Pd>,
    mr: Arc<Mr>,
    addr: *mut u8,
    len: usize,
    pub device: Device,
}

// SAFETY: the pointer names registered memory; access to it is the owner's to order.
unsafe impl Send for Registration {}
unsafe impl Sync for Registration {}

const ACCESS: std::ffi::c_int =
    abi::IBV_ACCESS_LOCAL_WRITE | abi::IBV_ACCESS_REMOTE_WRITE | abi::IBV_ACCESS_REMOTE_READ;

fn register(pd: &Arc<Pd>, addr: *mut u8, len: usize) -> Result<Mr> {
    // SAFETY: the callers' contracts keep the memory alive while the MR exists.
    unsafe { pd.reg_mr(addr, len, ACCESS) }.map_err(|e| {
        let text = verbs(&format!("registering {len} bytes"), e).to_string();
        FabricError::Rdma(format!(
            "{text}: raise the locked-memory limit (`ulimit -l unlimited`, or LimitMEMLOCK=infinity)"
        ))
    })
}

impl Registration {
    /// Registers `len` bytes at `addr` on `device`.
    ///
    /// # Safety
    /// The memory must stay valid while the Registration or any [`Endpoint`] made from
    /// it lives.
    pub unsafe fn new(device: Device, addr: *mut u8, len: usize) -> Result<Registration> {
        let pd = device
            .context
            .alloc_pd()
            .map_err(|e| verbs("allocating a protection domain", e))?;
        let mr = Arc::new(register(&pd, addr, len)?);
        Ok(Registration {
            pd,
            mr,
            addr,
            len,
            device,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One side of an RDMA test: QPs, CQ, PD and the registered region.
pub struct Endpoint {
    // Field order is drop order: QPs before the CQ and PD, the MR before its memory.
    qps: Vec<Qp>,
    mr: Arc<Mr>,
    cq: Arc<Cq>,
    _pd: Arc<Pd>,
    buf: Buffer,
    pub device: Device,
    pub gid: GidInfo,
    psns: Vec<u32>,
    wcs: Vec<ibv_wc>,
    inline: u32,
    path_mtu: u32,
}

/// The operations a send work request can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrOp {
    Write,
    WriteImm(u32),
    Read,
    Send,
}

/// One send work request; `local_offset`/`len` address our region, `remote` the peer's.
#[derive(Debug, Clone, Copy)]
pub struct SendWr {
    pub wr_id: u64,
    pub op: WrOp,
    pub local_offset: u64,
    pub len: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub signaled: bool,
}

/// A successful completion.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub wr_id: u64,
    pub opcode: u32,
    pub byte_len: u32,
    pub imm: Option<u32>,
}

impl Completion {
    pub fn is_recv(&self) -> bool {
        self.opcode & abi::IBV_WC_RECV != 0
    }
}

/// The verbs name of a completion status and what it usually means.
pub fn status_text(status: u32) -> (&'static str, &'static str) {
    match status {
        abi::IBV_WC_LOC_LEN_ERR => ("IBV_WC_LOC_LEN_ERR", "a message was longer than the receive buffer posted for it"),
        abi::IBV_WC_LOC_QP_OP_ERR => ("IBV_WC_LOC_QP_OP_ERR", "the work request was invalid for this QP (inline too large?)"),
        abi::IBV_WC_LOC_PROT_ERR => ("IBV_WC_LOC_PROT_ERR", "the local buffer is outside the registered region"),
        abi::IBV_WC_WR_FLUSH_ERR => ("IBV_WC_WR_FLUSH_ERR", "an earlier error moved the QP to the error state"),
        abi::IBV_WC_LOC_ACCESS_ERR => ("IBV_WC_LOC_ACCESS_ERR", "the local region lacks the needed access flags"),
        abi::IBV_WC_REM_INV_REQ_ERR => ("IBV_WC_REM_INV_REQ_ERR", "the peer rejected the request (larger than its MTU or region?)"),
        abi::IBV_WC_REM_ACCESS_ERR => ("IBV_WC_REM_ACCESS_ERR", "the peer refused access: wrong rkey or address outside its region"),
        abi::IBV_WC_REM_OP_ERR => ("IBV_WC_REM_OP_ERR", "the peer could not complete the operation"),
        abi::IBV_WC_RETRY_EXC_ERR => ("IBV_WC_RETRY_EXC_ERR", "the peer never acknowledged: check the GID (the GID index setting), path MTU and that the peer is alive"),
        abi::IBV_WC_RNR_RETRY_EXC_ERR => ("IBV_WC_RNR_RETRY_EXC_ERR", "the peer had no receive posted"),
        abi::IBV_WC_REM_INV_RD_REQ_ERR => ("IBV_WC_REM_INV_RD_REQ_ERR", "the peer refused the READ"),
        abi::IBV_WC_REM_ABORT_ERR => ("IBV_WC_REM_ABORT_ERR", "the peer aborted the operation"),
        abi::IBV_WC_FATAL_ERR => ("IBV_WC_FATAL_ERR", "the device reported a fatal error"),
        abi::IBV_WC_RESP_TIMEOUT_ERR => ("IBV_WC_RESP_TIMEOUT_ERR", "the peer's response timed out"),
        abi::IBV_WC_GENERAL_ERR => ("IBV_WC_GENERAL_ERR", "the device reported a general error"),
        _ => ("IBV_WC_(other)", "an uncommon completion status"),
    }
}

fn opcode_name(opcode: u32) -> &'static str {
    match opcode {
        abi::IBV_WC_SEND => "SEND",
        abi::IBV_WC_RDMA_WRITE => "RDMA WRITE",
        abi::IBV_WC_RDMA_READ => "RDMA READ",
        abi::IBV_WC_RECV => "RECV",
        abi::IBV_WC_RECV_RDMA_WITH_IMM => "RECV (write with immediate)",
        _ => "work request",
    }
}

fn verbs(what: &str, e: impl std::fmt::Display) -> FabricError {
    FabricError::Rdma(format!("{what}: {e}"))
}

fn random_psn() -> Result<u32> {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| FabricError::Config(format!("no randomness for the PSN: {e}")))?;
    Ok(u32::from_le_bytes(bytes) & 0x00ff_ffff)
}

impl Endpoint {
    /// An endpoint over a fresh zeroed region of `config.region` bytes.
    pub fn new(device: Device, config: &EndpointConfig) -> Result<Endpoint> {
        let buf = Buffer::new(config.region as usize).ok_or_else(|| {
            FabricError::Rdma(format!(
                "cannot allocate {} bytes to register",
                config.region
            ))
        })?;
        Endpoint::with_buffer(device, config, buf)
    }

    /// An endpoint whose registered region is `buf` (`config.region` is ignored).
    pub fn with_buffer(device: Device, config: &EndpointConfig, buf: Buffer) -> Result<Endpoint> {
        if config.tx_depth > device.max_qp_wr {
            return Err(FabricError::Rdma(format!(
                "tx depth {} exceeds {}'s limit of {} work requests per queue: lower {}",
                config.tx_depth,
                device.name,
                device.max_qp_wr,
                measure::Setting::SendQueueDepth
            )));
        }
        let pd = device
            .context
            .alloc_pd()
            .map_err(|e| verbs("allocating a protection domain", e))?;
        // buf outlives mr: field order drops the MR first, and it is this endpoint's alone.
        let mr = Arc::new(register(&pd, buf.addr() as *mut u8, buf.len())?);
        Endpoint::build(device, config, pd, mr, buf)
    }

    /// An endpoint over a shared registration: only QPs and a CQ are made, so connecting
    /// costs no pinning.
    pub fn shared(registration: &Registration, config: &EndpointConfig) -> Result<Endpoint> {
        // SAFETY: Registration::new's contract keeps the memory valid while anything made
        // from it lives; a borrowed Buffer never frees it.
        let buf = unsafe { Buffer::borrowed(registration.addr, registration.len) }
            .ok_or_else(|| FabricError::Rdma("the registered region is empty".into()))?;
        Endpoint::build(
            registration.device.clone(),
            config,
            Arc::clone(&registration.pd),
            Arc::clone(&registration.mr),
            buf,
        )
    }

    fn build(
        device: Device,
        config: &EndpointConfig,
        pd: Arc<Pd>,
        mr: Arc<Mr>,
        buf: Buffer,
    ) -> Result<Endpoint> {
        if config.tx_depth > device.max_qp_wr {
            return Err(FabricError::Rdma(format!(
                "tx depth {} exceeds {}'s limit of {} work requests per queue: lower {}",
                config.tx_depth,
                device.name,
                device.max_qp_wr,
                measure::Setting::SendQueueDepth
            )));
        }
        let gid = device.gid(&config.gid)?;
        let ctx = Arc::clone(&device.context);
        let access = ACCESS;
        let per_qp = config.tx_depth as u64 + config.rx_depth as u64;
        let cqe = (per_qp * config.qps as u64 + 16).min(device.max_cqe as u64) as u32;
        let cq = ctx
            .create_cq(cqe)
            .map_err(|e| verbs(&format!("creating a {cqe}-entry completion queue"), e))?;
        let mut qps = Vec::with_capacity(config.qps as usize);
        let mut psns = Vec::with_capacity(config.qps as usize);
        for _ in 0..config.qps {
            let cap = abi::ibv_qp_cap {
                max_send_wr: config.tx_depth,
                max_recv_wr: config.rx_depth.clamp(1, device.max_qp_wr),
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: config.inline,
            };
            let mut qp = pd.create_rc_qp(&cq, cap).map_err(|e| {
                verbs(
                    &format!(
                        "creating an RC queue pair (tx depth {}, inline {})",
                        config.tx_depth, config.inline
                    ),
                    e,
                )
            })?;
            let attr = abi::ibv_qp_attr {
                qp_state: abi::IBV_QPS_INIT,
                pkey_index: 0,
                port_num: device.port.number,
                qp_access_flags: access as u32,
                ..Default::default()
            };
            qp.modify(
                &attr,
                abi::IBV_QP_STATE
                    | abi::IBV_QP_PKEY_INDEX
                    | abi::IBV_QP_PORT
                    | abi::IBV_QP_ACCESS_FLAGS,
            )
            .map_err(|e| verbs("moving a QP to INIT", e))?;
            qps.push(qp);
            psns.push(random_psn()?);
        }
        let wcs = vec![ibv_wc::default(); 32];
        Ok(Endpoint {
            qps,
            mr,
            cq,
            _pd: pd,
            buf,
            gid,
            psns,
            wcs,
            inline: config.inline,
            path_mtu: device.port.active_mtu,
            device,
        })
    }

    /// Our half of the handshake.
    pub fn local(&self) -> RdmaEndpoint {
        RdmaEndpoint {
            device: self.device.name.clone(),
            lid: self.device.port.lid,
            gid: self.gid.gid,
            gid_index: self.gid.index,
            mtu: self.device.port.active_mtu,
            qps: self
                .qps
                .iter()
                .zip(&self.psns)
                .map(|(qp, &psn)| QpAddress {
                    qpn: qp.qp_num(),
                    psn,
                })
                .collect(),
            region: RemoteRegion {
                addr: self.buf.addr(),
                len: self.buf.len() as u64,
                rkey: self.mr.rkey(),
            },
        }
    }

    pub fn path_mtu(&self) -> u32 {
        self.path_mtu
    }

    /// Connects QP i to the peer's QP i: INIT -> RTR -> RTS, path MTU = min of both ports.
    pub fn connect(&mut self, peer: &RdmaEndpoint) -> Result<()> {
        if peer.qps.len() != self.qps.len() {
            return Err(FabricError::Rdma(format!(
                "peer has {} QPs, this side {}",
                peer.qps.len(),
                self.qps.len()
            )));
        }
        let mtu_value = path_mtu(self.device.port.active_mtu, peer.mtu);
        let mtu = mtu_from_bytes(mtu_value)
            .ok_or_else(|| FabricError::Rdma(format!("peer MTU {} is not an IB MTU", peer.mtu)))?;
        self.path_mtu = mtu_bytes(mtu).unwrap_or(mtu_value);
        let rd_atomic = self.device.max_rd_atomic;
        let port = self.device.port.number;
        let sgid = u8::try_from(self.gid.index).map_err(|_| {
            FabricError::Rdma(format!("GID index {} does not fit a GRH", self.gid.index))
        })?;
        for (i, qp) in self.qps.iter_mut().enumerate() {
            let remote = peer.qps[i];
            let mut ah = abi::ibv_ah_attr {
                dlid: peer.lid,
                sl: 0,
                port_num: port,
                is_global: 1,
                ..Default::default()
            };
            ah.grh.dgid.raw = peer.gid.octets();
            ah.grh.sgid_index = sgid;
            ah.grh.hop_limit = 64;
            let attr = abi::ibv_qp_attr {
                qp_state: abi::IBV_QPS_RTR,
                path_mtu: mtu,
                dest_qp_num: remote.qpn,
                rq_psn: remote.psn,
                max_dest_rd_atomic: rd_atomic,
                min_rnr_timer: 1,
                ah_attr: ah,
                ..Default::default()
            };
            let mask = abi::IBV_QP_STATE
                | abi::IBV_QP_AV
                | abi::IBV_QP_PATH_MTU
                | abi::IBV_QP_DEST_QPN
                | abi::IBV_QP_RQ_PSN
                | abi::IBV_QP_MAX_DEST_RD_ATOMIC
                | abi::IBV_QP_MIN_RNR_TIMER;
            let qpn = qp.qp_num();
            qp.modify(&attr, mask).map_err(|e| {
                verbs(
                    &format!(
                        "moving QP {qpn:#x} to RTR towards {} QP {:#x} (GID index {}, path MTU {mtu_value})",
                        peer.gid,
                        remote.qpn,
                        self.gid.index
                    ),
                    e,
                )
            })?;
            let attr = abi::ibv_qp_attr {
                qp_state: abi::IBV_QPS_RTS,
                sq_psn: self.psns[i],
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                max_rd_atomic: rd_atomic,
                ..Default::default()
            };
            let mask = abi::IBV_QP_STATE
                | abi::IBV_QP_SQ_PSN
                | abi::IBV_QP_TIMEOUT
                | abi::IBV_QP_RETRY_CNT
                | abi::IBV_QP_RNR_RETRY
                | abi::IBV_QP_MAX_QP_RD_ATOMIC;
            qp.modify(&attr, mask)
                .map_err(|e| verbs(&format!("moving QP {qpn:#x} to RTS"), e))?;
        }
        Ok(())
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buf
    }

    pub fn buffer_mut(&mut self) -> &mut Buffer {
        &mut self.buf
    }

    pub fn qp_count(&self) -> usize {
        self.qps.len()
    }

    /// Posts one send work request on QP `qp`; the local range is bounds-checked here, the
    /// remote one by the caller (against the peer's advertised region).
    pub fn post_send(&mut self, qp: usize, wr: &SendWr) -> Result<()> {
        let addr = self
            .buf
            .at(wr.local_offset, wr.len as u64)
            .map_err(|e| FabricError::Rdma(e.to_string()))?;
        let Some(queue) = self.qps.get(qp) else {
            return Err(FabricError::Rdma(format!("no QP {qp}")));
        };
        let opcode = match wr.op {
            WrOp::Write => abi::IBV_WR_RDMA_WRITE,
            WrOp::WriteImm(_) => abi::IBV_WR_RDMA_WRITE_WITH_IMM,
            WrOp::Read => abi::IBV_WR_RDMA_READ,
            WrOp::Send => abi::IBV_WR_SEND,
        };
        let mut flags = 0;
        if wr.signaled {
            flags |= abi::IBV_SEND_SIGNALED;
        }
        if wr.op != WrOp::Read && wr.len <= self.inline && wr.len > 0 {
            flags |= abi::IBV_SEND_INLINE;
        }
        let post = PostSend {
            wr_id: wr.wr_id,
            opcode,
            flags,
            local_addr: addr,
            len: wr.len,
            remote_addr: if wr.op == WrOp::Send {
                0
            } else {
                wr.remote_addr
            },
            rkey: if wr.op == WrOp::Send { 0 } else { wr.rkey },
            imm: match wr.op {
                WrOp::WriteImm(imm) => imm,
                _ => 0,
            },
        };
        queue.post_send(&self.mr, &post).map_err(|e| {
            FabricError::Rdma(format!(
                "ibv_post_send on QP {:#x} failed: {} (send queue full or QP in error state)",
                queue.qp_num(),
                post_error_text(e)
            ))
        })
    }

    /// Posts one receive for `len` bytes at `offset` (len 0: a receive for WRITE_WITH_IMM).
    pub fn post_recv(&mut self, qp: usize, wr_id: u64, offset: u64, len: u32) -> Result<()> {
        let addr = self
            .buf
            .at(offset, len as u64)
            .map_err(|e| FabricError::Rdma(e.to_string()))?;
        let Some(queue) = self.qps.get(qp) else {
            return Err(FabricError::Rdma(format!("no QP {qp}")));
        };
        queue.post_recv(&self.mr, wr_id, addr, len).map_err(|e| {
            FabricError::Rdma(format!(
                "ibv_post_recv on QP {:#x} failed: {}",
                queue.qp_num(),
                post_error_text(e)
            ))
        })
    }

    /// Polls the CQ once without blocking; calls `each` per successful completion and
    /// turns the first error completion into an error naming the verbs status.
    pub fn poll(&mut self, mut each: impl FnMut(Completion)) -> Result<usize> {
        let n = self.cq.poll(&mut self.wcs).map_err(|_| {
            FabricError::Rdma(
                "ibv_poll_cq failed: the completion queue overran (raise its size)".into(),
            )
        })?;
        for wc in &self.wcs[..n] {
            if wc.status != abi::IBV_WC_SUCCESS {
                let (name, meaning) = status_text(wc.status);
                let words = super::verbs::wc_status_str(wc.status)
                    .map(|w| format!(", \"{w}\""))
                    .unwrap_or_default();
                return Err(FabricError::Rdma(format!(
                    "{} on QP {:#x} completed with {name} (status {}{words}, vendor error {:#x}): {meaning}",
                    opcode_name(wc.opcode),
                    wc.qp_num,
                    wc.status,
                    wc.vendor_err
                )));
            }
            let with_imm = wc.wc_flags & abi::IBV_WC_WITH_IMM != 0;
            each(Completion {
                wr_id: wc.wr_id,
                opcode: wc.opcode,
                byte_len: wc.byte_len,
                imm: with_imm.then(|| u32::from_be(wc.imm_data)),
            });
        }
        Ok(n)
    }
}

fn post_error_text(e: PostError) -> String {
    match e {
        PostError::OutsideRegion => "the local range lies outside the registered region".into(),
        PostError::Verbs(rc) => std::io::Error::from_raw_os_error(rc.abs()).to_string(),
    }
}

/// Bounds a polling loop: fails when nothing progressed for `limit`. It reads the clock
/// only every 256 checks, and not at all when created, so a latency loop that makes one
/// per round pays nothing for it (clock reads cost microseconds under emulation). With a
/// control connection to watch ([`Watchdog::watching`]), those checks also peek at it, so
/// a peer that died is noticed at once, not after `limit`.
pub struct Watchdog<'a> {
    last: Option<Instant>,
    limit: Duration,
    spins: u32,
    control: Option<BorrowedFd<'a>>,
    /// The control connection was seen closed once; the next quiet check ends the wait.
    /// One round of grace lets completions the peer saw before it exited be polled.
    closed_once: bool,
}

impl Watchdog<'static> {
    pub fn new(limit: Duration) -> Self {
        Watchdog {
            last: None,
            limit,
            spins: 0,
            control: None,
            closed_once: false,
        }
    }
}

impl<'a> Watchdog<'a> {
    /// Also fails as soon as `control` (the peer's control connection) is closed or reset.
    pub fn watching<'b>(self, control: Option<&'b TcpStream>) -> Watchdog<'b> {
        Watchdog {
            last: self.last,
            limit: self.limit,
            spins: self.spins,
            control: control.map(|s| s.as_fd()),
            closed_once: self.closed_once,
        }
    }

    pub fn progress(&mut self) {
        self.spins = 0;
        self.last = None;
        self.closed_once = false;
    }

    pub fn check(&mut self, what: &dyn Fn() -> String) -> Result<()> {
        self.spins += 1;
        if self.spins < 256 {
            return Ok(());
        }
        self.spins = 0;
        if self.control.is_some_and(closed) {
            if !std::mem::replace(&mut self.closed_once, true) {
                return Ok(());
            }
            return Err(FabricError::PeerClosed {
                what: what(),
                detail: " (its control connection ended while this side polled: did it die?)"
                    .into(),
            });
        }
        let last = *self.last.get_or_insert_with(Instant::now);
        if last.elapsed() > self.limit {
            return Err(FabricError::Timeout {
                what: what(),
                after: self.limit,
            });
        }
        Ok(())
    }
}

/// Whether the peer closed or reset the connection. It asks for the peer's FIN
/// (POLLRDHUP), not for an empty read: a peer that sent something (its Done, an Error)
/// and then exited leaves that data queued ahead of its FIN, and a peek would call it
/// alive forever. Data waiting from a peer that is still open means it is alive.
fn closed(fd: BorrowedFd<'_>) -> bool {
    let mut watch = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let rc = unsafe { libc::poll(&mut watch, 1, 0) };
    rc > 0 && watch.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// Runs the 256 checks after which a watchdog looks at the clock and the control socket.
    fn tick(watchdog: &mut Watchdog) -> Result<()> {
        for _ in 0..256 {
            watchdog.check(&|| "the peer's SEND".into())?;
        }
        Ok(())
    }

    #[test]
    fn a_watched_control_connection_that_closes_ends_the_wait_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut watchdog = Watchdog::new(Duration::from_secs(60)).watching(Some(&server));
        // Open and quiet, then with the peer's Done waiting unread: alive.
        tick(&mut watchdog).unwrap();
        client.write_all(b"Done").unwrap();
        tick(&mut watchdog).unwrap();
        let mut done = [0u8; 4];
        std::io::Read::read_exact(&mut &server, &mut done).unwrap();
        // The client dies: noticed on the next tick, long before the 60 s limit.
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        let mut seen = String::new();
        for _ in 0..20 {
            if let Err(e) = tick(&mut watchdog) {
                seen = e.to_string();
                break;
            }
        }
        assert!(seen.contains("control connection ended"), "{seen:?}");
        // Unwatched, the same loop only has its time limit.
        let mut plain = Watchdog::new(Duration::from_secs(60));
        tick(&mut plain).unwrap();
    }

    #[test]
    fn a_peer_that_sends_then_exits_is_noticed_though_its_bytes_are_unread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut watchdog = Watchdog::new(Duration::from_secs(60)).watching(Some(&server));
        client.write_all(b"Done").unwrap();
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        // One quiet round of grace (completions the peer saw may still be polled), then
        // the wait ends, long before the 60 s limit.
        tick(&mut watchdog).unwrap();
        let seen = tick(&mut watchdog).unwrap_err().to_string();
        assert!(seen.contains("control connection ended"), "{seen:?}");
        // Progress in between restarts the grace.
        let mut watchdog = Watchdog::new(Duration::from_secs(60)).watching(Some(&server));
        tick(&mut watchdog).unwrap();
        watchdog.progress();
        tick(&mut watchdog).unwrap();
        assert!(tick(&mut watchdog).is_err());
    }
}
