//! Prints linkbench's records: a header that states the units, a measure::Table (also
//! the CSV), one JSON document with --json, and an SVG chart for sweeps.

use anyhow::Context;
use fabric::perf::wire::{CpuUsage, Direction};
use fabric::perf::{BwReport, LatReport};
use measure::record::{CompareRatio, CompareRdma, CompareTcp, LinkCompare};
use measure::{format_bytes, Chart, Series, Table};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

pub struct Output {
    pub json: bool,
    /// The table alone: no header line, no throughput or CPU lines.
    pub quiet: bool,
    pub csv: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub peer: String,
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::ClientToServer => "client -> server",
        Direction::ServerToClient => "server -> client",
    }
}

fn cpu_text(cpu: &CpuUsage) -> String {
    format!(
        "{:.1}% ({:.1}% user, {:.1}% sys)",
        cpu.total_pct, cpu.user_pct, cpu.system_pct
    )
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// linkbench's `--json` as written: the peer, then the test's own fields, then what `bw`
/// adds. `measure::record::{LinkBw, LinkLat, LinkCompare}` are what readers take from it.
#[derive(Serialize)]
struct Document<'a, B: Serialize> {
    peer: &'a str,
    #[serde(flatten)]
    body: B,
    /// bw: the warm-up left out (`-O`), seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    omit_s: Option<f64>,
    /// bw with `-i`.
    #[serde(skip_serializing_if = "Option::is_none")]
    intervals: Option<&'a [Interval]>,
    /// bw with `--rails`: each rail's share.
    #[serde(skip_serializing_if = "Option::is_none")]
    rails: Option<&'a [RailRate]>,
}

impl<'a, B: Serialize> Document<'a, B> {
    fn new(peer: &'a str, body: B) -> Self {
        Document {
            peer,
            body,
            omit_s: None,
            intervals: None,
            rails: None,
        }
    }

    fn with_intervals(mut self, intervals: &'a Intervals) -> Self {
        self.omit_s = Some(intervals.omit.as_secs_f64());
        self.intervals = intervals.every.map(|_| intervals.rows.as_slice());
        self
    }

    /// The envelope, then these fields.
    fn envelope(&self, test: &str) -> anyhow::Result<Value> {
        Ok(measure::record::document("linkbench", test, self)?)
    }
}

/// A sweep (`-a`): what every size shares, then one report per size.
#[derive(Serialize)]
struct Sweep<'a, R: Serialize> {
    transport: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<fabric::perf::Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    streams: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    op: Option<fabric::rdma::RdmaOp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    one_way: Option<&'a str>,
    sweep: &'a [R],
}

impl<'a, R: Serialize> Sweep<'a, R> {
    fn of(transport: &'a str, sweep: &'a [R]) -> Self {
        Sweep {
            transport,
            mode: None,
            streams: None,
            op: None,
            one_way: None,
            sweep,
        }
    }
}

/// The table a person reads and the same rows as data for `--csv`: raw numbers, units in
/// the column names (`size_bytes`, `p50_us`), never "1.57 GiB".
struct Tables {
    shown: Table,
    csv: Table,
}

impl Tables {
    fn new<const N: usize>(shown: [&str; N], csv: [&str; N]) -> Tables {
        Tables {
            shown: Table::new(shown),
            csv: Table::new(csv),
        }
    }

    fn from_vecs(shown: Vec<&str>, csv: Vec<&str>) -> Tables {
        Tables {
            shown: Table::new(shown),
            csv: Table::new(csv),
        }
    }

    fn push(&mut self, shown: Vec<String>, csv: Vec<String>) {
        self.shown.push(shown);
        self.csv.push(csv);
    }
}

