//! The module layering of `src/` (ARCHITECTURE.md), checked from the source text:
//!
//! - no import circle anywhere: at every level of the module tree, the modules under one parent
//!   must not use each other in a circle (a module's use of its own parent or children does not
//!   count: that is how a module and its parts share items);
//! - in `src/api/`, capability modules (the handlers) never use each other, the shared
//!   services never use a capability module, and the dialects' route tables are used by no
//!   handler nor service;
//! - `salt` and `security` are leaves: neither uses `api`, `config` or `server` (nor each
//!   other), nor axum; `api` does not reach into `salt::wire`.
//!
//! Edges are read from `use` declarations and from `crate::`/`super::`/`self::` paths in code
//! (comments and string literals are skipped), resolved to the file module they name; a name
//! re-exported with `pub use` resolves to the module that defines it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The capability modules of `src/api/`: one folder per capability, route handlers inside.
const HANDLERS: &[&str] = &["hook", "lowstate", "resources", "session", "stream", "ui"];
/// The route tables of `src/api/` besides its root: `dialect` builds one router per salt-api
/// module from the handlers, as the root builds rest_cherrypy's. They may use handlers; no
/// handler nor service uses them.
const ROUTE_TABLES: &[&str] = &["dialect"];

type ModPath = Vec<String>;

#[derive(Debug, Clone)]
struct Use {
    /// The module the path names, after re-exports.
    target: ModPath,
    /// The path as written, from the crate root.
    written: ModPath,
    line: usize,
}

#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    /// Paths of `use` declarations and paths in code, from the crate root, with their line.
    raw: Vec<(ModPath, usize)>,
    /// `pub use` items: exported name → full path of what it names.
    exports: BTreeMap<String, ModPath>,
    axum: Option<usize>,
}

#[test]
fn modules_form_no_circles_and_keep_their_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<ModPath, Module> = BTreeMap::new();
    collect(&root, &root, &mut modules);
    assert!(modules.len() > 20, "read only {} modules", modules.len());
    let names: BTreeSet<ModPath> = modules.keys().cloned().collect();
    for (path, module) in modules.iter_mut() {
        let text = std::fs::read_to_string(&module.file).unwrap();
        scan(path, &names, &code_only(&text), module);
    }
    let mut problems = Vec::new();
    // Sibling graphs: parent → (child → child → first use seen).
    let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    for (from, module) in &modules {
        for u in uses(from, module, &modules) {
            let rel = relative(&module.file);
            check_layers(from, &u, &rel, &mut problems);
            let to = &u.target;
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // the module itself, an ancestor, or a descendant
            }
            let parent = from[..common].to_vec();
            let seen = format!("{rel}:{} uses {}", u.line, u.written.join("::"));
            graphs
                .entry(parent)
                .or_default()
                .entry(from[common].clone())
                .or_default()
                .entry(to[common].clone())
                .or_insert(seen);
        }
    }
    for (parent, graph) in &graphs {
        for cycle in cycles(graph) {
            let mut why = Vec::new();
            for (i, a) in cycle.iter().enumerate() {
                let b = &cycle[(i + 1) % cycle.len()];
                why.push(format!("    {a} -> {b}: {}", graph[a][b]));
            }
            problems.push(format!(
                "import circle under crate::{}: {}\n{}",
                parent.join("::"),
                cycle.join(" -> "),
                why.join("\n")
            ));
        }
    }
    let axum_in_leaves: Vec<String> = modules
        .iter()
        .filter(|(p, _)| matches!(p.first().map(String::as_str), Some("salt" | "security")))
        .filter_map(|(_, m)| m.axum.map(|l| format!("{}:{l}", relative(&m.file))))
        .collect();
    for at in axum_in_leaves {
        problems.push(format!("{at}: axum in a leaf layer (salt, security)"));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The layer rules for one use.
fn check_layers(from: &ModPath, u: &Use, rel: &str, problems: &mut Vec<String>) {
    let top = |p: &ModPath| p.first().cloned().unwrap_or_default();
    let at = format!("{rel}:{} uses {}", u.line, u.written.join("::"));
    let (from_top, to_top) = (top(from), top(&u.target));
    if matches!(from_top.as_str(), "salt" | "security")
        && matches!(to_top.as_str(), "api" | "config" | "server")
    {
        problems.push(format!("{at}: {from_top} is a leaf layer"));
    }
    if from_top == "salt" && to_top == "security" || from_top == "security" && to_top == "salt" {
        problems.push(format!("{at}: salt and security do not use each other"));
    }
    if from_top == "api"
        && u.written
            .starts_with(&["salt".to_owned(), "wire".to_owned()])
    {
        problems.push(format!(
            "{at}: the HTTP edge does not reach into salt::wire"
        ));
    }
    if from_top == "api" && to_top == "api" && from.len() > 1 && u.target.len() > 1 {
        let (a, b) = (from[1].as_str(), u.target[1].as_str());
        let handler = |m: &str| HANDLERS.contains(&m);
        let table = |m: &str| ROUTE_TABLES.contains(&m);
        if a != b && handler(a) && handler(b) {
            problems.push(format!("{at}: handlers ({a}, {b}) never use each other"));
        }
        if !handler(a) && !table(a) && handler(b) {
            problems.push(format!("{at}: a service ({a}) uses a handler ({b})"));
        }
        if a != b && !table(a) && table(b) {
            problems.push(format!(
                "{at}: only the route table uses a dialect ({a} uses {b})"
            ));
        }
    }
}

/// Every `.rs` file under `dir` as a module path (`src/api/hook/mod.rs` → `api::hook`).
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<ModPath, Module>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut segs: ModPath = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        match segs.last().map(String::as_str) {
            Some("main") if segs.len() == 1 => continue, // the binary: a crate of its own
            Some("lib") if segs.len() == 1 => segs.clear(),
            Some("mod") => {
                segs.pop();
            }
            _ => {}
        }
        out.insert(
            segs,
            Module {
                file: path,
                ..Module::default()
            },
        );
    }
}

