//! Tests of the service options: parsing, scopes, validation.

use super::*;

#[test]
fn defaults_are_listed_for_every_key() {
    let described = ServiceOptions::default().describe();
    assert_eq!(described.len(), ServiceOptions::keys().len());
    let value = |key: &str| {
        described
            .iter()
            .find(|i| i.key == key)
            .unwrap()
            .value
            .clone()
    };
    assert_eq!(value("timeout"), "30s");
    assert_eq!(value("load_balance"), "least_outstanding");
    assert_eq!(value("memory"), "none");
    assert!(
        described
            .iter()
            .all(|i| i.value == i.default && !i.doc.is_empty())
    );
}

#[test]
fn every_default_reads_back() {
    let defaults = ServiceOptions::default();
    let mut read = ServiceOptions::default();
    for info in defaults.describe() {
        read.set(info.key, &info.value).unwrap();
    }
    assert_eq!(read, defaults);
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
    assert!(
        msg.contains("parallelism, min_parallelism, max_parallelism"),
        "{msg}"
    );
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
    assert_eq!(o.validate(), Err(OptionError::MemoryNeedsProcess));
    let mut gpus = ServiceOptions::default();
    gpus.set("gpus", "0").unwrap();
    if cfg!(feature = "cuda") {
        gpus.validate().unwrap();
    } else {
        assert_eq!(gpus.validate(), Err(OptionError::GpusNeedCuda));
    }
    gpus.set("isolation", "process").unwrap();
    gpus.validate().unwrap();
    o.set("command", "python3 model.py").unwrap();
    assert_eq!(o.isolation, Isolation::Process);
    o.validate().unwrap();
}

#[test]
fn command_options_need_a_command() {
    let mut o = ServiceOptions::default();
    o.set("env", "A=1").unwrap();
    assert_eq!(o.validate(), Err(OptionError::NeedsCommand { key: "env" }));
    let mut o = ServiceOptions::default();
    o.set("working_dir", "/tmp").unwrap();
    assert_eq!(
        o.validate(),
        Err(OptionError::NeedsCommand { key: "working_dir" })
    );
    o.set("command", "./serve.sh").unwrap();
    o.set("startup_timeout", "10m").unwrap();
    o.validate().unwrap();
    assert_eq!(o.startup_timeout, Duration::from_secs(600));
}

#[test]
fn scopes_say_where_options_apply() {
    let scope = |key| ServiceOptions::scope_of(key).unwrap().1;
    assert!(scope("timeout").applies_to_endpoints() && scope("timeout").changes_while_running());
    assert!(scope("parallelism").changes_while_running());
    assert!(!scope("parallelism").applies_to_endpoints());
    assert!(!scope("threads").changes_while_running());
    assert!(!scope("token_file").applies_to_pool());
    assert!(ServiceOptions::scope_of("size").is_err());
}

/// The option table of docs/sql.md is the one the declarations print.
#[test]
fn the_docs_list_the_declared_options() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql.md"))
        .expect("docs/sql.md exists");
    let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
    let start = docs
        .find(begin)
        .expect("docs/sql.md has the options:begin marker")
        + begin.len();
    let stop = docs
        .find(end)
        .expect("docs/sql.md has the options:end marker");
    let expected = ServiceOptions::markdown_table();
    assert!(
        docs[start..stop] == expected,
        "docs/sql.md's option table differs from the declarations; replace the lines \
         between the markers with:\n{expected}"
    );
}