fn emit(
    output: &Output,
    tables: &Tables,
    document: Value,
    header: &str,
    footer: &str,
) -> anyhow::Result<()> {
    let table = &tables.shown;
    // Results first: a file that fails to write must not take the printed table with it.
    if output.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else if output.quiet {
        println!("{}", table.render());
    } else {
        println!("{header}");
        println!("{}", table.render());
        if !footer.is_empty() {
            println!("{footer}");
        }
    }
    if let Some(path) = &output.csv {
        measure::write_csv(path, &tables.csv)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn plot(output: &Output, chart: Chart) -> anyhow::Result<()> {
    if let Some(path) = &output.plot {
        measure::write_chart(path, &chart)?;
    }
    Ok(())
}

/// One rail's share of a multi-rail test (both directions summed with --bidir).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RailRate {
    pub address: String,
    pub streams: u32,
    pub bytes: u64,
    /// The rail's bytes over the whole test's time: a rail that stopped early shows low.
    pub throughput_gbps: f64,
    /// Seconds its longest stream moved data (first to last byte).
    pub active_s: f64,
    /// It stopped moving data well before the test ended (link down, path lost).
    pub stalled: bool,
}

/// Stream i ran on rail i % rails (the client's map); sums each rail's streams.
fn rail_rates(report: &BwReport, rails: &[std::net::SocketAddr]) -> Vec<RailRate> {
    let mut rates: Vec<RailRate> = rails
        .iter()
        .map(|a| RailRate {
            address: a.ip().to_string(),
            streams: 0,
            bytes: 0,
            throughput_gbps: 0.0,
            active_s: 0.0,
            stalled: false,
        })
        .collect();
    for stream in &report.per_stream {
        if let Some(rail) = rates.get_mut(stream.index as usize % rails.len().max(1)) {
            rail.streams += 1;
            rail.bytes += stream.bytes;
            rail.active_s = rail.active_s.max(stream.seconds);
        }
    }
    let seconds = report.seconds.max(1e-9);
    for rail in &mut rates {
        rail.throughput_gbps = measure::gbit_per_s(rail.bytes, seconds);
        rail.stalled = rail.active_s < 0.8 * seconds;
    }
    rates
}

/// One `-i` interval of this side's bytes (sent, or received with -R).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Interval {
    pub start_s: f64,
    pub end_s: f64,
    pub bytes: u64,
    pub throughput_gbps: f64,
    /// Inside the `-O` warm-up: shown, not counted in the result.
    pub omitted: bool,
}

/// Turns the client's ~100 ms samples (elapsed, cumulative bytes) into `-i` intervals.
pub struct Intervals {
    every: Option<Duration>,
    omit: Duration,
    mode: fabric::perf::Mode,
    next: Duration,
    /// Where the last row ended, and the latest sample.
    last: (Duration, u64),
    latest: (Duration, u64),
    rows: Vec<Interval>,
}

impl Intervals {
    pub fn new(every: Option<Duration>, omit: Duration, mode: fabric::perf::Mode) -> Self {
        Intervals {
            every,
            omit,
            mode,
            next: every.unwrap_or(Duration::MAX),
            last: (Duration::ZERO, 0),
            latest: (Duration::ZERO, 0),
            rows: Vec::new(),
        }
    }

    pub fn print_header(&self) {
        let side = match self.mode {
            fabric::perf::Mode::Forward => "sent by this side",
            fabric::perf::Mode::Reverse => "received by this side",
            fabric::perf::Mode::Bidir => "sent + received by this side",
        };
        println!(
            "{:>15}  {:>10}  {:>9}  ({side})",
            "interval (s)", "bytes", "Gbit/s"
        );
    }

    /// Records an interval each time `elapsed` passes the next boundary.
    pub fn sample(&mut self, elapsed: Duration, bytes: u64, print: bool) {
        let Some(every) = self.every else { return };
        self.latest = (elapsed, bytes);
        if elapsed < self.next {
            return;
        }
        self.record(elapsed, bytes, print);
        while self.next <= elapsed {
            self.next += every;
        }
    }

    /// The test ended: the part since the last boundary is the last row (iperf3's too).
    pub fn finish(&mut self, print: bool) {
        let (elapsed, bytes) = self.latest;
        if self.every.is_some() && elapsed > self.last.0 && bytes > self.last.1 {
            self.record(elapsed, bytes, print);
        }
    }