fn relative(file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The source with comments and string and char literals blanked (newlines kept).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('#' | '"')) && !ident_before(&b, i) {
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, b[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if let Some(&ch) = b.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), else a lifetime.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// Reads the `use` declarations and the `crate::`/`super::`/`self::` paths of one module.
fn scan(me: &ModPath, names: &BTreeSet<ModPath>, code: &str, module: &mut Module) {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let bytes = code.as_bytes();
    let inline = inline_modules(code);
    let depth_at = |at: usize| inline.iter().filter(|r| r.contains(&at)).count();
    let mut in_use = vec![false; code.len()];
    let mut at = 0;
    while let Some(found) = code[at..].find("use ") {
        let start = at + found;
        at = start + 4;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let Some(end) = code[start..].find(';').map(|e| start + e) else {
            break;
        };
        let public = code[..start]
            .trim_end()
            .rsplit(|c: char| c.is_whitespace() || c == ';' || c == '}' || c == '{')
            .next()
            .is_some_and(|w| w.starts_with("pub"));
        let tree = normalize(&code[start + 4..end]);
        for (path, name) in expand(&tree) {
            let Some(full) = absolute(me, names, &path, depth_at(start), true) else {
                continue;
            };
            if let (true, Some(name)) = (public, name) {
                module.exports.insert(name, full.clone());
            }
            module.raw.push((full, line_of(start)));
        }
        in_use[start..end].iter_mut().for_each(|f| *f = true);
        at = end;
    }
    // Paths in code.
    for (i, _) in code.match_indices("::") {
        let head_start = code[..i]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |p| p + 1);
        let head = &code[head_start..i];
        if in_use[head_start] || !matches!(head, "crate" | "super" | "self") {
            continue;
        }
        if head_start >= 2 && &code[head_start - 2..head_start] == "::" {
            continue; // inside a longer path: counted from its own head
        }
        let rest: String = code[head_start..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path: Vec<String> = rest
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(full) = absolute(me, names, &path, depth_at(head_start), false) {
            module.raw.push((full, line_of(head_start)));
        }
    }
    if let Some(p) = code.find("axum::").or_else(|| code.find("use axum")) {
        module.axum = Some(line_of(p));
    }
}

/// The byte ranges of the inline modules (`mod tests { ... }`) of a file.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let rest = &code[at + 4..];
        let name_len = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !rest[name_len..].trim_start().starts_with('{') {
            continue; // `mod name;`: a file module
        }
        let open = at + 4 + name_len + rest[name_len..].find('{').unwrap_or(0);
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(open..open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A use tree with single spaces, and none around `::`, braces and commas.
fn normalize(tree: &str) -> String {
    let mut s = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    for sep in ["::", "{", "}", ","] {
        s = s
            .replace(&format!(" {sep}"), sep)
            .replace(&format!("{sep} "), sep);
    }
    s
}

/// A normalized use tree as its paths, each with the name it binds (none for a glob).
fn expand(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    let tree = tree.trim_start_matches("::");
    let (prefix, rest) = match tree.find('{') {
        Some(open) if tree.ends_with('}') => (&tree[..open], Some(&tree[open + 1..tree.len() - 1])),
        _ => (tree, None),
    };
    let base: Vec<String> = prefix
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let Some(inner) = rest else {
        let (path, alias) = match prefix.split_once(" as ") {
            Some((p, a)) => (p, Some(a.to_owned())),
            None => (prefix, None),
        };
        let mut segs: Vec<String> = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let name = if segs.last().map(String::as_str) == Some("*") {
            segs.pop();
            None
        } else {
            alias.or_else(|| segs.last().cloned())
        };
        if segs.last().map(String::as_str) == Some("self") {
            segs.pop();
        }
        return vec![(segs, name)];
    };
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let mut out = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        for (mut segs, name) in expand(part) {
            let mut full = base.clone();
            full.append(&mut segs);
            out.push((full, name));
        }
    }
    out
}

/// A path as written in module `me`, `inline` inline modules deep, from the crate root; `None`
/// for other crates.
fn absolute(
    me: &ModPath,
    names: &BTreeSet<ModPath>,
    path: &[String],
    inline: usize,
    in_use: bool,
) -> Option<ModPath> {
    let mut base = me.clone();
    let mut segs = path;
    match segs.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            segs = &segs[1..];
        }
        Some("super") => {
            let mut levels = 0;
            while segs.first().map(String::as_str) == Some("super") {
                // The first `super`s of an inline module name modules of the same file.
                if levels >= inline {
                    base.pop();
                }
                levels += 1;
                segs = &segs[1..];
            }
        }
        Some("self") => segs = &segs[1..],
        Some(first) if in_use => {
            // A child module named without `self::` (uniform paths); anything else is a crate.
            let mut child = me.clone();
            child.push(first.to_owned());
            if !names.contains(&child) {
                return None;
            }
        }
        _ => return None,
    }
    base.extend(segs.iter().cloned());
    Some(base)
}

