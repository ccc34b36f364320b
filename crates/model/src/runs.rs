//! Measured serving runs, as the users have them: `vllm bench serve --save-result` JSON,
//! the serving table of vLLM's performance benchmarks (`{"serving": {"Test name": {...},
//! "Tput (req/s)": {...}}}`), or a CSV with vllm bench's column names. One struct for all.

use crate::ModelError;
use serde::Serialize;
use serde_json::Value;

/// One measured run (one load point).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredRun {
    /// Where it came from ("single.json", "dual.json#qps_4").
    pub source: String,
    pub request_throughput: f64,
    pub output_throughput: Option<f64>,
    pub mean_ttft_ms: f64,
    pub median_ttft_ms: Option<f64>,
    pub p99_ttft_ms: Option<f64>,
    pub mean_tpot_ms: f64,
    pub mean_itl_ms: Option<f64>,
    pub max_concurrency: Option<f64>,
    /// Requests per second offered; `None` for "inf" (everything at once).
    pub request_rate: Option<f64>,
    pub input_len: Option<f64>,
    pub output_len: Option<f64>,
    pub num_prompts: Option<f64>,
    pub completed: Option<f64>,
}

fn bad(source: &str, why: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid(format!("{source}: {why}"))
}

/// A number from a JSON value that may be a number or a numeric string ("inf" -> None).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().eq_ignore_ascii_case("inf") => None,
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn required(doc: &Value, key: &str, source: &str) -> Result<f64, ModelError> {
    doc.get(key).and_then(number).ok_or_else(|| {
        bad(
            source,
            format!("has no numeric \"{key}\": is it a `vllm bench serve --save-result` file?"),
        )
    })
}

fn optional(doc: &Value, key: &str) -> Option<f64> {
    doc.get(key).and_then(number)
}

/// One `vllm bench serve --save-result` document.
fn from_bench_json(doc: &Value, source: &str) -> Result<MeasuredRun, ModelError> {
    let completed = optional(doc, "completed");
    let per_request = |total: &str| {
        let total = optional(doc, total)?;
        let n = completed.filter(|&c| c > 0.0)?;
        Some(total / n)
    };
    let run = MeasuredRun {
        source: source.to_string(),
        request_throughput: required(doc, "request_throughput", source)?,
        output_throughput: optional(doc, "output_throughput"),
        mean_ttft_ms: required(doc, "mean_ttft_ms", source)?,
        median_ttft_ms: optional(doc, "median_ttft_ms"),
        p99_ttft_ms: optional(doc, "p99_ttft_ms"),
        mean_tpot_ms: required(doc, "mean_tpot_ms", source)?,
        mean_itl_ms: optional(doc, "mean_itl_ms"),
        max_concurrency: optional(doc, "max_concurrency"),
        request_rate: optional(doc, "request_rate"),
        input_len: optional(doc, "random_input_len")
            .or_else(|| optional(doc, "input_len"))
            .or_else(|| per_request("total_input_tokens")),
        output_len: optional(doc, "random_output_len")
            .or_else(|| optional(doc, "output_len"))
            .or_else(|| per_request("total_output_tokens")),
        num_prompts: optional(doc, "num_prompts"),
        completed,
    };
    check(run)
}

fn check(run: MeasuredRun) -> Result<MeasuredRun, ModelError> {
    for (name, value) in [
        ("request_throughput", run.request_throughput),
        ("mean_ttft_ms", run.mean_ttft_ms),
        ("mean_tpot_ms", run.mean_tpot_ms),
    ] {
        if !value.is_finite() || value <= 0.0 {
            return Err(bad(
                &run.source,
                format!("{name} is {value}: a run needs positive figures"),
            ));
        }
    }
    Ok(run)
}

/// The serving table: columns keyed by row index ("0", "1", ...).
fn from_serving_table(table: &Value, source: &str) -> Result<Vec<MeasuredRun>, ModelError> {
    let column = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| table.get(*n))
            .and_then(Value::as_object)
    };
    let tests = column(&["Test name"])
        .ok_or_else(|| bad(source, "the serving table has no \"Test name\" column"))?;
    let tput = column(&["Tput (req/s)"])
        .ok_or_else(|| bad(source, "the serving table has no \"Tput (req/s)\" column"))?;
    let ttft = column(&["Mean TTFT (ms)"])
        .ok_or_else(|| bad(source, "the serving table has no \"Mean TTFT (ms)\" column"))?;
    let tpot = column(&["Mean TPOT (ms)"])
        .ok_or_else(|| bad(source, "the serving table has no \"Mean TPOT (ms)\" column"))?;
    let median_ttft = column(&["Median TTFT (ms)"]);
    let p99_ttft = column(&["P99 TTFT (ms)"]);
    let itl = column(&["Mean ITL (ms)"]);
    let mut runs = Vec::new();
    for (row, name) in tests {
        let name = name.as_str().unwrap_or(row);
        let cell = |col: Option<&serde_json::Map<String, Value>>| {
            col.and_then(|c| c.get(row)).and_then(number)
        };
        // "..._qps_4" / "..._qps_inf": the offered rate, when the test name carries it.
        let request_rate = name
            .rsplit("qps_")
            .next()
            .filter(|_| name.contains("qps_"))
            .and_then(|q| {
                q.split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
                    .next()
            })
            .and_then(|q| if q == "inf" { None } else { q.parse().ok() });
        let run = MeasuredRun {
            source: format!("{source}#{name}"),
            request_throughput: cell(Some(tput))
                .ok_or_else(|| bad(source, format!("row {name}: no Tput (req/s)")))?,
            output_throughput: None,
            mean_ttft_ms: cell(Some(ttft))
                .ok_or_else(|| bad(source, format!("row {name}: no Mean TTFT (ms)")))?,
            median_ttft_ms: cell(median_ttft),
            p99_ttft_ms: cell(p99_ttft),
            mean_tpot_ms: cell(Some(tpot))
                .ok_or_else(|| bad(source, format!("row {name}: no Mean TPOT (ms)")))?,
            mean_itl_ms: cell(itl),
            max_concurrency: None,
            request_rate,
            input_len: None,
            output_len: None,
            num_prompts: None,
            completed: None,
        };
        runs.push(check(run)?);
    }
    if runs.is_empty() {
        return Err(bad(source, "the serving table has no rows"));
    }
    Ok(runs)
}

