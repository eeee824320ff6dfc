//! House rules checked by a test: every source file opens with a `//!` line and stays under 800
//! lines; no `mod.rs` files; no import circle among the `api` modules; and `ARCHITECTURE.md`'s
//! list of public routes is the route table's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use vectorway::api::{Access, ROUTES};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_file_opens_with_a_purpose_line_and_stays_small() {
    let root = root();
    let mut files = Vec::new();
    for dir in ["src", "tests", "bench"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(root).unwrap().display().to_string();
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with("//! ") && first.len() > 8,
            "{name} must open with a //! sentence"
        );
        assert!(
            text.lines().count() <= 800,
            "{name} is over 800 lines: split it"
        );
        assert!(
            !name.ends_with("mod.rs"),
            "{name}: use foo.rs + foo/, not mod.rs"
        );
    }
}

/// The first segment of each item of a `use` list (`{a, b::c, d::{e}}` → a, b, d) or of a path.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(list) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let (mut depth, mut start, mut out) = (0usize, 0usize, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                out.push(ident(&list[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(ident(&list[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// The `api` modules each `api` module (a file and the files under its folder) uses, read from
/// `crate::api::x` and `super::…::x` paths that climb to `api`; tests are left out.
fn api_imports() -> BTreeMap<String, BTreeSet<String>> {
    let api = root().join("src/api");
    let mut files = Vec::new();
    rust_files(&api, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(&api).unwrap().components().next().unwrap())
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string()
        })
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&api).unwrap();
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        let module = parts[0].trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        // From `api/x.rs` one `super::` reaches `api`; from `api/x/y.rs` it takes two.
        let to_api = "super::".repeat(parts.len());
        let mut used = BTreeSet::new();
        for prefix in ["crate::api::", to_api.as_str()] {
            for (i, _) in code.match_indices(prefix) {
                if prefix == to_api && code[..i].ends_with("super::") {
                    continue; // a longer climb, past `api`
                }
                used.extend(first_segments(&code[i + prefix.len()..]));
            }
        }
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            used.into_iter()
                .filter(|m| modules.contains(m) && *m != module),
        );
    }
    graph
}

/// DESIGN §11: the discovery documents, the OpenAPI document and MCP once imported each other in
/// a circle; they share a leaf (`api::describe`) instead, and no new circle may form.
#[test]
fn the_api_modules_import_each_other_without_a_circle() {
    let graph = api_imports();
    assert!(
        graph["mcp"].contains("describe") && graph["openapi"].contains("describe"),
        "the import scan sees the leaf: {graph:?}"
    );
    assert!(
        graph["describe"].iter().all(|m| m == "routes"),
        "describe is a leaf: {:?}",
        graph["describe"]
    );
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            panic!("import circle: {} → {node}", path[at..].join(" → "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

/// The "Routing denies by default" invariant names exactly the routes marked `Access::Public`.
#[test]
fn architecture_lists_the_public_routes_of_the_route_table() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start = text
        .find("- **Routing denies by default.**")
        .expect("the invariant is there");
    let bullet = &text[start..];
    let bullet = &bullet[..bullet[2..].find("\n- **").map_or(bullet.len(), |i| i + 2)];
    let list = bullet
        .split_once("pass without credentials:")
        .and_then(|(_, rest)| rest.split_once("`routes::tests`"))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("the public list is not where the test reads it:\n{bullet}"));
    let named: BTreeSet<&str> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/'))
        .collect();
    let public: BTreeSet<&str> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(named, public, "ARCHITECTURE.md vs ROUTES");
    let words = bullet.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = format!("only the {} routes marked `Access::Public`", public.len());
    assert!(
        words.contains(&count),
        "the bullet says {count:?}:\n{bullet}"
    );
}
