//! The kinds of value a service option takes.
//!
//! Each kind ([`ValueKind`]) says how a value is read from SQL text, how it
//! is printed back (so that printing and reading again gives the same
//! value), and what a user is told it expects when a value does not fit.
//! The kind of the options whose values have names is `named::Choice`.

use std::time::Duration;

/// How one kind of option value is read, printed and explained.
pub(crate) trait ValueKind {
    /// The typed value.
    type Value;
    /// The value written as `text` (quotes removed, trimmed), if it fits.
    fn parse(&self, text: &str) -> Option<Self::Value>;
    /// The value as text that [`Self::parse`] reads back.
    fn format(&self, value: &Self::Value) -> String;
    /// What the option takes, for errors and docs.
    fn expected(&self) -> String;
}

/// A set of GPU device ids, handed to one instance.
pub type DeviceSet = Vec<String>;

/// A whole number from `min` to `max`.
pub(crate) struct Count {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl ValueKind for Count {
    type Value = usize;

    fn parse(&self, text: &str) -> Option<usize> {
        text.parse::<usize>()
            .ok()
            .filter(|n| (self.min..=self.max).contains(n))
    }

    fn format(&self, value: &usize) -> String {
        value.to_string()
    }

    fn expected(&self) -> String {
        format!("an integer from {} to {}", self.min, self.max)
    }
}

/// `'none'`, or a whole number from `min` to `max`.
pub(crate) struct OptionalCount {
    pub(crate) min: usize,
    pub(crate) max: usize,
}

impl ValueKind for OptionalCount {
    type Value = Option<usize>;

    fn parse(&self, text: &str) -> Option<Option<usize>> {
        if text.eq_ignore_ascii_case("none") {
            return Some(None);
        }
        Count {
            min: self.min,
            max: self.max,
        }
        .parse(text)
        .map(Some)
    }

    fn format(&self, value: &Option<usize>) -> String {
        value.map_or_else(|| "none".to_string(), |n| n.to_string())
    }

    fn expected(&self) -> String {
        format!("'none' or an integer from {} to {}", self.min, self.max)
    }
}

/// A size in bytes of at least `min`.
pub(crate) struct Size {
    pub(crate) min: u64,
    pub(crate) max: u64,
}

impl ValueKind for Size {
    type Value = usize;

    fn parse(&self, text: &str) -> Option<usize> {
        parse_bytes(text)
            .filter(|b| (self.min..=self.max).contains(b))
            .and_then(|b| usize::try_from(b).ok())
    }

    fn format(&self, value: &usize) -> String {
        value.to_string()
    }

    fn expected(&self) -> String {
        format!(
            "a size from {} to {}, e.g. 1048576 or '64MiB'",
            binary_size(self.min),
            binary_size(self.max)
        )
    }
}

/// `'none'`, or a size in bytes of at least `min`.
pub(crate) struct Limit {
    pub(crate) min: u64,
}

impl ValueKind for Limit {
    type Value = Option<u64>;

    fn parse(&self, text: &str) -> Option<Option<u64>> {
        if text.eq_ignore_ascii_case("none") {
            return Some(None);
        }
        parse_bytes(text).filter(|b| *b >= self.min).map(Some)
    }

    fn format(&self, value: &Option<u64>) -> String {
        value.map_or_else(|| "none".to_string(), |b| b.to_string())
    }

    fn expected(&self) -> String {
        format!(
            "'none' or a size of at least {}, e.g. '512MiB', '2GiB'",
            binary_size(self.min)
        )
    }
}

/// A duration of at least [`MIN_DURATION`]: a shorter timeout could not
/// even cover a request's round trip, so every request would time out.
pub(crate) struct Positive;

/// The shortest duration [`Positive`] takes (durations print in whole
/// milliseconds).
pub(crate) const MIN_DURATION: Duration = Duration::from_millis(1);

impl ValueKind for Positive {
    type Value = Duration;

    fn parse(&self, text: &str) -> Option<Duration> {
        parse_duration(text).filter(|d| *d >= MIN_DURATION)
    }

