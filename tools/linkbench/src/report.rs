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
        "linkbench bw: RDMA, {} to {}, device {} GID index {}, path MTU {}, {} QP(s), tx depth {}; \
         timed at the sender from first post to last completion (RC completions are acknowledged data), as ib_write_bw; Gb/sec = 1e9 bit/s",
        first.op.name(),
        output.peer,
        first.device,
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
    if first.validated {
        headers.push("checked bytes");
        headers.push("wrong bytes");
    }
    let mut table = Table::new(headers);
    for r in reports {
        let mut row = vec![
            r.msg_size.to_string(),
            r.iterations.to_string(),
            format!("{:.4}", r.peak_gbps),
            format!("{:.4}", r.throughput_gbps),
            format!("{:.6}", r.msg_rate_mpps),
        ];
        if r.validated {
            row.push(r.checked_bytes.to_string());
            row.push(r.wrong_bytes.to_string());
        }
        table.push(row);
    }
    let footer = format!(
        "cpu (percent of one core): local {}, remote {}",
        cpu_text(&first.cpu.local),
        cpu_text(&first.cpu.remote)
    );
    let document = if sweep {
        with_header(
            json!({ "transport": "rdma", "op": first.op, "sweep": reports }),
            "bw",
            &output.peer,
        )
    } else {
        with_header(serde_json::to_value(first)?, "bw", &output.peer)
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
    let mut table = Table::new([
        "#bytes",
        "#iterations",
        "t_min[usec]",
        "t_max[usec]",
        "t_typical[usec]",
        "t_avg[usec]",
        "t_stdev[usec]",
        "99% percentile[usec]",
        "99.9% percentile[usec]",
    ]);
    for r in reports {
        let l = &r.latency_us;
        table.push([
            r.msg_size.to_string(),
            r.iterations.to_string(),
            format!("{:.2}", l.min),
            format!("{:.2}", l.max),
            format!("{:.2}", l.p50),
            format!("{:.2}", l.mean),
            format!("{:.2}", l.stdev),
            format!("{:.2}", l.p99),
            format!("{:.2}", l.p999),
        ]);
    }
    let document = if sweep {
        with_header(
            json!({ "transport": "rdma", "op": first.op, "one_way": first.one_way, "sweep": reports }),
            "lat",
            &output.peer,
        )
    } else {
        with_header(serde_json::to_value(first)?, "lat", &output.peer)
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
    let mut table = Table::new([
        "transport",
        "Gbit/s",
        "latency p50 (us)",
        "latency p99 (us)",
        "note",
    ]);
    table.push([
        "tcp".to_string(),
        format!("{:.3}", tcp_bw.throughput_gbps),
        format!("{:.2}", tcp_lat.latency_us.p50),
        format!("{:.2}", tcp_lat.latency_us.p99),
        String::new(),
    ]);
    let tcp = json!({
        "throughput_gbps": tcp_bw.throughput_gbps,
        "latency_us": tcp_lat.latency_us,
        "msg_size": tcp_bw.msg_size,
        "lat_msg_size": tcp_lat.msg_size,
    });
    let (rdma_doc, ratio) = match rdma {
        Ok((bw, lat)) => {
            table.push([
                "rdma".to_string(),
                format!("{:.3}", bw.throughput_gbps),
                format!("{:.2}", lat.latency_us.p50),
                format!("{:.2}", lat.latency_us.p99),
                format!("{} {}, {} QP", bw.device, bw.op.name(), bw.qps),
            ]);
            let bw_ratio = bw.throughput_gbps / tcp_bw.throughput_gbps.max(f64::MIN_POSITIVE);
            let lat_ratio = lat.latency_us.p50 / tcp_lat.latency_us.p50.max(f64::MIN_POSITIVE);
            table.push([
                "rdma / tcp".to_string(),
                format!("{bw_ratio:.2}x"),
                format!("{lat_ratio:.2}x"),
                format!(
                    "{:.2}x",
                    lat.latency_us.p99 / tcp_lat.latency_us.p99.max(f64::MIN_POSITIVE)
                ),
                String::new(),
            ]);
            (
                json!({
                    "available": true,
                    "device": bw.device,
                    "op": bw.op,
                    "throughput_gbps": bw.throughput_gbps,
                    "latency_us": lat.latency_us,
                }),
                json!({ "throughput": bw_ratio, "latency_p50": lat_ratio }),
            )
        }
        Err(why) => {
            table.push([
                "rdma".to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                why.clone(),
            ]);
            (
                json!({ "available": false, "reason": why }),
                json!({ "throughput": null, "latency_p50": null }),
            )
        }
    };
    let document = with_header(
        json!({ "tcp": tcp, "rdma": rdma_doc, "ratio": ratio }),
        "compare",
        &output.peer,
    );
    emit(output, &table, document, &header, "")
}
