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
/// `flags` names this tool's flag for each setting the libraries' hints mention.
pub fn main<A: clap::Parser>(
    tool: &str,
    flags: &[(measure::Setting, &str)],
    run: impl FnOnce(A) -> anyhow::Result<u8>,
) -> ExitCode {
    // `tool | head`: a closed pipe ends the process quietly, as it does every Unix tool,
    // instead of a "Broken pipe" panic from println!.
    // SAFETY: restoring the default disposition of one signal, before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = match A::try_parse() {
        Ok(args) => args,
        Err(error) => {
            use clap::error::ErrorKind;
            match error.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = error.print();
                    return ExitCode::from(exit::OK);
                }
                _ => {
                    eprintln!("{tool}: error: {}", argument_error(tool, &error));
                    return ExitCode::from(exit::USAGE);
                }
            }
        }
    };
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!(
                "{tool}: error: {}",
                measure::name_flags(&sentence(&error), flags)
            );
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

/// clap's multi-line argument error as one sentence with the fix:
/// "unexpected argument '--fo' found (a similar one: '--foo'): see `linkbench bw --help`".
fn argument_error(tool: &str, error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut cause = String::new();
    let mut tips = Vec::new();
    let mut command = tool.to_string();
    let mut in_usage = false;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(text) = line.strip_prefix("error: ") {
            cause = text.trim_end_matches(':').to_string();
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            tips.push(tip.to_string());
        } else if line.starts_with("For more information") {
        } else if let Some(usage) = line.strip_prefix("Usage: ") {
            in_usage = true;
            // "Usage: linkbench bw [OPTIONS] --peer <HOST>": the (sub)command's name.
            command = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ");
        } else if !in_usage && !cause.is_empty() {
            // The indented list under "the following required arguments were not provided:".
            cause = format!("{cause}: {line}");
        }
    }
    if cause.is_empty() {
        cause = rendered.lines().next().unwrap_or_default().to_string();
    }
    let tips = if tips.is_empty() {
        String::new()
    } else {
        format!(" ({})", tips.join("; "))
    };
    format!("{cause}{tips}: see `{command} --help`")
}

/// Checks, before any measuring, that an output file can be written: its folder exists
/// and the file can be created there. A bad path must not cost a run and its results.
pub fn check_output_path(flag: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(usage(format!(
            "{flag} {}: the folder {} does not exist: create it or pick another path",
            path.display(),
            parent.display()
        )));
    }
    if path.is_dir() {
        return Err(usage(format!(
            "{flag} {}: that is a folder: name a file",
            path.display()
        )));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| {
            usage(format!(
                "{flag} {}: cannot write there: {e}",
                path.display()
            ))
        })?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `--json`, `--csv FILE`, `--plot FILE.svg|png` and `-q`: declared here once and flattened
/// into every mode of every tool that prints results. A mode that does not honour one hides
/// it from its help ([`hide_outputs`]) and refuses it in [`OutputArgs::resolve`], so no
/// output flag is ever accepted and ignored.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// One JSON document on stdout, nothing else.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as CSV: raw numbers, the unit in each column's name.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,
    /// Draw the results as a chart (FILE.svg or FILE.png).
    #[arg(long, value_name = "FILE.svg|png")]
    pub plot: Option<std::path::PathBuf>,
    /// Less on stdout: no progress bar, and only the summary lines or the table alone.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Which output flags a mode honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Honours {
    pub json: bool,
    pub csv: bool,
    pub plot: bool,
    pub quiet: bool,
}

impl Honours {
    pub const ALL: Honours = Honours {
        json: true,
        csv: true,
        plot: true,
        quiet: true,
    };
    pub const JSON: Honours = Honours {
        json: true,
        csv: false,
        plot: false,
        quiet: false,
    };
    pub const JSON_QUIET: Honours = Honours {
        quiet: true,
        ..Honours::JSON
    };
}

/// Hides the output flags a mode does not honour from its help:
/// `#[command(mut_args(cli::hide_outputs(HONOURS)))]` on the mode's flags, with the same
/// `HONOURS` that [`OutputArgs::resolve`] gets.
pub fn hide_outputs(honours: Honours) -> impl FnMut(clap::Arg) -> clap::Arg {
    move |arg| {
        let honoured = match arg.get_id().as_str() {
            "json" => honours.json,
            "csv" => honours.csv,
            "plot" => honours.plot,
            "quiet" => honours.quiet,
            _ => true,
        };
        arg.hide(!honoured)
    }
}

