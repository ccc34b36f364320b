//! Runs the real netcheck binary: on this host for flag handling and JSON shape, and in
//! network namespaces for interface state, addresses, MTU and port conflicts.

use serde_json::Value;
use std::process::{Command, Output};
use testbed::{build_or_skip, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_netcheck");

use testbed::json_of;

fn check<'a>(document: &'a Value, id: &str) -> &'a Value {
    document["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {document}"))
}

fn assert_shape(document: &Value) {
    assert_eq!(document["tool"], "netcheck");
    for key in ["version", "host", "iface"] {
        assert!(document[key].is_string(), "{key} missing");
    }
    let checks = document["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 19);
    for c in checks {
        assert!(["pass", "warn", "fail", "info", "skip"].contains(&c["status"].as_str().unwrap()));
        assert!(c["summary"].is_string() && c["fix"].is_string() && c["evidence"].is_object());
    }
    let summary = &document["summary"];
    let total: u64 = ["pass", "warn", "fail", "info", "skip"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 19);
}

#[test]
fn bad_flags_exit_64() {
    for args in [
        &["--bogus"][..],
        &["--iface"][..],
        &["--expect-gpus", "many"][..],
        &["--port", "0"][..],
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn unknown_interface_fails_with_the_real_names_in_json() {
    let output = Command::new(BIN)
        .args(["--iface", "nosuch0", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let document = json_of(&output);
    assert_shape(&document);
    let up = check(&document, "iface.up");
    assert_eq!(up["status"], "fail");
    assert!(up["summary"].as_str().unwrap().contains("lo"), "{up}");
    assert_eq!(check(&document, "ports.free")["status"], "skip");
}

#[test]
fn exit_code_matches_the_summary_on_this_host() {
    let output = Command::new(BIN).arg("--json").output().unwrap();
    let document = json_of(&output);
    assert_shape(&document);
    let summary = &document["summary"];
    let expected = if summary["fail"].as_u64() > Some(0) {
        2
    } else {
        i32::from(summary["warn"].as_u64() > Some(0))
    };
    assert_eq!(output.status.code(), Some(expected));
}

#[test]
fn interface_down_fails_and_exits_2() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    pair.a.ip(&["link", "set", Pair::IFACE, "down"]).unwrap();
    let output = pair
        .a
        .output(BIN, &["--iface", Pair::IFACE, "--json"])
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = json_of(&output);
    assert_shape(&document);
    let up = check(&document, "iface.up");
    assert_eq!(up["status"], "fail", "{up}");
    assert!(up["summary"].as_str().unwrap().contains("down"), "{up}");
}

#[test]
fn interface_up_reports_its_address_and_mtu() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    pair.a
        .ip(&["link", "set", Pair::IFACE, "mtu", "1450"])
        .unwrap();
    let output = pair
        .a
        .output(BIN, &["--iface", Pair::IFACE, "--json"])
        .unwrap();
    let document = json_of(&output);
    assert_shape(&document);
    assert_eq!(document["iface"], Pair::IFACE);
    let up = check(&document, "iface.up");
    assert_eq!(up["status"], "pass", "{up}");
    assert_eq!(up["evidence"]["mtu"], 1450);
    assert_eq!(up["evidence"]["kind"], "veth");
    assert_eq!(up["evidence"]["ipv4"][0], format!("{}/24", Pair::ADDR_A));
    // A veth end is what a container gets: the container check says so.
    assert_eq!(check(&document, "container.network")["status"], "warn");
    // The namespace has no default route.
    assert_eq!(check(&document, "ip.selection")["status"], "warn");
    assert_eq!(check(&document, "ports.free")["status"], "pass");
}

#[test]
fn a_bound_ray_port_fails_ports_free() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let _ray = pair.a.bind_tcp(&format!("{}:6379", Pair::ADDR_A)).unwrap();
    let _other = pair.a.bind_tcp(&format!("{}:18515", Pair::ADDR_A)).unwrap();
    let output = pair
        .a
        .output(
            BIN,
            &[
                "--iface",
                Pair::IFACE,
                "--port",
                "18515",
                "--port",
                "29500",
                "--json",
            ],
        )
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let document = json_of(&output);
    let ports = check(&document, "ports.free");
    assert_eq!(ports["status"], "fail", "{ports}");
    let summary = ports["summary"].as_str().unwrap();
    assert!(summary.contains("10.77.0.1:6379 is in use"), "{summary}");
    assert!(
        summary.contains("18515") && !summary.contains("29500"),
        "{summary}"
    );
}

#[test]
fn strict_turns_warnings_into_failure() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    // In the namespace: veth (warn) and no default route (warn); pin the hostname
    // check's Gloo escape so only warnings remain.
    let run = |strict: bool| {
        let mut command = pair.a.command(BIN);
        command
            .args(["--iface", Pair::IFACE, "--json"])
            .env("GLOO_SOCKET_IFNAME", Pair::IFACE);
        if strict {
            command.arg("--strict");
        }
        command.output().unwrap()
    };
    let relaxed = run(false);
    let document = json_of(&relaxed);
    if document["summary"]["fail"].as_u64() == Some(0) {
        assert_eq!(relaxed.status.code(), Some(1), "{document}");
        assert_eq!(run(true).status.code(), Some(2));
    } else {
        // A host whose hostname resolves oddly can still fail here; strict must not lower it.
        assert_eq!(run(true).status.code(), Some(2));
    }
}

/// Runs `netcheck --listen` in `pair.a` and `netcheck --peer` in `pair.b` (both `--json`),
/// returning (listener's output, peer's output).
fn pair_run(pair: &Pair, listen_extra: &[&str], peer_extra: &[&str]) -> (Output, Output) {
    let listener = start_listener(pair, "30s", listen_extra, None);
    let peer = pair
        .b
        .command(BIN)
        .args([
            "--iface",
            Pair::IFACE,
            "--peer",
            Pair::ADDR_A,
            "--quick",
            "--json",
        ])
        .args(peer_extra)
        .env_remove("NODELINK_TOKEN")
        .output()
        .unwrap();
    (listener.wait_with_output().unwrap(), peer)
}

/// `netcheck --listen --quick --json` in `pair.a`, once it listens (the peer retries
/// nothing, so the caller must not connect before).
fn start_listener(
    pair: &Pair,
    timeout: &str,
    extra: &[&str],
    token: Option<&str>,
) -> std::process::Child {
    let mut listener = pair.a.command(BIN);
    listener
        .args([
            "--iface",
            Pair::IFACE,
            "--listen",
            "--quick",
            "--timeout",
            timeout,
            "--json",
        ])
        .args(extra)
        .env_remove("NODELINK_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = token {
        listener.env("NODELINK_TOKEN", token);
    }
    let listener = listener.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let ss = pair.a.output("ss", &["-ltn"]).unwrap();
        if String::from_utf8_lossy(&ss.stdout).contains(":18516") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    listener
}

fn pair_check<'a>(document: &'a Value, id: &str) -> &'a Value {
    document["pair"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no pair checks in {document}"))
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {document}"))
}

