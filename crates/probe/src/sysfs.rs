//! Readers for /sys and /proc files, all relative to a root so tests can use fixture trees.
//! Unreadable or garbled files become `None`, never errors: a check decides what that means.

use crate::facts::{DefaultRoute, Interface, RdmaDevice, RdmaGid, RdmaPort};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub(crate) fn under(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read_trimmed(path)?.parse().ok()
}

pub(crate) fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(std::result::Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Reads /sys/class/net/NAME (addresses are filled in later from getifaddrs).
pub fn read_interface(root: &Path, name: &str) -> Interface {
    let dir = under(root, "/sys/class/net").join(name);
    let ifindex: Option<u32> = read_number(&dir.join("ifindex"));
    let iflink: Option<u32> = read_number(&dir.join("iflink"));
    let has_device = dir.join("device").exists();
    // Loopback is type 772; a virtual link whose iflink names another device is a
    // veth/macvlan/ipvlan end: what container runtimes hand out.
    let link_type: Option<u32> = read_number(&dir.join("type"));
    let kind = if link_type == Some(772) {
        "loopback"
    } else if dir.join("bridge").exists() {
        "bridge"
    } else if !has_device && ifindex.is_some() && iflink.is_some() && ifindex != iflink {
        "veth"
    } else if has_device {
        "physical"
    } else {
        "virtual"
    };
    Interface {
        name: name.to_string(),
        exists: dir.is_dir(),
        operstate: read_trimmed(&dir.join("operstate")),
        carrier: read_number::<u8>(&dir.join("carrier")).map(|c| c == 1),
        flags: read_trimmed(&dir.join("flags"))
            .and_then(|text| u32::from_str_radix(text.trim_start_matches("0x"), 16).ok()),
        mtu: read_number(&dir.join("mtu")),
        // sysfs reports -1 (or fails with EINVAL) when the driver does not know the speed.
        speed_mbps: read_number::<i64>(&dir.join("speed")).filter(|&speed| speed > 0),
        mac: read_trimmed(&dir.join("address")),
        kind: kind.to_string(),
        numa_node: read_number::<i32>(&dir.join("device/numa_node")).filter(|&n| n >= 0),
        driver: None,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
    }
}

/// Default IPv4 route from /proc/net/route (destination 0, mask 0, lowest metric).
pub fn parse_default_route(text: &str) -> Option<DefaultRoute> {
    let mut best: Option<(u32, DefaultRoute)> = None;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 || fields[1] != "00000000" || fields[7] != "00000000" {
            continue;
        }
        let gateway = u32::from_str_radix(fields[2], 16)
            .ok()
            .map(|raw| Ipv4Addr::from(raw.to_le_bytes()));
        let metric: u32 = fields[6].parse().unwrap_or(u32::MAX);
        let route = DefaultRoute {
            iface: fields[0].to_string(),
            gateway,
        };
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, route));
        }
    }
    best.map(|(_, route)| route)
}

/// Devices and ports under /sys/class/infiniband, with their GID tables.
pub fn read_rdma_devices(root: &Path) -> Vec<RdmaDevice> {
    let base = under(root, "/sys/class/infiniband");
    list_dir(&base)
        .into_iter()
        .map(|name| {
            let ports_dir = base.join(&name).join("ports");
            let mut port_numbers: Vec<u32> = list_dir(&ports_dir)
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect();
            port_numbers.sort_unstable();
            let ports = port_numbers
                .into_iter()
                .map(|number| read_rdma_port(&ports_dir.join(number.to_string()), number))
                .collect();
            RdmaDevice {
                netdevs: list_dir(&base.join(&name).join("device/net")),
                name,
                ports,
            }
        })
        .collect()
}

fn read_rdma_port(dir: &Path, number: u32) -> RdmaPort {
    // state reads "4: ACTIVE"; keep the word.
    let word = |file: &str| {
        read_trimmed(&dir.join(file))
            .map(|text| text.split(':').next_back().unwrap_or("").trim().to_string())
    };
    let mut indexes: Vec<u32> = list_dir(&dir.join("gids"))
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    indexes.sort_unstable();
    let gids = indexes
        .into_iter()
        .filter_map(|index| {
            let gid = read_trimmed(&dir.join("gids").join(index.to_string()))?;
            Some(RdmaGid {
                index,
                gid,
                // Reading the type of an empty GID fails with EINVAL: leave it unknown.
                gid_type: read_trimmed(&dir.join("gid_attrs/types").join(index.to_string())),
                netdev: read_trimmed(&dir.join("gid_attrs/ndevs").join(index.to_string())),
            })
        })
        .collect();
    RdmaPort {
        number,
        state: word("state"),
        phys_state: word("phys_state"),
        rate: read_trimmed(&dir.join("rate")),
        link_layer: read_trimmed(&dir.join("link_layer")),
        gids,
        active_mtu: None,
    }
}

/// Names of stale NCCL shared-memory segments in /dev/shm.
pub fn read_shm_listing(root: &Path) -> Vec<String> {
    list_dir(&under(root, "/dev/shm"))
        .into_iter()
        .filter(|name| name.starts_with("nccl-"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_prefers_lowest_metric_and_decodes_gateway() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        let route = parse_default_route(text).unwrap();
        assert_eq!(route.iface, "eth0");
        assert_eq!(route.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn no_default_route_is_none() {
        let text = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert!(parse_default_route(text).is_none());
        assert!(parse_default_route("garbage").is_none());
    }
}
