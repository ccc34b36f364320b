//! RDMA verbs through our own run-time loader ([`verbs`], libibverbs opened with
//! `dlopen` as NCCL does): nothing but cargo builds it, one binary runs on TCP-only hosts
//! and reports why RDMA is missing ([`avail`]) instead of failing to start.
//!
//! [`device`] finds ports and GIDs, [`mr`] holds registered memory with bounds-checked
//! (offset, len) access, [`qp`] builds RC queue pairs and the data path, and [`handshake`]
//! is the sans-IO exchange that connects two of them over the control channel.

pub mod avail;
pub mod device;
pub mod handshake;
pub mod mr;
pub mod qp;
pub mod verbs;

pub use avail::{check, Unavailable, Usable};
pub use device::{Device, GidChoice, GidInfo, GidKind, PortInfo};
pub use handshake::{RdmaEndpoint, RdmaOp, RdmaTest};
pub use mr::{Buffer, RemoteRegion};
pub use qp::{Completion, Endpoint, EndpointConfig, Registration, SendWr, Watchdog, WrOp};
