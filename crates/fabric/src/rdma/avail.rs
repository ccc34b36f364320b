//! Is RDMA usable on this host, and if not, why: the one verdict that `linkbench
//! --transport rdma` and `netcheck`'s RDMA check share, so the two tools never disagree.
//!
//! The order of the questions is the order a user has to fix things in: the library,
//! then the kernel, then a device, then an ACTIVE port.

use super::verbs::{self, abi, DeviceList, DeviceListError};

/// Why RDMA cannot be used here; `Display` is one sentence with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    #[error("RDMA unavailable: libibverbs not installed (libibverbs.so.1 cannot be loaded): install rdma-core (`apt-get install libibverbs1 ibverbs-providers`)")]
    NoLibrary,
    #[error("RDMA unavailable: kernel has no RDMA support (ENOSYS): ibv_get_device_list found no RDMA subsystem; boot a kernel with InfiniBand support and load the NIC's RDMA driver (mlx5_ib, irdma, or rdma_rxe for Soft-RoCE)")]
    NoKernel,
    #[error("RDMA unavailable: no device (ibv_get_device_list is empty): load the NIC's RDMA driver or add Soft-RoCE (`rdma link add rxe0 type rxe netdev eth0`)")]
    NoDevice,
    #[error("RDMA unavailable: no device named {name} (found: {found}): name one of those")]
    NoSuchDevice { name: String, found: String },
    #[error("RDMA unavailable: port not ACTIVE ({ports}): bring the link up (`ip link set <netdev> up`; on InfiniBand start a subnet manager, `systemctl start opensm`)")]
    PortNotActive { ports: String },
    #[error("RDMA unavailable: {what} failed ({errno}): check `ibv_devinfo`")]
    Verbs { what: String, errno: String },
}

impl Unavailable {
    /// The cause alone, without the fix: for banners ("TCP only: no RDMA device").
    pub fn cause(&self) -> String {
        match self {
            Unavailable::NoLibrary => "libibverbs not installed".into(),
            Unavailable::NoKernel => "no RDMA support in this kernel (ENOSYS)".into(),
            Unavailable::NoDevice => "no RDMA device".into(),
            Unavailable::NoSuchDevice { name, .. } => format!("no RDMA device named {name}"),
            Unavailable::PortNotActive { .. } => "no ACTIVE RDMA port".into(),
            Unavailable::Verbs { what, errno } => format!("{what} failed ({errno})"),
        }
    }
}

/// The device and port a test will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    pub device: String,
    pub port: u8,
}

/// Whether libibverbs loads, with every entry point nodelink uses.
pub fn library_present() -> bool {
    verbs::load_library().is_ok()
}

/// Maps `ibv_get_device_list`'s errno to the verdict.
pub fn from_errno(errno: Option<i32>) -> Unavailable {
    match errno {
        Some(libc::ENOSYS) => Unavailable::NoKernel,
        other => Unavailable::Verbs {
            what: "ibv_get_device_list".into(),
            errno: match other {
                Some(e) => std::io::Error::from_raw_os_error(e).to_string(),
                None => "no error code".into(),
            },
        },
    }
}

/// Checks library, kernel, device (`device`, or any) and port, in that order; the first
/// ACTIVE port of the chosen device wins.
pub fn check(device: Option<&str>) -> Result<Usable, Unavailable> {
    if !library_present() {
        return Err(Unavailable::NoLibrary);
    }
    let list = DeviceList::new().map_err(|e| match e {
        DeviceListError::Load(_) => Unavailable::NoLibrary,
        DeviceListError::Verbs(io) => from_errno(io.raw_os_error()),
    })?;
    if list.is_empty() {
        return Err(Unavailable::NoDevice);
    }
    let names = list.names();
    let candidates: Vec<&String> = match device {
        Some(wanted) => {
            let found: Vec<_> = names.iter().filter(|d| *d == wanted).collect();
            if found.is_empty() {
                return Err(Unavailable::NoSuchDevice {
                    name: wanted.to_string(),
                    found: names.join(", "),
                });
            }
            found
        }
        None => names.iter().collect(),
    };
    let mut seen = Vec::new();
    for name in candidates {
        let context = match list.open(name) {
            Some(Ok(context)) => context,
            Some(Err(e)) => {
                return Err(Unavailable::Verbs {
                    what: format!("opening {name}"),
                    errno: e.source.to_string(),
                })
            }
            None => continue,
        };
        let ports = context.query_device().map(|a| a.phys_port_cnt).unwrap_or(1);
        for port in 1..=ports {
            match context.query_port(port) {
                Ok(attr) if attr.state == abi::IBV_PORT_ACTIVE => {
                    return Ok(Usable {
                        device: name.clone(),
                        port,
                    })
                }
                Ok(attr) => seen.push(format!(
                    "{name} port {port} is {}",
                    port_state_name(attr.state)
                )),
                Err(e) => seen.push(format!("{name} port {port}: {e}")),
            }
        }
    }
    Err(Unavailable::PortNotActive {
        ports: seen.join("; "),
    })
}

/// A port state as `ibv_devinfo` words it (without its `PORT_` prefix).
pub(crate) fn port_state_name(state: u32) -> &'static str {
    match state {
        0 => "NOP",
        1 => "DOWN",
        2 => "INIT",
        3 => "ARMED",
        4 => "ACTIVE",
        5 => "ACTIVE_DEFER",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_the_named_causes() {
        assert_eq!(from_errno(Some(libc::ENOSYS)), Unavailable::NoKernel);
        let text = Unavailable::NoKernel.to_string();
        assert!(
            text.contains("kernel has no RDMA support (ENOSYS)"),
            "{text}"
        );
        assert!(!from_errno(Some(libc::EACCES)).to_string().is_empty());
    }
}
