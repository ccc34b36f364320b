//! What we know about the host, gathered once. Every field is plain data so checks are
//! pure functions and tests can build any scenario by hand.

use crate::fingerprint::Fingerprint;
use crate::sysfs;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct IpNet<A> {
    pub addr: A,
    pub prefix: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
    pub exists: bool,
    pub operstate: Option<String>,
    pub carrier: Option<bool>,
    /// IFF_* flags from sysfs (bit 0 = IFF_UP).
    pub flags: Option<u32>,
    pub mtu: Option<u32>,
    pub speed_mbps: Option<i64>,
    pub mac: Option<String>,
    /// loopback, physical, veth, bridge or virtual.
    pub kind: String,
    pub numa_node: Option<i32>,
    /// Kernel driver (`ethtool -i`): mlx5_core, veth, virtio_net, bridge, ...
    pub driver: Option<String>,
    pub ipv4: Vec<IpNet<Ipv4Addr>>,
    pub ipv6: Vec<IpNet<Ipv6Addr>>,
}

impl Interface {
    pub fn admin_up(&self) -> bool {
        self.flags.is_some_and(|flags| flags & 1 == 1)
    }

    /// Usable for traffic: operstate up, or "unknown" (loopback, some virtual NICs) while
    /// administratively up with carrier.
    pub fn is_up(&self) -> bool {
        match self.operstate.as_deref() {
            Some("up") => true,
            Some("unknown") => self.admin_up() && self.carrier != Some(false),
            _ => false,
        }
    }

