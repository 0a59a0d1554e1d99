//! Sagas through seats: a seated step role gets each step and compensation
//! as a turn of `wait_for_event` and reports its outcome with
//! `complete_task` / `fail_task`; a seated manager gets a report's in-doubt
//! step as a `saga_escalation` and resolves it with `decide_escalation`.
//! Memory backends, in-process pipes.

use std::time::Duration;

use agentorg_core::chart::{OrgChart, RoleSpec, SagaSpec, StepSpec};
use agentorg_core::runtime::{Org, RuntimeConfig};
use agentorg_core::saga::{SagaStatus, StepStatus};
use agentorg_mcp::seat::Seat;
use serde_json::json;

mod seat_support;
use seat_support::{client_of, next_event, ok, refused, test_seat, TestResult, DEADLINE};

/// founder → cto → devops (publishes `deploy.rollback`); the saga
/// `release`: deploy (devops, compensated with `deploy.rollback`), verify
/// (devops).
fn chart() -> OrgChart {
    let built = OrgChart::builder("seatsaga")
        .principal("founder")
        .role(RoleSpec::new("cto").reports_to("founder"))
        .role(
            RoleSpec::new("devops")
                .reports_to("cto")
                .publishes(["deploy.rollback"]),
        )
        .saga(
            SagaSpec::new("release")
                .step(StepSpec::new("deploy", "devops").compensate_with("deploy.rollback"))
                .step(StepSpec::new("verify", "devops")),
        )
        .build();
    match built {
        Ok(c) => c,
        Err(e) => panic!("chart: {e}"),
    }
}

fn seat(role: &str) -> Seat {
    test_seat(chart(), role)
}

async fn org(devops: &Seat, cto: &Seat) -> Result<Org, Box<dyn std::error::Error + Send + Sync>> {
    let config = RuntimeConfig::default()
        .with_backoff(Duration::from_millis(50), Duration::from_millis(100))
        .with_jitter(false)
        .with_max_attempts(2);
    Ok(Org::builder(chart())
        .config(config)
        .agent("devops", devops.agent())
        .agent("cto", cto.agent())
        .start()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_reports_steps_and_compensations() -> TestResult {
    let (devops, cto) = (seat("devops"), seat("cto"));
    let org = org(&devops, &cto).await?;
    let (client, _server) = client_of(&devops).await;
    let founder = org.principal();
    let id = founder
        .start_saga("release", &json!({ "version": "v2" }))
        .await?;

    let step = next_event(&client).await;
    assert_eq!(step["event"], "saga_step", "{step}");
    assert_eq!(step["step"], "deploy");
    assert_eq!(step["input"]["version"], "v2");
    assert_eq!(
        step["idempotency_key"],
        format!("{id}/deploy/run").as_str(),
        "{step}"
    );
    ok(
        &client,
        "complete_task",
        json!({"result": {"deployed": "v2"}}),
    )
    .await;

    let step = next_event(&client).await;
    assert_eq!(step["step"], "verify", "{step}");
    assert_eq!(step["results"]["deploy"]["deployed"], "v2", "{step}");
    ok(
        &client,
        "fail_task",
        json!({"reason": "verification failed", "retryable": false}),
    )
    .await;

    let comp = next_event(&client).await;
    assert_eq!(comp["event"], "saga_compensation", "{comp}");
    assert_eq!(comp["step"], "deploy");
    assert_eq!(comp["result"]["deployed"], "v2");
    // A compensation turn is no task turn: await_subtasks finds none.
    let (kind, _) = refused(&client, "await_subtasks", json!({})).await;
    assert_eq!(kind, "no_turn");
    ok(&client, "complete_task", json!({"result": "rolled back"})).await;

    let saga = founder.saga(&id).wait(DEADLINE).await?;
    assert_eq!(saga.status, SagaStatus::Compensated, "{saga:?}");
    assert_eq!(saga.compensations, ["deploy"]);
    assert_eq!(saga.rollback_events.len(), 1);
    assert_eq!(saga.steps[1].status, StepStatus::Failed);
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seated_manager_resolves_an_in_doubt_step() -> TestResult {
    let (devops, cto) = (seat("devops"), seat("cto"));
    let org = org(&devops, &cto).await?;
    let (worker, _w) = client_of(&devops).await;
    let (manager, _m) = client_of(&cto).await;
    let founder = org.principal();
    let id = founder.start_saga("release", &json!({})).await?;

    let step = next_event(&worker).await;
    assert_eq!(step["step"], "deploy", "{step}");
    ok(&worker, "complete_task", json!({"result": "deployed"})).await;
    // Verify's outcome is unknown, attempt after attempt: in doubt.
    for attempt in 1..=2 {
        let step = next_event(&worker).await;
        assert_eq!(
            (step["step"].clone(), step["attempt"].clone()),
            (json!("verify"), json!(attempt))
        );
        ok(
            &worker,
            "fail_task",
            json!({"reason": "the probe timed out", "retryable": true}),
        )
        .await;
    }

    let escalation = next_event(&manager).await;
    assert_eq!(escalation["event"], "saga_escalation", "{escalation}");
    assert_eq!(escalation["step"], "verify");
    assert_eq!(escalation["status"], "in_doubt");
    let (kind, message) = refused(
        &manager,
        "decide_escalation",
        json!({"decision": {"decision": "maybe"}}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    assert!(message.contains("retry"), "{message}");
    ok(
        &manager,
        "decide_escalation",
        json!({"decision": {"decision": "retry"}}),
    )
    .await;

    let step = next_event(&worker).await;
    assert_eq!(
        (step["step"].clone(), step["run"].clone()),
        (json!("verify"), json!(2)),
        "{step}"
    );
    ok(&worker, "complete_task", json!({"result": "verified"})).await;
    let saga = founder.saga(&id).wait(DEADLINE).await?;
    assert_eq!(saga.status, SagaStatus::Completed, "{saga:?}");
    assert_eq!(saga.steps[1].runs, 2);
    org.shutdown().await;
    Ok(())
}
