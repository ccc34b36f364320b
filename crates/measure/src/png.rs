//! PNG charts: the chart's own SVG rendered to pixels by resvg (pure Rust), with text set
//! in a font bundled into the binary, so a PNG looks the same on every machine and needs
//! no system fonts or libraries.

use resvg::{tiny_skia, usvg};

/// The bundled sans-serif face every chart's text is set in.
const FAMILY: &str = "Ubuntu";

/// Renders an SVG document to PNG bytes at its own size.
pub fn render(svg: &str) -> Result<Vec<u8>, String> {
    let mut options = usvg::Options::default();
    let fonts = options.fontdb_mut();
    fonts.load_font_data(epaint_default_fonts::UBUNTU_LIGHT.to_vec());
    fonts.set_sans_serif_family(FAMILY);
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| e.to_string())?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("a {}x{} image is empty", size.width(), size.height()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels (alpha-weighted) in a rectangle of the decoded image.
    fn ink(png: &[u8], x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
        let pixmap = tiny_skia::Pixmap::decode_png(png).unwrap();
        let mut count = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let p = pixmap.pixel(x, y).unwrap();
                if p.alpha() > 128 && (p.red() as u32 + p.green() as u32 + p.blue() as u32) < 300 {
                    count += 1;
                }
            }
        }
        count
    }

    #[test]
    fn text_and_lines_land_in_the_pixels() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" font-family="sans-serif" font-size="20"><rect width="100%" height="100%" fill="white"/><text x="10" y="30">Gbit/s</text><line x1="0" y1="80" x2="200" y2="80" stroke="black" stroke-width="4"/></svg>"#;
        let png = render(svg).unwrap();
        let pixmap = tiny_skia::Pixmap::decode_png(&png).unwrap();
        assert_eq!((pixmap.width(), pixmap.height()), (200, 100));
        // The bundled font drew the label (no system font needed), and the line is there.
        assert!(ink(&png, 10, 10, 120, 35) > 40, "no text drawn");
        assert!(ink(&png, 0, 78, 200, 82) > 600, "no line drawn");
        assert_eq!(
            ink(&png, 150, 10, 200, 60),
            0,
            "ink where nothing was drawn"
        );
    }

    #[test]
    fn a_broken_document_is_an_error_not_a_panic() {
        assert!(render("<svg").is_err());
        assert!(
            render(r#"<svg xmlns="http://www.w3.org/2000/svg" width="0" height="0"/>"#).is_err()
        );
    }
}
