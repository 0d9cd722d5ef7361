//! Typed, validated options of an RPC service.
//!
//! Every option a user can write in `WITH (key = value, ...)` is a field of
//! [`ServiceOptions`], with its default documented in one place
//! ([`ServiceOptions::default`] and [`OPTION_KEYS`]). Values arrive as text and
//! are parsed and validated by [`ServiceOptions::set`]; a bad key or value
//! yields an [`OptionError`] that names the key, what was given and what is
//! allowed.
//!
//! ```
//! use rpcop_sql::options::{LoadBalance, ServiceOptions};
//!
//! let mut options = ServiceOptions::default();
//! options.set("parallelism", "4").unwrap();
//! options.set("load_balance", "round_robin").unwrap();
//! options.set("timeout", "250ms").unwrap();
//! assert_eq!(options.parallelism, 4);
//! assert_eq!(options.load_balance, LoadBalance::RoundRobin);
//! assert!(options.set("paralelism", "4").is_err());
//! ```

use std::fmt;
use std::time::Duration;

/// The option keys, in the order `DESCRIBE` shows them, each with a one-line
/// description that includes its default.
pub const OPTION_KEYS: &[(&str, &str)] = &[
    ("parallelism", "number of service instances (default 1)"),
    ("batch_size", "rows per request (default 8192)"),
    (
        "max_batch_bytes",
        "upper bound of a request's argument bytes (default 64MiB)",
    ),
    (
        "max_in_flight",
        "requests outstanding per caller stream (default 8)",
    ),
    (
        "timeout",
        "per-request timeout, e.g. '250ms', '30s' (default 30s)",
    ),
    (
        "retries",
        "re-sends to another instance after a failure or timeout (default 3)",
    ),
    (
        "on_error",
        "'fail' (default) fails the query; 'null' gives the rows of a failed request NULL",
    ),
    (
        "load_balance",
        "'least_outstanding' (default), 'round_robin' or 'power_of_two'",
    ),
    (
        "isolation",
        "'thread' (default): instances in this process; 'process': one child process each",
    ),
    ("threads", "worker threads of each instance (default 1)"),
    (
        "memory",
        "memory limit of each instance process, e.g. '512MiB' (default none; needs isolation = 'process')",
    ),
    (
        "gpus",
        "device ids handed to instances as CUDA_VISIBLE_DEVICES, e.g. '0,1' (one each) or '0,1;2,3' (sets)",
    ),
    (
        "transport",
        "'auto' (default): instances in this process are handed batches directly; 'flight': always Arrow Flight",
    ),
    (
        "token_file",
        "file holding the token the ENDPOINTS instances were started with (required with ENDPOINTS)",
    ),
];

/// How a caller picks the instance that serves its next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalance {
    /// The ready instance with the fewest requests outstanding from this client.
    #[default]
    LeastOutstanding,
    /// Each ready instance in turn.
    RoundRobin,
    /// Two ready instances drawn at random; the one with fewer outstanding wins.
    PowerOfTwo,
}

/// Where the instances of a service run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// In this process, each instance on a runtime of its own.
    #[default]
    Thread,
    /// Each instance a child `rpcop serve` process.
    Process,
}

/// What happens to the rows of a request that failed after all retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The query fails with the cause.
    #[default]
    Fail,
    /// The rows get NULL and are counted as errors.
    Null,
}

/// How a caller reaches an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Directly when the instance serves in the caller's process (no
    /// encoding, no socket), otherwise Arrow Flight.
    #[default]
    Auto,
    /// Always Arrow Flight, even in-process.
    Flight,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::Flight => "flight",
        })
    }
}

/// A set of GPU device ids, handed to one instance.
pub type DeviceSet = Vec<String>;

/// The typed options of one RPC service. See [`OPTION_KEYS`] for the keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOptions {
    /// Number of service instances.
    pub parallelism: usize,
    /// Rows per request.
    pub batch_size: usize,
    /// Upper bound of the argument bytes of one request.
    pub max_batch_bytes: usize,
    /// Requests outstanding per caller stream.
    pub max_in_flight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Re-sends to another instance after a failure or timeout.
    pub retries: usize,
    /// What a request that failed after all retries does to the query.
    pub on_error: OnError,
    /// How a caller picks an instance.
    pub load_balance: LoadBalance,
    /// Where instances run.
    pub isolation: Isolation,
    /// Worker threads of each instance (also its concurrent requests).
    pub threads: usize,
    /// Memory limit of each instance process, in bytes.
    pub memory: Option<u64>,
    /// Device sets; instance `i` gets set `i % len`.
    pub gpus: Vec<DeviceSet>,
    /// How callers reach instances.
    pub transport: Transport,
    /// File holding the bearer token of instances attached with `ENDPOINTS`.
    pub token_file: Option<String>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            parallelism: 1,
            batch_size: 8192,
            max_batch_bytes: 64 * 1024 * 1024,
            max_in_flight: 8,
            timeout: Duration::from_secs(30),
            retries: 3,
            on_error: OnError::Fail,
            load_balance: LoadBalance::LeastOutstanding,
            isolation: Isolation::Thread,
            threads: 1,
            memory: None,
            gpus: Vec::new(),
            transport: Transport::Auto,
            token_file: None,
        }
    }
}

