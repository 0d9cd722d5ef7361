//! Whatever text it is given, the parser answers with statements or an
//! error: it never panics. Checked with random text, and with random RPC
//! statements built from the grammar's own words, near-misses included
//! (the shapes a typo or a hostile client produces).

use proptest::prelude::*;
use proptest::test_runner::Config;
use rpcop_sql::parser::parse_sql;

/// A word of the RPC statements, a name, an option, a value, or noise.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CREATE".to_string()),
        Just("ALTER".to_string()),
        Just("DROP".to_string()),
        Just("SHOW".to_string()),
        Just("DESCRIBE".to_string()),
        Just("RPC".to_string()),
        Just("SERVICE".to_string()),
        Just("SERVICES".to_string()),
        Just("FOR".to_string()),
        Just("FUNCTION".to_string()),
        Just("ENDPOINTS".to_string()),
        Just("WITH".to_string()),
        Just("SET".to_string()),
        Just("IF".to_string()),
        Just("NOT".to_string()),
        Just("EXISTS".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(",".to_string()),
        Just("=".to_string()),
        Just(";".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("parallelism".to_string()),
        Just("gpus".to_string()),
        Just("timeout".to_string()),
        "[a-z_]{1,8}",
        "'[^']{0,12}'",
        "\"[^\"]{0,8}\"",
        "-?[0-9]{1,20}(\\.[0-9]{0,3})?",
        "\\PC{1,4}",
    ]
}

fn config() -> Config {
    Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,64}") {
        let _ = parse_sql(&text);
    }

    #[test]
    fn random_statements_never_panic(tokens in prop::collection::vec(token(), 0..24)) {
        let _ = parse_sql(&tokens.join(" "));
    }

    #[test]
    fn random_options_never_panic(
        pairs in prop::collection::vec((token(), token()), 0..6),
        name in "[a-z]{1,6}",
    ) {
        let options: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let sql = format!(
            "CREATE RPC SERVICE {name} FOR FUNCTION upper WITH ({})",
            options.join(", ")
        );
        let _ = parse_sql(&sql);
        let _ = parse_sql(&format!("ALTER RPC SERVICE {name} SET ({})", options.join(", ")));
    }
}
