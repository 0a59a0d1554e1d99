//! Failures: dead letters, permanent failures, breakers, conflicting
//! writes and store outages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::super::faults::FailsNextCommits;
use super::super::{fail, EVENTUALLY};
use super::{
    counter_key, delegate, next_envelope, quiet, start, wait_done, Manager, Scripted, COOLDOWN,
    LEASE,
};
use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::envelope::Kind;
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::store::{DocKey, Precondition, StateStore, Write};
use crate::transport::Transport;

/// A handler that always fails transiently runs exactly `max_attempts` (3)
/// times; one dead letter and one alert follow; the task is dead-lettered.
pub async fn dead_letter_after_max_attempts(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "dead_letter_after_max_attempts";
    let broken = Scripted::new(|_, _| async { Err(AgentError::transient("upstream down")) });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(broken.clone()))]).await;
    let principal = o.principal();
    let mut dead = principal
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(B, e));
    let mut alerts = principal.alerts().await.unwrap_or_else(|e| fail(B, e));
    let id = delegate(B, &o, "x", "doomed").await;
    let rec = wait_done(B, &o, &id).await;
    if rec.status != TaskStatus::DeadLettered {
        fail(B, format!("task ended {}", rec.status));
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    if dl.kind != Kind::DeadLetter
        || dl.causation_id.as_ref() != Some(&id)
        || dl.payload["attempts"] != 3
        || dl.payload["reason"]["code"] != "attempts_exhausted"
        || dl.id == id
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let original = dl.payload["original"]["body"].as_str().unwrap_or_default();
    if !original.contains(id.as_str()) {
        fail(B, "the dead letter does not keep the original body");
    }
    let alert = next_envelope(B, "the alert", &mut alerts).await;
    if alert.kind != Kind::Alert || alert.payload["dead_letter_id"] != json!(dl.id) {
        fail(B, format!("alert {alert:?}"));
    }
    quiet(B, "a second dead letter", &mut dead, LEASE * 3).await;
    quiet(B, "a second alert", &mut alerts, Duration::from_millis(100)).await;
    let attempts: Vec<u32> = broken.runs().iter().map(|r| r.attempt).collect();
    if attempts != [1, 2, 3] {
        fail(B, format!("attempts {attempts:?}"));
    }
    o.shutdown().await;
}

/// A permanent failure fails the task at once (no retry) and the delegator
/// sees why.
pub async fn permanent_failure_fails_at_once(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "permanent_failure_fails_at_once";
    let bad = Scripted::new(|_, _| async { Err(AgentError::permanent("spec is contradictory")) });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("m", Arc::new(Manager)), ("w", Arc::new(bad.clone()))],
    )
    .await;
    let root = match o
        .principal()
        .delegate("m", TaskSpec::new("plan").input(json!({"to": ["w"]})))
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    let rec = wait_done(B, &o, &root).await;
    let why = rec.error.clone().unwrap_or_default();
    if rec.status != TaskStatus::Failed || !why.contains("spec is contradictory") {
        fail(B, format!("root ended {} with {why:?}", rec.status));
    }
    if bad.runs().len() != 1 {
        fail(B, format!("{} runs", bad.runs().len()));
    }
    o.shutdown().await;
}

