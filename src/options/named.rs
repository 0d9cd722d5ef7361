//! The named values of an option ([`LoadBalance`], [`Isolation`],
//! [`OnError`], [`Transport`], [`Listen`], [`Protocol`]), each declared once
//! with the names SQL spells them with, and their kind of value, [`Choice`].

use std::fmt;

use super::values::ValueKind;

/// Values with SQL names: the enums of the options.
pub(crate) trait Named: Copy + 'static {
    /// Every value with its name, in order.
    const NAMES: &'static [(&'static str, Self)];
    /// The name of this value.
    fn name(self) -> &'static str;
}

/// Declares an enum of named option values, with `Display` and [`Named`].
macro_rules! named_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl Named for $name {
            const NAMES: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),+];
            fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_values! {
    /// How a caller picks the instance that serves its next request.
    pub enum LoadBalance {
        /// The ready instance with the fewest requests outstanding from this
        /// client, weighted by its recent answer time (a straggler counts as
        /// busier than its count).
        #[default]
        LeastOutstanding = "least_outstanding",
        /// Each ready instance in turn.
        RoundRobin = "round_robin",
        /// Two ready instances drawn at random; the one with fewer outstanding
        /// (weighted the same way) wins.
        PowerOfTwo = "power_of_two",
    }
}

named_values! {
    /// Where the instances of a service run.
    pub enum Isolation {
        /// In this process, each instance on a runtime of its own.
        #[default]
        Thread = "thread",
        /// Each instance a child `rpcop serve` process.
        Process = "process",
    }
}

named_values! {
    /// Where a distributed engine's executors reach a pool service
    /// (`docs/distributed.md`).
    pub enum Placement {
        /// In the session that created it: local queries only; a plan
        /// shipped to executors that calls it is refused.
        #[default]
        Session = "session",
        /// Each executor process starts its own copy on first use and keeps
        /// it warm across tasks and queries.
        PerExecutor = "per_executor",
    }
}

named_values! {
    /// What happens to the rows of a request that failed after all retries.
    pub enum OnError {
        /// The query fails with the cause.
        #[default]
        Fail = "fail",
        /// The rows get NULL and are counted as errors.
        Null = "null",
    }
}

named_values! {
    /// How a caller reaches an instance.
    pub enum Transport {
        /// Directly when the instance serves in the caller's process (no
        /// encoding, no socket), otherwise Arrow Flight.
        #[default]
        Auto = "auto",
        /// Always Arrow Flight, even in-process.
        Flight = "flight",
    }
}

named_values! {
    /// Where the instances a region starts listen for their callers.
    pub enum Listen {
        /// A free port of loopback TCP (127.0.0.1).
        #[default]
        Tcp = "tcp",
        /// A Unix domain socket in a directory of this process's own (mode
        /// 0700, the socket 0600): only processes of this user connect.
        Unix = "unix",
    }
}

named_values! {
    /// The protocol a service's instances speak: rpcop's own contract
    /// (`docs/protocol.md`), or that of an Arrow Flight UDF server people
    /// already run.
    pub enum Protocol {
        /// rpcop's contract: a token, sequence numbers, health, drain and stats.
        #[default]
        Rpcop = "rpcop",
        /// RisingWave's `arrow-udf` servers: one exchange per request, no token.
        ArrowUdf = "arrow-udf",
        /// Databend's `databend-udf` servers: as `arrow-udf`, with its own
        /// description and health function.
        Databend = "databend",
    }
}

impl Protocol {
    /// Is it rpcop's own contract?
    pub fn is_rpcop(self) -> bool {
        self == Self::Rpcop
    }
}

/// One of the named values of `T`, case-insensitive.
pub(crate) struct Choice<T>(std::marker::PhantomData<T>);

impl<T> Choice<T> {
    pub(crate) const fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T: Named> ValueKind for Choice<T> {
    type Value = T;

    fn parse(&self, text: &str) -> Option<T> {
        T::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map(|(_, value)| *value)
    }

    fn format(&self, value: &T) -> String {
        value.name().to_string()
    }

    fn expected(&self) -> String {
        let names: Vec<String> = T::NAMES.iter().map(|(n, _)| format!("'{n}'")).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_reads_any_case_and_lists_its_names() {
        let choice = Choice::<LoadBalance>::new();
        assert_eq!(choice.parse("ROUND_ROBIN"), Some(LoadBalance::RoundRobin));
        assert_eq!(
            choice.expected(),
            "'least_outstanding', 'round_robin' or 'power_of_two'"
        );
        assert_eq!(Choice::<OnError>::new().expected(), "'fail' or 'null'");
    }
}
