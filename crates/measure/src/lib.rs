//! Units, latency statistics and renderers: every tool states sizes, rates and latencies
//! the same way, so figures from two tools can be compared without guessing units.

mod bars;
mod dtype;
mod heatmap;
mod latency;
mod plot;
mod png;
pub mod record;
mod render;
mod setting;
mod units;

/// Where a library's lines for the operator go (a listener's refusals, a skipped stranger):
/// the one logger, injected by the tool (stderr under its name, or nothing with `-q`).
/// Libraries never print.
pub type Log = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

pub use bars::{write_bar_chart, BarChart};
pub use dtype::{Dtype, RedOp};
pub use heatmap::{write_heatmap, Heatmap};
pub use latency::{LatencyRecorder, LatencySummary};
pub use plot::{is_chart_path, write_chart, Axis, Chart, PlotError, Series};
pub use render::{write_csv, Table};
pub use setting::{name_flags, Setting};
pub use units::{
    format_bytes, format_duration, format_rate, gbit_per_s, gbyte_per_s, parse_duration,
    parse_size, UnitError,
};
