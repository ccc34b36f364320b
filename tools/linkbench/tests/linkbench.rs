//! Runs the real linkbench binary: on loopback (no root needed) for the protocol, the JSON
//! shape, sweeps and failure handling; in network namespaces joined by a tbf-shaped veth
//! for the proof that it measures the shaped rate in every direction.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testbed::{build_or_skip, Netns, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_linkbench");

/// Tests that move data take turns, so one test's traffic cannot skew another's figures.
static TRAFFIC: Mutex<()> = Mutex::new(());

fn traffic() -> std::sync::MutexGuard<'static, ()> {
    TRAFFIC
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running `linkbench serve`, killed on drop; its stderr is collected.
struct Served {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Served {
    fn start(ns: Option<&Netns>, bind: &str, extra: &[&str], env: &[(&str, &str)]) -> Served {
        let port = if ns.is_some() {
            18515
        } else {
            // A free port on loopback: ask the kernel, then hand it over.
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let mut command = match ns {
            Some(ns) => ns.command(BIN),
            None => Command::new(BIN),
        };
        command
            .args(["serve", "--bind", bind, "--port", &port.to_string()])
            .args(extra)
            .env_remove("NODELINK_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start linkbench serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[serve] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(_) => panic!("linkbench serve did not start: {:?}", child.try_wait()),
            }
        }
        Served {
            child,
            addr: format!("{bind}:{port}"),
            log: rx,
        }
    }

    /// Waits for the server to exit by itself (with --once).
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_contains(&self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains(text) {
                return true;
            }
        }
        false
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(ns: Option<&Netns>, args: &[&str]) -> Command {
    let mut command = match ns {
        Some(ns) => ns.command(BIN),
        None => Command::new(BIN),
    };
    command.args(args).env_remove("NODELINK_TOKEN");
    command
}

fn run(ns: Option<&Netns>, args: &[&str]) -> Output {
    client(ns, args).output().expect("run linkbench")
}

/// The JSON of a run that must have succeeded.
fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "linkbench failed: {:?}\nstderr: {}",
        output.status,
        stderr_of(output)
    );
    testbed::json_of(output)
}

use testbed::stderr_of;

fn assert_bw_shape(document: &Value) {
    for key in [
        "transport",
        "streams",
        "seconds",
        "bytes",
        "throughput_gbps",
        "per_stream",
        "cpu",
        "retransmits",
    ] {
        assert!(!document[key].is_null(), "{key} missing in {document}");
    }
    assert_eq!(document["transport"], "tcp");
    assert_eq!(document["tool"], "linkbench");
    for side in ["local", "remote"] {
        assert!(document["cpu"][side]["total_pct"].as_f64().unwrap() >= 0.0);
    }
}