/// Three failed tasks open a role's breaker: its manager is told once,
/// delegations go to the alternate (or are refused without one); after the
/// cool-down one probe goes through, and its success closes the breaker.
pub async fn breaker_opens_reroutes_and_half_opens(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "breaker_opens_reroutes_and_half_opens";
    let healthy = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (h, g) = (Arc::clone(&healthy), Arc::clone(&gate));
    let x = Scripted::new(move |task, _| {
        let (h, g) = (Arc::clone(&h), Arc::clone(&g));
        async move {
            if task.title == "probe" {
                g.notified().await;
            }
            if h.load(Ordering::SeqCst) {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("broken"))
            }
        }
    });
    let y_ok = Arc::new(AtomicBool::new(true));
    let yk = Arc::clone(&y_ok);
    let y = Scripted::new(move |_, _| {
        let ok = yk.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("also broken"))
            }
        }
    });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("x", Arc::new(x.clone())), ("y", Arc::new(y.clone()))],
    )
    .await;
    let principal = o.principal();
    let mut inbox = principal.inbox().await.unwrap_or_else(|e| fail(B, e));
    for i in 0..3 {
        let id = delegate(B, &o, "x", &format!("fail{i}")).await;
        if wait_done(B, &o, &id).await.status != TaskStatus::Failed {
            fail(B, "a broken task did not fail");
        }
    }
    // Open: rerouted to the alternate.
    let d = principal
        .delegate("x", TaskSpec::new("rerouted"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if d.assigned_to != "y" || d.rerouted_from.as_ref().map(Name::as_str) != Some("x") {
        fail(B, format!("delegation while open: {d:?}"));
    }
    if wait_done(B, &o, &d.task_id).await.status != TaskStatus::Completed {
        fail(B, "the rerouted task did not complete");
    }
    // The manager (the principal here) gets one escalation, besides the results.
    let mut escalations = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), inbox.next()).await {
            Ok(Some(Ok(env))) if env.kind == Kind::Escalation => {
                if env.payload["reason"] != "breaker_open" || env.from != "x" {
                    fail(B, format!("escalation {env:?}"));
                }
                escalations += 1;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            other => fail(B, format!("inbox: {other:?}")),
        }
    }
    if escalations != 1 {
        fail(B, format!("{escalations} escalations for one opening"));
    }
    // After the cool-down: one probe goes to x; meanwhile others are rerouted.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let probe = principal
        .delegate("x", TaskSpec::new("probe"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if probe.assigned_to != "x" {
        fail(B, format!("the probe went to {}", probe.assigned_to));
    }
    let during = principal
        .delegate("x", TaskSpec::new("during"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if during.assigned_to != "y" {
        fail(
            B,
            format!(
                "a delegation during the probe went to {}",
                during.assigned_to
            ),
        );
    }
    // The probe may not have reached its gate yet: keep opening it until done.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        gate.notify_waiters();
        if let Ok(Some(rec)) = principal.task(&probe.task_id).await {
            if rec.status.is_terminal() {
                if rec.status != TaskStatus::Completed {
                    fail(B, format!("the probe ended {}", rec.status));
                }
                break;
            }
        }
        if Instant::now() > deadline {
            fail(B, "the probe did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = principal
        .delegate("x", TaskSpec::new("after"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if after.assigned_to != "x" {
        fail(
            B,
            format!("after a good probe the task went to {}", after.assigned_to),
        );
    }
    wait_done(B, &o, &after.task_id).await;
    // Without an alternate, an open breaker refuses.
    y_ok.store(false, Ordering::SeqCst);
    for i in 0..3 {
        let id = delegate(B, &o, "y", &format!("yfail{i}")).await;
        wait_done(B, &o, &id).await;
    }
    match principal.delegate("y", TaskSpec::new("refused")).await {
        Err(crate::agent::DelegateError::BreakerOpen { role, .. }) if role == "y" => {}
        other => fail(
            B,
            format!("delegation to an open breaker without alternate: {other:?}"),
        ),
    }
    o.shutdown().await;
}

/// A handler that plans a probe and then fails leaves the breaker's probe
/// slot free: the next delegation becomes the probe.
pub async fn probe_slot_taken_only_with_the_probe(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "probe_slot_taken_only_with_the_probe";
    /// Delegates to `w`; fails afterwards when the task says so.
    struct Delegator;
    #[async_trait]
    impl Agent for Delegator {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            let d = cx.delegate("w", TaskSpec::new(task.title.clone())).await?;
            if task.title.starts_with("fail") {
                return Err(AgentError::permanent(format!(
                    "changed my mind about {}",
                    d.task_id
                )));
            }
            Ok(Outcome::AwaitSubtasks)
        }
    }
    let healthy = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&healthy);
    let w = Scripted::new(move |_, _| {
        let ok = h.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("broken"))
            }
        }
    });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("m", Arc::new(Delegator)),
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(Scripted::completing())),
        ],
    )
    .await;
    for i in 0..3 {
        let id = delegate(B, &o, "m", &format!("break{i}")).await;
        wait_done(B, &o, &id).await;
    }
    // w's breaker is open: m's next delegations go to w's alternate.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let failed = delegate(B, &o, "m", "fail after planning the probe").await;
    if wait_done(B, &o, &failed).await.status != TaskStatus::Failed {
        fail(B, "the failing delegator's task did not fail");
    }
    let runs_before = w.runs().len();
    let probe = delegate(B, &o, "m", "the real probe").await;
    let rec = wait_done(B, &o, &probe).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("the probe's parent ended {}", rec.status));
    }
    let child = match o.principal().task(&rec.children[0]).await {
        Ok(Some(c)) => c,
        other => fail(B, format!("probe child {other:?}")),
    };
    if child.assigned_to != "w" || !child.probe {
        fail(
            B,
            format!("the second delegation was not the probe: {child:?}"),
        );
    }
    if w.runs().len() != runs_before + 1 {
        fail(B, "the probe did not run on w");
    }
    o.shutdown().await;
}

