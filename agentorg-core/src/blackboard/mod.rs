//! The blackboard: a shared project of artifacts, each owned by a role,
//! that coordinates the org by its changes — "when the Backend agent marks
//! api_spec as complete, the CSO agent sees that its blocker is resolved
//! and starts the security review. No explicit message needed".
//!
//! * **A project** ([`Principal::create_project`](crate::runtime::Principal::create_project),
//!   [`Context::create_project`](crate::runtime::Context::create_project))
//!   has artifacts, each owned by a role of the chart, `pending` at first.
//!   Each artifact is **its own document**, versioned on its own: a change
//!   is compared with the version it read, so writes to different
//!   artifacts of one project never conflict, and a conflict on one
//!   artifact is never lost (the handler runs again on what it is now).
//!   Every change is kept in the artifact's history.
//! * **Only the owner** changes an artifact
//!   ([`Context::update_artifact`](crate::runtime::Context::update_artifact)):
//!   anyone else is refused ([`BoardError::NotOwner`]) before anything is
//!   written. Everyone may read the whole project
//!   ([`Principal::project`](crate::runtime::Principal::project)), in one
//!   call, consistent per artifact (not a snapshot across artifacts).
//! * **Dependencies.** An artifact's `blocked_by` names other artifacts of
//!   the project; an unknown one, or a cycle, is refused when the project
//!   is created. Ready (not started, every blocker complete) is *derived*
//!   from the blockers' statuses, never written into the dependent's
//!   document. The commit that completes an artifact carries, in the
//!   kernel's outbox, a notice to the owner of each artifact it blocks; the
//!   owner's process checks the blockers and, if the artifact is ready,
//!   calls [`Agent::on_artifact_ready`](crate::agent::Agent::on_artifact_ready),
//!   claimed, retried and dead-lettered like any delivery; what it stages
//!   is committed once per set of blocker revisions (two blockers
//!   completed at once send two notices: the callback may run twice, and
//!   the second commit finds the first and runs on what is there). The
//!   blockers are read when the notice is handled, not locked: a blocker
//!   that leaves `complete` in the moment between is not seen.
//!   [`Principal::ready_artifacts`](crate::runtime::Principal::ready_artifacts)
//!   lists, per role, what is ready.
//! * **Decisions.** An append-only log
//!   ([`Context::record_decision`](crate::runtime::Context::record_decision)):
//!   a decision is never edited, only superseded by a later one that names
//!   it (once: the log does not fork).
//! * **Rework.** An artifact keeps the revision of each blocker its work
//!   started from (`basis`): the revisions its ready call was told of, or
//!   its claim read, or else those read when it is moved to `in_progress`
//!   or `complete`. When a blocker completes, or changes while complete (an
//!   edit, or reopening it), the commit carries a notice to the owners of
//!   its dependents; an owner whose artifact started on an earlier revision
//!   (one started before the blocker was complete, too) moves it to
//!   `rework` — its own artifact, in its own process — and hears of it
//!   ([`Agent::on_artifact_rework`](crate::agent::Agent::on_artifact_rework));
//!   a dependent not started is left as it is. A `rework` artifact is ready
//!   again (like `pending`) once its blockers are complete, and its owner
//!   hears [`on_artifact_ready`](crate::agent::Agent::on_artifact_ready)
//!   again. Work that would start from blockers changed since its call saw
//!   them is refused ([`BoardError::BlockerChanged`], retryable), and the
//!   ready call is not counted as told: it runs again, or the change's own
//!   notice tells again, on what is there now. A `rework` artifact is
//!   completed only by a call that started it again — claimed it, heard it
//!   is ready, or moved it to `in_progress` first ([`BoardError::Reworked`]).
//!   A change of a blocker that is not complete sends no notice.
//! * **Claims.** Several replicas of a role (processes hosting it) claim a
//!   ready artifact with a lease
//!   ([`Context::claim_artifact`](crate::runtime::Context::claim_artifact),
//!   committed at once, compared-and-set): exactly one gets it and moves
//!   it to `in_progress`; the others are refused with the holder and when
//!   its lease runs out ([`BoardError::Claimed`]). A lease that ran out
//!   frees it for another claim; completing the artifact ends it. The
//!   claim is held by the delivery that made it (a handler that runs again
//!   for the same message holds it still), and leases are compared with
//!   the clock of the process claiming: keep the hosts' clocks in sync
//!   (skew shortens or lengthens a lease).
//! * An artifact changes once per handler call (a second change of the
//!   same artifact in one call is refused: the first is committed with the
//!   call's outcome).
//!
//! An MCP seat (`agentorg_mcp::seat`) gets its role's ready artifacts as
//! `artifact_ready` turns and reads and changes the board with tools held
//! to the same rules.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use agentorg_core::blackboard::{ArtifactSpec, ArtifactStatus, ArtifactUpdate, DecisionSpec, ProjectSpec, ReadyArtifact};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::runtime::Org;
//! use async_trait::async_trait;
//! use serde_json::Value;
//!
//! /// Backend writes the API spec when asked.
//! struct Backend;
//! #[async_trait]
//! impl Agent for Backend {
//!     async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         let done = ArtifactUpdate::status(ArtifactStatus::Complete).path("/specs/analytics-v2.yaml");
//!         cx.update_artifact("dashboard", "api_spec", done).await?;
//!         Ok(Outcome::Complete(Value::Null))
//!     }
//! }
//!
//! /// The CSO starts its review when its blocker completes: nobody messages it.
//! #[derive(Clone, Default)]
//! struct Cso(Arc<Mutex<Vec<String>>>);
//! #[async_trait]
//! impl Agent for Cso {
//!     async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         Ok(Outcome::Complete(Value::Null))
//!     }
//!     async fn on_artifact_ready(&self, cx: &Context, ready: ReadyArtifact) -> Result<(), AgentError> {
//!         self.0.lock().unwrap().push(ready.artifact.clone());
//!         cx.update_artifact(&ready.project, &ready.artifact, ArtifactUpdate::status(ArtifactStatus::Complete)).await?;
//!         Ok(())
//!     }
//! }
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("backend").reports_to("founder"))
//!     .role(RoleSpec::new("cso").reports_to("founder"))
//!     .build()?;
//! let cso = Cso::default();
//! let org = Org::builder(chart).agent("backend", Backend).agent("cso", cso.clone()).start().await?;
//! let founder = org.principal();
//! founder.create_project(&ProjectSpec::new("dashboard")
//!     .artifact(ArtifactSpec::new("api_spec", "backend"))
//!     .artifact(ArtifactSpec::new("security_review", "cso").blocked_by(["api_spec"]))).await?;
//! founder.record_decision("dashboard", DecisionSpec::new(
//!     "Use ClickHouse for analytics storage, not BigQuery",
//!     "Lower latency for real-time dashboard queries",
//! )).await?;
//! assert_eq!(founder.ready_artifacts("dashboard").await?["backend"], ["api_spec"]);
//! founder.delegate("backend", TaskSpec::new("write the API spec")).await?.wait(Duration::from_secs(5)).await?;
//! # for _ in 0..200 { if founder.project("dashboard").await?.is_complete() { break } tokio::time::sleep(Duration::from_millis(10)).await; }
//! let project = founder.project("dashboard").await?;
//! assert!(project.is_complete());
//! assert_eq!(*cso.0.lock().unwrap(), ["security_review"]);
//! let json = project.to_json();
//! assert_eq!(json["artifacts"]["security_review"]["blocked_by"], "api_spec");
//! assert_eq!(json["decisions"][0]["agent"], "founder");
//! org.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::runtime::{agent_error_from, AgentError, Context, Pattern, Registry};