#[test]
fn a_clean_pair_passes_its_pair_checks_on_both_nodes() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let (listener, peer) = pair_run(&pair, &[], &[]);
    let (b, a) = (json_of(&listener), json_of(&peer));
    for id in [
        "pair.route",
        "pair.ports",
        "pair.nat",
        "pair.mtu",
        "pair.versions",
        "pair.transport",
    ] {
        assert_eq!(
            pair_check(&a, id)["status"],
            "pass",
            "{}",
            pair_check(&a, id)
        );
        // Both nodes print the same verdict.
        assert_eq!(
            pair_check(&a, id)["status"],
            pair_check(&b, id)["status"],
            "{id}"
        );
    }
    for id in ["pair.bandwidth", "pair.latency", "pair.clock"] {
        assert_eq!(
            pair_check(&a, id)["status"],
            "info",
            "{}",
            pair_check(&a, id)
        );
    }
    let bw = a["pair"]["measured"]["bw_a_to_b_gbps"].as_f64().unwrap();
    assert!(bw > 0.1, "{bw}");
    // The pair record reads back as its type, and explain can price a link from it.
    let record = measure::record::Record::from_json(&a.to_string()).unwrap();
    let measure::record::Record::NetcheckPair(pair) = record else {
        panic!("not read back as a netcheck pair record: {record:?}")
    };
    assert_eq!(pair.pair.measured.bw_a_to_b_gbps, Some(bw));
    assert!(pair.pair.measured.latency_p50_us.is_some_and(|us| us > 0.0));
    assert!(pair_check(&a, "pair.mtu")["summary"]
        .as_str()
        .unwrap()
        .contains("don't-fragment packets cross both ways"));
    // Each node exits with its verdict over local and pair checks, as its JSON says.
    for (output, document) in [(&listener, &b), (&peer, &a)] {
        assert_eq!(
            output.status.code().map(i64::from),
            document["exit_code"].as_i64()
        );
    }
}

