//! The dependency graph of a manifest: cycles named in full, the levels that can start in
//! parallel, a start order, and GraphViz DOT. Graph algorithms come from `petgraph`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};

use super::manifest::{Condition, Dependency, Manifest, ManifestError};
use crate::problems::Problem;

/// Services as nodes; an edge `a -> b` means `a` depends on `b`.
#[derive(Debug, Clone)]
pub struct Graph {
    graph: DiGraph<String, Dependency>,
    index: HashMap<String, NodeIndex>,
}

impl Graph {
    /// Builds the graph of a validated manifest; fails when dependencies form a cycle, naming
    /// each cycle in full (`a -> b -> c -> a`).
    pub fn new(manifest: &Manifest) -> Result<Graph, ManifestError> {
        let mut graph = DiGraph::new();
        let index: HashMap<String, NodeIndex> =
            manifest.services.keys().map(|name| (name.clone(), graph.add_node(name.clone()))).collect();
        for name in manifest.services.keys() {
            for (dep, d) in manifest.dependencies(name) {
                if let Some(&to) = index.get(dep) {
                    graph.add_edge(index[name], to, d);
                }
            }
        }
        let g = Graph { graph, index };
        let cycles = g.cycles();
        if cycles.is_empty() {
            Ok(g)
        } else {
            Err(ManifestError {
                document: "manifest",
                problems: cycles
                    .into_iter()
                    .map(|cycle| Problem {
                        field: format!("services.{}.depends_on", cycle[0]),
                        line: None,
                        message: format!("dependency cycle: {}", cycle.join(" -> ")),
                    })
                    .collect(),
            })
        }
    }

    /// Every cycle, each as the path from its smallest name back to it.
    fn cycles(&self) -> Vec<Vec<String>> {
        crate::dag::cycles(&self.graph)
    }

    /// The services `name` depends on, with the dependency.
    pub fn dependencies(&self, name: &str) -> Vec<(&str, Dependency)> {
        let Some(&node) = self.index.get(name) else { return Vec::new() };
        let mut deps: Vec<(&str, Dependency)> = self
            .graph
            .edges(node)
            .map(|e| (self.graph[petgraph::visit::EdgeRef::target(&e)].as_str(), *e.weight()))
            .collect();
        deps.sort_by_key(|(n, _)| *n);
        deps
    }

    /// The services that depend on `name`.
    pub fn dependents(&self, name: &str) -> Vec<&str> {
        let Some(&node) = self.index.get(name) else { return Vec::new() };
        let mut deps: Vec<&str> = self
            .graph
            .neighbors_directed(node, petgraph::Direction::Incoming)
            .map(|n| self.graph[n].as_str())
            .collect();
        deps.sort_unstable();
        deps
    }

    /// Every service that depends on `name`, directly or not, sorted.
    pub fn all_dependents(&self, name: &str) -> Vec<&str> {
        let Some(&node) = self.index.get(name) else { return Vec::new() };
        let reversed = petgraph::visit::Reversed(&self.graph);
        let mut dfs = petgraph::visit::Dfs::new(reversed, node);
        let mut found = Vec::new();
        while let Some(n) = dfs.next(reversed) {
            if n != node {
                found.push(self.graph[n].as_str());
            }
        }
        found.sort_unstable();
        found
    }

    /// Level of each service: 0 without dependencies, else one more than its deepest dependency.
    /// Services of one level can start in parallel once the levels below are up.
    pub fn levels(&self) -> BTreeMap<String, usize> {
        let order = petgraph::algo::toposort(&self.graph, None).expect("the graph has no cycle");
        let mut level: HashMap<NodeIndex, usize> = HashMap::new();
        // Dependencies come after their dependents in a topological order of `a -> b`.
        for node in order.into_iter().rev() {
            let l = self.graph.neighbors(node).map(|d| level[&d] + 1).max().unwrap_or(0);
            level.insert(node, l);
        }
        level.into_iter().map(|(n, l)| (self.graph[n].clone(), l)).collect()
    }

    /// The services level by level, names sorted within a level.
    pub fn layers(&self) -> Vec<Vec<String>> {
        let mut layers: Vec<Vec<String>> = Vec::new();
        for (name, level) in self.levels() {
            if layers.len() <= level {
                layers.resize(level + 1, Vec::new());
            }
            layers[level].push(name);
        }
        layers
    }

