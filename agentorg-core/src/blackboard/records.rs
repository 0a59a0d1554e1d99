//! The blackboard's documents and the dependency graph: checking it
//! (unknown names, cycles) and deriving what is ready.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::name::Name;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where an artifact stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArtifactStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Complete,
    /// To be redone: a blocker changed after it started (its owner's
    /// process moves it here on the rework notice). Like `pending`, it is
    /// ready when every blocker is complete, and may be claimed.
    Rework,
}

impl ArtifactStatus {
    /// Its name in the project document: `pending`, `in_progress`,
    /// `complete`, `rework`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Complete => "complete",
            Self::Rework => "rework",
        }
    }

    /// Whether work on it has started (`in_progress` or `complete`); an
    /// artifact not started (`pending`, `rework`) is ready when every
    /// blocker is complete.
    pub fn is_started(self) -> bool {
        matches!(self, Self::InProgress | Self::Complete)
    }
}

impl std::fmt::Display for ArtifactStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A claim on an artifact: one replica of its owner works on it until the
/// lease runs out (see [`Context::claim_artifact`](crate::runtime::Context::claim_artifact)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// Who holds it: the delivery (message id) that claimed it.
    pub holder: String,
    /// The process that claimed it.
    pub process: String,
    /// When it runs out (another replica may claim it then).
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub until: DateTime<Utc>,
}

/// A project's structure, written once when it is created:
/// `agentorg/<org>/projects/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProjectRecord {
    pub(crate) project_id: String,
    pub(crate) created_by: Name,
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub(crate) created_at: DateTime<Utc>,
    /// Each artifact's owner and blockers.
    pub(crate) artifacts: BTreeMap<String, Shape>,
}

/// An artifact's place in the project: its owner and what blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Shape {
    pub(crate) owner: Name,
    #[serde(default)]
    pub(crate) blocked_by: Vec<String>,
}

/// One artifact, its own document (versioned on its own):
/// `agentorg/<org>/projects/<id>/artifacts/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Artifact {
    /// Its name in the project.
    pub name: String,
    /// The role that owns it: the only one that changes it.
    pub owner: Name,
    /// Where it stands.
    pub status: ArtifactStatus,
    /// Where it lives (a file, a URL), once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Any content its owner keeps with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// The artifacts it waits for.
    #[serde(default)]
    pub blocked_by: Vec<String>,
    /// How many changes it has had (0: as created).
    pub revision: u64,
    /// The revision at which it last became complete (while it stays
    /// complete; an edit that keeps it complete does not change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_revision: Option<u64>,
    /// The revision of each blocker when it was started (a later change of
    /// one sends a rework notice).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub basis: BTreeMap<String, u64>,
    /// How many times it was sent to rework.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reworks: u64,
    /// The live or lapsed claim on it, while it is `in_progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Lease>,
    /// Who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<Name>,
    /// When it last changed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::timefmt::option"
    )]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Artifact {
    /// Artifact `name` as created: owned by `owner`, blocked by
    /// `blocked_by`, `pending`, revision 0.
    pub(crate) fn new(name: &str, owner: &Name, blocked_by: &[String]) -> Self {
        Self {
            name: name.to_owned(),
            owner: owner.clone(),
            status: ArtifactStatus::Pending,
            path: None,
            content: None,
            blocked_by: blocked_by.to_vec(),
            revision: 0,
            completed_revision: None,
            basis: BTreeMap::new(),
            reworks: 0,
            claim: None,
            updated_by: None,
            updated_at: None,
        }
    }
}

/// One change of an artifact, kept for good:
/// `…/artifacts/<name>/history/<revision>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// The revision it made.
    pub revision: u64,
    /// Who made it.
    pub by: Name,
    /// When.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub at: DateTime<Utc>,
    /// The status before.
    pub from: ArtifactStatus,
    /// The status after.
    pub to: ArtifactStatus,
    /// The path after, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A decision of the log: never edited, only superseded by a later one