impl OutputArgs {
    /// Refuses, with exit 64 and one sentence naming it, each flag given that `mode` does
    /// not honour; then checks that the output files can be written, before any work.
    pub fn resolve(&self, mode: &str, honours: Honours) -> anyhow::Result<()> {
        let given = [
            (self.json, honours.json, "--json"),
            (self.csv.is_some(), honours.csv, "--csv"),
            (self.plot.is_some(), honours.plot, "--plot"),
            (self.quiet, honours.quiet, "-q/--quiet"),
        ];
        if let Some((_, _, flag)) = given
            .iter()
            .find(|(given, honoured, _)| *given && !honoured)
        {
            let offered: Vec<&str> = given
                .iter()
                .filter(|(_, honoured, _)| *honoured)
                .map(|(_, _, flag)| *flag)
                .collect();
            return Err(usage(format!(
                "{flag}: {mode} has no such output ({})",
                if offered.is_empty() {
                    "it has no output flags".to_string()
                } else {
                    format!("its output flags: {}", offered.join(", "))
                }
            )));
        }
        check_plot_path(self.plot.as_deref())?;
        check_csv_path(self.csv.as_deref())
    }
}

/// The logger a tool injects into its libraries: each line on stderr as `TOOL: line`.
pub fn log_to_stderr(tool: &'static str) -> measure::Log {
    std::sync::Arc::new(move |line: &str| eprintln!("{tool}: {line}"))
}

/// The logger for `-q`: nothing.
pub fn no_log() -> measure::Log {
    std::sync::Arc::new(|_: &str| {})
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
            "--plot {}: charts are written as SVG or PNG; name the file *.svg or *.png",
            path.display()
        ))),
        Some(path) => check_output_path("--plot", path),
        None => Ok(()),
    }
}

/// Rejects a `--csv` path that cannot be written, before any work is done.
pub fn check_csv_path(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    path.map_or(Ok(()), |p| check_output_path("--csv", p))
}

/// Bytes this process may still commit: MemAvailable, capped by the cgroup's limit.
pub fn memory_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let mut available = kib * 1024;
    if let (Some(max), Some(current)) = (
        read("/sys/fs/cgroup/memory.max"),
        read("/sys/fs/cgroup/memory.current"),
    ) {
        available = available.min(max.saturating_sub(current));
    }
    Some(available)
}

/// Refuses a flag whose buffers (`bytes_per_unit` x the flag's value) do not fit in
/// memory, naming the largest value that does, before anything is allocated.
pub fn check_fits(flag: &str, value: u64, bytes_per_unit: u64) -> anyhow::Result<()> {
    let Some(available) = memory_available() else {
        return Ok(());
    };
    let needed = value.saturating_mul(bytes_per_unit);
    if needed <= available {
        return Ok(());
    }
    let largest = available / bytes_per_unit.max(1);
    Err(usage(format!(
        "{flag} {} needs {} of buffers but this node has {} available: pass at most {flag} {}",
        measure::format_bytes(value),
        measure::format_bytes(needed),
        measure::format_bytes(available),
        measure::format_bytes(largest)
    )))
}

/// clap value parser for sizes like `4K`, `1M`, `256MiB`.
pub fn size_arg(text: &str) -> Result<u64, String> {
    measure::parse_size(text).map_err(|e| e.to_string())
}

/// clap value parser for durations like `5s`, `200ms`.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    measure::parse_duration(text).map_err(|e| e.to_string())
}

/// A progress bar on stderr for runs longer than ~2 s, labelled with what it counts
/// (`unit`) and the time left; hidden when stderr is no terminal or the user asked for
/// quiet or JSON output.
pub fn progress(total: u64, message: &str, unit: &str, visible: bool) -> indicatif::ProgressBar {
    if !visible || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg}: {human_pos}/{human_len} {prefix} [{elapsed_precise} elapsed, ~{eta} left] {wide_bar}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(unit.to_string());
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
    fn argument_errors_are_one_line_with_the_fix() {
        #[derive(clap::Parser, Debug)]
        #[command(name = "demo")]
        struct Demo {
            #[arg(long)]
            count: u32,
        }
        let error = <Demo as clap::Parser>::try_parse_from(["demo", "--count", "x"]).unwrap_err();
        let line = argument_error("demo", &error);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("invalid value 'x'"), "{line}");
        assert!(line.ends_with("see `demo --help`"), "{line}");
        let error = <Demo as clap::Parser>::try_parse_from(["demo", "--cout", "1"]).unwrap_err();
        let line = argument_error("demo", &error);
        assert!(
            line.contains("'--cout'") && line.contains("--count"),
            "{line}"
        );
    }

    #[test]
    fn output_paths_are_checked_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("out.csv");
        check_output_path("--csv", &good).unwrap();
        assert!(!good.exists(), "the check must not leave a file behind");
        let missing = dir.path().join("nope/out.csv");
        let e = check_output_path("--csv", &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--csv") && e.contains("does not exist"), "{e}");
        let e = check_output_path("--plot", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("that is a folder"), "{e}");
    }

    #[test]
    fn value_parsers_explain_the_expected_form() {
        assert_eq!(size_arg("4K"), Ok(4096));
        assert!(size_arg("4Q").unwrap_err().contains("e.g. 64, 4K"));
        assert!(duration_arg("soon").unwrap_err().contains("e.g. 5s"));
    }
}
