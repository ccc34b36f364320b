//! Stacked bar charts as SVG (one bar per category, one colour per part), hand-written
//! like the line charts in plot.rs; `explain` draws its per-plan cost breakdown with it.

use crate::plot::PlotError;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    /// One bar each, left to right.
    pub categories: Vec<String>,
    /// (part name, value per category), stacked bottom to top.
    pub stacks: Vec<(String, Vec<f64>)>,
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 110.0;
use super::plot::{escape, COLORS};

impl BarChart {
    pub fn to_svg(&self) -> String {
        let n = self.categories.len().max(1);
        let total = |i: usize| -> f64 {
            self.stacks
                .iter()
                .map(|(_, v)| v.get(i).copied().unwrap_or(0.0).max(0.0))
                .sum()
        };
        let max = (0..n).map(total).fold(0.0f64, f64::max).max(1e-9);
        let step = crate::plot::nice_step(max);
        let top = (max / step).ceil() * step;
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let y = |v: f64| TOP + plot_h * (1.0 - v / top);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        let mut tick = 0.0;
        while tick <= top + step * 1e-9 {
            let ty = y(tick);
            let _ = write!(
                svg,
                r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                ty + 4.0,
                crate::plot::number_label(tick)
            );
            tick += step;
        }
        let _ = write!(
            svg,
            r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        let slot = plot_w / n as f64;
        for (i, name) in self.categories.iter().enumerate() {
            let x = LEFT + slot * i as f64 + slot * 0.2;
            let mut base = 0.0;
            for (k, (_, values)) in self.stacks.iter().enumerate() {
                let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
                if v > 0.0 {
                    let _ = write!(
                        svg,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                        y(base + v),
                        slot * 0.6,
                        y(base) - y(base + v),
                        COLORS[k % COLORS.len()]
                    );
                }
                base += v;
            }
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.2}</text><text transform="translate({:.1},{:.1}) rotate(20)" font-size="10">{}</text>"#,
                x + slot * 0.3,
                y(base) - 4.0,
                base,
                x,
                TOP + plot_h + 14.0,
                escape(name)
            );
        }
        for (k, (name, _)) in self.stacks.iter().enumerate() {
            let ly = TOP + 20.0 * k as f64;
            let lx = WIDTH - RIGHT + 15.0;
            let _ = write!(
                svg,
                r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
                ly,
                COLORS[k % COLORS.len()],
                lx + 18.0,
                ly + 10.0,
                escape(name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Writes the bar chart, as SVG or PNG by the name's extension.
pub fn write_bar_chart(path: &Path, chart: &BarChart) -> Result<(), PlotError> {
    super::plot::write_svg(path, chart.to_svg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacked_bars_have_one_rect_per_nonzero_part_and_a_legend() {
        let chart = BarChart {
            title: "t & u".into(),
            y_label: "ms".into(),
            categories: vec!["a".into(), "b".into()],
            stacks: vec![
                ("compute".into(), vec![1.0, 2.0]),
                ("comm".into(), vec![0.0, 0.5]),
            ],
        };
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg") && svg.contains("t &amp; u"));
        // 3 bar segments + 2 legend swatches + the background.
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(svg.contains(">2.50<"));
        let error = write_bar_chart(Path::new("x.gif"), &chart).unwrap_err();
        assert!(error.to_string().contains("*.svg or *.png"), "{error}");
    }
}
