//! The documentation lives in the repository: every link in the README, the CHANGELOG and
//! `docs/` is relative, never climbs out of its file's folder (`..`), and resolves to a file
//! or folder (and an `#anchor` to a heading of the linked Markdown file); nothing points at
//! the project's private notes.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use testbed::workspace_root;

fn markdown_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

/// The targets of `[text](target)` links, outside code blocks.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, punctuation dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor_of(h.trim_start_matches('#')))
        .collect()
}

fn check(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut broken = Vec::new();
    for link in links(&text) {
        if link.starts_with("http://") || link.starts_with("https://") || link.starts_with("mailto:") {
            broken.push(format!("{link}: the documentation says it in its own words, without links out"));
            continue;
        }
        if link.split('/').any(|part| part == "..") {
            broken.push(format!("{link}: climbs out of its folder (name the repository path instead)"));
            continue;
        }
        let (path, anchor) = link.split_once('#').map_or((link.as_str(), None), |(p, a)| (p, Some(a)));
        let target = if path.is_empty() { file.to_path_buf() } else { file.parent().unwrap().join(path) };
        let Ok(resolved) = target.canonicalize() else {
            broken.push(format!("{link}: no such file"));
            continue;
        };
        if let Some(anchor) = anchor
            && resolved.extension().is_some_and(|e| e == "md")
            && !anchors(&std::fs::read_to_string(&resolved).unwrap()).iter().any(|a| a == anchor)
        {
            broken.push(format!("{link}: no heading #{anchor}"));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_documentation_resolves_inside_the_repository() {
    let files = markdown_files();
    assert!(files.len() >= 8, "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        broken.extend(check(file).into_iter().map(|b| format!("{}: {b}", file.display())));
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_a_missing_file_a_climb_out_a_missing_heading_and_a_link_out() {
    let dir = workspace_root().join("docs");
    let probe = dir.join(format!("probe-{}.md", std::process::id()));
    std::fs::write(&probe, "[a](nope.md) [b](../README.md) [c](deployment.md#no-such-heading) [d](deployment.md#istio) [e](https://example.com)\n")
        .unwrap();
    let broken = check(&probe);
    std::fs::remove_file(&probe).unwrap();
    assert_eq!(broken.len(), 4, "{broken:?}");
}

#[test]
fn nothing_points_at_the_projects_private_notes() {
    let root = workspace_root();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("shared/SPEC") && !text.contains("SPEC \""), "{}", file.display());
    }
    for dir in ["core/src", "src", "envoy", "deploy", "xtask/src", "testbed/src", "tests"] {
        let mut stack = vec![root.join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.file_name().is_some_and(|n| n != "docs.rs") {
                let text = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&text);
                assert!(
                    !text.contains("(SPEC ") && !text.contains("shared/SPEC"),
                    "{} cites SPEC",
                    path.display()
                );
            }
        }
    }
}