/// A bad option key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The key is not an option.
    #[error("unknown option '{key}'; valid options are: {}", valid_keys())]
    UnknownKey {
        /// The key as written.
        key: String,
    },
    /// The value does not fit the key.
    #[error("invalid value '{value}' for option '{key}': expected {expected}")]
    InvalidValue {
        /// The option.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What the option takes.
        expected: &'static str,
    },
    /// Two options that cannot go together.
    #[error("{0}")]
    Conflict(String),
}

fn valid_keys() -> String {
    OPTION_KEYS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ServiceOptions {
    /// Sets one option from its textual value (quotes already removed).
    ///
    /// Keys are case-insensitive. Returns an error naming the key, the value
    /// and what is allowed, and leaves the options unchanged on error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let value = value.trim();
        let lower = key.trim().to_ascii_lowercase();
        let key: &'static str = OPTION_KEYS
            .iter()
            .map(|(k, _)| *k)
            .find(|k| *k == lower)
            .ok_or_else(|| OptionError::UnknownKey {
                key: key.to_string(),
            })?;
        let invalid = |expected: &'static str| OptionError::InvalidValue {
            key,
            value: value.to_string(),
            expected,
        };
        match key {
            "parallelism" => {
                self.parallelism = parse_count(value, 1, 1024)
                    .ok_or_else(|| invalid("an integer from 1 to 1024"))?
            }
            "batch_size" => {
                self.batch_size = parse_count(value, 1, 1 << 24)
                    .ok_or_else(|| invalid("an integer from 1 to 16777216"))?
            }
            "max_batch_bytes" => {
                self.max_batch_bytes = parse_bytes(value)
                    .filter(|b| *b >= 1024)
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or_else(|| invalid("a size of at least 1KiB, e.g. 1048576 or '64MiB'"))?
            }
            "max_in_flight" => {
                self.max_in_flight = parse_count(value, 1, 4096)
                    .ok_or_else(|| invalid("an integer from 1 to 4096"))?
            }
            "timeout" => {
                self.timeout = parse_duration(value)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| invalid("a positive duration such as '250ms', '30s', '2m'"))?
            }
            "retries" => {
                self.retries =
                    parse_count(value, 0, 100).ok_or_else(|| invalid("an integer from 0 to 100"))?
            }
            "on_error" => {
                self.on_error = match value.to_ascii_lowercase().as_str() {
                    "fail" => OnError::Fail,
                    "null" => OnError::Null,
                    _ => return Err(invalid("'fail' or 'null'")),
                }
            }
            "load_balance" => {
                self.load_balance = match value.to_ascii_lowercase().as_str() {
                    "least_outstanding" => LoadBalance::LeastOutstanding,
                    "round_robin" => LoadBalance::RoundRobin,
                    "power_of_two" => LoadBalance::PowerOfTwo,
                    _ => {
                        return Err(invalid(
                            "'least_outstanding', 'round_robin' or 'power_of_two'",
                        ));
                    }
                }
            }
            "isolation" => {
                self.isolation = match value.to_ascii_lowercase().as_str() {
                    "thread" => Isolation::Thread,
                    "process" => Isolation::Process,
                    _ => return Err(invalid("'thread' or 'process'")),
                }
            }
            "threads" => {
                self.threads =
                    parse_count(value, 1, 256).ok_or_else(|| invalid("an integer from 1 to 256"))?
            }
            "memory" => {
                self.memory = if value.eq_ignore_ascii_case("none") {
                    None
                } else {
                    Some(
                        parse_bytes(value)
                            .filter(|b| *b >= 16 * 1024 * 1024)
                            .ok_or_else(|| {
                                invalid("'none' or a size of at least 16MiB, e.g. '512MiB', '2GiB'")
                            })?,
                    )
                }
            }
            "gpus" => self.gpus = parse_gpus(value).ok_or_else(|| {
                invalid(
                    "device ids such as '0,1' (one per instance) or '0,1;2,3' (a set per instance)",
                )
            })?,
            "transport" => {
                self.transport = match value.to_ascii_lowercase().as_str() {
                    "auto" => Transport::Auto,
                    "flight" => Transport::Flight,
                    _ => return Err(invalid("'auto' or 'flight'")),
                }
            }
            "token_file" => {
                let path = value.trim();
                if path.is_empty() {
                    return Err(invalid("the path of a file holding the token"));
                }
                self.token_file = Some(path.to_string());
            }
            _ => unreachable!("every key of OPTION_KEYS has a parser"),
        }
        Ok(())
    }

    /// Checks the options together (each was validated alone by [`Self::set`]).
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.memory.is_some() && self.isolation != Isolation::Process {
            return Err(OptionError::Conflict(
                "option 'memory' limits an instance process: set isolation = 'process' with it"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// The value of every option as text, in [`OPTION_KEYS`] order.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        OPTION_KEYS
            .iter()
            .map(|(key, _)| (*key, self.value_of(key)))
            .collect()
    }

    fn value_of(&self, key: &str) -> String {
        match key {
            "parallelism" => self.parallelism.to_string(),
            "batch_size" => self.batch_size.to_string(),
            "max_batch_bytes" => self.max_batch_bytes.to_string(),
            "max_in_flight" => self.max_in_flight.to_string(),
            "timeout" => format_duration(self.timeout),
            "retries" => self.retries.to_string(),
            "on_error" => self.on_error.to_string(),
            "load_balance" => self.load_balance.to_string(),
            "isolation" => self.isolation.to_string(),
            "threads" => self.threads.to_string(),
            "memory" => self
                .memory
                .map_or_else(|| "none".to_string(), |m| m.to_string()),
            "gpus" => self
                .gpus
                .iter()
                .map(|set| set.join(","))
                .collect::<Vec<_>>()
                .join(";"),
            "transport" => self.transport.to_string(),
            "token_file" => self
                .token_file
                .clone()
                .unwrap_or_else(|| "none".to_string()),
            _ => String::new(),
        }
    }

    /// The device set of instance slot `slot`, if any GPUs are configured.
    pub fn devices_for(&self, slot: usize) -> Option<&DeviceSet> {
        (!self.gpus.is_empty()).then(|| &self.gpus[slot % self.gpus.len()])
    }
}

impl fmt::Display for LoadBalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LeastOutstanding => "least_outstanding",
            Self::RoundRobin => "round_robin",
            Self::PowerOfTwo => "power_of_two",
        })
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Thread => "thread",
            Self::Process => "process",
        })
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fail => "fail",
            Self::Null => "null",
        })
    }
}

