//! The typed, validated options of an RPC service, each declared once.
//!
//! Every option a user can write in `WITH (key = value, ...)` is one line of
//! the `declare_options!` table below: its key, Rust type, default, kind of
//! value (which parses, prints and explains it), [`OptionScope`] and a
//! one-line doc. That one declaration drives [`ServiceOptions::set`], the
//! values `rpc_options()` lists ([`ServiceOptions::describe`]), the error
//! that names the valid keys, the checks of where an option applies, and the
//! option table of `docs/sql.md` ([`ServiceOptions::markdown_table`], kept
//! equal to the docs by a test).

mod hedge;
mod named;
mod values;

use std::time::Duration;

pub use hedge::Hedge;
use hedge::HedgeKind;
use named::Choice;
pub use named::{Isolation, Listen, LoadBalance, OnError, Placement, Protocol, Transport};
use values::{
    Count, Devices, Environment, Flag, Limit, OptionalCount, Positive, Size, Text, ValueKind,
};
pub use values::{DeviceSet, format_duration, parse_bytes, parse_duration};

/// Where an option applies, and whether it may change while its service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionScope {
    /// How callers send requests: any service, changeable at any time.
    Routing,
    /// The number of instances of a pool started here; changing it resizes.
    Scale,
    /// A resource of each instance of a pool started here; fixed while the
    /// service runs.
    Resource,
    /// The token of instances attached with `ENDPOINTS`; fixed while the
    /// service runs.
    Attach,
    /// What a service may host: any service, fixed while it runs.
    Hosting,
}

impl OptionScope {
    /// Does the option apply to a pool of instances started here?
    pub fn applies_to_pool(self) -> bool {
        self != Self::Attach
    }

    /// Does the option apply to instances attached with `ENDPOINTS`?
    pub fn applies_to_endpoints(self) -> bool {
        matches!(self, Self::Routing | Self::Attach | Self::Hosting)
    }

    /// May the option change while its service runs?
    pub fn changes_while_running(self) -> bool {
        matches!(self, Self::Routing | Self::Scale)
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Routing => "any service; changes at any time",
            Self::Scale => "pools started here; ALTER resizes",
            Self::Resource => "pools started here; fixed while running",
            Self::Attach => "ENDPOINTS only; fixed while running",
            Self::Hosting => "any service; fixed while running",
        }
    }
}

/// One option as `rpc_options()` and the docs describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionInfo {
    /// The key.
    pub key: &'static str,
    /// Its value now.
    pub value: String,
    /// Its default.
    pub default: String,
    /// What values it takes.
    pub expected: String,
    /// Where it applies.
    pub scope: OptionScope,
    /// What it means.
    pub doc: &'static str,
}