#[test]
fn an_mtu_mismatch_fails_pair_mtu_naming_both_sides() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    pair.a
        .ip(&["link", "set", Pair::IFACE, "mtu", "9000"])
        .unwrap();
    let (_, peer) = pair_run(&pair, &[], &[]);
    assert_eq!(peer.status.code(), Some(2));
    let check = pair_check(&json_of(&peer), "pair.mtu").clone();
    assert_eq!(check["status"], "fail", "{check}");
    let summary = check["summary"].as_str().unwrap();
    assert!(
        summary.contains("MTU 1500") && summary.contains("9000"),
        "{summary}"
    );
    assert!(
        check["fix"].as_str().unwrap().contains("mtu 1500"),
        "{check}"
    );
}

#[test]
fn a_firewall_dropping_6379_is_named_with_port_direction_and_rule() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    pair.a
        .drop_inbound_tcp(6379)
        .expect("nftables (apt-get install nftables)");
    let (_, peer) = pair_run(&pair, &[], &[]);
    assert_eq!(peer.status.code(), Some(2));
    let check = pair_check(&json_of(&peer), "pair.ports").clone();
    assert_eq!(check["status"], "fail", "{check}");
    let summary = check["summary"].as_str().unwrap();
    assert!(
        summary.contains("TCP 6379 (Ray GCS) from")
            && summary.contains("(10.77.0.2) to")
            && summary.contains("(10.77.0.1) is blocked (no answer"),
        "{summary}"
    );
    // Only that direction: 6379 from a to b is open.
    assert!(!summary.contains("(10.77.0.1) to"), "{summary}");
    let fix = check["fix"].as_str().unwrap();
    assert!(
        fix.contains("tcp dport 6379 accept") && fix.contains("ufw allow from 10.77.0.2"),
        "{fix}"
    );
}

#[test]
fn a_peer_that_never_comes_is_an_error_within_the_timeout() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let started = std::time::Instant::now();
    let output = pair
        .a
        .output(
            BIN,
            &["--iface", Pair::IFACE, "--listen", "--timeout", "2s"],
        )
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no peer connected within 2s"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// Fault matrix row 72: a listener stopped (SIGSTOP) mid-session kept `--peer` waiting
/// 22.7 s under `--timeout 5s`: the bandwidth engine waited its own 10 s stall limit and
/// 15 s for results, then the session went on to wait for a verdict. Now the engine's
/// stall limit is the --timeout, counted from the peer's last sign of life, and a peer
/// that stalled ends the session at once. Stops land at several moments of the session.
#[test]
fn a_listener_stopped_mid_session_fails_the_peer_within_its_timeout() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    for stop_after_ms in [300u64, 700, 1100, 1500] {
        let mut listener = start_listener(&pair, "30s", &[], None);
        let mut peer = pair
            .b
            .command(BIN)
            .args(["--iface", Pair::IFACE, "--peer", Pair::ADDR_A])
            .args(["--quick", "--timeout", "3s", "--json"])
            .env_remove("NODELINK_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(stop_after_ms));
        let stop = |signal: &str| {
            std::process::Command::new("kill")
                .args([signal, &listener.id().to_string()])
                .status()
                .unwrap()
        };
        stop("-STOP");
        let stopped = std::time::Instant::now();
        let output = loop {
            if peer.try_wait().unwrap().is_some() {
                break peer.wait_with_output().unwrap();
            }
            if stopped.elapsed() > std::time::Duration::from_secs(20) {
                let _ = peer.kill();
                break peer.wait_with_output().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let took = stopped.elapsed();
        stop("-CONT");
        let _ = listener.kill();
        let _ = listener.wait();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            // The session was already over when the stop landed.
            continue;
        }
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            took < std::time::Duration::from_millis(5500),
            "stopped {stop_after_ms} ms in, the peer took {took:?} to give up: {stderr}"
        );
    }
}