    fn format(&self, value: &Duration) -> String {
        format_duration(*value)
    }

    fn expected(&self) -> String {
        "a duration of at least 1ms such as '250ms', '30s', '2m'".to_string()
    }
}

/// `true` or `false`.
pub(crate) struct Flag;

impl ValueKind for Flag {
    type Value = bool;

    fn parse(&self, text: &str) -> Option<bool> {
        match text.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    fn format(&self, value: &bool) -> String {
        value.to_string()
    }

    fn expected(&self) -> String {
        "true or false".to_string()
    }
}

/// GPU device ids: one per instance in turn, or a set per instance.
pub(crate) struct Devices;

impl ValueKind for Devices {
    type Value = Vec<DeviceSet>;

    fn parse(&self, text: &str) -> Option<Vec<DeviceSet>> {
        parse_gpus(text)
    }

    fn format(&self, value: &Vec<DeviceSet>) -> String {
        if value.is_empty() {
            return "none".to_string();
        }
        value
            .iter()
            .map(|set| set.join(","))
            .collect::<Vec<_>>()
            .join(";")
    }

    fn expected(&self) -> String {
        "device ids (indexes or GPU-/MIG- UUIDs) such as '0,1' (one per instance), '0,1;2,3' \
         (a set per instance), or 'none'"
            .to_string()
    }
}

/// Text such as a path or a command, or `'none'`; `what` says what it is.
pub(crate) struct Text {
    pub(crate) what: &'static str,
}

impl ValueKind for Text {
    type Value = Option<String>;

    fn parse(&self, text: &str) -> Option<Option<String>> {
        if text.is_empty() {
            return None;
        }
        Some((!text.eq_ignore_ascii_case("none")).then(|| text.to_string()))
    }

    fn format(&self, value: &Option<String>) -> String {
        value.clone().unwrap_or_else(|| "none".to_string())
    }

    fn expected(&self) -> String {
        self.what.to_string()
    }
}

/// Extra environment variables: `NAME=value` words, quoted as a shell
/// quotes them (`HF_HOME=/models MODEL="small v2"`), or `'none'`.
pub(crate) struct Environment;

impl ValueKind for Environment {
    type Value = Vec<(String, String)>;

    fn parse(&self, text: &str) -> Option<Vec<(String, String)>> {
        if text.eq_ignore_ascii_case("none") {
            return Some(Vec::new());
        }
        let words = shell_words::split(text).ok()?;
        if words.is_empty() {
            return None;
        }
        words
            .into_iter()
            .map(|word| {
                let (name, value) = word.split_once('=')?;
                // control characters in a value would not survive printing
                // and reading back, nor most programs that read it
                let valid = !value.chars().any(char::is_control)
                    && name
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                valid.then(|| (name.to_string(), value.to_string()))
            })
            .collect()
    }

    fn format(&self, value: &Vec<(String, String)>) -> String {
        if value.is_empty() {
            return "none".to_string();
        }
        let words: Vec<String> = value
            .iter()
            .map(|(name, value)| format!("{name}={}", shell_words::quote(value)))
            .collect();
        words.join(" ")
    }