mod claims;
mod handler;
mod ops;
mod records;

pub use records::{Artifact, ArtifactStatus, Change, DecisionRecord, Lease};

/// Whether project `id` exists (for another pattern naming it).
pub(crate) async fn read_project_exists(
    kernel: &crate::runtime::Kernel,
    id: &str,
) -> Result<(), BoardError> {
    ops::read_project(kernel, id).await.map(|_| ())
}

/// What appending `spec` to `project`'s log by `by` commits, and the
/// decision's id (for another pattern: a meeting's decision).
pub(crate) async fn decision_effects(
    kernel: &crate::runtime::Kernel,
    by: &crate::name::Name,
    project: &str,
    spec: DecisionSpec,
) -> Result<(crate::runtime::Effects, String), BoardError> {
    ops::decide(kernel, by, project, spec).await
}

/// The channel of each role that ready notices come on:
/// `<org>.agent.<role>.board.<from>` (the broker grants every role's
/// publish to it, as itself).
pub const CHANNEL: &str = "board";

/// The blackboard pattern, as registered with the kernel: the handler of
/// every role's ready notices. `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Blackboard;

impl Pattern for Blackboard {
    fn name(&self) -> &'static str {
        "blackboard"
    }

    fn register(&self, registry: &mut Registry) {
        registry.handler(handler::BoardHandler);
    }
}

