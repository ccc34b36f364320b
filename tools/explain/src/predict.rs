//! `--predict-step`: the step time collbench `--synthetic-step` should measure, priced from
//! the same alpha-beta link fit `explain` uses for plans. This is how the cost model is
//! validated against real all-reduces (scripts/bench/explain-validate).

use crate::Args;
use anyhow::Context;
use model::LinkModel;

pub fn run(args: &Args) -> anyhow::Result<u8> {
    let path = args
        .link
        .as_ref()
        .ok_or_else(|| cli::usage("--predict-step needs --link FILE.json (collbench all_reduce --json measured on the same links)"))?;
    if args.layers == 0 || args.hidden == 0 || args.batch == 0 || args.world == 0 {
        return Err(cli::usage(
            "--layers, --hidden, --batch and --world must be at least 1",
        ));
    }
    if args.compute_us.is_nan() || args.compute_us < 0.0 {
        return Err(cli::usage("--compute-us must be 0 or more"));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(|e| cli::usage(cli::sentence(&e)))?;
    let link = LinkModel::from_json(&path.display().to_string(), &text)
        .map_err(|e| cli::usage(e.to_string()))?;
    let bytes = (args.batch * args.hidden * 2) as f64;
    let all_reduce_us = link.all_reduce_us(bytes, args.world);
    let step_ms = args.layers as f64 * (args.compute_us + 2.0 * all_reduce_us) / 1e3;
    if args.json {
        let document = serde_json::json!({
            "predicted_step_ms": step_ms,
            "all_reduce_us": all_reduce_us,
            "all_reduce_bytes": bytes,
            "layers": args.layers, "hidden": args.hidden, "batch": args.batch,
            "compute_us": args.compute_us, "world": args.world,
            "link": {"name": link.name, "alpha_us": link.alpha_us, "gbs": link.gbs, "source": link.source},
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        let mut table = measure::Table::new(["quantity", "value"]);
        table.push(["link".to_string(), link.source.clone()]);
        table.push(["alpha per hop (us)".into(), format!("{:.2}", link.alpha_us)]);
        table.push(["rate (GB/s)".into(), format!("{:.4}", link.gbs)]);
        table.push([
            "all-reduce size (B)".into(),
            format!("{bytes:.0} ({} x {} x 2)", args.batch, args.hidden),
        ]);
        table.push([
            "all-reduce (us)".into(),
            format!("{all_reduce_us:.1} over {} ranks", args.world),
        ]);
        table.push([
            "predicted step (ms)".into(),
            format!(
                "{step_ms:.3} = {} x ({} + 2 x {all_reduce_us:.1}) us",
                args.layers, args.compute_us
            ),
        ]);
        println!("{}", table.render());
    }
    Ok(cli::exit::OK)
}
