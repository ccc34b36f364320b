//! `kvxfer prefill`: one prefill rank serving its KV pool, on one or more rails.

use crate::flags::PrefillArgs;
use crate::{layout, shape, token, FLAGS};
use kvcache::prefill::{PrefillAgent, PrefillConfig};
use kvcache::KvLayout;
use std::net::SocketAddr;

/// The prefill agent's settings from the flags; `rails`: every rail's address, if several.
pub(crate) fn prefill_config(
    args: &PrefillArgs,
    token: Option<Vec<u8>>,
    rails: Vec<SocketAddr>,
) -> PrefillConfig {
    PrefillConfig {
        dp_rank: args.pool.dp_rank,
        lease: args.lease,
        io_timeout: args.timeout,
        idle_timeout: kvcache::prefill::DEFAULT_IDLE_TIMEOUT,
        token,
        rdma: args.rdma.options(),
        rails,
        session_quota: args.session_quota,
        log: if args.quiet {
            cli::no_log()
        } else {
            std::sync::Arc::new(log_line)
        },
    }
}

pub(crate) fn log_line(line: &str) {
    eprintln!("kvxfer prefill: {}", measure::name_flags(line, FLAGS));
}

pub(crate) fn prefill(args: PrefillArgs) -> anyhow::Result<u8> {
    if args.lease.is_zero() {
        return Err(cli::usage(
            "--lease 0s would free every request before decode could pull it: give a lease of at least 1ms",
        ));
    }
    if args.timeout.is_zero() {
        return Err(cli::usage("--timeout 0s: give a timeout of at least 1ms"));
    }
    let shape = shape(&args.pool)?;
    let probe = KvLayout::new(
        shape,
        args.pool.tp,
        args.pool.tp_rank.min(args.pool.tp - 1),
        1,
    )
    .map_err(|e| cli::usage(e.to_string()))?;
    let default_blocks =
        ((2u64 << 30) / probe.block_bytes_all_layers()).clamp(1, u32::MAX as u64) as u32;
    let layout = layout(&args.pool, args.num_blocks.unwrap_or(default_blocks))?;
    let addrs = listen_addresses(args.listen.as_deref(), args.iface.as_deref())?;
    let token = token()?;
    let auth = if token.is_some() {
        "NODELINK_TOKEN required"
    } else {
        "no authentication"
    };
    let (model, tp_rank, tp, num_blocks) = (
        layout.shape.model.clone(),
        layout.tp_rank,
        layout.tp,
        layout.num_blocks,
    );
    let description = format!(
        "{} blocks x {} = {} ({} {}, block {} tokens)",
        layout.num_blocks,
        measure::format_bytes(layout.block_bytes_all_layers()),
        measure::format_bytes(layout.pool_bytes()),
        layout.shape.dtype.name(),
        layout.shape.order.name(),
        layout.shape.block_size,
    );
    // Bind first (a bad address or a port in use fails before the pool is committed),
    // commit (and for RDMA register) the pool, and only then listen: a decode that
    // connects during a commit of several GB is refused at once, not left waiting for a
    // greeting that cannot come until the commit ends.
    let sockets = addrs
        .iter()
        .map(|&addr| fabric::tcp::bind(addr, None))
        .collect::<Result<Vec<_>, _>>()?;
    let bound = sockets
        .iter()
        .map(fabric::tcp::Bound::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let agent = PrefillAgent::new(
        layout,
        prefill_config(
            &args,
            token,
            if bound.len() > 1 {
                bound.clone()
            } else {
                Vec::new()
            },
        ),
    )?;
    let shown: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let bound = if shown.len() > 1 {
        format!("{} ({} rails)", shown.join(", "), shown.len())
    } else {
        shown.join(", ")
    };
    let rdma = match agent.rdma_status() {
        Ok(()) => "RDMA and TCP".to_string(),
        Err(why) => format!("TCP only: {why}"),
    };
    let listeners = sockets
        .into_iter()
        .map(fabric::tcp::Bound::listen)
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "kvxfer prefill: ready: listening on {bound} ({auth}; {rdma}): {model}, TP rank {tp_rank} of {tp}, DP rank {}, {description}; pool of {num_blocks} blocks committed in {:.2} s",
        args.pool.dp_rank,
        agent.commit_time().as_secs_f64(),
    );
    if addrs.iter().any(|a| a.ip().is_unspecified()) {
        eprintln!("kvxfer prefill: serving on all addresses: pass --iface or --listen to restrict");
    }
    agent.serve_all(listeners)?;
    Ok(cli::exit::OK)
}