    /// GraphViz DOT: one rank per level (labelled), edges from a service to what it depends on,
    /// labelled by condition, dashed when optional. `states` colours the nodes when given.
    pub fn to_dot(&self, states: Option<&HashMap<String, String>>) -> String {
        let mut out = String::from(
            "digraph services {\n  rankdir=BT;\n  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\"];\n",
        );
        for (level, names) in self.layers().iter().enumerate() {
            let _ = writeln!(out, "  subgraph level_{level} {{\n    rank=same;");
            let _ = writeln!(out, "    \"level {level}\" [shape=plaintext, style=\"\", label=\"level {level}\"];");
            for name in names {
                let state = states.and_then(|s| s.get(name));
                let colour = state.map(|s| state_colour(s)).unwrap_or("#ffffff");
                let label = match state {
                    Some(s) => format!("{name}\\n{s}"),
                    None => name.clone(),
                };
                let _ = writeln!(out, "    \"{name}\" [label=\"{label}\", fillcolor=\"{colour}\"];");
            }
            out.push_str("  }\n");
        }
        let mut edges: Vec<(String, String, Dependency)> = self
            .graph
            .edge_indices()
            .map(|e| {
                let (a, b) = self.graph.edge_endpoints(e).expect("edge");
                (self.graph[a].clone(), self.graph[b].clone(), self.graph[e])
            })
            .collect();
        edges.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
        for (from, to, d) in edges {
            let style = if d.required { "solid" } else { "dashed" };
            let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{}\", style={style}];", d.condition.as_str());
        }
        out.push_str("}\n");
        out
    }
}

/// The fill colour of a lifecycle state in the DOT output.
fn state_colour(state: &str) -> &'static str {
    match state {
        "ready" => "#b7e4c7",
        "started" | "starting" | "restarting" => "#fff3bf",
        "blocked" | "pending" => "#e9ecef",
        "failed" | "crashed" => "#ffc9c9",
        "stopping" | "stopped" => "#d0ebff",
        _ => "#ffffff",
    }
}

impl Condition {
    /// Whether a dependency in `state` meets the condition.
    pub fn met_by(self, state: &str) -> bool {
        match self {
            Condition::Started => matches!(state, "started" | "ready"),
            Condition::Healthy => state == "ready",
            Condition::Completed => state == "completed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(deps: &[(&str, &[&str])]) -> Manifest {
        let mut text = String::new();
        for (name, on) in deps {
            let _ = writeln!(text, "[services.{name}]\ncommand = \"/bin/true\"");
            if !on.is_empty() {
                let list: Vec<String> = on.iter().map(|d| format!("{d} = \"started\"")).collect();
                let _ = writeln!(text, "depends_on = {{ {} }}", list.join(", "));
            }
        }
        Manifest::parse(&text).unwrap()
    }

    #[test]
    fn cycles_are_named_in_full() {
        let m = manifest(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"]), ("x", &["y"]), ("y", &["x"])]);
        let err = Graph::new(&m).unwrap_err();
        let messages: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages, ["dependency cycle: a -> b -> c -> a", "dependency cycle: x -> y -> x"]);
        assert_eq!(err.problems[0].field, "services.a.depends_on");
    }

    #[test]
    fn levels_and_dot() {
        let m =
            manifest(&[("db", &[]), ("cache", &[]), ("api", &["db", "cache"]), ("web", &["api"]), ("jobs", &["db"])]);
        let g = Graph::new(&m).unwrap();
        assert_eq!(g.layers(), vec![vec!["cache", "db"], vec!["api", "jobs"], vec!["web"]]);
        assert_eq!(g.dependents("db"), ["api", "jobs"]);
        let dot = g.to_dot(Some(&HashMap::from([("db".to_string(), "ready".to_string())])));
        assert!(dot.contains("\"api\" -> \"db\" [label=\"started\", style=solid];"), "{dot}");
        assert!(dot.contains("subgraph level_2"), "{dot}");
        assert!(dot.contains("db\\nready"), "{dot}");
    }

    #[test]
    fn the_example_manifest_is_valid() {
        let m = Manifest::parse(include_str!("../../../examples/stack.toml")).unwrap();
        let g = Graph::new(&m).unwrap();
        assert_eq!(g.layers(), vec![vec!["cache", "db"], vec!["migrate"], vec!["api"], vec!["worker"]]);
        let demo = Manifest::parse(include_str!("../../../examples/demo.toml")).unwrap();
        let g = Graph::new(&demo).unwrap();
        assert_eq!(g.layers(), vec![vec!["cache", "db"], vec!["migrate", "worker"], vec!["api"], vec!["web"]]);
    }
}
