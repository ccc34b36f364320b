//! RDMA verbs through `sideway`, which loads libibverbs at run time: one binary runs on
//! TCP-only hosts and reports why RDMA is missing ([`avail`]) instead of failing to start.
//!
//! [`device`] finds ports and GIDs, [`mr`] holds registered memory with bounds-checked
//! (offset, len) access, [`qp`] builds RC queue pairs and the data path, and [`handshake`]
//! is the sans-IO exchange that connects two of them over the control channel.

pub mod avail;
pub mod device;
pub mod handshake;
pub mod mr;
pub mod qp;

pub use avail::{check, Unavailable, Usable};
pub use device::{Device, GidChoice, GidInfo, GidKind, PortInfo};
pub use handshake::{RdmaEndpoint, RdmaOp, RdmaTest};
pub use mr::{Buffer, RemoteRegion};
pub use qp::{Completion, Endpoint, EndpointConfig, SendWr, Watchdog, WrOp};
