//! The deploy glue (scripts/deploy, configs/k8s) with netcheck as the gate: a real Ray
//! cluster across two namespaces started by head.sh and worker.sh, the refusals a broken
//! network gets before `ray start`, shellcheck over every script, and the Kubernetes
//! manifests parsed for the fields the scripts rely on.
//!
//! Ray comes from a venv (`.ci/run` installs it; NODELINK_RAY_VENV, default
//! /var/tmp/nodelink-ray-venv); shellcheck from Debian. Without them these tests skip,
//! unless NODELINK_REQUIRE_DEPLOY_TOOLS=1 (CI), which makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testbed::{build_or_skip, Netns, Pair};

const NETCHECK: &str = env!("CARGO_BIN_EXE_netcheck");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("NODELINK_REQUIRE_DEPLOY_TOOLS").as_deref() == Ok("1")
}

/// The venv's bin folder, if Ray is installed there.
fn ray_bin() -> Option<PathBuf> {
    let venv =
        std::env::var("NODELINK_RAY_VENV").unwrap_or_else(|_| "/var/tmp/nodelink-ray-venv".into());
    let bin = Path::new(&venv).join("bin");
    if bin.join("ray").is_file() {
        return Some(bin);
    }
    assert!(
        !required(),
        "Ray is not installed in {venv} (NODELINK_REQUIRE_DEPLOY_TOOLS=1): .ci/run installs it"
    );
    eprintln!("skipped: no Ray in {venv}");
    None
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Both nodes resolve each other by name, as real nodes do (namespaces share the host's
/// hostname otherwise, and every hostname check would rightly fail).
fn named(pair: &Pair) {
    let hosts = "127.0.0.1 localhost\n10.77.0.1 node-a\n10.77.0.2 node-b\n";
    pair.a.set_hosts(hosts).unwrap();
    pair.b.set_hosts(hosts).unwrap();
}

/// A deploy script in `ns` as `hostname`, with netcheck and (when given) Ray on PATH.
fn script(ns: &Netns, hostname: &str, name: &str, args: &[&str], ray: Option<&Path>) -> Command {
    let path = root().join("scripts/deploy").join(name);
    let mut command = ns.command_as(hostname, path.to_str().unwrap(), args);
    let mut path = Path::new(NETCHECK).parent().unwrap().display().to_string();
    if let Some(bin) = ray {
        path = format!("{path}:{}", bin.display());
    }
    path.push_str(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    command
        .env("PATH", path)
        .env("NETCHECK", NETCHECK)
        .env_remove("NODELINK_TOKEN")
        .env_remove("NCCL_SOCKET_IFNAME")
        .env_remove("GLOO_SOCKET_IFNAME");
    if let Some(bin) = ray {
        command.env("PYTHON", bin.join("python"));
    }
    command
}

struct RayCleanup(PathBuf);

impl Drop for RayCleanup {
    fn drop(&mut self) {
        // `ray stop` finds Ray's processes by name, in every namespace.
        let _ = Command::new(self.0.join("ray"))
            .args(["stop", "--force"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn head_and_worker_start_a_two_node_ray_cluster_on_the_checked_addresses() {
    let Some(ray) = ray_bin() else { return };
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    named(&pair);
    let _cleanup = RayCleanup(ray.clone());
    let temp = tempfile::tempdir().unwrap();
    let (temp_a, temp_b) = (temp.path().join("a"), temp.path().join("b"));

    // The pre-flight alone: warnings here (a 10 Gbit/s veth, no default route) refuse
    // without --force and pass with it; exit codes are netcheck's.
    let check = script(
        &pair.a,
        "node-a",
        "head.sh",
        &["--iface", "nl0", "--check-only"],
        Some(&ray),
    )
    .output()
    .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("pass --force"), "{}", text(&check));
    let check = script(
        &pair.a,
        "node-a",
        "head.sh",
        &["--iface", "nl0", "--check-only", "--force"],
        Some(&ray),
    )
    .output()
    .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(
        text(&check).contains("VLLM_HOST_IP='10.77.0.1'"),
        "{}",
        text(&check)
    );

    let started = Instant::now();
    let head = script(
        &pair.a,
        "node-a",
        "head.sh",
        &[
            "--iface",
            "nl0",
            "--force",
            "--no-serve",
            "--expect-nodes",
            "2",
            "--wait",
            "180",
            "--temp-dir",
            temp_a.to_str().unwrap(),
        ],
        Some(&ray),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The head answers pair checks once its own pre-flight passed; the worker retries
    // while it is not up yet.
    std::thread::sleep(Duration::from_secs(2));
    let worker = script(
        &pair.b,
        "node-b",
        "worker.sh",
        &[
            "--iface",
            "nl0",
            "--head-ip",
            "10.77.0.1",
            "--force",
            "--temp-dir",
            temp_b.to_str().unwrap(),
        ],
        Some(&ray),
    )
    .output()
    .unwrap();
    let head = head.wait_with_output().unwrap();
    let took = started.elapsed();
    assert_eq!(worker.status.code(), Some(0), "worker: {}", text(&worker));
    assert!(
        text(&worker).contains("pair checks between node-b (10.77.0.2)"),
        "{}",
        text(&worker)
    );
    assert_eq!(head.status.code(), Some(0), "head: {}", text(&head));
    assert!(
        text(&head).contains("vllm not installed: not serving"),
        "{}",
        text(&head)
    );
    // Ray sees both nodes, at the addresses netcheck chose.
    let nodes = pair
        .a
        .command(ray.join("python").to_str().unwrap())
        .args([
            "-c",
            "import ray; ray.init(address='10.77.0.1:6379', logging_level='ERROR'); \
             print(sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))",
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        listed.contains("['10.77.0.1', '10.77.0.2']"),
        "{listed} {}",
        String::from_utf8_lossy(&nodes.stderr)
    );
    eprintln!("head.sh to a 2-node ray status: {took:?}");
}

/// worker.sh against a head that answers pair checks (what head.sh runs before Ray):
/// each broken network must be refused before `ray start`, in under 15 s, with
/// netcheck's failing check printed.
fn refused(pair: &Pair, worker_env: &[(&str, &str)], expected_check: &str) {
    let mut listener = pair.a.command_as(
        "node-a",
        NETCHECK,
        &[
            "--iface",
            "nl0",
            "--listen",
            "--quick",
            "-q",
            "--timeout",
            "30s",
        ],
    );
    let mut listener = listener
        .env_remove("NODELINK_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut worker = script(
        &pair.b,
        "node-b",
        "worker.sh",
        &["--iface", "nl0", "--head-ip", "10.77.0.1", "--force"],
        None,
    );
    for (key, value) in worker_env {
        worker.env(key, value);
    }
    let output = worker.output().unwrap();
    let took = started.elapsed();
    let _ = listener.kill();
    let _ = listener.wait();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(2), "{all}");
    assert!(all.contains(expected_check), "{all}");
    assert!(
        !all.contains("ray start --address"),
        "got as far as ray start: {all}"
    );
    assert!(all.contains("refusing to start"), "{all}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    eprintln!("refused ({expected_check}) in {took:?}");
}

#[test]
fn a_firewalled_ray_port_on_the_head_is_refused_before_ray_start() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    named(&pair);
    pair.a
        .drop_inbound_tcp(6379)
        .expect("nftables (apt-get install nftables)");
    refused(&pair, &[], "pair.ports");
}

#[test]
fn an_mtu_mismatch_is_refused_before_ray_start() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    named(&pair);
    pair.a
        .ip(&["link", "set", Pair::IFACE, "mtu", "9000"])
        .unwrap();
    refused(&pair, &[], "pair.mtu");
}

#[test]
fn a_wrong_nccl_interface_on_the_worker_is_refused_before_ray_start() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    named(&pair);
    refused(
        &pair,
        &[("NCCL_SOCKET_IFNAME", "eno9")],
        "env.nccl_socket_ifname",
    );
}

#[test]
fn every_deploy_script_passes_shellcheck_and_bash_n() {
    let scripts: Vec<PathBuf> = ["scripts/deploy", "scripts/deploy/slurm"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(scripts.len() >= 5, "{scripts:?}");
    for script in &scripts {
        let out = Command::new("bash").arg("-n").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            script.display(),
            text(&out)
        );
    }
    let Ok(out) = Command::new("shellcheck")
        .arg("-x")
        .args(&scripts)
        .current_dir(root())
        .output()
    else {
        assert!(
            !required(),
            "shellcheck is not installed (NODELINK_REQUIRE_DEPLOY_TOOLS=1)"
        );
        eprintln!("skipped: shellcheck not installed");
        return;
    };
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
}

fn yaml_documents(file: &str) -> Vec<serde_yaml::Value> {
    let body = std::fs::read_to_string(root().join("configs/k8s").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&body)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn command_line(container: &serde_yaml::Value) -> String {
    ["command", "args"]
        .iter()
        .filter_map(|k| container[*k].as_sequence())
        .flatten()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_kubernetes_manifests_carry_what_the_scripts_rely_on() {
    let lws = yaml_documents("vllm-lws.yaml");
    assert_eq!(lws.len(), 1);
    assert_eq!(lws[0]["kind"].as_str(), Some("LeaderWorkerSet"));
    for template in ["leaderTemplate", "workerTemplate"] {
        let spec = &lws[0]["spec"]["leaderWorkerTemplate"][template]["spec"];
        assert_eq!(spec["hostNetwork"].as_bool(), Some(true), "{template}");
        let init = &spec["initContainers"][0];
        assert!(
            init["image"].as_str().is_some_and(|i| !i.is_empty()),
            "{template}"
        );
        let line = command_line(init);
        assert!(
            line.contains("netcheck") && line.contains("--cluster"),
            "{template}: {line}"
        );
        assert!(
            init["env"][0]["name"].as_str() == Some("NODELINK_TOKEN"),
            "{template}"
        );
        let main = command_line(&spec["containers"][0]);
        let script = if template == "leaderTemplate" {
            "head.sh"
        } else {
            "worker.sh"
        };
        assert!(main.contains(script), "{template}: {main}");
    }
    for file in ["netcheck-job.yaml", "netcheck-cronjob.yaml"] {
        let docs = yaml_documents(file);
        let job = docs
            .iter()
            .find(|d| matches!(d["kind"].as_str(), Some("Job" | "CronJob")))
            .unwrap();
        let spec = if job["kind"].as_str() == Some("CronJob") {
            &job["spec"]["jobTemplate"]["spec"]
        } else {
            &job["spec"]
        };
        assert_eq!(spec["completionMode"].as_str(), Some("Indexed"), "{file}");
        let container = &spec["template"]["spec"]["containers"][0];
        let line = command_line(container);
        assert!(
            line.contains("--cluster")
                && line.contains("$JOB_COMPLETION_INDEX")
                && line.contains("--out"),
            "{file}: {line}"
        );
    }
    let cron = yaml_documents("netcheck-cronjob.yaml");
    assert!(cron
        .iter()
        .any(|d| d["kind"].as_str() == Some("PriorityClass")));
}

/// `srun netcheck --cluster` in the sbatch script takes rank and world from Slurm: two
/// tasks with SLURM_* set by hand, in two namespaces.
#[test]
fn cluster_mode_reads_rank_and_world_from_a_slurm_environment() {
    let Some(pair) = build_or_skip(Pair::new) else {
        return;
    };
    named(&pair);
    let spawn = |ns: &Netns, host: &str, rank: &str| {
        ns.command_as(
            host,
            NETCHECK,
            &[
                "--iface",
                "nl0",
                "--cluster",
                "--quick",
                "--json",
                "--timeout",
                "20s",
            ],
        )
        .env("SLURM_PROCID", rank)
        .env("SLURM_NTASKS", "2")
        .env("SLURM_LAUNCH_NODE_IPADDR", "10.77.0.1")
        .env_remove("NODELINK_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let worker = spawn(&pair.b, "node-b", "1");
    let head = spawn(&pair.a, "node-a", "0");
    let (head, worker) = (
        head.wait_with_output().unwrap(),
        worker.wait_with_output().unwrap(),
    );
    let report: serde_json::Value =
        serde_json::from_slice(&head.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&head)));
    assert_eq!(report["world"], 2, "{report}");
    assert!(
        report["bandwidth_gbps"][1][0].as_f64().is_some(),
        "{report}"
    );
    let verdict: serde_json::Value =
        serde_json::from_slice(&worker.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&worker)));
    assert_eq!(verdict["rank"], 1);
    assert_eq!(head.status.code(), worker.status.code());
}
