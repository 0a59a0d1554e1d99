//! The founder's part of the CI/CD choreography (`--cicd`): a merged pull
//! request (`pr.merged`) starts DevOps' saga — deploy, smoke test (which
//! publishes `deploy.complete`), then Marketing's changelog once that
//! event's subscribers processed it. With `--fail-step smoke_test` the
//! smoke test fails: the deploy is compensated (rolled back), which
//! publishes `deploy.rollback`.

use std::time::Duration;

use agentorg::prelude::*;
use serde_json::json;

/// The saga's steps, as the chart declares them.
pub(crate) const STEPS: [&str; 3] = ["deploy", "smoke_test", "changelog"];

/// Publishes `pr.merged`, waits for the saga DevOps starts for it to end,
/// prints it as `{"saga": …}`, and checks it: `Ok(true)` iff it completed
/// (or, with `fail_step`, compensated in reverse and its rollback event was
/// processed by every subscriber).
pub(crate) async fn drive(
    org: &Org,
    fail_step: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let founder = org.principal();
    // A role's event subscription starts when its process first binds it:
    // wait for the subscribers of `pr.merged` and `deploy.rollback` to be up
    // (in other processes, they may still be starting).
    let deadline = tokio::time::Instant::now() + timeout;
    let chart = org.chart();
    let mut needed: Vec<Name> = chart.subscribers_of("pr.merged").cloned().collect();
    needed.extend(chart.subscribers_of("deploy.rollback").cloned());
    loop {
        let live = founder.liveness().await?;
        let down: Vec<&Name> = needed
            .iter()
            .filter(|r| !live.iter().any(|l| &l.role == *r && l.up))
            .collect();
        if down.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{down:?} not up within {timeout:?}: no one would take pr.merged");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut payload = json!({ "pr": 1234, "version": "analytics-v2" });
    if let Some(step) = fail_step {
        payload["fail_step"] = json!(step);
    }
    let event = founder.publish_event("pr.merged", &payload).await?;
    eprintln!("genbrain: founder published pr.merged {event} (PR 1234)");
    let saga = loop {
        let run = founder
            .sagas()
            .await?
            .into_iter()
            .find(|r| r.input["pr_event"] == event.as_str());
        match run {
            Some(r) if r.status.is_final() || r.status.needs_decision() => break r,
            _ if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("the CI/CD saga of {event} did not end within {timeout:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let steps: Vec<_> = saga
        .steps
        .iter()
        .map(|s| json!({ "name": s.name, "role": s.role, "status": s.status, "runs": s.runs }))
        .collect();
    let rollbacks: Vec<_> = saga
        .rollback_events
        .iter()
        .map(|r| json!({ "step": r.step, "event": r.event, "id": r.id }))
        .collect();
    let printed = json!({ "saga": {
        "id": saga.saga_id,
        "name": saga.name,
        "status": saga.status,
        "steps": steps,
        "compensations": saga.compensations,
        "rollback_events": rollbacks,
    }});
    println!("{}", serde_json::to_string_pretty(&printed)?);
    eprintln!("genbrain: saga {} {:?}", saga.saga_id, saga.status);
    let Some(failed) = fail_step else {
        return Ok(saga.status == SagaStatus::Completed);
    };
    // Whichever step fails, `deploy` (the only step with a compensation)
    // is compensated: it completed before, or it failed and may have
    // partly happened.
    let want = ["deploy"];
    eprintln!(
        "genbrain: step {failed} failed as asked: compensated {:?}",
        saga.compensations
    );
    let mut ok = saga.status == SagaStatus::Compensated && saga.compensations == want;
    for rollback in &saga.rollback_events {
        let receipts = founder
            .receipts(&rollback.id)
            .wait(Duration::from_secs(20))
            .await?;
        eprintln!(
            "genbrain: {} {} published; processed by {:?}, not by {:?}",
            rollback.event,
            rollback.id,
            receipts
                .receipts
                .iter()
                .filter(|r| r.status == agentorg::events::ReceiptStatus::Processed)
                .map(|r| r.subscriber.as_str())
                .collect::<Vec<_>>(),
            receipts.not_processed
        );
        ok &= receipts.all_processed();
    }
    ok &= saga.rollback_events.len() == want.len();
    Ok(ok)
}