/// CSV with a header of vllm bench's key names, one run per row.
fn from_csv(text: &str, source: &str) -> Result<Vec<MeasuredRun>, ModelError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| bad(source, "is empty"))?
        .split(',')
        .map(str::trim)
        .collect();
    let mut runs = Vec::new();
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != header.len() {
            return Err(bad(
                source,
                format!(
                    "row {} has {} cells, the header {}",
                    i + 1,
                    cells.len(),
                    header.len()
                ),
            ));
        }
        let doc: serde_json::Map<String, Value> = header
            .iter()
            .zip(&cells)
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        runs.push(from_bench_json(
            &Value::Object(doc),
            &format!("{source} row {}", i + 1),
        )?);
    }
    if runs.is_empty() {
        return Err(bad(source, "has a header but no rows"));
    }
    Ok(runs)
}

/// Reads every run in a file's text (JSON of either shape, or CSV).
pub fn parse_runs(source: &str, text: &str) -> Result<Vec<MeasuredRun>, ModelError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') && !trimmed.starts_with('[') {
        return from_csv(text, source);
    }
    let doc: Value =
        serde_json::from_str(text).map_err(|e| bad(source, format!("is not valid JSON ({e})")))?;
    if let Some(table) = doc.get("serving") {
        return from_serving_table(table, source);
    }
    match &doc {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, d)| from_bench_json(d, &format!("{source}[{i}]")))
            .collect(),
        _ => Ok(vec![from_bench_json(&doc, source)?]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM's key set, with the published 2-node DP figures (DESIGN.md).
    pub(crate) fn published_dp_run() -> String {
        serde_json::json!({
            "date": "20250101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
            "tokenizer_id": "meta-llama/Llama-3.1-8B-Instruct", "num_prompts": 160,
            "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 16, "duration": 161.6,
            "completed": 160, "total_input_tokens": 320000, "total_output_tokens": 320000,
            "request_throughput": 0.99, "request_goodput": null, "output_throughput": 1981.66,
            "total_token_throughput": 3963.3, "mean_ttft_ms": 47.23, "median_ttft_ms": 45.1,
            "std_ttft_ms": 8.2, "p99_ttft_ms": 71.0, "mean_tpot_ms": 7.31, "median_tpot_ms": 7.30,
            "std_tpot_ms": 0.2, "p99_tpot_ms": 7.9, "mean_itl_ms": 7.31, "median_itl_ms": 7.1,
            "std_itl_ms": 1.0, "p99_itl_ms": 12.0, "mean_e2el_ms": 14660.0,
        })
        .to_string()
    }

    #[test]
    fn a_vllm_bench_serve_file_reads_with_its_workload() {
        let runs = parse_runs("dp.json", &published_dp_run()).unwrap();
        let run = &runs[0];
        assert_eq!(run.request_throughput, 0.99);
        assert_eq!(run.mean_tpot_ms, 7.31);
        assert_eq!(run.mean_ttft_ms, 47.23);
        assert_eq!(run.max_concurrency, Some(16.0));
        assert_eq!(run.request_rate, None);
        assert_eq!(
            (run.input_len, run.output_len),
            (Some(2000.0), Some(2000.0))
        );
        assert_eq!(run.output_throughput, Some(1981.66));
    }

    #[test]
    fn the_serving_table_gives_one_run_per_row() {
        // TP4 x PP2 over IB, ShareGPT, QPS 1 and inf (DESIGN.md's published run).
        let table = serde_json::json!({"serving": {
            "Test name": {"0": "serving_llama70B_tp4_pp2_sharegpt_qps_1", "1": "serving_llama70B_tp4_pp2_sharegpt_qps_inf"},
            "Tput (req/s)": {"0": 0.98, "1": 4.67},
            "Mean TTFT (ms)": {"0": 110.0, "1": 971.0},
            "Mean TPOT (ms)": {"0": 44.0, "1": 78.0},
        }});
        let runs = parse_runs("ib.json", &table.to_string()).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].request_rate, Some(1.0));
        assert_eq!(runs[1].request_rate, None);
        assert_eq!(runs[1].mean_tpot_ms, 78.0);
        assert!(runs[1].source.ends_with("qps_inf"));
    }

    #[test]
    fn csv_and_broken_files_each_get_one_sentence() {
        let csv = "request_throughput,mean_ttft_ms,mean_tpot_ms,max_concurrency,input_len,output_len\n1.59,120,9.5,200,220,200\n";
        let runs = parse_runs("single.csv", csv).unwrap();
        assert_eq!(runs[0].max_concurrency, Some(200.0));
        let e = parse_runs("x.json", "{\"request_throughput\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json") && e.contains("mean_ttft_ms"), "{e}");
        let e = parse_runs("x.json", "{not json").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_runs(
            "x.json",
            "{\"request_throughput\": 0, \"mean_ttft_ms\": 1, \"mean_tpot_ms\": 1}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("positive"), "{e}");
        let e = parse_runs("x.csv", "a,b\n1\n").unwrap_err().to_string();
        assert!(e.contains("row 1 has 1 cells"), "{e}");
    }
}
