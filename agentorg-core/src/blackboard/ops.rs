//! Where a project lives, and what creating it, changing an artifact,
//! recording a decision and reading it take — from a `Context` (committed
//! with the handler's outcome) and from the principal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::records::{
    blockers_of, check_graph, dependents, Artifact, ArtifactStatus, Change, DecisionRecord,
    GraphError, ProjectRecord, Shape,
};
use super::{ArtifactUpdate, BoardError, DecisionSpec, Project, ProjectSpec};
use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{from_doc, to_value, Context, Effects, Kernel, Principal};
use crate::store::{
    CollectionPath, DocKey, Precondition, StateStoreExt, StoreError, Version, Write,
};

pub(crate) use super::CHANNEL;

/// A notice to the owner of artifact `artifact` of `project`: its blocker
/// `blocker` completed, or changed while complete, at `revision` (ready if
/// it is not started, rework if it started on an earlier revision).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub(crate) project: String,
    pub(crate) artifact: String,
    #[serde(default)]
    pub(crate) blocker: Option<String>,
    #[serde(default)]
    pub(crate) revision: Option<u64>,
}

/// The name of the board channel.
pub(crate) fn channel() -> Result<Name, StoreError> {
    Name::new(CHANNEL).map_err(|e| StoreError::invalid(None, e.to_string()))
}

/// Stages `notice` from `from` to `owner`'s board channel in `effects`.
pub(crate) fn send_notice(
    kernel: &Kernel,
    effects: &mut Effects,
    from: &Name,
    owner: &Name,
    notice: &Notice,
) -> Result<(), StoreError> {
    kernel.send_on_channel(effects, from, owner, &channel()?, notice)
}

fn project_key(kernel: &Kernel, project: &str) -> Result<DocKey, StoreError> {
    kernel.collection("projects")?.doc(project)
}

fn artifacts(kernel: &Kernel, project: &str) -> Result<CollectionPath, StoreError> {
    project_key(kernel, project)?.subcollection("artifacts")
}

pub(crate) fn artifact_key(
    kernel: &Kernel,
    project: &str,
    name: &str,
) -> Result<DocKey, StoreError> {
    artifacts(kernel, project)?.doc(name)
}

fn history(kernel: &Kernel, project: &str, name: &str) -> Result<CollectionPath, StoreError> {
    artifact_key(kernel, project, name)?.subcollection("history")
}

fn decisions(kernel: &Kernel, project: &str) -> Result<CollectionPath, StoreError> {
    project_key(kernel, project)?.subcollection("decisions")
}

/// The marker of a ready notice handled: one per set of blockers'
/// completions (the revision each became complete at: an edit that keeps a
/// blocker complete does not make it ready again) and time the artifact
/// was sent to rework (after which it is ready again).
pub(crate) fn ready_marker(
    kernel: &Kernel,
    project: &str,
    dependent: &Artifact,
    blockers: &[&Artifact],
) -> Result<DocKey, StoreError> {
    let artifact = dependent.name.as_str();
    let mut revisions: Vec<String> = blockers
        .iter()
        .map(|b| format!("{}@{}", b.name, b.completed_revision.unwrap_or(b.revision)))
        .collect();
    revisions.push(format!("reworks {}", dependent.reworks));
    let mut parts: Vec<&str> = vec![artifact];
    parts.extend(revisions.iter().map(String::as_str));
    let digest = crate::hex::digest(&parts);
    project_key(kernel, project)?
        .subcollection("ready")?
        .doc(format!("{artifact}-{digest}"))
}

fn name_of(what: &str, s: &str) -> Result<Name, BoardError> {
    Name::new(s).map_err(|e| BoardError::InvalidInput {
        message: format!("{what} `{s}`: {e}"),
    })
}

/// Reads project `id`'s structure.
pub(crate) async fn read_project(kernel: &Kernel, id: &str) -> Result<ProjectRecord, BoardError> {
    match kernel
        .read::<ProjectRecord>(&project_key(kernel, id)?)
        .await?
    {
        Some((p, _)) => Ok(p),
        None => Err(BoardError::UnknownProject {
            project: id.to_owned(),
        }),
    }
}

