//! A clone of the repository must build, run its demo and pass its tests with nothing beside it:
//! no tracked file may refer to a path outside the repository.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

// The names this check looks for, put together at run time: this file is checked as well, and
// must not name them itself.
const SHARED: &str = concat!("..", "/shared");
const WORK: &str = concat!("/wo", "rk/");

/// `n` steps up (`n` times `../`).
fn up(n: usize) -> String {
    "../".repeat(n)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folds `.` and `..` without touching the disk; `None` when the path climbs above `root`.
fn resolve(root: &Path, base: &Path, rel: &str) -> Option<PathBuf> {
    let mut parts: Vec<Component> = base
        .strip_prefix(root)
        .unwrap_or(base)
        .components()
        .collect();
    for c in Path::new(rel).components() {
        match c {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
            other => parts.push(other),
        }
    }
    Some(parts.iter().collect())
}

/// The path-like words that hold a `../`, e.g. `../specs/x.xsd` or `a/b/../c`.
fn parent_paths(text: &str) -> Vec<&str> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("../").map(|i| i + from) {
        let start = text[..i].rfind(|c: char| !is_path(c)).map_or(0, |j| j + 1);
        let end = text[i..]
            .find(|c: char| !is_path(c))
            .map_or(text.len(), |j| j + i);
        out.push(&text[start..end]);
        from = end;
    }
    out
}

/// What in one file points outside the repository, as `line: reason`.
fn outside_refs(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let dir = file.parent().unwrap_or(root);
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("{}:{}: {why}", file.display(), n + 1);
        // The folder reference material arrives in, beside the repository.
        if line.contains(SHARED) || line.contains(WORK) {
            found.push(at(format!(
                "names a folder outside the repository: {}",
                line.trim()
            )));
            continue;
        }
        for p in parent_paths(line) {
            // From the file's own folder (include_str!, schemaLocation, relative links) and from
            // the repository root (scripts, configs and tests run there): outside from both is
            // outside for sure.
            let from_file = resolve(root, &root.join(dir), p);
            let from_root = resolve(root, root, p);
            if from_file.is_none() && from_root.is_none() {
                found.push(at(format!("{p:?} climbs out of the repository")));
            }
        }
    }
    found
}

fn tracked_text_files(root: &Path) -> Vec<PathBuf> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    out.stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
        .collect()
}

#[test]
fn no_tracked_file_points_outside_the_repository() {
    let root = repo();
    let mut problems = Vec::new();
    let mut read = 0;
    for rel in tracked_text_files(&root) {
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
            continue; // binary, or deleted in the work tree
        };
        read += 1;
        problems.extend(outside_refs(&root, &rel, &text));
    }
    assert!(read > 100, "only {read} tracked text files read");
    assert!(
        problems.is_empty(),
        "tracked files refer to paths outside the repository:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_finds_what_it_must() {
    let root = Path::new("/r");
    let bad = [
        (
            "pipelines/src/http.rs",
            format!(r#"include_str!("{}shared/specs/x.wsdl")"#, up(3)),
        ),
        (
            "config/demo.toml",
            format!(r#"taxonomy_file = "{SHARED}/specs/t.csv""#),
        ),
        (
            "tests/data/a.xsd",
            format!(r#"schemaLocation="{}other/x.xsd""#, up(3)),
        ),
        ("ops/x.sh", format!(r#"cat "{}etc/passwd""#, up(3))),
        ("ops/y.sh", format!("cd {WORK}shared")),
    ];
    for (file, text) in &bad {
        assert_eq!(
            outside_refs(root, Path::new(file), text).len(),
            1,
            "{file}: {text}"
        );
    }
    let good = [
        (
            "core/src/taxonomy.rs",
            format!(r#"include_str!("{}adapters/specs/mypay/t.csv")"#, up(2)),
        ),
        (
            "tests/data/a.xsd",
            format!(r#"schemaLocation="{}adapters/specs/x.xsd""#, up(2)),
        ),
        (
            "docs/API.md",
            "see [the config](../config/demo.toml)".into(),
        ),
        ("README.md", "a path like a/b/../c".into()),
    ];
    for (file, text) in &good {
        assert_eq!(
            outside_refs(root, Path::new(file), text),
            Vec::<String>::new(),
            "{file}: {text}"
        );
    }
}
