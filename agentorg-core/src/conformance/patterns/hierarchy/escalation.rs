//! Escalations and decisions, SLA breaches, and breakers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::envelope::Kind;
use crate::hierarchy::{Decision, Escalation, TaskStatus};
use crate::name::Name;
use crate::runtime::role_collection;
use crate::store::{Precondition, StateStore, Write};
use crate::transport::Transport;

use super::super::super::{fail, EVENTUALLY};
use super::super::support::*;
use super::super::COOLDOWN;

/// An escalation goes up the chain: the backend escalates, the cto passes
/// it up (the default), the ceo too, and the principal's inbox shows it
/// with its path; `Principal::answer` sends the decision back down the same
/// path to the backend's `on_decision`. A level that decides (the cto, for
/// "naming") answers at once and the escalation goes no higher.
pub async fn escalation_reaches_the_principal_and_decisions_come_back(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "escalation_reaches_the_principal_and_decisions_come_back";
    let j = Arc::new(Journal::default());
    /// Escalates a budget question and a naming question, and completes.
    struct Backend(Leaf);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            cx.escalate("budget above my limit", json!({"usd": 25_000}))?;
            cx.escalate("naming", json!({"options": ["v2", "next"]}))?;
            self.0.on_task(cx, task).await
        }
        async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
            self.0.on_decision(cx, decision).await
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j).deciding("naming"))),
            ("backend", Arc::new(Backend(Leaf::completing(&j)))),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "Build the API")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the chain did not complete");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    let env = next_matching(B, "the escalation at the principal", &mut inbox, |e| {
        e.kind == Kind::Escalation
    })
    .await;
    let esc: Escalation = serde_json::from_value(env.payload.clone())
        .unwrap_or_else(|e| fail(B, format!("the escalation's payload: {e}")));
    let path: Vec<&str> = esc.path.iter().map(Name::as_str).collect();
    if env.from != "ceo"
        || esc.origin != "backend"
        || path != ["backend", "cto", "ceo"]
        || esc.reason != "budget above my limit"
        || esc.details["usd"] != 25_000
        || esc.task_id.as_ref() != Some(&leaf.task_id)
    {
        fail(B, format!("the escalation at the principal: {env:?}"));
    }
    if let Err(e) = p.answer(&env, json!({"approved": true})).await {
        fail(B, format!("answering: {e}"));
    }
    eventually(B, "both decisions at the backend", || async {
        j.decisions_at("backend").len() >= 2
    })
    .await;
    let decisions = j.decisions_at("backend");
    let by = |who: &str| decisions.iter().find(|d| d.decided_by == who);
    match by("founder") {
        Some(d)
            if d.escalation_id == esc.escalation_id
                && d.decision == json!({"approved": true})
                && d.reason == "budget above my limit"
                && d.path == esc.path
                && d.task_id.as_ref() == Some(&leaf.task_id) => {}
        other => fail(
            B,
            format!("the founder's decision at the backend: {other:?}"),
        ),
    }
    match by("cto") {
        Some(d)
            if d.reason == "naming"
                && d.decision["decided_by"] == "cto"
                && d.path.len() == 1
                && d.path[0] == "backend" => {}
        other => fail(B, format!("the cto's decision at the backend: {other:?}")),
    }
    if decisions.len() != 2 {
        fail(B, format!("decisions at the backend: {decisions:?}"));
    }
    // Each level saw what came its way, and decisions on the way down are
    // passed, not handled, by the levels above the origin.
    let reasons = |role: &str| -> Vec<String> {
        j.escalations_at(role)
            .into_iter()
            .map(|e| e.reason)
            .collect()
    };
    if reasons("cto").len() != 2 || reasons("ceo") != ["budget above my limit"] {
        fail(
            B,
            format!(
                "escalations at the cto {:?}, at the ceo {:?}",
                reasons("cto"),
                reasons("ceo")
            ),
        );
    }
    if !j.decisions_at("cto").is_empty() || !j.decisions_at("ceo").is_empty() {
        fail(
            B,
            "a level above the origin handled a decision meant for the backend",
        );
    }
    none_matching(
        B,
        "a second escalation at the principal",
        &mut inbox,
        Duration::from_millis(500),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    o.shutdown().await;
}

