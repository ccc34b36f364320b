//! Link prices for the cost model: an alpha-beta line (a fixed latency per hop plus bytes
//! over a rate), from a named profile or fitted to a measurement (collbench, linkbench or
//! kvxfer `--json`). A measurement always wins over a profile.

use crate::ModelError;
use measure::record::Record;

/// One link as the cost model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkModel {
    /// Profile name or file name, for the report.
    pub name: String,
    /// Latency of one hop (one send, or one ring step), microseconds.
    pub alpha_us: f64,
    /// Rate per direction, GB/s (1e9 B/s).
    pub gbs: f64,
    /// Where the figures came from, in words.
    pub source: String,
    /// The measured rows themselves, which price sizes inside their range exactly.
    pub measured: Option<Measured>,
}

/// A collbench sweep: (bytes, microseconds) sorted by size, for `op` over `world` ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub op: String,
    pub world: u64,
    pub points: Vec<(f64, f64)>,
}

impl Measured {
    /// Time at `bytes` on the line through the two measured sizes around it (a local
    /// alpha-beta fit); None outside the measured range.
    fn at(&self, bytes: f64) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if bytes < first.0 || bytes > last.0 {
            return None;
        }
        let pair = self.points.windows(2).find(|w| bytes <= w[1].0);
        Some(match pair {
            Some(w) if w[1].0 > w[0].0 => {
                w[0].1 + (w[1].1 - w[0].1) * (bytes - w[0].0) / (w[1].0 - w[0].0)
            }
            _ => first.1,
        })
    }
}

/// Intra-node profiles: (name, GB/s per direction, alpha us, what it assumes).
pub const INTRA_PROFILES: &[(&str, f64, f64, &str)] = &[
    (
        "nvlink4",
        450.0,
        2.0,
        "NVLink 4 (H100 SXM), 900 GB/s bidirectional",
    ),
    (
        "nvlink3",
        300.0,
        2.0,
        "NVLink 3 (A100 SXM), 600 GB/s bidirectional",
    ),
    (
        "nvlink2",
        150.0,
        3.0,
        "NVLink 2 (V100 SXM2), 300 GB/s bidirectional",
    ),
    (
        "infinity-fabric",
        150.0,
        3.0,
        "AMD Infinity Fabric (MI210), 300 GB/s peer",
    ),
    (
        "pcie5",
        50.0,
        5.0,
        "PCIe Gen5 x16, ~80 % of 64 GB/s per direction",
    ),
    (
        "pcie4",
        25.0,
        5.0,
        "PCIe Gen4 x16, ~80 % of 32 GB/s per direction",
    ),
];

/// Inter-node profiles: (name, GB/s per direction, alpha us, what it assumes).
pub const INTER_PROFILES: &[(&str, f64, f64, &str)] = &[
    (
        "tcp-10g",
        1.15,
        25.0,
        "10 GbE TCP, ~92 % of line rate, 25 us per hop",
    ),
    (
        "tcp-25g",
        2.9,
        20.0,
        "25 GbE TCP, ~92 % of line rate, 20 us per hop",
    ),
    (
        "tcp-100g",
        10.0,
        15.0,
        "100 GbE TCP, ~80 % of line rate (one stream), 15 us per hop",
    ),
    (
        "ib-hdr200",
        23.0,
        3.0,
        "InfiniBand HDR 200 Gb/s, ~92 % of line rate, 3 us per hop",
    ),
    (
        "ib-ndr400",
        46.0,
        2.5,
        "InfiniBand NDR 400 Gb/s, ~92 % of line rate, 2.5 us per hop",
    ),
];

