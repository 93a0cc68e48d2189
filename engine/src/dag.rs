//! The task graph of a pipeline definition: nodes are task aliases, `needs` are edges, `root`
//! is the virtual start. Validated once at apply time; the run walks it with [`Dag::ready`].

use std::collections::{BTreeMap, BTreeSet};

pub const ROOT: &str = "root";

#[derive(Debug, Clone)]
pub struct Dag {
    /// alias → the aliases it needs (without `root`).
    needs: BTreeMap<String, BTreeSet<String>>,
}

impl Dag {
    /// Builds and checks the graph: every node is a task, every task is a node, every need
    /// exists, something starts from `root`, no cycles. Errors name the culprit.
    pub fn build(nodes: &[(String, Vec<String>)], tasks: &BTreeSet<String>) -> Result<Dag, String> {
        let mut needs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut from_root = false;
        for (name, deps) in nodes {
            if name == ROOT {
                return Err("dag: \"root\" is reserved and cannot be a node".into());
            }
            if !tasks.contains(name) {
                return Err(format!("dag: node \"{name}\" is not a task alias"));
            }
            if needs.contains_key(name) {
                return Err(format!("dag: node \"{name}\" appears twice"));
            }
            if deps.is_empty() {
                return Err(format!(
                    "dag: node \"{name}\" has no needs (use needs: [root] for a first task)"
                ));
            }
            let mut set = BTreeSet::new();
            for d in deps {
                if d == ROOT {
                    from_root = true;
                    continue;
                }
                if d == name {
                    return Err(format!("dag: node \"{name}\" needs itself (a cycle)"));
                }
                if !tasks.contains(d) {
                    return Err(format!("dag: node \"{name}\" needs unknown task \"{d}\""));
                }
                set.insert(d.clone());
            }
            needs.insert(name.clone(), set);
        }
        for t in tasks {
            if !needs.contains_key(t) {
                return Err(format!("task \"{t}\" is missing from the dag"));
            }
        }
        if !from_root {
            return Err("dag: no node needs \"root\", so nothing can start".into());
        }
        let dag = Dag { needs };
        if let Some(cycle) = dag.find_cycle() {
            return Err(format!("dag: cycle {}", cycle.join(" → ")));
        }
        Ok(dag)
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        // 0 = unvisited, 1 = on the stack, 2 = done
        let mut state: BTreeMap<&str, u8> = BTreeMap::new();
        let mut stack: Vec<&str> = Vec::new();
        fn visit<'a>(
            dag: &'a Dag,
            n: &'a str,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match state.get(n) {
                Some(2) => return None,
                Some(1) => {
                    let from = stack.iter().position(|s| *s == n).unwrap_or(0);
                    let mut c: Vec<String> = stack[from..].iter().map(|s| s.to_string()).collect();
                    c.push(n.to_string());
                    return Some(c);
                }
                _ => {}
            }
            state.insert(n, 1);
            stack.push(n);
            for d in dag.needs.get(n).into_iter().flatten() {
                if let Some(c) = visit(dag, d, state, stack) {
                    return Some(c);
                }
            }
            stack.pop();
            state.insert(n, 2);
            None
        }
        for n in self.needs.keys() {
            if let Some(c) = visit(self, n, &mut state, &mut stack) {
                return Some(c);
            }
        }
        None
    }

    /// Every task that `alias` transitively needs.
    pub fn ancestors(&self, alias: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = vec![alias];
        while let Some(n) = todo.pop() {
            for d in self.needs.get(n).into_iter().flatten() {
                if out.insert(d.clone()) {
                    todo.push(d);
                }
            }
        }
        out
    }

    /// Tasks not yet started whose needs are all in `done`.
    pub fn ready<'a>(
        &'a self,
        done: &'a BTreeSet<String>,
        started: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.needs
            .iter()
            .filter(move |(n, deps)| !started.contains(*n) && deps.iter().all(|d| done.contains(d)))
            .map(|(n, _)| n.as_str())
    }

    pub fn len(&self) -> usize {
        self.needs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }
    fn node(n: &str, deps: &[&str]) -> (String, Vec<String>) {
        (n.into(), deps.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn ready_follows_needs() {
        let d = Dag::build(
            &[
                node("a", &["root"]),
                node("b", &["a"]),
                node("c", &["a", "b"]),
            ],
            &tasks(&["a", "b", "c"]),
        )
        .unwrap();
        let done = BTreeSet::new();
        let started = BTreeSet::new();
        assert_eq!(d.ready(&done, &started).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(d.ancestors("c"), tasks(&["a", "b"]));
    }

    #[test]
    fn cycle_is_named() {
        let e = Dag::build(
            &[
                node("a", &["root", "c"]),
                node("b", &["a"]),
                node("c", &["b"]),
            ],
            &tasks(&["a", "b", "c"]),
        )
        .unwrap_err();
        assert!(e.contains("cycle"), "{e}");
    }
}
