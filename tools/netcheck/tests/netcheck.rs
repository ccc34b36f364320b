//! Runs the real netcheck binary: on this host for flag handling and JSON shape, and in
//! network namespaces for interface state, addresses, MTU and port conflicts.

use serde_json::Value;
use std::process::{Command, Output};
use testbed::{build_or_skip, Pair};

const BIN: &str = env!("CARGO_BIN_EXE_netcheck");

fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"))
}

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
    assert_eq!(checks.len(), 15);
    for c in checks {
        assert!(["pass", "warn", "fail", "info", "skip"].contains(&c["status"].as_str().unwrap()));
        assert!(c["summary"].is_string() && c["fix"].is_string() && c["evidence"].is_object());
    }
    let summary = &document["summary"];
    let total: u64 = ["pass", "warn", "fail", "info", "skip"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 15);
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
    } else if summary["warn"].as_u64() > Some(0) {
        1
    } else {
        0
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
