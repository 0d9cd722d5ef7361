//! The interactive shell's backslash commands, as datafusion-cli has them.

use clap::ValueEnum;

use crate::shell::Format;

/// One backslash command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `\q`: quit.
    Quit,
    /// `\?`: list the commands.
    Help,
    /// `\d`: list the tables.
    ListTables,
    /// `\d NAME`: describe a table.
    Describe(String),
    /// `\quiet [true|false]`: toggle (or set) the rows-and-time line.
    Quiet(Option<bool>),
    /// `\pset format NAME`: how results print.
    Format(Format),
    /// Not a command: what to say.
    Unknown(String),
}

/// The commands, as `\?` lists them.
pub(crate) const HELP: &str = "\
\\q                 quit
\\?                 list these commands
\\d                 list tables
\\d NAME            describe table NAME
\\quiet [true|false] toggle the rows-and-time line after each result
\\pset format NAME  print results as table, csv, json or ndjson
SQL statements end with ';' and may span lines; Ctrl-C cancels the one running.";

impl Command {
    /// The command of a line that starts with `\`.
    pub(crate) fn parse(line: &str) -> Self {
        let mut words = line.trim().trim_end_matches(';').split_whitespace();
        let name = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        match (name, args.as_slice()) {
            ("\\q", []) => Self::Quit,
            ("\\?" | "\\h", []) => Self::Help,
            ("\\d", []) => Self::ListTables,
            ("\\d", [table]) => Self::Describe((*table).to_string()),
            ("\\quiet", []) => Self::Quiet(None),
            ("\\quiet", [value]) => match value.to_ascii_lowercase().as_str() {
                "true" | "on" => Self::Quiet(Some(true)),
                "false" | "off" => Self::Quiet(Some(false)),
                _ => Self::Unknown(format!("\\quiet takes true or false, not '{value}'")),
            },
            ("\\pset", ["format", format]) => match Format::from_str(format, true) {
                Ok(format) => Self::Format(format),
                Err(_) => Self::Unknown(format!(
                    "\\pset format takes table, csv, json or ndjson, not '{format}'"
                )),
            },
            _ => Self::Unknown(format!("unknown command '{}'; \\? lists them", line.trim())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_datafusion_cli_has_them() {
        assert_eq!(Command::parse("\\q"), Command::Quit);
        assert_eq!(Command::parse("\\?"), Command::Help);
        assert_eq!(Command::parse("\\d"), Command::ListTables);
        assert_eq!(
            Command::parse("\\d docs"),
            Command::Describe("docs".to_string())
        );
        assert_eq!(Command::parse("\\quiet"), Command::Quiet(None));
        assert_eq!(Command::parse("\\quiet false"), Command::Quiet(Some(false)));
        assert_eq!(
            Command::parse("\\pset format csv"),
            Command::Format(Format::Csv)
        );
        assert!(
            matches!(Command::parse("\\x"), Command::Unknown(m) if m.contains("\\? lists them"))
        );
        assert!(matches!(
            Command::parse("\\quiet maybe"),
            Command::Unknown(_)
        ));
    }
}
