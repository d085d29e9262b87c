//! The one flag layer every command line goes through: a command's flags
//! are a table ([`Usage`]) that both parses the arguments and writes
//! `--help`, so help and parser cannot disagree. What each flag means is
//! the command's (`cli`, `schedule`, `takeover`); how flags are written
//! (`--flag value`, `--flag=value`, bare switches, short aliases) and what
//! a duration looks like are said here, once.

use std::time::Duration;

/// One flag of a command.
pub struct Flag {
    /// Its spellings, short ones first; the last is the name the command
    /// matches on (see [`Usage::parse`]).
    pub names: &'static [&'static str],
    /// What its value is called in help (`DURATION`, `PATH`); `None`: a
    /// switch that takes no value.
    pub value: Option<&'static str>,
    /// What it does and its default, one line per `\n`.
    pub help: &'static str,
}

/// A command's help: what it is, how it is called, its flags, and notes.
pub struct Usage {
    /// The first lines: what the command is and its `Usage:` lines.
    pub head: &'static str,
    pub flags: &'static [Flag],
    /// Lines after the flags (exit codes, formats); [`DURATIONS`] is added
    /// when any flag takes a `DURATION`.
    pub tail: &'static str,
}

/// Where flag help starts on its line.
const HELP_COLUMN: usize = 29;

/// How durations are written, as [`duration`] reads them.
pub const DURATIONS: &str = "Durations: a number and a unit (ms, s, m, h, d), several compounded \
(500ms, 10s, 1h30m, 7d, 1.5h), or a plain number of seconds (90, 0.5).";

impl Usage {
    /// The help text: head, one entry per flag, tail.
    pub fn help(&self) -> String {
        let mut out = String::from(self.head);
        out.push_str("\nOptions:\n");
        for f in self.flags {
            let mut names = f.names.join(", ");
            if let Some(v) = f.value {
                names.push(' ');
                names.push_str(v);
            }
            let mut lines = f.help.lines();
            let first = lines.next().unwrap_or("");
            let lead = format!("  {names}");
            if lead.len() < HELP_COLUMN {
                out.push_str(&format!("{lead:<HELP_COLUMN$}{first}\n"));
            } else {
                out.push_str(&format!("{lead} {first}\n"));
            }
            for l in lines {
                out.push_str(&format!("{:HELP_COLUMN$}{l}\n", ""));
            }
        }
        if !self.tail.is_empty() {
            out.push('\n');
            out.push_str(self.tail);
        }
        if self.flags.iter().any(|f| f.value == Some("DURATION")) {
            out.push('\n');
            out.push_str(DURATIONS);
            out.push('\n');
        }
        out
    }

    /// The flags of `args`, in order, each by its last name with its value
    /// (`--flag value` or `--flag=value`; `None` for a switch). A flag not
    /// in the table, a missing value, or a value given to a switch → an
    /// error naming the flag; nothing else is checked here.
    pub fn parse(
        &self,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Vec<(&'static str, Option<String>)>, String> {
        let mut out = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            let Some(flag) = self.flags.iter().find(|f| f.names.contains(&name.as_str())) else {
                return Err(format!("unknown argument {name:?}"));
            };
            let canonical = flag.names[flag.names.len() - 1];
            let value = match (flag.value, inline) {
                (Some(_), Some(v)) => Some(v),
                (Some(_), None) => Some(args.next().ok_or(format!("{name} needs a value"))?),
                (None, None) => None,
                (None, Some(_)) => return Err(format!("{name} takes no value")),
            };
            out.push((canonical, value));
        }
        Ok(out)
    }
}

/// What a subcommand's command line asks for: to run with its arguments,
/// or its help.
#[derive(Debug)]
pub enum Parsed<A> {
    Run(Box<A>),
    Help,
}

/// How a subcommand prints what it found (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// For a person.
    Text,
    /// One JSON document.
    Json,
}

/// `--output`'s value: `text` or `json`.
pub fn output(flag: &str, v: &str) -> Result<Output, String> {
    match v {
        "text" => Ok(Output::Text),
        "json" => Ok(Output::Json),
        other => Err(format!("{flag}: {other:?} is not text or json")),
    }
}

