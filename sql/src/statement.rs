//! The RPC service statements, as parsed.
//!
//! ```sql
//! CREATE RPC SERVICE [IF NOT EXISTS] [name] FOR FUNCTION f [, g ...]
//!     [ENDPOINTS ('http://host:port', ...)] [WITH (key = value, ...)]
//! ALTER RPC SERVICE name SET (key = value, ...)
//! DROP RPC SERVICE [IF EXISTS] name
//! SHOW RPC SERVICES
//! DESCRIBE RPC SERVICE name
//! ```

use std::fmt;

use datafusion_sql::sqlparser::tokenizer::Location;

/// One `key = value` of a `WITH (...)` or `SET (...)` list, as written: the
/// key in lower case, the value without quotes, and where the key stands in
/// the statement. What the key means and which values it takes is the
/// runtime's business (`rpcop::ServiceOptions`); this crate only parses.
///
/// Two option values are equal when their keys and values are: where they
/// were written is not part of what they say.
#[derive(Debug, Clone)]
pub struct OptionValue {
    /// The option's key, lower case.
    pub key: String,
    /// Its value as written, quotes removed.
    pub value: String,
    /// Where the key starts in the SQL text (line and column, from 1).
    pub location: Location,
}

impl PartialEq for OptionValue {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.value == other.value
    }
}

impl Eq for OptionValue {}

impl OptionValue {
    /// `key = value` at `location`.
    pub fn new(key: impl Into<String>, value: impl Into<String>, location: Location) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            location,
        }
    }
}

/// `CREATE RPC SERVICE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateService {
    /// The service's name; `None` annotates the (single) function as heavy: its
    /// implicit service is named after it.
    pub name: Option<String>,
    /// `IF NOT EXISTS` was given.
    pub if_not_exists: bool,
    /// The functions the service hosts, in order, without repeats.
    pub functions: Vec<String>,
    /// Remote instances to attach to instead of starting a pool.
    pub endpoints: Vec<String>,
    /// The options given.
    pub options: Vec<OptionValue>,
}

/// An RPC service statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcStatement {
    /// `CREATE RPC SERVICE ...`
    Create(CreateService),
    /// `ALTER RPC SERVICE name SET (...)`
    Alter {
        /// The service.
        name: String,
        /// The options to change.
        options: Vec<OptionValue>,
    },
    /// `DROP RPC SERVICE [IF EXISTS] name`
    Drop {
        /// The service.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `SHOW RPC SERVICES`
    Show,
    /// `DESCRIBE RPC SERVICE name`
    Describe {
        /// The service.
        name: String,
    },
}

fn write_options(f: &mut fmt::Formatter<'_>, options: &[OptionValue]) -> fmt::Result {
    let list: Vec<String> = options
        .iter()
        .map(|o| format!("{} = '{}'", o.key, o.value.replace('\'', "''")))
        .collect();
    write!(f, "({})", list.join(", "))
}

impl fmt::Display for RpcStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Create(create) => {
                f.write_str("CREATE RPC SERVICE ")?;
                if create.if_not_exists {
                    f.write_str("IF NOT EXISTS ")?;
                }
                if let Some(name) = &create.name {
                    write!(f, "{name} ")?;
                }
                write!(f, "FOR FUNCTION {}", create.functions.join(", "))?;
                if !create.endpoints.is_empty() {
                    let list: Vec<String> =
                        create.endpoints.iter().map(|e| format!("'{e}'")).collect();
                    write!(f, " ENDPOINTS ({})", list.join(", "))?;
                }
                if !create.options.is_empty() {
                    f.write_str(" WITH ")?;
                    write_options(f, &create.options)?;
                }
                Ok(())
            }
            Self::Alter { name, options } => {
                write!(f, "ALTER RPC SERVICE {name} SET ")?;
                write_options(f, options)
            }
            Self::Drop { name, if_exists } => {
                let if_exists = if *if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP RPC SERVICE {if_exists}{name}")
            }
            Self::Show => f.write_str("SHOW RPC SERVICES"),
            Self::Describe { name } => write!(f, "DESCRIBE RPC SERVICE {name}"),
        }
    }
}
