//! The floors of `src/` (docs/design.md, "The map"): each folder is a layer that imports
//! only the layers below it, and no module imports a sibling that imports it back.
//!
//! Read from the source text: every `crate::...` path (also inside `use crate::{...}`
//! groups) and every `super::...` path, resolved to the deepest module that exists as a
//! file, outside `#[cfg(test)]` modules. Two rules:
//! - a file of layer L names no module of a layer above L (`LAYERS`, lowest first);
//! - within any module, its child modules form no cycle (A uses B and B uses A, directly
//!   or through other children), counted over everything inside each child.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The floors, lowest first. `main.rs` stands above them all; `cli.rs` (argv only) is
/// read by `app` alone, which turns it into settings.
const LAYERS: [&str; 6] = ["sys", "boxes", "job", "runtime", "drive", "app"];
const TOP: &str = "main";
const CLI: &str = "cli";

type ModPath = Vec<String>;

fn rank(module: &ModPath) -> Option<usize> {
    let first = module.first()?.as_str();
    if first == TOP {
        return Some(LAYERS.len());
    }
    if first == CLI {
        return Some(LAYERS.len() - 1);
    }
    LAYERS.iter().position(|l| *l == first)
}

/// Every `.rs` file under `dir` with its module path (`src/a/b.rs` -> [a, b],
/// `src/a/mod.rs` -> [a], `src/main.rs` -> [main]).
fn modules(root: &Path) -> BTreeMap<ModPath, PathBuf> {
    fn walk(dir: &Path, prefix: &ModPath, out: &mut BTreeMap<ModPath, PathBuf>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let mut p = prefix.clone();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.clone();
                if stem != "mod" {
                    p.push(stem.to_string());
                }
                out.insert(p, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &Vec::new(), &mut out);
    out
}

/// The text without comments, string and char literals, and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    without_test_modules(&stripped(text))
}