    /// The first IPv4 address that other nodes could reach (not loopback, not link-local).
    pub fn global_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4
            .iter()
            .map(|net| net.addr)
            .find(|addr| !addr.is_loopback() && !addr.is_link_local() && !addr.is_unspecified())
    }

    pub fn has_addr(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(v4) => self.ipv4.iter().any(|net| net.addr == v4),
            IpAddr::V6(v6) => self.ipv6.iter().any(|net| net.addr == v6),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DefaultRoute {
    pub iface: String,
    pub gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Shm {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub stale_nccl: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RdmaGid {
    pub index: u32,
    pub gid: String,
    /// "IB/RoCE v1" or "RoCE v2"; None when unreadable (empty slots).
    pub gid_type: Option<String>,
    pub netdev: Option<String>,
}

impl RdmaGid {
    pub fn is_empty(&self) -> bool {
        self.gid.chars().all(|c| c == '0' || c == ':')
    }

    pub fn is_link_local(&self) -> bool {
        self.gid.starts_with("fe80:")
    }

    pub fn is_roce_v2(&self) -> bool {
        self.gid_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("v2"))
    }

    /// The IPv4 address embedded in an IPv4-mapped GID (::ffff:a.b.c.d).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let addr: Ipv6Addr = self.gid.parse().ok()?;
        addr.to_ipv4_mapped()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RdmaPort {
    pub number: u32,
    pub state: Option<String>,
    pub phys_state: Option<String>,
    pub rate: Option<String>,
    pub link_layer: Option<String>,
    pub gids: Vec<RdmaGid>,
    /// Active MTU in bytes, from the verbs (sysfs does not have it); None when the
    /// device could not be opened, or from a fixture tree.
    pub active_mtu: Option<u32>,
}

impl RdmaPort {
    pub fn is_active(&self) -> bool {
        self.state.as_deref() == Some("ACTIVE")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RdmaDevice {
    pub name: String,
    /// Netdevs of the same PCI function (RoCE NICs and IPoIB).
    pub netdevs: Vec<String>,
    pub ports: Vec<RdmaPort>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memlock {
    /// Soft limit in bytes; None = unlimited.
    pub soft_bytes: Option<u64>,
    pub cap_ipc_lock: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub bus_id: String,
    pub model: Option<String>,
    pub numa_node: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct GpuFacts {
    pub driver_version: Option<String>,
    pub gpus: Vec<Gpu>,
    pub peermem_loaded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortProbe {
    pub port: u16,
    pub addr: IpAddr,
    /// None when the bind worked; else the error text.
    pub bind_error: Option<String>,
    pub in_use: bool,
}

/// What libibverbs itself says, through the verdict linkbench uses too
/// (`fabric::rdma::check`), so the two tools agree on "RDMA usable".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum RdmaVerbs {
    /// Facts read from a fixture tree: the host's verbs say nothing about it.
    NotProbed,
    Usable {
        device: String,
        port: u8,
    },
    Unavailable {
        reason: String,
    },
}

/// Fills each ACTIVE port's MTU from the verbs (the port a device opens on).
fn with_active_mtus(mut devices: Vec<RdmaDevice>) -> Vec<RdmaDevice> {
    for device in &mut devices {
        if !device.ports.iter().any(RdmaPort::is_active) {
            continue;
        }
        if let Ok(opened) = fabric::rdma::Device::open(Some(&device.name)) {
            let number = u32::from(opened.port.number);
            if let Some(port) = device.ports.iter_mut().find(|p| p.number == number) {
                port.active_mtu = Some(opened.port.active_mtu);
            }
        }
    }
    devices
}

impl RdmaVerbs {
    pub fn probe() -> RdmaVerbs {
        match fabric::rdma::check(None) {
            Ok(usable) => RdmaVerbs::Usable {
                device: usable.device,
                port: usable.port,
            },
            Err(why) => RdmaVerbs::Unavailable {
                reason: why.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub hostname: String,
    pub iface: Interface,
    pub interfaces: Vec<Interface>,
    pub default_route: Option<DefaultRoute>,
    /// Addresses the hostname resolves to, in resolver order; Err when resolution failed.
    pub hostname_addrs: Result<Vec<IpAddr>, String>,
    pub env: BTreeMap<String, String>,
    pub shm: Option<Shm>,
    pub rdma: Vec<RdmaDevice>,
    pub rdma_verbs: RdmaVerbs,
    pub memlock: Memlock,
    pub gpu: GpuFacts,
    pub ports: Vec<PortProbe>,
    pub in_container: bool,
    /// /dev/infiniband/uverbs* and whether this user can open each.
    pub uverbs: Vec<(String, bool)>,
    pub fingerprint: Fingerprint,
}

impl Facts {
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    pub fn interface_names(&self) -> Vec<&str> {
        self.interfaces.iter().map(|i| i.name.as_str()).collect()
    }

    /// True when RDMA is meant to be used: an ACTIVE port exists or NCCL_IB_HCA asks for one,
    /// and NCCL_IB_DISABLE does not switch it off.
    pub fn rdma_in_use(&self) -> bool {
        if self.env("NCCL_IB_DISABLE") == Some("1") {
            return false;
        }
        self.env("NCCL_IB_HCA").is_some()
            || self
                .rdma
                .iter()
                .any(|device| device.ports.iter().any(RdmaPort::is_active))
    }
}

/// Where and what to gather.
#[derive(Debug, Clone)]
pub struct GatherOptions {
    /// Root for /sys, /proc, /dev/shm ("/" on a live host; a fixture tree in tests).
    pub root: PathBuf,
    /// The interface to check; None = the default route's interface.
    pub iface: Option<String>,
    /// Ports to test-bind on the interface address.
    pub ports: Vec<u16>,
    /// Longest wait for hostname resolution and the python fingerprint.
    pub timeout: Duration,
}

impl Default for GatherOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            iface: None,
            ports: vec![6379],
            timeout: Duration::from_millis(600),
        }
    }
}

/// Environment variables that decide how NCCL, Gloo, vLLM and Ray pick networks.
fn relevant_env() -> BTreeMap<String, String> {
    const PREFIXES: [&str; 6] = ["NCCL_", "GLOO_", "VLLM_", "RAY_", "UCX_", "NVSHMEM_"];
    const NAMES: [&str; 11] = [
        "HOST_IP",
        "CUDA_VISIBLE_DEVICES",
        "MASTER_ADDR",
        "TP_SOCKET_IFNAME",
        "LD_LIBRARY_PATH",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ];
    // vars_os: a variable that is not UTF-8 (anyone's, not only ours) must not panic
    // the check; such values are shown lossily, their names skipped if not UTF-8.
    std::env::vars_os()
        .filter_map(|(key, value)| {
            Some((
                key.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        })
        .filter(|(key, _)| {
            PREFIXES.iter().any(|p| key.starts_with(p)) || NAMES.contains(&key.as_str())
        })
        // Tokens and keys stay off reports that people paste into issues.
        .filter(|(key, _)| {
            !key.contains("TOKEN") && !key.contains("KEY") && !key.contains("SECRET")
        })
        .map(|(key, value)| {
            let value = if key.to_ascii_lowercase().ends_with("_proxy") {
                redact_url(&value)
            } else {
                value
            };
            (key, value)
        })
        .collect()
}

/// Gathers every fact; never fails (unreadable facts are recorded as unknown).
pub fn gather(options: &GatherOptions) -> Facts {
    let root = options.root.as_path();
    let default_route = sysfs::read_trimmed(&sysfs::under(root, "/proc/net/route"))
        .and_then(|text| sysfs::parse_default_route(&text));
    let mut interfaces: Vec<Interface> = sysfs::list_dir(&sysfs::under(root, "/sys/class/net"))
        .iter()
        .filter(|name| name.as_str() != "bonding_masters")
        .map(|name| sysfs::read_interface(root, name))
        .collect();
    fill_addresses(&mut interfaces);
    for interface in &mut interfaces {
        interface.driver = ethtool_driver(&interface.name);
        if let Some(kind) = interface.driver.as_deref().and_then(kind_from_driver) {
            interface.kind = kind.to_string();
        }
    }
    let iface_name = options
        .iface
        .clone()
        .or_else(|| default_route.as_ref().map(|r| r.iface.clone()))
        .unwrap_or_else(|| "lo".to_string());
    let iface = interfaces
        .iter()
        .find(|i| i.name == iface_name)
        .cloned()
        .unwrap_or_else(|| sysfs::read_interface(root, &iface_name));
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let resolver = resolve_with_timeout(hostname.clone(), options.timeout);
    let fingerprint = std::thread::scope(|scope| {
        let handle = scope.spawn(|| Fingerprint::gather(options.timeout));
        handle.join().unwrap_or_default()
    });
    let ports = probe_ports(&iface, &options.ports);
    let env = relevant_env();
    let gpu = read_gpus(root);
    Facts {
        uverbs: read_uverbs(root),
        in_container: sysfs::under(root, "/.dockerenv").exists()
            || sysfs::under(root, "/run/.containerenv").exists(),
        shm: read_shm(root),
        rdma: if root == std::path::Path::new("/") {
            with_active_mtus(sysfs::read_rdma_devices(root))
        } else {
            sysfs::read_rdma_devices(root)
        },
        rdma_verbs: if root == std::path::Path::new("/") {
            RdmaVerbs::probe()
        } else {
            RdmaVerbs::NotProbed
        },
        memlock: read_memlock(root),
        hostname_addrs: resolver,
        hostname,
        iface,
        interfaces,
        default_route,
        env,
        gpu,
        ports,
        fingerprint,
    }
}

fn kind_from_driver(driver: &str) -> Option<&'static str> {
    match driver {
        "veth" | "macvlan" | "ipvlan" => Some("veth"),
        "bridge" => Some("bridge"),
        _ => None,
    }
}

/// The driver name via SIOCETHTOOL/ETHTOOL_GDRVINFO: sysfs cannot tell a veth from other
/// virtual devices once both ends sit in separate namespaces.
fn ethtool_driver(name: &str) -> Option<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: zeroed POD structs; the kernel writes at most size_of::<DrvInfo>() bytes
    // into `info`, which outlives the ioctl; the socket is closed on every path.
    unsafe {
        let mut info: DrvInfo = std::mem::zeroed();
        info.cmd = ETHTOOL_GDRVINFO;
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let result = libc::ioctl(fd, libc::SIOCETHTOOL, &mut request);
        libc::close(fd);
        if result < 0 {
            return None;
        }
        let end = info
            .driver
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(info.driver.len());
        let driver = String::from_utf8_lossy(&info.driver[..end]).into_owned();
        (!driver.is_empty()).then_some(driver)
    }
}

fn fill_addresses(interfaces: &mut [Interface]) {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return;
    };
    for entry in addrs {
        let Some(iface) = interfaces
            .iter_mut()
            .find(|i| i.name == entry.interface_name)
        else {
            continue;
        };
        let (Some(address), netmask) = (entry.address, entry.netmask) else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            let prefix = netmask
                .and_then(|m| {
                    m.as_sockaddr_in()
                        .map(|m| m.ip().to_bits().count_ones() as u8)
                })
                .unwrap_or(32);
            iface.ipv4.push(IpNet {
                addr: v4.ip(),
                prefix,
            });
        } else if let Some(v6) = address.as_sockaddr_in6() {
            let prefix = netmask
                .and_then(|m| {
                    m.as_sockaddr_in6()
                        .map(|m| m.ip().to_bits().count_ones() as u8)
                })
                .unwrap_or(128);
            iface.ipv6.push(IpNet {
                addr: v6.ip(),
                prefix,
            });
        }
    }
}

/// A proxy URL without its credentials (`http://user:pass@host` -> `http://***@host`):
/// reports get pasted into issues.
pub fn redact_url(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &value[..scheme + 3], &value[at..])
        }
        (None, Some(at)) => format!("***{}", &value[at..]),
        _ => value.to_string(),
    }
}

/// /dev/infiniband/uverbs* under `root`, and whether each opens read-write.
fn read_uverbs(root: &std::path::Path) -> Vec<(String, bool)> {
    let dir = sysfs::under(root, "/dev/infiniband");
    let mut found: Vec<(String, bool)> = sysfs::list_dir(&dir)
        .into_iter()
        .filter(|name| name.starts_with("uverbs"))
        .map(|name| {
            let path = dir.join(&name);
            let ok = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .is_ok();
            (path.display().to_string(), ok)
        })
        .collect();
    found.sort();
    found
}

/// getaddrinfo can block for many seconds on a broken resolver; bound it.
pub(crate) fn resolve_with_timeout(
    hostname: String,
    timeout: Duration,
) -> Result<Vec<IpAddr>, String> {
    use std::net::ToSocketAddrs;
    let (sender, receiver) = mpsc::channel();
    let name = hostname.clone();
    std::thread::spawn(move || {
        let result = (name.as_str(), 0u16)
            .to_socket_addrs()
            .map(|addrs| {
                let mut seen = Vec::new();
                for addr in addrs.map(|a| a.ip()) {
                    if !seen.contains(&addr) {
                        seen.push(addr);
                    }
                }
                seen
            })
            .map_err(|e| e.to_string());
        let _ = sender.send(result);
    });
    receiver.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(format!(
            "resolving '{hostname}' took longer than {} ms",
            timeout.as_millis()
        ))
    })
}

