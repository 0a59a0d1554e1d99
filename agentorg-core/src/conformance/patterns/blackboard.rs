//! The blackboard: concurrent changes lose nothing, only owners change
//! artifacts, a completed blocker tells the owner of what became ready, bad
//! dependencies are refused, and the decision log is append-only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use serde_json::{json, Value};

use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::blackboard::{
    ArtifactSpec, ArtifactStatus, ArtifactUpdate, BoardError, DecisionSpec, ProjectSpec,
    ReadyArtifact, ReworkArtifact,
};
use crate::chart::{OrgChart, RoleSpec};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::runtime::{Org, Principal};
use crate::store::{Precondition, StateStore, StateStoreExt, Write};
use crate::transport::Transport;

use super::super::fail;
use super::suite_config;
use super::support::{delegate, eventually, start_with, wait_done};

/// How many workers (each owning an artifact) and updates per artifact.
const WORKERS: usize = 8;

/// founder → w1 … w8, backend, cso.
fn board_chart(b: &str, org: &Name) -> OrgChart {
    let mut chart = OrgChart::builder(org.as_str()).principal("founder");
    for i in 1..=WORKERS {
        chart = chart.role(RoleSpec::new(format!("w{i}")).reports_to("founder"));
    }
    chart
        .role(RoleSpec::new("backend").reports_to("founder"))
        .role(RoleSpec::new("cso").reports_to("founder"))
        .build()
        .unwrap_or_else(|e| fail(b, e))
}

/// Every role's agent: a task's input says what to do to which artifact
/// (`increment` its content's count, `complete` it, `touch` one it does not
/// own, `revise` its content, `claim` it for `lease_ms`); ready notices are
/// logged, and the artifact is then completed (`launch` is counted instead,
/// and left pending); rework notices are logged as `rework <artifact>`.
struct BoardAgent {
    ready: Arc<Mutex<Vec<(String, String)>>>,
    /// How many times each artifact's `increment` ran (a run again means
    /// its write conflicted).
    runs: Runs,
}

type Runs = Arc<Mutex<std::collections::BTreeMap<String, u32>>>;

