//! Runs the real kvxfer binary: prefill agents in one network namespace, decode in
//! another, joined by a veth pair. Every transfer here verifies every byte (CRC32C per
//! block and the content pattern), so a misplaced head or block fails the test.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use testbed::{build_or_skip, Netns, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_kvxfer");

/// Each test has its own namespaces and port; they still take turns (under `cargo test`
/// threads; nextest runs them one by one in its traffic group) so one test's transfer
/// cannot slow another into its timeouts.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running `kvxfer prefill`, killed on drop.
struct Prefill {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Prefill {
    fn start(ns: &Netns, port: u16, extra: &[&str]) -> Prefill {
        let addr = format!("{}:{port}", Pair::ADDR_A);
        Self::start_listening(ns, &addr, port, extra)
    }

    /// `--listen LISTEN` (several addresses: one per rail); `addr` is the first.
    fn start_listening(ns: &Netns, listen: &str, port: u16, extra: &[&str]) -> Prefill {
        let addr = listen.split(',').next().unwrap_or(listen).to_string();
        let mut child = ns
            .command(BIN)
            .args(["prefill", "--listen", listen])
            .args(extra)
            .env_remove("NODELINK_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvxfer prefill");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[prefill {port}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(_) => panic!("kvxfer prefill did not start: {:?}", child.try_wait()),
            }
        }
        Prefill {
            child,
            addr,
            log: rx,
        }
    }

    fn log_contains(&self, text: &str) -> bool {
        self.log.try_iter().any(|line| line.contains(text))
    }
}

impl Drop for Prefill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kvxfer(ns: &Netns, args: &[&str]) -> Output {
    ns.command(BIN)
        .args(args)
        .env_remove("NODELINK_TOKEN")
        .output()
        .expect("run kvxfer")
}