pub(crate) fn probe_ports(iface: &Interface, ports: &[u16]) -> Vec<PortProbe> {
    let Some(addr) = iface
        .global_ipv4()
        .or_else(|| iface.ipv4.first().map(|n| n.addr))
    else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|&port| {
            let result = TcpListener::bind(SocketAddr::new(IpAddr::V4(addr), port));
            let in_use = matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::AddrInUse);
            PortProbe {
                port,
                addr: IpAddr::V4(addr),
                bind_error: result.err().map(|e| e.to_string()),
                in_use,
            }
        })
        .collect()
}

fn read_shm(root: &Path) -> Option<Shm> {
    let path = sysfs::under(root, "/dev/shm");
    let stat = nix::sys::statvfs::statvfs(&path).ok()?;
    let fragment = stat.fragment_size() as u64;
    Some(Shm {
        total_bytes: stat.blocks() as u64 * fragment,
        free_bytes: stat.blocks_available() as u64 * fragment,
        stale_nccl: sysfs::read_shm_listing(root),
    })
}

fn read_memlock(root: &Path) -> Memlock {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let soft_bytes = getrlimit(Resource::RLIMIT_MEMLOCK)
        .ok()
        .and_then(|(soft, _)| (soft != RLIM_INFINITY).then_some(soft));
    Memlock {
        soft_bytes,
        cap_ipc_lock: read_cap_ipc_lock(root),
    }
}

