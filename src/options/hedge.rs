//! `hedge_after`: when a request still unanswered is also sent to a second
//! instance, and how the option's value is read and printed.

use std::fmt;
use std::time::Duration;

use super::values::{Positive, ValueKind, format_duration};

/// When a request still unanswered is also sent to a second instance
/// (hedged), the first answer taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hedge {
    /// Never: a slow request waits for its instance (or its timeout).
    #[default]
    Off,
    /// After this long without an answer.
    After(Duration),
    /// After the 95th-percentile answer time of a typical instance.
    Auto,
}

impl fmt::Display for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Auto => f.write_str("auto"),
            Self::After(delay) => f.write_str(&format_duration(*delay)),
        }
    }
}

/// `'off'`, `'auto'`, or a duration of at least [`MIN_DURATION`].
pub(crate) struct HedgeKind;

impl ValueKind for HedgeKind {
    type Value = Hedge;

    fn parse(&self, text: &str) -> Option<Hedge> {
        match text.to_ascii_lowercase().as_str() {
            "off" | "none" => Some(Hedge::Off),
            "auto" => Some(Hedge::Auto),
            _ => Positive.parse(text).map(Hedge::After),
        }
    }

    fn format(&self, value: &Hedge) -> String {
        value.to_string()
    }

    fn expected(&self) -> String {
        "'off', 'auto', or a duration of at least 1ms such as '200ms'".to_string()
    }
}