/// Reads artifact `name` of project `id`, with its version.
pub(crate) async fn read_artifact(
    kernel: &Kernel,
    id: &str,
    name: &str,
) -> Result<(Artifact, Version), BoardError> {
    match kernel
        .read::<Artifact>(&artifact_key(kernel, id, name)?)
        .await?
    {
        Some(a) => Ok(a),
        None => Err(BoardError::UnknownArtifact {
            project: id.to_owned(),
            artifact: name.to_owned(),
        }),
    }
}

/// Every document of `collection`, decoded.
async fn list<T: serde::de::DeserializeOwned>(
    kernel: &Kernel,
    collection: &CollectionPath,
) -> Result<Vec<T>, BoardError> {
    let mut out = Vec::new();
    for doc in kernel.store().list_all(collection).await? {
        out.push(from_doc::<T>(&doc)?.0);
    }
    Ok(out)
}

/// Every artifact of project `id` (each as read: consistent per artifact).
pub(crate) async fn read_artifacts(kernel: &Kernel, id: &str) -> Result<Vec<Artifact>, BoardError> {
    list(kernel, &artifacts(kernel, id)?).await
}

/// What creating `spec` from `by` commits (refused if the project exists).
async fn create(kernel: &Kernel, by: &Name, spec: &ProjectSpec) -> Result<Effects, BoardError> {
    name_of("project id", &spec.project_id)?;
    if kernel
        .store()
        .get(&project_key(kernel, &spec.project_id)?)
        .await?
        .is_some()
    {
        return Err(BoardError::ProjectExists {
            project: spec.project_id.clone(),
        });
    }
    let chart = kernel.chart();
    let mut shapes = BTreeMap::new();
    for a in &spec.artifacts {
        name_of("artifact", &a.name)?;
        let owner = name_of("owner", &a.owner)?;
        if !chart.contains(&owner) || chart.is_principal(&owner) {
            return Err(BoardError::InvalidInput {
                message: format!(
                    "artifact `{}`: its owner `{owner}` is not a role of the chart",
                    a.name
                ),
            });
        }
        let shape = Shape {
            owner,
            blocked_by: a.blocked_by.clone(),
        };
        if shapes.insert(a.name.clone(), shape).is_some() {
            return Err(BoardError::InvalidInput {
                message: format!("artifact `{}` is declared twice", a.name),
            });
        }
    }
    check_graph(&blockers_of(&shapes)).map_err(|e| match e {
        GraphError::Unknown { artifact, blocker } => {
            BoardError::UnknownDependency { artifact, blocker }
        }
        GraphError::Cycle(cycle) => BoardError::Cycle { cycle },
    })?;
    let now = kernel.now();
    let mut effects = Effects::new();
    for (name, shape) in &shapes {
        let artifact = Artifact::new(name, &shape.owner, &shape.blocked_by);
        // Contended: a project created meanwhile makes a handler run again
        // (and find it).
        effects.contended_write(Write::put(
            artifact_key(kernel, &spec.project_id, name)?,
            to_value(&artifact)?,
            Precondition::MustNotExist,
        ));
    }
    let record = ProjectRecord {
        project_id: spec.project_id.clone(),
        created_by: by.clone(),
        created_at: now,
        artifacts: shapes,
    };
    effects.contended_write(Write::put(
        project_key(kernel, &spec.project_id)?,
        to_value(&record)?,
        Precondition::MustNotExist,
    ));
    Ok(effects)
}

/// The blocker revisions a call's work on an artifact starts from, by
/// project and artifact: what its ready notice showed, or what its claim
/// recorded (an extension of the call's [`Context`]).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    basis: BTreeMap<(String, String), BTreeMap<String, u64>>,
    /// The artifacts whose work this call found stale (a blocker changed
    /// since): not to be marked as told.
    stale: std::collections::BTreeSet<(String, String)>,
}

fn key(project: &str, artifact: &str) -> (String, String) {
    (project.to_owned(), artifact.to_owned())
}

/// Remembers for the rest of `cx`'s call that its work on `artifact` of
/// `project` starts from `basis`.
pub(crate) fn remember(cx: &Context, project: &str, artifact: &str, basis: BTreeMap<String, u64>) {
    cx.with_effects(|_, ext| {
        let seen = ext.get_or_default::<Seen>();
        seen.basis.insert(key(project, artifact), basis);
    });
}

/// What `cx`'s work on `artifact` of `project` starts from, if its call
/// saw it.
pub(crate) fn seen(cx: &Context, project: &str, artifact: &str) -> Option<BTreeMap<String, u64>> {
    let key = key(project, artifact);
    cx.with_effects(|_, ext| ext.get::<Seen>().and_then(|s| s.basis.get(&key).cloned()))
}

