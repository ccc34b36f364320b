//! The result records linkbench prints (table, JSON, CSV, chart), and the pure merge of
//! both sides' per-stream figures into them: each direction is judged by its receiver.

use super::wire::{CpuUsage, Direction, StreamStats};
use measure::{gbit_per_s, LatencySummary};
use serde::Serialize;

/// Which way the data flows, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Client sends, server receives (iperf3's default).
    Forward,
    /// Server sends, client receives (`--reverse`).
    Reverse,
    /// Both at once, `streams` each way (`--bidir`).
    Bidir,
}

impl Mode {
    pub fn directions(self) -> &'static [Direction] {
        match self {
            Mode::Forward => &[Direction::ClientToServer],
            Mode::Reverse => &[Direction::ServerToClient],
            Mode::Bidir => &[Direction::ClientToServer, Direction::ServerToClient],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub index: u32,
    pub direction: Direction,
    /// Bytes the receiver got.
    pub bytes: u64,
    /// The receiver's first-to-last byte time.
    pub seconds: f64,
    pub throughput_gbps: f64,
    pub sent_bytes: u64,
    /// From the sender's TCP_INFO.
    pub retransmits: Option<u32>,
    pub rtt_us: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DirectionReport {
    pub direction: Direction,
    pub streams: u32,
    pub bytes: u64,
    /// From the earliest first byte to the latest last byte over the direction's streams.
    pub seconds: f64,
    pub throughput_gbps: f64,
    pub retransmits: u64,
}

/// CPU time over wall time, percent of one core, both nodes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuReport {
    pub local: CpuUsage,
    pub remote: CpuUsage,
}

#[derive(Debug, Clone, Serialize)]
pub struct BwReport {
    pub transport: &'static str,
    pub mode: Mode,
    /// Streams per direction.
    pub streams: u32,
    pub msg_size: u64,
    /// Receiver-side, whole test; for --bidir, the longer of the two directions.
    pub seconds: f64,
    /// Bytes received, all directions.
    pub bytes: u64,
    /// Decimal Gbit/s at the receiver, whole test; for --bidir, the sum of both directions.
    pub throughput_gbps: f64,
    pub directions: Vec<DirectionReport>,
    pub per_stream: Vec<StreamReport>,
    pub cpu: CpuReport,
    pub retransmits: u64,
    /// Mean smoothed RTT over the senders' TCP_INFO, microseconds.
    pub rtt_us: Option<f64>,
    pub window: Option<u64>,
    pub congestion: Option<String>,
    pub zerocopy: bool,
    /// TCP_NODELAY on the data streams (`-N`).
    pub no_delay: bool,
    /// Bytes each stream rotated through on both sides (null: one message, in cache).
    pub working_set: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatReport {
    pub transport: &'static str,
    pub msg_size: u64,
    pub iterations: u64,
    pub seconds: f64,
    /// How `latency_us` is derived, stated in the record itself.
    pub one_way: &'static str,
    /// One-way latency = round trip / 2, microseconds.
    pub latency_us: LatencySummary,
    /// Whether both sides spun instead of sleeping (`--busy-poll`).
    pub busy_poll: bool,
    pub cpu: CpuReport,
}

/// Everything [`merge`] needs besides the stream figures.
pub(crate) struct BwContext {
    pub mode: Mode,
    pub streams: u32,
    pub msg_size: u64,
    pub window: Option<u64>,
    pub congestion: Option<String>,
    pub zerocopy: bool,
    pub no_delay: bool,
    pub working_set: Option<u64>,
    pub cpu: CpuReport,
}

/// Joins the client's (`local`) and server's (`remote`) stream figures: the receiver's
/// bytes and times, the sender's retransmits and RTT.
pub(crate) fn merge(context: BwContext, local: &[StreamStats], remote: &[StreamStats]) -> BwReport {
    let find = |set: &[StreamStats], index: u32| set.iter().find(|s| s.index == index).cloned();
    let mut per_stream = Vec::new();
    let mut directions = Vec::new();
    for &direction in context.mode.directions() {
        let (receivers, senders) = match direction {
            Direction::ClientToServer => (remote, local),
            Direction::ServerToClient => (local, remote),
        };
        let mut rows: Vec<StreamReport> = receivers
            .iter()
            .filter(|s| s.direction == direction)
            .map(|r| {
                let sender = find(senders, r.index).filter(|s| s.direction == direction);
                let seconds = r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9;
                StreamReport {
                    index: r.index,
                    direction,
                    bytes: r.bytes,
                    seconds,
                    throughput_gbps: gbit_per_s(r.bytes, seconds),
                    sent_bytes: sender.as_ref().map_or(0, |s| s.bytes),
                    retransmits: sender.as_ref().and_then(|s| s.retransmits),
                    rtt_us: sender.as_ref().and_then(|s| s.rtt_us),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.index);
        let received: Vec<&StreamStats> = receivers
            .iter()
            .filter(|s| s.direction == direction && s.bytes > 0)
            .collect();
        let first = received.iter().map(|s| s.first_ns).min().unwrap_or(0);
        let last = received.iter().map(|s| s.last_ns).max().unwrap_or(0);
        let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
        let seconds = last.saturating_sub(first) as f64 / 1e9;
        directions.push(DirectionReport {
            direction,
            streams: rows.len() as u32,
            bytes,
            seconds,
            throughput_gbps: gbit_per_s(bytes, seconds),
            retransmits: rows
                .iter()
                .filter_map(|r| r.retransmits)
                .map(u64::from)
                .sum(),
        });
        per_stream.extend(rows);
    }
    let rtts: Vec<f64> = per_stream
        .iter()
        .filter_map(|r| r.rtt_us.map(f64::from))
        .collect();
    BwReport {
        transport: "tcp",
        mode: context.mode,
        streams: context.streams,
        msg_size: context.msg_size,
        seconds: directions.iter().map(|d| d.seconds).fold(0.0, f64::max),
        bytes: directions.iter().map(|d| d.bytes).sum(),
        throughput_gbps: directions.iter().map(|d| d.throughput_gbps).sum(),
        retransmits: directions.iter().map(|d| d.retransmits).sum(),
        rtt_us: (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64),
        directions,
        per_stream,
        cpu: context.cpu,
        window: context.window,
        congestion: context.congestion,
        zerocopy: context.zerocopy,
        no_delay: context.no_delay,
        working_set: context.working_set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(index: u32, direction: Direction, bytes: u64, first: u64, last: u64) -> StreamStats {
        StreamStats {
            index,
            direction,
            bytes,
            first_ns: first,
            last_ns: last,
            retransmits: Some(index),
            rtt_us: Some(100),
        }
    }

    fn context(mode: Mode, streams: u32) -> BwContext {
        BwContext {
            mode,
            streams,
            msg_size: 1000,
            window: None,
            congestion: None,
            zerocopy: false,
            no_delay: false,
            working_set: None,
            cpu: CpuReport {
                local: CpuUsage::default(),
                remote: CpuUsage::default(),
            },
        }
    }

    #[test]
    fn forward_takes_the_servers_receive_figures() {
        let local = [
            stats(0, Direction::ClientToServer, 999, 0, 2_000_000_000),
            stats(1, Direction::ClientToServer, 999, 0, 2_000_000_000),
        ];
        let remote = [
            stats(0, Direction::ClientToServer, 125_000_000, 0, 1_000_000_000),
            stats(
                1,
                Direction::ClientToServer,
                125_000_000,
                500_000_000,
                2_000_000_000,
            ),
        ];
        let report = merge(context(Mode::Forward, 2), &local, &remote);
        assert_eq!(report.bytes, 250_000_000);
        assert_eq!(report.seconds, 2.0);
        assert_eq!(report.throughput_gbps, 1.0);
        assert_eq!(report.per_stream[0].throughput_gbps, 1.0);
        assert_eq!(report.per_stream[1].sent_bytes, 999);
        // Retransmits come from the sender (the client here): 0 + 1.
        assert_eq!(report.retransmits, 1);
    }

    #[test]
    fn bidir_sums_the_two_receivers() {
        let local = [
            stats(0, Direction::ClientToServer, 1, 0, 1),
            stats(1, Direction::ServerToClient, 250_000_000, 0, 2_000_000_000),
        ];
        let remote = [
            stats(0, Direction::ClientToServer, 125_000_000, 0, 1_000_000_000),
            stats(1, Direction::ServerToClient, 1, 0, 1),
        ];
        let report = merge(context(Mode::Bidir, 1), &local, &remote);
        assert_eq!(report.directions.len(), 2);
        assert_eq!(report.directions[0].throughput_gbps, 1.0);
        assert_eq!(report.directions[1].throughput_gbps, 1.0);
        assert_eq!(report.throughput_gbps, 2.0);
        assert_eq!(report.seconds, 2.0);
    }
}
