//! Line charts as SVG: throughput or latency against message size, written by hand. A
//! `.png` name gets the same SVG rendered to pixels (see [`crate::png`]).

use std::fmt::Write as _;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw '{0}': charts are written as SVG or PNG; name the file *.svg or *.png")]
    Format(String),
    #[error("rendering '{path}' as PNG: {reason}")]
    Render { path: String, reason: String },
}

/// One line on the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Message sizes: a log2 axis labelled in bytes (2, 64, 1K, 1M).
    pub x_log2_bytes: bool,
    pub series: Vec<Series>,
    /// Lines drawn against a second y axis on the right (another unit: latency beside
    /// bandwidth, say).
    pub secondary: Option<Axis>,
}

/// A right-hand y axis and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub label: String,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
/// Room for the second axis's labels, when there is one.
const RIGHT_AXIS: f64 = 60.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
pub(crate) const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about five ticks up to `max`.
pub(crate) fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

fn byte_label(bytes: f64) -> String {
    let b = bytes.round() as u64;
    if b >= 1 << 30 && b.trailing_zeros() >= 30 {
        format!("{}G", b >> 30)
    } else if b >= 1 << 20 && b.trailing_zeros() >= 20 {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b.trailing_zeros() >= 10 {
        format!("{}K", b >> 10)
    } else {
        format!("{b}")
    }
}

pub(crate) fn number_label(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The top of a y axis (a whole number of nice steps above every point) and its step.
fn y_scale<'a>(series: impl Iterator<Item = &'a Series>) -> (f64, f64) {
    let y_top = series
        .flat_map(|s| s.points.iter())
        .map(|p| p.1)
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    let step = nice_step(if y_top > 0.0 { y_top } else { 1.0 });
    (((y_top / step).ceil().max(1.0)) * step, step)
}

impl Chart {
    pub fn to_svg(&self) -> String {
        let points = self
            .series
            .iter()
            .chain(self.secondary.iter().flat_map(|a| a.series.iter()))
            .flat_map(|s| s.points.iter());
        let xs: Vec<f64> = points
            .map(|p| {
                if self.x_log2_bytes {
                    p.0.max(1.0).log2()
                } else {
                    p.0
                }
            })
            .filter(|x| x.is_finite())
            .collect();
        let (x_min, mut x_max) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        let x_min = if x_min.is_finite() { x_min } else { 0.0 };
        if x_max <= x_min || x_max.is_nan() {
            x_max = x_min + 1.0;
        }
        let (y_max, step) = y_scale(self.series.iter());
        let right = if self.secondary.is_some() {
            RIGHT_AXIS
        } else {
            RIGHT
        };
        let plot_w = WIDTH - LEFT - right;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
        let sy = |y: f64| TOP + plot_h - (y / y_max) * plot_h;

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Horizontal grid and y labels.
        let mut y = 0.0;
        while y <= y_max + step / 2.0 {
            let py = sy(y);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                py + 4.0,
                number_label(y)
            );
            y += step;
        }
        // X ticks: every integer (power of two) on a log axis, about eight otherwise.
        let x_step = if self.x_log2_bytes {
            ((x_max - x_min) / 12.0).ceil().max(1.0)
        } else {
            nice_step(x_max - x_min)
        };
        let mut x = if self.x_log2_bytes {
            x_min.ceil()
        } else {
            (x_min / x_step).ceil() * x_step
        };
        while x <= x_max + 1e-9 {
            let px = sx(x);
            let label = if self.x_log2_bytes {
                byte_label(2f64.powf(x))
            } else {
                number_label(x)
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 18.0,
                escape(&label)
            );
            x += x_step;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 15.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        let lines =
            self.series
                .iter()
                .map(|s| (s, y_max, false))
                .chain(self.secondary.iter().flat_map(|axis| {
                    let (top, _) = y_scale(axis.series.iter());
                    axis.series.iter().map(move |s| (s, top, true))
                }));
        for (i, (series, top, on_right)) in lines.enumerate() {
            let color = COLORS[i % COLORS.len()];
            let sy = |y: f64| TOP + plot_h - (y / top) * plot_h;
            let path: Vec<String> = series
                .points
                .iter()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .map(|&(x, y)| {
                    let x = if self.x_log2_bytes {
                        x.max(1.0).log2()
                    } else {
                        x
                    };
                    format!("{:.1},{:.1}", sx(x), sy(y))
                })
                .collect();
            let dash = if on_right {
                r#" stroke-dasharray="6 3""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                path.join(" ")
            );
            for point in &path {
                if let Some((px, py)) = point.split_once(',') {
                    let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
                }
            }
            let ly = TOP + 16.0 + 18.0 * i as f64;
            let name = if on_right {
                format!("{} (right axis)", series.name)
            } else {
                series.name.clone()
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                LEFT + 12.0,
                LEFT + 32.0,
                LEFT + 38.0,
                ly + 4.0,
                escape(&name)
            );
        }
        if let Some(axis) = &self.secondary {
            // The right axis: its own ticks, no grid (the left axis has one).
            let (top, step) = y_scale(axis.series.iter());
            let x_axis = LEFT + plot_w;
            let mut y = 0.0;
            while y <= top + step / 2.0 {
                let py = TOP + plot_h - (y / top) * plot_h;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x_axis:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#333"/><text x="{:.1}" y="{:.1}">{}</text>"##,
                    x_axis + 4.0,
                    x_axis + 6.0,
                    py + 4.0,
                    number_label(y)
                );
                y += step;
            }
            let mid = TOP + plot_h / 2.0;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{mid:.1}" text-anchor="middle" transform="rotate(90 {:.1} {mid:.1})">{}</text>"#,
                WIDTH - 12.0,
                WIDTH - 12.0,
                escape(&axis.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The chart formats, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

fn format_of(path: &Path) -> Option<Format> {
    let extension = path.extension()?.to_str()?;
    if extension.eq_ignore_ascii_case("svg") {
        Some(Format::Svg)
    } else if extension.eq_ignore_ascii_case("png") {
        Some(Format::Png)
    } else {
        None
    }
}

/// Whether `path` names a format the charts can be written in (SVG or PNG); tools check
/// this before a run so a bad name fails fast.
pub fn is_chart_path(path: &Path) -> bool {
    format_of(path).is_some()
}

/// Writes a chart's SVG to `path`, as SVG or rendered to PNG by the name's extension.
pub(crate) fn write_svg(path: &Path, svg: String) -> Result<(), PlotError> {
    let shown = || path.display().to_string();
    let bytes = match format_of(path) {
        Some(Format::Svg) => svg.into_bytes(),
        Some(Format::Png) => crate::png::render(&svg).map_err(|reason| PlotError::Render {
            path: shown(),
            reason,
        })?,
        None => return Err(PlotError::Format(shown())),
    };
    std::fs::write(path, bytes).map_err(|source| PlotError::Io {
        path: shown(),
        source,
    })
}

/// Writes the chart; the file name's extension picks the format (SVG or PNG).
pub fn write_chart(path: &Path, chart: &Chart) -> Result<(), PlotError> {
    write_svg(path, chart.to_svg())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "TCP bandwidth <veth>".into(),
            x_label: "message size (bytes)".into(),
            y_label: "Gbit/s".into(),
            x_log2_bytes: true,
            secondary: None,
            series: vec![Series {
                name: "receiver".into(),
                points: (1..=23).map(|p| (2f64.powi(p), p as f64 * 0.5)).collect(),
            }],
        }
    }

    #[test]
    fn svg_has_every_point_labels_and_escapes() {
        let svg = chart().to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 23);
        assert!(svg.contains("&lt;veth&gt;"));
        assert!(svg.contains(">8M<") && svg.contains(">2K<") && svg.contains(">2<"));
        assert!(svg.contains("Gbit/s"));
    }

    #[test]
    fn a_second_axis_scales_its_lines_on_its_own() {
        let mut both = chart();
        both.secondary = Some(Axis {
            label: "latency (us)".into(),
            series: vec![Series {
                name: "mean".into(),
                points: (1..=23)
                    .map(|p| (2f64.powi(p), p as f64 * 1000.0))
                    .collect(),
            }],
        });
        let svg = both.to_svg();
        assert_eq!(svg.matches("<circle").count(), 46);
        assert!(svg.contains("latency (us)") && svg.contains("mean (right axis)"));
        assert!(
            svg.contains("stroke-dasharray"),
            "the right axis's lines are dashed"
        );
        // Its ticks reach its own top (25,000), not the left axis's (12).
        assert!(svg.contains(">25000<"), "{svg}");
        assert!(!chart().to_svg().contains("stroke-dasharray"));
    }

    #[test]
    fn empty_and_flat_charts_still_render() {
        let mut empty = chart();
        empty.series.clear();
        assert!(empty.to_svg().contains("</svg>"));
        let mut flat = chart();
        flat.series[0].points = vec![(64.0, 0.0)];
        assert!(!flat.to_svg().contains("NaN"));
    }

    #[test]
    fn svg_and_png_files_are_written_and_other_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let jpg = dir.path().join("x.jpg");
        assert!(matches!(
            write_chart(&jpg, &chart()),
            Err(PlotError::Format(_))
        ));
        assert!(!jpg.exists());
        let svg = dir.path().join("x.svg");
        write_chart(&svg, &chart()).unwrap();
        assert!(std::fs::read_to_string(svg).unwrap().contains("<polyline"));
        let png = dir.path().join("X.PNG");
        write_chart(&png, &chart()).unwrap();
        let bytes = std::fs::read(png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }
}
