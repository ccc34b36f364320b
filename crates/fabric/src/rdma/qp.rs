//! RC queue pairs over one registered region and one completion queue: creation, the
//! INIT -> RTR -> RTS walk from the peer's handshake half, and the data path.
//!
//! The data path builds each work request on the stack and calls `ibv_post_send` /
//! `ibv_post_recv` / `ibv_poll_cq` directly (sideway's post guards allocate per post);
//! setup goes through sideway's safe wrappers. Polling never blocks: callers loop with a
//! [`Watchdog`], so a dead peer is an error after a bounded time, not a hang.

use super::device::{mtu_bytes, mtu_from_bytes, Device, GidChoice, GidInfo};
use super::handshake::{path_mtu, QpAddress, RdmaEndpoint};
use super::mr::{Buffer, RemoteRegion};
use crate::error::{FabricError, Result};
use rdma_mummy_sys::{
    ibv_poll_cq, ibv_post_recv, ibv_post_send, ibv_recv_wr, ibv_send_flags, ibv_send_wr, ibv_sge,
    ibv_wc, ibv_wc_opcode, ibv_wc_status, ibv_wr_opcode,
};
use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{BasicCompletionQueue, CompletionQueue, GenericCompletionQueue};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{BasicQueuePair, QueuePair, QueuePairAttribute, QueuePairState};
use sideway::ibverbs::AccessFlags;
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

/// One side of an RDMA test: QPs, CQ, PD and the registered region.
pub struct Endpoint {
    // Field order is drop order: QPs before the CQ and PD, the MR before its memory.
    qps: Vec<BasicQueuePair>,
    mr: Arc<MemoryRegion>,
    cq: Arc<BasicCompletionQueue>,
    _pd: Arc<ProtectionDomain>,
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
        self.opcode & ibv_wc_opcode::IBV_WC_RECV != 0
    }
}

/// The verbs name of a completion status and what it usually means.
pub fn status_text(status: u32) -> (&'static str, &'static str) {
    match status {
        ibv_wc_status::IBV_WC_LOC_LEN_ERR => ("IBV_WC_LOC_LEN_ERR", "a message was longer than the receive buffer posted for it"),
        ibv_wc_status::IBV_WC_LOC_QP_OP_ERR => ("IBV_WC_LOC_QP_OP_ERR", "the work request was invalid for this QP (inline too large?)"),
        ibv_wc_status::IBV_WC_LOC_PROT_ERR => ("IBV_WC_LOC_PROT_ERR", "the local buffer is outside the registered region"),
        ibv_wc_status::IBV_WC_WR_FLUSH_ERR => ("IBV_WC_WR_FLUSH_ERR", "an earlier error moved the QP to the error state"),
        ibv_wc_status::IBV_WC_LOC_ACCESS_ERR => ("IBV_WC_LOC_ACCESS_ERR", "the local region lacks the needed access flags"),
        ibv_wc_status::IBV_WC_REM_INV_REQ_ERR => ("IBV_WC_REM_INV_REQ_ERR", "the peer rejected the request (larger than its MTU or region?)"),
        ibv_wc_status::IBV_WC_REM_ACCESS_ERR => ("IBV_WC_REM_ACCESS_ERR", "the peer refused access: wrong rkey or address outside its region"),
        ibv_wc_status::IBV_WC_REM_OP_ERR => ("IBV_WC_REM_OP_ERR", "the peer could not complete the operation"),
        ibv_wc_status::IBV_WC_RETRY_EXC_ERR => ("IBV_WC_RETRY_EXC_ERR", "the peer never acknowledged: check the GID (--gid-index), path MTU and that the peer is alive"),
        ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR => ("IBV_WC_RNR_RETRY_EXC_ERR", "the peer had no receive posted"),
        ibv_wc_status::IBV_WC_REM_INV_RD_REQ_ERR => ("IBV_WC_REM_INV_RD_REQ_ERR", "the peer refused the READ"),
        ibv_wc_status::IBV_WC_REM_ABORT_ERR => ("IBV_WC_REM_ABORT_ERR", "the peer aborted the operation"),
        ibv_wc_status::IBV_WC_FATAL_ERR => ("IBV_WC_FATAL_ERR", "the device reported a fatal error"),
        ibv_wc_status::IBV_WC_RESP_TIMEOUT_ERR => ("IBV_WC_RESP_TIMEOUT_ERR", "the peer's response timed out"),
        ibv_wc_status::IBV_WC_GENERAL_ERR => ("IBV_WC_GENERAL_ERR", "the device reported a general error"),
        _ => ("IBV_WC_(other)", "see ibv_wc_status_str"),
    }
}

fn opcode_name(opcode: u32) -> &'static str {
    match opcode {
        ibv_wc_opcode::IBV_WC_SEND => "SEND",
        ibv_wc_opcode::IBV_WC_RDMA_WRITE => "RDMA WRITE",
        ibv_wc_opcode::IBV_WC_RDMA_READ => "RDMA READ",
        ibv_wc_opcode::IBV_WC_RECV => "RECV",
        ibv_wc_opcode::IBV_WC_RECV_RDMA_WITH_IMM => "RECV (write with immediate)",
        _ => "work request",
    }
}