fn assert_latency_sane(latency: &Value) {
    let get = |key: &str| {
        latency[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {latency}"))
    };
    let (min, p50, p90, p99, p999, max) = (
        get("min"),
        get("p50"),
        get("p90"),
        get("p99"),
        get("p999"),
        get("max"),
    );
    assert!(get("mean") > 0.0);
    assert!(
        0.0 < min && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{latency}"
    );
}

// ---------------------------------------------------------------- flags

#[test]
fn bad_flags_exit_64_naming_the_flags() {
    for (args, needle) in [
        (
            &["bw", "--peer", "127.0.0.1", "--reverse", "--bidir"][..],
            "--bidir",
        ),
        (
            &["lat", "--peer", "127.0.0.1", "-n", "5", "-t", "1s"][..],
            "-t/--time",
        ),
        (
            &["bw", "--peer", "127.0.0.1", "--plot", "x.svg"][..],
            "--all-sizes",
        ),
        (
            &["lat", "--peer", "127.0.0.1", "-a", "--size", "64"][..],
            "--size",
        ),
        (&["bw", "--peer", "127.0.0.1", "-P", "0"][..], "-P"),
        (&["bw", "--peer", "127.0.0.1", "--size", "4Q"][..], "4Q"),
        (&["bw", "--peer", "host:port"][..], "--peer"),
        (&["bw", "--peer", "127.0.0.1", "--qps", "2"][..], "--qps"),
        (
            &["bw", "--peer", "127.0.0.1", "--transport", "rdma", "-N"][..],
            "-N/--no-delay",
        ),
        (
            &[
                "bw",
                "--peer",
                "127.0.0.1",
                "--transport",
                "rdma",
                "--working-set",
                "8M",
            ][..],
            "--working-set",
        ),
        (
            &[
                "bw",
                "--peer",
                "127.0.0.1",
                "-P",
                "2",
                "--working-set",
                "256M",
            ][..],
            "--working-set",
        ),
        (
            &["bw", "--peer", "127.0.0.1", "--working-set", "0"][..],
            "--working-set",
        ),
        (
            &[
                "bw",
                "--peer",
                "127.0.0.1",
                "--transport",
                "rdma",
                "-P",
                "2",
            ][..],
            "-P/--parallel",
        ),
        (
            &[
                "lat",
                "--peer",
                "127.0.0.1",
                "--transport",
                "rdma",
                "--qps",
                "2",
            ][..],
            "--qps",
        ),
        (
            &[
                "bw",
                "--peer",
                "127.0.0.1",
                "--transport",
                "rdma",
                "-t",
                "1s",
            ][..],
            "-t/--time",
        ),
        (
            &["bw", "--peer", "127.0.0.1", "-i", "10ms"][..],
            "-i/--interval",
        ),
        (
            &["bw", "--peer", "127.0.0.1", "-a", "-i", "1s"][..],
            "-i/--interval",
        ),
        (
            &[
                "bw",
                "--peer",
                "127.0.0.1",
                "--transport",
                "rdma",
                "-O",
                "1s",
            ][..],
            "-O/--omit",
        ),
        (&["bw"][..], "--peer"),
        (&["bogus"][..], "bogus"),
    ] {
        let output = run(None, args);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            stderr_of(&output).contains(needle),
            "{args:?}: {}",
            stderr_of(&output)
        );
    }
}

// ---------------------------------------------------------------- RDMA on this host

/// The sentence this host must produce, or None when it really has RDMA (the Soft-RoCE VM
/// test covers that case: scripts/rdma-vm-test).
fn expected_rdma_failure() -> Option<&'static str> {
    if std::path::Path::new("/sys/class/infiniband_verbs").exists() {
        return None;
    }
    Some(if fabric::rdma::avail::library_present() {
        "kernel has no RDMA support (ENOSYS)"
    } else {
        "libibverbs not installed"
    })
}