/// The file modules a module's paths name, re-exports followed.
fn uses(me: &ModPath, module: &Module, modules: &BTreeMap<ModPath, Module>) -> Vec<Use> {
    module
        .raw
        .iter()
        .map(|(written, line)| Use {
            target: resolve(written, modules, 0),
            written: written.clone(),
            line: *line,
        })
        .filter(|u| u.target != *me)
        .collect()
}

fn resolve(path: &ModPath, modules: &BTreeMap<ModPath, Module>, depth: usize) -> ModPath {
    let mut n = path.len();
    while n > 0 && !modules.contains_key(&path[..n]) {
        n -= 1;
    }
    let module = path[..n].to_vec();
    let (Some(next), Some(m)) = (path.get(n), modules.get(&module)) else {
        return module;
    };
    if depth > 8 {
        return module;
    }
    if let Some(target) = m.exports.get(next) {
        let mut full = target.clone();
        full.extend(path[n + 1..].iter().cloned());
        return resolve(&full, modules, depth + 1);
    }
    module
}

/// The circles of a directed graph (its strongly connected components of two or more nodes),
/// each as a path through the circle.
fn cycles(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph
        .iter()
        .flat_map(|(a, to)| std::iter::once(a).chain(to.keys()))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        // A shortest circle through `n`, breadth first.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n.clone()]);
        'search: while let Some(cur) = queue.pop_front() {
            for next in graph.get(&cur).into_iter().flat_map(BTreeMap::keys) {
                if next == n {
                    prev.insert(n.clone(), cur.clone());
                    break 'search;
                }
                if !prev.contains_key(next) {
                    prev.insert(next.clone(), cur.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        let mut cycle = vec![n.clone()];
        let mut cur = prev[n].clone();
        while cur != *n {
            cycle.push(cur.clone());
            cur = prev[&cur].clone();
        }
        cycle.reverse();
        cycle.rotate_right(1);
        done.extend(cycle.iter().cloned());
        out.push(cycle);
    }
    out
}

#[test]
fn the_checker_sees_circles_and_paths() {
    let code = code_only(
        "use super::{a, b::{c, d as e}};\n// use crate::x;\nlet s = \"crate::y\"; crate::z::w();",
    );
    assert!(!code.contains("crate::x") && !code.contains("crate::y"));
    assert!(code.contains("crate::z::w"));
    let paths = expand(&normalize("super::{a, b::{c, d as e}, f::*}"));
    let flat: Vec<String> = paths.iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(flat, ["super::a", "super::b::c", "super::b::d", "super::f"]);
    assert_eq!(paths[2].1.as_deref(), Some("e"));
    assert_eq!(paths[3].1, None);
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w")] {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), String::new());
    }
    assert_eq!(
        cycles(&g),
        vec![vec!["x".to_owned(), "y".into(), "z".into()]]
    );
    g.get_mut("z").unwrap().remove("x");
    assert!(cycles(&g).is_empty());
}
