//! `kvxfer decode`: one request moved from the prefill ranks into this node's pool.

use crate::flags::{DecodeArgs, PeerArgs, Transport};
use crate::{layout, token};
use kvcache::decode::{DecodeAgent, DecodeConfig};
use kvcache::KvLayout;
use std::net::SocketAddr;

/// Resolves `--peer` and attaches to every prefill rank.
pub(crate) fn decode_agent(
    peers: &PeerArgs,
    num_blocks: u32,
) -> anyhow::Result<std::sync::Arc<DecodeAgent>> {
    let layout = layout(&peers.pool, peers.num_blocks.unwrap_or(num_blocks))?;
    let addrs = peer_addresses(peers)?;
    decode_agent_on(layout, addrs, peers)
}

/// `--peer`'s addresses, in the order given.
pub(crate) fn peer_addresses(peers: &PeerArgs) -> anyhow::Result<Vec<SocketAddr>> {
    peers
        .peer
        .split(',')
        .map(|p| {
            fabric::tcp::resolve_peer(p.trim(), kvcache::DEFAULT_PORT)
                .map_err(|e| cli::usage(format!("--peer {p}: {e}")))
        })
        .collect()
}

/// A decode agent with this pool `layout`, attached to `addrs`.
pub(crate) fn decode_agent_on(
    layout: KvLayout,
    addrs: Vec<SocketAddr>,
    peers: &PeerArgs,
) -> anyhow::Result<std::sync::Arc<DecodeAgent>> {
    Ok(DecodeAgent::new(
        layout,
        DecodeConfig {
            peers: addrs,
            dp_rank: peers.pool.dp_rank,
            token: token()?,
            timeout: peers.timeout,
            checksums: !peers.no_checksum,
            verify: peers.verify,
            rails: !peers.no_rails,
            rdma: (peers.transport == Transport::Rdma).then(|| peers.rdma.options()),
        },
    )?)
}

/// Blocks a request of `tokens` tokens needs at `block_size`.
pub(crate) fn blocks_for(tokens: u64, block_size: u32) -> anyhow::Result<u32> {
    u32::try_from(tokens.div_ceil(block_size as u64))
        .map_err(|_| cli::usage(format!("--input-len {tokens} is too long")))
}

pub(crate) fn decode(args: DecodeArgs) -> anyhow::Result<u8> {
    args.output.resolve("kvxfer decode", cli::Honours::JSON)?;
    let needed = blocks_for(args.input_len, args.peers.pool.block_size)?;
    let local_needed = args
        .local_blocks
        .as_ref()
        .and_then(|b| b.iter().max().map(|m| m + 1))
        .unwrap_or(0)
        .max(needed);
    let agent = decode_agent(&args.peers, local_needed)?;
    if args.remote_blocks.is_some() && agent.sources().len() != 1 {
        return Err(cli::usage(
            "--remote-blocks names one prefill rank's blocks, but this decode rank reads several: drop it",
        ));
    }
    let mut links = agent.links();
    let result = (|| -> Result<kvcache::decode::Transferred, kvcache::KvError> {
        if args.no_prefill {
            let remote = vec![args.remote_blocks.clone().unwrap_or_default()];
            return agent.pull_request(
                &mut links,
                &args.request_id,
                &remote,
                args.local_blocks.as_deref(),
            );
        }
        if args.remote_blocks.is_none() && args.local_blocks.is_none() {
            return agent.transfer(
                &mut links,
                &args.request_id,
                args.input_len,
                args.pull_after,
            );
        }
        // Explicit ids: prefill first (to get a lease), then pull what was asked.
        let mut remote = Vec::new();
        let prefilled = agent.prefill_all(&mut links, &args.request_id, args.input_len)?;
        for blocks in prefilled {
            remote.push(args.remote_blocks.clone().unwrap_or(blocks));
        }
        std::thread::sleep(args.pull_after);
        agent.pull_request(
            &mut links,
            &args.request_id,
            &remote,
            args.local_blocks.as_deref(),
        )
    })();
    links.close();
    let done = result?;
    let gbps = done.bytes as f64 * 8.0 / done.transfer.as_secs_f64().max(1e-9) / 1e9;
    if args.output.json {
        let doc = measure::record::KvDecode {
            request_id: args.request_id.clone(),
            bytes: done.bytes,
            transfer_ms: done.transfer.as_secs_f64() * 1e3,
            throughput_gbps: gbps,
            checksums: !args.peers.no_checksum,
            verified: args.peers.verify,
            verify_ms: done.verify.as_secs_f64() * 1e3,
        };
        measure::record::print_json("kvxfer", "decode", &doc)?;
    } else {
        println!(
            "request {}: {} in {:.3} ms ({:.2} Gbit/s){}",
            args.request_id,
            measure::format_bytes(done.bytes),
            done.transfer.as_secs_f64() * 1e3,
            gbps,
            match (args.peers.verify, args.peers.no_checksum) {
                (true, _) => format!(
                    ", content verified in {:.3} ms",
                    done.verify.as_secs_f64() * 1e3
                ),
                (false, false) => ", checksums matched".into(),
                (false, true) => String::new(),
            }
        );
    }
    Ok(cli::exit::OK)
}
