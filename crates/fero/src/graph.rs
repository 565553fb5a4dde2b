//! The dependency graph of one kind of features: validated once at `build()`, then used by every
//! run to decide what may start.

use std::collections::{BTreeSet, HashMap};

use crate::error::BuildError;
use crate::item::FeatureKey;

/// A validated, acyclic graph: each node's dependencies and priority.
#[derive(Debug, Clone, Default)]
pub(crate) struct FeatureGraph {
    /// Nodes in registration order.
    nodes: Vec<Node>,
    index: HashMap<FeatureKey, usize>,
}

#[derive(Debug, Clone)]
struct Node {
    key: FeatureKey,
    priority: i32,
    dependencies: Vec<usize>,
}

impl FeatureGraph {
    /// Validates `features` (key, priority, dependencies): every dependency known, no cycle.
    pub(crate) fn new(
        features: &[(FeatureKey, i32, Vec<FeatureKey>)],
        kind: &'static str,
    ) -> Result<Self, BuildError> {
        let index: HashMap<FeatureKey, usize> = features
            .iter()
            .enumerate()
            .map(|(i, (key, _, _))| (key.clone(), i))
            .collect();
        let mut nodes = Vec::with_capacity(features.len());
        for (key, priority, dependencies) in features {
            let mut deps = Vec::with_capacity(dependencies.len());
            for dependency in dependencies {
                let Some(&i) = index.get(dependency) else {
                    return Err(BuildError::UnknownDependency {
                        feature: key.clone(),
                        dependency: dependency.clone(),
                        kind,
                    });
                };
                if !deps.contains(&i) {
                    deps.push(i);
                }
            }
            nodes.push(Node {
                key: key.clone(),
                priority: *priority,
                dependencies: deps,
            });
        }
        let graph = FeatureGraph { nodes, index };
        if let Some(cycle) = graph.find_cycle() {
            return Err(BuildError::DependencyCycle { cycle, kind });
        }
        Ok(graph)
    }

    /// A cycle as keys, the first repeated at the end, found by depth-first search.
    fn find_cycle(&self) -> Option<Vec<FeatureKey>> {
        #[derive(Copy, Clone, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        for start in 0..self.nodes.len() {
            if marks[start] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, next dependency to visit).
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            marks[start] = Mark::OnPath;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                if let Some(&dep) = self.nodes[node].dependencies.get(*next) {
                    *next += 1;
                    match marks[dep] {
                        Mark::New => {
                            marks[dep] = Mark::OnPath;
                            path.push((dep, 0));
                        }
                        Mark::OnPath => {
                            let from = path.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                            let mut cycle: Vec<FeatureKey> = path[from..]
                                .iter()
                                .map(|&(n, _)| self.nodes[n].key.clone())
                                .collect();
                            cycle.push(self.nodes[dep].key.clone());
                            return Some(cycle);
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    path.pop();
                }
            }
        }
        None
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn key(&self, node: usize) -> &FeatureKey {
        &self.nodes[node].key
    }

    pub(crate) fn node(&self, key: &FeatureKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    pub(crate) fn dependencies(&self, node: usize) -> &[usize] {
        &self.nodes[node].dependencies
    }

    /// Among `ready` nodes, the order to start them: higher priority first, then registration
    /// order (deterministic).
    pub(crate) fn sort_ready(&self, ready: &mut [usize]) {
        ready.sort_by_key(|&n| (std::cmp::Reverse(self.nodes[n].priority), n));
    }

    /// The subset `wanted` plus everything it depends on, transitively.
    pub(crate) fn closure(&self, wanted: &[usize]) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<usize> = wanted.to_vec();
        while let Some(n) = stack.pop() {
            if out.insert(n) {
                stack.extend_from_slice(&self.nodes[n].dependencies);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(key: &str, priority: i32, deps: &[&str]) -> (FeatureKey, i32, Vec<FeatureKey>) {
        (
            key.into(),
            priority,
            deps.iter().map(FeatureKey::new).collect(),
        )
    }

    #[test]
    fn a_cycle_is_reported_with_its_members() {
        let err = FeatureGraph::new(
            &[
                f("a", 0, &[]),
                f("b", 0, &["c"]),
                f("c", 0, &["d"]),
                f("d", 0, &["b"]),
            ],
            "background",
        )
        .unwrap_err();
        match err {
            BuildError::DependencyCycle { cycle, .. } => {
                let names: Vec<_> = cycle.iter().map(|k| k.as_str()).collect();
                assert_eq!(names, ["b", "c", "d", "b"]);
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let err = FeatureGraph::new(&[f("a", 0, &["a"])], "initial").unwrap_err();
        assert!(matches!(err, BuildError::DependencyCycle { .. }));
    }

    #[test]
    fn an_unknown_dependency_is_named() {
        let err = FeatureGraph::new(&[f("messages", 0, &["contacts"])], "background").unwrap_err();
        assert_eq!(
            err,
            BuildError::UnknownDependency {
                feature: "messages".into(),
                dependency: "contacts".into(),
                kind: "background"
            }
        );
    }

    #[test]
    fn ready_features_sort_by_priority_then_registration() {
        let g = FeatureGraph::new(&[f("a", 1, &[]), f("b", 5, &[]), f("c", 5, &[])], "x").unwrap();
        let mut ready = vec![0, 2, 1];
        g.sort_ready(&mut ready);
        assert_eq!(ready, [1, 2, 0]);
    }
}