/// that names it. `…/decisions/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DecisionRecord {
    /// Its id (sortable by time).
    pub decision_id: String,
    /// The role (or principal) that took it.
    pub agent: Name,
    /// What was decided.
    pub decision: String,
    /// Why.
    pub rationale: String,
    /// When.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub timestamp: DateTime<Utc>,
    /// The artifacts it concerns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// The meeting that took it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meeting: Option<String>,
    /// The decision it replaces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// Why a dependency graph is refused: an unknown blocker, or a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GraphError {
    /// `artifact` is blocked by `blocker`, which the project does not have.
    Unknown { artifact: String, blocker: String },
    /// These artifacts block each other in a circle (in order).
    Cycle(Vec<String>),
}

/// Checks the blockers of every artifact: each names an artifact of the
/// project, and there is no cycle (an artifact blocking itself is one).
pub(crate) fn check_graph(blockers: &BTreeMap<String, Vec<String>>) -> Result<(), GraphError> {
    for (artifact, bs) in blockers {
        if let Some(b) = bs.iter().find(|b| !blockers.contains_key(*b)) {
            return Err(GraphError::Unknown {
                artifact: artifact.clone(),
                blocker: b.clone(),
            });
        }
    }
    // Depth-first, with the path on the stack: white 0, grey 1, black 2.
    let mut color: BTreeMap<&str, u8> = BTreeMap::new();
    for start in blockers.keys() {
        if color.get(start.as_str()).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        color.insert(start.as_str(), 1);
        while let Some((node, next)) = stack.pop() {
            let edges = blockers.get(node).map(Vec::as_slice).unwrap_or_default();
            if let Some(b) = edges.get(next) {
                stack.push((node, next + 1));
                match color.get(b.as_str()).copied().unwrap_or(0) {
                    0 => {
                        color.insert(b.as_str(), 1);
                        stack.push((b.as_str(), 0));
                    }
                    1 => {
                        let from = stack
                            .iter()
                            .position(|(n, _)| *n == b.as_str())
                            .unwrap_or(0);
                        let cycle = stack[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                        return Err(GraphError::Cycle(cycle));
                    }
                    _ => {}
                }
            } else {
                color.insert(node, 2);
            }
        }
    }
    Ok(())
}

/// The artifacts not started (`pending`, `rework`) whose blockers are all
/// complete, by owner
/// (each list sorted).
pub(crate) fn ready<'a>(
    artifacts: impl IntoIterator<Item = &'a Artifact> + Clone,
) -> BTreeMap<Name, Vec<String>> {
    let status: BTreeMap<&str, ArtifactStatus> = artifacts
        .clone()
        .into_iter()
        .map(|a| (a.name.as_str(), a.status))
        .collect();
    let mut out: BTreeMap<Name, Vec<String>> = BTreeMap::new();
    for a in artifacts {
        let unblocked = a
            .blocked_by
            .iter()
            .all(|b| status.get(b.as_str()) == Some(&ArtifactStatus::Complete));
        if !a.status.is_started() && unblocked {
            out.entry(a.owner.clone()).or_default().push(a.name.clone());
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The artifacts that `name` blocks.
pub(crate) fn dependents<'a>(
    shapes: &'a BTreeMap<String, Shape>,
    name: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Shape)> + 'a {
    shapes
        .iter()
        .filter(move |(_, s)| s.blocked_by.iter().any(|b| b == name))
}

/// Every artifact's blockers, as declared.
pub(crate) fn blockers_of(shapes: &BTreeMap<String, Shape>) -> BTreeMap<String, Vec<String>> {
    shapes
        .iter()
        .map(|(n, s)| (n.clone(), s.blocked_by.clone()))
        .collect::<BTreeMap<_, _>>()
}

/// The names in a cycle, as a set (for tests).
#[cfg(test)]
fn members(e: &GraphError) -> std::collections::BTreeSet<String> {
    match e {
        GraphError::Cycle(c) => c.iter().cloned().collect(),
        GraphError::Unknown { .. } => std::collections::BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(a, bs)| {
                (
                    (*a).to_owned(),
                    bs.iter().map(|b| (*b).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn unknown_blockers_and_cycles_are_refused() {
        assert_eq!(check_graph(&graph(&[("a", &[]), ("b", &["a"])])), Ok(()));
        assert_eq!(
            check_graph(&graph(&[("a", &["x"])])),
            Err(GraphError::Unknown {
                artifact: "a".into(),
                blocker: "x".into()
            })
        );
        let e = check_graph(&graph(&[
            ("a", &["c"]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("d", &[]),
        ]));
        assert_eq!(
            members(&e.unwrap_err()),
            ["a", "b", "c"].map(String::from).into()
        );
        assert!(check_graph(&graph(&[("a", &["a"])])).is_err());
    }

    use proptest::prelude::*;

    /// A graph of `n` artifacts `a0…`, each blocked by a random subset of
    /// the others (any direction: cycles possible).
    fn graphs() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
        (1usize..9).prop_flat_map(|n| {
            proptest::collection::vec(proptest::collection::vec(0..n, 0..4), n).prop_map(
                move |edges| {
                    edges
                        .into_iter()
                        .enumerate()
                        .map(|(i, bs)| {
                            let mut bs: Vec<String> = bs.iter().map(|b| format!("a{b}")).collect();
                            bs.sort();
                            bs.dedup();
                            (format!("a{i}"), bs)
                        })
                        .collect()
                },
            )
        })
    }

    /// Whether `g` has a cycle, by repeatedly removing artifacts with no
    /// blocker left (Kahn): what cannot be removed is on or behind one.
    fn has_cycle(g: &BTreeMap<String, Vec<String>>) -> bool {
        let mut left: BTreeMap<&str, Vec<&str>> = g
            .iter()
            .map(|(a, bs)| (a.as_str(), bs.iter().map(String::as_str).collect()))
            .collect();
        loop {
            let free: Vec<&str> = left
                .iter()
                .filter(|(_, bs)| bs.iter().all(|b| !left.contains_key(b)))
                .map(|(a, _)| *a)
                .collect();
            if free.is_empty() {
                return !left.is_empty();
            }
            for a in free {
                left.remove(a);
            }
        }
    }

    proptest! {
        /// Cycles are always refused, acyclic graphs always accepted, and a
        /// refused cycle is a real one (each blocked by the next).
        #[test]
        fn cycles_refused_acyclic_accepted(g in graphs()) {
            match check_graph(&g) {
                Ok(()) => prop_assert!(!has_cycle(&g)),
                Err(GraphError::Cycle(c)) => {
                    prop_assert!(has_cycle(&g));
                    for (i, a) in c.iter().enumerate() {
                        let next = &c[(i + 1) % c.len()];
                        prop_assert!(g[a].contains(next), "{a} is not blocked by {next} in {g:?}");
                    }
                }
                Err(e) => prop_assert!(false, "{e:?}"),
            }
        }

        /// `ready` is exactly the artifacts not started whose blockers are
        /// all complete, whatever was completed.
        #[test]
        fn ready_is_pending_with_every_blocker_complete(
            g in graphs(),
            statuses in proptest::collection::vec(0u8..4, 8),
        ) {
            let status = |i: usize| match statuses[i % statuses.len()] {
                0 => ArtifactStatus::Pending,
                1 => ArtifactStatus::InProgress,
                2 => ArtifactStatus::Complete,
                _ => ArtifactStatus::Rework,
            };
            let artifacts: Vec<Artifact> = g
                .iter()
                .enumerate()
                .map(|(i, (name, bs))| Artifact {
                    status: status(i),
                    ..Artifact::new(name, &Name::new(format!("r{}", i % 3)).unwrap(), bs)
                })
                .collect();
            let got = ready(&artifacts);
            for a in &artifacts {
                let complete = |b: &String| artifacts.iter().any(|x| &x.name == b && x.status == ArtifactStatus::Complete);
                let not_started = matches!(a.status, ArtifactStatus::Pending | ArtifactStatus::Rework);
                let want = not_started && a.blocked_by.iter().all(complete);
                let listed = got.get(&a.owner).is_some_and(|v| v.contains(&a.name));
                prop_assert_eq!(want, listed, "{} in {:?}", a.name, got);
            }
        }
    }
}
