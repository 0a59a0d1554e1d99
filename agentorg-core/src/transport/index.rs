//! A subject index: which patterns (consumer filters, subscriptions) match a
//! subject, in time proportional to the subject's tokens rather than to the
//! number of patterns (the structure NATS calls a sublist).

use std::collections::HashMap;
use std::hash::Hash;

use crate::subject::{Subject, SubjectPattern};

/// Patterns stored as a token trie; `*` and `>` are children of their own.
#[derive(Debug)]
pub(crate) struct SubjectIndex<K> {
    root: Node<K>,
}

#[derive(Debug)]
struct Node<K> {
    literal: HashMap<Box<str>, Node<K>>,
    star: Option<Box<Node<K>>>,
    /// Keys whose pattern ends with `>` here (one or more tokens follow).
    tail: Vec<K>,
    /// Keys whose pattern ends exactly here.
    here: Vec<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            star: None,
            tail: Vec::new(),
            here: Vec::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.tail.is_empty()
            && self.here.is_empty()
    }
}

impl<K> Default for SubjectIndex<K> {
    fn default() -> Self {
        Self {
            root: Node::default(),
        }
    }
}

impl<K: Clone + Eq + Hash> SubjectIndex<K> {
    /// Adds `key` under `pattern` (a key may be added under several patterns).
    pub(crate) fn insert(&mut self, pattern: &SubjectPattern, key: K) {
        let mut node = &mut self.root;
        for tok in pattern.as_str().split('.') {
            match tok {
                ">" => {
                    node.tail.push(key);
                    return;
                }
                "*" => node = node.star.get_or_insert_with(Box::default),
                lit => node = node.literal.entry(Box::from(lit)).or_default(),
            }
        }
        node.here.push(key);
    }

    /// Removes `key` from under `pattern`, pruning emptied branches.
    pub(crate) fn remove(&mut self, pattern: &SubjectPattern, key: &K) {
        let tokens: Vec<&str> = pattern.as_str().split('.').collect();
        remove_in(&mut self.root, &tokens, key);
    }

    /// Every key with a pattern matching `subject`, each once.
    pub(crate) fn matches(&self, subject: &Subject) -> Vec<K> {
        let tokens: Vec<&str> = subject.tokens().collect();
        let mut out = Vec::new();
        collect(&self.root, &tokens, &mut out);
        if out.len() > 1 {
            // A key under two matching patterns is reported once.
            let mut seen = std::collections::HashSet::with_capacity(out.len());
            out.retain(|k| seen.insert(k.clone()));
        }
        out
    }
}

fn collect<K: Clone>(node: &Node<K>, tokens: &[&str], out: &mut Vec<K>) {
    let Some((first, rest)) = tokens.split_first() else {
        out.extend(node.here.iter().cloned());
        return;
    };
    out.extend(node.tail.iter().cloned());
    if let Some(child) = node.literal.get(*first) {
        collect(child, rest, out);
    }
    if let Some(child) = &node.star {
        collect(child, rest, out);
    }
}

/// Returns whether `node` is empty afterwards.
fn remove_in<K: Eq>(node: &mut Node<K>, tokens: &[&str], key: &K) -> bool {
    match tokens.split_first() {
        None => remove_one(&mut node.here, key),
        Some((&">", _)) => remove_one(&mut node.tail, key),
        Some((&"*", rest)) => {
            if let Some(child) = node.star.as_mut() {
                if remove_in(child, rest, key) {
                    node.star = None;
                }
            }
        }
        Some((lit, rest)) => {
            if let Some(child) = node.literal.get_mut(*lit) {
                if remove_in(child, rest, key) {
                    node.literal.remove(*lit);
                }
            }
        }
    }
    node.is_empty()
}

fn remove_one<K: Eq>(keys: &mut Vec<K>, key: &K) {
    if let Some(i) = keys.iter().position(|k| k == key) {
        keys.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SubjectPattern {
        SubjectPattern::parse(s).unwrap()
    }

    fn s(s: &str) -> Subject {
        Subject::parse(s).unwrap()
    }

    #[test]
    fn agrees_with_pattern_matching() {
        let patterns = ["a.b", "a.*", "a.>", "*.b", ">", "a.b.c", "*.*.c", "x.y"];
        let mut index = SubjectIndex::default();
        for (i, pat) in patterns.iter().enumerate() {
            index.insert(&p(pat), i);
        }
        for subject in ["a.b", "a.c", "a.b.c", "x.y", "q", "b.b", "z.z.c"] {
            let mut got = index.matches(&s(subject));
            got.sort_unstable();
            let want: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, pat)| p(pat).matches(&s(subject)))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, want, "{subject}");
        }
        for (i, pat) in patterns.iter().enumerate() {
            index.remove(&p(pat), &i);
        }
        assert!(index.root.is_empty(), "removal prunes every branch");
    }

    #[test]
    fn a_key_under_two_matching_patterns_is_reported_once() {
        let mut index = SubjectIndex::default();
        index.insert(&p("a.>"), "k");
        index.insert(&p("a.*"), "k");
        assert_eq!(index.matches(&s("a.b")), ["k"]);
    }
}
