//! Runs the real explain binary: the JSON shape, the verdict between two plans, the
//! step prediction from a collbench sweep, and bad input (unknown names list the known
//! ones, plans that do not fit are rejected with the reason, other chart formats are refused).

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

use testbed::json_of;

use testbed::stderr_of as stderr;

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
    let png = dir.path().join("bars.png");
    let drawn = explain(&["--plot", png.to_str().unwrap()]);
    assert!(drawn.status.success(), "{}", stderr(&drawn));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let jpg = explain(&["--plot", "x.jpg"]);
    assert_eq!(jpg.status.code(), Some(64));
    assert!(stderr(&jpg).contains("*.svg or *.png"), "{}", stderr(&jpg));
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

/// `explain predict-step --json` for the step both tests price: 8 layers, hidden 4096,
/// batch 8, 200 us of compute per layer; `extra` names the links and the layout.
fn predict_step(extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "predict-step",
        "--layers",
        "8",
        "--hidden",
        "4096",
        "--batch",
        "8",
        "--compute-us",
        "200",
        "--json",
    ];
    args.extend_from_slice(extra);
    explain(&args)
}

#[test]
fn predict_step_prices_the_step_from_a_collbench_sweep() {
    // A 2-rank all_reduce sweep: 10 us + 1 us per KB. At 64 KiB: 75.536 us per all-reduce;
    // 8 layers x (200 + 2 x 75.536) us = 2.808576 ms.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ar.json");
    let rows: Vec<(f64, f64)> = [16384.0, 65536.0, 262144.0]
        .iter()
        .map(|&b: &f64| (b, 10.0 + b / 1000.0))
        .collect();
    std::fs::write(
        &file,
        testbed::records::collbench_sweep("all_reduce", 2, &rows),
    )
    .unwrap();
    let output = predict_step(&["--world", "2", "--link", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let predicted = json_of(&output)["predicted_step_ms"].as_f64().unwrap();
    assert!((predicted - 2.808576).abs() < 1e-6, "{predicted}");
    let missing = explain(&["predict-step"]);
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn predict_step_prices_a_pipeline_from_a_linkbench_lat_sweep() {
    // Stage link from `linkbench lat -a`: 20 us + 1 us per KB one way. PP 2, TP 1, batch 8
    // in 2 micro-batches of 4 tokens, 8 layers x 200 us: each stage is 4 x 200 = 800 us per
    // micro-batch; the handover is 2 x 4 x 4096 x 2 = 65,536 B (85.536 us); the scheduler
    // output (1,280 B) reaches stage 2 while stage 1 computes, the 32 B of tokens come back
    // in 20.032 us. Round = 2 x 800 + 85.536 + 20.032 = 1,705.568 us, no bubble.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lat.json");
    let sweep: Vec<(f64, f64)> = [2.0, 1024.0, 65536.0, 1048576.0]
        .iter()
        .map(|&b: &f64| (b, 20.0 + b / 1000.0))
        .collect();
    std::fs::write(&file, testbed::records::linkbench_lat_sweep(&sweep)).unwrap();
    let pipeline = |micro_batches: &str| {
        let output = predict_step(&[
            "--world",
            "1",
            "--pp",
            "2",
            "--micro-batches",
            micro_batches,
            "--pp-link",
            file.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        json_of(&output)
    };
    let two = pipeline("2");
    let step = two["predicted_step_ms"].as_f64().unwrap();
    assert!((step - 1.705568).abs() < 1e-9, "{two}");
    assert_eq!(two["breakdown_ms"]["bubble"], 0.0);
    // One micro-batch of 8 (a stage still takes 800 us: compute per layer is fixed): each
    // stage idles one stage time. Handover 131,072 B (151.072 us), tokens 64 B
    // (20.064 us): 2 x 800 + 151.072 + 20.064 = 1,771.136 us.
    let one = pipeline("1");
    assert!(
        (one["predicted_step_ms"].as_f64().unwrap() - 1.771136).abs() < 1e-9,
        "{one}"
    );
    assert!((one["breakdown_ms"]["bubble"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    let breakdown: f64 = one["breakdown_ms"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((breakdown - 1.771136).abs() < 1e-9, "{one}");
    // Plan flags and outputs it does not write are refused, not ignored.
    for (flag, says) in [
        (
            ["--plot", "x.svg"],
            "--plot: explain predict-step has no such output",
        ),
        (
            ["--model", "llama-3.1-8b"],
            "unexpected argument '--model' found: see `explain predict-step --help`",
        ),
    ] {
        let mut args = vec!["predict-step", "--world", "1"];
        args.extend(flag);
        let refused = explain(&args);
        assert_eq!(refused.status.code(), Some(64));
        assert!(stderr(&refused).contains(says), "{}", stderr(&refused));
    }
    // A pipeline without its stage link, or more micro-batches than stages, is refused.
    let missing = explain(&["predict-step", "--world", "1", "--pp", "2"]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(
        stderr(&missing).contains("--pp-link"),
        "{}",
        stderr(&missing)
    );
    let many = explain(&[
        "predict-step",
        "--world",
        "1",
        "--pp",
        "2",
        "--micro-batches",
        "3",
        "--pp-link",
        file.to_str().unwrap(),
    ]);
    assert_eq!(many.status.code(), Some(64));
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

/// `vllm bench serve --save-result` with vLLM's key set and the published 2-node DP
/// figures (TTFT 47.23 ms, TPOT 7.31 ms, 0.99 req/s, 1,981.66 tok/s, concurrency 16).
fn published_dp_run(dir: &std::path::Path) -> std::path::PathBuf {
    let doc = serde_json::json!({
        "date": "20250101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct", "num_prompts": 160, "request_rate": "inf",
        "burstiness": 1.0, "max_concurrency": 16, "duration": 161.6, "completed": 160,
        "total_input_tokens": 320000, "total_output_tokens": 320000, "request_throughput": 0.99,
        "request_goodput": null, "output_throughput": 1981.66, "total_token_throughput": 3963.3,
        "mean_ttft_ms": 47.23, "median_ttft_ms": 45.1, "std_ttft_ms": 8.2, "p99_ttft_ms": 71.0,
        "mean_tpot_ms": 7.31, "median_tpot_ms": 7.3, "std_tpot_ms": 0.2, "p99_tpot_ms": 7.9,
        "mean_itl_ms": 7.31, "median_itl_ms": 7.1, "std_itl_ms": 1.0, "p99_itl_ms": 12.0,
        "mean_e2el_ms": 14660.0
    });
    let path = dir.join("dp.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

#[test]
fn a_measured_run_calibrates_the_model_and_runs_are_compared_term_by_term() {
    let dir = tempfile::tempdir().unwrap();
    let run = published_dp_run(dir.path());
    let out = explain(&[
        "--model",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--plan",
        "dp16@2x8",
        "--run",
        run.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json_of(&out);
    let cal = &doc["calibration"];
    let h = cal["hbm_efficiency"].as_f64().unwrap();
    assert!((0.1..=1.0).contains(&h), "{cal}");
    assert_eq!(cal["default_hbm_efficiency"], 0.8);
    assert!(cal["rms_error"].as_f64().unwrap() < 0.15, "{cal}");
    assert_eq!(doc["workload"]["input_len"], 2000);
    assert_eq!(doc["workload"]["concurrency"], 16.0);
    // Two measured runs at the same load: the terms and `unexplained` add up to the
    // measured difference, whatever the model says.
    let mut slower: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&run).unwrap()).unwrap();
    slower["mean_tpot_ms"] = 9.5.into();
    slower["request_throughput"] = 0.78.into();
    let vs = dir.path().join("slower.json");
    std::fs::write(&vs, slower.to_string()).unwrap();
    let out = explain(&[
        "--model",
        "llama-3.1-8b",
        "--plan",
        "dp16@2x8",
        "--vs",
        "tp8,pp2@2x8",
        "--inter-node",
        "tcp-25g",
        "--run",
        run.to_str().unwrap(),
        "--run-vs",
        vs.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json_of(&out);
    let at = &doc["attribution"];
    let terms: f64 = at["terms"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    let unexplained = at["unexplained_ms"].as_f64().unwrap();
    let measured = at["measured_tpot_diff_ms"].as_f64().unwrap();
    assert!((measured - 2.19).abs() < 1e-9, "{at}");
    assert!((terms + unexplained - measured).abs() < 1e-9, "{at}");
}

#[test]
fn a_flag_that_contradicts_the_run_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let run = published_dp_run(dir.path());
    let out = explain(&[
        "--plan",
        "dp16@2x8",
        "--run",
        run.to_str().unwrap(),
        "--input-len",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("--input-len 100 contradicts the run, which measured 2000"),
        "{}",
        stderr(&out)
    );
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"request_throughput\": 1}").unwrap();
    let out = explain(&["--run", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("mean_ttft_ms"), "{}", stderr(&out));
}

#[test]
fn an_offered_load_beyond_capacity_is_called_saturated() {
    let out = explain(&[
        "--model",
        "llama-3.1-8b",
        "--plan",
        "tp1@1x1",
        "--qps",
        "1000000",
        "--input-len",
        "2000",
        "--output-len",
        "2000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("exceeds what") && text.contains("saturation"),
        "{text}"
    );
}

/// README's conventions table says which shared flags this tool has; its --help must agree.
#[test]
fn readme_conventions_row_matches_the_help() {
    use testbed::readme::{assert_row_matches, help_of};
    assert_row_matches("explain", &[help_of(BIN, &[])]);
}

/// Every mode either produces each output flag's output or refuses the flag (exit 64, one
/// sentence naming it): plan pricing and measured runs print JSON and draw charts;
/// predict-step prints JSON and refuses the chart; explain writes no CSV and has no -q.
#[test]
fn every_mode_honours_or_refuses_each_output_flag() {
    use testbed::outputs::{walk, Flag, Mode, Outcome};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ar.json");
    let rows: Vec<(f64, f64)> = [16384.0, 65536.0, 262144.0]
        .iter()
        .map(|&b: &f64| (b, 10.0 + b / 1000.0))
        .collect();
    std::fs::write(
        &link,
        testbed::records::collbench_sweep("all_reduce", 2, &rows),
    )
    .unwrap();
    let run = published_dp_run(dir.path());
    let modes = [
        Mode::new(
            "plans",
            &["--plan", "tp8", "--vs", "tp4,pp2", "--gpus-per-node", "4"],
        ),
        Mode::new(
            "predict-step",
            &[
                "predict-step",
                "--world",
                "2",
                "--link",
                link.to_str().unwrap(),
            ],
        ),
        Mode::new(
            "run",
            &[
                "--model",
                "llama-3.1-8b",
                "--plan",
                "dp16@2x8",
                "--run",
                run.to_str().unwrap(),
            ],
        ),
    ];
    walk(
        BIN,
        &modes,
        |mode, flag| match (mode, flag) {
            (_, Flag::Json) => Outcome::Honoured,
            ("plans" | "run", Flag::Svg | Flag::Png) => Outcome::Honoured,
            _ => Outcome::Refused,
        },
        dir.path(),
    );
}

/// README's measured-runs example, on the files it names: the 1-node run calibrates the
/// model, the 2-node run is measured slower, the model agrees on the direction (the old
/// ideal-plan prediction had it faster), and the books are not forced to balance.
#[test]
fn the_readme_case_from_its_example_run_files() {
    let runs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/explain/");
    let (single, dual) = (
        format!("{runs}single-tp4.json"),
        format!("{runs}dual-tp4-pp2.json"),
    );
    let out = explain(&[
        "--model",
        "meta-llama/Meta-Llama-3-70B-Instruct",
        "--gpu",
        "h100-sxm",
        "--plan",
        "tp4@1x4",
        "--vs",
        "tp4,pp2@2x4",
        "--inter-node",
        "tcp-25g",
        "--run",
        &single,
        "--run-vs",
        &dual,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json_of(&out);
    assert_eq!(doc["workload"]["concurrency"], 50.0);
    assert!(
        doc["calibration"]["rms_error"].as_f64().unwrap() < 0.1,
        "{doc}"
    );
    let at = &doc["attribution"];
    assert!(
        (at["measured_tpot_diff_ms"].as_f64().unwrap() - 7.2).abs() < 1e-9,
        "{at}"
    );
    let plans = doc["plans"].as_array().unwrap();
    let (one, two) = (&plans[0], &plans[1]);
    assert!(
        two["tpot_ms"].as_f64().unwrap() > one["tpot_ms"].as_f64().unwrap(),
        "{plans:?}"
    );
    assert!(
        two["req_s"].as_f64().unwrap() < one["req_s"].as_f64().unwrap(),
        "{plans:?}"
    );
    assert!(at["unexplained_ms"].as_f64().unwrap().abs() > 1.0, "{at}");
}
