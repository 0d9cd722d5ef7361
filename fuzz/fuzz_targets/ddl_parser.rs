//! The RPC statements' parser, on any text: it answers with statements or
//! an error, and never panics. Half the inputs start with the words of an
//! RPC statement, so the fuzzer spends its time past the first keyword.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcop_sql::parser::parse_sql;

const PREFIXES: &[&str] = &[
    "",
    "CREATE RPC SERVICE ",
    "CREATE RPC SERVICE s FOR FUNCTION ",
    "CREATE RPC SERVICE s FOR FUNCTION f WITH (",
    "ALTER RPC SERVICE s SET (",
    "DROP RPC SERVICE ",
    "SHOW RPC SERVICES",
    "DESCRIBE RPC SERVICE ",
    "CREATE RPC SERVICE s FOR FUNCTION f ENDPOINTS (",
];

fuzz_target!(|input: (u8, &str)| {
    let (prefix, text) = input;
    let sql = format!("{}{text}", PREFIXES[usize::from(prefix) % PREFIXES.len()]);
    let _ = parse_sql(&sql);
});
