//! The shared shell of every nodelink binary: parse, run, map errors to one sentence and a
//! fixed exit code. Tools call [`main`] and never print errors or exit on their own.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes shared by all tools (documented in README).
pub mod exit {
    /// Everything passed / the measurement completed.
    pub const OK: u8 = 0;
    /// Warnings only (netcheck).
    pub const WARN: u8 = 1;
    /// A check failed, or the run failed (peer died, refused, timed out).
    pub const FAIL: u8 = 2;
    /// Bad invocation: unknown flag, missing or malformed value, contradictory flags.
    pub const USAGE: u8 = 64;
}

/// An error that carries its own exit code (anything else exits with [`exit::FAIL`]).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Rejects a bad invocation with exit code 64.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Parses arguments, runs the tool, prints one error line on failure.
///
/// `run` returns the exit code it wants (a netcheck with warnings returns 1, say).
pub fn main<A: clap::Parser>(tool: &str, run: impl FnOnce(A) -> anyhow::Result<u8>) -> ExitCode {
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let code = match error.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => exit::OK,
                _ => exit::USAGE,
            };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{tool}: error: {}", sentence(&error));
            let code = if error.downcast_ref::<Usage>().is_some()
                || error.downcast_ref::<measure::UnitError>().is_some()
            {
                exit::USAGE
            } else {
                exit::FAIL
            };
            ExitCode::from(code)
        }
    }
}

/// Joins an error chain into one line: "connecting to 10.0.0.2:18515: connection refused".
pub fn sentence(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Rejects a `--plot` file name the charts cannot be written as, before any work is done.
pub fn check_plot_path(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    match path {
        Some(path) if !measure::is_chart_path(path) => Err(usage(format!(
            "--plot {}: charts are written as SVG; name the file *.svg (for PNG: rsvg-convert FILE.svg -o FILE.png)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// clap value parser for sizes like `4K`, `1M`, `256MiB`.
pub fn size_arg(text: &str) -> Result<u64, String> {
    measure::parse_size(text).map_err(|e| e.to_string())
}

/// clap value parser for durations like `5s`, `200ms`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    measure::parse_duration(text).map_err(|e| e.to_string())
}

/// A progress bar on stderr for runs longer than ~2 s; hidden when stderr is no terminal
/// or the user asked for quiet or JSON output.
pub fn progress(total: u64, message: &str, visible: bool) -> indicatif::ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len}")
    {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_joins_the_chain_without_repeats() {
        let error = anyhow::anyhow!("connection refused").context("connecting to 10.0.0.2:18515");
        assert_eq!(
            sentence(&error),
            "connecting to 10.0.0.2:18515: connection refused"
        );
    }

    #[test]
    fn value_parsers_explain_the_expected_form() {
        assert_eq!(size_arg("4K"), Ok(4096));
        assert!(size_arg("4Q").unwrap_err().contains("e.g. 64, 4K"));
        assert!(duration_arg("soon").unwrap_err().contains("e.g. 5s"));
    }
}
