//! The listing crate's modules form no cycle: no module imports one that imports it back.
//!
//! Reads every `.rs` file under `src/`, takes each `use crate::…` / `use super::…` tree and each
//! inline `crate::…` path, resolves it to the module file that defines it, and looks for a
//! cycle in that graph. A parent's `mod` declarations are not imports; a `pub use` is.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Module path (e.g. `stock::reservations::store`) → its source.
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src is readable") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(src).expect("under src").with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&f).expect("readable");
            (parts.join("::"), text)
        })
        .collect()
}

/// Expands a use tree (`a::{b, c::{d as e, self}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut start, mut out) = (0, 0, Vec::new());
        for (i, ch) in s.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(&s[start..]);
        out
    }
    let tree: String = tree
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" as ", "@")
        .replace(' ', "");
    match tree.find('{') {
        None => {
            let path = tree.split('@').next().unwrap_or_default();
            vec![path.trim_end_matches("::self").to_owned()]
        }
        Some(open) => {
            let prefix = tree[..open].trim_end_matches("::");
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            split_top(inner)
                .into_iter()
                .filter(|s| !s.is_empty())
                .flat_map(expand)
                .map(|p| {
                    if p == "self" {
                        prefix.to_owned()
                    } else {
                        format!("{prefix}::{p}")
                    }
                })
                .collect()
        }
    }
}

/// The modules `module` imports, among `known`.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    // `use` statements, possibly spanning lines.
    let mut rest = code.as_str();
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before.is_none_or(|c| c.is_whitespace()) {
            paths.extend(expand(&after[..end]));
        }
        rest = &after[end.min(after.len())..];
    }
    // Inline paths such as `crate::catalog::store::load_listing(...)`.
    for (i, _) in code.match_indices("crate::") {
        let tail: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(tail);
    }
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned())
    };
    paths
        .into_iter()
        .filter_map(|p| {
            let p = if let Some(rest) = p.strip_prefix("crate::") {
                rest.to_owned()
            } else if let Some(rest) = p.strip_prefix("super::") {
                let base = parent(module);
                if base.is_empty() {
                    rest.to_owned()
                } else {
                    format!("{base}::{rest}")
                }
            } else if let Some(rest) = p.strip_prefix("self::") {
                format!("{module}::{rest}")
            } else {
                return None;
            };
            // The longest known module the path starts with.
            let segs: Vec<&str> = p.split("::").collect();
            (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| known.contains(m))
        })
        .filter(|m| m != module && !m.is_empty())
        .collect()
}

#[test]
fn listing_modules_import_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let known: BTreeSet<String> = mods.keys().filter(|k| !k.is_empty()).cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> = mods
        .iter()
        .filter(|(m, _)| !m.is_empty())
        .map(|(m, text)| (m.clone(), imports(m, text, &known)))
        .collect();
    assert!(
        graph
            .get("stock::reservations::store")
            .is_some_and(|d| d.contains("stock::levels")),
        "the parser must see the imports it is checking: {graph:#?}"
    );
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        stack.push(m.to_owned());
        for d in graph.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            let cycle = visit(m, &graph, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap_or_default().join(" → ")
            );
        }
    }
}

#[test]
fn the_checker_sees_a_cycle() {
    let known: BTreeSet<String> = ["a", "b"].map(String::from).into();
    let a = imports("a", "use crate::b::{X, Y};", &known);
    let b = imports("b", "fn f() { crate::a::g() }", &known);
    assert!(a.contains("b") && b.contains("a"));
    assert_eq!(
        expand("x::{y, z::{self, w as v}}"),
        ["x::y", "x::z", "x::z::w"]
    );
}