/// A task that escalates and then fails (its budget spent, say) still
/// escalates: the manager's `on_escalation` sees it, with the task's id,
/// while the task ends failed and nothing else it staged happens (its
/// write to its own namespace is dropped). An escalation too big to store
/// is dropped instead of keeping the task from failing.
pub async fn a_failing_task_still_escalates(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_failing_task_still_escalates";
    let j = Arc::new(Journal::default());
    /// Escalates what it spent, stages a note, and fails.
    struct Spender;
    #[async_trait]
    impl Agent for Spender {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            let mut details = json!({"tokens": 12_000, "budget": 10_000});
            if task.title.contains("huge") {
                // More than any backend's document holds.
                details["log"] = json!("x".repeat(1_100_000));
            }
            cx.escalate("budget spent", details)?;
            let note = cx
                .collection("notes")
                .and_then(|c| c.doc("spent"))
                .map_err(|e| AgentError::permanent(e.to_string()))?;
            cx.stage(Write::put(note, json!({"n": 1}), Precondition::None))
                .map_err(|e| AgentError::permanent(e.to_string()))?;
            Err(AgentError::permanent("budget spent: 12000 tokens of 10000"))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j).deciding("budget spent"))),
            ("backend", Arc::new(Spender)),
        ],
    )
    .await;
    let p = o.principal();
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "Build the API")).await;
    if wait_done(B, &root).await.status != TaskStatus::Failed {
        fail(B, "the chain did not fail");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    if leaf.status != TaskStatus::Failed
        || !leaf
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("budget spent")
    {
        fail(B, format!("the leaf: {leaf:?}"));
    }
    eventually(B, "the escalation at the cto", || async {
        !j.escalations_at("cto").is_empty()
    })
    .await;
    let esc = j.escalations_at("cto");
    if esc.len() != 1
        || esc[0].details["tokens"] != 12_000
        || esc[0].task_id.as_ref() != Some(&leaf.task_id)
    {
        fail(B, format!("escalations at the cto: {esc:?}"));
    }
    let note = role_collection(&org, &name(B, "backend"), "notes")
        .and_then(|c| c.doc("spent"))
        .unwrap_or_else(|e| fail(B, e));
    match s.get(&note).await {
        Ok(None) => {}
        other => fail(B, format!("the failed task's staged write: {other:?}")),
    }
    // An escalation the store cannot hold does not keep the task from
    // failing: it fails without it.
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "huge review")).await;
    if wait_done(B, &root).await.status != TaskStatus::Failed {
        fail(B, "the second chain did not fail");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    if leaf.status != TaskStatus::Failed {
        fail(B, format!("the second leaf: {leaf:?}"));
    }
    // Give a wrongly sent escalation time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if j.escalations_at("cto").len() != 1 {
        fail(
            B,
            format!("escalations at the cto: {:?}", j.escalations_at("cto")),
        );
    }
    o.shutdown().await;
}