/// The blackboard's call into a role's code.
///
/// Implemented for every `Agent` by the agent layer (implement `Agent`).
#[async_trait]
pub trait BoardCallbacks: Send + Sync + 'static {
    /// An artifact this role owns became ready: every blocker is complete.
    async fn on_artifact_ready(&self, cx: &Context, ready: ReadyArtifact)
        -> Result<(), AgentError>;

    /// An artifact this role owns was sent to rework (moved to `rework` in
    /// this call): a blocker changed after it started.
    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError>;
}

/// An artifact sent to rework, as its owner hears of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReworkArtifact {
    /// The project.
    pub project: String,
    /// The artifact, owned by the role told, now `rework`.
    pub artifact: String,
    /// The blocker that changed after it started, as it is now.
    pub changed: Artifact,
}

/// A claim on an artifact, held by one replica of its owner until it runs
/// out ([`Context::claim_artifact`](crate::runtime::Context::claim_artifact)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArtifactClaim {
    /// The project.
    pub project: String,
    /// The artifact claimed.
    pub artifact: String,
    /// Who holds it: the delivery (message id) that claimed it.
    pub holder: String,
    /// The process that claimed it.
    pub process: String,
    /// When it runs out.
    pub until: chrono::DateTime<chrono::Utc>,
    /// The artifact's revision the claim made.
    pub revision: u64,
}

/// An artifact that became ready, as its owner hears of it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReadyArtifact {
    /// The project.
    pub project: String,
    /// The artifact, owned by the role told.
    pub artifact: String,
    /// Its blockers, as they are now (all complete).
    pub blockers: Vec<Artifact>,
}

/// A project to create: its id and artifacts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProjectSpec {
    /// Its id (a [`Name`](crate::Name): letters, digits, `-`, `_`).
    pub project_id: String,
    /// Its artifacts.
    pub artifacts: Vec<ArtifactSpec>,
}

impl ProjectSpec {
    /// Project `id`, so far with no artifacts.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            project_id: id.into(),
            artifacts: Vec::new(),
        }
    }

    /// Adds an artifact.
    pub fn artifact(mut self, artifact: ArtifactSpec) -> Self {
        self.artifacts.push(artifact);
        self
    }
}

/// An artifact to create: its name, owner and blockers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ArtifactSpec {
    /// Its name in the project.
    pub name: String,
    /// The role that owns it.
    pub owner: String,
    /// The artifacts of the project it waits for.
    pub blocked_by: Vec<String>,
}

impl ArtifactSpec {
    /// Artifact `name`, owned by `owner`, blocked by nothing.
    pub fn new(name: impl Into<String>, owner: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            owner: owner.into(),
            blocked_by: Vec::new(),
        }
    }

    /// Blocked by these artifacts of the project.
    pub fn blocked_by(mut self, blockers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.blocked_by = blockers.into_iter().map(Into::into).collect();
        self
    }
}

/// A change of an artifact: what to set (the rest stays).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ArtifactUpdate {
    /// The new status.
    pub status: Option<ArtifactStatus>,
    /// The new path.
    pub path: Option<String>,
    /// The new content.
    pub content: Option<Value>,
}

impl ArtifactUpdate {
    /// Sets the status.
    pub fn status(status: ArtifactStatus) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// Sets the content only.
    pub fn content(content: Value) -> Self {
        Self {
            content: Some(content),
            ..Self::default()
        }
    }

    /// Also sets the path.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Also sets the content.
    pub fn with_content(mut self, content: Value) -> Self {
        self.content = Some(content);
        self
    }
}

/// A decision to record.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DecisionSpec {
    /// What was decided.
    pub decision: String,
    /// Why.
    pub rationale: String,
    /// The artifacts of the project it concerns.
    pub artifacts: Vec<String>,
    /// The meeting that took it.
    pub meeting: Option<String>,
    /// The decision (by id) it replaces.
    pub supersedes: Option<String>,
}

impl DecisionSpec {
    /// A decision and its rationale.
    pub fn new(decision: impl Into<String>, rationale: impl Into<String>) -> Self {
        Self {
            decision: decision.into(),
            rationale: rationale.into(),
            artifacts: Vec::new(),
            meeting: None,
            supersedes: None,
        }
    }