/// CAP_IPC_LOCK is bit 14 of CapEff in /proc/self/status.
pub(crate) fn read_cap_ipc_lock(root: &Path) -> bool {
    sysfs::read_trimmed(&sysfs::under(root, "/proc/self/status"))
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// GPUs from /proc/driver/nvidia, their NUMA nodes from PCI sysfs.
/// The NVIDIA GPUs the driver lists under `root`'s `/proc/driver/nvidia` (the one way every
/// tool finds GPUs: netcheck's checks, collbench's nccl backend, kvxfer's `--device`).
pub fn read_gpus(root: &Path) -> GpuFacts {
    let nvidia = sysfs::under(root, "/proc/driver/nvidia");
    let driver_version = sysfs::read_trimmed(&nvidia.join("version")).and_then(|text| {
        // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..."
        let line = text.lines().next()?;
        let after = line.split("Kernel Module").nth(1)?;
        after.split_whitespace().next().map(str::to_string)
    });
    let gpus = sysfs::list_dir(&nvidia.join("gpus"))
        .into_iter()
        .map(|bus_id| {
            let information =
                sysfs::read_trimmed(&nvidia.join("gpus").join(&bus_id).join("information"));
            let model = information.and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("Model:"))
                    .map(|model| model.trim().to_string())
            });
            let pci = sysfs::under(root, "/sys/bus/pci/devices").join(bus_id.to_lowercase());
            let numa_node = sysfs::read_trimmed(&pci.join("numa_node"))
                .and_then(|n| n.parse().ok())
                .filter(|&n: &i32| n >= 0);
            Gpu {
                bus_id,
                model,
                numa_node,
            }
        })
        .collect();
    GpuFacts {
        driver_version,
        gpus,
        peermem_loaded: sysfs::under(root, "/sys/module/nvidia_peermem").exists(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, path: &str, text: &str) {
        let full = sysfs::under(root, path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, text).unwrap();
    }

    #[test]
    fn gpus_and_driver_come_from_proc_driver_nvidia() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "/proc/driver/nvidia/version",
            "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n",
        );
        for bus in ["0000:18:00.0", "0000:2A:00.0"] {
            write(
                root,
                &format!("/proc/driver/nvidia/gpus/{bus}/information"),
                "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   123\n",
            );
        }
        write(root, "/sys/bus/pci/devices/0000:18:00.0/numa_node", "0\n");
        write(root, "/sys/bus/pci/devices/0000:2a:00.0/numa_node", "1\n");
        fs::create_dir_all(root.join("sys/module/nvidia_peermem")).unwrap();
        let gpu = read_gpus(root);
        assert_eq!(gpu.driver_version.as_deref(), Some("535.104.05"));
        assert_eq!(gpu.gpus.len(), 2);
        assert_eq!(gpu.gpus[0].model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(gpu.gpus[1].numa_node, Some(1));
        assert!(gpu.peermem_loaded);
    }

    #[test]
    fn no_nvidia_driver_means_no_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let gpu = read_gpus(dir.path());
        assert!(gpu.gpus.is_empty() && gpu.driver_version.is_none() && !gpu.peermem_loaded);
    }

    #[test]
    fn cap_ipc_lock_is_bit_14() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "/proc/self/status",
            "Name: x\nCapEff:\t0000000000004000\n",
        );
        assert!(read_cap_ipc_lock(dir.path()));
        write(
            dir.path(),
            "/proc/self/status",
            "Name: x\nCapEff:\t0000000000000000\n",
        );
        assert!(!read_cap_ipc_lock(dir.path()));
        write(dir.path(), "/proc/self/status", "CapEff: zz\n");
        assert!(!read_cap_ipc_lock(dir.path()));
    }

    #[test]
    fn gather_on_an_empty_root_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let facts = gather(&GatherOptions {
            root: dir.path().to_path_buf(),
            iface: Some("eno1".into()),
            ports: vec![],
            timeout: Duration::from_millis(300),
        });
        assert!(!facts.iface.exists);
        assert!(facts.default_route.is_none());
        assert!(facts.rdma.is_empty());
    }
}
