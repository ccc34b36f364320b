//! Moving bytes between nodes: the versioned control protocol (sans-IO, in [`control`]),
//! its thin blocking I/O shell ([`channel`]), TCP socket setup ([`tcp`]), CPU accounting
//! ([`cpu`]), RDMA verbs ([`rdma`]) and the linkbench engine built from them ([`perf`]).
//!
//! The data path uses one blocking thread per stream rather than an async runtime: it is
//! what iperf3 -P does, it measured faster here, and socket timeouts bound every wait.

pub mod bootstrap;
pub mod channel;
pub mod control;
pub mod cpu;
mod error;
pub mod handshake;
pub mod openings;
pub mod perf;
pub mod rdma;
pub mod tcp;
pub mod test_kind;

pub use error::{FabricError, ProtocolError, Result};
