//! Facts about one host and the pre-flight checks over them.
//!
//! Facts are gathered once ([`gather`]) from /sys, /proc and /dev/shm under a root that
//! tests point at a fixture tree, plus a few live calls (addresses, hostname resolution,
//! port binds). Checks ([`run_checks`]) are pure functions of those facts.

mod checks;
pub mod cluster;
mod emit;
mod facts;
mod fingerprint;
mod nccl_ifname;
pub mod pair;
mod sysfs;

pub use checks::{run_checks, Check, CheckOptions, Status, Summary};
pub use emit::{environment, export_lines};
pub use facts::read_gpus;
pub use facts::{
    gather, DefaultRoute, Facts, GatherOptions, Gpu, GpuFacts, Interface, IpNet, Memlock,
    PortProbe, RdmaDevice, RdmaGid, RdmaPort, Shm,
};
pub use fingerprint::{parse_dist_info_name, Fingerprint};
pub use nccl_ifname::IfnameSpec;
pub use sysfs::{parse_default_route, read_interface, read_rdma_devices, read_shm_listing};