#[async_trait]
impl Agent for BoardAgent {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let project = task.input["project"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let artifact = task.input["artifact"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match task.input["op"].as_str() {
            Some("increment") => {
                if let Ok(mut r) = self.runs.lock() {
                    *r.entry(artifact.clone()).or_default() += 1;
                }
                let revision = cx
                    .update_artifact_with(&project, &artifact, |a| {
                        let n = a
                            .content
                            .as_ref()
                            .and_then(|c| c["count"].as_u64())
                            .unwrap_or(0);
                        ArtifactUpdate::status(ArtifactStatus::InProgress)
                            .with_content(json!({ "count": n + 1 }))
                    })
                    .await?;
                Ok(Outcome::Complete(json!({ "revision": revision })))
            }
            Some("complete") => {
                let update =
                    ArtifactUpdate::status(ArtifactStatus::Complete).path(format!("/{artifact}"));
                cx.update_artifact(&project, &artifact, update).await?;
                Ok(Outcome::Complete(Value::Null))
            }
            Some("revise") => {
                let change = ArtifactUpdate::content(json!({ "revised": true }));
                let revision = cx.update_artifact(&project, &artifact, change).await?;
                Ok(Outcome::Complete(json!({ "revision": revision })))
            }
            Some("claim") => {
                let lease =
                    Duration::from_millis(task.input["lease_ms"].as_u64().unwrap_or(60_000));
                let mut claimed = cx.claim_artifact(&project, &artifact, lease).await;
                if let (Ok(first), Some(true)) = (&claimed, task.input["renew"].as_bool()) {
                    // The same delivery claims it again, and renews it.
                    let again = cx.claim_artifact(&project, &artifact, lease).await?;
                    let renewed = cx.renew_claim(&project, &artifact, lease).await?;
                    if again.holder != first.holder || renewed.revision != first.revision + 2 {
                        return Err(AgentError::permanent(format!("{again:?} {renewed:?}")));
                    }
                    claimed = Ok(renewed);
                }
                Ok(Outcome::Complete(match claimed {
                    Ok(claim) => json!({ "claimed": claim.holder }),
                    Err(BoardError::Claimed { holder, .. }) => json!({ "held_by": holder }),
                    Err(e) => json!({ "refused": e.to_string() }),
                }))
            }
            Some("touch") => {
                let refused = cx
                    .update_artifact(
                        &project,
                        &artifact,
                        ArtifactUpdate::status(ArtifactStatus::Complete),
                    )
                    .await;
                Ok(Outcome::Complete(json!(match refused {
                    Err(BoardError::NotOwner { owner, .. }) => format!("refused: owned by {owner}"),
                    other => format!("{other:?}"),
                })))
            }
            _ => Err(AgentError::permanent("no such op")),
        }
    }

    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        if let Ok(mut v) = self.ready.lock() {
            v.push((cx.role().to_string(), ready.artifact.clone()));
        }
        if ready.artifact == "slow_review" {
            return slow_review(cx, &ready).await;
        }
        if ready.artifact == "launch" {
            // Counted once, exactly (staged with the notice's handling),
            // and left pending: only the notice's marker keeps it once.
            let key = cx.collection("heard")?.doc("launch")?;
            let (n, pre) = match cx.store().get(&key).await? {
                Some(d) => (
                    d.value["count"].as_u64().unwrap_or(0),
                    Precondition::Version(d.version),
                ),
                None => (0, Precondition::MustNotExist),
            };
            cx.stage(Write::put(key, json!({ "count": n + 1 }), pre))?;
            return Ok(());
        }
        let done = ArtifactUpdate::status(ArtifactStatus::Complete);
        cx.update_artifact(&ready.project, &ready.artifact, done)
            .await?;
        Ok(())
    }

    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        if let Ok(mut v) = self.ready.lock() {
            v.push((cx.role().to_string(), format!("rework {}", rework.artifact)));
        }
        Ok(())
    }
}

