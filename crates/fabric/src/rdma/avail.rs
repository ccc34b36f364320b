//! Is RDMA usable on this host, and if not, why: the one verdict that `linkbench
//! --transport rdma` and `netcheck`'s RDMA check share, so the two tools never disagree.
//!
//! The order of the questions is the order a user has to fix things in: the library,
//! then the kernel, then a device, then an ACTIVE port.

use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::PortState;
use std::ffi::CString;

/// Why RDMA cannot be used here; `Display` is one sentence with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    #[error("RDMA unavailable: libibverbs not installed (libibverbs.so.1 cannot be loaded): install rdma-core (`apt-get install libibverbs1 ibverbs-providers`), or use --transport tcp")]
    NoLibrary,
    #[error("RDMA unavailable: kernel has no RDMA support (ENOSYS): ibv_get_device_list found no RDMA subsystem; boot a kernel with InfiniBand support and load the NIC's RDMA driver (mlx5_ib, irdma, or rdma_rxe for Soft-RoCE), or use --transport tcp")]
    NoKernel,
    #[error("RDMA unavailable: no device (ibv_get_device_list is empty): load the NIC's RDMA driver or add Soft-RoCE (`rdma link add rxe0 type rxe netdev eth0`), or use --transport tcp")]
    NoDevice,
    #[error(
        "RDMA unavailable: no device named {name} (found: {found}): pass one of those to --device"
    )]
    NoSuchDevice { name: String, found: String },
    #[error("RDMA unavailable: port not ACTIVE ({ports}): bring the link up (`ip link set <netdev> up`; on InfiniBand start a subnet manager, `systemctl start opensm`), or use --transport tcp")]
    PortNotActive { ports: String },
    #[error(
        "RDMA unavailable: {what} failed ({errno}): check `ibv_devinfo`, or use --transport tcp"
    )]
    Verbs { what: String, errno: String },
}

/// The device and port a test will use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    pub device: String,
    pub port: u8,
}

/// Whether the dynamic loader can find libibverbs (sideway loads it the same way).
pub fn library_present() -> bool {
    let Ok(name) = CString::new("libibverbs.so.1") else {
        return false;
    };
    // SAFETY: dlopen with a valid C string; the handle is closed at once (refcounted).
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// Maps `ibv_get_device_list`'s errno to the verdict.
pub fn from_errno(errno: Option<i32>) -> Unavailable {
    match errno {
        Some(libc::ENOSYS) => Unavailable::NoKernel,
        // rdma-mummy-sys answers EOPNOTSUPP when the symbol could not be loaded.
        Some(libc::EOPNOTSUPP) => Unavailable::NoLibrary,
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
    let list = DeviceList::new().map_err(|e| {
        use sideway::ibverbs::device::GetDeviceListErrorKind;
        from_errno(match e.0 {
            GetDeviceListErrorKind::Ibverbs(io) => io.raw_os_error(),
            _ => None,
        })
    })?;
    if list.is_empty() {
        return Err(Unavailable::NoDevice);
    }
    let names: Vec<String> = list.iter().map(|d| d.name()).collect();
    let candidates: Vec<_> = match device {
        Some(wanted) => {
            let found: Vec<_> = list.iter().filter(|d| d.name() == wanted).collect();
            if found.is_empty() {
                return Err(Unavailable::NoSuchDevice {
                    name: wanted.to_string(),
                    found: names.join(", "),
                });
            }
            found
        }
        None => list.iter().collect(),
    };
    let mut seen = Vec::new();
    for dev in candidates {
        let name = dev.name();
        let context = dev.open().map_err(|e| Unavailable::Verbs {
            what: format!("opening {name}"),
            errno: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
        })?;
        let ports = context
            .query_device()
            .map(|a| a.phys_port_cnt())
            .unwrap_or(1);
        for port in 1..=ports {
            match context.query_port(port) {
                Ok(attr) if attr.port_state() == PortState::Active => {
                    return Ok(Usable { device: name, port })
                }
                Ok(attr) => seen.push(format!("{name} port {port} is {:?}", attr.port_state())),
                Err(e) => seen.push(format!("{name} port {port}: {e}")),
            }
        }
    }
    Err(Unavailable::PortNotActive {
        ports: seen.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_the_named_causes() {
        assert_eq!(from_errno(Some(libc::ENOSYS)), Unavailable::NoKernel);
        assert_eq!(from_errno(Some(libc::EOPNOTSUPP)), Unavailable::NoLibrary);
        let text = Unavailable::NoKernel.to_string();
        assert!(
            text.contains("kernel has no RDMA support (ENOSYS)"),
            "{text}"
        );
        assert!(!from_errno(Some(libc::EACCES)).to_string().is_empty());
    }
}