    fn record(&mut self, elapsed: Duration, bytes: u64, print: bool) {
        let (from, before) = self.last;
        let seconds = elapsed.checked_sub(from).unwrap().as_secs_f64().max(1e-9);
        let row = Interval {
            start_s: from.as_secs_f64(),
            end_s: elapsed.as_secs_f64(),
            bytes: bytes - before,
            throughput_gbps: measure::gbit_per_s(bytes - before, seconds),
            omitted: from < self.omit,
        };
        if print {
            println!(
                "{:>15}  {:>10}  {:>9}{}",
                format!("{:.2}-{:.2}", row.start_s, row.end_s),
                format_bytes(row.bytes),
                measure::format_rate(row.throughput_gbps),
                if row.omitted { "  (omitted)" } else { "" }
            );
        }
        self.rows.push(row);
        self.last = (elapsed, bytes);
    }
}

pub fn bandwidth(
    output: &Output,
    sweep: bool,
    reports: &[BwReport],
    intervals: &Intervals,
    rails: &[std::net::SocketAddr],
) -> anyhow::Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    let header = format!(
        "linkbench bw: {} to {}, {} stream(s) {}, {}{}; measured at the receiver; Gbit/s = 1e9 bit/s, GB/s = 1e9 B/s",
        first.transport,
        output.peer,
        first.streams,
        match first.mode {
            fabric::perf::Mode::Forward => "client -> server",
            fabric::perf::Mode::Reverse => "server -> client",
            fabric::perf::Mode::Bidir => "each way",
        },
        if sweep { "1 row per message size".to_string() } else { format!("{} messages", format_bytes(first.msg_size)) },
        if sweep { String::new() } else { format!(", {:.2} s", first.seconds) },
    );
    let header = if intervals.omit.is_zero() {
        header
    } else {
        format!(
            "{header}\nthe first {:.2} s of each test (warm-up, -O) are left out",
            intervals.omit.as_secs_f64()
        )
    };
    if sweep {
        let mut table = Tables::new(
            [
                "size (B)",
                "Gbit/s",
                "GB/s",
                "retransmits",
                "cpu local %",
                "cpu remote %",
            ],
            [
                "size_bytes",
                "throughput_gbps",
                "throughput_gbyte_s",
                "retransmits",
                "cpu_local_pct",
                "cpu_remote_pct",
            ],
        );
        for r in reports {
            table.push(
                vec![
                    r.msg_size.to_string(),
                    measure::format_rate(r.throughput_gbps),
                    measure::format_rate(r.throughput_gbps / 8.0),
                    r.retransmits.to_string(),
                    format!("{:.1}", r.cpu.local.total_pct),
                    format!("{:.1}", r.cpu.remote.total_pct),
                ],
                vec![
                    r.msg_size.to_string(),
                    r.throughput_gbps.to_string(),
                    (r.throughput_gbps / 8.0).to_string(),
                    r.retransmits.to_string(),
                    r.cpu.local.total_pct.to_string(),
                    r.cpu.remote.total_pct.to_string(),
                ],
            );
        }
        let body = Sweep {
            mode: Some(first.mode),
            streams: Some(first.streams),
            ..Sweep::of(first.transport, reports)
        };
        let document = Document::new(&output.peer, body)
            .with_intervals(intervals)
            .envelope("bw")?;
        emit(output, &table, document, &header, "")?;
        return plot(
            output,
            Chart {
                title: format!(
                    "linkbench bw: {} to {}, {} stream(s)",
                    first.transport, output.peer, first.streams
                ),
                x_label: "message size (bytes)".into(),
                y_label: "throughput at the receiver (Gbit/s)".into(),
                x_log2_bytes: true,
                secondary: None,
                series: vec![Series {
                    name: "Gbit/s".into(),
                    points: reports
                        .iter()
                        .map(|r| (r.msg_size as f64, r.throughput_gbps))
                        .collect(),
                }],
            },
        );
    }
    let report = first;
    let mut table = Tables::new(
        [
            "stream",
            "direction",
            "received",
            "seconds",
            "Gbit/s",
            "retransmits",
            "rtt (us)",
        ],
        [
            "stream",
            "direction",
            "received_bytes",
            "seconds",
            "throughput_gbps",
            "retransmits",
            "rtt_us",
        ],
    );
    let raw = |v: Option<String>| v.unwrap_or_default();
    for s in &report.per_stream {
        table.push(
            vec![
                s.index.to_string(),
                direction_name(s.direction).to_string(),
                format_bytes(s.bytes),
                format!("{:.2}", s.seconds),
                measure::format_rate(s.throughput_gbps),
                opt(s.retransmits),
                opt(s.rtt_us),
            ],
            vec![
                s.index.to_string(),
                direction_name(s.direction).to_string(),
                s.bytes.to_string(),
                s.seconds.to_string(),
                s.throughput_gbps.to_string(),
                raw(s.retransmits.map(|v| v.to_string())),
                raw(s.rtt_us.map(|v| v.to_string())),
            ],
        );
    }
    for d in &report.directions {
        table.push(
            vec![
                "sum".to_string(),
                direction_name(d.direction).to_string(),
                format_bytes(d.bytes),
                format!("{:.2}", d.seconds),
                measure::format_rate(d.throughput_gbps),
                d.retransmits.to_string(),
                opt(report.rtt_us.map(|r| format!("{r:.0}"))),
            ],
            vec![
                "sum".to_string(),
                direction_name(d.direction).to_string(),
                d.bytes.to_string(),
                d.seconds.to_string(),
                d.throughput_gbps.to_string(),
                d.retransmits.to_string(),
                raw(report.rtt_us.map(|r| r.to_string())),
            ],
        );
    }
    let footer = format!(
        "throughput: {} Gbit/s ({} GB/s){}\ncpu (percent of one core): local {}, remote {}",
        measure::format_rate(report.throughput_gbps),
        measure::format_rate(report.throughput_gbps / 8.0),
        if report.directions.len() > 1 {
            ", both directions summed"
        } else {
            ""
        },
        cpu_text(&report.cpu.local),
        cpu_text(&report.cpu.remote),
    );
    let per_rail = rail_rates(report, rails);
    let footer = per_rail.iter().fold(footer, |text, rail| {
        format!(
            "{text}\nrail {}: {} Gbit/s over {} stream(s){}",
            rail.address,
            measure::format_rate(rail.throughput_gbps),
            rail.streams,
            if rail.stalled {
                format!(
                    "; STALLED: moved data for {:.2} s of {:.2} (link down? path lost?)",
                    rail.active_s, report.seconds
                )
            } else {
                String::new()
            }
        )
    });
    let mut document = Document::new(&output.peer, report).with_intervals(intervals);
    document.rails = (!per_rail.is_empty()).then_some(per_rail.as_slice());
    let document = document.envelope("bw")?;
    emit(output, &table, document, &header, &footer)
}

