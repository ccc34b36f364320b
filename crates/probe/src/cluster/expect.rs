//! `--expect FILE.toml`: the figures a cluster must reach (configs/expect/*.toml), and the
//! OK/FAILED verdict on each measured one, as nccl-tests does with NCCL_TESTS_MIN_BW.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub link: LinkExpect,
    #[serde(default)]
    pub node: NodeExpect,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkExpect {
    /// One TCP stream, each direction, Gbit/s.
    pub tcp_min_gbps: Option<f64>,
    /// RDMA WRITE, Gbit/s (where both nodes have RDMA).
    pub rdma_min_gbps: Option<f64>,
    /// One-way latency p50, microseconds.
    pub max_latency_us: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeExpect {
    pub mtu: Option<u32>,
    pub gpus: Option<usize>,
}

/// Why an expectations file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ExpectError {
    pub path: String,
    pub reason: String,
}

impl Expect {
    pub fn parse(path: &str, text: &str) -> Result<Expect, ExpectError> {
        let expect: Expect = toml::from_str(text).map_err(|e| ExpectError {
            path: path.to_string(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        for (name, value) in [
            ("link.tcp_min_gbps", expect.link.tcp_min_gbps),
            ("link.rdma_min_gbps", expect.link.rdma_min_gbps),
            ("link.max_latency_us", expect.link.max_latency_us),
        ] {
            if value.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                return Err(ExpectError {
                    path: path.to_string(),
                    reason: format!("{name} must be a positive number"),
                });
            }
        }
        Ok(expect)
    }
}

/// One measured figure against its expectation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// "tcp 0 -> 1", "latency 0 <-> 1", "mtu rank 2", "gpus rank 3".
    pub what: String,
    pub measured: f64,
    pub expected: String,
    pub ok: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_parse_and_typos_are_refused() {
        for file in ["tcp-25g", "roce-100g", "ib-ndr400"] {
            let path = format!(
                "{}/../../configs/expect/{file}.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = Expect::parse(&path, &text).unwrap();
            assert!(expect.link.tcp_min_gbps.is_some(), "{file}");
        }
        let e = Expect::parse("x.toml", "[link]\ntcp_min_gbp = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("tcp_min_gbp"), "{e}");
        let e = Expect::parse("x.toml", "[link]\ntcp_min_gbps = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "{e}");
    }
}