    /// About these artifacts.
    pub fn artifacts(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.artifacts = names.into_iter().map(Into::into).collect();
        self
    }

    /// Taken by this meeting.
    pub fn meeting(mut self, id: impl Into<String>) -> Self {
        self.meeting = Some(id.into());
        self
    }

    /// Replacing this earlier decision (which stays in the log).
    pub fn supersedes(mut self, id: impl Into<String>) -> Self {
        self.supersedes = Some(id.into());
        self
    }
}

/// A project as read: its artifacts by name and its decision log, oldest
/// first.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Project {
    /// Its id.
    pub project_id: String,
    /// Its artifacts, by name.
    pub artifacts: BTreeMap<String, Artifact>,
    /// Its decisions, oldest first.
    pub decisions: Vec<DecisionRecord>,
}

impl Project {
    /// Whether every artifact is complete.
    pub fn is_complete(&self) -> bool {
        self.artifacts
            .values()
            .all(|a| a.status == ArtifactStatus::Complete)
    }

    /// The decisions no later one supersedes.
    pub fn current_decisions(&self) -> impl Iterator<Item = &DecisionRecord> + '_ {
        self.decisions.iter().filter(|d| {
            !self
                .decisions
                .iter()
                .any(|later| later.supersedes.as_deref() == Some(d.decision_id.as_str()))
        })
    }
}

/// A blackboard operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BoardError {
    /// Only an artifact's owner changes it.
    #[error("`{role}` may not change artifact `{artifact}`: only its owner `{owner}` does")]
    NotOwner {
        /// Who tried.
        role: String,
        /// The artifact.
        artifact: String,
        /// Its owner.
        owner: String,
    },
    /// A project with this id exists already.
    #[error("project `{project}` exists already")]
    ProjectExists {
        /// The id given.
        project: String,
    },
    /// No such project.
    #[error("no project `{project}`")]
    UnknownProject {
        /// The id given.
        project: String,
    },
    /// No such artifact in the project.
    #[error("project `{project}` has no artifact `{artifact}`")]
    UnknownArtifact {
        /// The project.
        project: String,
        /// The name given.
        artifact: String,
    },
    /// A blocker names no artifact of the project.
    #[error(
        "artifact `{artifact}` is blocked by `{blocker}`, which is not an artifact of the project"
    )]
    UnknownDependency {
        /// The blocked artifact.
        artifact: String,
        /// The unknown blocker.
        blocker: String,
    },
    /// Another replica holds a live claim on the artifact.
    #[error("artifact `{artifact}` is claimed by `{holder}` until {until}")]
    Claimed {
        /// The artifact.
        artifact: String,
        /// Who holds it.
        holder: String,
        /// When the claim runs out (it may be claimed then).
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The artifact cannot be claimed: it is not ready (a blocker is not
    /// complete) or is started without a claim that ran out.
    #[error("artifact `{artifact}` cannot be claimed: it is `{status}`{}", if waiting_on.is_empty() { String::new() } else { format!(", waiting on {}", waiting_on.join(", ")) })]
    NotReady {
        /// The artifact.
        artifact: String,
        /// Its status.
        status: ArtifactStatus,
        /// The blockers not complete.
        waiting_on: Vec<String>,
    },
    /// The artifact would start from blockers that changed since this call
    /// saw them (its ready notice, its claim): retryable — the call runs
    /// again on what is there now.
    #[error("artifact `{artifact}` started on `{blocker}` at revision {started_on}, which is at {now} now: do it again on what is there")]
    BlockerChanged {
        /// The artifact.
        artifact: String,
        /// The blocker that changed.
        blocker: String,
        /// Its revision the work started from.
        started_on: u64,
        /// Its revision now.
        now: u64,
    },
    /// The artifact was sent to rework: a call that did not start it again
    /// (claim it, or hear it is ready) may not complete it.
    #[error("artifact `{artifact}` was sent to rework: start it again (claim it, or move it to in_progress) before completing it")]
    Reworked {
        /// The artifact.
        artifact: String,
    },
    /// The blockers go round in a circle.
    #[error("the dependencies go round in a circle: {}", cycle.join(" → "))]
    Cycle {
        /// The artifacts of the circle, in order.
        cycle: Vec<String>,
    },
    /// Bad input (a name, a duplicate, an owner outside the chart, …).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl BoardError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable() || e.is_precondition_failure(),
            Self::BlockerChanged { .. } => true,
            _ => false,
        }
    }
}

agent_error_from!(BoardError);
