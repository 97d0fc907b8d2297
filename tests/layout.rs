//! The code's shape, held by tests: no source file of the core or the host crate over 500
//! lines outside its tests, and no import circle between their modules.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use testbed::workspace_root;

const MAX_LINES: usize = 500;

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// A file's code without its tests: the lines before its `#[cfg(test)]` module; test files
/// (`tests.rs`, `*_tests.rs`, the fake host) have none.
fn code_of(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") || name == "fake.rs" {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    text.split("#[cfg(test)]").next().unwrap_or_default().to_owned()
}

#[test]
fn no_source_file_is_over_500_lines_outside_its_tests() {
    let root = workspace_root();
    let mut long = Vec::new();
    for dir in ["core/src", "src"] {
        for path in sources(&root.join(dir)) {
            let lines = code_of(&path).lines().count();
            if lines > MAX_LINES {
                long.push(format!("{}: {lines} lines", path.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_LINES} lines:\n{}", long.join("\n"));
}

/// Which top-level modules of a crate each one uses (`crate::<module>`).
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in sources(src) {
        let relative = path.strip_prefix(src).unwrap();
        let module = relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        // Comments may name a module without using it.
        let code = code_of(&path)
            .lines()
            .map(|l| l.split("//").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n");
        let uses = graph.entry(module.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            let used: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !used.is_empty() && used != module {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A circle in `graph`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_the_core_or_the_host_crate_imports_one_that_imports_it_back() {
    let root = workspace_root();
    for dir in ["core/src", "src"] {
        let graph = module_graph(&root.join(dir));
        assert!(graph.len() >= 3, "{dir}: {graph:?}");
        if let Some(found) = circle(&graph) {
            panic!("{dir}: import circle {}", found.join(" -> "));
        }
    }
}

#[test]
fn the_circle_check_finds_a_circle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert_eq!(circle(&graph).map(|c| c.len()), Some(4));
}