pub fn latency(output: &Output, sweep: bool, reports: &[LatReport]) -> anyhow::Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    let header = format!(
        "linkbench lat: {} ping-pong with {}; one-way latency = round trip / 2 (as qperf, sockperf, perftest report it), in microseconds; receives {}",
        first.transport,
        output.peer,
        if first.busy_poll { "busy-poll" } else { "poll 200 us, then block" }
    );
    let mut table = Tables::new(
        [
            "size (B)",
            "round trips",
            "min",
            "mean",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
        ],
        [
            "size_bytes",
            "round_trips",
            "min_us",
            "mean_us",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
        ],
    );
    for r in reports {
        let l = &r.latency_us;
        let values = [l.min, l.mean, l.p50, l.p90, l.p99, l.p999, l.max];
        let lead = [r.msg_size.to_string(), r.iterations.to_string()];
        table.push(
            lead.iter()
                .cloned()
                .chain(values.iter().map(|v| format!("{v:.2}")))
                .collect(),
            lead.iter()
                .cloned()
                .chain(values.iter().map(ToString::to_string))
                .collect(),
        );
    }
    let footer = if sweep {
        String::new()
    } else {
        format!(
            "cpu (percent of one core): local {}, remote {}",
            cpu_text(&first.cpu.local),
            cpu_text(&first.cpu.remote)
        )
    };
    let document = if sweep {
        let body = Sweep {
            one_way: Some(first.one_way),
            ..Sweep::of(first.transport, reports)
        };
        Document::new(&output.peer, body).envelope("lat")?
    } else {
        Document::new(&output.peer, first).envelope("lat")?
    };
    emit(output, &table, document, &header, &footer)?;
    if sweep {
        plot(
            output,
            Chart {
                title: format!("linkbench lat: {} to {}", first.transport, output.peer),
                x_label: "message size (bytes)".into(),
                y_label: "one-way latency = RTT/2 (us)".into(),
                x_log2_bytes: true,
                secondary: None,
                series: vec![
                    Series {
                        name: "p50".into(),
                        points: reports
                            .iter()
                            .map(|r| (r.msg_size as f64, r.latency_us.p50))
                            .collect(),
                    },
                    Series {
                        name: "p99".into(),
                        points: reports
                            .iter()
                            .map(|r| (r.msg_size as f64, r.latency_us.p99))
                            .collect(),
                    },
                ],
            },
        )?;
    }
    Ok(())
}

