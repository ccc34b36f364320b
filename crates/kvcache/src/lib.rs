//! The prefill-to-decode KV-block path.
//!
//! - [`layout`]: where each (layer, block, K|V, head) lives in a paged pool (NHD or HND).
//! - [`compat`]: the layout fields both sides must share, hashed and compared at attach.
//! - [`plan`]: TP-ratio mapping (which prefill rank holds which heads) and transfer plans
//!   (source bytes to destination bytes, in stream order).
//! - [`pool`], [`pattern`]: pool memory and block allocation; deterministic contents.
//! - [`wire`]: kvxfer's messages on fabric's control frames.
//! - [`prefill`], [`decode`]: the two agents, over TCP or ([`rdma`]) RDMA READ;
//!   [`rails`]: which rail carries which block when a transfer is striped.

pub mod compat;
pub mod decode;
pub mod integrity;
pub mod layout;
pub mod log_budget;
pub mod pattern;
pub mod plan;
pub mod pool;
pub mod prefill;
pub mod rails;
pub mod rdma;
pub mod wire;

pub use layout::{Dtype, Kv, KvLayout, KvShape, Order};

/// Default TCP port of a prefill agent.
pub const DEFAULT_PORT: u16 = 18600;
/// The tool name in the Hello of every kvxfer session.
pub const TOOL: &str = "kvxfer";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// Bad flags or configuration on this side.
    #[error("{0}")]
    Config(String),
    /// One request refused (by this side or the peer); other requests are unaffected.
    #[error("{0}")]
    Refused(String),
    /// Data arrived but is not what was sent or expected.
    #[error("{0}")]
    Integrity(String),
    #[error(transparent)]
    Fabric(#[from] fabric::FabricError),
}

impl KvError {
    pub(crate) fn poisoned() -> KvError {
        KvError::Config("a worker thread panicked while holding the pool lock".into())
    }
}
