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

// ---------------------------------------------------------------------------------------
// What the documentation says, held to the code: the README is the newcomer's page, the
// operator's and the code reader's pages cover their topics, and every name, path, number
// and credential they give is the code's.

use tokengate_core::host::Metric;

fn read(relative: &str) -> String {
    std::fs::read_to_string(workspace_root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The text of every heading, lowercase.
fn headings(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.push(line.trim_start_matches('#').trim().to_lowercase());
        }
    }
    found
}

/// The section under the first heading containing `words` (lowercase), to the next heading
/// of the same or a higher level.
fn section<'a>(markdown: &'a str, words: &str) -> &'a str {
    let mut at = 0;
    let mut start = None;
    for line in markdown.split_inclusive('\n') {
        let level = line.chars().take_while(|c| *c == '#').count();
        if let Some((from, of_level)) = start {
            if level > 0 && level <= of_level {
                return &markdown[from..at];
            }
        } else if level > 0 && line.to_lowercase().contains(words) {
            start = Some((at, level));
        }
        at += line.len();
    }
    match start {
        Some((from, _)) => &markdown[from..],
        None => panic!("no heading with {words:?}"),
    }
}

fn docs_pages() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(workspace_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    pages.sort();
    pages
}

#[test]
fn the_readme_is_the_newcomers_page_and_leads_into_docs() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines: at most 250, the rest belongs in docs/");
    let heads = headings(&readme);
    for topic in ["demo", "tenant", "limits", "who uses the quota"] {
        assert!(heads.iter().any(|h| h.contains(topic)), "README.md has no section on {topic:?}: {heads:?}");
    }
    let targets = links(&readme);
    for page in docs_pages() {
        let path = format!("docs/{page}");
        assert!(
            targets.iter().any(|t| t == &path || t.starts_with(&format!("{path}#"))),
            "README.md does not link to {path}"
        );
    }
}

#[test]
fn operations_and_design_cover_their_topics() {
    let operations = read("docs/operations.md");
    let heads = headings(&operations);
    for topic in [
        "what a restart loses",
        "keeping quotas across restarts",
        "configuration change",
        "new module",
        "vm_id",
        "record format",
        "sizing",
        "stats",
        "alert rules",
        "macos",
        "troubleshooting",
    ] {
        assert!(heads.iter().any(|h| h.contains(topic)), "docs/operations.md has no heading on {topic:?}");
    }
    assert!(section(&operations, "keeping quotas across restarts").contains("rate_limit_service"));
    let sizing = section(&operations, "sizing");
    assert!(sizing.contains("cargo xtask sizing"), "the sizing figures name the command that measures them");
    assert!(sizing.contains("max_entries") && sizing.contains("workers"));
    let alerts = section(&operations, "alert rules");
    for stat in ["tokengate_store_errors_total", "tokengate_idp_errors_total", "tokengate_cache_entries"] {
        assert!(alerts.contains(stat), "no alert rule on {stat}");
    }
    assert!(alerts.contains("tokengate_idp_backoff_") && alerts.contains("envoy_wasm_tokengate_vm_reload"));
    let macos = section(&operations, "macos");
    assert!(macos.contains("cargo xtask demo --envoy") && macos.contains("cargo xtask test --envoy"));

    let design = read("docs/design.md");
    let heads = headings(&design);
    for topic in ["one token request", "shared data"] {
        assert!(heads.iter().any(|h| h.contains(topic)), "docs/design.md has no heading on {topic:?}");
    }
}

/// Names in the docs that start like a stat but are not one.
const NOT_STATS: [&str; 1] = ["tokengate_decision"];

/// One mention of a tokengate stat: its name (`tokengate_*` for a family) and whether it is
/// written `wasmcustom.<name>`.
struct Mention {
    name: String,
    prefixed: bool,
}

/// The `tokengate_...` words of a line that begin a word (so not `envoy_wasm_tokengate_...`,
/// Envoy's own stats for the plugin).
fn mentions(line: &str) -> Vec<Mention> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("tokengate_") {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &line[at..];
        let end =
            rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*'));
        let name = &rest[..end.unwrap_or(rest.len())];
        found.push(Mention { name: name.to_owned(), prefixed: line[..at].ends_with("wasmcustom.") });
    }
    found
}