/// perftest's bandwidth columns, one row per size.
pub fn rdma_bandwidth(
    output: &Output,
    sweep: bool,
    reports: &[fabric::perf::RdmaBwReport],
) -> anyhow::Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    let header = format!(
        "linkbench bw: RDMA, {} to {}, device {} port {} ({}, {}), GID index {}, path MTU {}, {} QP(s), tx depth {}; \
         timed at the sender from first post to last completion (RC completions are acknowledged data), as ib_write_bw; \
         peak = best window of at least 1 ms and 8 pipelines; Gb/sec = 1e9 bit/s",
        first.op.name(),
        output.peer,
        first.device,
        first.port.number,
        first.port.link_layer,
        first.port.rate.as_deref().unwrap_or("rate unknown"),
        first.gid_index,
        first.path_mtu,
        first.qps,
        first.tx_depth,
    );
    let mut headers = vec![
        "#bytes",
        "#iterations",
        "BW peak[Gb/sec]",
        "BW average[Gb/sec]",
        "MsgRate[Mpps]",
    ];
    let mut csv_headers = vec![
        "size_bytes",
        "iterations",
        "peak_gbps",
        "average_gbps",
        "msg_rate_mpps",
    ];
    if first.validated {
        headers.extend(["checked bytes", "wrong bytes"]);
        csv_headers.extend(["checked_bytes", "wrong_bytes"]);
    }
    let mut table = Tables::from_vecs(headers, csv_headers);
    for r in reports {
        let mut row = vec![
            r.msg_size.to_string(),
            r.iterations.to_string(),
            format!("{:.4}", r.peak_gbps),
            format!("{:.4}", r.throughput_gbps),
            format!("{:.6}", r.msg_rate_mpps),
        ];
        let mut raw = vec![
            r.msg_size.to_string(),
            r.iterations.to_string(),
            r.peak_gbps.to_string(),
            r.throughput_gbps.to_string(),
            r.msg_rate_mpps.to_string(),
        ];
        if r.validated {
            for v in [r.checked_bytes, r.wrong_bytes] {
                row.push(v.to_string());
                raw.push(v.to_string());
            }
        }
        table.push(row, raw);
    }
    let footer = format!(
        "cpu (percent of one core): local {}, remote {}",
        cpu_text(&first.cpu.local),
        cpu_text(&first.cpu.remote)
    );
    let document = if sweep {
        let body = Sweep {
            op: Some(first.op),
            ..Sweep::of("rdma", reports)
        };
        Document::new(&output.peer, body).envelope("bw")?
    } else {
        Document::new(&output.peer, first).envelope("bw")?
    };
    emit(output, &table, document, &header, &footer)?;
    if sweep {
        plot(
            output,
            Chart {
                title: format!("linkbench bw: {} to {}", first.op.name(), output.peer),
                x_label: "message size (bytes)".into(),
                y_label: "average bandwidth (Gbit/s)".into(),
                x_log2_bytes: true,
                secondary: None,
                series: vec![Series {
                    name: "Gbit/s".into(),
                    points: reports
                        .iter()
                        .map(|r| (r.msg_size as f64, r.throughput_gbps))
                        .collect(),
                }],
            },
        )?;
    }
    Ok(())
}