/// The value [`Usage::parse`] found for a flag that takes one (empty for a
/// switch, which the table makes impossible).
pub fn value(v: Option<String>) -> String {
    v.unwrap_or_default()
}

/// A duration as [`DURATIONS`] says: `500ms`, `10s`, `2m`, `168h`, `7d`,
/// compounded (`1h30m`), or a bare number of seconds. Anything else → an
/// error naming `flag` and the forms.
pub fn duration(flag: &str, v: &str) -> Result<Duration, String> {
    let bad = || format!("{flag}: {v:?} is not a duration ({DURATIONS})");
    if v.is_empty() {
        return Err(bad());
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let n: f64 = v.parse().map_err(|_| bad())?;
        return Duration::try_from_secs_f64(n).map_err(|_| bad());
    }
    let mut secs = 0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let i = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(i);
        let j = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(j);
        let n: f64 = num.parse().map_err(|_| bad())?;
        secs += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        rest = tail;
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    static TABLE: Usage = Usage {
        head: "demo: a command\n",
        flags: &[
            Flag {
                names: &["-v", "--verbose"],
                value: None,
                help: "more output",
            },
            Flag {
                names: &["--wait"],
                value: Some("DURATION"),
                help: "how long to wait\n[default: 10s]",
            },
            Flag {
                names: &["--a-very-long-flag-name"],
                value: Some("PATH"),
                help: "where",
            },
        ],
        tail: "Exit codes: 0 ok.\n",
    };

    fn parse(args: &[&str]) -> Result<Vec<(&'static str, Option<String>)>, String> {
        TABLE.parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn every_spelling_of_a_flag_reaches_its_last_name() {
        assert_eq!(
            parse(&["-v", "--wait", "5s", "--wait=1m", "--verbose"]).unwrap(),
            [
                ("--verbose", None),
                ("--wait", Some("5s".into())),
                ("--wait", Some("1m".into())),
                ("--verbose", None)
            ]
        );
    }

    #[test]
    fn bad_command_lines_are_refused_naming_the_flag() {
        assert_eq!(
            parse(&["--nope"]).unwrap_err(),
            "unknown argument \"--nope\""
        );
        assert_eq!(parse(&["--wait"]).unwrap_err(), "--wait needs a value");
        assert_eq!(
            parse(&["--verbose=yes"]).unwrap_err(),
            "--verbose takes no value"
        );
        // A value that looks like a flag is still the value.
        assert_eq!(
            parse(&["--wait", "-v"]).unwrap(),
            [("--wait", Some("-v".into()))]
        );
    }

    #[test]
    fn help_lists_every_flag_of_the_table_and_the_duration_forms_the_parser_takes() {
        let help = TABLE.help();
        for f in TABLE.flags {
            for n in f.names {
                assert!(help.contains(n), "{n} missing from:\n{help}");
            }
        }
        assert!(
            help.contains("  -v, --verbose              more output\n"),
            "{help}"
        );
        assert!(
            help.contains("  --wait DURATION            how long to wait\n"),
            "{help}"
        );
        assert!(
            help.contains("\n                             [default: 10s]\n"),
            "{help}"
        );
        assert!(
            help.contains("  --a-very-long-flag-name PATH where\n"),
            "{help}"
        );
        assert!(
            help.ends_with(&format!("Exit codes: 0 ok.\n\n{DURATIONS}\n")),
            "{help}"
        );
        // Every form the help names parses.
        for form in ["500ms", "10s", "1h30m", "7d", "1.5h", "90", "0.5"] {
            assert!(duration("--wait", form).is_ok(), "{form}");
            assert!(DURATIONS.contains(form), "{form} not in the help");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("f", "1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(duration("f", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("f", "7d").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "10x", "m", "-1s", "1h-", "1e3"] {
            let e = duration("--wait", bad).unwrap_err();
            assert!(
                e.starts_with("--wait: ") && e.contains("Durations"),
                "{bad}: {e}"
            );
        }
    }
}
