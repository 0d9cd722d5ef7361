//! Parses SQL text into RPC statements and DataFusion statements.
//!
//! Built on DataFusion's own parser ([`DFParser`]): a statement that starts
//! with `CREATE RPC`, `ALTER RPC`, `DROP RPC`, `SHOW RPC` or `DESCRIBE RPC` is
//! parsed here; every other statement is handed to DataFusion's parser
//! unchanged, so all of DataFusion's SQL keeps working.
//!
//! ```
//! use rpcop_sql::parser::{Statement, parse_sql};
//! use rpcop_sql::statement::RpcStatement;
//!
//! let statements = parse_sql(
//!     "CREATE RPC SERVICE embedder FOR FUNCTION embed WITH (parallelism = 4); SELECT 1",
//! )
//! .unwrap();
//! assert!(matches!(&statements[0], Statement::Rpc(RpcStatement::Create(c)) if c.functions == ["embed"]));
//! assert!(matches!(&statements[1], Statement::DataFusion(_)));
//! ```

use datafusion_sql::parser::{DFParser, DFParserBuilder, Statement as DFStatement};
use datafusion_sql::sqlparser::dialect::GenericDialect;
use datafusion_sql::sqlparser::keywords::Keyword;
use datafusion_sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::statement::{CreateService, OptionValue, RpcStatement};

/// A parsed statement: one of ours, or DataFusion's.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// An RPC service statement.
    Rpc(RpcStatement),
    /// Any other statement, for DataFusion to plan.
    DataFusion(Box<DFStatement>),
}

/// Why SQL text could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The text is not valid SQL; the message says where.
    #[error("SQL error: {0}")]
    Syntax(String),
}

impl From<datafusion_common::DataFusionError> for ParseError {
    fn from(error: datafusion_common::DataFusionError) -> Self {
        // the parser's own error, however DataFusion wrapped it: its
        // message once, not inside another "SQL error: ParserError(...)"
        match error.find_root() {
            datafusion_common::DataFusionError::SQL(error, _) => Self::from(error.as_ref().clone()),
            _ => Self::Syntax(error.strip_backtrace()),
        }
    }
}

impl From<datafusion_sql::sqlparser::parser::ParserError> for ParseError {
    /// The parser's message alone, without its `sql parser error: ` prefix.
    fn from(error: datafusion_sql::sqlparser::parser::ParserError) -> Self {
        use datafusion_sql::sqlparser::parser::ParserError;
        match error {
            ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
                Self::Syntax(message)
            }
            other => Self::Syntax(other.to_string()),
        }
    }
}

impl From<ParseError> for datafusion_common::DataFusionError {
    /// As DataFusion reports a statement that does not parse (`SQL error:
    /// ParserError("Expected: ...")`), with one prefix.
    fn from(error: ParseError) -> Self {
        let ParseError::Syntax(message) = error;
        Self::SQL(
            Box::new(datafusion_sql::sqlparser::parser::ParserError::ParserError(
                message,
            )),
            None,
        )
    }
}

/// Parses every statement of `sql` (separated by `;`).
pub fn parse_sql(sql: &str) -> Result<Vec<Statement>, ParseError> {
    let dialect = GenericDialect {};
    let mut parser = RpcParser {
        inner: DFParserBuilder::new(sql).with_dialect(&dialect).build()?,
    };
    parser.parse_statements()
}

struct RpcParser<'a> {
    inner: DFParser<'a>,
}

