//! Real "nodes" on one machine for integration tests: network namespaces joined by veth
//! pairs, optionally rate-shaped with `tc tbf`. Everything is torn down on drop.
//! [`readme`] checks README's conventions table against the tools' `--help`.
//!
//! When `NODELINK_REQUIRE_NETNS=1` (set by `.ci/run`), a testbed that cannot be built is a
//! test failure; otherwise the test prints why and returns early.

pub mod outputs;
pub mod readme;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable CI sets to make namespace tests mandatory.
pub const REQUIRE_ENV: &str = "NODELINK_REQUIRE_NETNS";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, returning stderr on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A network namespace that exists until dropped, with `lo` up.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Result<Self, String> {
        let name = format!(
            "nl-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Drops inbound TCP to `port` in this namespace (a firewall), with nftables.
    pub fn drop_inbound_tcp(&self, port: u16) -> Result<(), String> {
        let port = port.to_string();
        for args in [
            &["add", "table", "inet", "nltest"][..],
            &[
                "add",
                "chain",
                "inet",
                "nltest",
                "input",
                "{ type filter hook input priority 0; }",
            ][..],
            &[
                "add", "rule", "inet", "nltest", "input", "tcp", "dport", &port, "drop",
            ][..],
        ] {
            let out = self.output("nft", args)?;
            if !out.status.success() {
                return Err(format!(
                    "nft {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(())
    }

    /// Gives this namespace its own /etc/hosts (`ip netns exec` bind-mounts
    /// /etc/netns/NAME/hosts over /etc/hosts), removed with the namespace.
    pub fn set_hosts(&self, text: &str) -> Result<(), String> {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {dir}: {e}"))?;
        std::fs::write(format!("{dir}/hosts"), text)
            .map_err(|e| format!("writing {dir}/hosts: {e}"))
    }

    /// Like [`command`](Self::command), with its own hostname (a UTS namespace): nodes
    /// that resolve each other by name, as real ones do.
    pub fn command_as(&self, hostname: &str, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        let script = r#"hostname "$0" && exec "$@""#;
        command
            .args([
                "netns", "exec", &self.name, "unshare", "--uts", "sh", "-c", script, hostname,
                program,
            ])
            .args(args);
        command
    }

    /// A command that runs inside this namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `tc ARGS` inside the namespace.
    pub fn tc(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["netns", "exec", self.name.as_str(), "tc"];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Binds a TCP listener inside the namespace (from a thread that enters it, so the
    /// calling thread stays where it is). The socket keeps its namespace after the thread ends.
    pub fn bind_tcp(&self, addr: &str) -> Result<std::net::TcpListener, String> {
        let path = format!("/var/run/netns/{}", self.name);
        let addr = addr.to_string();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {path}: {e}"))?;
            std::net::TcpListener::bind(&addr).map_err(|e| format!("bind {addr}: {e}"))
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    }

    /// Bytes `iface` has sent, from the namespace's own sysfs view.
    pub fn tx_bytes(&self, iface: &str) -> u64 {
        let path = format!("/sys/class/net/{iface}/statistics/tx_bytes");
        self.output("cat", &[&path])
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    /// Waits until `iface` has sent `bytes` (traffic is flowing), panicking after `limit`:
    /// fault tests kill a peer mid-transfer, not during a slow start.
    pub fn wait_for_tx(&self, iface: &str, bytes: u64, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.tx_bytes(iface) < bytes {
            assert!(
                std::time::Instant::now() < deadline,
                "{iface} in {} sent under {bytes} bytes within {limit:?}",
                self.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn output(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        self.command(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Two namespaces joined by one veth pair: `a` holds `IFACE`=10.77.0.1/24, `b` 10.77.0.2/24.
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub const IFACE: &'static str = "nl0";
    pub const ADDR_A: &'static str = "10.77.0.1";
    pub const ADDR_B: &'static str = "10.77.0.2";

    pub fn new() -> Result<Self, String> {
        let a = Netns::new()?;
        let b = Netns::new()?;
        ip(&[
            "link",
            "add",
            Self::IFACE,
            "netns",
            &a.name,
            "type",
            "veth",
            "peer",
            "name",
            Self::IFACE,
            "netns",
            &b.name,
        ])?;
        for (ns, addr) in [(&a, Self::ADDR_A), (&b, Self::ADDR_B)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", Self::IFACE])?;
            ns.ip(&["link", "set", Self::IFACE, "up"])?;
        }
        Ok(Pair { a, b })
    }

    /// A second (third, ...) link between the two namespaces: a rail, as on a node with
    /// one NIC per GPU. Rail `n` (1..) is `nl{n}` with 10.77.{n}.1/24 in `a` and .2 in
    /// `b`, its own subnet, so the destination address picks the rail. Returns the
    /// interface name and the two addresses.
    pub fn add_rail(&self, n: u8) -> Result<(String, String, String), String> {
        let iface = format!("nl{n}");
        ip(&[
            "link",
            "add",
            &iface,
            "netns",
            &self.a.name,
            "type",
            "veth",
            "peer",
            "name",
            &iface,
            "netns",
            &self.b.name,
        ])?;
        let (addr_a, addr_b) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
        for (ns, addr) in [(&self.a, &addr_a), (&self.b, &addr_b)] {
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &iface])?;
            ns.ip(&["link", "set", &iface, "up"])?;
        }
        Ok((iface, addr_a, addr_b))
    }

    /// Shapes the egress of `ns`'s end of the link with a token bucket (e.g. "1gbit").
    pub fn shape(ns: &Netns, rate: &str) -> Result<(), String> {
        Self::shape_dev(ns, Self::IFACE, rate)
    }

    /// Shapes the egress of `dev` in `ns` (a rail's end, say).
    pub fn shape_dev(ns: &Netns, dev: &str, rate: &str) -> Result<(), String> {
        ns.tc(&[
            "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "256kb",
            "latency", "50ms",
        ])
    }

    /// Shapes both directions to the same rate.
    pub fn shape_both(&self, rate: &str) -> Result<(), String> {
        Self::shape(&self.a, rate)?;
        Self::shape(&self.b, rate)
    }
}

/// N namespaces ("nodes"), each with `nl0` = 10.78.0.(i+1)/24, joined through a bridge
/// in a hub namespace: a switch with one port per node.
#[derive(Debug)]
pub struct Star {
    pub nodes: Vec<Netns>,
    pub hub: Netns,
}

impl Star {
    pub const IFACE: &'static str = "nl0";

    pub fn new(count: usize) -> Result<Self, String> {
        let hub = Netns::new()?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        let mut nodes = Vec::new();
        for index in 0..count {
            let node = Netns::new()?;
            let port = format!("p{index}");
            ip(&[
                "link",
                "add",
                Self::IFACE,
                "netns",
                &node.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &hub.name,
            ])?;
            hub.ip(&["link", "set", &port, "master", "br0"])?;
            hub.ip(&["link", "set", &port, "up"])?;
            node.ip(&[
                "addr",
                "add",
                &format!("{}/24", Self::addr(index)),
                "dev",
                Self::IFACE,
            ])?;
            node.ip(&["link", "set", Self::IFACE, "up"])?;
            nodes.push(node);
        }
        Ok(Star { nodes, hub })
    }

    pub fn addr(index: usize) -> String {
        format!("10.78.0.{}", index + 1)
    }

    /// Shapes every node's link to `rate` in both directions (node egress and switch port
    /// egress), like a NIC of that speed.
    pub fn shape(&self, rate: &str) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            self.shape_node(index, rate)?;
        }
        Ok(())
    }

    /// Shapes one node's link to `rate` both ways (a slower NIC on that node).
    pub fn shape_node(&self, index: usize, rate: &str) -> Result<(), String> {
        for (ns, dev) in [
            (&self.nodes[index], Self::IFACE.to_string()),
            (&self.hub, format!("p{index}")),
        ] {
            ns.tc(&[
                "qdisc", "replace", "dev", &dev, "root", "tbf", "rate", rate, "burst", "256kb",
                "latency", "50ms",
            ])?;
        }
        Ok(())
    }
}

/// Builds a testbed, or decides what a test does when it cannot: fail under CI
/// (`NODELINK_REQUIRE_NETNS=1`), otherwise print why and skip (None).
pub fn build_or_skip<T>(build: impl FnOnce() -> Result<T, String>) -> Option<T> {
    match build() {
        Ok(testbed) => Some(testbed),
        Err(why) if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => {
            panic!("{REQUIRE_ENV}=1 but the namespace testbed cannot be built: {why}")
        }
        Err(why) => {
            eprintln!("skipping: namespace testbed unavailable ({why}); set {REQUIRE_ENV}=1 to make this a failure");
            None
        }
    }
}

/// Result records as the tools print them (the envelope, then the typed body), for tests
/// that feed a reader a measurement without running the tool.
pub mod records {
    use measure::record::{
        document, CollectiveRow, CollectiveSweep, CollectiveTiming, LatPoint, LinkLat,
    };
    use measure::{Dtype, LatencySummary, RedOp};

    /// `collbench --op OP --json` over `world` ranks with these (bytes, microseconds) rows.
    pub fn collbench_sweep(op: &str, world: u64, rows: &[(f64, f64)]) -> String {
        let rows = rows
            .iter()
            .map(|&(bytes, time_us)| CollectiveRow {
                bytes: bytes as u64,
                count: bytes as u64 / 4,
                dtype: Dtype::Fp32,
                redop: Some(RedOp::Sum),
                root: -1,
                time_us,
                algbw_gbs: 0.0,
                busbw_gbs: 0.0,
                wrong: 0,
                in_place: CollectiveTiming {
                    time_us,
                    ..CollectiveTiming::default()
                },
                p50_us: time_us,
                p99_us: time_us,
            })
            .collect();
        let sweep = CollectiveSweep {
            op: op.into(),
            backend: "tcp".into(),
            world,
            dtype: Dtype::Fp32,
            redop: Some(RedOp::Sum),
            rows,
            avg_busbw_gbs: 0.0,
            wrong: 0,
        };
        document("collbench", "sweep", &sweep).unwrap().to_string()
    }

    /// `linkbench lat -a --json` with these (bytes, one-way p50 microseconds) points.
    pub fn linkbench_lat_sweep(points: &[(f64, f64)]) -> String {
        let sweep = points
            .iter()
            .map(|&(bytes, p50)| LatPoint {
                transport: "tcp".into(),
                msg_size: bytes as u64,
                latency_us: LatencySummary {
                    min: p50,
                    mean: p50,
                    p50,
                    p90: p50,
                    p99: p50,
                    p999: p50,
                    max: p50,
                    stdev: 0.0,
                    samples: 1000,
                },
            })
            .collect();
        let lat = LinkLat {
            peer: "peer:5201".into(),
            one_way: "round trip / 2".into(),
            one: None,
            sweep,
        };
        document("linkbench", "lat", &lat).unwrap().to_string()
    }
}

/// A tool's stdout as one JSON document; panics with stdout and stderr when it is not.
pub fn json_of(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}) (exit {:?}):\n{stdout}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A tool's stderr as text.
pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
