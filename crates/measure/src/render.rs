//! One result, rendered as a human table or a CSV file; JSON comes from serde on the record.

use comfy_table::{presets, CellAlignment, ColumnConstraint, ContentArrangement, Table as Comfy};
use std::io::Write;
use std::path::Path;

/// Rows of already-formatted cells under a header.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push<S: Into<String>>(&mut self, row: impl IntoIterator<Item = S>) {
        self.rows.push(row.into_iter().map(Into::into).collect());
    }

    /// Renders for a terminal; numeric-looking cells are right-aligned and never wrap.
    pub fn render(&self) -> String {
        self.render_at(None)
    }

    /// Renders at a fixed width (tests, or a caller that knows the width).
    pub fn render_width(&self, width: u16) -> String {
        self.render_at(Some(width))
    }

    fn render_at(&self, width: Option<u16>) -> String {
        let mut table = Comfy::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(&self.header);
        if let Some(width) = width {
            table.set_width(width);
        } else if table.width().is_none() {
            // Piped output (logs, CI) has no terminal width: wrap at a width that reads well.
            table.set_width(150);
        }
        for row in &self.rows {
            table.add_row(row);
        }
        let numeric_columns: Vec<bool> = (0..self.header.len())
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|row| {
                        row.get(i).is_some_and(|cell| {
                            cell.trim_start_matches(['-', '+'])
                                .starts_with(|c: char| c.is_ascii_digit())
                        })
                    })
            })
            .collect();
        for (index, numeric) in numeric_columns.into_iter().enumerate() {
            if numeric {
                if let Some(column) = table.column_mut(index) {
                    column.set_cell_alignment(CellAlignment::Right);
                    // Numbers never wrap (a narrow terminal split "1,213.4" across lines);
                    // the text columns give up the width instead.
                    column.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
        }
        table.to_string()
    }
}

/// Writes header and rows as RFC 4180 CSV (fields with commas or quotes are quoted).
pub fn write_csv(path: &Path, table: &Table) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for row in std::iter::once(&table.header).chain(table.rows.iter()) {
        let line: Vec<String> = row.iter().map(|cell| csv_field(cell)).collect();
        writeln!(out, "{}", line.join(","))?;
    }
    out.flush()
}

fn csv_field(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_never_wrap_in_a_narrow_table() {
        let mut table = Table::new(["plan", "TPOT ms", "note"]);
        table.push([
            "TP4xPP2 over 2 nodes",
            "1234567.891",
            "a long note that has to wrap somewhere in eighty columns or fewer",
        ]);
        let text = table.render_width(40);
        assert!(text.contains("1234567.891"), "{text}");
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let mut table = Table::new(["size", "note"]);
        table.push(["4096", "a, \"b\""]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        write_csv(&path, &table).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text, "size,note\n4096,\"a, \"\"b\"\"\"\n");
    }

    #[test]
    fn table_renders_every_cell() {
        let mut table = Table::new(["id", "value"]);
        table.push(["iface.up", "12"]);
        let text = table.render();
        assert!(text.contains("iface.up") && text.contains("12") && text.contains("value"));
    }
}
