//! The host crate's top-level modules import each other without a circle (`error` used a
//! type of `netns`, which uses `error`: that type now lives in `hostns`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`netns/reference.rs` → `netns`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The identifier a path starts with.
fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a file names through `crate::…` paths (code only, comments
/// skipped); names the crate root re-exports are resolved through `lib.rs`'s `pub use`.
fn uses(
    text: &str,
    reexports: &BTreeMap<String, String>,
    modules: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            // `crate::{a, b::c}` names each item of the group (on this line).
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|item| first_segment(item.trim()))
                    .collect(),
                None => vec![first_segment(rest)],
            };
            for name in names {
                if modules.contains(&name) {
                    out.insert(name);
                } else if let Some(m) = reexports.get(&name) {
                    out.insert(m.clone());
                }
            }
        }
    }
    out
}

#[test]
fn top_level_modules_have_no_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(&src, f))
        .filter(|m| m != "lib")
        .collect();
    // `pub use netns::{NetNs, …};` in lib.rs: those names belong to `netns`.
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut reexports = BTreeMap::new();
    for stmt in lib
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
    {
        let Some(path) = stmt.split("pub use ").nth(1) else {
            continue;
        };
        let Some((m, names)) = path.split_once("::") else {
            continue;
        };
        if !modules.contains(m) {
            continue;
        }
        for n in names.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !n.is_empty() {
                reexports.insert(n.to_string(), m.to_string());
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let to = uses(&text, &reexports, &modules);
        edges
            .entry(m.clone())
            .or_default()
            .extend(to.into_iter().filter(|t| *t != m));
    }
    // Depth-first search for a circle, reporting it.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import circle: {} -> {m}", path[i..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for n in edges.get(m).into_iter().flatten() {
            visit(n, edges, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut vec![], &mut done);
    }
}