#[test]
fn emit_env_prints_exports_only_when_nothing_fails() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    // Pinning Gloo clears the namespace's hostname-on-loopback failure.
    let output = pair
        .a
        .command(BIN)
        .args(["--iface", Pair::IFACE, "--emit-env"])
        .env("GLOO_SOCKET_IFNAME", Pair::IFACE)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout,
        "export NCCL_SOCKET_IFNAME='=nl0'\nexport GLOO_SOCKET_IFNAME='nl0'\nexport VLLM_HOST_IP='10.77.0.1'\n"
    );
    pair.a.ip(&["link", "set", Pair::IFACE, "down"]).unwrap();
    let output = pair
        .a
        .command(BIN)
        .args(["--iface", Pair::IFACE, "--emit-env"])
        .env("GLOO_SOCKET_IFNAME", Pair::IFACE)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no environment emitted") && stderr.contains("iface.up"),
        "{stderr}"
    );
}

/// Starts `netcheck --cluster --hosts ...` on each listed node of `star`, rank 0 last so
/// the others are already trying to join.
fn cluster_spawn(
    star: &testbed::Star,
    ranks: &[usize],
    world: usize,
    extra: &[&str],
) -> Vec<(usize, std::process::Child)> {
    let hosts: Vec<String> = (0..world).map(testbed::Star::addr).collect();
    let hosts = hosts.join(",");
    let mut order: Vec<usize> = ranks.to_vec();
    order.sort_by_key(|&r| r == 0);
    order
        .into_iter()
        .map(|rank| {
            let child = star.nodes[rank]
                .command(BIN)
                .args([
                    "--iface",
                    testbed::Star::IFACE,
                    "--cluster",
                    "--hosts",
                    &hosts,
                    "--quick",
                    "--json",
                ])
                .args(extra)
                .env_remove("NODELINK_TOKEN")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (rank, child)
        })
        .collect()
}