/// perftest's latency columns, one row per size.
pub fn rdma_latency(
    output: &Output,
    sweep: bool,
    reports: &[fabric::perf::RdmaLatReport],
) -> anyhow::Result<()> {
    let Some(first) = reports.first() else {
        return Ok(());
    };
    let header = format!(
        "linkbench lat: RDMA, {} with {}, device {} GID index {}, path MTU {}; latency = {}, in usec (t_typical = median)",
        first.op.name(),
        output.peer,
        first.device,
        first.gid_index,
        first.path_mtu,
        first.one_way,
    );
    let mut table = Tables::new(
        [
            "#bytes",
            "#iterations",
            "t_min[usec]",
            "t_max[usec]",
            "t_typical[usec]",
            "t_avg[usec]",
            "t_stdev[usec]",
            "99% percentile[usec]",
            "99.9% percentile[usec]",
        ],
        [
            "size_bytes",
            "iterations",
            "min_us",
            "max_us",
            "typical_us",
            "avg_us",
            "stdev_us",
            "p99_us",
            "p999_us",
        ],
    );
    for r in reports {
        let l = &r.latency_us;
        let values = [l.min, l.max, l.p50, l.mean, l.stdev, l.p99, l.p999];
        let lead = [r.msg_size.to_string(), r.iterations.to_string()];
        table.push(
            lead.iter()
                .cloned()
                .chain(values.iter().map(|v| format!("{v:.2}")))
                .collect(),
            lead.iter()
                .cloned()
                .chain(values.iter().map(ToString::to_string))
                .collect(),
        );
    }
    let document = if sweep {
        let body = Sweep {
            op: Some(first.op),
            one_way: Some(first.one_way),
            ..Sweep::of("rdma", reports)
        };
        Document::new(&output.peer, body).envelope("lat")?
    } else {
        Document::new(&output.peer, first).envelope("lat")?
    };
    emit(output, &table, document, &header, "")
}