fn verbs(what: &str, e: impl std::error::Error) -> FabricError {
    let source = e
        .source()
        .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
    FabricError::Rdma(format!("{what}: {source}"))
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
                "tx depth {} exceeds {}'s limit of {} work requests per queue: lower --tx-depth",
                config.tx_depth, device.name, device.max_qp_wr
            )));
        }
        let gid = device.gid(&config.gid)?;
        let ctx = Arc::clone(&device.context);
        let pd = ctx
            .alloc_pd()
            .map_err(|e| verbs("allocating a protection domain", e))?;
        let access = AccessFlags::LocalWrite | AccessFlags::RemoteWrite | AccessFlags::RemoteRead;
        // SAFETY: buf outlives mr (field order), and is only freed after deregistration.
        let mr = unsafe { pd.reg_mr(buf.addr() as usize, buf.len(), access) }.map_err(|e| {
            let text = verbs(&format!("registering {} bytes", buf.len()), e).to_string();
            FabricError::Rdma(format!(
                "{text}: raise the locked-memory limit (`ulimit -l unlimited`, or LimitMEMLOCK=infinity)"
            ))
        })?;
        let per_qp = config.tx_depth as u64 + config.rx_depth as u64;
        let cqe = (per_qp * config.qps as u64 + 16).min(device.max_cqe as u64) as u32;
        let cq = ctx
            .create_cq_builder()
            .setup_cqe(cqe)
            .build()
            .map_err(|e| verbs(&format!("creating a {cqe}-entry completion queue"), e))?;
        let mut qps = Vec::with_capacity(config.qps as usize);
        let mut psns = Vec::with_capacity(config.qps as usize);
        for _ in 0..config.qps {
            let mut builder = pd.create_qp_builder();
            builder
                .setup_max_send_wr(config.tx_depth)
                .setup_max_recv_wr(config.rx_depth.clamp(1, device.max_qp_wr))
                .setup_max_send_sge(1)
                .setup_max_recv_sge(1)
                .setup_max_inline_data(config.inline)
                .setup_send_cq(GenericCompletionQueue::from(Arc::clone(&cq)))
                .setup_recv_cq(GenericCompletionQueue::from(Arc::clone(&cq)));
            let mut qp = builder.build().map_err(|e| {
                verbs(
                    &format!(
                        "creating an RC queue pair (tx depth {}, inline {})",
                        config.tx_depth, config.inline
                    ),
                    e,
                )
            })?;
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::Init)
                .setup_pkey_index(0)
                .setup_port(device.port.number)
                .setup_access_flags(access);
            qp.modify(&attr)
                .map_err(|e| verbs("moving a QP to INIT", e))?;
            qps.push(qp);
            psns.push(random_psn()?);
        }
        let wcs = (0..32)
            // SAFETY: ibv_wc is plain old data; all-zero is a valid value.
            .map(|_| unsafe { std::mem::zeroed::<ibv_wc>() })
            .collect();
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
                    qpn: qp.qp_number(),
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
        self.path_mtu = mtu_bytes(mtu);
        let rd_atomic = self.device.max_rd_atomic;
        let port = self.device.port.number;
        let sgid = u8::try_from(self.gid.index).map_err(|_| {
            FabricError::Rdma(format!("GID index {} does not fit a GRH", self.gid.index))
        })?;
        for (i, qp) in self.qps.iter_mut().enumerate() {
            let remote = peer.qps[i];
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToReceive)
                .setup_path_mtu(mtu)
                .setup_dest_qp_num(remote.qpn)
                .setup_rq_psn(remote.psn)
                .setup_max_dest_read_atomic(rd_atomic)
                .setup_min_rnr_timer(1);
            let mut ah = AddressHandleAttribute::new();
            ah.setup_dest_lid(peer.lid)
                .setup_port(port)
                .setup_service_level(0)
                .setup_grh_src_gid_index(sgid)
                .setup_grh_dest_gid(&Gid::from(peer.gid))
                .setup_grh_hop_limit(64);
            attr.setup_address_vector(&ah);
            qp.modify(&attr).map_err(|e| {
                verbs(
                    &format!(
                        "moving QP {:#x} to RTR towards {} QP {:#x} (GID index {}, path MTU {mtu_value})",
                        qp.qp_number(),
                        peer.gid,
                        remote.qpn,
                        self.gid.index
                    ),
                    e,
                )
            })?;
            let mut attr = QueuePairAttribute::new();
            attr.setup_state(QueuePairState::ReadyToSend)
                .setup_sq_psn(self.psns[i])
                .setup_timeout(14)
                .setup_retry_cnt(7)
                .setup_rnr_retry(7)
                .setup_max_read_atomic(rd_atomic);
            qp.modify(&attr)
                .map_err(|e| verbs(&format!("moving QP {:#x} to RTS", qp.qp_number()), e))?;
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
        let mut sge = ibv_sge {
            addr,
            length: wr.len,
            lkey: self.mr.lkey(),
        };
        // SAFETY: ibv_send_wr is plain old data; zero is its documented empty value.
        let mut raw: ibv_send_wr = unsafe { std::mem::zeroed() };
        raw.wr_id = wr.wr_id;
        raw.sg_list = &mut sge;
        raw.num_sge = 1;
        raw.opcode = match wr.op {
            WrOp::Write => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            WrOp::WriteImm(_) => ibv_wr_opcode::IBV_WR_RDMA_WRITE_WITH_IMM,
            WrOp::Read => ibv_wr_opcode::IBV_WR_RDMA_READ,
            WrOp::Send => ibv_wr_opcode::IBV_WR_SEND,
        };
        let mut flags = 0;
        if wr.signaled {
            flags |= ibv_send_flags::IBV_SEND_SIGNALED.0;
        }
        if wr.op != WrOp::Read && wr.len <= self.inline && wr.len > 0 {
            flags |= ibv_send_flags::IBV_SEND_INLINE.0;
        }
        raw.send_flags = flags;
        if let WrOp::WriteImm(imm) = wr.op {
            raw.imm_data_invalidated_rkey_union.imm_data = imm.to_be();
        }
        if wr.op != WrOp::Send {
            raw.wr.rdma.remote_addr = wr.remote_addr;
            raw.wr.rdma.rkey = wr.rkey;
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: the QP is alive (owned by self); raw and sge live across the call, and
        // the memory they point at is registered and outlives the work request.
        let rc = unsafe { ibv_post_send(queue.qp().as_ptr(), &mut raw, &mut bad) };
        if rc != 0 {
            return Err(FabricError::Rdma(format!(
                "ibv_post_send on QP {:#x} failed: {} (send queue full or QP in error state)",
                queue.qp_number(),
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
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
        let mut sge = ibv_sge {
            addr,
            length: len,
            lkey: self.mr.lkey(),
        };
        let mut raw = ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: if len == 0 { 0 } else { 1 },
        };
        let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
        // SAFETY: as in post_send.
        let rc = unsafe { ibv_post_recv(queue.qp().as_ptr(), &mut raw, &mut bad) };
        if rc != 0 {
            return Err(FabricError::Rdma(format!(
                "ibv_post_recv on QP {:#x} failed: {}",
                queue.qp_number(),
                std::io::Error::from_raw_os_error(rc)
            )));
        }
        Ok(())
    }

    /// Polls the CQ once without blocking; calls `each` per successful completion and
    /// turns the first error completion into an error naming the verbs status.
    pub fn poll(&mut self, mut each: impl FnMut(Completion)) -> Result<usize> {
        // SAFETY: the CQ is alive; wcs has room for the count passed.
        let n = unsafe {
            ibv_poll_cq(
                self.cq.cq().as_ptr(),
                self.wcs.len() as i32,
                self.wcs.as_mut_ptr(),
            )
        };
        if n < 0 {
            return Err(FabricError::Rdma(
                "ibv_poll_cq failed: the completion queue overran (raise its size)".into(),
            ));
        }
        for wc in &self.wcs[..n as usize] {
            if wc.status != ibv_wc_status::IBV_WC_SUCCESS {
                let (name, meaning) = status_text(wc.status);
                return Err(FabricError::Rdma(format!(
                    "{} on QP {:#x} completed with {name} (vendor error {:#x}): {meaning}",
                    opcode_name(wc.opcode),
                    wc.qp_num,
                    wc.vendor_err
                )));
            }
            let with_imm = wc.wc_flags & rdma_mummy_sys::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0;
            each(Completion {
                wr_id: wc.wr_id,
                opcode: wc.opcode,
                byte_len: wc.byte_len,
                // SAFETY: the union holds imm_data when IBV_WC_WITH_IMM is set.
                imm: with_imm
                    .then(|| u32::from_be(unsafe { wc.imm_data_invalidated_rkey_union.imm_data })),
            });
        }
        Ok(n as usize)
    }
}

/// Bounds a polling loop: fails when nothing progressed for `limit`. It reads the clock
/// only every 256 checks, and not at all when created, so a latency loop that makes one
/// per round pays nothing for it (clock reads cost microseconds under emulation).
pub struct Watchdog {
    last: Option<Instant>,
    limit: Duration,
    spins: u32,
}

impl Watchdog {
    pub fn new(limit: Duration) -> Watchdog {
        Watchdog {
            last: None,
            limit,
            spins: 0,
        }
    }

    pub fn progress(&mut self) {
        self.spins = 0;
        self.last = None;
    }

    pub fn check(&mut self, what: &dyn Fn() -> String) -> Result<()> {
        self.spins += 1;
        if self.spins < 256 {
            return Ok(());
        }
        self.spins = 0;
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