#[test]
fn every_stat_the_docs_name_is_one_tokengate_defines_written_as_envoy_shows_it() {
    let stats: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
    let mut files = vec!["README.md".to_owned(), "CHANGELOG.md".to_owned()];
    files.extend(docs_pages().into_iter().map(|p| format!("docs/{p}")));
    files.push("docs/README.md".to_owned());
    let mut wrong = Vec::new();
    for file in &files {
        let text = read(file);
        let mut block: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let place = format!("{file}:{}", n + 1);
            if let Some(fence) = line.trim_start().strip_prefix("```") {
                block = match block {
                    Some(_) => None,
                    None => Some(fence.trim().to_owned()),
                };
                continue;
            }
            // Prometheus shows tokengate's stats by their bare names (measured on Envoy 1.40):
            // none of these exist.
            for never in ["envoy_tokengate_", "envoy_wasmcustom", "wasmcustom_"] {
                if line.contains(never) {
                    wrong.push(format!("{place}: {never}... is no stat Envoy shows"));
                }
            }
            let promql = matches!(block.as_deref(), Some("promql" | "yaml"));
            for mention in mentions(line) {
                let known = mention.name.ends_with('*')
                    || stats.contains(&mention.name.as_str())
                    || NOT_STATS.contains(&mention.name.as_str());
                if !known {
                    wrong.push(format!(
                        "{place}: {} is not a stat of tokengate (core/src/host/mod.rs)",
                        mention.name
                    ));
                }
                // In Prometheus (queries, rules, prose about it) the name is bare; the
                // `wasmcustom.` form is admin's `/stats`.
                let about_prometheus =
                    promql || (line.to_lowercase().contains("prometheus") && !line.contains("`/stats`"));
                if mention.prefixed && about_prometheus {
                    wrong.push(format!("{place}: Prometheus shows {} without `wasmcustom.`", mention.name));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "stat names in the documentation:\n{}", wrong.join("\n"));
    let operations = read("docs/operations.md");
    for stat in stats {
        assert!(
            operations.contains(&format!("`{stat}`")),
            "docs/operations.md does not list the stat {stat}"
        );
    }
}

#[test]
fn the_stat_check_catches_an_unknown_stat_and_a_prefixed_name_in_prometheus() {
    let mentioned = mentions(
        "`wasmcustom.tokengate_hits_total` and tokengate_nope_total, not envoy_wasm_tokengate_vm_reload",
    );
    let names: Vec<(&str, bool)> = mentioned.iter().map(|m| (m.name.as_str(), m.prefixed)).collect();
    assert_eq!(names, [("tokengate_hits_total", true), ("tokengate_nope_total", false)]);
    assert!(!Metric::ALL.iter().any(|m| m.name() == "tokengate_nope_total"));
}

/// Backticked spans of `markdown` that name a repository path: a top-level entry of the
/// repository followed by more, or a file with a source extension.
fn repository_paths(markdown: &str) -> Vec<String> {
    let root = workspace_root();
    let top: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut found = Vec::new();
    for (i, span) in markdown.split('`').enumerate() {
        if i % 2 == 0 || !span.contains('/') || span.starts_with('/') {
            continue;
        }
        if span.contains(|c: char| c.is_whitespace() || "<>:*{}$".contains(c)) {
            continue;
        }
        let first = span.split('/').next().unwrap_or_default();
        let source = [".rs", ".md", ".yaml", ".json", ".toml", ".sh", ".html", ".mjs"]
            .iter()
            .any(|e| span.ends_with(e));
        if top.iter().any(|t| t == first) || source {
            found.push(span.trim_end_matches('/').to_owned());
        }
    }
    found
}

#[test]
fn every_repository_path_design_md_names_exists() {
    let paths = repository_paths(&read("docs/design.md"));
    assert!(paths.len() >= 20, "{paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !workspace_root().join(p).exists()).collect();
    assert!(missing.is_empty(), "docs/design.md names paths that do not exist: {missing:?}");
}

#[test]
fn the_record_format_versions_in_operations_md_are_the_codes() {
    let operations = read("docs/operations.md");
    let root = workspace_root();
    let mut stack = vec![root.join("core/src")];
    let mut versions = Vec::new();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Some((_, rest)) = text.split_once("const FORMAT_VERSION: u8 = ") {
                let version: u32 = rest.split(';').next().unwrap().trim().parse().unwrap();
                let relative = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
                versions.push((relative, version));
            }
        }
    }
    assert!(versions.len() >= 6, "{versions:?}");
    for (file, version) in versions {
        let row = operations.lines().find(|l| l.contains(&format!("`{file}`")));
        let Some(row) = row else { panic!("docs/operations.md does not list the record format of {file}") };
        assert!(
            row.trim_end().ends_with(&format!("| {version} |")),
            "docs/operations.md gives {file} another format version than {version}: {row}"
        );
    }
}

/// The value of `const NAME: &str = "...";` in `source`.
fn const_str<'a>(source: &'a str, name: &str) -> &'a str {
    let start = format!("const {name}: &str = \"");
    let (_, rest) = source.split_once(&start).unwrap_or_else(|| panic!("no {start} in xtask/src/demo.rs"));
    rest.split('"').next().unwrap()
}

#[test]
fn the_readmes_demo_credentials_and_limits_are_the_demos() {
    let readme = read("README.md");
    let demo = read("xtask/src/demo.rs");
    let plugin: serde_json::Value = serde_json::from_str(&read("envoy/demo-plugin.json")).unwrap();
    let clients = [
        (const_str(&demo, "CLIENT"), const_str(&demo, "SECRET")),
        (const_str(&demo, "NOISY_CLIENT"), const_str(&demo, "NOISY_SECRET")),
    ];
    for (id, secret) in clients {
        let row = readme
            .lines()
            .find(|l| l.contains(&format!("| `{id}` | `{secret}` |")))
            .unwrap_or_else(|| panic!("README.md does not list the demo's client {id} / {secret}"));
        let limits = &plugin["rate_limit"];
        let limit = if limits["clients"][id].is_null() { &limits["default"] } else { &limits["clients"][id] };
        assert_eq!(limit["fill_interval"], "60s");
        let per_minute = format!("{} requests a minute", limit["tokens_per_fill"]);
        assert!(row.contains(&per_minute), "README.md: {row} (envoy/demo-plugin.json: {per_minute})");
    }
    assert!(readme.contains(const_str(&demo, "AUDIENCE")));
    // Every credential the README sends is one the demo's mock IdP knows.
    for (field, known) in [("client_id=", clients.map(|c| c.0)), ("client_secret=", clients.map(|c| c.1))] {
        for (at, _) in readme.match_indices(field) {
            let value: String = readme[at + field.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            assert!(
                known.contains(&value.as_str()),
                "README.md sends {field}{value}, which the demo does not know"
            );
        }
    }
}