/// Four nodes, one with a NIC at a quarter of the others' rate: rank 0's report names the
/// node (not its three links), the matrix holds each shaped rate, the bundle is written,
/// and every node exits with the same verdict.
#[test]
fn a_cluster_of_four_names_the_slow_node_and_every_node_gets_the_verdict() {
    let Some(star) = build_or_skip(|| testbed::Star::new(4)) else {
        return;
    };
    for index in 0..4 {
        let rate = if index == 2 { "250mbit" } else { "1gbit" };
        star.shape_node(index, rate).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let started = std::time::Instant::now();
    let children = cluster_spawn(&star, &[0, 1, 2, 3], 4, &["--out", out.to_str().unwrap()]);
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(rank, child)| (rank, child.wait_with_output().unwrap()))
        .collect();
    let took = started.elapsed();
    let (_, rank0) = outputs.iter().find(|(r, _)| *r == 0).unwrap();
    let report = json_of(rank0);
    assert_eq!(
        report["slow_nodes"],
        serde_json::json!([2]),
        "{}",
        report["findings"]
    );
    let bw = report["bandwidth_gbps"].as_array().unwrap();
    for (i, row) in bw.iter().enumerate() {
        for (j, cell) in row.as_array().unwrap().iter().enumerate() {
            if i == j {
                continue;
            }
            let rate = cell
                .as_f64()
                .unwrap_or_else(|| panic!("no figure {i}->{j}"));
            let shaped = if i == 2 || j == 2 { 0.25 } else { 1.0 };
            assert!(
                rate > 0.8 * shaped && rate < 1.05 * shaped,
                "{i}->{j}: {rate} Gbit/s on a {shaped} Gbit/s path"
            );
        }
    }
    let code = rank0.status.code();
    for (rank, output) in &outputs {
        assert_eq!(
            output.status.code(),
            code,
            "rank {rank}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if *rank != 0 {
            assert_eq!(json_of(output)["exit_code"].as_i64(), code.map(i64::from));
        }
        // Every rank's document reads back as the cluster record.
        let text = String::from_utf8_lossy(&output.stdout);
        let Ok(measure::record::Record::NetcheckCluster(typed)) =
            measure::record::Record::from_json(&text)
        else {
            panic!("rank {rank}: not a cluster record: {text}")
        };
        assert_eq!((typed.world, Some(i32::from(typed.exit_code))), (4, code));
        if *rank == 0 {
            assert_eq!(typed.slow_nodes, [2]);
        }
    }
    assert_eq!(code, Some(2), "a slow node fails the cluster");
    for file in [
        "report.json",
        "bandwidth.csv",
        "latency.csv",
        "bandwidth.svg",
    ] {
        assert!(out.join(file).is_file(), "{file} missing from the bundle");
    }
    let csv = std::fs::read_to_string(out.join("bandwidth.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    eprintln!("4-node cluster run with a second pass: {took:?}");
}

/// One node's interface is down: that node's own report fails iface.up, rank 0 names it
/// as the node that never joined, the two others still test each other, and every node
/// exits with a failure.
#[test]
fn an_interface_down_on_one_node_is_named_by_that_node_and_by_rank_0() {
    let Some(star) = build_or_skip(|| testbed::Star::new(3)) else {
        return;
    };
    star.nodes[2]
        .ip(&["link", "set", testbed::Star::IFACE, "down"])
        .unwrap();
    let started = std::time::Instant::now();
    let children = cluster_spawn(&star, &[0, 1, 2], 3, &["--timeout", "4s"]);
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(rank, child)| (rank, child.wait_with_output().unwrap()))
        .collect();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let output = |rank: usize| &outputs.iter().find(|(r, _)| *r == rank).unwrap().1;
    let report = json_of(output(0));
    let down = &report["nodes"][2];
    assert!(
        down["error"]
            .as_str()
            .unwrap_or_default()
            .contains("never joined"),
        "{down}"
    );
    assert!(
        report["bandwidth_gbps"][0][1].as_f64().is_some(),
        "{report}"
    );
    // The node itself says why: its interface is down.
    let own = String::from_utf8_lossy(&output(2).stdout).into_owned()
        + &String::from_utf8_lossy(&output(2).stderr);
    assert!(own.contains("iface.up"), "{own}");
    assert!(own.contains("down"), "{own}");
    for rank in 0..3 {
        assert_eq!(output(rank).status.code(), Some(2), "rank {rank}");
    }
}

#[test]
fn a_node_that_never_starts_is_named_and_the_others_finish() {
    let Some(star) = build_or_skip(|| testbed::Star::new(3)) else {
        return;
    };
    let started = std::time::Instant::now();
    let children = cluster_spawn(&star, &[0, 1], 3, &["--timeout", "4s"]);
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(rank, child)| (rank, child.wait_with_output().unwrap()))
        .collect();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let (_, rank0) = outputs.iter().find(|(r, _)| *r == 0).unwrap();
    let report = json_of(rank0);
    let absent = &report["nodes"][2];
    assert!(
        absent["error"]
            .as_str()
            .unwrap_or_default()
            .contains("never joined"),
        "{absent}"
    );
    // The two present nodes still tested each other.
    assert!(
        report["bandwidth_gbps"][0][1].as_f64().is_some(),
        "{report}"
    );
    for (rank, output) in &outputs {
        assert_eq!(output.status.code(), Some(2), "rank {rank}");
    }
}

