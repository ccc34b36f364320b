//! Runs the real collbench binary: local ranks, ranks in separate network namespaces
//! joined by a switch, launcher environments, and ranks that never come or die mid-run.

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use testbed::{build_or_skip, Star};

const BIN: &str = env!("CARGO_BIN_EXE_collbench");

use testbed::json_of;

fn assert_rows_correct(document: &Value, world: u64) {
    assert_eq!(document["world"], world);
    let rows = document["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["wrong"], 0, "{row}");
        assert_eq!(row["in_place"]["wrong"], 0, "{row}");
        assert!(row["time_us"].as_f64().unwrap() > 0.0);
        let algbw = row["algbw_gbs"].as_f64().unwrap();
        let expected = row["bytes"].as_f64().unwrap() / row["time_us"].as_f64().unwrap() / 1e3;
        assert!((algbw - expected).abs() <= 1e-9 + expected * 1e-6, "{row}");
    }
}

#[test]
fn local_ranks_json_has_the_nccl_tests_fields() {
    let output = Command::new(BIN)
        .args([
            "--ranks", "3", "-b", "8", "-e", "64K", "-f", "4", "-n", "2", "-w", "1", "--json",
            "-d", "bf16",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = json_of(&output);
    assert_rows_correct(&document, 3);
    assert_eq!(document["op"], "all_reduce");
    let row = &document["rows"][0];
    for key in [
        "bytes",
        "count",
        "dtype",
        "redop",
        "time_us",
        "algbw_gbs",
        "busbw_gbs",
        "wrong",
    ] {
        assert!(!row[key].is_null(), "{key} missing in {row}");
    }
    // busbw = algbw x 2(n-1)/n for all_reduce.
    let ratio = row["busbw_gbs"].as_f64().unwrap() / row["algbw_gbs"].as_f64().unwrap();
    assert!((ratio - 4.0 / 3.0).abs() < 1e-9);
    assert!(document["avg_busbw_gbs"].as_f64().unwrap() > 0.0);
}

#[test]
fn text_output_has_nccl_tests_columns() {
    let output = Command::new(BIN)
        .args([
            "--ranks",
            "2",
            "--op",
            "all_gather",
            "-b",
            "1K",
            "-e",
            "4K",
            "-n",
            "2",
            "-w",
            "0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("#wrong") && text.contains("algbw") && text.contains("busbw"));
    assert!(text.contains("# Avg bus bandwidth"));
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        3,
        "{text}"
    );
}

#[test]
fn bad_flags_exit_64_with_a_sentence() {
    for args in [
        &["--op", "allreduce_typo"][..],
        &["-d", "f64"][..],
        &["-o", "prod"][..],
        &["-b", "1M", "-e", "1K"][..],
        &["--rank", "0"][..],
        &["--ranks", "2", "--rank", "0", "--world", "2"][..],
        &[
            "model",
            "--ranks",
            "2",
            "--model",
            "llama-3.1-8b",
            "--tp",
            "4",
        ][..],
        &["model", "--ranks", "2", "--model", "gpt-9", "--tp", "2"][..],
        // A mode's flags belong to its subcommand.
        &["--ranks", "2", "--layers", "2"][..],
        &["--ranks", "2", "synthetic-step"][..],
    ] {
        let output = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with("collbench: error:") || stderr.contains("error:"),
            "{stderr}"
        );
    }
}

#[test]
fn nccl_backend_without_a_gpu_is_a_clean_error() {
    let output = Command::new(BIN)
        .args(["--backend", "nccl", "--ranks", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no NVIDIA GPU") && stderr.contains("--backend tcp"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn model_shaped_decode_reports_per_step_costs() {
    let output = Command::new(BIN)
        .args([
            "model",
            "--ranks",
            "2",
            "--model",
            "llama-3.1-8b",
            "--tp",
            "2",
            "--batch",
            "1,8",
            "-n",
            "2",
            "-w",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = json_of(&output);
    let rows = document["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["allreduces_per_step"], 64);
    assert_eq!(rows[0]["allreduce_bytes"], 8192);
    assert_eq!(rows[1]["allreduce_bytes"], 8 * 8192);
    let per_step = rows[1]["tp_comm_ms_per_step"].as_f64().unwrap();
    assert!((per_step - 64.0 * rows[1]["allreduce_us"].as_f64().unwrap() / 1e3).abs() < 1e-6);
}

fn spawn_rank(star: &Star, rank: usize, world: usize, extra: &[&str]) -> Child {
    let master = format!("{}:29500", Star::addr(0));
    let mut command = star.nodes[rank].command(BIN);
    command
        .args([
            "--rank",
            &rank.to_string(),
            "--world",
            &world.to_string(),
            "--master",
            &master,
            "--json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.spawn().unwrap()
}

#[test]
fn four_ranks_in_four_namespaces_agree_on_every_op() {
    let Some(star) = build_or_skip(|| Star::new(4)) else {
        return;
    };
    for op in [
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "broadcast",
        "reduce",
        "alltoall",
        "sendrecv",
    ] {
        let args = [
            "--op", op, "-b", "4", "-e", "1M", "-f", "16", "-n", "2", "-w", "1", "-d", "f16", "-o",
            "max", "-r", "2",
        ];
        let children: Vec<Child> = (0..4).map(|r| spawn_rank(&star, r, 4, &args)).collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for (rank, output) in outputs.iter().enumerate() {
            assert!(
                output.status.success(),
                "{op} rank {rank}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert_rows_correct(&json_of(&outputs[0]), 4);
        assert!(outputs[1].stdout.is_empty(), "only rank 0 prints");
    }
}

#[test]
fn torchrun_environment_is_enough_to_join() {
    let Some(star) = build_or_skip(|| Star::new(2)) else {
        return;
    };
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            star.nodes[rank]
                .command(BIN)
                .args(["-b", "1K", "-e", "1K", "-n", "1", "-w", "0", "--json"])
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", Star::addr(0))
                .env("MASTER_PORT", "29511")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(outputs.iter().all(|o| o.status.success()), "{outputs:?}");
    assert_rows_correct(&json_of(&outputs[0]), 2);
}

#[test]
fn a_missing_rank_is_named_by_everyone_within_the_timeout() {
    let Some(star) = build_or_skip(|| Star::new(3)) else {
        return;
    };
    let started = Instant::now();
    // Rank 2 never starts.
    let children: Vec<Child> = (0..2)
        .map(|r| spawn_rank(&star, r, 3, &["--timeout", "3s"]))
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    for (rank, output) in outputs.iter().enumerate() {
        assert_eq!(output.status.code(), Some(2), "rank {rank}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("rank 2 of 3 never joined"),
            "rank {rank}: {stderr}"
        );
    }
}

#[test]
fn a_rank_killed_mid_run_is_named_by_every_other_rank() {
    // Four ranks in a ring (0 -> 1 -> 2 -> 3 -> 0): rank 3 is no neighbour of rank 1, so
    // alone it would see only the cascade (rank 2 or 0 exiting because of rank 1).
    let Some(star) = build_or_skip(|| Star::new(4)) else {
        return;
    };
    // Large, slow sweep so the kill lands mid-collective.
    let args = [
        "-b",
        "32M",
        "-e",
        "32M",
        "-n",
        "50",
        "-w",
        "0",
        "--timeout",
        "5s",
    ];
    let mut children: Vec<Child> = (0..4).map(|r| spawn_rank(&star, r, 4, &args)).collect();
    // Kill once the collective is moving data (not during rendezvous, however slow the start).
    star.nodes[1].wait_for_tx("nl0", 50_000_000, Duration::from_secs(30));
    children[1].kill().unwrap();
    let started = Instant::now();
    for (rank, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        if rank == 1 {
            continue;
        }
        assert_eq!(output.status.code(), Some(2), "rank {rank}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // One sentence naming rank 1 and the rank that saw it, on every rank.
        let named = stderr.contains(
            "rank 1 closed its connection mid-collective (killed or crashed) (seen by rank",
        ) || stderr.contains("rank 1 sent nothing");
        assert!(named, "rank {rank}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn csv_and_plot_files_hold_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let svg = dir.path().join("busbw.svg");
    let output = Command::new(BIN)
        .args([
            "--ranks", "2", "-b", "1K", "-e", "16K", "-n", "1", "-w", "0", "-q", "--csv",
        ])
        .arg(&csv)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 1 + 5, "{text}");
    assert!(text.starts_with("bytes,count,dtype"));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let bad = Command::new(BIN)
        .args(["--ranks", "1", "-e", "8", "--plot", "x.jpg"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("*.svg or *.png"));
}

#[test]
fn synthetic_step_reports_the_mean_step_time() {
    // 2 layers x (100 us compute + 2 all-reduces): at least 0.2 ms of compute per step.
    let output = Command::new(BIN)
        .args([
            "synthetic-step",
            "--ranks",
            "2",
            "--layers",
            "2",
            "--hidden",
            "256",
            "--batch",
            "4",
            "--compute-us",
            "100",
            "-n",
            "5",
            "-w",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = json_of(&output);
    assert_eq!(document["world"], 2);
    assert_eq!(document["layers"], 2);
    assert_eq!(document["batch"], 4);
    let rows = document["rows"].as_array().unwrap();
    assert_eq!(rows[0]["allreduce_bytes"], 4 * 256 * 2);
    let step = document["step_ms"].as_f64().unwrap();
    assert!(step >= 0.2, "{document}");
    assert!(document["comm_ms"].as_f64().unwrap() < step);
    let bad = Command::new(BIN)
        .args(["synthetic-step", "--ranks", "2", "--layers", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn synthetic_step_runs_a_pipeline_of_stages_with_micro_batches() {
    // TP 2 x PP 2 over 4 ranks, batch 8 in 2 micro-batches of 4: each stage runs 2 of the 4
    // layers per micro-batch, so a round (both micro-batches through both stages) is at
    // least 2 x 2 x 100 us of compute on each stage.
    let run = |extra: &[&str]| {
        let mut args = vec![
            "synthetic-step",
            "--layers",
            "4",
            "--hidden",
            "256",
            "--batch",
            "8",
            "--compute-us",
            "100",
            "-n",
            "5",
            "-w",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        Command::new(BIN).args(&args).output().unwrap()
    };
    let output = run(&["--ranks", "4", "--tp", "2", "--pp", "2"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document = json_of(&output);
    assert_eq!(document["tp"], 2);
    assert_eq!(document["pp"], 2);
    assert_eq!(document["micro_batches"], 2, "vLLM's default: pp in flight");
    let row = &document["rows"][0];
    assert_eq!(row["micro_batch"], 4);
    assert_eq!(row["allreduce_bytes"], 4 * 256 * 2);
    assert_eq!(row["handover_bytes"], 2 * 4 * 256 * 2, "hidden + residual");
    assert_eq!(row["control_bytes"], 1024 + 64 * 4);
    assert_eq!(row["token_bytes"], 8 * 4);
    assert!(document["step_ms"].as_f64().unwrap() >= 0.4, "{document}");
    // PP alone, one micro-batch: the stages take turns.
    let output = run(&["--ranks", "2", "--pp", "2", "--micro-batches", "1"]);
    assert!(output.status.success());
    let document = json_of(&output);
    assert_eq!(
        (document["tp"].as_u64(), document["micro_batches"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(document["step_ms"].as_f64().unwrap() >= 0.4, "{document}");
    // Layouts that cannot be built are refused with the reason.
    for (bad, says) in [
        (vec!["--ranks", "3", "--pp", "2"], "multiple of 2 ranks"),
        (
            vec!["--ranks", "4", "--tp", "3", "--pp", "2"],
            "needs 6 ranks",
        ),
        (
            vec!["--ranks", "2", "--pp", "2", "--micro-batches", "3"],
            "1 to --pp",
        ),
        (vec!["--ranks", "3", "--pp", "3"], "equal stages"),
        // Size-sweep flags are refused, never silently ignored.
        (
            vec!["--ranks", "2", "-b", "4K", "--op", "sendrecv"],
            "unexpected argument '-b'",
        ),
    ] {
        let output = run(&bad);
        assert_eq!(output.status.code(), Some(64), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{bad:?}: {stderr}");
    }
}

#[test]
fn the_model_mode_refuses_the_sweep_flags_it_would_ignore() {
    // It took -d and --csv and ignored them; the dtype is the model's.
    let output = Command::new(BIN)
        .args([
            "model",
            "--ranks",
            "2",
            "--model",
            "llama-3.1-8b",
            "--tp",
            "2",
            "-d",
            "f16",
            "--csv",
            "x.csv",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unexpected argument '-d'") && stderr.contains("collbench model --help"),
        "{stderr}"
    );
}

/// Hole: `--ranks 2 -b 999T -e 999T` was OOM-killed at 24 GB and `-b 2G` could abort on
/// an allocation failure; a sweep that cannot fit is refused before anything is allocated,
/// naming the largest size that fits. So are `-f 0`, `-f 1` and `-i 0`.
#[test]
fn a_sweep_too_large_for_memory_and_bad_steps_are_refused() {
    let output = Command::new(BIN)
        .args(["--ranks", "2", "-b", "999T", "-e", "999T"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("needs") && stderr.contains("pass at most -e"),
        "{stderr}"
    );
    for args in [&["-f", "0"][..], &["-f", "1"][..], &["-i", "0"][..]] {
        let output = Command::new(BIN)
            .args(["--ranks", "1"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(64), "{args:?}");
    }
}

/// README's conventions table says which shared flags this tool has; its --help must agree.
#[test]
fn readme_conventions_row_matches_the_help() {
    use testbed::readme::{assert_row_matches, help_of};
    assert_row_matches("collbench", &[help_of(BIN, &[])]);
}

/// Every mode either produces each output flag's output or refuses the flag (exit 64, one
/// sentence naming it): the sweep honours them all; the modes that run no size sweep
/// honour --json and -q and refuse the files the sweep writes.
#[test]
fn every_mode_honours_or_refuses_each_output_flag() {
    use testbed::outputs::{walk, Flag, Mode, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        Mode::new(
            "sweep",
            &["--ranks", "2", "-b", "1K", "-e", "4K", "-n", "1", "-w", "0"],
        ),
        Mode::new(
            "synthetic-step",
            &[
                "synthetic-step",
                "--ranks",
                "2",
                "--layers",
                "1",
                "--batch",
                "1,8",
            ],
        ),
        Mode::new(
            "model",
            &[
                "model",
                "--ranks",
                "2",
                "--model",
                "qwen2.5-1.5b",
                "--tp",
                "2",
                "--batch",
                "1,8",
            ],
        ),
    ];
    walk(
        BIN,
        &modes,
        |mode, flag| match (mode, flag) {
            ("sweep", _) | (_, Flag::Json | Flag::Quiet) => Outcome::Honoured,
            _ => Outcome::Refused,
        },
        dir.path(),
    );
}