/// Handlers that stage conflicting optimistic writes: the loser's outcome is
/// stale, so its handler runs again — on the same attempt — and both tasks
/// complete with every increment counted.
pub async fn conflicting_staged_writes_rerun_without_spending_attempts(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "conflicting_staged_writes_rerun_without_spending_attempts";
    struct Incrementing {
        key: DocKey,
        attempts: Arc<Mutex<Vec<u32>>>,
    }
    #[async_trait]
    impl Agent for Incrementing {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            if let Ok(mut a) = self.attempts.lock() {
                a.push(cx.attempt());
            }
            let current = cx.store().get(&self.key).await?;
            let (n, pre) = match current {
                Some(d) => (
                    d.value["n"].as_u64().unwrap_or(0),
                    Precondition::Version(d.version),
                ),
                None => (0, Precondition::MustNotExist),
            };
            // Both handlers read before either commits.
            tokio::time::sleep(Duration::from_millis(300)).await;
            cx.stage(Write::put(self.key.clone(), json!({"n": n + 1}), pre))?;
            Ok(Outcome::Complete(json!(n + 1)))
        }
    }
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let key = counter_key(B, &org, "x");
    let agent = Incrementing {
        key: key.clone(),
        attempts: Arc::clone(&attempts),
    };
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(agent))]).await;
    let a = delegate(B, &o, "x", "a").await;
    let b = delegate(B, &o, "x", "b").await;
    for id in [&a, &b] {
        if wait_done(B, &o, id).await.status != TaskStatus::Completed {
            fail(B, format!("{id} did not complete"));
        }
    }
    match s.get(&key).await {
        Ok(Some(d)) if d.value["n"] == 2 => {}
        other => fail(B, format!("counter {other:?}")),
    }
    let seen = attempts.lock().map(|a| a.clone()).unwrap_or_default();
    if seen.len() < 2 || seen.iter().any(|a| *a != 1) {
        fail(B, format!("attempt numbers of the runs: {seen:?}"));
    }
    o.shutdown().await;
}

/// A completion commit that fails because the store is briefly unreachable
/// puts the delivery back without spending an attempt: the handler runs
/// again as the same attempt, and the task completes.
pub async fn a_failed_commit_does_not_spend_an_attempt(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_failed_commit_does_not_spend_an_attempt";
    let flaky = FailsNextCommits::new(Arc::clone(&s));
    let arm = flaky.clone();
    let first = Arc::new(AtomicBool::new(true));
    let x = Scripted::new(move |_, _| {
        // The first run's completion commit fails.
        if first.swap(false, Ordering::SeqCst) {
            arm.arm(1);
        }
        async { Ok(Outcome::Complete(Value::Null)) }
    });
    let store = flaky.store();
    let o = start(B, &t, &store, &org, vec![("x", Arc::new(x.clone()))]).await;
    let id = delegate(B, &o, "x", "despite a blip").await;
    if wait_done(B, &o, &id).await.status != TaskStatus::Completed {
        fail(B, "the task did not complete");
    }
    let attempts: Vec<u32> = x.runs().iter().map(|r| r.attempt).collect();
    if attempts != [1, 1] {
        fail(
            B,
            format!("attempts of the runs: {attempts:?} (expected the blip to cost no attempt)"),
        );
    }
    o.shutdown().await;
}