impl LinkModel {
    /// A named profile from `profiles`; the error lists the known names.
    pub fn named(
        name: &str,
        profiles: &[(&str, f64, f64, &str)],
        what: &'static str,
    ) -> Result<Self, ModelError> {
        let wanted = name.to_ascii_lowercase();
        profiles
            .iter()
            .find(|p| p.0 == wanted)
            .map(|&(name, gbs, alpha_us, about)| LinkModel {
                name: name.to_string(),
                alpha_us,
                gbs,
                source: format!("profile: {about}"),
                measured: None,
            })
            .ok_or_else(|| ModelError::UnknownName {
                what,
                name: name.to_string(),
                known: format!(
                    "{} (or a linkbench/collbench/kvxfer --json FILE)",
                    profiles.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            })
    }

    /// A link at `gbs` GB/s per direction with `alpha_us` per hop.
    pub fn new(name: &str, gbs: f64, alpha_us: f64) -> Self {
        LinkModel {
            name: name.to_string(),
            alpha_us,
            gbs,
            source: "given".into(),
            measured: None,
        }
    }

    /// Microseconds to move `bytes` once: alpha + bytes / rate.
    pub fn send_us(&self, bytes: f64) -> f64 {
        if let Some(t) = self.measured_at("sendrecv", 2, bytes) {
            return t;
        }
        self.alpha_us + bytes / (self.gbs * 1e3)
    }

    /// Microseconds for a ring all-reduce of `bytes` over `ranks`:
    /// 2(n-1) x alpha + 2(n-1)/n x bytes / rate (the nccl-tests bus-bandwidth factor).
    pub fn all_reduce_us(&self, bytes: f64, ranks: u64) -> f64 {
        if ranks <= 1 {
            return 0.0;
        }
        if let Some(t) = self.measured_at("all_reduce", ranks, bytes) {
            return t;
        }
        let n = ranks as f64;
        2.0 * (n - 1.0) * self.alpha_us + 2.0 * (n - 1.0) / n * bytes / (self.gbs * 1e3)
    }

    /// The measured time for `op` at `bytes` over `ranks`, when this link was measured so.
    fn measured_at(&self, op: &str, ranks: u64, bytes: f64) -> Option<f64> {
        let m = self.measured.as_ref()?;
        let same = m.op == op && (m.world == ranks || op == "sendrecv");
        same.then(|| m.at(bytes)).flatten()
    }

    /// Fits a link to a tool's `--json` record (`name` labels it in the report). The
    /// record's envelope says what it is; a part the record did not measure is assumed,
    /// and the source text says so with the value used.
    pub fn from_json(name: &str, text: &str) -> Result<Self, ModelError> {
        let bad = |why: &str| ModelError::Invalid(format!("{name}: {why}"));
        let record = Record::from_json(text).map_err(|e| bad(&format!("{e}; {LINK_FILES}")))?;
        let rate_only = |gbps: f64, what: &str, latency_us: Option<f64>| {
            if !(gbps > 0.0 && gbps.is_finite()) {
                return Err(bad(&format!("{what} measured no throughput; {LINK_FILES}")));
            }
            let (alpha_us, latency_text) = match latency_us.filter(|us| *us > 0.0) {
                Some(us) => (us, format!("{us:.1} us one way measured")),
                None => (
                    ASSUMED_LATENCY_US,
                    format!("{ASSUMED_LATENCY_US:.0} us one way assumed (it measured no idle latency: pass a linkbench compare or netcheck --peer --json for one)"),
                ),
            };
            Ok(LinkModel {
                name: name.to_string(),
                alpha_us,
                gbs: gbps / 8.0,
                source: format!("measured: {what}, {gbps:.2} Gbit/s; {latency_text}"),
                measured: None,
            })
        };
        match record {
            Record::CollectiveSweep(sweep) => {
                let op = sweep.op.as_str();
                let world = sweep.world;
                let mut points: Vec<(f64, f64)> = sweep
                    .rows
                    .iter()
                    .filter_map(|r| {
                        // TP all-reduces run in place: prefer the in-place time.
                        let time = if r.in_place.time_us > 0.0 {
                            r.in_place.time_us
                        } else {
                            r.time_us
                        };
                        (time > 0.0).then_some((r.bytes as f64, time))
                    })
                    .collect();
                points.sort_by(|x, y| x.0.total_cmp(&y.0));
                let (a, b) = fit_line(&points)
                    .ok_or_else(|| bad("needs at least two rows of different sizes with times to fit a line; run a size sweep (-b 4K -e 4M)"))?;
                let (alpha_us, gbs) = match op {
                    "all_reduce" if world >= 2 => {
                        let n = world as f64;
                        (a / (2.0 * (n - 1.0)), 2.0 * (n - 1.0) / (n * b * 1e3))
                    }
                    "sendrecv" => (a, 1.0 / (b * 1e3)),
                    _ => {
                        return Err(bad(&format!(
                            "a collbench '{op}' run over {world} rank(s) cannot price a link; run collbench --op all_reduce (2+ ranks) or --op sendrecv"
                        )))
                    }
                };
                Ok(LinkModel {
                    name: name.to_string(),
                    alpha_us,
                    gbs,
                    source: format!(
                        "measured: collbench {op} over {world} ranks, {} sizes",
                        points.len()
                    ),
                    measured: Some(Measured {
                        op: op.to_string(),
                        world,
                        points,
                    }),
                })
            }
            // linkbench lat -a: a one-way time (round trip / 2) per message size, which
            // prices single sends exactly as a sendrecv sweep does, without the other
            // direction's traffic on the link.
            Record::LinkLat(lat) => {
                let mut points: Vec<(f64, f64)> = lat
                    .sweep
                    .iter()
                    .filter(|p| p.latency_us.p50 > 0.0)
                    .map(|p| (p.msg_size as f64, p.latency_us.p50))
                    .collect();
                if lat.sweep.is_empty() {
                    return Err(bad("a one-size linkbench lat file has a latency but no rate; run linkbench lat -a (a size sweep gives both) or linkbench compare"));
                }
                points.sort_by(|x, y| x.0.total_cmp(&y.0));
                let (a, b) = fit_line(&points).ok_or_else(|| {
                    bad("a linkbench lat sweep needs at least two sizes with times")
                })?;
                Ok(LinkModel {
                    name: name.to_string(),
                    alpha_us: a,
                    gbs: 1.0 / (b * 1e3),
                    source: format!(
                        "measured: linkbench lat -a, {} sizes (one way = round trip / 2, p50)",
                        points.len()
                    ),
                    measured: Some(Measured {
                        op: "sendrecv".into(),
                        world: 2,
                        points,
                    }),
                })
            }
            // Only an idle ping-pong is a latency: a bw file's RTT is taken under load
            // (61 us against 4 us idle on one veth).
            Record::LinkBw(bw) => rate_only(bw.best_gbps().unwrap_or(0.0), "linkbench bw", None),
            Record::LinkCompare(compare) => rate_only(
                compare.tcp.throughput_gbps,
                "linkbench compare",
                Some(compare.tcp.latency_us.p50),
            ),
            Record::KvBench(kv) => rate_only(kv.throughput_gbps, "kvxfer bench", None),
            // Both directions were measured: the slower one is what a ring or a PP
            // hand-over in either direction gets.
            Record::NetcheckPair(pair) => {
                let m = &pair.pair.measured;
                let gbps = match (m.bw_a_to_b_gbps, m.bw_b_to_a_gbps) {
                    (Some(x), Some(y)) => x.min(y),
                    (x, y) => x.or(y).unwrap_or(0.0),
                };
                rate_only(gbps, "netcheck pair", m.latency_p50_us)
            }
            other => Err(bad(&format!(
                "{} output has no link figures; {LINK_FILES}",
                other.written_by()
            ))),
        }
    }
}

/// The records a link can be read from, for the errors that refuse the others.
const LINK_FILES: &str = "pass the --json output of linkbench bw, lat -a or compare, collbench (all_reduce or sendrecv), kvxfer bench, or netcheck --peer";

/// The one-way latency assumed for a link file that measured none.
const ASSUMED_LATENCY_US: f64 = 25.0;

/// Least squares on relative error (weights 1/t^2) of t = a + b x; None if underdetermined.
/// a is kept >= 0 (a line through the origin when the free fit goes negative).
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, t) in points {
        let w = 1.0 / (t * t);
        sw += w;
        sx += w * x;
        sy += w * t;
        sxx += w * x * x;
        sxy += w * x * t;
    }
    let det = sw * sxx - sx * sx;
    if points.len() < 2 || det.abs() <= f64::EPSILON * sw * sxx {
        return None;
    }
    let b = (sw * sxy - sx * sy) / det;
    let a = (sy - b * sx) / sw;
    if a < 0.0 {
        let b = sxy / sxx;
        return (b > 0.0).then_some((0.0, b));
    }
    (b > 0.0).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A tool's record as it prints it: the envelope, then `body`.
    fn record(tool: &str, test: &str, body: Value) -> String {
        measure::record::document(tool, test, &body)
            .unwrap()
            .to_string()
    }

    fn latency(p50: f64) -> Value {
        json!({"min": p50, "mean": p50, "p50": p50, "p90": p50, "p99": p50, "p999": p50,
               "max": p50, "stdev": 0.0, "samples": 100})
    }

    fn collbench(op: &str, world: u64, rows: &[(f64, f64)]) -> String {
        let rows: Vec<Value> = rows
            .iter()
            .map(|&(bytes, us)| {
                json!({"bytes": bytes as u64, "count": bytes as u64 / 4, "dtype": "fp32",
                       "redop": "sum", "root": -1, "time_us": us, "algbw_gbs": 0.0,
                       "busbw_gbs": 0.0, "wrong": 0, "p50_us": us, "p99_us": us,
                       "in_place": {"time_us": us, "algbw_gbs": 0.0, "busbw_gbs": 0.0, "wrong": 0}})
            })
            .collect();
        record(
            "collbench",
            "sweep",
            json!({"op": op, "backend": "tcp", "world": world, "dtype": "fp32", "redop": "sum",
                   "rows": rows, "avg_busbw_gbs": 1.0, "wrong": 0}),
        )
    }

    fn linkbench_bw(gbps: f64) -> String {
        record(
            "linkbench",
            "bw",
            json!({"peer": "h:5201", "transport": "tcp", "streams": 1, "msg_size": 1048576,
                   "seconds": 1.0, "bytes": 1, "throughput_gbps": gbps, "rtt_us": 61.0}),
        )
    }

    #[test]
    fn latency_comes_from_an_idle_ping_pong_or_is_labelled_assumed() {
        // A bw file: its RTT under load is not a latency.
        let link = LinkModel::from_json("bw.json", &linkbench_bw(20.0)).unwrap();
        assert_eq!(link.alpha_us, 25.0);
        assert!(
            link.source.contains("25 us one way assumed"),
            "{}",
            link.source
        );
        // A compare file: both measured.
        let compare = record(
            "linkbench",
            "compare",
            json!({"peer": "h:5201", "tcp": {"msg_size": 65536, "throughput_gbps": 20.0,
                   "lat_msg_size": 2, "latency_us": latency(4.2)}, "rdma": {"available": false, "reason": "no RDMA device"},
                   "ratio": {"throughput": null, "latency_p50": null}}),
        );
        let link = LinkModel::from_json("cmp.json", &compare).unwrap();
        assert_eq!(link.alpha_us, 4.2);
        assert_eq!(link.gbs, 2.5);
        assert!(
            link.source.contains("measured") && !link.source.contains("assumed"),
            "{}",
            link.source
        );
    }

    #[test]
    fn a_netcheck_pair_gives_the_slower_direction_and_its_idle_latency() {
        let pair = |latency: Value| {
            record(
                "netcheck",
                "pair",
                json!({"host": "a", "pair": {"a": {"host": "a"}, "b": {"host": "b"}, "measured": {
                    "bw_a_to_b_gbps": 9.0, "bw_b_to_a_gbps": 8.0, "latency_p50_us": latency}}}),
            )
        };
        let link = LinkModel::from_json("nc.json", &pair(json!(30.0))).unwrap();
        assert_eq!((link.gbs, link.alpha_us), (1.0, 30.0));
        assert!(!link.source.contains("assumed"), "{}", link.source);
        let link = LinkModel::from_json("nc.json", &pair(Value::Null)).unwrap();
        assert!(link.source.contains("assumed"), "{}", link.source);
    }

    #[test]
    fn a_file_that_is_not_a_link_record_is_refused_with_what_to_pass() {
        let error = LinkModel::from_json("x.json", r#"{"throughput_gbps": 9.2}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no \"tool\"") && error.contains("linkbench bw"),
            "{error}"
        );
        let plans = json!({"model": "m", "gpu": "g", "plans": [], "verdict": "v"});
        let error = LinkModel::from_json("x.json", &record("explain", "plans", plans))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("explain plans output has no link figures"),
            "{error}"
        );
    }

    #[test]
    fn a_linkbench_lat_sweep_alone_prices_sends_by_size() {
        // One way = round trip / 2 per size, from a 1 GB/s, 20 us link: the fit gives the
        // link back and each measured size is priced as measured.
        let truth = LinkModel::new("truth", 1.0, 20.0);
        let sweep: Vec<Value> = [8.0, 1024.0, 65536.0, 1048576.0]
            .iter()
            .map(|&b| json!({"transport": "tcp", "msg_size": b as u64, "latency_us": latency(truth.send_us(b))}))
            .collect();
        let doc = record(
            "linkbench",
            "lat",
            json!({"peer": "h", "one_way": "round trip / 2", "sweep": sweep}),
        );
        let link = LinkModel::from_json("lat.json", &doc).unwrap();
        assert!((link.alpha_us - 20.0).abs() < 1e-6, "{link:?}");
        assert!((link.gbs - 1.0).abs() < 1e-9, "{link:?}");
        assert!((link.send_us(65536.0) - truth.send_us(65536.0)).abs() < 1e-9);
        assert!(link.source.contains("linkbench lat"), "{}", link.source);
        // One size has no rate: refused with what to run instead.
        let one = record(
            "linkbench",
            "lat",
            json!({"peer": "h", "one_way": "round trip / 2", "transport": "tcp", "msg_size": 2,
                   "latency_us": latency(4.0)}),
        );
        let error = LinkModel::from_json("one.json", &one).unwrap_err();
        assert!(error.to_string().contains("lat -a"), "{error}");
    }

    #[test]
    fn ring_all_reduce_is_alpha_plus_bus_bytes_over_rate() {
        // 1 GB/s, 10 us per hop, 4 ranks, 1 MB: 6 x 10 us + 1.5 x 1e6 B / 1e3 B/us = 1560 us.
        let link = LinkModel::new("x", 1.0, 10.0);
        assert!((link.all_reduce_us(1e6, 4) - 1560.0).abs() < 1e-9);
        assert_eq!(link.all_reduce_us(1e6, 1), 0.0);
        assert!((link.send_us(1e6) - 1010.0).abs() < 1e-9);
    }

    #[test]
    fn fit_recovers_an_exact_line() {
        let points: Vec<(f64, f64)> = [1e3, 1e4, 1e5, 1e6]
            .iter()
            .map(|&x| (x, 50.0 + 0.002 * x))
            .collect();
        let (a, b) = fit_line(&points).unwrap();
        assert!(
            (a - 50.0).abs() < 1e-6 && (b - 0.002).abs() < 1e-12,
            "{a} {b}"
        );
    }

    #[test]
    fn collbench_all_reduce_json_round_trips_to_the_same_prices() {
        // Rows made from a 2 GB/s, 8 us link over 4 ranks: the fit gives the link back.
        let link = LinkModel::new("truth", 2.0, 8.0);
        let rows: Vec<(f64, f64)> = [4096.0, 65536.0, 1048576.0]
            .iter()
            .map(|&b| (b, link.all_reduce_us(b, 4)))
            .collect();
        let fitted = LinkModel::from_json("cb.json", &collbench("all_reduce", 4, &rows)).unwrap();
        assert!((fitted.alpha_us - 8.0).abs() < 1e-6, "{fitted:?}");
        assert!((fitted.gbs - 2.0).abs() < 1e-9, "{fitted:?}");
        assert!(fitted.source.starts_with("measured"));
        let error = LinkModel::from_json("b.json", &collbench("broadcast", 4, &rows))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot price a link"), "{error}");
    }

    #[test]
    fn sizes_inside_a_measured_sweep_are_priced_between_their_neighbours() {
        // A sweep with a cliff at 64K: 32K 400 us, 64K 1600 us. 48K lies on the line
        // between them (1000 us); the global fit would miss both.
        let doc = collbench(
            "all_reduce",
            4,
            &[
                (16384.0, 200.0),
                (32768.0, 400.0),
                (65536.0, 1600.0),
                (131072.0, 3200.0),
            ],
        );
        let link = LinkModel::from_json("cb.json", &doc).unwrap();
        assert!((link.all_reduce_us(49152.0, 4) - 1000.0).abs() < 1e-9);
        assert!((link.all_reduce_us(65536.0, 4) - 1600.0).abs() < 1e-9);
        // Another world size, or outside the range: the alpha-beta line.
        let n2 = link.all_reduce_us(65536.0, 2);
        assert!((n2 - (2.0 * link.alpha_us + 65536.0 / (link.gbs * 1e3))).abs() < 1e-9);
    }

    #[test]
    fn linkbench_json_gives_rate_and_latency() {
        let link = LinkModel::from_json("lb.json", &linkbench_bw(9.2)).unwrap();
        // The RTT under load is not the link's latency: assumed, and labelled so.
        assert!((link.gbs - 1.15).abs() < 1e-9 && link.alpha_us == 25.0);
        assert!(link.source.contains("assumed"), "{}", link.source);
        // A bw record without its figures is refused, naming the tool and what to pass.
        let error =
            LinkModel::from_json("x.json", &record("linkbench", "bw", json!({"peer": "h"})))
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("linkbench bw measured no throughput"),
            "{error}"
        );
    }

    #[test]
    fn kvxfer_bench_json_gives_the_kv_path_rate() {
        let bench = measure::record::KvBench {
            requests: 100,
            failed: 0,
            integrity_failures: 0,
            num_prompts: 100,
            bytes_per_request: 262_144_000,
            duration_s: 2.0,
            throughput_gbps: 12.4,
            throughput_gbyte_s: 1.55,
            request_rate: f64::INFINITY,
            request_throughput: 50.0,
            num_warmups: 0,
            latency_ms: measure::record::KvLatency {
                mean: 170.0,
                p50: 168.0,
                p90: 180.0,
                p99: 190.0,
            },
            checksums: true,
            verified: false,
            verify_gbyte_s: None,
            transport: "tcp (prefill streams)".into(),
            rails: 1,
            scheme: "pairwise".into(),
            decoders: vec![],
            concurrency: measure::record::KvConcurrency {
                requested: 1,
                effective: 1,
            },
            link_gbps: None,
            link_share: None,
            prefill_tp: 1,
            decode_tp: 1,
            decode_rank: 0,
            errors: vec![],
            stopped: None,
        };
        let doc = measure::record::document("kvxfer", "bench", &bench)
            .unwrap()
            .to_string();
        // "inf" reads back as an unbounded rate.
        let Ok(measure::record::Record::KvBench(back)) = measure::record::Record::from_json(&doc)
        else {
            panic!("not a kvxfer bench record: {doc}")
        };
        assert_eq!(back, bench);
        let link = LinkModel::from_json("kv.json", &doc).unwrap();
        assert!((link.gbs - 1.55).abs() < 1e-9, "{}", link.gbs);
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let error = LinkModel::named("tcp-400g", INTER_PROFILES, "inter-node link")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("tcp-25g") && error.contains("ib-ndr400"),
            "{error}"
        );
    }
}
