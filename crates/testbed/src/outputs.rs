//! The shared output flags, walked mode by mode: each tool's tests run every mode with
//! `--json`, `--csv FILE`, `--plot FILE.svg`, `--plot FILE.png` and `-q`, and each either
//! produces its output (JSON that parses, a CSV with a header and rows, an SVG that
//! parses as XML, a PNG, a shorter quiet output) or exits 64 with a sentence naming the
//! flag. Nothing is accepted and then ignored.

use std::path::Path;
use std::process::{Command, Output};

/// The shared output flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Json,
    Csv,
    Svg,
    Png,
    Quiet,
}

impl Flag {
    pub const ALL: [Flag; 5] = [Flag::Json, Flag::Csv, Flag::Svg, Flag::Png, Flag::Quiet];

    /// How a refusal names it.
    fn name(self) -> &'static str {
        match self {
            Flag::Json => "--json",
            Flag::Csv => "--csv",
            Flag::Svg | Flag::Png => "--plot",
            Flag::Quiet => "-q",
        }
    }
}

/// What a mode does with a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The output is produced and checks out.
    Honoured,
    /// Exit 64, with a sentence naming the flag.
    Refused,
}

/// One mode of a tool: its arguments, and the exit codes a good run may end with
/// (netcheck's verdicts are 0, 1 or 2).
pub struct Mode<'a> {
    pub name: &'a str,
    pub args: Vec<String>,
    pub ok_codes: &'a [i32],
    /// The flags walked (all but -q for a listener that honours it: it runs until killed).
    pub flags: &'a [Flag],
}

impl<'a> Mode<'a> {
    pub fn new(name: &'a str, args: &[&str]) -> Self {
        Mode {
            name,
            args: args.iter().map(ToString::to_string).collect(),
            ok_codes: &[0],
            flags: &Flag::ALL,
        }
    }

    pub fn only(mut self, flags: &'a [Flag]) -> Self {
        self.flags = flags;
        self
    }

    pub fn exiting(mut self, codes: &'a [i32]) -> Self {
        self.ok_codes = codes;
        self
    }
}

fn run(binary: &str, args: &[String]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{binary}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `mode` with `flag` (files go in `dir`) and checks what came out. Returns what the
/// mode did, or why it did neither cleanly.
pub fn check(binary: &str, mode: &Mode, flag: Flag, dir: &Path) -> Result<Outcome, String> {
    let tag = format!("{}-{:?}", mode.name.replace(' ', "_"), flag).to_lowercase();
    let file = dir.join(match flag {
        Flag::Csv => format!("{tag}.csv"),
        Flag::Svg => format!("{tag}.svg"),
        Flag::Png => format!("{tag}.png"),
        Flag::Json | Flag::Quiet => String::new(),
    });
    let mut args = mode.args.clone();
    match flag {
        Flag::Json => args.push("--json".into()),
        Flag::Quiet => args.push("-q".into()),
        Flag::Csv => args.extend(["--csv".into(), file.display().to_string()]),
        Flag::Svg | Flag::Png => args.extend(["--plot".into(), file.display().to_string()]),
    }
    let output = run(binary, &args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let code = output.status.code().unwrap_or(-1);
    let what = format!("{} {} with {}", binary, mode.name, flag.name());
    if code == 64 {
        let names_it =
            stderr.contains(flag.name()) || (flag == Flag::Quiet && stderr.contains("--quiet"));
        return if names_it && stderr.lines().count() == 1 {
            Ok(Outcome::Refused)
        } else {
            Err(format!(
                "{what}: exit 64 without one sentence naming the flag: {stderr}"
            ))
        };
    }
    if !mode.ok_codes.contains(&code) {
        return Err(format!("{what}: exit {code}: {stderr}"));
    }
    let produced = match flag {
        Flag::Json => check_record(binary, &stdout),
        Flag::Csv => check_csv(&file),
        Flag::Svg => std::fs::read_to_string(&file)
            .map_err(|e| format!("no chart written: {e}"))
            .and_then(|svg| {
                let document = roxmltree::Document::parse(&svg)
                    .map_err(|e| format!("the SVG is not XML: {e}"))?;
                (document.root_element().tag_name().name() == "svg")
                    .then_some(())
                    .ok_or_else(|| "the XML's root is not <svg>".to_string())
            }),
        Flag::Png => std::fs::read(&file)
            .map_err(|e| format!("no chart written: {e}"))
            .and_then(|png| {
                png.starts_with(b"\x89PNG\r\n\x1a\n")
                    .then_some(())
                    .ok_or_else(|| "the file is not a PNG".to_string())
            }),
        Flag::Quiet => {
            let loud = run(binary, &mode.args);
            let (quiet_lines, loud_lines) =
                (stdout.lines().count(), text(&loud.stdout).lines().count());
            (quiet_lines < loud_lines).then_some(()).ok_or_else(|| {
                format!("-q printed {quiet_lines} lines, without it {loud_lines}: {stdout}")
            })
        }
    };
    produced
        .map(|()| Outcome::Honoured)
        .map_err(|problem| format!("{what}: accepted, but {problem}"))
}

/// One JSON document under the envelope of this tool, which reads back into its record
/// type (the records explain reads are typed through and through).
fn check_record(binary: &str, stdout: &str) -> Result<(), String> {
    let tool = Path::new(binary)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(binary);
    let record = measure::record::Record::from_json(stdout)
        .map_err(|e| format!("stdout is not a record ({e}): {stdout}"))?;
    let envelope: measure::record::Envelope =
        serde_json::from_str(stdout).map_err(|e| format!("no envelope ({e}): {stdout}"))?;
    if envelope.tool != tool || envelope.version != measure::record::VERSION {
        return Err(format!(
            "the envelope says {} {}, not {tool} {}",
            envelope.tool,
            envelope.version,
            measure::record::VERSION
        ));
    }
    // Every test of every tool has its record type; none may fall through to the envelope.
    if matches!(record, measure::record::Record::Other(_)) {
        return Err(format!(
            "a {tool} {} record did not read back as its type",
            envelope.test
        ));
    }
    Ok(())
}

fn check_csv(path: &Path) -> Result<(), String> {
    let csv = std::fs::read_to_string(path).map_err(|e| format!("no CSV written: {e}"))?;
    let mut lines = csv.lines();
    let header = lines.next().ok_or("the CSV is empty")?;
    let columns = header.split(',').count();
    let rows: Vec<&str> = lines.collect();
    if rows.is_empty() {
        return Err(format!("the CSV has a header and no rows: {header}"));
    }
    match rows.iter().find(|r| r.split(',').count() != columns) {
        Some(row) => Err(format!(
            "a CSV row has another column count than the header: {row}"
        )),
        None => Ok(()),
    }
}

/// Walks every mode with every flag and fails, listing each problem, unless each mode does
/// what `expected(mode, flag)` says.
pub fn walk(binary: &str, modes: &[Mode], expected: impl Fn(&str, Flag) -> Outcome, dir: &Path) {
    let mut problems = Vec::new();
    for mode in modes {
        for &flag in mode.flags {
            match check(binary, mode, flag, dir) {
                Ok(outcome) if outcome == expected(mode.name, flag) => {}
                Ok(outcome) => problems.push(format!(
                    "{binary} {} with {flag:?}: {outcome:?}, expected {:?}",
                    mode.name,
                    expected(mode.name, flag)
                )),
                Err(problem) => problems.push(problem),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
