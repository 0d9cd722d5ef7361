//! The layout the architecture promises (`docs/architecture.md`), checked on
//! the sources: imports between the runtime's layers run one way, and no two
//! files import each other, directly or around a loop.
//!
//! A file's imports are the modules its code names outside its tests:
//! `crate::a::b`, `super::x`, and child modules it declares and uses. Each
//! path resolves to the file of its longest module prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of `src/`, top first: a file may import its own layer or one
/// below it. `ballista` (feature `ballista`) runs sessions' plans on a
/// cluster; `serve` is a library entry beside the session (it starts one
/// instance), and `fuzz` the fuzz targets' (feature `fuzzing`); `error`,
/// `options` and `malloc` are below everything.
const LAYERS: &[&[&str]] = &[
    &["ballista"],
    &["session", "serve", "fuzz"],
    &["exec"],
    &["client"],
    &["transport"],
    &["region"],
    &["instance"],
    &["function"],
    &["model"],
    &["wire"],
    &["error"],
    &["options", "malloc"],
];

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|layer| layer.contains(&top))
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source folder") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of a file under a crate's `src/` (`""` for the root).
fn module_of(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).expect("a file under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// A file's code without its `#[cfg(test)]` module, comments and strings.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("readable source");
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .map(|line| {
            // drop string literals: their text is not code
            let mut out = String::new();
            let mut in_string = false;
            let mut escaped = false;
            for c in line.chars() {
                match (in_string, c) {
                    (true, '\\') if !escaped => escaped = true,
                    (true, '"') if !escaped => in_string = false,
                    (false, '"') => in_string = true,
                    (false, c) => out.push(c),
                    _ => escaped = false,
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `a::b::c` path in `code` (identifiers joined by `::`).
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_alphabetic() || chars[i] == '_' {
            let starts_path = i == 0
                || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_' || chars[i - 1] == ':');
            let mut segments = Vec::new();
            let mut grouped = false;
            let mut j = i;
            loop {
                let start = j;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                segments.push(chars[start..j].iter().collect::<String>());
                if j + 2 < chars.len() && chars[j] == ':' && chars[j + 1] == ':' {
                    let next = chars[j + 2];
                    if next.is_alphabetic() || next == '_' {
                        j += 2;
                        continue;
                    }
                    if next == '{' {
                        // `use a::b::{c, d::e}`: each member extends the prefix
                        let close = chars[j + 2..]
                            .iter()
                            .position(|c| *c == '}')
                            .map(|p| j + 2 + p);
                        if let Some(close) = close {
                            let inner: String = chars[j + 3..close].iter().collect();
                            for member in inner.split(',') {
                                let member: Vec<String> = member
                                    .trim()
                                    .split("::")
                                    .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                                    .filter(|s| !s.is_empty())
                                    .collect();
                                if !member.is_empty() && starts_path {
                                    found.push(segments.iter().cloned().chain(member).collect());
                                }
                            }
                            j = close;
                            grouped = true;
                        }
                    }
                }
                break;
            }
            if starts_path && !grouped && segments.len() > 1 {
                found.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found
}

/// The import graph of one crate: module of each file -> modules it imports.
fn imports(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(String, PathBuf)> = rust_files(root)
        .into_iter()
        .filter(|f| !f.starts_with(root.join("bin")))
        .map(|f| (module_of(root, &f), f))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &files {
        let own: Vec<&str> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").collect()
        };
        let is_folder = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let mut targets = BTreeSet::new();
        for path in paths(&code(file)) {
            // resolve the path's start to an absolute module path
            let absolute: Vec<String> = match path[0].as_str() {
                "crate" => path[1..].to_vec(),
                "super" => {
                    // the parent of this file's module
                    let parent = own.len().saturating_sub(1);
                    let mut base: Vec<String> =
                        own[..parent].iter().map(|s| s.to_string()).collect();
                    let mut rest = &path[1..];
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                "self" => own
                    .iter()
                    .map(|s| s.to_string())
                    .chain(path[1..].iter().cloned())
                    .collect(),
                first => {
                    // a child module this folder file declares
                    let child: Vec<String> = own
                        .iter()
                        .map(|s| s.to_string())
                        .chain([first.to_string()])
                        .collect();
                    if is_folder && modules.contains(&child.join("::")) {
                        own.iter()
                            .map(|s| s.to_string())
                            .chain(path.iter().cloned())
                            .collect()
                    } else {
                        continue;
                    }
                }
            };
            // the file of the longest module prefix
            let target = (1..=absolute.len())
                .rev()
                .map(|n| absolute[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(target) = target
                && target != *module
            {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// The groups of files that import each other around a loop.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str, to: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut pending = vec![from.to_string()];
        while let Some(m) = pending.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    pending.push(next.clone());
                }
            }
        }
        false
    };
    let mut groups: Vec<Vec<String>> = Vec::new();
    for module in graph.keys() {
        if groups.iter().any(|g| g.contains(module)) || !reaches(module, module) {
            continue;
        }
        let group: Vec<String> = graph
            .keys()
            .filter(|other| *other == module || (reaches(module, other) && reaches(other, module)))
            .cloned()
            .collect();
        groups.push(group);
    }
    groups
}

fn crate_root(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn no_file_imports_itself_around_a_loop() {
    for root in ["src", "sql/src", "planner/src"] {
        let graph = imports(&crate_root(root));
        let loops = cycles(&graph);
        assert!(
            loops.is_empty(),
            "{root}: files importing each other: {loops:?}"
        );
    }
}

#[test]
fn layers_import_only_downwards() {
    let graph = imports(&crate_root("src"));
    let mut upward = Vec::new();
    for (module, targets) in &graph {
        let Some(from) = layer_of(module) else {
            continue; // the crate root re-exports the API
        };
        for target in targets {
            let to = layer_of(target)
                .unwrap_or_else(|| panic!("{target} has no layer: add it to LAYERS"));
            if to < from {
                upward.push(format!("{module} -> {target}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers: {upward:#?}"
    );
}

#[test]
fn the_checker_sees_imports() {
    // the checks above would pass on a checker that saw nothing
    let graph = imports(&crate_root("src"));
    let of = |m: &str| graph.get(m).cloned().unwrap_or_default();
    assert!(
        of("session::services").contains("region"),
        "{:?}",
        of("session::services")
    );
    assert!(
        of("client::routing").contains("transport"),
        "{:?}",
        of("client::routing")
    );
    assert!(
        of("region::supervisor").contains("region::launch"),
        "{:?}",
        of("region::supervisor")
    );
    assert!(
        of("instance").contains("instance::host"),
        "{:?}",
        of("instance")
    );
    let looped: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
        ("c".to_string(), BTreeSet::new()),
    ]
    .into();
    assert_eq!(
        cycles(&looped),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    assert_eq!(
        paths("use crate::wire::{self, BearerToken, connection::connect};"),
        vec![
            vec!["crate", "wire", "self"],
            vec!["crate", "wire", "BearerToken"],
            vec!["crate", "wire", "connection", "connect"],
        ]
        .into_iter()
        .map(|p| p.into_iter().map(String::from).collect::<Vec<_>>())
        .collect::<Vec<_>>()
    );
}