/// Whether `cx`'s call found its work on `artifact` of `project` stale.
pub(crate) fn is_stale(cx: &Context, project: &str, artifact: &str) -> bool {
    let key = key(project, artifact);
    cx.with_effects(|_, ext| ext.get::<Seen>().is_some_and(|s| s.stale.contains(&key)))
}

/// Checks that no blocker is past the revision the work saw (`seen`, by
/// blocker) now (`now`); if one is, `BlockerChanged`, and `cx`'s call
/// remembers its work on `artifact` is stale.
pub(crate) fn check_seen(
    cx: &Context,
    project: &str,
    artifact: &str,
    seen: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> Result<(), BoardError> {
    let changed = now.iter().find_map(|(b, &rev)| {
        let was = seen.get(b).copied().unwrap_or(0);
        (rev > was).then(|| (b.clone(), was, rev))
    });
    let Some((blocker, started_on, now)) = changed else {
        return Ok(());
    };
    cx.with_effects(|_, ext| {
        ext.get_or_default::<Seen>()
            .stale
            .insert(key(project, artifact));
    });
    Err(BoardError::BlockerChanged {
        artifact: artifact.to_owned(),
        blocker,
        started_on,
        now,
    })
}

/// The revision of each of `blockers` now.
pub(crate) async fn basis(
    kernel: &Kernel,
    project: &str,
    blockers: &[String],
) -> Result<BTreeMap<String, u64>, BoardError> {
    let mut out = BTreeMap::new();
    for b in blockers {
        out.insert(
            b.clone(),
            read_artifact(kernel, project, b).await?.0.revision,
        );
    }
    Ok(out)
}

/// The writes of a change by `role` of `artifact` (of `project`, read at
/// `version`, `from` its status before): its revision counted, who and
/// when stamped, the revision it became complete at kept, then the
/// artifact compared-and-set and its history record.
pub(crate) fn change_writes(
    kernel: &Kernel,
    role: &Name,
    project: &str,
    artifact: &mut Artifact,
    version: Version,
    from: ArtifactStatus,
) -> Result<(Write, Write), BoardError> {
    let now = kernel.now();
    artifact.revision += 1;
    if artifact.status == ArtifactStatus::Rework && from != ArtifactStatus::Rework {
        artifact.reworks += 1;
    }
    artifact.updated_by = Some(role.clone());
    artifact.updated_at = Some(now);
    artifact.completed_revision = match (from, artifact.status) {
        (_, s) if s != ArtifactStatus::Complete => None,
        (ArtifactStatus::Complete, _) => artifact.completed_revision.or(Some(artifact.revision)),
        _ => Some(artifact.revision),
    };
    let record = Change {
        revision: artifact.revision,
        by: role.clone(),
        at: now,
        from,
        to: artifact.status,
        path: artifact.path.clone(),
    };
    let name = &artifact.name;
    Ok((
        Write::put(
            artifact_key(kernel, project, name)?,
            to_value(&*artifact)?,
            Precondition::Version(version),
        ),
        Write::put(
            history(kernel, project, name)?.doc(format!("{:012}", artifact.revision))?,
            to_value(&record)?,
            Precondition::MustNotExist,
        ),
    ))
}

/// What `role` changing artifact `name` of `project` by `update` commits
/// (the artifact compared-and-set against the version read, its history,
/// and a ready notice to the owner of each artifact it blocks when it
/// completes), and the new revision.
async fn update(
    cx: &Context,
    project: &str,
    name: &str,
    update: impl FnOnce(&Artifact) -> ArtifactUpdate,
) -> Result<(Effects, u64), BoardError> {
    let (kernel, role) = (cx.kernel(), cx.role());
    let (mut artifact, version) = read_artifact(kernel, project, name).await?;
    if &artifact.owner != role {
        return Err(BoardError::NotOwner {
            role: role.to_string(),
            artifact: name.to_owned(),
            owner: artifact.owner.to_string(),
        });
    }
    let change = update(&artifact);
    let from = artifact.status;
    if let Some(s) = change.status {
        artifact.status = s;
    }
    if let Some(p) = change.path {
        artifact.path = Some(p);
    }
    if let Some(c) = change.content {
        artifact.content = Some(c);
    }
    if !from.is_started() && artifact.status.is_started() {
        let now = basis(kernel, project, &artifact.blocked_by).await?;
        artifact.basis = match seen(cx, project, name) {
            // Started from what the call saw: refused if a blocker has
            // changed since (its notice may have come and gone meanwhile).
            Some(seen) => {
                check_seen(cx, project, name, &seen, &now)?;
                seen
            }
            None if from == ArtifactStatus::Rework
                && artifact.status == ArtifactStatus::Complete =>
            {
                return Err(BoardError::Reworked {
                    artifact: name.to_owned(),
                })
            }
            None => now,
        };
    }
    if artifact.status != ArtifactStatus::InProgress {
        artifact.claim = None;
    }
    let (write, record) = change_writes(kernel, role, project, &mut artifact, version, from)?;
    let mut effects = Effects::new();
    effects.contended_write(write).write(record);
    // Completing it may make its dependents ready; changing it while
    // complete (an edit, reopening it) may send the started ones to rework.
    if artifact.status == ArtifactStatus::Complete || from == ArtifactStatus::Complete {
        let shapes = read_project(kernel, project).await?.artifacts;
        for (dependent, shape) in dependents(&shapes, name) {
            let notice = Notice {
                project: project.to_owned(),
                artifact: dependent.clone(),
                blocker: Some(name.to_owned()),
                revision: Some(artifact.revision),
            };
            send_notice(kernel, &mut effects, role, &shape.owner, &notice)?;
        }
    }
    Ok((effects, artifact.revision))
}

/// What recording `spec` in `project`'s log from `by` commits, and its id.
pub(crate) async fn decide(
    kernel: &Kernel,
    by: &Name,
    project: &str,
    spec: DecisionSpec,
) -> Result<(Effects, String), BoardError> {
    let shapes = read_project(kernel, project).await?.artifacts;
    if let Some(a) = spec.artifacts.iter().find(|a| !shapes.contains_key(*a)) {
        return Err(BoardError::UnknownArtifact {
            project: project.to_owned(),
            artifact: a.clone(),
        });
    }
    let id = format!("d-{}", MessageId::new());
    let mut effects = Effects::new();
    if let Some(old) = &spec.supersedes {
        let key = decisions(kernel, project)?.doc(old)?;
        if kernel.store().get(&key).await?.is_none() {
            return Err(BoardError::InvalidInput {
                message: format!("decision `{old}` to supersede is not in the log of `{project}`"),
            });
        }
        // One successor per decision: the log does not fork.
        let marker = project_key(kernel, project)?
            .subcollection("superseded")?
            .doc(old)?;
        if let Some(doc) = kernel.store().get(&marker).await? {
            return Err(BoardError::InvalidInput {
                message: format!(
                    "decision `{old}` is already superseded by `{}`",
                    doc.value["by"].as_str().unwrap_or("?")
                ),
            });
        }
        effects.contended_write(Write::put(
            marker,
            json!({ "by": id }),
            Precondition::MustNotExist,
        ));
    }
    let record = DecisionRecord {
        decision_id: id.clone(),
        agent: by.clone(),
        decision: spec.decision,
        rationale: spec.rationale,
        timestamp: kernel.now(),
        artifacts: spec.artifacts,
        meeting: spec.meeting,
        supersedes: spec.supersedes,
    };
    effects.write(Write::put(
        decisions(kernel, project)?.doc(&id)?,
        to_value(&record)?,
        Precondition::MustNotExist,
    ));
    Ok((effects, id))
}

/// Reads project `id` whole: its artifacts (each consistent on its own,
/// not a snapshot across them) and its decision log, oldest first.
async fn read(kernel: &Kernel, id: &str) -> Result<Project, BoardError> {
    read_project(kernel, id).await?;
    let artifacts = read_artifacts(kernel, id)
        .await?
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    let mut log: Vec<DecisionRecord> = list(kernel, &decisions(kernel, id)?).await?;
    order_log(&mut log);
    Ok(Project {
        project_id: id.to_owned(),
        artifacts,
        decisions: log,
    })
}

/// Puts the log in order: by time, and every decision after the one it
/// supersedes (two decisions of one instant have no order of their own).
fn order_log(log: &mut Vec<DecisionRecord>) {
    log.sort_by(|a, b| (a.timestamp, &a.decision_id).cmp(&(b.timestamp, &b.decision_id)));
    // Each decision is superseded at most once, by a later one: a chain
    // at most as long as the log.
    for _ in 0..log.len() {
        let misplaced = log.iter().enumerate().find_map(|(i, d)| {
            let old = d.supersedes.as_deref()?;
            let at = log.iter().position(|x| x.decision_id == old)?;
            (at > i).then_some((i, at))
        });
        let Some((i, at)) = misplaced else { break };
        let d = log.remove(i);
        log.insert(at, d);
    }
}

/// The artifacts of `id` not started whose blockers are all complete, by
/// owner.
async fn ready(kernel: &Kernel, id: &str) -> Result<BTreeMap<Name, Vec<String>>, BoardError> {
    read_project(kernel, id).await?;
    Ok(super::records::ready(&read_artifacts(kernel, id).await?))
}

/// Stages `effects` with `cx`'s outcome.
fn stage(cx: &Context, effects: Effects) {
    cx.with_effects(|staged, _| {
        staged.extend(effects);
    });
}

/// Whether `cx` has already staged a write of `key`.
pub(crate) fn staged(cx: &Context, key: &DocKey) -> bool {
    cx.with_effects(|staged, _| staged.writes().iter().any(|w| w.key() == key))
}

/// The blackboard's operations of a handler's [`Context`].
impl Context {
    /// Creates a project with its artifacts (each owned by a role of the
    /// chart, all `pending`), when the handler's outcome is committed. An
    /// unknown blocker, a cycle or an existing project is refused now.
    pub async fn create_project(&self, spec: &ProjectSpec) -> Result<(), BoardError> {
        stage(self, create(self.kernel(), self.role(), spec).await?);
        Ok(())
    }

    /// Changes artifact `name` of `project` (this role must own it) by
    /// `change`, with the handler's outcome: compared with the version read
    /// now, so if it changes meanwhile the handler runs again on the new
    /// one (nothing is lost). Completing it notifies the owners of the
    /// artifacts it blocks. Returns the new revision.
    pub async fn update_artifact(
        &self,
        project: &str,
        name: &str,
        change: ArtifactUpdate,
    ) -> Result<u64, BoardError> {
        self.update_artifact_with(project, name, |_| change).await
    }

    /// [`update_artifact`](Self::update_artifact) with the change computed
    /// from the artifact as read (a counter in its content, say).
    pub async fn update_artifact_with(
        &self,
        project: &str,
        name: &str,
        change: impl FnOnce(&Artifact) -> ArtifactUpdate + Send,
    ) -> Result<u64, BoardError> {
        if staged(self, &artifact_key(self.kernel(), project, name)?) {
            return Err(BoardError::InvalidInput {
                message: format!(
                    "artifact `{name}` is already changed in this call: make one change per artifact per call (it is committed with the call's outcome)"
                ),
            });
        }
        let (effects, revision) = update(self, project, name, change).await?;
        stage(self, effects);
        Ok(revision)
    }

    /// Appends a decision to `project`'s log, with the handler's outcome;
    /// returns its id.
    pub async fn record_decision(
        &self,
        project: &str,
        decision: DecisionSpec,
    ) -> Result<String, BoardError> {
        let (effects, id) = decide(self.kernel(), self.role(), project, decision).await?;
        stage(self, effects);
        Ok(id)
    }

    /// Reads project `id` (see [`Principal::project`]).
    pub async fn project(&self, id: &str) -> Result<Project, BoardError> {
        read(self.kernel(), id).await
    }

    /// The artifacts of project `id` ready to start, by owner.
    pub async fn ready_artifacts(
        &self,
        id: &str,
    ) -> Result<BTreeMap<Name, Vec<String>>, BoardError> {
        ready(self.kernel(), id).await
    }
}

/// The blackboard's operations of the principal.
impl Principal {
    /// Creates a project with its artifacts (each owned by a role of the
    /// chart, all `pending`); an unknown blocker or a cycle is refused.
    pub async fn create_project(&self, spec: &ProjectSpec) -> Result<(), BoardError> {
        let effects = create(&self.kernel, self.name(), spec).await?;
        match self.kernel.commit(effects).await {
            Err(e) if e.is_precondition_failure() => Err(BoardError::ProjectExists {
                project: spec.project_id.clone(),
            }),
            r => r.map_err(Into::into),
        }
    }

    /// Reads project `id` whole, in one call: each artifact as it is now
    /// (consistent per artifact — not a snapshot across artifacts, which
    /// may change between two reads) and the decision log, oldest first.
    /// [`Project::to_json`] gives it in the shape of GenBrain's project
    /// document.
    pub async fn project(&self, id: &str) -> Result<Project, BoardError> {
        read(&self.kernel, id).await
    }

    /// The artifacts of project `id` ready to start (not started, every
    /// blocker complete), by owner.
    pub async fn ready_artifacts(
        &self,
        id: &str,
    ) -> Result<BTreeMap<Name, Vec<String>>, BoardError> {
        ready(&self.kernel, id).await
    }

    /// Appends a decision to `project`'s log as the principal. A decision
    /// is superseded at most once (the log does not fork): superseding one
    /// twice is refused.
    pub async fn record_decision(
        &self,
        project: &str,
        decision: DecisionSpec,
    ) -> Result<String, BoardError> {
        let (effects, id) = decide(&self.kernel, self.name(), project, decision).await?;
        match self.kernel.commit(effects).await {
            Err(e) if e.is_precondition_failure() => Err(BoardError::InvalidInput {
                message: "the decision it supersedes was superseded meanwhile".to_owned(),
            }),
            r => r.map(|()| id).map_err(Into::into),
        }
    }

    /// Every change of artifact `name` of `project`, oldest first.
    pub async fn artifact_history(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<Change>, BoardError> {
        read_artifact(&self.kernel, project, name).await?;
        let mut out: Vec<Change> =
            list(&self.kernel, &history(&self.kernel, project, name)?).await?;
        out.sort_by_key(|c| c.revision);
        Ok(out)
    }

    /// The ids of every project.
    pub async fn projects(&self) -> Result<Vec<String>, BoardError> {
        let docs = self
            .kernel
            .store()
            .list_all(&self.kernel.collection("projects")?)
            .await?;
        Ok(docs.into_iter().map(|d| d.key.id().to_owned()).collect())
    }
}

impl Project {
    /// The project in the shape of GenBrain's project document:
    /// `{project_id, status, artifacts: {name: {owner, status, path,
    /// blocked_by, updated_at}}, decisions: [{agent, decision, rationale,
    /// timestamp, …}]}` — `blocked_by` a string when one, a list when
    /// several, `null` when none (as `path` and `updated_at` when there is
    /// none yet); `status` `complete` when every artifact is, else
    /// `in_progress`.
    pub fn to_json(&self) -> Value {
        let artifacts: serde_json::Map<String, Value> = self
            .artifacts
            .iter()
            .map(|(name, a)| {
                let blocked_by = match a.blocked_by.as_slice() {
                    [] => Value::Null,
                    [one] => json!(one),
                    many => json!(many),
                };
                let updated_at = a.updated_at.map(|t| json!(crate::timefmt::text(&t)));
                let v = json!({
                    "owner": a.owner,
                    "status": a.status,
                    "path": a.path,
                    "blocked_by": blocked_by,
                    "updated_at": updated_at,
                });
                (name.clone(), v)
            })
            .collect();
        let decisions: Vec<Value> = self
            .decisions
            .iter()
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect();
        json!({
            "project_id": self.project_id,
            "status": if self.is_complete() { "complete" } else { "in_progress" },
            "artifacts": artifacts,
            "decisions": decisions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(
        id: &str,
        supersedes: Option<&str>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> DecisionRecord {
        DecisionRecord {
            decision_id: id.to_owned(),
            agent: Name::new("cto").unwrap(),
            decision: id.to_owned(),
            rationale: String::new(),
            timestamp: at,
            artifacts: Vec::new(),
            meeting: None,
            supersedes: supersedes.map(str::to_owned),
        }
    }

    /// A superseding decision of the same instant, whose id sorts first,
    /// still comes after the one it supersedes.
    #[test]
    fn a_successor_comes_after_what_it_supersedes() {
        let at = chrono::Utc::now();
        let mut log = vec![
            decision("d-b", None, at),
            decision("d-a", Some("d-b"), at),
            decision("d-0", Some("d-a"), at),
        ];
        order_log(&mut log);
        let ids: Vec<&str> = log.iter().map(|d| d.decision_id.as_str()).collect();
        assert_eq!(ids, ["d-b", "d-a", "d-0"]);
    }
}