/// Every address to listen on: one per rail when `--listen` or `--iface` lists several.
pub(crate) fn listen_addresses(
    listen: Option<&str>,
    iface: Option<&str>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let listens: Vec<&str> = listen.map_or(Vec::new(), |l| l.split(',').map(str::trim).collect());
    let ifaces: Vec<&str> = iface.map_or(Vec::new(), |i| i.split(',').map(str::trim).collect());
    if listens.len() > 1 || ifaces.len() > 1 {
        if !listens.is_empty() && !ifaces.is_empty() {
            return Err(cli::usage(
                "rails: give --listen ADDR,ADDR or --iface IFACE,IFACE, not both",
            ));
        }
        let addrs = if listens.is_empty() {
            ifaces
                .iter()
                .map(|i| listen_address(None, Some(i)))
                .collect::<anyhow::Result<Vec<_>>>()?
        } else {
            listens
                .iter()
                .map(|l| listen_address(Some(l), None))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        if let Some(bad) = addrs.iter().find(|a| a.ip().is_unspecified()) {
            return Err(cli::usage(format!(
                "rail address {bad}: each rail listens on its own NIC's address, not on all addresses"
            )));
        }
        for (i, a) in addrs.iter().enumerate() {
            if addrs[..i].contains(a) {
                return Err(cli::usage(format!("rail address {a} given twice")));
            }
        }
        if addrs.len() > kvcache::rails::MAX_RAILS {
            return Err(cli::usage(format!(
                "{} rails: at most {}",
                addrs.len(),
                kvcache::rails::MAX_RAILS
            )));
        }
        return Ok(addrs);
    }
    Ok(vec![listen_address(listen, iface)?])
}

/// `--listen`, else the `--iface` address, else all addresses; port 18600 unless given.
pub(crate) fn listen_address(
    listen: Option<&str>,
    iface: Option<&str>,
) -> anyhow::Result<SocketAddr> {
    use fabric::tcp::IfaceAddress;
    if let Some(listen) = listen {
        let addr = fabric::tcp::resolve_peer(listen, kvcache::DEFAULT_PORT)
            .map_err(|e| cli::usage(format!("--listen {listen}: {e}")))?;
        if let Some(iface) = iface {
            // Both given: they must agree; the interface used to be ignored silently.
            let on_iface = fabric::tcp::iface_addresses(iface)?;
            if !on_iface.contains(&addr.ip()) {
                return Err(cli::usage(format!(
                    "--listen {listen} is not on --iface {iface} (it has {}): give one of the two, or an address of that interface",
                    if on_iface.is_empty() { "no address".to_string() } else {
                        on_iface.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    }
                )));
            }
        }
        return Ok(addr);
    }
    let ip = match iface {
        None => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(iface) => match fabric::tcp::iface_address(iface)? {
            IfaceAddress::Found(ip) => ip,
            IfaceAddress::NoAddress => {
                anyhow::bail!("interface {iface} has no IP address: add one, or pass --listen")
            }
            IfaceAddress::NoSuchInterface => {
                return Err(cli::usage(format!(
                    "no interface named {iface} (see `ip -br addr`)"
                )))
            }
        },
    };
    Ok(SocketAddr::new(ip, kvcache::DEFAULT_PORT))
}