#[test]
fn a_node_killed_mid_run_fails_its_pairs_and_the_others_report() {
    let Some(star) = build_or_skip(|| testbed::Star::new(4)) else {
        return;
    };
    star.shape("1gbit").unwrap();
    let started = std::time::Instant::now();
    let mut children = cluster_spawn(&star, &[0, 1, 2, 3], 4, &["--timeout", "10s"]);
    // Kill rank 3 once its first pair session moves data.
    star.nodes[3].wait_for_tx(
        testbed::Star::IFACE,
        2 << 20,
        std::time::Duration::from_secs(30),
    );
    let (_, victim) = children.iter_mut().find(|(r, _)| *r == 3).unwrap();
    victim.kill().unwrap();
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(rank, child)| (rank, child.wait_with_output().unwrap()))
        .collect();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let (_, rank0) = outputs.iter().find(|(r, _)| *r == 0).unwrap();
    assert_eq!(rank0.status.code(), Some(2));
    let report = json_of(rank0);
    let findings = report["findings"].to_string();
    assert!(findings.contains("rank 3"), "{findings}");
    for (rank, output) in outputs.iter().filter(|(r, _)| *r != 3) {
        assert_eq!(
            output.status.code(),
            Some(2),
            "rank {rank}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The surviving nodes still measured each other.
    assert!(
        report["bandwidth_gbps"][0][1].as_f64().is_some(),
        "{report}"
    );
}

/// A masquerading router between the two nodes: the listener sees the router's address,
/// not the peer's own, and pair.nat says so with the address to advertise instead.
#[test]
fn masquerade_nat_between_two_nodes_fails_pair_nat() {
    let Some((a, r, b)) = build_or_skip(|| {
        let (a, r, b) = (
            testbed::Netns::new()?,
            testbed::Netns::new()?,
            testbed::Netns::new()?,
        );
        for (left, lname, right, rname) in [(&a, "nl0", &r, "ra"), (&r, "rb", &b, "nl0")] {
            testbed::ip(&[
                "link",
                "add",
                lname,
                "netns",
                &left.name,
                "type",
                "veth",
                "peer",
                "name",
                rname,
                "netns",
                &right.name,
            ])?;
        }
        a.ip(&["addr", "add", "10.81.1.2/24", "dev", "nl0"])?;
        r.ip(&["addr", "add", "10.81.1.1/24", "dev", "ra"])?;
        r.ip(&["addr", "add", "10.81.2.1/24", "dev", "rb"])?;
        b.ip(&["addr", "add", "10.81.2.2/24", "dev", "nl0"])?;
        for (ns, dev) in [(&a, "nl0"), (&r, "ra"), (&r, "rb"), (&b, "nl0")] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        a.ip(&["route", "add", "default", "via", "10.81.1.1"])?;
        b.ip(&["route", "add", "10.81.1.0/24", "via", "10.81.2.1"])?;
        let sysctl = r.output("sysctl", &["-w", "net.ipv4.ip_forward=1"])?;
        if !sysctl.status.success() {
            return Err("sysctl ip_forward failed".to_string());
        }
        for args in [
            &["add", "table", "ip", "nlnat"][..],
            &[
                "add",
                "chain",
                "ip",
                "nlnat",
                "post",
                "{ type nat hook postrouting priority 100; }",
            ][..],
            &[
                "add",
                "rule",
                "ip",
                "nlnat",
                "post",
                "oifname",
                "rb",
                "masquerade",
            ][..],
        ] {
            let out = r.output("nft", args)?;
            if !out.status.success() {
                return Err(format!(
                    "nft {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok((a, r, b))
    }) else {
        return;
    };
    let listener = b
        .command(BIN)
        .args([
            "--iface",
            "nl0",
            "--listen",
            "--quick",
            "--timeout",
            "30s",
            "--json",
        ])
        .env_remove("NODELINK_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let peer = a
        .output(
            BIN,
            &["--iface", "nl0", "--peer", "10.81.2.2", "--quick", "--json"],
        )
        .unwrap();
    let _ = listener.wait_with_output();
    let check = pair_check(&json_of(&peer), "pair.nat").clone();
    assert_eq!(check["status"], "fail", "{check}");
    let summary = check["summary"].as_str().unwrap();
    assert!(
        summary.contains("come from 10.81.2.1") && summary.contains("10.81.1.2"),
        "{summary}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap()
            .contains("--node-ip-address=10.81.2.1"),
        "{check}"
    );
    drop(r);
}

/// Ray's minor version differs between the nodes (fixture dist-info on PYTHONPATH):
/// pair.versions fails and says which node has what.
#[test]
fn a_ray_version_skew_fails_pair_versions_naming_each_node() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (side, version) in [("a", "2.35.0"), ("b", "2.9.3")] {
        std::fs::create_dir_all(
            dir.path()
                .join(side)
                .join(format!("ray-{version}.dist-info")),
        )
        .unwrap();
    }
    let listener = pair
        .a
        .command(BIN)
        .args([
            "--iface",
            Pair::IFACE,
            "--listen",
            "--quick",
            "--timeout",
            "30s",
            "--json",
        ])
        .env("PYTHONPATH", dir.path().join("a"))
        .env_remove("NODELINK_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let peer = pair
        .b
        .command(BIN)
        .args([
            "--iface",
            Pair::IFACE,
            "--peer",
            Pair::ADDR_A,
            "--quick",
            "--json",
        ])
        .env("PYTHONPATH", dir.path().join("b"))
        .env_remove("NODELINK_TOKEN")
        .output()
        .unwrap();
    let _ = listener.wait_with_output();
    let check = pair_check(&json_of(&peer), "pair.versions").clone();
    assert_eq!(check["status"], "fail", "{check}");
    let summary = check["summary"].as_str().unwrap();
    assert!(
        summary.contains("ray 2.9.3 on") && summary.contains("2.35.0 on"),
        "{summary}"
    );
}

/// `--expect` marks each figure OK or FAILED: a floor no veth reaches fails every link.
#[test]
fn cluster_expectations_mark_each_figure() {
    let Some(star) = build_or_skip(|| testbed::Star::new(2)) else {
        return;
    };
    star.shape("1gbit").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expect.toml");
    std::fs::write(
        &file,
        "[link]\ntcp_min_gbps = 5.0\nmax_latency_us = 100000.0\n",
    )
    .unwrap();
    let children = cluster_spawn(&star, &[0, 1], 2, &["--expect", file.to_str().unwrap()]);
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(rank, child)| (rank, child.wait_with_output().unwrap()))
        .collect();
    let (_, rank0) = outputs.iter().find(|(r, _)| *r == 0).unwrap();
    let report = json_of(rank0);
    let verdicts = report["expectations"].as_array().unwrap();
    let failed: Vec<&Value> = verdicts.iter().filter(|v| v["ok"] == false).collect();
    let passed: Vec<&Value> = verdicts.iter().filter(|v| v["ok"] == true).collect();
    assert_eq!(
        failed.len(),
        2,
        "both directions below 5 Gbit/s: {verdicts:?}"
    );
    assert_eq!(
        passed.len(),
        1,
        "the latency is under its generous bound: {verdicts:?}"
    );
    assert_eq!(rank0.status.code(), Some(2));
    // A typo in the file is one sentence and exit 64, before anything runs.
    std::fs::write(&file, "[link]\ntcp_min = 5\n").unwrap();
    let out = star.nodes[0]
        .output(
            BIN,
            &[
                "--iface",
                "nl0",
                "--cluster",
                "--hosts",
                "10.78.0.1,10.78.0.2",
                "--expect",
                file.to_str().unwrap(),
            ],
        )
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A clean four-node cluster passes with exit 0 on every node: nodes that resolve each
/// other by name (their own hostnames and /etc/hosts), a default route on the cluster
/// interface, and the veth testbed's two truthful warnings accepted by name.
#[test]
fn a_clean_cluster_of_four_passes_with_exit_0_everywhere() {
    let Some(star) = build_or_skip(|| testbed::Star::new(4)) else {
        return;
    };
    let hosts: String = (0..4)
        .map(|i| format!("{} node{i}\n", testbed::Star::addr(i)))
        .collect::<String>()
        + "127.0.0.1 localhost\n";
    for node in &star.nodes {
        node.set_hosts(&hosts).unwrap();
        node.ip(&["route", "add", "default", "dev", testbed::Star::IFACE])
            .unwrap();
    }
    // Equal NICs: unshaped veth rates follow the two CPUs, not the links.
    star.shape("1gbit").unwrap();
    let list: Vec<String> = (0..4).map(testbed::Star::addr).collect();
    let list = list.join(",");
    let spawn = |rank: usize| {
        star.nodes[rank]
            .command_as(
                &format!("node{rank}"),
                BIN,
                &[
                    "--iface",
                    testbed::Star::IFACE,
                    "--cluster",
                    "--hosts",
                    &list,
                    "--quick",
                    "--json",
                    "--accept",
                    "iface.speed,container.network",
                ],
            )
            .env_remove("NODELINK_TOKEN")
            .env_remove("NCCL_SOCKET_IFNAME")
            .env_remove("GLOO_SOCKET_IFNAME")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = [1, 2, 3, 0].into_iter().map(|r| (r, spawn(r))).collect();
    let outputs: Vec<(usize, Output)> = children
        .into_iter()
        .map(|(r, c)| (r, c.wait_with_output().unwrap()))
        .collect();
    let (_, rank0) = outputs.iter().find(|(r, _)| *r == 0).unwrap();
    let report = json_of(rank0);
    assert_eq!(
        report["findings"],
        serde_json::json!([]),
        "{}",
        report["findings"]
    );
    for (rank, output) in &outputs {
        assert_eq!(
            output.status.code(),
            Some(0),
            "rank {rank}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A typo in --accept accepts nothing: exit 64 naming the check.
    let out = star.nodes[0]
        .output(BIN, &["--iface", "nl0", "--accept", "iface.sped"])
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept iface.sped: no such check"));
}

/// README's conventions table says which shared flags this tool has; its --help must agree.
#[test]
fn readme_conventions_row_matches_the_help() {
    use testbed::readme::{assert_row_matches, help_of};
    assert_row_matches("netcheck", &[help_of(BIN, &[])]);
}

/// The local check either produces each output flag's output or refuses the flag (exit 64,
/// one sentence naming it): JSON and -q, no CSV or chart. Its verdict (0, 1 or 2) depends
/// on this machine, so any of them counts as a run.
#[test]
fn every_output_flag_is_honoured_or_refused() {
    use testbed::outputs::{walk, Flag, Mode, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let modes = [Mode::new("local", &[]).exiting(&[0, 1, 2])];
    walk(
        BIN,
        &modes,
        |_, flag| match flag {
            Flag::Json | Flag::Quiet => Outcome::Honoured,
            _ => Outcome::Refused,
        },
        dir.path(),
    );
}

/// Holes: `--listen` greeted one connection at a time, 10 s each whatever `--timeout`
/// said, so one silent stranger kept the real peer out; and a wrong token was refused in
/// the pair message set, which the peer (still in the opening) read as "unknown message
/// kind 113: run the same nodelink version". Now strangers are greeted on their own
/// threads within the timeout, and the refusal names NODELINK_TOKEN.
#[test]
fn a_silent_stranger_does_not_keep_the_peer_out_and_a_wrong_token_is_named() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    let listener = start_listener(&pair, "8s", &[], Some("right"));
    let started = std::time::Instant::now();
    // A stranger that connects and says nothing, for longer than the listener waits.
    let silent = format!("exec 3<>/dev/tcp/{}/18516; sleep 30", Pair::ADDR_A);
    let mut stranger = pair
        .b
        .command("bash")
        .args(["-c", &silent])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let peer = |token: &str| {
        pair.b
            .command(BIN)
            .args([
                "--iface",
                Pair::IFACE,
                "--peer",
                Pair::ADDR_A,
                "--quick",
                "--json",
            ])
            .env("NODELINK_TOKEN", token)
            .output()
            .unwrap()
    };
    let wrong = peer("wrong");
    let right = peer("right");
    let listened = listener.wait_with_output().unwrap();
    let _ = stranger.kill();
    let _ = stranger.wait();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NODELINK_TOKEN"), "{stderr}");
    assert!(!stderr.contains("unknown message kind"), "{stderr}");
    assert!(
        right.status.code().is_some_and(|c| c <= 2)
            && serde_json::from_slice::<Value>(&right.stdout)
                .is_ok_and(|d| d["pair"]["checks"].is_array()),
        "the real peer was not served: {}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(
        serde_json::from_slice::<Value>(&listened.stdout)
            .is_ok_and(|d| d["pair"]["checks"].is_array()),
        "{}",
        String::from_utf8_lossy(&listened.stderr)
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// Hole: any environment variable that is not UTF-8 (anyone's, not only ours) made the
/// local checks panic (`std::env::vars`).
#[test]
fn a_non_utf8_environment_variable_does_not_panic() {
    use std::os::unix::ffi::OsStrExt;
    let output = Command::new(BIN)
        .args(["--iface", "lo", "--json"])
        .env("NCCL_NOT_UTF8", std::ffi::OsStr::from_bytes(b"\xff\xfe"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(matches!(output.status.code(), Some(0..=2)), "{stderr}");
    assert!(
        serde_json::from_slice::<Value>(&output.stdout).is_ok(),
        "{stderr}"
    );
}