#[test]
fn rdma_without_kernel_support_fails_fast_with_one_sentence() {
    let Some(expected) = expected_rdma_failure() else {
        eprintln!("skipped: this host has RDMA verbs");
        return;
    };
    for args in [
        &["bw", "--transport", "rdma", "--peer", "127.0.0.1"][..],
        &[
            "lat",
            "--transport",
            "rdma",
            "--peer",
            "127.0.0.1",
            "--op",
            "send",
        ][..],
        &[
            "bw",
            "--transport",
            "rdma",
            "--peer",
            "127.0.0.1",
            "--device",
            "rxe0",
            "-a",
        ][..],
    ] {
        let started = Instant::now();
        let output = run(None, args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took too long"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--transport tcp"),
            "the fix is named: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn compare_without_rdma_measures_tcp_and_says_why() {
    let Some(expected) = expected_rdma_failure() else {
        eprintln!("skipped: this host has RDMA verbs");
        return;
    };
    let _turn = traffic();
    let server = Served::start(None, "127.0.0.1", &[], &[]);
    let document = json_of(&run(
        None,
        &[
            "compare",
            "--peer",
            &server.addr,
            "-t",
            "300ms",
            "-n",
            "200",
            "--json",
        ],
    ));
    assert!(
        document["tcp"]["throughput_gbps"].as_f64().unwrap() > 0.0,
        "{document}"
    );
    assert!(
        document["tcp"]["latency_us"]["p50"].as_f64().unwrap() > 0.0,
        "{document}"
    );
    assert_eq!(document["rdma"]["available"], false, "{document}");
    let reason = document["rdma"]["reason"].as_str().unwrap();
    assert!(reason.contains(expected), "{reason}");
    assert!(document["ratio"]["throughput"].is_null(), "{document}");
    let table = run(
        None,
        &[
            "compare",
            "--peer",
            &server.addr,
            "-t",
            "300ms",
            "-n",
            "100",
        ],
    );
    assert!(table.status.success(), "{}", stderr_of(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("tcp") && text.contains(expected), "{text}");
}

// ---------------------------------------------------------------- loopback

#[test]
fn loopback_bandwidth_latency_sweeps_csv_and_plot() {
    let _turn = traffic();
    let server = Served::start(None, "127.0.0.1", &[], &[]);
    let peer = server.addr.as_str();

    let document = json_of(&run(
        None,
        &["bw", "--peer", peer, "-t", "1s", "-P", "2", "--json"],
    ));
    assert_bw_shape(&document);
    assert_eq!(document["streams"], 2);
    assert_eq!(document["per_stream"].as_array().unwrap().len(), 2);
    assert!(
        document["throughput_gbps"].as_f64().unwrap() > 0.1,
        "{document}"
    );
    assert_eq!(document["no_delay"], false, "{document}");
    // -N (iperf3's): the server sends with TCP_NODELAY under -R and says so.
    let document = json_of(&run(
        None,
        &["bw", "--peer", peer, "-t", "1s", "-R", "-N", "--json"],
    ));
    assert_bw_shape(&document);
    assert_eq!(document["no_delay"], true, "{document}");
    assert!(
        document["throughput_gbps"].as_f64().unwrap() > 0.1,
        "{document}"
    );
    assert!(document["working_set"].is_null(), "{document}");
    // --working-set: both sides rotate through 8 MiB (not a multiple of 768 KiB: the
    // sender keeps whole messages), and say so.
    for direction in ["-R", "--bidir"] {
        let document = json_of(&run(
            None,
            &[
                "bw",
                "--peer",
                peer,
                "-t",
                "1s",
                direction,
                "--size",
                "768K",
                "--working-set",
                "8M",
                "--json",
            ],
        ));
        assert_bw_shape(&document);
        assert_eq!(document["working_set"], 8 << 20, "{document}");
        for row in document["directions"].as_array().unwrap() {
            assert!(row["bytes"].as_u64().unwrap() > 8 << 20, "{document}");
        }
    }

    let document = json_of(&run(None, &["lat", "--peer", peer, "-n", "2000", "--json"]));
    assert_eq!(document["iterations"], 2000);
    assert_latency_sane(&document["latency_us"]);
    let document = json_of(&run(
        None,
        &["lat", "--peer", peer, "-n", "2000", "--busy-poll", "--json"],
    ));
    assert_eq!(document["busy_poll"], true);
    assert_latency_sane(&document["latency_us"]);
    // The server echoes on one thread: it cannot use much more than one core (it once
    // counted that thread twice and reported about 200%).
    let remote_cpu = document["cpu"]["remote"]["total_pct"].as_f64().unwrap();
    assert!(
        remote_cpu < 150.0,
        "remote cpu {remote_cpu}% for one echo thread"
    );

    let dir = tempfile_dir();
    let csv = dir.join("lat.csv");
    let svg = dir.join("lat.svg");
    let document = json_of(&run(
        None,
        &[
            "lat",
            "--peer",
            peer,
            "-a",
            "-n",
            "20",
            "--json",
            "--csv",
            csv.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    ));
    let sweep = document["sweep"].as_array().unwrap();
    assert_eq!(sweep.len(), 23, "one row per size, 2 B .. 8 MiB");
    assert_eq!(sweep[0]["msg_size"], 2);
    assert_eq!(sweep[22]["msg_size"], 8 << 20);
    for row in sweep {
        assert_latency_sane(&row["latency_us"]);
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 24);
    // CSV is data: units in the column names, raw numbers in the cells.
    assert!(
        text.starts_with("size_bytes,round_trips,min_us,mean_us,p50_us,"),
        "{text}"
    );
    for line in text.lines().skip(1) {
        for cell in line.split(',') {
            assert!(
                cell.parse::<f64>().is_ok(),
                "not a number: {cell} in {line}"
            );
        }
    }
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));

    let output = run(None, &["bw", "--peer", peer, "-a", "-t", "100ms"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("Gbit/s") && text.contains("8388608"),
        "{text}"
    );

    let output = run(None, &["lat", "--peer", peer, "-n", "100"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("round trip / 2"),
        "the header says how one-way is derived: {text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("linkbench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn refused_port_fails_fast_with_exit_2() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let output = run(
        None,
        &["bw", "--peer", &format!("127.0.0.1:{port}"), "-t", "1s"],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let stderr = stderr_of(&output);
    assert!(
        stderr.starts_with("linkbench: error: ") && stderr.contains("refused"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn read_error_frame(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(reply.starts_with(b"NLNK"), "no Error frame: {reply:?}");
    String::from_utf8_lossy(&reply[11..]).into_owned()
}

#[test]
fn garbage_and_other_versions_are_refused_and_the_server_keeps_serving() {
    let _turn = traffic();
    let server = Served::start(None, "127.0.0.1", &[], &[]);

    let mut garbage = TcpStream::connect(&server.addr).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_error_frame(&mut garbage).contains("not speaking the nodelink protocol"));

    let mut newer = TcpStream::connect(&server.addr).unwrap();
    let mut frame = b"NLNK\x00\x02\x01\x00\x00\x00\x02{}".to_vec();
    newer.write_all(&frame).unwrap();
    assert!(read_error_frame(&mut newer)
        .contains("v2, this is v1: run the same nodelink version on both nodes"));

    // Oversized length: refused from the header alone.
    let mut huge = TcpStream::connect(&server.addr).unwrap();
    frame = b"NLNK\x00\x01\x01\xff\xff\xff\xff".to_vec();
    huge.write_all(&frame).unwrap();
    assert!(read_error_frame(&mut huge).contains("limit"));

    // A connection that says nothing at all does not block anybody else.
    let _silent = TcpStream::connect(&server.addr).unwrap();
    assert!(server.log_contains("rejected", Duration::from_secs(5)));

    let document = json_of(&run(
        None,
        &["bw", "--peer", &server.addr, "-t", "300ms", "--json"],
    ));
    assert!(document["throughput_gbps"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_server_of_another_version_is_a_clear_client_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut hello = [0u8; 11];
        stream.read_exact(&mut hello).unwrap();
        stream
            .write_all(b"NLNK\x00\x02\x01\x00\x00\x00\x02{}")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let output = run(None, &["lat", "--peer", &addr.to_string(), "-n", "10"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        stderr_of(&output).contains("peer speaks nodelink protocol v2, this is v1: run the same nodelink version on both nodes"),
        "{}",
        stderr_of(&output)
    );
    fake.join().unwrap();
}

#[test]
fn token_mismatch_is_refused_with_a_clear_message() {
    let _turn = traffic();
    let server = Served::start(None, "127.0.0.1", &[], &[("NODELINK_TOKEN", "s3cret")]);
    let lat = ["lat", "--peer", server.addr.as_str(), "-n", "50"];

    let output = client(None, &lat)
        .env("NODELINK_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("NODELINK_TOKEN differs"),
        "{}",
        stderr_of(&output)
    );

    let output = client(None, &lat).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("requires NODELINK_TOKEN"),
        "{}",
        stderr_of(&output)
    );

    let output = client(None, &lat)
        .env("NODELINK_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn server_killed_mid_test_fails_the_client_without_a_hang() {
    let _turn = traffic();
    for args in [
        &["bw", "-t", "8s"][..],
        &["bw", "-t", "8s", "--reverse"][..],
        &["lat", "-t", "8s"][..],
    ] {
        let mut server = Served::start(None, "127.0.0.1", &[], &[]);
        let mut child = client(None, args)
            .args(["--peer", &server.addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let killed = Instant::now();
        server.child.kill().unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(20),
                "{args:?}: client hangs"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("linkbench: error: "),
            "{args:?}: {stderr}"
        );
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "{args:?}: took {:?}",
            killed.elapsed()
        );
    }
}

#[test]
fn client_killed_mid_test_fails_a_once_server() {
    let _turn = traffic();
    for args in [
        &["bw", "-t", "8s"][..],
        &["bw", "-t", "8s", "--reverse"][..],
        &["lat", "-t", "8s"][..],
    ] {
        let mut server = Served::start(None, "127.0.0.1", &["--once"], &[]);
        let mut child = client(None, args)
            .args(["--peer", &server.addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        child.kill().unwrap();
        let _ = child.wait();
        let status = server.wait(Duration::from_secs(20));
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

// ---------------------------------------------------------------- namespaces

fn shaped_pair(rate: &str) -> Option<Pair> {
    build_or_skip(|| {
        let pair = Pair::new()?;
        pair.shape_both(rate)?;
        Ok(pair)
    })
}

fn bw_in(pair: &Pair, extra: &[&str]) -> Value {
    let mut args = vec!["bw", "--peer", Pair::ADDR_A, "-t", "2s", "--json"];
    args.extend_from_slice(extra);
    let document = json_of(&run(Some(&pair.b), &args));
    assert_bw_shape(&document);
    document
}

fn assert_rate(document: &Value, low: f64, high: f64, what: &str) {
    for direction in document["directions"].as_array().unwrap() {
        let rate = direction["throughput_gbps"].as_f64().unwrap();
        assert!(
            (low..=high).contains(&rate),
            "{what}: {} measured {rate:.3} Gbit/s, expected {low}..{high}\n{document}",
            direction["direction"]
        );
    }
}

#[test]
fn shaped_veth_measures_the_tbf_rate_in_every_direction() {
    let _turn = traffic();
    for (rate, gbit) in [("1gbit", 1.0), ("2gbit", 2.0)] {
        let Some(pair) = shaped_pair(rate) else {
            return;
        };
        let _server = Served::start(Some(&pair.a), Pair::ADDR_A, &[], &[]);
        for extra in [
            &[][..],
            &["--reverse"][..],
            // Both directions' slow starts overflow the tbf queues that carry each
            // other's ACKs: 0.66-0.92 of the rate over 2 s, 0.88-0.95 with -O 1s.
            &["--bidir", "-O", "1s"][..],
            &["-P", "4"][..],
        ] {
            let document = bw_in(&pair, extra);
            // Goodput is ~0.95 of the tbf rate (0.90 per direction with --bidir). The
            // bounds are loose on purpose: on a 2-core machine with other tests beside
            // it a tight bound flakes (0.901 once against 0.93); 0.8-1.05 still catches a
            // tool that measures the wrong thing. Tight ratios: scripts/bench/.
            // --bidir keeps the same margin under its lower goodput (each direction's
            // data shares the link with the other's ACKs): 0.75 = 0.80 x 0.90 / 0.95.
            // A noisy CI host once gave 0.789 at 2 Gbit/s against a bound of 0.80, before
            // the warm-up was left out.
            let floor = if extra.contains(&"--bidir") {
                0.75
            } else {
                0.80
            };
            let (low, high) = (floor * gbit, 1.05 * gbit);
            assert_rate(&document, low, high, &format!("{rate} {extra:?}"));
            let streams = if extra.contains(&"-P") { 4 } else { 1 };
            assert_eq!(document["streams"], streams);
            let expected_rows = if extra.contains(&"--bidir") {
                2 * streams
            } else {
                streams
            };
            assert_eq!(
                document["per_stream"].as_array().unwrap().len(),
                expected_rows
            );
            if extra.contains(&"--bidir") {
                assert_eq!(document["directions"].as_array().unwrap().len(), 2);
            } else {
                let total = document["throughput_gbps"].as_f64().unwrap();
                assert!((low..=high).contains(&total), "{rate} {extra:?}: {total}");
            }
        }
    }
}

#[test]
fn latency_in_namespaces_is_ordered_and_the_sweep_has_a_row_per_size() {
    let _turn = traffic();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let _server = Served::start(Some(&pair.a), Pair::ADDR_A, &[], &[]);
    let document = json_of(&run(
        Some(&pair.b),
        &["lat", "--peer", Pair::ADDR_A, "-n", "3000", "--json"],
    ));
    assert_latency_sane(&document["latency_us"]);
    assert_eq!(document["latency_us"]["samples"], 3000);
    let document = json_of(&run(
        Some(&pair.b),
        &["lat", "--peer", Pair::ADDR_A, "-a", "-n", "20", "--json"],
    ));
    let sizes: Vec<u64> = document["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["msg_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, (1..=23).map(|p| 1u64 << p).collect::<Vec<_>>());
}

#[test]
fn two_clients_at_once_both_complete_with_sane_figures() {
    let _turn = traffic();
    let Some(pair) = shaped_pair("1gbit") else {
        return;
    };
    let _server = Served::start(Some(&pair.a), Pair::ADDR_A, &[], &[]);
    let spawn = |extra: &[&str]| {
        client(
            Some(&pair.b),
            &["bw", "--peer", Pair::ADDR_A, "-t", "2s", "--json"],
        )
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let first = spawn(&[]);
    let second = spawn(&["-P", "2"]);
    let first = json_of(&first.wait_with_output().unwrap());
    let second = json_of(&second.wait_with_output().unwrap());
    assert_eq!(first["per_stream"].as_array().unwrap().len(), 1);
    assert_eq!(second["per_stream"].as_array().unwrap().len(), 2);
    let (a, b) = (
        first["throughput_gbps"].as_f64().unwrap(),
        second["throughput_gbps"].as_f64().unwrap(),
    );
    assert!(a > 0.1 && b > 0.1, "{a} {b}");
    // They share one 1 Gbit/s link (and overlap for most of the test).
    assert!(a + b < 1.3, "{a} + {b}");
}

#[test]
fn dead_address_fails_within_the_connect_timeout() {
    // Inside the pair's subnet, nobody home: a static neighbour entry makes the SYN vanish
    // (no "host unreachable" from a failed ARP), so only the timeout can end the wait.
    let Some(pair) = build_or_skip(|| {
        let pair = Pair::new()?;
        pair.b.ip(&[
            "neigh",
            "add",
            "10.77.0.99",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            Pair::IFACE,
            "nud",
            "permanent",
        ])?;
        Ok(pair)
    }) else {
        return;
    };
    let started = Instant::now();
    let output = run(
        Some(&pair.b),
        &[
            "bw",
            "--peer",
            "10.77.0.99",
            "--connect-timeout",
            "1s",
            "-t",
            "1s",
        ],
    );
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        stderr_of(&output).contains("no answer within 1s"),
        "{}",
        stderr_of(&output)
    );

    let started = Instant::now();
    let output = run(Some(&pair.b), &["lat", "--peer", "10.77.0.99"]);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(10),
        "default is 5 s, took {took:?}"
    );
}

/// Every tool reads NODELINK_TOKEN one way: set-but-empty is refused (it used to mean
/// "no authentication" here and an empty key in kvxfer).
#[test]
fn an_empty_token_is_refused_not_treated_as_unset() {
    let output = std::process::Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1", "--port", "18599", "--once"])
        .env("NODELINK_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr_of(&output).contains("NODELINK_TOKEN is set but empty"),
        "{}",
        stderr_of(&output)
    );
}

/// `-t` bounds the run: a 4 KiB window on loopback (smaller than one 64 KiB segment)
/// stalls TCP, and `bw -t 1s` took 19.8 s and printed 0.000 Gbit/s. Now the stream is cut
/// at the duration plus a short drain grace, and the rate keeps its significant digits.
#[test]
fn duration_bounds_a_stalled_stream_and_tiny_rates_keep_their_digits() {
    let _turn = traffic();
    let server = Served::start(None, "127.0.0.1", &[], &[]);
    let started = Instant::now();
    let output = run(
        None,
        &["bw", "--peer", &server.addr, "-t", "1s", "--window", "4K"],
    );
    let took = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("throughput: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!line.starts_with("throughput: 0.000 Gbit/s"), "{line}");
}

/// Hole: the 1,024 connection slots were counted at accept, before authentication, so
/// idle unauthenticated sockets locked out authenticated clients. Slots are now taken
/// after authentication; openings have a budget of their own, and when it is full the
/// oldest opening is cut, so a real client arriving right after a flood of idle sockets
/// is served at once (it used to be dropped at accept until the flood timed out).
#[test]
fn idle_unauthenticated_sockets_do_not_lock_out_a_real_client() {
    let _turn = traffic();
    // Room for 1,100 idle sockets here and in the server (it inherits the limit).
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and raising this process's own limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    if limit.rlim_cur < 2400 {
        eprintln!(
            "skipped: the descriptor limit {} is too low",
            limit.rlim_cur
        );
        return;
    }
    let server = Served::start(None, "127.0.0.1", &[], &[("NODELINK_TOKEN", "s3cret")]);
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(&server.addr).ok())
        .collect();
    assert!(idle.len() > 1024, "only {} idle sockets", idle.len());
    // The real client comes at once, while every idle socket is still open.
    let output = client(None, &["lat", "--peer", server.addr.as_str(), "-n", "50"])
        .env("NODELINK_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    drop(idle);
}

/// Hole: `serve --once` with a token was used up by one unauthenticated Hello.
#[test]
fn a_once_server_is_not_used_up_by_a_failed_opening() {
    let _turn = traffic();
    let server = Served::start(
        None,
        "127.0.0.1",
        &["--once"],
        &[("NODELINK_TOKEN", "s3cret")],
    );
    let lat = ["lat", "--peer", server.addr.as_str(), "-n", "50"];
    let wrong = client(None, &lat)
        .env("NODELINK_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let right = client(None, &lat)
        .env("NODELINK_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert!(right.status.success(), "{}", stderr_of(&right));
}

/// README's conventions table says which shared flags bw and lat have; each --help must agree.
#[test]
fn readme_conventions_row_matches_the_help() {
    use testbed::readme::{assert_row_matches, help_of};
    assert_row_matches("linkbench bw/lat", &[help_of(BIN, &["bw"])]);
    assert_row_matches("linkbench bw/lat", &[help_of(BIN, &["lat"])]);
}

#[test]
fn omit_leaves_the_warm_up_out_and_intervals_cover_the_test() {
    let _turn = traffic();
    let Some(pair) = shaped_pair("1gbit") else {
        return;
    };
    let _server = Served::start(Some(&pair.a), Pair::ADDR_A, &[], &[]);
    for reverse in [false, true] {
        let mut args = vec!["bw", "--peer", Pair::ADDR_A, "--json"];
        args.extend(["-t", "1s", "-O", "1s", "-i", "250ms"]);
        if reverse {
            args.push("-R");
        }
        let document = json_of(&run(Some(&pair.b), &args));
        assert_bw_shape(&document);
        assert_eq!(document["omit_s"], 1.0);
        // Only the second after the warm-up counts: about 1 s and 125 MB, not 2 s.
        let seconds = document["seconds"].as_f64().unwrap();
        assert!((0.7..1.4).contains(&seconds), "{seconds} s counted");
        let bytes = document["directions"][0]["bytes"].as_f64().unwrap();
        assert!((0.7e9 / 8.0..1.3e9 / 8.0).contains(&bytes), "{bytes} bytes");
        assert_rate(&document, 0.8, 1.05, "after a warm-up");
        let intervals = document["intervals"].as_array().unwrap();
        assert!(intervals.len() >= 6, "{intervals:?}");
        assert_eq!(intervals[0]["omitted"], true);
        assert_eq!(intervals.last().unwrap()["omitted"], false);
        // The part after the last boundary is a row too: the rows reach the test's end.
        let end = intervals.last().unwrap()["end_s"].as_f64().unwrap();
        assert!(end >= 1.95, "the intervals stop at {end} s of a 2 s test");
        let total: f64 = intervals.iter().map(|i| i["bytes"].as_f64().unwrap()).sum();
        assert!(
            total > bytes,
            "intervals cover the warm-up too: {total} vs {bytes}"
        );
    }
}

/// Two rails between the namespaces (nl0 and nl1), each shaped to `rate` both ways.
fn two_rails(rate: &str) -> Option<(Pair, String)> {
    build_or_skip(|| {
        let pair = Pair::new()?;
        pair.shape_both(rate)?;
        let (iface, addr_a, _) = pair.add_rail(1)?;
        Pair::shape_dev(&pair.a, &iface, rate)?;
        Pair::shape_dev(&pair.b, &iface, rate)?;
        Ok((pair, addr_a))
    })
}

fn rail_rate(document: &Value, address: &str) -> f64 {
    document["rails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == address)
        .unwrap_or_else(|| panic!("no rail {address}: {document}"))["throughput_gbps"]
        .as_f64()
        .unwrap()
}

#[test]
fn rails_stripe_streams_over_both_links_and_add_up() {
    let _turn = traffic();
    let Some((pair, rail1)) = two_rails("1gbit") else {
        return;
    };
    // Bound to every address: the data connections arrive on either rail.
    let _server = Served::start(Some(&pair.a), "0.0.0.0", &[], &[]);
    let rails = format!("{},{rail1}", Pair::ADDR_A);
    for extra in [&[][..], &["-R"][..], &["-P", "2"][..]] {
        let mut args = vec!["bw", "--peer", Pair::ADDR_A, "--rails", &rails];
        args.extend(["-t", "2s", "--json"]);
        args.extend_from_slice(extra);
        let document = json_of(&run(Some(&pair.b), &args));
        assert_bw_shape(&document);
        // Two 1 Gbit/s rails: the sum is about 2 Gbit/s, each rail about 1.
        assert_rate(&document, 1.6, 2.1, "two rails");
        for address in [Pair::ADDR_A, rail1.as_str()] {
            let rate = rail_rate(&document, address);
            assert!(
                (0.8..=1.05).contains(&rate),
                "{extra:?} rail {address}: {rate}"
            );
        }
        let streams = document["per_stream"].as_array().unwrap().len();
        assert_eq!(streams, if extra.contains(&"-P") { 4 } else { 2 });
    }
}

#[test]
fn a_rail_taken_down_mid_test_ends_the_test_on_time_and_shows_in_its_figure() {
    let _turn = traffic();
    let Some((pair, rail1)) = two_rails("1gbit") else {
        return;
    };
    let _server = Served::start(Some(&pair.a), "0.0.0.0", &[], &[]);
    let rails = format!("{},{rail1}", Pair::ADDR_A);
    let started = std::time::Instant::now();
    let child = client(
        Some(&pair.b),
        &[
            "bw",
            "--peer",
            Pair::ADDR_A,
            "--rails",
            &rails,
            "-t",
            "3s",
            "--json",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    pair.b.ip(&["link", "set", "nl1", "down"]).unwrap();
    let output = child.wait_with_output().unwrap();
    let took = started.elapsed();
    // The stalled stream is cut at the test's end plus the drain grace: no hang.
    assert!(took < std::time::Duration::from_secs(12), "took {took:?}");
    if output.status.success() {
        let document = json_of(&output);
        let (up, down) = (
            rail_rate(&document, Pair::ADDR_A),
            rail_rate(&document, &rail1),
        );
        assert!(up > 0.8, "the rail left up keeps its rate: {up}");
        assert!(down < up / 2.0, "the downed rail shows: {down} vs {up}");
        let stalled: Vec<_> = document["rails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["stalled"].as_bool().unwrap())
            .collect();
        assert_eq!(stalled, [false, true], "{document}");
    } else {
        // Or the test fails, naming the stream that stalled.
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert!(
            stderr_of(&output).contains("stream"),
            "{}",
            stderr_of(&output)
        );
    }
}

/// Every client mode either produces each output flag's output or refuses the flag
/// (exit 64, one sentence naming it); the server takes none of them.
#[test]
fn every_mode_honours_or_refuses_each_output_flag() {
    use testbed::outputs::{walk, Flag, Mode, Outcome};
    let _turn = traffic();
    let served = Served::start(None, "127.0.0.1", &[], &[]);
    let port = served.addr.rsplit(':').next().unwrap().to_string();
    let peer = ["--peer", "127.0.0.1", "--port", port.as_str()];
    let with = |args: &[&str]| -> Vec<String> {
        peer.iter().chain(args).map(ToString::to_string).collect()
    };
    let mode = |name, args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Mode::new(name, &refs)
    };
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        mode(
            "bw",
            [vec!["bw".to_string()], with(&["-t", "200ms"])].concat(),
        ),
        mode(
            "bw -a",
            [vec!["bw".to_string()], with(&["-t", "100ms", "-a"])].concat(),
        ),
        mode(
            "lat",
            [vec!["lat".to_string()], with(&["-n", "200"])].concat(),
        ),
        mode(
            "lat -a",
            [vec!["lat".to_string()], with(&["-n", "50", "-a"])].concat(),
        ),
        mode("compare", [vec!["compare".to_string()], with(&[])].concat()),
        Mode::new("serve", &["serve", "--bind", "127.0.0.1", "--port", "1"]),
    ];
    walk(
        BIN,
        &modes,
        |mode, flag| match (mode, flag) {
            ("serve", _) => Outcome::Refused,
            ("compare", Flag::Json) => Outcome::Honoured,
            ("compare", _) => Outcome::Refused,
            // A chart is a size sweep.
            ("bw" | "lat", Flag::Svg | Flag::Png) => Outcome::Refused,
            _ => Outcome::Honoured,
        },
        dir.path(),
    );
}

/// Libraries never name flags; each tool names its own: linkbench's is --port.
#[test]
fn a_taken_port_is_fixed_with_this_tools_flag() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1", "--port", &port])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("set --port to a free one"), "{stderr}");
}
