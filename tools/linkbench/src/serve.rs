//! `linkbench serve`: the listener every client mode talks to.

use crate::flags::ServeArgs;
use crate::{iface_address, token, FLAGS};
use fabric::perf::{RdmaOptions, Server, ServerConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let ip = match (&args.bind, &args.iface) {
        (Some(ip), Some(iface)) => {
            // Both given: they must agree, or every client would be refused later.
            let on_iface = fabric::tcp::iface_addresses(iface)?;
            if !on_iface.contains(ip) {
                return Err(cli::usage(format!(
                    "--bind {ip} is not an address of --iface {iface} (it has {}): give one of the two, or an address of that interface",
                    if on_iface.is_empty() { "none".to_string() } else {
                        on_iface.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                )));
            }
            *ip
        }
        (Some(ip), None) => *ip,
        (None, Some(iface)) => iface_address(iface)?,
        (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let config = ServerConfig {
        token: token()?,
        iface: args.iface.clone(),
        once: args.once,
        max_connections: 1024,
        log: Arc::new(|line: &str| {
            eprintln!("linkbench serve: {}", measure::name_flags(line, FLAGS));
        }),
        rdma: RdmaOptions {
            device: args.device.clone(),
            gid_index: args.gid_index,
            address: args.iface.as_deref().and_then(|i| iface_address(i).ok()),
        },
    };
    let auth = if config.token.is_some() {
        "NODELINK_TOKEN required"
    } else {
        "no authentication"
    };
    let server = Server::bind(SocketAddr::new(ip, args.port), config)?;
    eprintln!(
        "linkbench serve: listening on {} (protocol v{}, {auth}){}",
        server.local_addr()?,
        fabric::control::VERSION,
        if ip.is_unspecified() {
            "; all addresses: pass --iface or --bind to restrict"
        } else {
            ""
        }
    );
    server.run()?;
    Ok(cli::exit::OK)
}