/// Works on `slow_review` from the blocker revision it was told of until
/// the test opens the gate (`roles/<role>/gate/open`), then claims it and
/// completes it, keeping that revision in its content.
async fn slow_review(cx: &Context, ready: &ReadyArtifact) -> Result<(), AgentError> {
    let seen = ready.blockers.first().map_or(0, |b| b.revision);
    let gate = cx.collection("gate")?.doc("open")?;
    let deadline = tokio::time::Instant::now() + super::super::EVENTUALLY;
    while cx.store().get(&gate).await?.is_none() {
        if tokio::time::Instant::now() > deadline {
            return Err(AgentError::permanent("the gate never opened"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Claimed only now, after the blocker may have changed: the claim must
    // not start it on what this call did not see.
    cx.claim_artifact(&ready.project, &ready.artifact, Duration::from_secs(60))
        .await?;
    let done =
        ArtifactUpdate::status(ArtifactStatus::Complete).with_content(json!({ "seen": seen }));
    cx.update_artifact(&ready.project, &ready.artifact, done)
        .await?;
    Ok(())
}

async fn board_org(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    ready: &Arc<Mutex<Vec<(String, String)>>>,
    runs: &Runs,
) -> Org {
    let mut roles: Vec<String> = (1..=WORKERS).map(|i| format!("w{i}")).collect();
    roles.extend(["backend".to_owned(), "cso".to_owned()]);
    let agents = roles
        .iter()
        .map(|r| {
            let agent: Arc<dyn Agent> = Arc::new(BoardAgent {
                ready: Arc::clone(ready),
                runs: Arc::clone(runs),
            });
            (r.as_str(), agent, WORKERS)
        })
        .collect();
    start_with(b, t, s, board_chart(b, org), suite_config(), agents).await
}

async fn task(b: &str, p: &Principal, to: &str, input: Value) -> Value {
    let h = delegate(b, p, to, TaskSpec::new("board work").input(input)).await;
    let done = wait_done(b, &h).await;
    if done.status != TaskStatus::Completed {
        fail(b, format!("task to {to}: {done:?}"));
    }
    done.result.unwrap_or(Value::Null)
}

/// Eight owners changing their own artifacts of one project at once, and
/// eight handlers of one owner changing the same artifact at once: every
/// change counted, none lost, each in the artifact's history.
pub async fn concurrent_artifact_updates_lose_nothing(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "concurrent_artifact_updates_lose_nothing";
    let (ready, runs) = (Arc::default(), Arc::default());
    let o = board_org(B, &t, &s, &org, &ready, &runs).await;
    let p = o.principal();
    let mut spec = ProjectSpec::new("p1").artifact(ArtifactSpec::new("shared", "w1"));
    for i in 1..=WORKERS {
        spec = spec.artifact(ArtifactSpec::new(format!("a{i}"), format!("w{i}")));
    }
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    // Each worker's own artifact once, and the shared one by w1 WORKERS
    // times, all at once.
    let jobs = (1..=WORKERS)
        .map(|i| (format!("w{i}"), format!("a{i}")))
        .chain((0..WORKERS).map(|_| ("w1".to_owned(), "shared".to_owned())));
    join_all(jobs.map(|(to, artifact)| {
        let p = &p;
        async move {
            let input = json!({ "project": "p1", "artifact": artifact, "op": "increment" });
            task(B, p, &to, input).await
        }
    }))
    .await;
    let project = p.project("p1").await.unwrap_or_else(|e| fail(B, e));
    // Different artifacts never conflict: each worker's change ran once.
    let runs = runs.lock().map(|r| r.clone()).unwrap_or_default();
    for i in 1..=WORKERS {
        if runs.get(&format!("a{i}")) != Some(&1) {
            fail(
                B,
                format!("a change of its own artifact ran again (a conflict): {runs:?}"),
            );
        }
    }
    for (name, want) in (1..=WORKERS)
        .map(|i| (format!("a{i}"), 1))
        .chain(std::iter::once(("shared".to_owned(), WORKERS as u64)))
    {
        let Some(a) = project.artifacts.get(&name) else {
            fail(B, format!("no artifact `{name}`"));
        };
        let count = a.content.as_ref().and_then(|c| c["count"].as_u64());
        if count != Some(want) || a.revision != want {
            fail(
                B,
                format!(
                    "`{name}`: count {count:?}, revision {}, want {want}",
                    a.revision
                ),
            );
        }
        let history = p
            .artifact_history("p1", &name)
            .await
            .unwrap_or_else(|e| fail(B, e));
        let revisions: Vec<u64> = history.iter().map(|c| c.revision).collect();
        if revisions != (1..=want).collect::<Vec<_>>() {
            fail(B, format!("`{name}`'s history: {revisions:?}"));
        }
    }
    o.shutdown().await;
}

/// A role that does not own an artifact is refused, naming the owner, and
/// nothing is written.
pub async fn non_owner_update_refused(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "non_owner_update_refused";
    let ready = Arc::default();
    let o = board_org(B, &t, &s, &org, &ready, &Arc::default()).await;
    let p = o.principal();
    let spec = ProjectSpec::new("p2").artifact(ArtifactSpec::new("api_spec", "backend"));
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    let said = task(
        B,
        &p,
        "cso",
        json!({ "project": "p2", "artifact": "api_spec", "op": "touch" }),
    )
    .await;
    if said != json!("refused: owned by backend") {
        fail(B, format!("the cso's change of backend's artifact: {said}"));
    }
    let project = p.project("p2").await.unwrap_or_else(|e| fail(B, e));
    let Some(api) = project.artifacts.get("api_spec") else {
        fail(B, "no api_spec");
    };
    if api.revision != 0 || api.status != ArtifactStatus::Pending {
        fail(B, format!("written anyway: {api:?}"));
    }
    o.shutdown().await;
}

/// Completing api_spec tells the CSO (nobody messages it) that
/// security_review is ready, and the CSO completes it; an artifact with two
/// blockers completed at once is told once (what its owner stages with the
/// notice is committed once). `ready` lists what is ready.
pub async fn completing_a_blocker_notifies_the_owner(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "completing_a_blocker_notifies_the_owner";
    let ready = Arc::default();
    let o = board_org(B, &t, &s, &org, &ready, &Arc::default()).await;
    let p = o.principal();
    let spec = ProjectSpec::new("p3")
        .artifact(ArtifactSpec::new("api_spec", "backend"))
        .artifact(ArtifactSpec::new("ui", "w1"))
        .artifact(ArtifactSpec::new("security_review", "cso").blocked_by(["api_spec"]))
        .artifact(ArtifactSpec::new("launch", "w2").blocked_by(["api_spec", "ui"]));
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    let listed = p.ready_artifacts("p3").await.unwrap_or_else(|e| fail(B, e));
    let names = |role: &str| listed.get(role).cloned().unwrap_or_default();
    if names("backend") != ["api_spec"] || names("w1") != ["ui"] || listed.len() != 2 {
        fail(B, format!("ready at the start: {listed:?}"));
    }
    let complete = |to: &'static str, artifact: &'static str| {
        let p = &p;
        async move {
            task(
                B,
                p,
                to,
                json!({ "project": "p3", "artifact": artifact, "op": "complete" }),
            )
            .await
        }
    };
    join_all([complete("backend", "api_spec"), complete("w1", "ui")]).await;
    // The review completes; launch is counted once, however the two
    // notices raced (its counter is staged with the notice's handling).
    let heard_once = crate::store::CollectionPath::new(format!("agentorg/{org}/roles/w2/heard"))
        .and_then(|c| c.doc("launch"))
        .unwrap_or_else(|e| fail(B, e));
    eventually(
        B,
        "the review complete, launch counted, w2's notices all handled",
        || async {
            let reviewed = p.project("p3").await.is_ok_and(|p| {
                p.artifacts.get("security_review").map(|a| a.status)
                    == Some(ArtifactStatus::Complete)
            });
            let counted = s.get(&heard_once).await.ok().flatten().is_some();
            let w2_idle = o
                .health_now()
                .await
                .iter()
                .filter(|h| h.role == "w2")
                .all(|h| h.lag("blackboard") == Some(0));
            reviewed && counted && w2_idle
        },
    )
    .await;
    let counted = s
        .get(&heard_once)
        .await
        .ok()
        .flatten()
        .map(|d| d.value["count"].clone());
    if counted != Some(json!(1)) {
        fail(B, format!("launch was told {counted:?} times, not once"));
    }
    let mut heard = ready.lock().map(|v| v.clone()).unwrap_or_default();
    heard.sort();
    heard.dedup();
    let want =
        [("cso", "security_review"), ("w2", "launch")].map(|(r, a)| (r.to_owned(), a.to_owned()));
    if heard != want {
        fail(B, format!("ready notices: {heard:?}"));
    }
    let history = p
        .artifact_history("p3", "security_review")
        .await
        .unwrap_or_else(|e| fail(B, e));
    if history.len() != 1 || history[0].by != "cso" || history[0].to != ArtifactStatus::Complete {
        fail(
            B,
            format!("security_review completed once by the cso: {history:?}"),
        );
    }
    let json = p
        .project("p3")
        .await
        .unwrap_or_else(|e| fail(B, e))
        .to_json();
    if json["status"] != "in_progress"
        || json["artifacts"]["launch"]["path"] != Value::Null
        || json["artifacts"]["security_review"]["blocked_by"] != "api_spec"
        || json["artifacts"]["launch"]["blocked_by"] != json!(["api_spec", "ui"])
        || json["artifacts"]["api_spec"]["blocked_by"] != Value::Null
    {
        fail(B, format!("the project document: {json:#}"));
    }
    o.shutdown().await;
}

/// A blocker that names no artifact, and dependencies in a circle, are
/// refused when the project is created; nothing is created.
pub async fn bad_dependencies_refused(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "bad_dependencies_refused";
    let ready = Arc::default();
    let o = board_org(B, &t, &s, &org, &ready, &Arc::default()).await;
    let p = o.principal();
    let unknown = ProjectSpec::new("p4")
        .artifact(ArtifactSpec::new("security_review", "cso").blocked_by(["api_sepc"]));
    match p.create_project(&unknown).await {
        Err(BoardError::UnknownDependency { blocker, .. }) if blocker == "api_sepc" => {}
        other => fail(B, format!("an unknown blocker: {other:?}")),
    }
    let cycle = ProjectSpec::new("p4")
        .artifact(ArtifactSpec::new("a", "w1").blocked_by(["c"]))
        .artifact(ArtifactSpec::new("b", "w2").blocked_by(["a"]))
        .artifact(ArtifactSpec::new("c", "w3").blocked_by(["b"]));
    match p.create_project(&cycle).await {
        Err(BoardError::Cycle { cycle }) if cycle.len() == 3 => {}
        other => fail(B, format!("a cycle: {other:?}")),
    }
    match p.project("p4").await {
        Err(BoardError::UnknownProject { .. }) => {}
        other => fail(B, format!("a refused project exists: {other:?}")),
    }
    o.shutdown().await;
}

/// A decision superseded by a later one: both stay in the log, in order,
/// and only the later one is current.
pub async fn decision_superseded_log_intact(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "decision_superseded_log_intact";
    let ready = Arc::default();
    let o = board_org(B, &t, &s, &org, &ready, &Arc::default()).await;
    let p = o.principal();
    let spec = ProjectSpec::new("p5").artifact(ArtifactSpec::new("api_spec", "backend"));
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    let first = p
        .record_decision(
            "p5",
            DecisionSpec::new("Use BigQuery", "Managed").artifacts(["api_spec"]),
        )
        .await
        .unwrap_or_else(|e| fail(B, e));
    let second = p
        .record_decision(
            "p5",
            DecisionSpec::new("Use ClickHouse, not BigQuery", "Lower latency").supersedes(&first),
        )
        .await
        .unwrap_or_else(|e| fail(B, e));
    match p
        .record_decision("p5", DecisionSpec::new("x", "y").supersedes("d-nope"))
        .await
    {
        Err(BoardError::InvalidInput { .. }) => {}
        other => fail(B, format!("superseding an unknown decision: {other:?}")),
    }
    let project = p.project("p5").await.unwrap_or_else(|e| fail(B, e));
    let ids: Vec<&str> = project
        .decisions
        .iter()
        .map(|d| d.decision_id.as_str())
        .collect();
    let current: Vec<&str> = project
        .current_decisions()
        .map(|d| d.decision_id.as_str())
        .collect();
    if ids != [first.as_str(), second.as_str()] || current != [second.as_str()] {
        fail(B, format!("the log {ids:?}, current {current:?}"));
    }
    if project.decisions[0].decision != "Use BigQuery" || project.decisions[1].agent != "founder" {
        fail(B, format!("the log's entries: {:?}", project.decisions));
    }
    o.shutdown().await;
}

/// An artifact changed after its dependents started sends them to rework:
/// the complete security review goes to `rework` by its owner (told once)
/// and, its blocker complete, is ready again and redone; a dependent not
/// started stays as it is; a dependent whose ready call was still working
/// on the old revision when the blocker changed does not complete on it
/// (refused, run again on the new one).
pub async fn rework_marking(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "rework_marking";
    let heard = Arc::default();
    let o = board_org(B, &t, &s, &org, &heard, &Arc::default()).await;
    let p = o.principal();
    let spec = ProjectSpec::new("p6")
        .artifact(ArtifactSpec::new("api_spec", "backend"))
        .artifact(ArtifactSpec::new("security_review", "cso").blocked_by(["api_spec"]))
        .artifact(ArtifactSpec::new("launch", "w2").blocked_by(["api_spec"]))
        .artifact(ArtifactSpec::new("slow_review", "w1").blocked_by(["api_spec"]));
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    let input = |op: &str| json!({ "project": "p6", "artifact": "api_spec", "op": op });
    task(B, &p, "backend", input("complete")).await;
    let artifact = |name: &'static str| {
        let p = &p;
        async move {
            p.project("p6")
                .await
                .ok()
                .and_then(|p| p.artifacts.get(name).cloned())
        }
    };
    let told = |what: &'static str| {
        let heard = &heard;
        move || {
            heard
                .lock()
                .map(|v| v.iter().filter(|(_, a)| a == what).count())
                .unwrap_or(0)
        }
    };
    eventually(B, "the review complete, slow_review started", || async {
        let review = artifact("security_review").await.map(|a| a.status);
        review == Some(ArtifactStatus::Complete) && told("slow_review")() == 1
    })
    .await;
    // The spec changes after the review was done on it, and while
    // slow_review is worked on from its first revision.
    task(B, &p, "backend", input("revise")).await;
    eventually(B, "the review reworked and redone", || async {
        let history = p.artifact_history("p6", "security_review").await;
        history.is_ok_and(|h| h.len() == 3)
    })
    .await;
    let gate = crate::store::CollectionPath::new(format!("agentorg/{org}/roles/w1/gate"))
        .and_then(|c| c.doc("open"))
        .unwrap_or_else(|e| fail(B, e));
    s.put(&gate, json!({}), Precondition::MustNotExist)
        .await
        .unwrap_or_else(|e| fail(B, e));
    eventually(B, "slow_review complete", || async {
        artifact("slow_review").await.map(|a| a.status) == Some(ArtifactStatus::Complete)
    })
    .await;
    eventually(B, "the notices all handled", || async {
        o.health_now()
            .await
            .iter()
            .filter(|h| ["cso", "w1", "w2"].contains(&h.role.as_str()))
            .all(|h| h.lag("blackboard") == Some(0))
    })
    .await;
    let history = p
        .artifact_history("p6", "security_review")
        .await
        .unwrap_or_else(|e| fail(B, e));
    let moves: Vec<_> = history
        .iter()
        .map(|c| (c.by.as_str(), c.from, c.to))
        .collect();
    let want = [
        ("cso", ArtifactStatus::Pending, ArtifactStatus::Complete),
        ("cso", ArtifactStatus::Complete, ArtifactStatus::Rework),
        ("cso", ArtifactStatus::Rework, ArtifactStatus::Complete),
    ];
    if moves != want {
        fail(B, format!("the review's history: {moves:?}"));
    }
    let review = artifact("security_review").await;
    if review.as_ref().and_then(|a| a.basis.get("api_spec")) != Some(&2) {
        fail(
            B,
            format!("the review redone on api_spec's revision 2: {review:?}"),
        );
    }
    if told("rework security_review")() != 1 || told("security_review")() < 2 {
        fail(
            B,
            format!(
                "what the owners were told: {:?}",
                heard.lock().map(|v| v.clone())
            ),
        );
    }
    if told("rework launch")() + told("rework slow_review")() != 0 {
        fail(B, "an artifact not started was sent to rework");
    }
    if artifact("launch").await.map(|a| a.status) != Some(ArtifactStatus::Pending) {
        fail(B, "launch, never started, was changed");
    }
    let slow = artifact("slow_review").await;
    let seen = slow
        .as_ref()
        .and_then(|a| a.content.as_ref())
        .map(|c| c["seen"].clone());
    if seen != Some(json!(2)) || slow.as_ref().and_then(|a| a.basis.get("api_spec")) != Some(&2) {
        fail(
            B,
            format!("slow_review completed on api_spec's revision 1: {slow:?}"),
        );
    }
    o.shutdown().await;
}

/// Two replicas of a role (two processes) claim one artifact at once:
/// exactly one gets it, the others are told who holds it; a blocked one is
/// refused; a lease that ran out frees it (not before), and completing it
/// ends the claim.
pub async fn two_replicas_claim_one_artifact(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "two_replicas_claim_one_artifact";
    let heard = Arc::default();
    let first = board_org(B, &t, &s, &org, &heard, &Arc::default()).await;
    let second = board_org(B, &t, &s, &org, &heard, &Arc::default()).await;
    let p = first.principal();
    let spec = ProjectSpec::new("p7")
        .artifact(ArtifactSpec::new("api_spec", "backend"))
        .artifact(ArtifactSpec::new("ui", "w1"))
        .artifact(ArtifactSpec::new("later", "w1").blocked_by(["ui"]));
    p.create_project(&spec).await.unwrap_or_else(|e| fail(B, e));
    let claim = |artifact: &'static str, to: &'static str, lease_ms: u64| {
        let p = &p;
        async move {
            let input = json!({ "project": "p7", "artifact": artifact, "op": "claim", "lease_ms": lease_ms });
            task(B, p, to, input).await
        }
    };
    let said = join_all((0..WORKERS).map(|_| claim("api_spec", "backend", 60_000))).await;
    let winners: Vec<&Value> = said.iter().filter(|v| v.get("claimed").is_some()).collect();
    let Some(winner) = winners.first().and_then(|v| v["claimed"].as_str()) else {
        fail(B, format!("nobody got the claim: {said:?}"));
    };
    let told_holder = said
        .iter()
        .filter(|v| v.get("held_by").and_then(Value::as_str) == Some(winner))
        .count();
    if winners.len() != 1 || told_holder != WORKERS - 1 {
        fail(B, format!("one claim, the rest told its holder: {said:?}"));
    }
    // Not ready: a blocker is not complete.
    let blocked = claim("later", "w1", 60_000).await;
    if !blocked["refused"]
        .as_str()
        .is_some_and(|r| r.contains("waiting on ui"))
    {
        fail(B, format!("claiming a blocked artifact: {blocked}"));
    }
    // A short lease (its delivery claims again and renews it: still its
    // holder): held until it runs out, then free (not before).
    const LEASE: Duration = Duration::from_millis(400);
    let started = tokio::time::Instant::now();
    let input = json!({ "project": "p7", "artifact": "ui", "op": "claim", "lease_ms": LEASE.as_millis() as u64, "renew": true });
    let held = task(B, &p, "w1", input).await;
    let Some(holder) = held["claimed"].as_str().map(str::to_owned) else {
        fail(B, format!("the first claim of ui: {held}"));
    };
    let again = loop {
        let v = claim("ui", "w1", 60_000).await;
        if v.get("claimed").is_some() {
            break v;
        }
        if v["held_by"].as_str() != Some(holder.as_str()) {
            fail(B, format!("a claim of ui while it is held: {v}"));
        }
        if started.elapsed() > super::super::EVENTUALLY {
            fail(B, "the lapsed lease never freed ui");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if started.elapsed() < LEASE || again["claimed"].as_str() == Some(holder.as_str()) {
        fail(
            B,
            format!("ui claimed again after {:?}: {again}", started.elapsed()),
        );
    }
    // Completing the claimed artifact ends the claim.
    task(
        B,
        &p,
        "backend",
        json!({ "project": "p7", "artifact": "api_spec", "op": "complete" }),
    )
    .await;
    let project = p.project("p7").await.unwrap_or_else(|e| fail(B, e));
    let api = project.artifacts.get("api_spec");
    if api.map(|a| (a.status, a.claim.is_none())) != Some((ArtifactStatus::Complete, true)) {
        fail(B, format!("api_spec after completing: {api:?}"));
    }
    let history = p
        .artifact_history("p7", "api_spec")
        .await
        .unwrap_or_else(|e| fail(B, e));
    if history.len() != 2 {
        fail(B, format!("one claim and one completion: {history:?}"));
    }
    first.shutdown().await;
    second.shutdown().await;
}
