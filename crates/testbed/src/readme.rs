//! README's table of shared conventions, checked against each tool's `--help`: the table
//! says which of `--json`, `--csv`, `--plot`, `-q`, `-v` a tool has, and the help must agree.

use std::path::Path;
use std::process::Command;

/// Every (flag, README says the tool has it) in `tool`'s row of the conventions table.
pub fn conventions_row(tool: &str) -> Result<Vec<(String, bool)>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect()
    };
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| tool |"));
    let header = lines
        .next()
        .ok_or("README has no conventions table (a line starting \"| tool |\")")?;
    let flags: Vec<String> = cells(header)
        .into_iter()
        .skip(1)
        .map(|c| c.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    let row = lines
        .take_while(|l| l.starts_with('|'))
        .map(cells)
        .find(|c| c.first().map(String::as_str) == Some(tool))
        .ok_or_else(|| format!("README's conventions table has no row for {tool}"))?;
    Ok(flags
        .into_iter()
        .zip(row.into_iter().skip(1))
        .map(|(flag, says)| (flag, says != "no"))
        .collect())
}

/// Whether `help` offers `flag` as an option (not as part of a longer one).
pub fn help_has(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        before.is_none_or(|c| c.is_whitespace() || c == ',' || c == '[')
            && after.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '-')
    })
}

/// `binary ARGS --help`, stdout.
pub fn help_of(binary: &str, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{binary} --help: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails, naming each disagreement, unless README's row for `tool` matches the flags
/// offered by any of `helps` (a tool with subcommands has the flag if one of them does).
pub fn assert_row_matches(tool: &str, helps: &[String]) {
    let row = conventions_row(tool).unwrap_or_else(|e| panic!("{e}"));
    assert!(!row.is_empty(), "README's row for {tool} is empty");
    let wrong: Vec<String> = row
        .iter()
        .filter_map(|(flag, readme_says)| {
            let has = helps.iter().any(|h| help_has(h, flag));
            (has != *readme_says).then(|| {
                format!(
                    "README says {tool} {} {flag}, --help {}",
                    if *readme_says { "has" } else { "lacks" },
                    if has { "offers it" } else { "does not" }
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_is_found_only_as_a_whole_option() {
        let help =
            "  -q, --quiet  Less\n      --json  One document\n      --jsonl  no\n  [--csv FILE]";
        assert!(help_has(help, "-q"));
        assert!(help_has(help, "--json"));
        assert!(help_has(help, "--csv"));
        assert!(!help_has(help, "-v"));
        assert!(!help_has("      --verbose  More", "-v"));
        assert!(!help_has("      --plotter  x", "--plot"));
    }

    #[test]
    fn the_table_has_a_row_for_every_tool() {
        for tool in [
            "netcheck",
            "linkbench bw/lat",
            "collbench",
            "kvxfer",
            "explain",
        ] {
            let row = conventions_row(tool).unwrap();
            let flags: Vec<&str> = row.iter().map(|(f, _)| f.as_str()).collect();
            assert_eq!(flags, ["--json", "--csv", "--plot", "-q", "-v"], "{tool}");
        }
    }
}
