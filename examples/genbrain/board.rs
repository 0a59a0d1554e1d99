//! The analytics-dashboard blackboard (`--blackboard`): the founder creates
//! the project of GenBrain's write-up — api_spec (Backend), ui_components
//! (Frontend), security_review (CSO, blocked by api_spec), deployment_config
//! (DevOps) — and asks the CEO, who hands it to the CTO, to run it. The CTO records its ClickHouse
//! decision and gives each of its engineers their artifact; each claims it,
//! works and completes it. Nobody messages the CSO: its review starts
//! because api_spec completed (`Agent::on_artifact_ready`). The founder
//! prints the project document once every artifact is complete.

use std::time::Duration;

use agentorg::blackboard::{
    ArtifactSpec, ArtifactStatus, ArtifactUpdate, DecisionSpec, ProjectSpec, ReadyArtifact,
};
use agentorg::prelude::*;
use serde_json::{json, Value};

/// The project's id in GenBrain's document (the first free one of
/// `proj-analytics-dashboard`, `…-2`, … is used).
const PROJECT: &str = "proj-analytics-dashboard";

/// Each artifact: its name, owner, where it ends up, and what it waits for.
const ARTIFACTS: [(&str, &str, &str, Option<&str>); 4] = [
    ("api_spec", "backend", "/specs/analytics-v2.yaml", None),
    (
        "ui_components",
        "frontend",
        "/src/components/analytics/",
        None,
    ),
    (
        "security_review",
        "cso",
        "/security/analytics-v2-review.md",
        Some("api_spec"),
    ),
    (
        "deployment_config",
        "devops",
        "/deploy/analytics-dashboard.yaml",
        None,
    ),
];

/// How long an engineer's claim on its artifact lasts before another
/// replica may take it over.
const LEASE: Duration = Duration::from_secs(30);

fn path_of(artifact: &str) -> &'static str {
    ARTIFACTS
        .iter()
        .find(|a| a.0 == artifact)
        .map_or("/", |a| a.2)
}

/// Whether `task` is a piece of the blackboard's work (its input names the
/// project).
pub(crate) fn is_board_task(task: &Task) -> bool {
    task.input.get("project").is_some()
}

/// The CEO's part: the project is technical work, the CTO's.
pub(crate) async fn ceo_hands_over(cx: &Context, task: &Task) -> Result<Outcome, AgentError> {
    let spec = TaskSpec::new(task.title.clone()).input(task.input.clone());
    cx.delegate("cto", spec).await?;
    Ok(Outcome::AwaitSubtasks)
}

/// The CTO's part: records the storage decision on the project and gives
/// each engineer its artifact (the CSO is not its report, and needs no
/// message).
pub(crate) async fn cto_plans(cx: &Context, task: &Task) -> Result<Outcome, AgentError> {
    let project = task.input["project"].as_str().unwrap_or(PROJECT);
    let decision = DecisionSpec::new(
        "Use ClickHouse for analytics storage, not BigQuery",
        "Lower latency for real-time dashboard queries, already deployed in our GKE cluster",
    )
    .artifacts(["api_spec"]);
    cx.record_decision(project, decision).await?;
    for (artifact, owner, _, _) in ARTIFACTS.iter().filter(|a| a.1 != "cso") {
        let spec = TaskSpec::new(format!("Write {artifact} of {project}"))
            .input(json!({ "project": project, "artifact": artifact }));
        cx.delegate(owner, spec).await?;
    }
    Ok(Outcome::AwaitSubtasks)
}

/// An engineer's part: claims its artifact (one replica works on it),
/// works, and completes it at its path.
pub(crate) async fn engineer_works(
    cx: &Context,
    task: &Task,
    work: Duration,
) -> Result<Value, AgentError> {
    let project = task.input["project"].as_str().unwrap_or(PROJECT);
    let artifact = task.input["artifact"].as_str().unwrap_or_default();
    cx.claim_artifact(project, artifact, LEASE).await?;
    tokio::time::sleep(work).await;
    let path = path_of(artifact);
    let done = ArtifactUpdate::status(ArtifactStatus::Complete).path(path);
    cx.update_artifact(project, artifact, done).await?;
    eprintln!("genbrain: {} completed {artifact} at {path}", cx.role());
    Ok(json!({ "artifact": artifact, "path": path }))
}

/// The CSO's review starts because its blocker completed.
pub(crate) async fn review_when_ready(
    cx: &Context,
    ready: &ReadyArtifact,
    work: Duration,
) -> Result<(), AgentError> {
    let blockers: Vec<String> = ready
        .blockers
        .iter()
        .map(|b| format!("{} ({})", b.name, b.path.as_deref().unwrap_or("?")))
        .collect();
    eprintln!(
        "genbrain: {} starts {} of {}: {} complete, nobody asked",
        cx.role(),
        ready.artifact,
        ready.project,
        blockers.join(", ")
    );
    tokio::time::sleep(work).await;
    let done = ArtifactUpdate::status(ArtifactStatus::Complete).path(path_of(&ready.artifact));
    cx.update_artifact(&ready.project, &ready.artifact, done)
        .await?;
    Ok(())
}

/// The founder's part: creates the project, delegates it to the CTO, waits
/// for every artifact to be complete, prints the project document, and
/// checks it. `Ok(true)` iff every artifact completed, the CSO completed its
/// review with no task of its own, and the decision is in the log.
pub(crate) async fn drive(org: &Org, timeout: Duration) -> anyhow::Result<bool> {
    let founder = org.principal();
    let existing = founder.projects().await?;
    let id = (1..)
        .map(|n| match n {
            1 => PROJECT.to_owned(),
            n => format!("{PROJECT}-{n}"),
        })
        .find(|id| !existing.contains(id))
        .unwrap_or_else(|| PROJECT.to_owned());
    let mut spec = ProjectSpec::new(&id);
    for (name, owner, _, blocker) in ARTIFACTS {
        spec = spec.artifact(ArtifactSpec::new(name, owner).blocked_by(blocker));
    }
    founder.create_project(&spec).await?;
    eprintln!("genbrain: founder created project {id}");
    let task = founder
        .delegate(
            "ceo",
            TaskSpec::new("Run the analytics dashboard project").input(json!({ "project": id })),
        )
        .await?;
    task.wait(timeout).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let project = loop {
        let project = founder.project(&id).await?;
        if project.is_complete() || tokio::time::Instant::now() >= deadline {
            break project;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("{}", serde_json::to_string_pretty(&project.to_json())?);
    let review = founder.artifact_history(&id, "security_review").await?;
    let by_cso = review
        .last()
        .is_some_and(|c| c.by == "cso" && c.to == ArtifactStatus::Complete);
    let tree = founder.task_tree(&task.task_id).await?;
    let cso_tasked = tree.iter().any(|t| t.assigned_to == "cso");
    let decided = project
        .current_decisions()
        .any(|d| d.agent == "cto" && d.decision.contains("ClickHouse"));
    let ok = project.is_complete() && by_cso && !cso_tasked && decided;
    eprintln!(
        "genbrain: project {id} {} ({} artifacts, {} decision(s)); the CSO's review {}",
        if ok { "complete" } else { "NOT complete" },
        project.artifacts.len(),
        project.decisions.len(),
        if by_cso && !cso_tasked {
            "started on api_spec's completion, with no message"
        } else {
            "did not start on its own"
        }
    );
    Ok(ok)
}
