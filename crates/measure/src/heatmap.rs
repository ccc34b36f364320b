//! N x N heatmaps as SVG (netcheck's cluster bandwidth matrix): one cell per (row, column),
//! shaded from the lowest to the highest value, the value written in the cell; empty
//! cells (not measured, the diagonal) stay grey.

use crate::plot::{escape, write_svg, PlotError};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    /// What the numbers are ("Gbit/s, row -> column").
    pub unit: String,
    pub labels: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
}

const CELL: f64 = 70.0;
const LEFT: f64 = 170.0;
const TOP: f64 = 90.0;

impl Heatmap {
    pub fn to_svg(&self) -> String {
        let n = self.labels.len();
        let all: Vec<f64> = self.values.iter().flatten().flatten().copied().collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let width = LEFT + CELL * n as f64 + 40.0;
        let height = TOP + CELL * n as f64 + 40.0;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(
            svg,
            r##"<text x="10" y="24" font-size="16">{}</text><text x="10" y="44" fill="#555">{}</text>"##,
            escape(&self.title),
            escape(&self.unit)
        );
        for (i, label) in self.labels.iter().enumerate() {
            let y = TOP + CELL * i as f64 + CELL / 2.0 + 4.0;
            let x = LEFT + CELL * i as f64 + CELL / 2.0;
            let _ = write!(
                svg,
                r#"<text x="{}" y="{y}" text-anchor="end">{}</text><text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
                LEFT - 8.0,
                escape(label),
                TOP - 8.0,
                escape(label)
            );
        }
        for (i, row) in self.values.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                let (x, y) = (LEFT + CELL * j as f64, TOP + CELL * i as f64);
                let (fill, text) = match cell {
                    Some(v) => {
                        // Low values red, high values green.
                        let t = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
                        let red = (220.0 * (1.0 - t) + 40.0 * t) as u8;
                        let green = (60.0 * (1.0 - t) + 170.0 * t) as u8;
                        (format!("rgb({red},{green},80)"), format!("{v:.2}"))
                    }
                    None => ("#dddddd".to_string(), String::new()),
                };
                let _ = write!(
                    svg,
                    r#"<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{fill}" stroke="white"/><text x="{}" y="{}" text-anchor="middle" fill="white">{text}</text>"#,
                    x + CELL / 2.0,
                    y + CELL / 2.0 + 4.0
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

pub fn write_heatmap(path: &Path, map: &Heatmap) -> Result<(), PlotError> {
    write_svg(path, map.to_svg())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rect_per_cell_and_the_values_in_them() {
        let map = Heatmap {
            title: "bw <&>".into(),
            unit: "Gbit/s".into(),
            labels: vec!["a".into(), "b".into()],
            values: vec![vec![None, Some(1.5)], vec![Some(0.25), None]],
        };
        let svg = map.to_svg();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains(">1.50<") && svg.contains(">0.25<"));
        assert!(svg.contains("bw &lt;&amp;&gt;"));
    }
}