/// A bad option key or value, or options that do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The key is not an option.
    #[error("unknown option '{key}'; valid options are: {}", ServiceOptions::keys().join(", "))]
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
        expected: String,
    },
    /// `memory` limits an instance process, and the instances are threads.
    #[error(
        "option 'memory' limits an instance process: set isolation = 'process' (or a command) with it"
    )]
    MemoryNeedsProcess,
    /// `listen = 'unix'` for instances that are a command.
    #[error(
        "option listen = 'unix' is for instances of rpcop's serve program (isolation 'thread' \
         or 'process'); a command's instances listen on the host:port of RPCOP_BIND: drop \
         listen, or the command"
    )]
    UnixNeedsServeProgram,
    /// One of `tls_cert` and `tls_key` without the other.
    #[error(
        "options 'tls_cert' and 'tls_key' go together: the client's certificate and its \
         private key (for endpoints that ask for a client certificate)"
    )]
    TlsIdentityHalf,
    /// GPUs for a thread instance in a build that cannot use them.
    #[error(
        "option 'gpus' with isolation = 'thread' needs rpcop built with the feature 'cuda' \
         (a thread instance runs on a device this process opens, and this build opens none); \
         set isolation = 'process' to give each instance process its CUDA_VISIBLE_DEVICES, \
         or leave gpus out"
    )]
    GpusNeedCuda,
    /// A protocol of other servers, for a pool of rpcop's own instances.
    #[error(
        "protocol = '{protocol}' is spoken by servers rpcop does not build: give their \
         command = '...' (to start them) or their ENDPOINTS (...); rpcop's own instances speak 'rpcop'"
    )]
    ProtocolNeedsServer {
        /// The protocol.
        protocol: Protocol,
    },
    /// An option of command instances given without a command.
    #[error(
        "option '{key}' applies to instances started with a command: set command = '...' with it"
    )]
    NeedsCommand {
        /// The option.
        key: &'static str,
    },
    /// A local-resource option given for instances that run elsewhere.
    #[error(
        "option '{key}' does not apply to a service with ENDPOINTS: its instances run \
         elsewhere, one per endpoint, with the resources they were started with"
    )]
    NotForEndpoints {
        /// The option.
        key: &'static str,
    },
    /// An option of attached instances given for a pool started here.
    #[error(
        "option '{key}' applies to instances attached with ENDPOINTS (how to reach them: \
         their token and TLS); a pool started here makes its own token and is reached on \
         this machine"
    )]
    OnlyForEndpoints {
        /// The option.
        key: &'static str,
    },
    /// More evaluation threads than the machine's budget for one service.
    #[error(
        "threads = {threads} with parallelism = {parallelism} is {total} evaluation threads, \
         more than the {budget} one service may start on this machine (a quarter of its \
         thread limit, at most {MAX_SERVICE_THREADS}); lower threads or parallelism"
    )]
    ThreadBudget {
        /// Threads per instance.
        threads: usize,
        /// Instances.
        parallelism: usize,
        /// Their product.
        total: usize,
        /// The budget.
        budget: usize,
    },
    /// `min_parallelism` above `max_parallelism`, or without it.
    #[error(
        "min_parallelism = {min} needs a max_parallelism of at least {min} (autoscaling \
         keeps the service between the two); max_parallelism is {max}"
    )]
    ScalingBounds {
        /// `min_parallelism`.
        min: usize,
        /// `max_parallelism`, as written ('none' when not set).
        max: String,
    },
    /// An option that takes effect when instances start, changed while they run.
    #[error("option '{key}' of a running service cannot change")]
    FixedWhileRunning {
        /// The option.
        key: &'static str,
    },
}

/// The smallest memory limit of an instance process: below it, the process
/// cannot even start its runtime's threads.
pub const MIN_INSTANCE_MEMORY: u64 = 16 << 20;

/// The default `max_message_size`: 256 MiB (gRPC's usual 4 MiB is too small
/// for a request of 8192 long strings).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 << 20;

/// The smallest `max_message_size`: a request of one row must fit.
pub const MIN_MESSAGE_LIMIT: u64 = 64 << 10;

/// The largest `max_message_size` (and `max_batch_bytes`): 2 GiB, beyond
/// what Arrow's 32-bit offsets address in one column.
pub const MAX_MESSAGE_LIMIT: u64 = 2 << 30;

/// The most evaluation threads of one instance.
pub const MAX_INSTANCE_THREADS: usize = 256;

/// The most evaluation threads (`threads` × `parallelism`) one service may
/// start, on any machine.
pub const MAX_SERVICE_THREADS: usize = 4096;

/// The evaluation threads one service may start on this machine: a quarter
/// of the threads the system and this user may have (`threads-max`,
/// `RLIMIT_NPROC`), at most [`MAX_SERVICE_THREADS`]. Past the machine's
/// limit, spawning a thread fails, and a process that cannot spawn one
/// aborts.
pub fn thread_budget() -> usize {
    let system = std::fs::read_to_string("/proc/sys/kernel/threads-max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct we own.
    let user = (unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &raw mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX));
    [system, user]
        .into_iter()
        .flatten()
        .map(|l| l / 4)
        .fold(MAX_SERVICE_THREADS, usize::min)
        .max(1)
}

