//! The source tree's shape, checked (tier 1): module imports never run upward through the
//! layers `src/lib.rs` lists and never form a circle, and no non-test source file grows past
//! 800 lines. Reads `src/` as text; `#[cfg(test)]` modules and test-only files are left out.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest layer first; a unit may import units of its own layer or below. Keep in step with
/// the list in `src/lib.rs` and `docs/ARCHITECTURE.md`.
const LAYERS: &[&[&str]] = &[
    &[
        "failure",
        "duration",
        "config",
        "hex",
        "process",
        "ns",
        "rootfs",
        "metrics",
        "journal",
        "proto",
        "tls",
        "tc",
        "privilege",
        "vdso",
        "ptrace",
    ],
    &["runtime", "engine"],
    &[
        "faults::netns",
        "faults::target",
        "faults::qdisc",
        "faults::firewall",
        "faults::stress",
        "faults::dns",
        "faults::time",
        "faults::http",
        "faults::io",
        "faults::jvm",
        "faults::json_list",
    ],
    &["faults", "doctor"],
    &["state", "server"],
    &["daemon", "ctl", "cli", "main", "lib"],
];

/// Parents whose children are units of their own (`faults::qdisc`, `server::status`).
const SPLIT: &[&str] = &["faults", "server"];

const MAX_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

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

/// The module path of a file (`src/faults/qdisc.rs` → `faults::qdisc`).
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The unit a module path belongs to (items of a split parent's own file belong to it).
fn unit(path: &[String]) -> String {
    match path {
        [] => "lib".into(),
        [a, b, ..]
            if SPLIT.contains(&a.as_str())
                && (src().join(a).join(format!("{b}.rs")).exists()
                    || src().join(a).join(b).is_dir()) =>
        {
            format!("{a}::{b}")
        }
        [a, ..] => a.clone(),
    }
}

/// A unit's layer; a split parent's children not listed share their parent's.
fn layer(unit: &str) -> usize {
    let parent = unit.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|l| l.contains(&unit))
        .or_else(|| LAYERS.iter().position(|l| l.contains(&parent)))
        .unwrap_or_else(|| panic!("unit {unit} is in no layer of tests/layering.rs"))
}

/// A file's text without its `#[cfg(test)]` items (by convention the test module closes the
/// file) and without comments.
fn production_text(text: &str) -> String {
    let cut = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_test_file(file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs") || name == "golden.rs"
}

/// Module paths a file refers to: `crate::a::b` and `super::…` (resolved).
fn references(file: &Path, text: &str) -> BTreeSet<Vec<String>> {
    let me = module_path(file);
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let (start, base) = if rest.starts_with(b"crate::") && (i == 0 || !ident(bytes[i - 1])) {
            (i + 7, Vec::new())
        } else if rest.starts_with(b"super::") && (i == 0 || !ident(bytes[i - 1])) {
            // A file `a/b.rs` (module a::b) names a with `super`; `a/mod.rs` (module a) names
            // a's parent.
            let mut base = me.clone();
            base.pop();
            let mut j = i + 7;
            while bytes[j..].starts_with(b"super::") {
                base.pop();
                j += 7;
            }
            (j, base)
        } else {
            i += 1;
            continue;
        };
        let mut j = start;
        let mut segs = base;
        loop {
            let s = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            if j == s {
                break;
            }
            segs.push(text[s..j].to_string());
            if bytes[j..].starts_with(b"::") && j + 2 < bytes.len() && ident(bytes[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        // `a::{b, c::d}`: each member's first segment.
        let group = if bytes[j..].starts_with(b"::{") {
            Some(j + 3)
        } else if j == start && bytes.get(j) == Some(&b'{') {
            Some(j + 1)
        } else {
            None
        };
        if let Some(open) = group {
            let close = text[open..].find('}').map_or(bytes.len(), |k| open + k);
            for member in text[open..close].split(',') {
                let first: String = member
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !first.is_empty() && first != "self" {
                    let mut m = segs.clone();
                    m.push(first);
                    out.insert(m);
                }
            }
        } else {
            out.insert(segs);
        }
        i = j.max(i + 1);
    }
    // A module's own children, named without a prefix (`mod qdisc;` + `use qdisc::X`): the
    // declaration is the edge.
    for l in text.lines() {
        let l = l.trim();
        let decl = l
            .strip_prefix("pub mod ")
            .or_else(|| l.strip_prefix("mod "));
        if let Some(name) = decl.and_then(|d| d.strip_suffix(';')) {
            let mut child = me.clone();
            child.push(name.trim().to_string());
            out.insert(child);
        }
    }
    out
}

/// Unit → units it imports (other than itself).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.iter().filter(|f| !is_test_file(f)) {
        let text = production_text(&std::fs::read_to_string(f).unwrap());
        let from = unit(&module_path(f));
        let deps = g.entry(from.clone()).or_default();
        for r in references(f, &text) {
            // `crate::impl_failure!` and other macros live at the root: not a module import.
            if r.len() == 1
                && !src().join(format!("{}.rs", r[0])).exists()
                && !src().join(&r[0]).is_dir()
            {
                continue;
            }
            let to = unit(&r);
            if to != from && to != "lib" {
                deps.insert(to);
            }
        }
    }
    g
}

#[test]
fn imports_never_run_upward() {
    let mut bad = Vec::new();
    for (from, deps) in graph() {
        for to in deps {
            if layer(&to) > layer(&from) {
                bad.push(format!(
                    "{from} (layer {}) imports {to} (layer {})",
                    layer(&from) + 1,
                    layer(&to) + 1
                ));
            }
        }
    }
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn imports_form_no_circle() {
    let g = graph();
    // Depth-first search for a back edge; reports one circle.
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, &g, &mut state, &mut Vec::new()) {
                panic!("import circle: {}", c.join(" -> "));
            }
        }
    }
}

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter(|f| !is_test_file(f))
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            let n = production_text(&text).lines().count();
            (n > MAX_LINES).then(|| format!("{} has {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    // The graph must know the obvious edges, or the tests above prove nothing.
    let g = graph();
    assert!(g["engine"].contains("journal"), "{:?}", g["engine"]);
    assert!(g["faults"].contains("faults::qdisc"), "{:?}", g["faults"]);
    assert!(g["server::chaos_daemon"].contains("faults::qdisc"));
    assert!(g["faults::qdisc"].contains("faults::firewall"));
}