fn parse_count(value: &str, min: usize, max: usize) -> Option<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
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
    (seconds.is_finite() && (0.0..1e9).contains(&seconds)).then(|| Duration::from_secs_f64(seconds))
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

fn parse_gpus(value: &str) -> Option<Vec<DeviceSet>> {
    if value.is_empty() || value.eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let valid =
        |id: &str| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
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
    fn defaults_are_listed_for_every_key() {
        let values = ServiceOptions::default().values();
        assert_eq!(values.len(), OPTION_KEYS.len());
        assert!(values.contains(&("timeout", "30s".to_string())));
        assert!(values.contains(&("load_balance", "least_outstanding".to_string())));
    }

    #[test]
    fn typed_values_parse() {
        let mut o = ServiceOptions::default();
        o.set("PARALLELISM", "8").unwrap();
        o.set("timeout", "250ms").unwrap();
        o.set("memory", "512MiB").unwrap();
        o.set("isolation", "process").unwrap();
        o.set("gpus", "0,1;2,3").unwrap();
        o.set("on_error", "NULL").unwrap();
        assert_eq!(o.parallelism, 8);
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.memory, Some(512 << 20));
        assert_eq!(o.on_error, OnError::Null);
        assert_eq!(
            o.devices_for(3),
            Some(&vec!["2".to_string(), "3".to_string()])
        );
        o.validate().unwrap();
        assert_eq!(format_duration(o.timeout), "250ms");
    }

    #[test]
    fn unknown_key_names_the_valid_ones() {
        let err = ServiceOptions::default()
            .set("paralelism", "2")
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown option 'paralelism'"), "{msg}");
        assert!(msg.contains("parallelism, batch_size"), "{msg}");
    }

    #[test]
    fn bad_value_names_key_value_and_allowed() {
        let mut o = ServiceOptions::default();
        let msg = o.set("parallelism", "zero").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid value 'zero' for option 'parallelism': expected an integer from 1 to 1024"
        );
        assert!(o.set("parallelism", "0").is_err());
        assert!(o.set("timeout", "soon").is_err());
        assert!(o.set("timeout", "0s").is_err());
        assert!(o.set("load_balance", "random").is_err());
        assert!(o.set("memory", "1KiB").is_err());
        assert!(o.set("gpus", "0,;1").is_err());
        assert_eq!(o, ServiceOptions::default());
    }

    #[test]
    fn memory_needs_process_isolation() {
        let mut o = ServiceOptions::default();
        o.set("memory", "1GiB").unwrap();
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("isolation = 'process'")
        );
    }
}