/// Declares the options: the struct, its defaults, and the one table that
/// parsing, printing, checking and the docs read.
macro_rules! declare_options {
    ( $( #[doc = $doc:literal] $key:ident : $ty:ty = $default:expr, $kind:expr, $scope:ident; )+ ) => {
        /// The typed options of one RPC service: every key, with its value,
        /// default, what it takes and what it means, is listed by
        /// [`ServiceOptions::describe`].
        ///
        /// ```
        /// use rpcop::{LoadBalance, ServiceOptions};
        ///
        /// let mut options = ServiceOptions::default();
        /// options.set("parallelism", "4")?;
        /// options.set("load_balance", "round_robin")?;
        /// options.set("timeout", "250ms")?;
        /// assert_eq!(options.parallelism, 4);
        /// assert_eq!(options.load_balance, LoadBalance::RoundRobin);
        /// assert!(options.set("paralelism", "4").is_err());
        /// # Ok::<(), rpcop::OptionError>(())
        /// ```
        #[derive(Debug, Clone, PartialEq)]
        pub struct ServiceOptions {
            $( #[doc = $doc] pub $key: $ty, )+
        }

        impl Default for ServiceOptions {
            fn default() -> Self {
                Self { $( $key: $default, )+ }
            }
        }

        /// Every option's key, scope and doc, in the order they are listed.
        const DECLARED: &[(&str, OptionScope, &str)] =
            &[ $( (stringify!($key), OptionScope::$scope, $doc), )+ ];

        impl ServiceOptions {
            /// Parses `value` into the option `key` (a declared key).
            fn set_declared(&mut self, key: &'static str, value: &str) -> Result<(), OptionError> {
                match key {
                    $( stringify!($key) => self.$key = parse_value(&$kind, key, value)?, )+
                    _ => return Err(OptionError::UnknownKey { key: key.to_string() }),
                }
                Ok(())
            }

            /// The option `key` (a declared key) as text.
            fn value_of(&self, key: &str) -> String {
                match key {
                    $( stringify!($key) => $kind.format(&self.$key), )+
                    _ => String::new(),
                }
            }

            /// What the option `key` (a declared key) takes.
            fn expected_of(key: &str) -> String {
                match key {
                    $( stringify!($key) => $kind.expected(), )+
                    _ => String::new(),
                }
            }
        }
    };
}

declare_options! {
    /// Number of service instances (with max_parallelism: how many start, kept within min_parallelism and max_parallelism).
    parallelism: usize = 1, Count { min: 1, max: 1024 }, Scale;
    /// Autoscaling: the fewest instances the service shrinks to (needs max_parallelism).
    min_parallelism: usize = 1, Count { min: 1, max: 1024 }, Scale;
    /// Autoscaling: the most instances the service grows to, or 'none' for a fixed size; with gpus, at most one instance per device set.
    max_parallelism: Option<usize> = None, OptionalCount { min: 1, max: 1024 }, Scale;
    /// Autoscaling: how long callers' requests must outnumber the instances' threads before the service grows.
    scale_up_after: Duration = Duration::from_secs(2), Positive, Scale;
    /// Autoscaling: how long at least one instance's worth of threads must stay unused before the service shrinks.
    scale_down_after: Duration = Duration::from_secs(30), Positive, Scale;
    /// Rows per request.
    batch_size: usize = 8192, Count { min: 1, max: 1 << 24 }, Routing;
    /// Upper bound of the argument bytes of one request.
    max_batch_bytes: usize = 64 << 20, Size { min: 1024, max: MAX_MESSAGE_LIMIT }, Routing;
    /// Requests outstanding per caller stream (a query partition).
    max_in_flight: usize = 8, Count { min: 1, max: 4096 }, Routing;
    /// Per-request timeout; a request not answered in time is re-sent.
    timeout: Duration = Duration::from_secs(30), Positive, Routing;
    /// Re-sends to another instance after a failure or timeout.
    retries: usize = 3, Count { min: 0, max: 100 }, Routing;
    /// A request unanswered this long is also sent to a second instance, and the first answer is taken: 'off', a duration, or 'auto' (the 95th-percentile answer time of a typical instance of the service).
    hedge_after: Hedge = Hedge::Off, HedgeKind, Routing;
    /// A request failed after its retries: 'fail' fails the query, 'null' gives its rows NULL.
    on_error: OnError = OnError::Fail, Choice::<OnError>::new(), Routing;
    /// How a caller picks an instance.
    load_balance: LoadBalance = LoadBalance::LeastOutstanding, Choice::<LoadBalance>::new(), Routing;
    /// Where instances run: 'thread' in this process, 'process' one child process each.
    isolation: Isolation = Isolation::Thread, Choice::<Isolation>::new(), Resource;
    /// Where a distributed engine's executors reach the pool: 'session' (only queries run by this session), or 'per_executor' (each executor process starts its own copy on first use and keeps it).
    placement: Placement = Placement::Session, Choice::<Placement>::new(), Resource;
    /// Worker threads of each instance (its concurrent requests).
    threads: usize = 1, Count { min: 1, max: MAX_INSTANCE_THREADS }, Resource;
    /// Memory limit of each instance process, in bytes; needs isolation = 'process' or a command.
    memory: Option<u64> = None, Limit { min: MIN_INSTANCE_MEMORY }, Resource;
    /// Device sets, instance i gets set i mod n: a process instance as its CUDA_VISIBLE_DEVICES, a thread instance (in a build with the feature cuda; refused otherwise) runs on its set's first device number.
    gpus: Vec<DeviceSet> = Vec::new(), Devices, Resource;
    /// 'auto' hands batches to instances in this process directly and shares memory with those on this host; 'flight' always sends them over the wire.
    transport: Transport = Transport::Auto, Choice::<Transport>::new(), Routing;
    /// Where instances of rpcop's serve program started here listen: 'tcp' on a free loopback port, or 'unix', a Unix domain socket only this user can connect to (with transport = 'flight', the wire between processes without TCP).
    listen: Listen = Listen::Tcp, Choice::<Listen>::new(), Resource;
    /// Instances are this command, run with sh -c (one process each), following the command contract of docs/protocol.md.
    command: Option<String> = None, Text { what: "a shell command such as 'python3 my_model.py', or 'none'" }, Resource;
    /// Directory a command runs in (default: this process's).
    working_dir: Option<String> = None, Text { what: "a directory, or 'none'" }, Resource;
    /// Extra environment variables of a command.
    env: Vec<(String, String)> = Vec::new(), Environment, Resource;
    /// How long an instance process has to print its address and be ready (a model load takes time).
    startup_timeout: Duration = Duration::from_secs(300), Positive, Resource;
    /// What the instances speak: 'rpcop', or the Flight UDF servers of 'arrow-udf' (RisingWave) or 'databend'; for ENDPOINTS and command.
    protocol: Protocol = Protocol::Rpcop, Choice::<Protocol>::new(), Hosting;
    /// File holding the token the ENDPOINTS instances were started with (rpcop protocol only).
    token_file: Option<String> = None, Text { what: "the path of a file holding the token" }, Attach;
    /// PEM file of the certificate authorities an https:// endpoint's certificate must chain to (default: the system's).
    tls_ca: Option<String> = None, Text { what: "the path of a PEM file of CA certificates, or 'none'" }, Attach;
    /// PEM file of this client's certificate, for endpoints that ask for one (mutual TLS); with tls_key.
    tls_cert: Option<String> = None, Text { what: "the path of a PEM certificate file, or 'none'" }, Attach;
    /// PEM file of the private key of tls_cert.
    tls_key: Option<String> = None, Text { what: "the path of a PEM private key file, or 'none'" }, Attach;
    /// Largest message sent or accepted on the wire (a request or an answer), by callers and by the instances started here; a larger one is refused.
    max_message_size: usize = DEFAULT_MAX_MESSAGE_SIZE, Size { min: MIN_MESSAGE_LIMIT, max: MAX_MESSAGE_LIMIT }, Hosting;
    /// Host volatile functions (random(), a sampling model): a retried or re-routed request may answer differently.
    allow_volatile: bool = false, Flag, Hosting;
}

/// Parses `value` with `kind`, or says what the option `key` expects.
fn parse_value<K: ValueKind>(
    kind: &K,
    key: &'static str,
    value: &str,
) -> Result<K::Value, OptionError> {
    kind.parse(value).ok_or_else(|| OptionError::InvalidValue {
        key,
        value: value.to_string(),
        expected: kind.expected(),
    })
}

impl ServiceOptions {
    /// Every option's key, in the order they are listed.
    pub fn keys() -> Vec<&'static str> {
        DECLARED.iter().map(|(key, _, _)| *key).collect()
    }

    /// The declared key that `key` names (case-insensitive), with its scope.
    pub fn scope_of(key: &str) -> Result<(&'static str, OptionScope), OptionError> {
        let lower = key.trim().to_ascii_lowercase();
        DECLARED
            .iter()
            .find(|(declared, _, _)| *declared == lower)
            .map(|(declared, scope, _)| (*declared, *scope))
            .ok_or_else(|| OptionError::UnknownKey {
                key: key.to_string(),
            })
    }

    /// Sets one option from its textual value (quotes already removed).
    ///
    /// Keys are case-insensitive. Returns an error naming the key, the value
    /// and what is allowed, and leaves the options unchanged on error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let (key, _) = Self::scope_of(key)?;
        self.set_declared(key, value.trim())?;
        // a command's instances are processes, whatever isolation said
        if self.command.is_some() {
            self.isolation = Isolation::Process;
        }
        Ok(())
    }

    /// The most argument bytes of one request: `max_batch_bytes`, and at
    /// most three quarters of `max_message_size` (the rest is room for the
    /// message's framing and Arrow's padding).
    pub fn request_bytes(&self) -> usize {
        self.max_batch_bytes.min(self.max_message_size / 4 * 3)
    }

    /// The sizes an autoscaled service keeps within, smallest and largest,
    /// or `None` for a fixed size (no `max_parallelism`). With `gpus`, the
    /// largest is at most one instance per device set, so no two instances
    /// share a device.
    pub fn scaling_bounds(&self) -> Option<(usize, usize)> {
        let mut max = self.max_parallelism?;
        if !self.gpus.is_empty() {
            max = max.min(self.gpus.len());
        }
        let min = self.min_parallelism.min(max);
        Some((min, max))
    }

    /// How many instances a service starts with: `parallelism`, kept within
    /// [`Self::scaling_bounds`] when autoscaled.
    pub fn initial_parallelism(&self) -> usize {
        match self.scaling_bounds() {
            Some((min, max)) => self.parallelism.clamp(min, max),
            None => self.parallelism,
        }
    }

    /// Checks the options together (each was validated alone by [`Self::set`]).
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.memory.is_some() && self.isolation != Isolation::Process {
            return Err(OptionError::MemoryNeedsProcess);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(OptionError::TlsIdentityHalf);
        }
        if self.listen == Listen::Unix && self.command.is_some() {
            return Err(OptionError::UnixNeedsServeProgram);
        }
        if !self.gpus.is_empty() && self.isolation == Isolation::Thread && !cfg!(feature = "cuda") {
            return Err(OptionError::GpusNeedCuda);
        }
        if self.command.is_none() {
            let defaults = Self::default();
            if self.working_dir.is_some() {
                return Err(OptionError::NeedsCommand { key: "working_dir" });
            }
            if !self.env.is_empty() {
                return Err(OptionError::NeedsCommand { key: "env" });
            }
            if self.startup_timeout != defaults.startup_timeout
                && self.isolation != Isolation::Process
            {
                return Err(OptionError::NeedsCommand {
                    key: "startup_timeout",
                });
            }
        }
        match self.max_parallelism {
            Some(max) if self.min_parallelism <= max => {}
            None if self.min_parallelism == 1 => {}
            _ => {
                return Err(OptionError::ScalingBounds {
                    min: self.min_parallelism,
                    max: self.value_of("max_parallelism"),
                });
            }
        }
        let most = self.max_parallelism.unwrap_or(0).max(self.parallelism);
        let total = self.threads.saturating_mul(most);
        let budget = thread_budget();
        if total > budget {
            return Err(OptionError::ThreadBudget {
                threads: self.threads,
                parallelism: most,
                total,
                budget,
            });
        }
        Ok(())
    }

    /// Every option with its value now, its default, what it takes and what
    /// it means, in the order they are listed.
    pub fn describe(&self) -> Vec<OptionInfo> {
        let defaults = Self::default();
        DECLARED
            .iter()
            .map(|&(key, scope, doc)| OptionInfo {
                key,
                value: self.value_of(key),
                default: defaults.value_of(key),
                expected: Self::expected_of(key),
                scope,
                doc: doc.trim(),
            })
            .collect()
    }

    /// The option table of the SQL reference (`docs/sql.md`), in markdown.
    pub fn markdown_table() -> String {
        let mut table = String::from(
            "| option | default | takes | applies to | meaning |\n| --- | --- | --- | --- | --- |\n",
        );
        for info in Self::default().describe() {
            table.push_str(&format!(
                "| `{}` | `{}` | {} | {} | {} |\n",
                info.key,
                info.default,
                info.expected.replace('|', "\\|"),
                info.scope.describe(),
                info.doc
            ));
        }
        table
    }

    /// The device set of instance slot `slot`, if any GPUs are configured.
    pub fn devices_for(&self, slot: usize) -> Option<&DeviceSet> {
        (!self.gpus.is_empty()).then(|| &self.gpus[slot % self.gpus.len()])
    }
}

#[cfg(test)]
mod tests;