/// Starts `kvxfer bench ARGS --json -q` in `ns`, output captured.
fn spawn_bench(ns: &Netns, args: &[&str]) -> Child {
    ns.command(BIN)
        .arg("bench")
        .args(args)
        .args(["--json", "-q"])
        .env_remove("NODELINK_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvxfer bench")
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

use testbed::stderr_of as stderr;

#[test]
fn a_2000_token_llama_request_crosses_namespaces_intact() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let prefill = Prefill::start(
        &pair.a,
        18600,
        &["--model", "llama-3.1-8b", "--num-blocks", "130"],
    );
    let out = kvxfer(
        &pair.b,
        &[
            "decode",
            "--peer",
            &prefill.addr,
            "--model",
            "llama-3.1-8b",
            "--request-id",
            "prompt-1",
            "--input-len",
            "2000",
            "--verify",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    // 125 blocks x 16 tokens x 128 KiB per token.
    assert_eq!(doc["bytes"], 125 * 16 * 131_072);
    assert_eq!(doc["verified"], true);
    assert_eq!(doc["checksums"], true, "checksums are on by default");
    assert!(doc["throughput_gbps"].as_f64().unwrap() > 0.0);
    assert!(doc["verify_ms"].as_f64().unwrap() > 0.0);

    // --no-checksum turns them off and says so.
    let out = kvxfer(
        &pair.b,
        &[
            "decode",
            "--peer",
            &prefill.addr,
            "--request-id",
            "prompt-2",
            "--input-len",
            "64",
            "--no-checksum",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["checksums"], false);
    assert_eq!(doc["verified"], false);
}

fn bench(ns: &Netns, peers: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "bench",
        "--peer",
        peers,
        "--model",
        "llama-3.1-8b",
        "--input-len",
        "100",
        "--num-prompts",
        "6",
        "--concurrency",
        "3",
        "--verify",
        "--json",
        "-q",
    ];
    args.extend_from_slice(extra);
    kvxfer(ns, &args)
}

#[test]
fn tp2_prefill_to_tp1_decode_lands_every_head_in_place() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let r0 = Prefill::start(
        &pair.a,
        18601,
        &["--tp", "2", "--tp-rank", "0", "--num-blocks", "64"],
    );
    let r1 = Prefill::start(
        &pair.a,
        18602,
        &["--tp", "2", "--tp-rank", "1", "--num-blocks", "64"],
    );
    // Peers in any order: decode sorts them by the TP rank each reports.
    let out = bench(&pair.b, &format!("{},{}", r1.addr, r0.addr), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(
        (doc["requests"].as_u64(), doc["failed"].as_u64()),
        (Some(6), Some(0)),
        "{doc}"
    );
    assert_eq!(doc["prefill_tp"], 2);
    assert_eq!(doc["scheme"], "tp", "several TP ranks: the tp scheme");
    // Decode TP 1 holds all 8 heads: 7 blocks x 2 MiB per request.
    assert_eq!(doc["bytes_per_request"], 7 * 2 * 1024 * 1024);
    // Listing only one of the two ranks is refused before anything moves.
    let out = bench(&pair.b, &r0.addr, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("every prefill TP rank"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tp1_prefill_to_tp2_decode_splits_heads_between_ranks() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let prefill = Prefill::start(&pair.a, 18603, &["--num-blocks", "64"]);
    // Both decode ranks pull the same requests (same ids), each its half of the heads.
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let rank = rank.to_string();
            let peer = prefill.addr.as_str();
            let common = ["--peer", peer, "--input-len", "100", "--num-prompts", "6"];
            let mine = ["--tp", "2", "--tp-rank", &rank, "--id-prefix", "shared"];
            spawn_bench(
                &pair.b,
                &[&common[..], &["--concurrency", "3", "--verify"], &mine].concat(),
            )
        })
        .collect();
    for child in ranks {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let doc = json(&out);
        assert_eq!(
            (doc["requests"].as_u64(), doc["failed"].as_u64()),
            (Some(6), Some(0)),
            "{doc}"
        );
        assert_eq!(doc["bytes_per_request"], 7 * 1024 * 1024);
    }
    // Each request's lease waited for both readers; then all blocks came back.
    assert!(!prefill.log_contains("expired"));
}

#[test]
fn bad_requests_are_refused_while_good_ones_keep_flowing() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let prefill = Prefill::start(
        &pair.a,
        18604,
        &["--num-blocks", "64", "--lease", "2s", "--dp-rank", "3"],
    );
    let good = spawn_bench(
        &pair.b,
        &[
            "--peer",
            &prefill.addr,
            "--dp-rank",
            "3",
            "--input-len",
            "200",
            "--num-prompts",
            "40",
            "--concurrency",
            "2",
            "--verify",
        ],
    );
    let decode = |extra: &[&str]| {
        let mut args = vec![
            "decode",
            "--peer",
            &prefill.addr,
            "--dp-rank",
            "3",
            "--input-len",
            "32",
        ];
        args.extend_from_slice(extra);
        kvxfer(&pair.b, &args)
    };
    let refusals: [(&[&str], &str); 6] = [
        (
            &["--request-id", "r1", "--block-size", "32"],
            "block_size is 16 on prefill but 32 on decode",
        ),
        (
            &["--request-id", "r2", "--layout", "hnd"],
            "layout order is NHD on prefill but HND on decode",
        ),
        (
            &["--request-id", "r3", "--remote-blocks", "9999"],
            "block id 9999 is out of range",
        ),
        (
            &["--request-id", "r4", "--remote-blocks", "63,62"],
            "not one of request r4's",
        ),
        (
            &[
                "--request-id",
                "never",
                "--no-prefill",
                "--remote-blocks",
                "1",
            ],
            "unknown request id never",
        ),
        (
            &["--request-id", "r5", "--pull-after", "3s"],
            "raise the prefill's lease or pull sooner",
        ),
    ];
    for (extra, expected) in refusals {
        let out = decode(extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "one sentence: {}",
            stderr(&out)
        );
    }
    // A decode that names the wrong DP rank is told so before it sends anything.
    let out = kvxfer(
        &pair.b,
        &[
            "decode",
            "--peer",
            &prefill.addr,
            "--input-len",
            "32",
            "--request-id",
            "r6",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("DP rank 3, not 0"),
        "{}",
        stderr(&out)
    );
    let out = good.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(
        (doc["requests"].as_u64(), doc["failed"].as_u64()),
        (Some(40), Some(0)),
        "{doc}"
    );
}

#[test]
fn prefill_killed_mid_transfer_fails_only_the_affected_requests() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let mut prefill = Prefill::start(&pair.a, 18605, &["--num-blocks", "300"]);
    Pair::shape(&pair.a, "500mbit").unwrap();
    let started = Instant::now();
    let run = spawn_bench(
        &pair.b,
        &[
            "--peer",
            &prefill.addr,
            "--input-len",
            "2000",
            "--num-prompts",
            "20",
            "--concurrency",
            "2",
            "--timeout",
            "3s",
        ],
    );
    // 250 MiB at 500 Mbit/s takes ~4 s: kill once 20 MB of the first requests have left.
    pair.a
        .wait_for_tx("nl0", 20_000_000, Duration::from_secs(30));
    prefill.child.kill().unwrap();
    let out = run.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(2), "nothing completed: {doc}");
    assert_eq!(doc["requests"], 0, "{doc}");
    assert_eq!(doc["failed"], 20, "{doc}");
    let errors = doc["errors"].to_string();
    assert!(
        errors.contains("closed the connection")
            || errors.contains("refused")
            || errors.contains("reset"),
        "{errors}"
    );
    // The bench stops with the cause instead of trying every remaining prompt against
    // a dead prefill; none hung.
    assert!(
        doc["stopped"]
            .as_str()
            .is_some_and(|s| s.starts_with("stopped after request")),
        "{doc}"
    );
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

#[test]
fn no_gpu_and_bad_flags_get_one_sentence() {
    let out = std::process::Command::new(BIN)
        .args(["prefill", "--device", "cuda:0", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("use --device cpu"),
        "{}",
        stderr(&out)
    );
    let out = std::process::Command::new(BIN)
        .args(["prefill", "--model", "gpt-9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let out = std::process::Command::new(BIN)
        .args([
            "bench",
            "--peer",
            "127.0.0.1:1",
            "--tp",
            "2",
            "--tp-rank",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    // RDMA on a host without it: one sentence saying why, before any connection.
    let out = std::process::Command::new(BIN)
        .args(["bench", "--peer", "127.0.0.1:1", "--transport", "rdma"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RDMA unavailable"),
        "{}",
        stderr(&out)
    );
    // The tool, not the library, names its own flag.
    assert!(
        stderr(&out).trim_end().ends_with("or use --transport tcp"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    // Nobody listening: a clear connect error, fast.
    let started = Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "decode",
            "--peer",
            "127.0.0.1:1",
            "--request-id",
            "x",
            "--input-len",
            "16",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    // It used to ask a kvxfer user whether `linkbench serve` was running.
    assert!(
        !stderr(&out).contains("linkbench")
            && stderr(&out).contains("is the server running there?"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn prefill_listens_on_the_iface_address_by_default() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let mut child = pair
        .a
        .command(BIN)
        .args(["prefill", "--iface", Pair::IFACE, "--num-blocks", "4"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("listening on 10.77.0.1:18600"), "{first}");
    let out = kvxfer(&pair.a, &["prefill", "--iface", "nope0"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("no interface named nope0"));
}

/// Starts `kvxfer prefill` on loopback through `bash -c "ulimit ...; exec ..."`, and
/// returns it once it prints its ready line (with that line).
fn loopback_prefill(
    port: u16,
    limits: &str,
    extra: &str,
) -> (Child, String, mpsc::Receiver<String>) {
    let script = format!("{limits} exec {BIN} prefill --listen 127.0.0.1:{port} {extra}");
    let mut child = std::process::Command::new("bash")
        .args(["-c", &script])
        .env_remove("NODELINK_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kvxfer prefill");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("prefill printed nothing");
    assert!(ready.contains("ready: listening on"), "{ready}");
    (child, ready, rx)
}

fn decode_on_loopback(port: u16) -> Output {
    std::process::Command::new(BIN)
        .args([
            "decode",
            "--peer",
            &format!("127.0.0.1:{port}"),
            "--input-len",
            "64",
        ])
        .args(["--request-id", "real", "--verify", "--timeout", "5s"])
        .env_remove("NODELINK_TOKEN")
        .output()
        .unwrap()
}

/// Hole: `accept()` failing (out of descriptors under a flood of idle connections)
/// ended the prefill with "Too many open files". It must log, wait and go on serving.
#[test]
fn a_connection_flood_at_the_descriptor_limit_does_not_kill_the_prefill() {
    let _turn = serial();
    let port = 18650;
    let (mut child, _, log) = loopback_prefill(port, "ulimit -n 48;", "--num-blocks 16");
    let flood: Vec<_> = (0..120)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the prefill exited under the flood"
    );
    drop(flood);
    // Once the junk is gone, a real decode is served (the prefill frees each idle
    // socket when its greeting times out or it closes).
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = decode_on_loopback(port);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(child.try_wait().unwrap().is_none());
    let lines: Vec<String> = log.try_iter().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("accepting a decode connection failed")),
        "{lines:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// "ready" means ready: the pool is committed before the listener exists, so the first
/// decode is answered at once instead of waiting out a multi-second commit.
#[test]
fn prefill_says_ready_only_once_its_pool_is_committed() {
    let _turn = serial();
    let port = 18651;
    // 256 blocks x 2 MiB (Llama-3.1-8B, block 16) = 512 MiB.
    let (mut child, ready, _log) = loopback_prefill(port, "", "--num-blocks 256");
    assert!(ready.contains("committed in"), "{ready}");
    assert!(ready.contains("no authentication"), "{ready}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kib >= 512 * 1024, "RSS {rss_kib} KiB at ready: {ready}");
    let out = decode_on_loopback(port);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = child.kill();
    let _ = child.wait();
}

/// Hole: an empty NODELINK_TOKEN became a usable empty key (kvxfer) or "unset"
/// (linkbench); every tool now refuses it.
#[test]
fn an_empty_token_is_refused_not_used() {
    let out = std::process::Command::new(BIN)
        .args([
            "prefill",
            "--listen",
            "127.0.0.1:18652",
            "--num-blocks",
            "4",
        ])
        .env("NODELINK_TOKEN", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NODELINK_TOKEN is set but empty"),
        "{}",
        stderr(&out)
    );
}

/// README's conventions table says which shared flags this tool has; its --help must agree.
#[test]
fn readme_conventions_row_matches_the_help() {
    use testbed::readme::{assert_row_matches, help_of};
    assert_row_matches(
        "kvxfer",
        &[
            help_of(BIN, &["prefill"]),
            help_of(BIN, &["decode"]),
            help_of(BIN, &["bench"]),
        ],
    );
}

#[test]
fn bench_paces_poisson_arrivals_skips_warm_ups_and_writes_csv() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let prefill = Prefill::start(&pair.a, 18603, &["--num-blocks", "64"]);
    let dir = std::env::temp_dir().join(format!("kvxfer-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("bench.csv");
    // Seed 0 at 5 requests/s: the sixth arrives 1.6 s after the start.
    let out = bench(
        &pair.b,
        &prefill.addr,
        &[
            "--request-rate",
            "5",
            "--num-warmups",
            "2",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["requests"], 6, "warm-ups are not counted: {doc}");
    assert_eq!(doc["request_rate"], 5.0);
    assert_eq!(doc["num_warmups"], 2);
    let duration = doc["duration_s"].as_f64().unwrap();
    assert!(duration >= 1.59, "paced by the arrivals: {duration} s");
    let latency = &doc["latency_ms"];
    for key in ["mean", "p50", "p90", "p99"] {
        assert!(latency[key].as_f64().unwrap() > 0.0, "{key}: {doc}");
    }
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("requests,failed,concurrency,request_rate"));
    assert!(lines[1].starts_with("6,0,3,5,"), "{text}");
    // Unpaced, the same six requests take a fraction of that.
    let out = bench(&pair.b, &prefill.addr, &[]);
    let doc = json(&out);
    assert_eq!(doc["request_rate"], "inf");
    assert!(doc["duration_s"].as_f64().unwrap() < 1.0, "{doc}");
    let _ = std::fs::remove_dir_all(&dir);
    // A rate of zero is refused before anything moves.
    let out = bench(&pair.b, &prefill.addr, &["--request-rate", "0"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("--request-rate"), "{}", stderr(&out));
}

/// A pair of namespaces joined by two rails (nl0 10.77.0.x, nl1 10.77.1.x), each shaped
/// to `rate` both ways, with a prefill listening on both.
fn two_rails(rate: &str, port: u16) -> Option<(Pair, Prefill)> {
    let pair = build_or_skip(|| {
        let pair = Pair::new()?;
        pair.shape_both(rate)?;
        let (iface, _, _) = pair.add_rail(1)?;
        Pair::shape_dev(&pair.a, &iface, rate)?;
        Pair::shape_dev(&pair.b, &iface, rate)?;
        Ok(pair)
    })?;
    let listen = format!("{}:{port},10.77.1.1:{port}", Pair::ADDR_A);
    let prefill = Prefill::start_listening(&pair.a, &listen, port, &["--num-blocks", "300"]);
    Some((pair, prefill))
}

#[test]
fn rails_stripe_each_request_byte_exact_and_add_up() {
    let _turn = serial();
    let Some((pair, prefill)) = two_rails("1gbit", 18604) else {
        return;
    };
    let common = [
        "--peer",
        &prefill.addr,
        "--input-len",
        "1000",
        "--num-prompts",
        "6",
        "--concurrency",
        "1",
    ];
    // Every byte checked: a block on the wrong rail or out of order fails the request.
    let out = kvxfer(
        &pair.b,
        &[&["bench"][..], &common, &["--verify", "--json", "-q"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(
        (doc["requests"].as_u64(), doc["failed"].as_u64()),
        (Some(6), Some(0))
    );
    assert_eq!(doc["rails"], 2, "{doc}");
    // Two 1 Gbit/s rails: one request moves at about 2 Gbit/s (first pull to last byte).
    let gbps = |doc: &Value| {
        doc["bytes_per_request"].as_f64().unwrap() * 8.0
            / (doc["latency_ms"]["p50"].as_f64().unwrap() / 1e3)
            / 1e9
    };
    let striped = gbps(&doc);
    assert!(
        (1.6..=2.1).contains(&striped),
        "two rails: {striped} Gbit/s"
    );
    // One rail only: about 1 Gbit/s.
    let out = kvxfer(
        &pair.b,
        &[&["bench"][..], &common, &["--no-rails", "--json", "-q"]].concat(),
    );
    let doc = json(&out);
    assert_eq!(doc["rails"], 1);
    let single = gbps(&doc);
    assert!((0.8..=1.05).contains(&single), "one rail: {single} Gbit/s");
}

#[test]
fn a_rail_going_down_fails_the_request_naming_the_rail_and_nothing_hangs() {
    let _turn = serial();
    let Some((pair, prefill)) = two_rails("1gbit", 18605) else {
        return;
    };
    let started = Instant::now();
    let bench = spawn_bench(
        &pair.b,
        &[
            "--peer",
            &prefill.addr,
            "--input-len",
            "500",
            "--num-prompts",
            "200",
            "--concurrency",
            "1",
            "--timeout",
            "3s",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    pair.b.ip(&["link", "set", "nl1", "down"]).unwrap();
    let out = bench.wait_with_output().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let doc = json(&out);
    assert!(
        doc["requests"].as_u64().unwrap() >= 1,
        "some moved first: {doc}"
    );
    assert!(doc["failed"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(out.status.code(), Some(1), "some failed: {doc}");
    let errors = doc["errors"].to_string() + &doc["stopped"].to_string();
    assert!(
        errors.contains("on rail 1 (10.77.1.1)"),
        "names the rail: {errors}"
    );
}

#[test]
fn a_block_size_sweep_has_a_verified_row_per_size_with_csv_and_chart() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let prefill = Prefill::start(
        &pair.a,
        18610,
        &["--sweep-block", "1K..64K", "--sweep-pool", "2M"],
    );
    let dir = std::env::temp_dir().join(format!("kvxfer-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (csv, svg) = (dir.join("sweep.csv"), dir.join("sweep.svg"));
    let out = kvxfer(
        &pair.b,
        &[
            "bench",
            "--peer",
            &prefill.addr,
            "--sweep-block",
            "1K..64K",
            "--num-prompts",
            "12",
            "--concurrency",
            "3",
            "--batch",
            "4",
            "--verify",
            "--json",
            "-q",
            "--csv",
            csv.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    let rows = doc["sweep"].as_array().unwrap();
    let sizes: Vec<u64> = rows
        .iter()
        .map(|r| r["block_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [1024, 2048, 4096, 8192, 16384, 32768, 65536]);
    for row in rows {
        assert_eq!(
            (row["requests"].as_u64(), row["failed"].as_u64()),
            (Some(12), Some(0)),
            "{row}"
        );
        assert_eq!(row["batch"], 4);
        assert!(row["bandwidth_gbyte_s"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["blocks_per_s"].as_f64().unwrap() > 0.0, "{row}");
        let (mean, p99) = (
            row["latency_us"]["mean"].as_f64().unwrap(),
            row["latency_us"]["p99"].as_f64().unwrap(),
        );
        assert!(mean > 0.0 && p99 >= mean * 0.5, "{row}");
    }
    assert_eq!(doc["verified"], true);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.starts_with("block_bytes,batch,"));
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        chart.matches("<polyline").count(),
        3,
        "bandwidth, mean and p99 latency"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Another range than the prefill's: size i meets a pool of another size, refused.
    let out = kvxfer(
        &pair.b,
        &[
            "bench",
            "--peer",
            &prefill.addr,
            "--sweep-block",
            "2K..4K",
            "--json",
            "-q",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("block size 2 KiB"),
        "{}",
        stderr(&out)
    );
    // A range that is not powers of two is refused before anything moves.
    let out = kvxfer(
        &pair.b,
        &["bench", "--peer", &prefill.addr, "--sweep-block", "1K..3K"],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
}

#[test]
fn schemes_many_to_one_and_one_to_many_run_their_decode_agents_at_once() {
    let _turn = serial();
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let first = Prefill::start(&pair.a, 18620, &["--num-blocks", "64"]);
    let second = Prefill::start(&pair.a, 18621, &["--num-blocks", "64"]);
    let both = format!("{},{}", first.addr, second.addr);
    let requests = |doc: &Value| -> Vec<u64> {
        doc["decoders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["requests"].as_u64().unwrap())
            .collect()
    };
    // Three decode agents share one prefill: 6 prompts, 2 each.
    let out = bench(
        &pair.b,
        &first.addr,
        &["--scheme", "many-to-one", "--decoders", "3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["scheme"], "many-to-one");
    assert_eq!(requests(&doc), [2, 2, 2], "{doc}");
    assert_eq!(
        (doc["requests"].as_u64(), doc["failed"].as_u64()),
        (Some(6), Some(0))
    );
    // One decode, two independent prefills: one agent each, every request verified.
    let out = bench(&pair.b, &both, &["--scheme", "one-to-many"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["scheme"], "one-to-many");
    assert_eq!(requests(&doc), [3, 3], "{doc}");
    let peers: Vec<String> = doc["decoders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["peers"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(peers, [first.addr.clone(), second.addr.clone()]);
    // Misuse is one sentence each, before anything moves.
    for (extra, peers, needle) in [
        (
            &["--scheme", "pairwise"][..],
            both.as_str(),
            "give one --peer",
        ),
        (
            &["--scheme", "one-to-many"][..],
            first.addr.as_str(),
            "--peer A,B",
        ),
        (
            &["--decoders", "2"][..],
            first.addr.as_str(),
            "--scheme many-to-one",
        ),
    ] {
        let out = bench(&pair.b, peers, extra);
        assert_eq!(out.status.code(), Some(64), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
}

/// A prefill on loopback (no namespace), killed on drop; waits until it is ready.
struct LoopbackPrefill(Child);

impl LoopbackPrefill {
    fn start(port: u16, extra: &[&str]) -> Self {
        let mut child = std::process::Command::new(BIN)
            .args(["prefill", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env_remove("NODELINK_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvxfer prefill");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let ready = stderr
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("ready: listening"));
        assert!(ready, "prefill on port {port} never got ready");
        LoopbackPrefill(child)
    }
}

impl Drop for LoopbackPrefill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every mode either produces each output flag's output or refuses the flag (exit 64, one
/// sentence naming it): bench honours them all (a chart is a block-size sweep), decode
/// prints JSON or a line, and the prefill listener takes no output flag but -q.
#[test]
fn every_mode_honours_or_refuses_each_output_flag() {
    use testbed::outputs::{walk, Flag, Mode, Outcome};
    let _turn = serial();
    let _pool = LoopbackPrefill::start(18691, &["--num-blocks", "256"]);
    let _sweep = LoopbackPrefill::start(18692, &["--sweep-block", "4K..16K"]);
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        Mode::new(
            "bench",
            &[
                "bench",
                "--peer",
                "127.0.0.1:18691",
                "--num-prompts",
                "4",
                "--input-len",
                "64",
            ],
        ),
        Mode::new(
            "bench --sweep-block",
            &[
                "bench",
                "--peer",
                "127.0.0.1:18692",
                "--sweep-block",
                "4K..16K",
            ],
        ),
        Mode::new(
            "decode",
            &[
                "decode",
                "--peer",
                "127.0.0.1:18691",
                "--request-id",
                "walk",
                "--input-len",
                "64",
            ],
        ),
        // A listener honours -q and runs until killed: walked for the file flags only.
        Mode::new("prefill", &["prefill", "--listen", "127.0.0.1:1"]).only(&[
            Flag::Json,
            Flag::Csv,
            Flag::Svg,
            Flag::Png,
        ]),
    ];
    walk(
        BIN,
        &modes,
        |mode, flag| match (mode, flag) {
            ("bench", Flag::Svg | Flag::Png) => Outcome::Refused,
            ("bench" | "bench --sweep-block", _) => Outcome::Honoured,
            ("decode", Flag::Json) => Outcome::Honoured,
            _ => Outcome::Refused,
        },
        dir.path(),
    );
}

/// Libraries never name flags; each tool names its own. A port in use is fixed with
/// kvxfer's --listen (the library's hint once said linkbench's --port).
#[test]
fn a_taken_port_is_fixed_with_this_tools_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = std::process::Command::new(BIN)
        .args(["prefill", "--listen", &addr, "--num-blocks", "4"])
        .env_remove("NODELINK_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("set --listen to a free one"), "{stderr}");
    assert!(!stderr.contains("setting"), "{stderr}");
}
