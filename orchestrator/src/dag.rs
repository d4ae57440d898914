//! Cycles of a directed graph of named nodes, each named in full (`a -> b -> c -> a`): what the
//! manifest of managed services and the workflow definitions report when their dependencies
//! loop. Graph algorithms come from `petgraph`.

use std::collections::{HashMap, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Every cycle of `graph`, each as the shortest path from its component's smallest name back to
/// it, sorted.
pub fn cycles<E>(graph: &DiGraph<String, E>) -> Vec<Vec<String>> {
    let mut cycles = Vec::new();
    for component in tarjan_scc(graph) {
        let self_loop = component.len() == 1 && graph.contains_edge(component[0], component[0]);
        if component.len() < 2 && !self_loop {
            continue;
        }
        // The shortest cycle through the component's smallest name (breadth first).
        let start = *component.iter().min_by_key(|n| &graph[**n]).expect("not empty");
        let mut previous: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut last = start;
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = graph.neighbors(node).filter(|n| component.contains(n)).collect();
            next.sort_by_key(|n| graph[*n].clone());
            if next.contains(&start) {
                last = node;
                break;
            }
            for n in next {
                if let std::collections::hash_map::Entry::Vacant(e) = previous.entry(n) {
                    e.insert(node);
                    queue.push_back(n);
                }
            }
        }
        let mut path = vec![last];
        while let Some(&p) = previous.get(path.last().expect("not empty")) {
            path.push(p);
            if p == start {
                break;
            }
        }
        path.reverse();
        let mut names: Vec<String> = path.iter().map(|n| graph[*n].clone()).collect();
        names.push(graph[start].clone());
        cycles.push(names);
    }
    cycles.sort();
    cycles
}

/// A graph of `nodes` with an edge `a -> b` for each `(a, b)` of `edges` (unknown names ignored).
pub fn graph<'a>(
    nodes: impl IntoIterator<Item = &'a str>,
    edges: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (DiGraph<String, ()>, HashMap<String, NodeIndex>) {
    let mut graph = DiGraph::new();
    let index: HashMap<String, NodeIndex> =
        nodes.into_iter().map(|n| (n.to_string(), graph.add_node(n.to_string()))).collect();
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (index.get(from), index.get(to)) {
            graph.add_edge(a, b, ());
        }
    }
    (graph, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cycle_is_named_in_full_from_its_smallest_name() {
        let (g, _) = graph(["a", "b", "c", "d", "e"], [("b", "c"), ("c", "a"), ("a", "b"), ("d", "d"), ("e", "a")]);
        assert_eq!(cycles(&g), [vec!["a", "b", "c", "a"], vec!["d", "d"]]);
    }

    #[test]
    fn a_graph_without_cycles_has_none() {
        let (g, _) = graph(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")]);
        assert!(cycles(&g).is_empty());
    }
}
