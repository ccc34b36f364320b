//! Link prices for the cost model: an alpha-beta line (a fixed latency per hop plus bytes
//! over a rate), from a named profile or fitted to a measurement (collbench, linkbench or
//! kvxfer `--json`). A measurement always wins over a profile.

use crate::ModelError;
use serde_json::Value;

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

    /// Fits a link to a tool's `--json` document (`name` labels it in the report).
    pub fn from_json(name: &str, text: &str) -> Result<Self, ModelError> {
        let bad = |why: &str| ModelError::Invalid(format!("{name}: {why}"));
        let doc: Value = serde_json::from_str(text).map_err(|e| {
            bad(&format!(
                "not a JSON document ({e}); pass the output of collbench/linkbench/kvxfer --json"
            ))
        })?;
        if let Some(rows) = doc.get("rows").and_then(Value::as_array) {
            let op = doc.get("op").and_then(Value::as_str).unwrap_or("");
            let world = doc.get("world").and_then(Value::as_u64).unwrap_or(0);
            let mut points: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    let bytes = r.get("bytes")?.as_f64()?;
                    // TP all-reduces run in place: prefer the in-place time.
                    let time = r
                        .get("in_place")
                        .and_then(|p| p.get("time_us"))
                        .and_then(Value::as_f64)
                        .or_else(|| r.get("time_us").and_then(Value::as_f64))?;
                    (time > 0.0).then_some((bytes, time))
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
            return Ok(LinkModel {
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
            });
        }
        // linkbench lat -a: a one-way time (round trip / 2) per message size, which prices
        // single sends exactly as a sendrecv sweep does, without the other direction's
        // traffic on the link.
        if let Some(sweep) = doc.get("sweep").and_then(Value::as_array) {
            let mut points: Vec<(f64, f64)> = sweep
                .iter()
                .filter_map(|r| {
                    let bytes = r.get("msg_size")?.as_f64()?;
                    let us = r.get("latency_us")?.get("p50")?.as_f64()?;
                    (us > 0.0).then_some((bytes, us))
                })
                .collect();
            if !points.is_empty() {
                points.sort_by(|x, y| x.0.total_cmp(&y.0));
                let (a, b) = fit_line(&points).ok_or_else(|| {
                    bad("a linkbench lat sweep needs at least two sizes with times")
                })?;
                return Ok(LinkModel {
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
                });
            }
        }
        if doc.get("throughput_gbps").is_none() && doc.get("latency_us").is_some() {
            return Err(bad("a one-size linkbench lat file has a latency but no rate; run linkbench lat -a (a size sweep gives both) or linkbench compare"));
        }
        // linkbench compare: its TCP half carries both a bandwidth and an idle latency.
        let doc = match doc
            .get("tcp")
            .filter(|t| t.get("throughput_gbps").is_some())
        {
            Some(tcp) => tcp.clone(),
            None => doc,
        };
        // linkbench bw (one size or a sweep), kvxfer: throughput_gbps in Gbit/s.
        let mut gbps = doc.get("throughput_gbps").and_then(Value::as_f64);
        if let Some(sweep) = doc.get("sweep").and_then(Value::as_array) {
            gbps = sweep
                .iter()
                .filter_map(|r| r.get("throughput_gbps").and_then(Value::as_f64))
                .fold(gbps, |best, x| Some(best.map_or(x, |b: f64| b.max(x))));
        }
        let gbps = gbps.filter(|g| *g > 0.0).ok_or_else(|| {
            bad("holds no throughput (throughput_gbps) or collective rows (rows); pass linkbench bw --json or collbench --json")
        })?;
        // Only an idle ping-pong is a latency: a bw file's RTT is taken under load
        // (61 us against 4 us idle on one veth), so without one the latency is assumed,
        // and the report says so.
        let measured_latency = doc
            .get("latency_us")
            .and_then(|l| l.get("p50").and_then(Value::as_f64).or(l.as_f64()));
        let (latency, latency_text) = match measured_latency {
            Some(us) => (us, format!("{us:.1} us one way measured")),
            None => (
                ASSUMED_LATENCY_US,
                format!("{ASSUMED_LATENCY_US:.0} us one way assumed (pass a linkbench compare --json for a measured one)"),
            ),
        };
        Ok(LinkModel {
            name: name.to_string(),
            alpha_us: latency,
            gbs: gbps / 8.0,
            source: format!("measured: {gbps:.2} Gbit/s; {latency_text}"),
            measured: None,
        })
    }
}

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

    #[test]
    fn latency_comes_from_an_idle_ping_pong_or_is_labelled_assumed() {
        // A bw file: its RTT under load is not a latency.
        let bw = serde_json::json!({"throughput_gbps": 20.0, "rtt_us": 61.0});
        let link = LinkModel::from_json("bw.json", &bw.to_string()).unwrap();
        assert_eq!(link.alpha_us, 25.0);
        assert!(link.source.contains("assumed"), "{}", link.source);
        // A compare file: both measured.
        let compare = serde_json::json!({"tcp": {"throughput_gbps": 20.0, "latency_us": {"p50": 4.2}}, "rdma": {"available": false}});
        let link = LinkModel::from_json("cmp.json", &compare.to_string()).unwrap();
        assert_eq!(link.alpha_us, 4.2);
        assert_eq!(link.gbs, 2.5);
        assert!(
            link.source.contains("measured") && !link.source.contains("assumed"),
            "{}",
            link.source
        );
    }

    #[test]
    fn a_linkbench_lat_sweep_alone_prices_sends_by_size() {
        // One way = round trip / 2 per size, from a 1 GB/s, 20 us link: the fit gives the
        // link back and each measured size is priced as measured.
        let truth = LinkModel::new("truth", 1.0, 20.0);
        let sweep: Vec<Value> = [8.0, 1024.0, 65536.0, 1048576.0]
            .iter()
            .map(|&b| serde_json::json!({"msg_size": b, "latency_us": {"p50": truth.send_us(b), "mean": 1e6}}))
            .collect();
        let doc = serde_json::json!({"one_way": "round trip / 2", "sweep": sweep});
        let link = LinkModel::from_json("lat.json", &doc.to_string()).unwrap();
        assert!((link.alpha_us - 20.0).abs() < 1e-6, "{link:?}");
        assert!((link.gbs - 1.0).abs() < 1e-9, "{link:?}");
        assert!((link.send_us(65536.0) - truth.send_us(65536.0)).abs() < 1e-9);
        assert!(link.source.contains("linkbench lat"), "{}", link.source);
        // One size has no rate: refused with what to run instead.
        let one = serde_json::json!({"msg_size": 2, "latency_us": {"p50": 4.0}});
        let error = LinkModel::from_json("one.json", &one.to_string()).unwrap_err();
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
        let rows: Vec<Value> = [4096.0, 65536.0, 1048576.0]
            .iter()
            .map(|&b| serde_json::json!({"bytes": b, "time_us": link.all_reduce_us(b, 4)}))
            .collect();
        let doc = serde_json::json!({"op": "all_reduce", "world": 4, "rows": rows});
        let fitted = LinkModel::from_json("cb.json", &doc.to_string()).unwrap();
        assert!((fitted.alpha_us - 8.0).abs() < 1e-6, "{fitted:?}");
        assert!((fitted.gbs - 2.0).abs() < 1e-9, "{fitted:?}");
        assert!(fitted.source.starts_with("measured"));
    }

    #[test]
    fn sizes_inside_a_measured_sweep_are_priced_between_their_neighbours() {
        // A sweep with a cliff at 64K: 32K 400 us, 64K 1600 us. 48K lies on the line
        // between them (1000 us); the global fit would miss both.
        let doc = serde_json::json!({"op": "all_reduce", "world": 4, "rows": [
            {"bytes": 16384, "time_us": 200.0}, {"bytes": 32768, "time_us": 400.0},
            {"bytes": 65536, "time_us": 1600.0}, {"bytes": 131072, "time_us": 3200.0}]});
        let link = LinkModel::from_json("cb.json", &doc.to_string()).unwrap();
        assert!((link.all_reduce_us(49152.0, 4) - 1000.0).abs() < 1e-9);
        assert!((link.all_reduce_us(65536.0, 4) - 1600.0).abs() < 1e-9);
        // Another world size, or outside the range: the alpha-beta line.
        let n2 = link.all_reduce_us(65536.0, 2);
        assert!((n2 - (2.0 * link.alpha_us + 65536.0 / (link.gbs * 1e3))).abs() < 1e-9);
    }

    #[test]
    fn linkbench_json_gives_rate_and_latency() {
        let bw = r#"{"tool":"linkbench","test":"bw","throughput_gbps":9.2,"rtt_us":40.0}"#;
        let link = LinkModel::from_json("lb.json", bw).unwrap();
        // The RTT under load is not the link's latency: assumed, and labelled so.
        assert!((link.gbs - 1.15).abs() < 1e-9 && link.alpha_us == 25.0);
        assert!(link.source.contains("assumed"), "{}", link.source);
        let error = LinkModel::from_json("x.json", r#"{"tool":"linkbench","test":"lat"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("linkbench bw --json"), "{error}");
    }

    #[test]
    fn kvxfer_bench_json_gives_the_kv_path_rate() {
        let doc = r#"{"requests":100,"failed":0,"bytes_per_request":262144000,
            "throughput_gbps":12.4,"latency_ms":{"mean":170.0,"p50":168.0,"p99":190.0},"verified":false}"#;
        let link = LinkModel::from_json("kv.json", doc).unwrap();
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
