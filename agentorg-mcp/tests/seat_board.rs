//! The blackboard through a seat: the CSO's seat hears that its review is
//! ready (an `artifact_ready` turn) because Backend — a Rust agent —
//! completed api_spec; it reads the project, is refused when it touches
//! Backend's artifact (the rule named), completes its own, and ends the
//! turn. A change of the spec afterwards comes as an `artifact_rework`
//! notice, the review is `rework` once the notice is acknowledged, and
//! then ready again, redone on the new spec. In a task turn a seat claims and
//! records decisions. Memory backends, in-process pipes.

use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use agentorg_core::async_trait;
use agentorg_core::blackboard::{ArtifactSpec, ArtifactStatus, ArtifactUpdate, ProjectSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::runtime::Org;
use agentorg_mcp::seat::Seat;
use serde_json::json;

mod seat_support;
use seat_support::{client_of, next_event, ok, refused, test_seat, TestResult, DEADLINE};

/// founder → backend, cso, cto.
fn chart() -> OrgChart {
    let built = OrgChart::builder("seatboard")
        .principal("founder")
        .role(RoleSpec::new("backend").reports_to("founder"))
        .role(RoleSpec::new("cso").reports_to("founder"))
        .role(RoleSpec::new("cto").reports_to("founder"))
        .build();
    match built {
        Ok(c) => c,
        Err(e) => panic!("chart: {e}"),
    }
}

/// Backend: a task's input says what to do to api_spec (`complete` it,
/// or `revise` its content).
struct Backend;

#[async_trait]
impl Agent for Backend {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let change = match task.input.as_str() {
            Some("complete") => ArtifactUpdate::status(ArtifactStatus::Complete),
            _ => ArtifactUpdate::content(json!({ "revised": true })),
        };
        cx.update_artifact("dash", "api_spec", change).await?;
        Ok(Outcome::Complete(json!(null)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_hears_its_artifact_is_ready_and_completes_it() -> TestResult {
    let (cso, cto): (Seat, Seat) = (test_seat(chart(), "cso"), test_seat(chart(), "cto"));
    let org = Org::builder(chart())
        .agent("backend", Backend)
        .agent("cso", cso.agent())
        .agent("cto", cto.agent())
        .start()
        .await?;
    let (client, _server) = client_of(&cso).await;
    let founder = org.principal();
    founder
        .create_project(
            &ProjectSpec::new("dash")
                .artifact(ArtifactSpec::new("api_spec", "backend"))
                .artifact(ArtifactSpec::new("security_review", "cso").blocked_by(["api_spec"])),
        )
        .await?;
    founder
        .delegate(
            "backend",
            TaskSpec::new("complete").input(json!("complete")),
        )
        .await?
        .wait(DEADLINE)
        .await?;

    let ready = next_event(&client).await;
    assert_eq!(ready["event"], "artifact_ready", "{ready}");
    assert_eq!(ready["artifact"], "security_review");
    assert_eq!(ready["blockers"][0]["name"], "api_spec", "{ready}");
    assert_eq!(ready["blockers"][0]["status"], "complete", "{ready}");
    let project = ok(&client, "read_project", json!({"project_id": "dash"})).await;
    assert_eq!(project["artifacts"]["api_spec"]["status"], "complete");
    assert_eq!(
        project["ready"]["cso"],
        json!(["security_review"]),
        "{project}"
    );
    let (kind, message) = refused(
        &client,
        "update_artifact",
        json!({"project_id": "dash", "artifact": "api_spec", "status": "rework"}),
    )
    .await;
    assert_eq!(kind, "not_allowed");
    assert!(message.contains("only its owner `backend`"), "{message}");
    let (kind, _) = refused(
        &client,
        "update_artifact",
        json!({"project_id": "dash", "artifact": "security_review"}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    ok(
        &client,
        "update_artifact",
        json!({"project_id": "dash", "artifact": "security_review", "status": "complete", "path": "/security/review.md"}),
    )
    .await;
    // A ready artifact's turn is no task turn.
    let (kind, _) = refused(&client, "await_subtasks", json!({})).await;
    assert_eq!(kind, "no_turn");
    ok(&client, "complete_task", json!({"result": null})).await;
    let review = founder.project("dash").await?.artifacts["security_review"].clone();
    assert_eq!(review.status, ArtifactStatus::Complete);
    assert_eq!(review.path.as_deref(), Some("/security/review.md"));

    // The spec changes after the review: the review goes to rework, and
    // the seat hears of it.
    founder
        .delegate("backend", TaskSpec::new("revise").input(json!("revise")))
        .await?
        .wait(DEADLINE)
        .await?;
    let rework = next_event(&client).await;
    assert_eq!(rework["event"], "artifact_rework", "{rework}");
    assert_eq!(rework["artifact"], "security_review");
    assert_eq!(rework["changed"]["name"], "api_spec");
    // Acknowledged by the next call: then the move to rework commits.
    ok(&client, "seat_info", json!({})).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while founder.project("dash").await?.artifacts["security_review"].status
        != ArtifactStatus::Rework
    {
        assert!(tokio::time::Instant::now() < deadline, "not in rework");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its blocker complete, the reworked review is ready again: redone.
    let again = next_event(&client).await;
    assert_eq!(again["event"], "artifact_ready", "{again}");
    assert_eq!(again["blockers"][0]["revision"], 2, "{again}");
    ok(
        &client,
        "update_artifact",
        json!({"project_id": "dash", "artifact": "security_review", "status": "complete"}),
    )
    .await;
    ok(&client, "complete_task", json!({"result": null})).await;
    let review = founder.project("dash").await?.artifacts["security_review"].clone();
    assert_eq!(review.status, ArtifactStatus::Complete);
    assert_eq!(review.basis.get("api_spec"), Some(&2));

    // A task turn: the CTO's seat records a decision and claims nothing it
    // does not own.
    let (cto_client, _cto_server) = client_of(&cto).await;
    let task = founder
        .delegate("cto", TaskSpec::new("decide the storage"))
        .await?;
    let event = next_event(&cto_client).await;
    assert_eq!(event["event"], "task", "{event}");
    ok(
        &cto_client,
        "record_decision",
        json!({"project_id": "dash", "decision": "Use ClickHouse", "rationale": "Lower latency", "artifacts": ["api_spec"]}),
    )
    .await;
    let (kind, message) = refused(
        &cto_client,
        "claim_artifact",
        json!({"project_id": "dash", "artifact": "security_review", "lease_secs": 60}),
    )
    .await;
    assert_eq!(kind, "not_allowed", "{message}");
    ok(&cto_client, "complete_task", json!({"result": "decided"})).await;
    task.wait(DEADLINE).await?;
    let log = founder.project("dash").await?.decisions;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].agent, "cto");
    org.shutdown().await;
    Ok(())
}
