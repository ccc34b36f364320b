//! Runs the real explain binary: the JSON shape, the verdict between two plans, the
//! step prediction from a collbench sweep, and bad input (unknown names list the known
//! ones, plans that do not fit are rejected with the reason, PNG plots are refused).

use serde_json::Value;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_explain");

fn explain(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env(
            "NODELINK_CONFIGS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"),
        )
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn json_has_plans_breakdowns_and_a_verdict() {
    let output = explain(&[
        "--model",
        "llama-3-70b",
        "--plan",
        "tp4@1x4",
        "--vs",
        "tp4,pp2@2x4",
        "--input-len",
        "220",
        "--output-len",
        "200",
        "--concurrency",
        "16",
        "--inter-node",
        "tcp-25g",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let doc = json_of(&output);
    let plans = doc["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 2);
    for plan in plans {
        for key in ["name", "tpot_ms", "ttft_ms", "output_tok_s", "req_s"] {
            assert!(!plan[key].is_null(), "{key} in {plan}");
        }
        for key in ["compute", "tp_comm", "pp_comm", "bubble", "kv_transfer"] {
            assert!(
                plan["breakdown_ms"][key].as_f64().is_some(),
                "{key} in {plan}"
            );
        }
    }
    assert_eq!(plans[1]["name"], "TP4xPP2 over 2 nodes");
    assert!(plans[1]["breakdown_ms"]["pp_comm"].as_f64().unwrap() > 0.0);
    let verdict = doc["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("slower") && verdict.contains("tcp-25g"),
        "{verdict}"
    );
    assert!(!doc["what_ifs"].as_array().unwrap().is_empty());
}

#[test]
fn human_output_is_a_table_a_verdict_and_what_ifs_and_plots_are_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bars.svg");
    let output = explain(&[
        "--plan",
        "tp8",
        "--vs",
        "tp4,pp2",
        "--gpus-per-node",
        "4",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("TPOT ms") && text.contains("What if"),
        "{text}"
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.contains("TP all-reduces"));
    let png = explain(&["--plot", "x.png"]);
    assert_eq!(png.status.code(), Some(64));
    assert!(stderr(&png).contains("SVG"), "{}", stderr(&png));
}

#[test]
fn unknown_names_exit_64_listing_the_known_ones() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--model", "gpt-5"], &["llama-3.1-8b", "qwen2.5-32b"]),
        (&["--gpu", "b300"], &["h100-sxm", "l40s", "mi210"]),
        (&["--inter-node", "tcp-400g"], &["tcp-25g", "ib-ndr400"]),
        (&["--intra-node", "nvlink9"], &["nvlink4", "pcie4"]),
    ];
    for (args, known) in cases {
        let output = explain(args);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            stderr(&output)
        );
        let error = stderr(&output);
        for name in known {
            assert!(error.contains(name), "{args:?}: {error}");
        }
    }
}

#[test]
fn plans_that_do_not_fit_are_rejected_with_the_reason() {
    let too_many = explain(&["--plan", "tp4,pp4@1x8"]);
    assert_eq!(too_many.status.code(), Some(64));
    assert!(
        stderr(&too_many).contains("needs 16 GPUs"),
        "{}",
        stderr(&too_many)
    );
    let too_big = explain(&["--model", "llama-3-70b", "--plan", "tp1"]);
    assert_eq!(too_big.status.code(), Some(64));
    assert!(
        stderr(&too_big).contains("weights need"),
        "{}",
        stderr(&too_big)
    );
    let kv = explain(&[
        "--model",
        "llama-3-70b",
        "--plan",
        "tp4",
        "--input-len",
        "100000",
        "--concurrency",
        "64",
    ]);
    assert_eq!(kv.status.code(), Some(64));
    assert!(
        stderr(&kv).contains("lower --concurrency"),
        "{}",
        stderr(&kv)
    );
}

#[test]
fn predict_step_prices_the_step_from_a_collbench_sweep() {
    // A 2-rank all_reduce sweep: 10 us + 1 us per KB. At 64 KiB: 75.536 us per all-reduce;
    // 8 layers x (200 + 2 x 75.536) us = 2.808576 ms.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ar.json");
    let rows: Vec<Value> = [16384.0, 65536.0, 262144.0]
        .iter()
        .map(|&b: &f64| serde_json::json!({"bytes": b, "time_us": 10.0 + b / 1000.0}))
        .collect();
    let doc = serde_json::json!({"op": "all_reduce", "world": 2, "rows": rows});
    std::fs::write(&file, doc.to_string()).unwrap();
    let output = explain(&[
        "--predict-step",
        "--layers",
        "8",
        "--hidden",
        "4096",
        "--batch",
        "8",
        "--compute-us",
        "200",
        "--world",
        "2",
        "--link",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let predicted = json_of(&output)["predicted_step_ms"].as_f64().unwrap();
    assert!((predicted - 2.808576).abs() < 1e-6, "{predicted}");
    let missing = explain(&["--predict-step"]);
    assert_eq!(missing.status.code(), Some(64));
}

/// Contradictions and empty values are refused, never silently resolved.
#[test]
fn contradictions_and_empty_plans_are_refused() {
    let both = explain(&["--qps", "5", "--concurrency", "8"]);
    assert_eq!(both.status.code(), Some(64));
    assert!(
        stderr(&both).contains("--concurrency 8 and --qps 5 contradict each other"),
        "{}",
        stderr(&both)
    );
    let empty = explain(&["--plan="]);
    assert_eq!(empty.status.code(), Some(64));
    assert!(
        stderr(&empty).contains("names no parallelism"),
        "{}",
        stderr(&empty)
    );
    // Argument errors are one line with the tool's prefix.
    let typo = explain(&["--concurency", "8"]);
    assert_eq!(typo.status.code(), Some(64));
    let text = stderr(&typo);
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    assert!(text.starts_with("explain: error: "), "{text}");
    assert!(text.contains("--concurrency"), "{text}");
}

/// The shipped configs are built in: explain works from any folder, even one holding an
/// unrelated `configs/` (it used to look there first and fail).
#[test]
fn works_from_a_folder_with_an_unrelated_configs_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("configs/models")).unwrap();
    std::fs::write(dir.path().join("configs/models/junk.toml"), "not = [toml").unwrap();
    let output = Command::new(BIN)
        .args(["--model", "llama-3.1-8b", "--json"])
        .current_dir(dir.path())
        .env_remove("NODELINK_CONFIGS")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}
