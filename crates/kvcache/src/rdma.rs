//! The KV path over RDMA verbs (fabric's transport): each side registers its whole pool,
//! the two exchange QP addresses and rkeys over the control connection, and decode pulls
//! a request with RDMA READs straight from prefill's blocks into its own. The control
//! messages, leases, plans and checksums are the same as over TCP.
//!
//! Prefill registers its pool once, before it says it is ready, and every decode
//! connection gets QPs over that one registration; decode registers its pool per
//! connection (one connection per prefill rank).

use crate::plan::Piece;
use crate::pool::KvPool;
use crate::KvError;
use fabric::rdma::{
    Buffer, Device, Endpoint, EndpointConfig, Registration, RemoteRegion, SendWr, Watchdog, WrOp,
};
use std::time::Duration;

/// Which RDMA device and GID a side uses.
#[derive(Debug, Clone, Default)]
pub struct RdmaOptions {
    /// `--rdma-device`, else the first device with an ACTIVE port.
    pub device: Option<String>,
    /// `--gid-index`, else NCCL_IB_GID_INDEX, else the best RoCE v2 GID.
    pub gid_index: Option<u32>,
}

/// READs in flight per connection.
const READ_DEPTH: u32 = 64;

/// Fails with fabric's one-sentence verdict when RDMA cannot be used here.
pub fn check(options: &RdmaOptions) -> Result<(), KvError> {
    fabric::rdma::check(options.device.as_deref())
        .map(|_| ())
        .map_err(|e| KvError::Fabric(e.into()))
}

fn config(options: &RdmaOptions, region: u64) -> Result<EndpointConfig, KvError> {
    let gid = fabric::rdma::device::gid_choice(options.gid_index, None).map_err(KvError::Config)?;
    Ok(EndpointConfig {
        qps: 1,
        tx_depth: READ_DEPTH,
        rx_depth: 1,
        inline: 0,
        region,
        gid,
    })
}

/// Registers the whole pool once.
///
/// The pool must outlive the registration and every endpoint made from it: the agent
/// that owns both drops the registration first.
pub(crate) fn register_pool(pool: &KvPool, options: &RdmaOptions) -> Result<Registration, KvError> {
    let device = Device::open(options.device.as_deref())?;
    // Checked here, so a bad GID choice is found at start, not at the first connection.
    config(options, pool.len() as u64)?;
    // SAFETY: see above.
    Ok(unsafe { Registration::new(device, pool.base(), pool.len()) }?)
}

/// A one-QP endpoint over a pool registered with [`register_pool`].
pub(crate) fn endpoint_on(
    registration: &Registration,
    options: &RdmaOptions,
) -> Result<Endpoint, KvError> {
    Ok(Endpoint::shared(
        registration,
        &config(options, registration.len() as u64)?,
    )?)
}

/// A one-QP endpoint whose registered region is the whole pool.
///
/// The pool must outlive the endpoint: callers keep the pool's owner (an `Arc` of the
/// agent) alive for as long as the endpoint exists.
pub(crate) fn endpoint_over(pool: &KvPool, options: &RdmaOptions) -> Result<Endpoint, KvError> {
    let device = Device::open(options.device.as_deref())?;
    let config = config(options, pool.len() as u64)?;
    // SAFETY: the pool outlives the endpoint (see above); registration pins it meanwhile.
    let buffer = unsafe { Buffer::borrowed(pool.base(), pool.len()) }
        .ok_or_else(|| KvError::Config("the KV pool has no memory to register".into()))?;
    Ok(Endpoint::with_buffer(device, &config, buffer)?)
}

/// READs every piece from the remote pool (`src`) into ours (`dst`), up to
/// [`READ_DEPTH`] in flight; fails when no READ completes for `stall`.
pub(crate) fn read_pieces(
    endpoint: &mut Endpoint,
    remote: &RemoteRegion,
    pieces: &[Piece],
    stall: Duration,
    request_id: &str,
) -> Result<(), KvError> {
    let (mut posted, mut done) = (0usize, 0usize);
    let mut watchdog = Watchdog::new(stall);
    while done < pieces.len() {
        while posted < pieces.len() && posted - done < READ_DEPTH as usize {
            let piece = &pieces[posted];
            let len = u32::try_from(piece.len).map_err(|_| {
                KvError::Config(format!(
                    "a {}-byte piece is too long for one READ",
                    piece.len
                ))
            })?;
            let remote_addr = remote.at(piece.src, piece.len).map_err(|e| {
                KvError::Integrity(format!(
                    "request {request_id}: prefill's region is too small: {e}"
                ))
            })?;
            endpoint.post_send(
                0,
                &SendWr {
                    wr_id: posted as u64,
                    op: WrOp::Read,
                    local_offset: piece.dst,
                    len,
                    remote_addr,
                    rkey: remote.rkey,
                    signaled: true,
                },
            )?;
            posted += 1;
        }
        let completed = endpoint.poll(|_| {})?;
        if completed > 0 {
            done += completed;
            watchdog.progress();
        } else {
            watchdog.check(&|| {
                format!(
                    "RDMA READs of request {request_id} ({done} of {} done)",
                    pieces.len()
                )
            })?;
            std::hint::spin_loop();
        }
    }
    Ok(())
}