/// SLA breach (paused clock only): a task past its `sla_minutes` emits one
/// `<org>.events.sla.breach` event, not before the SLA, and escalates once
/// to its delegator's manager; a task the principal delegated alerts the
/// principal instead; a task that ends within its SLA does neither.
pub async fn sla_breach_escalates_once(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "sla_breach_escalates_once";
    let j = Arc::new(Journal::default());
    let slow = |minutes: u64| {
        Leaf::new(&j, move |t, _| async move {
            tokio::time::sleep(Duration::from_secs(minutes)).await;
            Ok(Outcome::Complete(json!({"title": t.title})))
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j).deciding("sla_breach"))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(slow(120))),
            ("devops", Arc::new(slow(10))),
        ],
    )
    .await;
    let p = o.principal();
    let mut events = tap(
        B,
        &t,
        o.subjects().event(&[name(B, "sla"), name(B, "breach")]),
    )
    .await;
    let mut alerts = p.alerts().await.unwrap_or_else(|e| fail(B, e));
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let at = Instant::now();
    let spec = TaskSpec::new("Ship it within a minute")
        .sla_minutes(1)
        .input(plan(vec![step("cto", "Technical part").then(vec![
            step("backend", "Slow endpoint").sla(1),
            step("devops", "Quick pipeline").sla(1),
        ])]));
    let root = delegate(B, &p, "ceo", spec).await;
    // Two breaches: the root's (the founder delegated it) and the backend's
    // (the cto delegated it); not the devops task, done in 10 s.
    let mut breached = BTreeMap::new();
    while breached.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(600), events.next()).await;
        let env = match item {
            Ok(Some(Ok(m))) => m
                .envelope(&crate::codec::Codec::default())
                .unwrap_or_else(|e| fail(B, e)),
            other => fail(B, format!("the breach events: {other:?}")),
        };
        let task_id = env.payload["details"]["task_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if env.kind != Kind::Event || env.payload["event"] != "sla.breach" {
            fail(B, format!("a breach event: {env:?}"));
        }
        if at.elapsed() < Duration::from_secs(60) {
            fail(
                B,
                format!(
                    "a breach after {:?}, before the SLA of 1 minute",
                    at.elapsed()
                ),
            );
        }
        if breached.insert(task_id.clone(), env).is_some() {
            fail(B, format!("two breach events for {task_id}"));
        }
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let backend_task = tree.children[0].children[0].task_id.clone();
    let devops_task = tree.children[0].children[1].task_id.clone();
    match (
        breached.get(root.task_id.as_str()),
        breached.get(backend_task.as_str()),
    ) {
        (Some(r), Some(b)) if r.from == "founder" && b.from == "cto" => {
            if b.payload["details"]["assigned_to"] != "backend"
                || b.payload["details"]["sla_minutes"] != 1
            {
                fail(B, format!("the backend's breach event: {b:?}"));
            }
        }
        _ => fail(
            B,
            format!(
                "breach events for {:?}",
                breached.keys().collect::<Vec<_>>()
            ),
        ),
    }
    if task(B, &p, &backend_task).await.status != TaskStatus::InProgress {
        fail(
            B,
            "the backend's task was not open when its breach was reported",
        );
    }
    // The root's breach alerts the founder (who has no manager).
    let alert = next_matching(B, "the root's breach alert", &mut alerts, |_| true).await;
    if alert.kind != Kind::Alert
        || alert.payload["alert"] != "sla_breach"
        || alert.payload["details"]["task_id"] != json!(root.task_id)
    {
        fail(B, format!("the alert: {alert:?}"));
    }
    // The backend's breach escalates from the cto to its manager, the ceo,
    // once; the ceo decides, and the cto gets the decision.
    eventually(B, "the cto gets the ceo's decision", || async {
        !j.decisions_at("cto").is_empty()
    })
    .await;
    let escalations = j.escalations_at("ceo");
    match escalations.as_slice() {
        [e] if e.reason == "sla_breach"
            && e.origin == "cto"
            && e.task_id.as_ref() == Some(&backend_task) => {}
        other => fail(B, format!("escalations at the ceo: {other:?}")),
    }
    // All ends; nothing more is reported, however long we wait.
    if wait_long(&root).await.status != TaskStatus::Completed {
        fail(B, "the root did not complete");
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    let more = drain(&mut events, Duration::from_millis(10)).await;
    if !more.is_empty() || breached.contains_key(devops_task.as_str()) {
        fail(B, format!("more breach events: {more:?}"));
    }
    none_matching(
        B,
        "a second alert",
        &mut alerts,
        Duration::from_secs(1),
        |_| true,
    )
    .await;
    none_matching(
        B,
        "an escalation at the principal",
        &mut inbox,
        Duration::from_secs(1),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    if j.escalations_at("ceo").len() != 1 {
        fail(B, "the breach escalated more than once");
    }
    o.shutdown().await;
}

/// The breaker on GenBrain's chart: after three failed tasks in a row the
/// backend's breaker opens, the opening escalates to its manager (the cto,
/// who passes it up to the founder), the cto's next delegations to the
/// backend go to its alternate, the frontend; after the cool-down one probe
/// goes to the backend (others still rerouted), and its success closes the
/// breaker.
pub async fn breaker_reroutes_to_the_alternate_and_half_opens(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "breaker_reroutes_to_the_alternate_and_half_opens";
    let j = Arc::new(Journal::default());
    let healthy = Arc::new(AtomicBool::new(false));
    let gate = Gate::new();
    let probing = Arc::new(AtomicBool::new(false));
    let backend = {
        let (h, g, p) = (Arc::clone(&healthy), gate.clone(), Arc::clone(&probing));
        Leaf::new(&j, move |task, _| {
            let (h, g, p) = (Arc::clone(&h), g.clone(), Arc::clone(&p));
            async move {
                if task.title == "probe" {
                    p.store(true, Ordering::SeqCst);
                    g.pass().await;
                }
                if h.load(Ordering::SeqCst) {
                    Ok(Outcome::Complete(json!("fixed")))
                } else {
                    Err(AgentError::permanent("ClickHouse schema is broken"))
                }
            }
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(backend)),
            ("frontend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let chain = |title: &str| via_cto(&format!("Ship {title}"), "backend", title);
    for i in 0..3 {
        let root = delegate(B, &p, "ceo", chain(&format!("fail{i}"))).await;
        if wait_done(B, &root).await.status != TaskStatus::Failed {
            fail(B, "a chain onto the broken backend did not fail");
        }
        let leaf = leaf_of(B, &p, &root.task_id).await;
        if leaf.assigned_to != "backend" || leaf.status != TaskStatus::Failed {
            fail(B, format!("broken task {i}: {leaf:?}"));
        }
    }
    // Open: the cto's delegation to the backend goes to the frontend.
    let root = delegate(B, &p, "ceo", chain("rerouted")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the rerouted chain did not complete");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    if leaf.assigned_to != "frontend"
        || leaf.requested_to.as_ref().map(Name::as_str) != Some("backend")
    {
        fail(B, format!("the delegation while open: {leaf:?}"));
    }
    // The opening escalates to the backend's manager, once, and on up.
    let heard = eventually_some(
        B,
        "the opening's escalation handled or dead-lettered",
        EVENTUALLY,
        Duration::from_millis(50),
        || async {
            if !j.escalations_at("cto").is_empty() {
                return Some(None);
            }
            let dead = p.dead_letter_records().await.unwrap_or_default();
            dead.into_iter().find(|d| d.role == "cto").map(Some)
        },
    )
    .await;
    if let Some(dead) = heard {
        fail(
            B,
            format!(
                "the cto could not take the breaker's escalation: dead-lettered {} ({}): {}",
                dead.reason_code, dead.reason, dead.original
            ),
        );
    }
    let env = next_matching(B, "the opening at the principal", &mut inbox, |e| {
        e.kind == Kind::Escalation
    })
    .await;
    if env.payload["reason"] != "breaker_open" {
        fail(B, format!("the escalation at the principal: {env:?}"));
    }
    match j.escalations_at("cto").as_slice() {
        [e] if e.reason == "breaker_open" && e.origin == "backend" => {}
        other => fail(B, format!("escalations at the cto: {other:?}")),
    }
    // After the cool-down: one probe to the backend; meanwhile the others go
    // to the frontend.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let probe = delegate(B, &p, "ceo", chain("probe")).await;
    eventually(B, "the probe reached the backend", || async {
        probing.load(Ordering::SeqCst)
    })
    .await;
    let probe_leaf = leaf_of(B, &p, &probe.task_id).await;
    if probe_leaf.assigned_to != "backend" || !probe_leaf.probe {
        fail(B, format!("the probe: {probe_leaf:?}"));
    }
    let during = delegate(B, &p, "ceo", chain("during")).await;
    if wait_done(B, &during).await.status != TaskStatus::Completed {
        fail(B, "the chain during the probe did not complete");
    }
    let during_leaf = leaf_of(B, &p, &during.task_id).await;
    if during_leaf.assigned_to != "frontend" {
        fail(B, format!("a delegation during the probe: {during_leaf:?}"));
    }
    gate.open();
    if wait_done(B, &probe).await.status != TaskStatus::Completed {
        fail(B, "the probe's chain did not complete");
    }
    // Closed again: the backend gets its tasks.
    let after = delegate(B, &p, "ceo", chain("after")).await;
    if wait_done(B, &after).await.status != TaskStatus::Completed {
        fail(B, "the chain after the probe did not complete");
    }
    let after_leaf = leaf_of(B, &p, &after.task_id).await;
    if after_leaf.assigned_to != "backend" || after_leaf.probe {
        fail(B, format!("after a good probe: {after_leaf:?}"));
    }
    let backend_titles: Vec<String> = j.runs_of("backend").into_iter().map(|r| r.1).collect();
    if backend_titles != ["fail0", "fail1", "fail2", "probe", "after"] {
        fail(B, format!("the backend ran {backend_titles:?}"));
    }
    none_matching(
        B,
        "a second opening at the principal",
        &mut inbox,
        Duration::from_millis(300),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    o.shutdown().await;
}
