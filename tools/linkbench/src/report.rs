//! Prints linkbench's records: a header that states the units, a measure::Table (also
//! the CSV), one JSON document with --json, and an SVG chart for sweeps.

use anyhow::Context;
use fabric::control::{CpuUsage, Direction};
use fabric::perf::{BwReport, LatReport};
use measure::{format_bytes, Chart, Series, Table};
use serde_json::{json, Value};
use std::path::PathBuf;

pub struct Output {
    pub json: bool,
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

fn with_header(record: Value, test: &str, peer: &str) -> Value {
    let mut document = json!({ "tool": "linkbench", "test": test, "peer": peer });
    if let (Some(target), Value::Object(fields)) = (document.as_object_mut(), record) {
        target.extend(fields);
    }
    document
}

fn emit(
    output: &Output,
    table: &Table,
    document: Value,
    header: &str,
    footer: &str,
) -> anyhow::Result<()> {
    if let Some(path) = &output.csv {
        measure::write_csv(path, table).with_context(|| format!("writing {}", path.display()))?;
    }
    if output.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        println!("{header}");
        println!("{}", table.render());
        if !footer.is_empty() {
            println!("{footer}");
        }
    }
    Ok(())
}

fn plot(output: &Output, chart: Chart) -> anyhow::Result<()> {
    if let Some(path) = &output.plot {
        measure::write_chart(path, &chart)?;
    }
    Ok(())
}

pub fn bandwidth(output: &Output, sweep: bool, reports: &[BwReport]) -> anyhow::Result<()> {
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
    if sweep {
        let mut table = Table::new([
            "size (B)",
            "Gbit/s",
            "GB/s",
            "retransmits",
            "cpu local %",
            "cpu remote %",
        ]);
        for r in reports {
            table.push([
                r.msg_size.to_string(),
                format!("{:.3}", r.throughput_gbps),
                format!("{:.3}", r.throughput_gbps / 8.0),
                r.retransmits.to_string(),
                format!("{:.1}", r.cpu.local.total_pct),
                format!("{:.1}", r.cpu.remote.total_pct),
            ]);
        }
        let document = with_header(
            json!({
                "transport": first.transport,
                "mode": first.mode,
                "streams": first.streams,
                "sweep": reports,
            }),
            "bw",
            &output.peer,
        );
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
    let mut table = Table::new([
        "stream",
        "direction",
        "received",
        "seconds",
        "Gbit/s",
        "retransmits",
        "rtt (us)",
    ]);
    for s in &report.per_stream {
        table.push([
            s.index.to_string(),
            direction_name(s.direction).to_string(),
            format_bytes(s.bytes),
            format!("{:.2}", s.seconds),
            format!("{:.3}", s.throughput_gbps),
            opt(s.retransmits),
            opt(s.rtt_us),
        ]);
    }
    for d in &report.directions {
        table.push([
            "sum".to_string(),
            direction_name(d.direction).to_string(),
            format_bytes(d.bytes),
            format!("{:.2}", d.seconds),
            format!("{:.3}", d.throughput_gbps),
            d.retransmits.to_string(),
            opt(report.rtt_us.map(|r| format!("{r:.0}"))),
        ]);
    }
    let footer =
        format!(
        "throughput: {:.3} Gbit/s ({:.3} GB/s){}\ncpu (percent of one core): local {}, remote {}",
        report.throughput_gbps,
        report.throughput_gbps / 8.0,
        if report.directions.len() > 1 { ", both directions summed" } else { "" },
        cpu_text(&report.cpu.local),
        cpu_text(&report.cpu.remote),
    );
    let document = with_header(serde_json::to_value(report)?, "bw", &output.peer);
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
    let mut table = Table::new([
        "size (B)",
        "round trips",
        "min",
        "mean",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
    ]);
    for r in reports {
        let l = &r.latency_us;
        table.push([
            r.msg_size.to_string(),
            r.iterations.to_string(),
            format!("{:.2}", l.min),
            format!("{:.2}", l.mean),
            format!("{:.2}", l.p50),
            format!("{:.2}", l.p90),
            format!("{:.2}", l.p99),
            format!("{:.2}", l.p999),
            format!("{:.2}", l.max),
        ]);
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
        with_header(
            json!({ "transport": first.transport, "one_way": first.one_way, "sweep": reports }),
            "lat",
            &output.peer,
        )
    } else {
        with_header(serde_json::to_value(first)?, "lat", &output.peer)
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
