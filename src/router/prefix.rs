//! Path prefixes of one host bucket, as a radix trie over the path's bytes.
//!
//! Every prefix that a path starts with lies on the single walk from the root
//! along that path, so one walk finds all of them, however many distinct
//! prefix lengths the config uses. Probing a hash map once per length would
//! cost a hash and a compare per length instead, and real configs mix many
//! lengths (`/`, `/api/`, `/static/`, `/v1/users/`, ...).
//!
//! Built once at compile time; read-only and allocation-free afterwards.

use super::index::scan;

/// Index of a node in `PrefixTrie::nodes`; the root is node 0. A `usize`
/// because a bucket can hold up to two nodes per route, which a `u32` route
/// index does not bound.
type NodeId = usize;

#[derive(Debug)]
pub(super) struct PrefixTrie {
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    /// Bytes on the edge from the parent into this node (empty for the root).
    label: Box<[u8]>,
    /// Routes whose prefix ends exactly here, ascending.
    routes: Vec<u32>,
    /// Smallest route index in this subtree, so a walk stops descending once
    /// nothing below can beat the best match so far.
    subtree_first: u32,
    /// Children by the first byte of their label, sorted by that byte.
    children: Vec<(u8, NodeId)>,
}

impl Node {
    fn new(label: &[u8]) -> Self {
        Self {
            label: label.into(),
            routes: Vec::new(),
            subtree_first: u32::MAX,
            children: Vec::new(),
        }
    }

    fn child(&self, byte: u8) -> Result<NodeId, usize> {
        self.children
            .binary_search_by_key(&byte, |&(b, _)| b)
            .map(|at| self.children[at].1)
    }
}

impl Default for PrefixTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::new(b"")],
        }
    }
}

impl PrefixTrie {
    /// Adds `route` under `prefix`. Routes must arrive in ascending order.
    pub(super) fn insert(&mut self, prefix: &[u8], route: u32) {
        let mut node = 0;
        let mut rest = prefix;
        loop {
            let here = &mut self.nodes[node];
            here.subtree_first = here.subtree_first.min(route);
            let Some(&byte) = rest.first() else {
                here.routes.push(route);
                return;
            };
            let next = match here.child(byte) {
                Ok(child) => self.descend(node, child, rest),
                Err(at) => {
                    let leaf = self.push(Node::new(rest));
                    self.nodes[node].children.insert(at, (byte, leaf));
                    leaf
                }
            };
            rest = &rest[self.label_len(next)..];
            node = next;
        }
    }

    /// Returns the node to continue from after following `child` of `parent`
    /// with `rest`, splitting `child`'s edge where `rest` leaves it.
    fn descend(&mut self, parent: usize, child: NodeId, rest: &[u8]) -> NodeId {
        let label = std::mem::take(&mut self.nodes[child].label);
        let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
        if common == label.len() {
            self.nodes[child].label = label;
            return child;
        }
        // Split: parent → middle (label[..common]) → child (label[common..]).
        // `common` is at least 1, since the child was chosen by rest's first
        // byte, and less than the label's length, so both halves are non-empty.
        let (head, tail) = label.split_at(common);
        let mut middle = Node::new(head);
        middle.subtree_first = self.nodes[child].subtree_first;
        middle.children.push((tail[0], child));
        self.nodes[child].label = tail.into();
        let middle = self.push(middle);
        if let Some(edge) = self.nodes[parent].children.iter_mut().find(|(_, id)| *id == child) {
            edge.1 = middle;
        }
        middle
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn label_len(&self, node: NodeId) -> usize {
        self.nodes[node].label.len()
    }

    pub(super) fn shrink(&mut self) {
        for node in &mut self.nodes {
            node.routes.shrink_to_fit();
            node.children.shrink_to_fit();
        }
        self.nodes.shrink_to_fit();
    }

    /// Lowers `best` to the smallest route index, among routes whose prefix
    /// `path` starts with, that `accept` takes. Skips subtrees whose routes
    /// cannot beat `best`.
    #[inline]
    pub(super) fn search(&self, path: &[u8], best: &mut u32, accept: &impl Fn(u32) -> bool) {
        let mut rest = path;
        let Some(mut node) = self.nodes.first() else {
            return;
        };
        while node.subtree_first < *best {
            scan(&node.routes, best, accept);
            let Some(&byte) = rest.first() else {
                return;
            };
            let Some(next) = node.child(byte).ok().and_then(|id| self.nodes.get(id)) else {
                return;
            };
            match rest.strip_prefix(&*next.label) {
                Some(after) => rest = after,
                None => return,
            }
            node = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(prefixes: &[&str]) -> PrefixTrie {
        let mut t = PrefixTrie::default();
        for (route, p) in prefixes.iter().enumerate() {
            t.insert(p.as_bytes(), route as u32);
        }
        t
    }

    /// Every route the walk offers for `path`, in the order offered, when
    /// none is accepted and the best so far is `best`.
    fn offered(t: &PrefixTrie, path: &str, mut best: u32) -> Vec<u32> {
        let seen = std::cell::RefCell::new(Vec::new());
        t.search(path.as_bytes(), &mut best, &|route| {
            seen.borrow_mut().push(route);
            false
        });
        seen.into_inner()
    }

    fn found(t: &PrefixTrie, path: &str) -> Vec<u32> {
        offered(t, path, u32::MAX)
    }

    #[test]
    fn accepted_route_ends_the_walk_below_it() {
        let t = trie(&["/", "/a", "/a/b"]);
        let mut best = u32::MAX;
        t.search(b"/a/b", &mut best, &|route| route == 1);
        assert_eq!(best, 1);
    }

    #[test]
    fn finds_every_prefix_of_the_path_and_nothing_else() {
        let t = trie(&["/api/v1/", "/api/", "/", "/api/v2/", "/apx", "", "/api/"]);
        assert_eq!(found(&t, "/api/v1/users"), [5, 2, 1, 6, 0]);
        assert_eq!(found(&t, "/api"), [5, 2]);
        assert_eq!(found(&t, "/apx/y"), [5, 2, 4]);
        assert_eq!(found(&t, "x"), [5]);
    }

    #[test]
    fn splitting_an_edge_keeps_the_routes_below_it() {
        // "/abcd" first makes one long edge; "/ab" and "/abx" split it twice.
        let t = trie(&["/abcd", "/ab", "/abx"]);
        assert_eq!(found(&t, "/abcd"), [1, 0]);
        assert_eq!(found(&t, "/abxy"), [1, 2]);
        assert_eq!(found(&t, "/abc"), [1]);
        assert_eq!(t.nodes[0].subtree_first, 0);
    }

    #[test]
    fn stops_descending_when_nothing_below_can_win() {
        let t = trie(&["/a", "/", "/a/b"]);
        // With route 1 already matched, "/" offers nothing (1 is not < 1),
        // "/a" offers 0, and the "/a/b" subtree (route 2) is not entered.
        assert_eq!(offered(&t, "/a/b", 1), [0]);
    }
}
