//! A run's DAG as an SVG drawn on the server: a layered layout (a task's column is one more
//! than the deepest of its `needs`, `root` being column 0), nodes in definition order inside a
//! column, edges as curves from a need's right side to the task's left side. Each node links
//! to its task's page and says its status in words as well as in colour.

use maud::{html, Markup};
use std::collections::BTreeMap;

const NODE_W: i64 = 168;
const NODE_H: i64 = 46;
const GAP_X: i64 = 56;
const GAP_Y: i64 = 18;
const PAD: i64 = 12;
/// Longest alias drawn whole; longer ones are cut (the full one is in the link's label).
const MAX_LABEL: usize = 20;

/// One node of the drawing.
#[derive(Debug, Clone)]
pub struct Node {
    pub alias: String,
    pub needs: Vec<String>,
    /// The task's status, `None` when the task has no row yet (a child DAG not started).
    pub status: Option<String>,
    /// Where the node links to.
    pub href: Option<String>,
    /// `pipeline` for a pipeline-type task (drawn with a double border).
    pub kind: String,
}

/// Column of every node: 0 for those needing only `root` (or nothing), else one more than the
/// deepest need. A need that names no node counts as `root`; a cycle (refused at apply, so
/// only in a hand-made row) is cut where it is found.
pub fn levels(nodes: &[Node]) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.alias.as_str(), i))
        .collect();
    let mut level: Vec<Option<usize>> = vec![None; nodes.len()];
    fn visit(
        i: usize,
        nodes: &[Node],
        index: &BTreeMap<&str, usize>,
        level: &mut Vec<Option<usize>>,
        on_path: &mut Vec<bool>,
    ) -> usize {
        if let Some(l) = level.get(i).copied().flatten() {
            return l;
        }
        if on_path.get(i).copied().unwrap_or(false) {
            return 0;
        }
        if let Some(p) = on_path.get_mut(i) {
            *p = true;
        }
        let mut l = 0;
        if let Some(n) = nodes.get(i) {
            for need in &n.needs {
                if let Some(&j) = index.get(need.as_str()) {
                    l = l.max(visit(j, nodes, index, level, on_path) + 1);
                }
            }
        }
        if let Some(p) = on_path.get_mut(i) {
            *p = false;
        }
        if let Some(slot) = level.get_mut(i) {
            *slot = Some(l);
        }
        l
    }
    let mut on_path = vec![false; nodes.len()];
    (0..nodes.len())
        .map(|i| visit(i, nodes, &index, &mut level, &mut on_path))
        .collect()
}

fn label(alias: &str) -> String {
    if alias.chars().count() <= MAX_LABEL {
        alias.to_string()
    } else {
        let cut: String = alias.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    }
}

/// The SVG of one DAG. `title` names it for screen readers.
pub fn svg(title: &str, nodes: &[Node]) -> Markup {
    let lv = levels(nodes);
    let columns = lv.iter().copied().max().map_or(0, |m| m + 1);
    let mut rows_in: Vec<i64> = vec![0; columns];
    let mut pos: Vec<(i64, i64)> = Vec::with_capacity(nodes.len());
    for &l in &lv {
        let row = rows_in.get(l).copied().unwrap_or(0);
        if let Some(r) = rows_in.get_mut(l) {
            *r += 1;
        }
        let col = i64::try_from(l).unwrap_or(0);
        pos.push((PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)));
    }
    let max_rows = rows_in.iter().copied().max().unwrap_or(0).max(1);
    let width = PAD * 2 + i64::try_from(columns.max(1)).unwrap_or(1) * (NODE_W + GAP_X) - GAP_X;
    let height = PAD * 2 + max_rows * (NODE_H + GAP_Y) - GAP_Y;
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.alias.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for need in &n.needs {
            if let (Some(&j), Some(&(x2, y2))) = (index.get(need.as_str()), pos.get(i)) {
                if let Some(&(x1, y1)) = pos.get(j) {
                    let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
                    let (ex, ey) = (x2 - 4, y2 + NODE_H / 2);
                    let mid = (sx + ex) / 2;
                    edges.push(format!("M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"));
                }
            }
        }
    }
    let view_box = format!("0 0 {width} {height}");
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(view_box) role="group" aria-label=(title) {
            title { (title) }
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path d="M0,0 L10,5 L0,10 z" class="arrowhead" {}
                }
            }
            @for d in &edges {
                path.edge d=(d) marker-end="url(#arrow)" {}
            }
            @for (i, n) in nodes.iter().enumerate() {
                @let (x, y) = pos.get(i).copied().unwrap_or((0, 0));
                @let status = n.status.as_deref().unwrap_or("pending");
                @let class = format!("node st-{status}{}", if n.kind == "pipeline" { " kind-pipeline" } else { "" });
                @let aria = format!("task {}: {status}", n.alias);
                @let tx = x + 10;
                @let ty = y + 19;
                @let sy = y + 36;
                @if let Some(href) = &n.href {
                    a href=(href) aria-label=(aria) data-task=(n.alias) {
                        (node_body(&class, x, y, tx, ty, sy, &n.alias, status))
                    }
                } @else {
                    g aria-label=(aria) data-task=(n.alias) {
                        (node_body(&class, x, y, tx, ty, sy, &n.alias, status))
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn node_body(
    class: &str,
    x: i64,
    y: i64,
    tx: i64,
    ty: i64,
    sy: i64,
    alias: &str,
    status: &str,
) -> Markup {
    html! {
        g class=(class) {
            title { (alias) " — " (status) }
            rect x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="6" ry="6" {}
            text.alias x=(tx) y=(ty) { (label(alias)) }
            text.status x=(tx) y=(sy) { (status) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(alias: &str, needs: &[&str]) -> Node {
        Node {
            alias: alias.into(),
            needs: needs.iter().map(|s| s.to_string()).collect(),
            status: Some("success".into()),
            href: None,
            kind: "os".into(),
        }
    }

    #[test]
    fn columns_follow_the_needs() {
        let nodes = vec![
            n("a", &["root"]),
            n("b", &["a"]),
            n("c", &["a"]),
            n("d", &["b", "c"]),
            n("e", &["root"]),
        ];
        assert_eq!(levels(&nodes), vec![0, 1, 1, 2, 0]);
    }

    #[test]
    fn a_cycle_does_not_hang() {
        let nodes = vec![n("a", &["b"]), n("b", &["a"])];
        assert_eq!(levels(&nodes).len(), 2);
    }

    #[test]
    fn hostile_aliases_are_escaped() {
        let out = svg("t<b>", &[n("<script>x</script>", &["root"])]).into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
        assert!(out.contains("t&lt;b&gt;"), "{out}");
    }
}
