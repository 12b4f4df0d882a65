//! The architecture holds (docs/architecture.md): crates depend one way, down the layers, and
//! the modules of the core and of the gateway import one another in no circle.
//!
//! Read from the workspace itself: `cargo metadata` for the crates' dependencies, the sources
//! for the modules' `crate::…` paths. A new crate must be given its layer here; a dependency up
//! the layers or a module cycle fails with the edge that breaks the rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each workspace crate's layer: a crate may depend only on crates of lower layers.
/// `keygate-testkit` is for tests alone: no crate may depend on it outside `[dev-dependencies]`.
const LAYERS: [(&str, u8); 9] = [
    ("keygate-types", 0),
    ("keygate-vault", 1),
    ("keygate-store", 2),
    ("keygate-limits", 2),
    ("keygate-core", 3),
    ("keygate-gateway", 4),
    ("keygate-api", 6),
    ("keygate", 7),
    ("keygate-testkit", 9),
];

/// The crates whose modules must form no import cycle.
const ACYCLIC: [&str; 2] = ["keygate-core", "keygate-gateway"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// (crate, dependency, kind) for every dependency of a workspace crate on a workspace crate;
/// kind is `normal`, `dev` or `build`.
fn workspace_edges() -> Vec<(String, String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let mut edges = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if members.contains(dep) {
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                edges.push((name.to_string(), dep.to_string(), kind));
            }
        }
    }
    for m in &members {
        assert!(
            LAYERS.iter().any(|(n, _)| n == m),
            "crate {m} has no layer: give it one in LAYERS (tests/architecture.rs) and docs/architecture.md"
        );
    }
    edges
}

fn layer(name: &str) -> u8 {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l).unwrap()
}

/// Why an edge breaks the layering, if it does.
fn broken(from: &str, to: &str, kind: &str) -> Option<String> {
    if to == "keygate-testkit" {
        return (kind != "dev").then(|| format!("{from} depends on keygate-testkit outside [dev-dependencies]"));
    }
    if kind == "dev" {
        // Tests may use anything below the crate under test, and the testkit.
        return (layer(to) > layer(from)).then(|| format!("{from}'s tests depend on {to}, a higher layer"));
    }
    (layer(to) >= layer(from)).then(|| format!("{from} depends on {to}, which is not below it"))
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let edges = workspace_edges();
    assert!(
        edges.len() >= 10,
        "the metadata names the workspace's dependencies: {edges:?}"
    );
    let broken: Vec<String> = edges.iter().filter_map(|(f, t, k)| broken(f, t, k)).collect();
    assert!(broken.is_empty(), "dependencies up the layers:\n{}", broken.join("\n"));
}

#[test]
fn the_layer_rule_catches_an_upward_dependency() {
    assert!(broken("keygate-core", "keygate-api", "normal").is_some());
    assert!(broken("keygate-store", "keygate-core", "normal").is_some());
    assert!(
        broken("keygate-store", "keygate-limits", "normal").is_some(),
        "same layer"
    );
    assert!(broken("keygate-api", "keygate-testkit", "normal").is_some());
    assert!(broken("keygate-core", "keygate-store", "normal").is_none());
    assert!(broken("keygate-api", "keygate-testkit", "dev").is_none());
}

/// The top-level modules of a crate's `src/` and, for each, the top-level modules it names
/// with a `crate::` path (in `use` lines and in code alike).
fn module_imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut texts = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        modules.entry(top.clone()).or_default();
        texts.push((top, std::fs::read_to_string(&f).unwrap()));
    }
    for (top, text) in texts {
        for (i, _) in text.match_indices("crate::") {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `keygate_crate::`, not `crate::`
            }
            let rest = &text[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name != top && modules.contains_key(&name) {
                modules.get_mut(&top).unwrap().insert(name);
            }
        }
        // `use crate::{a, b::c}` names several at once.
        for (i, _) in text.match_indices("crate::{") {
            let rest = &text[i + "crate::{".len()..];
            let group = &rest[..rest.find('}').unwrap_or(rest.len())];
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != top && modules.contains_key(&name) {
                    modules.get_mut(&top).unwrap().insert(name);
                }
            }
        }
    }
    modules
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A cycle in the graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn the_core_and_the_gateway_have_no_module_cycle() {
    for krate in ACYCLIC {
        let src = workspace_root().join("crates").join(krate).join("src");
        let graph = module_imports(&src);
        assert!(graph.len() >= 2, "{krate}: modules found: {graph:?}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "{krate}: the modules import one another in a circle: {}",
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod a; mod b;").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::X;").unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    std::fs::write(
        dir.path().join("b/mod.rs"),
        "use crate::{a::Y, b::Z}; use keygate_crate::a;",
    )
    .unwrap();
    let graph = module_imports(dir.path());
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(graph["b"], BTreeSet::from(["a".to_string()]));
    assert!(find_cycle(&graph).is_some());
}
