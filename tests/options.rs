//! Option values from SQL, whatever they are, are taken or refused with an
//! error that names the option: setting, validating and listing options
//! never panics, and a value taken prints back to one that reads the same.

use proptest::prelude::*;
use proptest::test_runner::Config;
use rpcop::ServiceOptions;

/// A value: the shapes options take, near-misses, and noise.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,22}",
        "[0-9]{1,6}(\\.[0-9]{1,4})?(ms|s|m|h|KiB|MiB|GiB|TiB|kb|B)?",
        "(none|auto|off|true|false|thread|process|flight|rpcop|arrow-udf|databend)",
        "[0-9,;]{0,12}",
        "(GPU|MIG)-[0-9a-f-]{0,12}",
        "[A-Z_]{1,6}=\"[^\"]{0,6}\"( [A-Z]{1,4}=[a-z]{0,4})?",
        "\\PC{0,16}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    let keys: Vec<String> = ServiceOptions::keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    prop_oneof![prop::sample::select(keys), "[a-zA-Z_ ]{0,16}"]
}

proptest! {
    #![proptest_config(Config { cases: 2048, failure_persistence: None, ..Config::default() })]

    #[test]
    fn any_option_value_is_taken_or_refused_by_name(pairs in prop::collection::vec((key(), value()), 1..8)) {
        let mut options = ServiceOptions::default();
        for (key, value) in &pairs {
            match options.set(key, value) {
                Ok(()) => {
                    // printed back, it reads the same
                    let (declared, _) = ServiceOptions::scope_of(key).unwrap();
                    let shown = options
                        .describe()
                        .into_iter()
                        .find(|o| o.key == declared)
                        .unwrap()
                        .value;
                    let mut again = options.clone();
                    prop_assert!(again.set(declared, &shown).is_ok(), "{declared} = {shown}");
                    prop_assert_eq!(&again, &options);
                }
                Err(error) => {
                    let message = error.to_string();
                    prop_assert!(!message.is_empty());
                }
            }
        }
        let _ = options.validate();
    }
}