    fn expected(&self) -> String {
        "NAME=value words, quoted as in a shell (HF_HOME=/models MODEL='small v2'), or 'none'"
            .to_string()
    }
}

/// Parses a duration: a number with one of the units `ms`, `s`, `m`, `h`
/// (a bare number is seconds).
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim().to_ascii_lowercase();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    // whole milliseconds, the precision durations print with, so a value
    // printed reads back the same
    (seconds.is_finite() && (0.0..1e9).contains(&seconds))
        .then(|| Duration::from_millis((seconds * 1000.0).round() as u64))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a size: a number of bytes, or a number with `KiB`, `MiB`, `GiB`
/// (also `KB`, `MB`, `GB`, `K`, `M`, `G`, all powers of 1024).
pub fn parse_bytes(value: &str) -> Option<u64> {
    let value = value.trim().to_ascii_lowercase();
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// `bytes` in the largest binary unit that divides it (`16MiB`).
fn binary_size(bytes: u64) -> String {
    [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .iter()
        .find(|(unit, _)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || bytes.to_string(),
            |(unit, name)| format!("{}{name}", bytes / unit),
        )
}

fn parse_gpus(value: &str) -> Option<Vec<DeviceSet>> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    // an index (0, 1, ...) or a UUID as nvidia-smi -L prints it
    // (GPU-8f2c..., MIG-...), as CUDA_VISIBLE_DEVICES takes them
    let valid = |id: &str| {
        let uuid = ["GPU-", "MIG-"].iter().find_map(|p| id.strip_prefix(p));
        match uuid {
            Some(rest) => {
                !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }
            None => !id.is_empty() && id.len() <= 4 && id.chars().all(|c| c.is_ascii_digit()),
        }
    };
    let sets: Vec<DeviceSet> = if value.contains(';') {
        value
            .split(';')
            .map(|set| set.split(',').map(|id| id.trim().to_string()).collect())
            .collect()
    } else {
        value
            .split(',')
            .map(|id| vec![id.trim().to_string()])
            .collect()
    };
    sets.iter().flatten().all(|id| valid(id)).then_some(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_what_it_prints() {
        let count = Count { min: 1, max: 8 };
        assert_eq!(count.parse(&count.format(&3)), Some(3));
        assert_eq!(count.parse("9"), None);
        let size = Size {
            min: 1024,
            max: 1 << 30,
        };
        assert_eq!(size.parse("64MiB"), Some(64 << 20));
        assert_eq!(size.parse(&size.format(&(64 << 20))), Some(64 << 20));
        assert_eq!(size.parse("1000"), None);
        assert_eq!(size.parse("2GiB"), None);
        let limit = Limit { min: 16 << 20 };
        assert_eq!(limit.parse(&limit.format(&None)), Some(None));
        assert_eq!(limit.parse("1KiB"), None);
        assert_eq!(
            Positive.parse(&Positive.format(&Duration::from_millis(250))),
            Some(Duration::from_millis(250))
        );
        assert_eq!(Positive.parse("0s"), None);
        assert_eq!(Positive.parse("0.0000001s"), None);
        assert_eq!(Positive.parse("1ms"), Some(MIN_DURATION));
        let gpus = Devices.parse("0,1;2,3").unwrap();
        assert_eq!(Devices.parse(&Devices.format(&gpus)), Some(gpus));
        assert_eq!(Devices.parse("0,;1"), None);
        assert_eq!(Devices.parse("-1"), None);
        assert_eq!(Devices.parse(""), None);
        assert_eq!(Devices.parse("none"), Some(Vec::new()));
        assert_eq!(
            Devices.parse("GPU-8f2c1e0a-1b2c"),
            Some(vec![vec!["GPU-8f2c1e0a-1b2c".to_string()]])
        );
        let text = Text { what: "a path" };
        assert_eq!(text.parse(""), None);
        assert_eq!(text.parse("NONE"), Some(None));
        let env = Environment
            .parse("HF_HOME=/models MODEL='small v2' EMPTY=")
            .unwrap();
        assert_eq!(
            env,
            vec![
                ("HF_HOME".to_string(), "/models".to_string()),
                ("MODEL".to_string(), "small v2".to_string()),
                ("EMPTY".to_string(), String::new()),
            ]
        );
        assert_eq!(Environment.parse(&Environment.format(&env)), Some(env));
        for bad in ["", "NOVALUE", "1X=2", "A-B=1", "A='open"] {
            assert_eq!(Environment.parse(bad), None, "{bad}");
        }
        assert_eq!(Environment.parse("none"), Some(Vec::new()));
    }

    #[test]
    fn expectations_name_sizes_in_binary_units() {
        assert_eq!(binary_size(1024), "1KiB");
        assert_eq!(binary_size(16 << 20), "16MiB");
        assert_eq!(binary_size(1000), "1000");
        assert_eq!(
            Limit { min: 16 << 20 }.expected(),
            "'none' or a size of at least 16MiB, e.g. '512MiB', '2GiB'"
        );
    }
}