/// The word a token is, upper case, if it is one.
fn word(token: &TokenWithSpan) -> Option<String> {
    match &token.token {
        Token::Word(w) => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

impl RpcParser<'_> {
    fn parse_statements(&mut self) -> Result<Vec<Statement>, ParseError> {
        let mut statements = Vec::new();
        loop {
            while self.inner.parser.consume_token(&Token::SemiColon) {}
            if self.inner.parser.peek_token() == Token::EOF {
                return Ok(statements);
            }
            statements.push(self.parse_statement()?);
            let next = self.inner.parser.peek_token();
            if next != Token::EOF && next != Token::SemiColon {
                return Err(self.expected("end of statement", &next));
            }
        }
    }

    fn parse_statement(&mut self) -> Result<Statement, ParseError> {
        let first = word(&self.inner.parser.peek_nth_token(0));
        let second = word(&self.inner.parser.peek_nth_token(1));
        if second.as_deref() != Some("RPC") {
            return Ok(Statement::DataFusion(Box::new(
                self.inner.parse_statement()?,
            )));
        }
        let statement = match first.as_deref() {
            Some("CREATE") => {
                self.advance(2);
                self.parse_create()?
            }
            Some("ALTER") => {
                self.advance(2);
                self.parse_alter()?
            }
            Some("DROP") => {
                self.advance(2);
                self.parse_drop()?
            }
            Some("SHOW") => {
                self.advance(2);
                self.expect_word("SERVICES")?;
                RpcStatement::Show
            }
            Some("DESCRIBE" | "DESC") => {
                self.advance(2);
                self.expect_word("SERVICE")?;
                RpcStatement::Describe {
                    name: self.parse_name()?,
                }
            }
            _ => {
                return Ok(Statement::DataFusion(Box::new(
                    self.inner.parse_statement()?,
                )));
            }
        };
        Ok(Statement::Rpc(statement))
    }

    fn advance(&mut self, n: usize) {
        for _ in 0..n {
            self.inner.parser.next_token();
        }
    }

    fn expected(&self, what: &str, found: &TokenWithSpan) -> ParseError {
        ParseError::Syntax(format!(
            // the location prints as " at Line: L, Column: C"
            "Expected: {what}, found: {found}{}",
            found.span.start
        ))
    }

    fn expect_word(&mut self, expected: &str) -> Result<(), ParseError> {
        let next = self.inner.parser.next_token();
        if word(&next).as_deref() == Some(expected) {
            Ok(())
        } else {
            Err(self.expected(expected, &next))
        }
    }

    /// Consumes the words if they come next; true if they did.
    fn parse_words(&mut self, words: &[Keyword]) -> bool {
        self.inner.parser.parse_keywords(words)
    }

    fn parse_name(&mut self) -> Result<String, ParseError> {
        let ident = self.inner.parser.parse_identifier()?;
        Ok(if ident.quote_style.is_some() {
            ident.value
        } else {
            ident.value.to_ascii_lowercase()
        })
    }

    fn parse_create(&mut self) -> Result<RpcStatement, ParseError> {
        self.expect_word("SERVICE")?;
        let if_not_exists = self.parse_words(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let next_is_for = word(&self.inner.parser.peek_nth_token(0)).as_deref() == Some("FOR")
            && word(&self.inner.parser.peek_nth_token(1)).as_deref() == Some("FUNCTION");
        let name = if next_is_for {
            None
        } else {
            Some(self.parse_name()?)
        };
        self.expect_word("FOR")?;
        self.expect_word("FUNCTION")?;
        let mut functions: Vec<String> = Vec::new();
        loop {
            let function = self.parse_name()?;
            if functions.contains(&function) {
                return Err(ParseError::Syntax(format!(
                    "function '{function}' is listed twice in FOR FUNCTION"
                )));
            }
            functions.push(function);
            if !self.inner.parser.consume_token(&Token::Comma) {
                break;
            }
        }
        if name.is_none() && functions.len() > 1 {
            return Err(ParseError::Syntax(format!(
                "a service without a name annotates one function and is named after it; \
                 name the service to host several functions: CREATE RPC SERVICE name FOR FUNCTION {}",
                functions.join(", ")
            )));
        }
        let mut endpoints = Vec::new();
        if word(&self.inner.parser.peek_token()).as_deref() == Some("ENDPOINTS") {
            self.advance(1);
            self.inner.parser.expect_token(&Token::LParen)?;
            loop {
                let endpoint = self.inner.parser.parse_literal_string()?;
                validate_endpoint(&endpoint)?;
                endpoints.push(endpoint);
                if !self.inner.parser.consume_token(&Token::Comma) {
                    break;
                }
            }
            self.inner.parser.expect_token(&Token::RParen)?;
        }
        let options = if self.parse_words(&[Keyword::WITH]) {
            self.parse_options()?
        } else {
            Vec::new()
        };
        Ok(RpcStatement::Create(CreateService {
            name,
            if_not_exists,
            functions,
            endpoints,
            options,
        }))
    }

    fn parse_alter(&mut self) -> Result<RpcStatement, ParseError> {
        self.expect_word("SERVICE")?;
        let name = self.parse_name()?;
        self.expect_word("SET")?;
        let options = self.parse_options()?;
        Ok(RpcStatement::Alter { name, options })
    }

    fn parse_drop(&mut self) -> Result<RpcStatement, ParseError> {
        self.expect_word("SERVICE")?;
        let if_exists = self.parse_words(&[Keyword::IF, Keyword::EXISTS]);
        Ok(RpcStatement::Drop {
            name: self.parse_name()?,
            if_exists,
        })
    }

    /// `(key = value, ...)`: each key once; what the keys and values mean is
    /// the runtime's to check.
    fn parse_options(&mut self) -> Result<Vec<OptionValue>, ParseError> {
        self.inner.parser.expect_token(&Token::LParen)?;
        let mut options: Vec<OptionValue> = Vec::new();
        loop {
            let location = self.inner.parser.peek_token().span.start;
            let key = self.inner.parse_option_key()?.to_ascii_lowercase();
            self.inner.parser.expect_token(&Token::Eq)?;
            let value = match self.inner.parse_option_value()? {
                datafusion_sql::sqlparser::ast::Value::Number(n, _) => n,
                other => other
                    .into_string()
                    .ok_or_else(|| ParseError::Syntax(format!("option '{key}' needs a value")))?,
            };
            if options.iter().any(|o| o.key == key) {
                return Err(ParseError::Syntax(format!(
                    "option '{key}' is given twice{location}"
                )));
            }
            options.push(OptionValue::new(key, value, location));
            if !self.inner.parser.consume_token(&Token::Comma) {
                break;
            }
        }
        self.inner.parser.expect_token(&Token::RParen)?;
        Ok(options)
    }
}

/// An endpoint is `http://host:port`, `https://host:port` or
/// `unix:/absolute/path` (a Unix domain socket on this host).
fn validate_endpoint(endpoint: &str) -> Result<(), ParseError> {
    let valid = match endpoint.strip_prefix("unix:") {
        Some(path) => {
            let path = path.strip_prefix("//").unwrap_or(path);
            path.starts_with('/') && path.len() > 1
        }
        None => endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .is_some_and(|rest| {
                rest.rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            }),
    };
    if valid {
        Ok(())
    } else {
        Err(ParseError::Syntax(format!(
            "invalid endpoint '{endpoint}': expected 'http://host:port', 'https://host:port' \
             or 'unix:/absolute/path'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(sql: &str) -> RpcStatement {
        match parse_sql(sql).unwrap().remove(0) {
            Statement::Rpc(statement) => statement,
            other => panic!("{sql}: not an RPC statement: {other:?}"),
        }
    }

    fn error(sql: &str) -> String {
        parse_sql(sql).unwrap_err().to_string()
    }

    #[test]
    fn create_with_everything() {
        let statement = rpc(
            "create rpc service IF NOT EXISTS Embedder for function embed, classify \
             ENDPOINTS ('http://10.0.0.5:50051', 'https://gpu:443') \
             WITH (parallelism = 4, load_balance = 'round_robin', timeout = '30s', isolation = process)",
        );
        let RpcStatement::Create(create) = &statement else {
            panic!("{statement:?}");
        };
        assert_eq!(create.name.as_deref(), Some("embedder"));
        assert!(create.if_not_exists);
        assert_eq!(create.functions, ["embed", "classify"]);
        assert_eq!(create.endpoints.len(), 2);
        assert_eq!(create.options[0].key, "parallelism");
        assert_eq!(create.options[0].value, "4");
        // the key's position, for errors that point at it
        assert_eq!(
            (
                create.options[0].location.line,
                create.options[0].location.column
            ),
            (1, 133)
        );
        assert_eq!(create.options[3].value, "process");
        // it prints back as SQL that parses to the same statement
        assert_eq!(rpc(&statement.to_string()), statement);
    }

    #[test]
    fn create_without_a_name_annotates_one_function() {
        let RpcStatement::Create(create) =
            rpc("CREATE RPC SERVICE FOR FUNCTION embed WITH (parallelism = 2)")
        else {
            panic!()
        };
        assert_eq!(create.name, None);
        assert!(error("CREATE RPC SERVICE FOR FUNCTION a, b").contains("name the service"));
    }

    #[test]
    fn the_other_statements() {
        assert_eq!(
            rpc("ALTER RPC SERVICE s SET (parallelism = 8)"),
            RpcStatement::Alter {
                name: "s".into(),
                options: vec![OptionValue::new(
                    "parallelism",
                    "8",
                    datafusion_sql::sqlparser::tokenizer::Location::new(1, 26)
                )]
            }
        );
        assert_eq!(
            rpc("DROP RPC SERVICE IF EXISTS s"),
            RpcStatement::Drop {
                name: "s".into(),
                if_exists: true
            }
        );
        assert_eq!(rpc("SHOW RPC SERVICES"), RpcStatement::Show);
        assert_eq!(
            rpc("DESCRIBE RPC SERVICE \"MixedCase\""),
            RpcStatement::Describe {
                name: "MixedCase".into()
            }
        );
    }

    #[test]
    fn other_statements_reach_datafusion() {
        let statements = parse_sql("SELECT 1; CREATE EXTERNAL TABLE t STORED AS CSV LOCATION 'x.csv'; SHOW TABLES; DROP TABLE rpc").unwrap();
        assert_eq!(statements.len(), 4);
        assert!(
            statements
                .iter()
                .all(|s| matches!(s, Statement::DataFusion(_)))
        );
    }

    #[test]
    fn options_arrive_raw() {
        // what a key means is the runtime's to check: any key and value parse
        let RpcStatement::Create(create) =
            rpc("CREATE RPC SERVICE s FOR FUNCTION f WITH (paralelism = 'many')")
        else {
            panic!()
        };
        assert_eq!(create.options[0].key, "paralelism");
        assert_eq!(create.options[0].value, "many");
    }

    #[test]
    fn errors_say_what_and_where() {
        let msg = error("CREATE RPC SERVICE s FUNCTION f");
        assert!(
            msg.contains("Expected: FOR") && msg.contains("Line: 1, Column: 22"),
            "{msg}"
        );
        let msg = error("CREATE RPC SERVICE s FOR FUNCTION f, f");
        assert!(msg.contains("listed twice"), "{msg}");
        let msg = error("CREATE RPC SERVICE s FOR FUNCTION f WITH (retries = 1, retries = 2)");
        assert!(msg.contains("given twice at Line: 1, Column: 56"), "{msg}");
        // a bad option value: the parser's message once, not nested
        let msg = error("CREATE RPC SERVICE s FOR FUNCTION f WITH (a = ©)");
        assert_eq!(msg.matches("SQL error").count(), 1, "{msg}");
        assert!(msg.contains("found: © at Line: 1, Column: 47"), "{msg}");
        let msg = error("CREATE RPC SERVICE s FOR FUNCTION f ENDPOINTS ('10.0.0.5')");
        assert!(msg.contains("invalid endpoint '10.0.0.5'"), "{msg}");
        let msg = error("CREATE RPC SERVICE s FOR FUNCTION f ENDPOINTS ('unix:s.sock')");
        assert!(msg.contains("or 'unix:/absolute/path'"), "{msg}");
        assert!(
            parse_sql("CREATE RPC SERVICE s FOR FUNCTION f ENDPOINTS ('unix:/run/s.sock')").is_ok()
        );
        let msg = error("SHOW RPC SERVICE");
        assert!(msg.contains("Expected: SERVICES"), "{msg}");
        let msg = error("DROP RPC SERVICE s t");
        assert!(msg.contains("end of statement"), "{msg}");
    }
}