/// `code` without each `#[cfg(test)] mod NAME { ... }` (braces counted; `code` has no
/// comments or literals left that could hold one).
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let t = after.trim_start();
        if !t.starts_with("mod ")
            || t.find('{')
                .is_none_or(|b| t.find(';').is_some_and(|s| s < b))
        {
            rest = after;
            continue;
        }
        let open = after.len() - t.len() + t.find('{').unwrap_or(0);
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The text without comments, string and char literals.
fn stripped(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'r' && (b[i + 1..].starts_with(b"\"") || b[i + 1..].starts_with(b"#")) {
            // A raw string: r"..." or r#"..."#.
            let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
            if b.get(i + 1 + hashes) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let from = i + 2 + hashes;
            i = text[from..]
                .find(&close)
                .map_or(b.len(), |e| from + e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal ('a', '\n', '\''); lifetimes ('a) are left alone.
            let end = text[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
            i = end;
            out.push_str("' '");
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The paths that a `crate::`/`super::` path starting at `s` names, expanding `{...}`
/// groups; each as its segments.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut segs = prefix;
    let mut i = 0;
    loop {
        let rest = &s[i..];
        let trimmed = rest.trim_start();
        i += rest.len() - trimmed.len();
        if trimmed.starts_with('{') {
            i += 1;
            loop {
                let inner = &s[i..];
                let t = inner.trim_start();
                i += inner.len() - t.len();
                if t.starts_with('}') {
                    return i + 1;
                }
                if t.starts_with(',') {
                    i += 1;
                    continue;
                }
                let used = expand(&s[i..], segs.clone(), out);
                if used == 0 {
                    return i;
                }
                i += used;
            }
        }
        match ident_at(trimmed) {
            Some(id) => {
                segs.push(id.to_string());
                i += id.len();
                if s[i..].starts_with("::") {
                    i += 2;
                    continue;
                }
                out.push(segs);
                return i;
            }
            None => {
                if trimmed.starts_with('*') {
                    i += 1;
                }
                out.push(segs);
                return i;
            }
        }
    }
}

/// The modules `code` (of module `me`) names, resolved to existing modules.
fn uses(code: &str, me: &ModPath, known: &BTreeMap<ModPath, PathBuf>) -> BTreeSet<ModPath> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        expand(&code[at + 7..], Vec::new(), &mut paths);
    }
    for (at, _) in code.match_indices("super::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // `super::super::x` is taken apart as super + `super::x`.
        let mut base = me.clone();
        base.pop();
        let mut rest = &code[at + 7..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let offset = code.len() - rest.len();
        expand(&code[offset..], base, &mut paths);
    }
    let mut found = BTreeSet::new();
    for path in paths {
        let mut p = path;
        while !p.is_empty() && !known.contains_key(&p) {
            p.pop();
        }
        if !p.is_empty() && p != *me {
            found.insert(p);
        }
    }
    found
}

fn graph() -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&root);
    known
        .iter()
        .map(|(module, path)| {
            let text = fs::read_to_string(path).unwrap();
            (module.clone(), uses(&code_of(&text), module, &known))
        })
        .collect()
}

/// Every import of a higher floor, as `from -> to` lines.
fn upward(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in graph {
        let Some(r) = rank(from) else {
            bad.push(format!("{} is in no floor", from.join("::")));
            continue;
        };
        for to in tos {
            match rank(to) {
                Some(t) if t <= r => {}
                _ => bad.push(format!("{} -> {}", from.join("::"), to.join("::"))),
            }
        }
    }
    bad
}

/// Cycles among the children of each module, as lists of the children in one cycle.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<String> {
    // Edges between siblings: child A of P uses (anything inside) child B of P.
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, tos) in graph {
        for to in tos {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common < from.len() && common < to.len() {
                let a = from[..=common].to_vec();
                let b = to[..=common].to_vec();
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    // A sibling pair is in a cycle when each reaches the other.
    let reach = |start: &ModPath| -> BTreeSet<ModPath> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let mut found = BTreeSet::new();
    for node in edges.keys() {
        let from_node = reach(node);
        if from_node.contains(node) {
            let mut cycle: Vec<String> = from_node
                .iter()
                .filter(|m| reach(m).contains(node))
                .map(|m| m.join("::"))
                .collect();
            cycle.sort();
            found.insert(cycle.join(" <-> "));
        }
    }
    found.into_iter().collect()
}

#[test]
fn no_floor_imports_a_higher_one() {
    let bad = upward(&graph());
    assert!(
        bad.is_empty(),
        "imports of a higher floor:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_module_cycles() {
    let bad = cycles(&graph());
    assert!(bad.is_empty(), "import cycles:\n{}", bad.join("\n"));
}

#[test]
fn the_reader_finds_what_it_must() {
    // The checks above are only as good as the reading: a known import of each kind.
    let g = graph();
    let build = g
        .get(&vec!["app".to_string(), "build".to_string()])
        .unwrap();
    assert!(build
        .iter()
        .any(|m| m.first().is_some_and(|f| f == "runtime")));
    // Inside a group: `use crate::job::{network, plugin}` in app::build.
    assert!(build.contains(&vec!["job".to_string(), "plugin".to_string()]));
    let mut fake = BTreeMap::new();
    fake.insert(
        vec!["sys".to_string(), "x".to_string()],
        BTreeSet::from([vec!["app".to_string()]]),
    );
    fake.insert(vec!["app".to_string()], BTreeSet::new());
    assert_eq!(upward(&fake), vec!["sys::x -> app".to_string()]);
    let mut ring = BTreeMap::new();
    let (a, b) = (
        vec!["boxes".to_string(), "a".to_string()],
        vec!["boxes".to_string(), "b".to_string(), "c".to_string()],
    );
    ring.insert(a.clone(), BTreeSet::from([b.clone()]));
    ring.insert(b, BTreeSet::from([a]));
    assert_eq!(cycles(&ring), vec!["boxes::a <-> boxes::b".to_string()]);
    let code = code_of(
        "use crate::{a::{b, c::d}, e};\n// crate::z\nlet s = \"crate::y\";\n#[cfg(test)]\nmod tests { fn f() { if x { crate::t; } } }\nuse crate::after;",
    );
    assert!(
        !code.contains("crate::t") && code.contains("crate::after"),
        "{code}"
    );
    let mut paths = Vec::new();
    expand(
        &code[code.find("crate::").unwrap() + 7..],
        Vec::new(),
        &mut paths,
    );
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(!code.contains("crate::z") && !code.contains("crate::y"));
}