/// TCP and RDMA side by side; RDMA may be missing, with the reason in its place.
pub fn compare(
    output: &Output,
    tcp_bw: &BwReport,
    tcp_lat: &LatReport,
    rdma: &Result<(fabric::perf::RdmaBwReport, fabric::perf::RdmaLatReport), String>,
) -> anyhow::Result<()> {
    let header = format!(
        "linkbench compare: TCP and RDMA with {}; bandwidth {} messages (Gbit/s = 1e9 bit/s), latency {} B one-way = round trip / 2 (usec, median)",
        output.peer,
        format_bytes(tcp_bw.msg_size),
        tcp_lat.msg_size
    );
    let mut table = Tables::new(
        [
            "transport",
            "Gbit/s",
            "latency p50 (us)",
            "latency p99 (us)",
            "note",
        ],
        [
            "transport",
            "throughput_gbps",
            "latency_p50_us",
            "latency_p99_us",
            "note",
        ],
    );
    let raw_row = |name: &str, gbps: f64, p50: f64, p99: f64, note: &str| {
        vec![
            name.to_string(),
            gbps.to_string(),
            p50.to_string(),
            p99.to_string(),
            note.to_string(),
        ]
    };
    table.push(
        vec![
            "tcp".to_string(),
            measure::format_rate(tcp_bw.throughput_gbps),
            format!("{:.2}", tcp_lat.latency_us.p50),
            format!("{:.2}", tcp_lat.latency_us.p99),
            String::new(),
        ],
        raw_row(
            "tcp",
            tcp_bw.throughput_gbps,
            tcp_lat.latency_us.p50,
            tcp_lat.latency_us.p99,
            "",
        ),
    );
    let tcp = CompareTcp {
        msg_size: tcp_bw.msg_size,
        throughput_gbps: tcp_bw.throughput_gbps,
        lat_msg_size: tcp_lat.msg_size,
        latency_us: tcp_lat.latency_us,
    };
    let (rdma_doc, ratio) = match rdma {
        Ok((bw, lat)) => {
            let note = format!("{} {}, {} QP", bw.device, bw.op.name(), bw.qps);
            table.push(
                vec![
                    "rdma".to_string(),
                    measure::format_rate(bw.throughput_gbps),
                    format!("{:.2}", lat.latency_us.p50),
                    format!("{:.2}", lat.latency_us.p99),
                    note.clone(),
                ],
                raw_row(
                    "rdma",
                    bw.throughput_gbps,
                    lat.latency_us.p50,
                    lat.latency_us.p99,
                    &note,
                ),
            );
            let bw_ratio = bw.throughput_gbps / tcp_bw.throughput_gbps.max(f64::MIN_POSITIVE);
            let lat_ratio = lat.latency_us.p50 / tcp_lat.latency_us.p50.max(f64::MIN_POSITIVE);
            let p99_ratio = lat.latency_us.p99 / tcp_lat.latency_us.p99.max(f64::MIN_POSITIVE);
            table.push(
                vec![
                    "rdma / tcp".to_string(),
                    format!("{bw_ratio:.2}x"),
                    format!("{lat_ratio:.2}x"),
                    format!("{p99_ratio:.2}x"),
                    String::new(),
                ],
                raw_row("rdma/tcp ratio", bw_ratio, lat_ratio, p99_ratio, ""),
            );
            (
                CompareRdma {
                    available: true,
                    reason: None,
                    device: Some(bw.device.clone()),
                    op: Some(bw.op.word().into()),
                    throughput_gbps: Some(bw.throughput_gbps),
                    latency_us: Some(lat.latency_us),
                },
                CompareRatio {
                    throughput: Some(bw_ratio),
                    latency_p50: Some(lat_ratio),
                },
            )
        }
        Err(why) => {
            table.push(
                vec![
                    "rdma".to_string(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    why.clone(),
                ],
                vec![
                    "rdma".to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    why.clone(),
                ],
            );
            (
                CompareRdma {
                    available: false,
                    reason: Some(why.clone()),
                    device: None,
                    op: None,
                    throughput_gbps: None,
                    latency_us: None,
                },
                CompareRatio {
                    throughput: None,
                    latency_p50: None,
                },
            )
        }
    };
    let document = measure::record::document(
        "linkbench",
        "compare",
        &LinkCompare {
            peer: output.peer.clone(),
            tcp,
            rdma: rdma_doc,
            ratio,
        },
    )?;
    emit(output, &table, document, &header, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part_after_the_last_boundary_is_the_last_interval() {
        let second = Duration::from_secs(1);
        let mut intervals =
            Intervals::new(Some(second), Duration::ZERO, fabric::perf::Mode::Forward);
        // Progress every 400 ms; the test ends at 2.6 s, between two boundaries.
        for (ms, bytes) in [
            (400, 40),
            (800, 80),
            (1200, 120),
            (1600, 160),
            (2000, 200),
            (2400, 240),
            (2600, 260),
        ] {
            intervals.sample(Duration::from_millis(ms), bytes, false);
        }
        intervals.finish(false);
        let spans: Vec<(f64, f64, u64)> = intervals
            .rows
            .iter()
            .map(|r| (r.start_s, r.end_s, r.bytes))
            .collect();
        assert_eq!(spans, [(0.0, 1.2, 120), (1.2, 2.0, 80), (2.0, 2.6, 60)]);
        // Nothing after the last row: finishing again adds nothing.
        intervals.finish(false);
        assert_eq!(intervals.rows.len(), 3);
    }
}
