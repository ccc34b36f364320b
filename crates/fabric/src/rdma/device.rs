//! Device and port discovery (state, link layer, active MTU, rate) and the GID table with
//! types, plus the pure GID choice: RoCE v2 by the `--iface` address, or an explicit index
//! (`--gid-index`, else `NCCL_IB_GID_INDEX`, as NCCL users already set it).

use super::avail::{self, Unavailable};
use super::verbs::{abi, Context, DeviceList};
use crate::error::{FabricError, Result};
use serde::Serialize;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GidKind {
    #[serde(rename = "IB")]
    Ib,
    #[serde(rename = "RoCE v1")]
    RoceV1,
    #[serde(rename = "RoCE v2")]
    RoceV2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GidInfo {
    pub index: u32,
    pub gid: Ipv6Addr,
    pub kind: GidKind,
    /// The netdev the GID belongs to (RoCE), from sysfs.
    pub netdev: Option<String>,
}

impl GidInfo {
    /// The IPv4 address a RoCE v2 GID encodes (`::ffff:a.b.c.d`), if any.
    pub fn ipv4(&self) -> Option<IpAddr> {
        self.gid.to_ipv4_mapped().map(IpAddr::V4)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortInfo {
    pub number: u8,
    pub state: String,
    pub link_layer: String,
    /// Active MTU in bytes (256 .. 4096).
    pub active_mtu: u32,
    /// As sysfs words it ("100 Gb/sec (4X EDR)").
    pub rate: Option<String>,
    pub lid: u16,
}

/// Which GID to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GidChoice {
    Index(u32),
    /// RoCE v2 bound to this address when given, else the best RoCE v2 entry.
    Auto {
        address: Option<IpAddr>,
    },
}

/// The verbs MTU enum (`IBV_MTU_256` = 1 .. `IBV_MTU_4096` = 5) in bytes; `None` outside it.
pub fn mtu_bytes(mtu: u32) -> Option<u32> {
    (1..=5).contains(&mtu).then(|| 128 << mtu)
}

/// The verbs MTU enum for a byte count; `None` unless it is one of the five IB MTUs.
pub fn mtu_from_bytes(bytes: u32) -> Option<u32> {
    (1..=5).find(|&m| 128 << m == bytes)
}

/// Picks the GID entry; pure, so the rules are unit-tested without a device.
pub fn pick_gid<'a>(
    table: &'a [GidInfo],
    choice: &GidChoice,
    link_layer_ib: bool,
) -> std::result::Result<&'a GidInfo, String> {
    let listing = || {
        table
            .iter()
            .map(|g| format!("{} {} {:?}", g.index, g.gid, g.kind))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match choice {
        GidChoice::Index(index) => table.iter().find(|g| g.index == *index).ok_or_else(|| {
            format!(
                "GID index {index} is empty (table: {}): pick an index from `show_gids` / `ibv_devinfo -v`",
                listing()
            )
        }),
        GidChoice::Auto { address } => {
            if table.is_empty() {
                return Err(format!("the port's GID table is empty: give its netdev an address, or pass {}", measure::Setting::GidIndex));
            }
            if link_layer_ib {
                return Ok(&table[0]);
            }
            let v2 = || table.iter().filter(|g| g.kind == GidKind::RoceV2);
            if let Some(address) = address {
                return v2().find(|g| g.ipv4() == Some(*address) || IpAddr::V6(g.gid) == *address).ok_or_else(|| {
                    format!("no RoCE v2 GID carries {address} (table: {}): pass {}", listing(), measure::Setting::GidIndex)
                });
            }
            Ok(v2()
                .find(|g| g.ipv4().is_some())
                .or_else(|| v2().next())
                .unwrap_or(&table[0]))
        }
    }
}

/// An opened device port with its GID table (clones share the open context).
#[derive(Clone)]
pub struct Device {
    pub(crate) context: Arc<Context>,
    pub name: String,
    pub port: PortInfo,
    pub gids: Vec<GidInfo>,
    pub max_qp_wr: u32,
    pub max_cqe: u32,
    /// Outstanding READs per QP, both ways (the device's limit, at most 16).
    pub max_rd_atomic: u8,
}

fn sysfs(device: &str, port: u8, leaf: &str) -> Option<String> {
    std::fs::read_to_string(format!(
        "/sys/class/infiniband/{device}/ports/{port}/{leaf}"
    ))
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

fn verbs(what: impl Into<String>, e: impl std::fmt::Display) -> FabricError {
    FabricError::Rdma(format!("{}: {e}", what.into()))
}

impl Device {
    /// Opens `device` (or the first with an ACTIVE port) after the shared availability check.
    pub fn open(device: Option<&str>) -> Result<Device> {
        let usable = avail::check(device)?;
        let list = DeviceList::new().map_err(|e| verbs("ibv_get_device_list", e))?;
        let context = list
            .open(&usable.device)
            .ok_or(Unavailable::NoDevice)?
            .map_err(|e| verbs(format!("opening {}", usable.device), e))?;
        let attr = context
            .query_device()
            .map_err(|e| verbs("ibv_query_device", e))?;
        let port_attr = context
            .query_port(usable.port)
            .map_err(|e| verbs("ibv_query_port", e))?;
        let name = usable.device.clone();
        let link_layer = port_attr.link_layer;
        let port = PortInfo {
            number: usable.port,
            state: avail::port_state_name(port_attr.state).into(),
            link_layer: match link_layer {
                abi::IBV_LINK_LAYER_INFINIBAND => "InfiniBand".into(),
                abi::IBV_LINK_LAYER_ETHERNET => "Ethernet".into(),
                _ => "unspecified".into(),
            },
            active_mtu: mtu_bytes(port_attr.active_mtu).ok_or_else(|| {
                FabricError::Rdma(format!(
                    "{name} port {} reports an unknown active MTU code {}",
                    usable.port, port_attr.active_mtu
                ))
            })?,
            rate: sysfs(&name, usable.port, "rate"),
            lid: port_attr.lid,
        };
        let ib = link_layer == abi::IBV_LINK_LAYER_INFINIBAND;
        let mut gids = Vec::new();
        for index in 0..port_attr.gid_tbl_len.max(0) as u32 {
            let Ok(gid) = context.query_gid(usable.port, index) else {
                continue;
            };
            if gid == [0; 16] {
                continue;
            }
            let kind = match gid_type(&context, &name, usable.port, index) {
                Some(abi::IBV_GID_TYPE_ROCE_V2) => GidKind::RoceV2,
                Some(_) if ib => GidKind::Ib,
                Some(_) => GidKind::RoceV1,
                None => continue,
            };
            gids.push(GidInfo {
                index,
                gid: Ipv6Addr::from(gid),
                kind,
                netdev: sysfs(&name, usable.port, &format!("gid_attrs/ndevs/{index}")),
            });
        }
        Ok(Device {
            context,
            name,
            port,
            gids,
            max_qp_wr: attr.max_qp_wr.max(1) as u32,
            max_cqe: attr.max_cqe.max(1) as u32,
            max_rd_atomic: attr.max_qp_rd_atom.clamp(1, 16) as u8,
        })
    }

    pub fn is_infiniband(&self) -> bool {
        self.port.link_layer == "InfiniBand"
    }

    pub fn gid(&self, choice: &GidChoice) -> Result<GidInfo> {
        pick_gid(&self.gids, choice, self.is_infiniband())
            .cloned()
            .map_err(|e| FabricError::Rdma(format!("{} port {}: {e}", self.name, self.port.number)))
    }
}

/// A GID entry's type: `ibv_query_gid_ex` where libibverbs has it, else sysfs's words
/// ("RoCE v2", "IB/RoCE v1"), as NCCL reads them.
fn gid_type(context: &Context, device: &str, port: u8, index: u32) -> Option<u32> {
    if let Some(kind) = context.query_gid_type(port, index) {
        return Some(kind);
    }
    let words = sysfs(device, port, &format!("gid_attrs/types/{index}"))?;
    Some(if words.eq_ignore_ascii_case("RoCE v2") {
        abi::IBV_GID_TYPE_ROCE_V2
    } else {
        abi::IBV_GID_TYPE_ROCE_V1
    })
}

/// `--gid-index`, else `NCCL_IB_GID_INDEX`, else automatic by `address`.
pub fn gid_choice(
    index: Option<u32>,
    address: Option<IpAddr>,
) -> std::result::Result<GidChoice, String> {
    if let Some(index) = index {
        return Ok(GidChoice::Index(index));
    }
    match std::env::var("NCCL_IB_GID_INDEX") {
        Ok(raw) if !raw.trim().is_empty() => {
            raw.trim().parse().map(GidChoice::Index).map_err(|_| {
                format!(
                    "NCCL_IB_GID_INDEX='{raw}' is not a number: unset it or pass {}",
                    measure::Setting::GidIndex
                )
            })
        }
        _ => Ok(GidChoice::Auto { address }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gid(index: u32, text: &str, kind: GidKind) -> GidInfo {
        GidInfo {
            index,
            gid: text.parse().unwrap(),
            kind,
            netdev: Some("eth0".into()),
        }
    }

    fn table() -> Vec<GidInfo> {
        vec![
            gid(0, "fe80::1", GidKind::RoceV1),
            gid(1, "fe80::1", GidKind::RoceV2),
            gid(2, "::ffff:10.0.0.1", GidKind::RoceV1),
            gid(3, "::ffff:10.0.0.1", GidKind::RoceV2),
            gid(5, "::ffff:192.168.1.7", GidKind::RoceV2),
        ]
    }

    #[test]
    fn roce_v2_gid_is_picked_by_interface_address() {
        let t = table();
        let auto = |a: Option<&str>| GidChoice::Auto {
            address: a.map(|a| a.parse().unwrap()),
        };
        assert_eq!(
            pick_gid(&t, &auto(Some("192.168.1.7")), false)
                .unwrap()
                .index,
            5
        );
        assert_eq!(
            pick_gid(&t, &auto(Some("10.0.0.1")), false).unwrap().index,
            3
        );
        assert_eq!(pick_gid(&t, &auto(None), false).unwrap().index, 3);
        let err = pick_gid(&t, &auto(Some("10.9.9.9")), false).unwrap_err();
        assert!(err.contains("no RoCE v2 GID carries 10.9.9.9"), "{err}");
        // Link-local only (a dummy netdev without an address): the RoCE v2 entry.
        assert_eq!(pick_gid(&t[..2], &auto(None), false).unwrap().index, 1);
        assert_eq!(pick_gid(&t, &auto(None), true).unwrap().index, 0);
    }

    #[test]
    fn explicit_index_must_exist() {
        let t = table();
        assert_eq!(pick_gid(&t, &GidChoice::Index(2), false).unwrap().index, 2);
        let err = pick_gid(&t, &GidChoice::Index(4), false).unwrap_err();
        assert!(err.contains("GID index 4 is empty"), "{err}");
        assert!(pick_gid(&[], &GidChoice::Auto { address: None }, false).is_err());
    }

    #[test]
    fn mtu_bytes_round_trip() {
        for bytes in [256, 512, 1024, 2048, 4096] {
            assert_eq!(mtu_bytes(mtu_from_bytes(bytes).unwrap()), Some(bytes));
        }
        assert_eq!(mtu_from_bytes(256), Some(1));
        assert_eq!(mtu_from_bytes(4096), Some(5));
        assert!(mtu_from_bytes(1500).is_none());
        assert!(mtu_bytes(0).is_none() && mtu_bytes(6).is_none());
    }
}
