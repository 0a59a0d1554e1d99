//! The task tree: GenBrain's tree built by delegation, refusals of
//! delegations the chart does not allow, and shortcuts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::agent::{Agent, AgentError, Context, DelegateError, Outcome, Task, TaskSpec};
use crate::chart::RefusalReason;
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::store::StateStore;
use crate::transport::Transport;
use crate::transport::TransportExt;

use super::super::super::fail;
use super::super::support::*;
use super::super::{genbrain_task_tree, task_tree_mismatch};

/// GenBrain's task tree, built by real delegations down its chart — the
/// founder asks the ceo, the ceo delegates to the cto, cso and marketing,
/// the cto to backend, frontend and devops with its SLAs — rolls up
/// completed and reads back as its JSON (see [`task_tree_mismatch`]).
pub async fn genbrain_tree_built_by_delegation(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "genbrain_tree_built_by_delegation";
    let j = Arc::new(Journal::default());
    let o = start(B, &t, &s, &org, genbrain_agents(&j)).await;
    let seed = genbrain_task_tree();
    let root = delegate(B, &o.principal(), "ceo", genbrain_root_spec(&seed)).await;
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Completed {
        fail(
            B,
            format!("the root ended {} ({:?})", rec.status, rec.error),
        );
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let json = serde_json::to_value(&tree).unwrap_or_else(|e| fail(B, e));
    if let Some(diff) = task_tree_mismatch(&seed, &json) {
        fail(B, format!("the tree is not GenBrain's: {diff}\n{json:#}"));
    }
    // Every task ran once; the managers rolled up once each.
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    let ids: HashSet<TaskId> = tree.iter().map(|n| n.task_id.clone()).collect();
    if runs.len() != 7 || runs.values().any(|n| *n != 1) || runs.keys().any(|k| !ids.contains(k)) {
        fail(B, format!("handler runs per task: {runs:?}"));
    }
    let roll_ups: Vec<String> = j.roll_ups().iter().map(|r| r.0.to_string()).collect();
    if roll_ups != ["cto", "ceo"] {
        fail(
            B,
            format!("roll-ups {roll_ups:?}, expected the cto's then the ceo's"),
        );
    }
    // The result rolled up: the ceo's result holds each child's.
    let result = rec.result.unwrap_or_default();
    for child in &rec.children {
        if result.get(child.as_str()).is_none() {
            fail(B, format!("the root's result lacks {child}: {result}"));
        }
    }
    o.shutdown().await;
}

/// The agents of GenBrain's tree: planners for the ceo and cto, completing
/// leaves for the others.
pub(super) fn genbrain_agents(j: &Arc<Journal>) -> Vec<(&'static str, Arc<dyn Agent>)> {
    vec![
        ("ceo", Arc::new(Planner::new(j))),
        ("cto", Arc::new(Planner::new(j))),
        ("cso", Arc::new(Leaf::completing(j))),
        ("marketing", Arc::new(Leaf::completing(j))),
        ("backend", Arc::new(Leaf::completing(j))),
        ("frontend", Arc::new(Leaf::completing(j))),
        ("devops", Arc::new(Leaf::completing(j))),
    ]
}

/// The founder's task for the ceo that builds GenBrain's tree: each
/// manager's plan is its children in that tree (titles, assignees, SLAs).
pub(super) fn genbrain_root_spec(seed: &Value) -> TaskSpec {
    fn plan_of(node: &Value) -> Value {
        let steps: Vec<Step> = node["children"]
            .as_array()
            .map(|children| {
                children
                    .iter()
                    .map(|c| Step {
                        to: c["assigned_to"].as_str().unwrap_or_default().to_owned(),
                        title: c["title"].as_str().unwrap_or_default().to_owned(),
                        sla_minutes: c["sla_minutes"].as_u64(),
                        task_type: None,
                        input: plan_of(c),
                    })
                    .collect()
            })
            .unwrap_or_default();
        plan(steps)
    }
    TaskSpec::new(seed["title"].as_str().unwrap_or_default()).input(plan_of(seed))
}

/// Delegating up (backend → cto) or sideways (backend → frontend) is
/// refused in the handler with `NotAllowed` naming the rule, before the
/// transport: no task document, no task message. The principal may not skip
/// a level either.
pub async fn delegation_up_or_sideways_refused(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "delegation_up_or_sideways_refused";
    let j = Arc::new(Journal::default());
    /// Per target: the refusal's message, or what happened instead.
    type Seen = Arc<Mutex<Vec<(String, Result<String, String>)>>>;
    let refusals: Seen = Arc::default();
    /// Tries to delegate to the cto (its manager) and to the frontend (a
    /// peer), then completes with what happened.
    struct Backend(Seen);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let mut seen = Vec::new();
            for to in ["cto", "frontend"] {
                let r = match cx.delegate(to, TaskSpec::new(format!("{to}, do it"))).await {
                    Ok(d) => Ok(format!("delegated {}", d.task_id)),
                    Err(DelegateError::NotAllowed(r))
                        if r.from == "backend"
                            && r.to == to
                            && r.reason == RefusalReason::NoRoute =>
                    {
                        Err(r.to_string())
                    }
                    Err(e) => Ok(format!("refused otherwise: {e:?}")),
                };
                seen.push((to.to_owned(), r));
            }
            if let Ok(mut r) = self.0.lock() {
                r.extend(seen);
            }
            Ok(Outcome::Complete(json!("refusals seen")))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(Backend(Arc::clone(&refusals)))),
            ("frontend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let (backend, cto, frontend) = (name(B, "backend"), name(B, "cto"), name(B, "frontend"));
    let mut up = tap(B, &t, o.subjects().inbox(&cto, &backend)).await;
    let mut sideways = tap(B, &t, o.subjects().inbox(&frontend, &backend)).await;
    let p = o.principal();
    // The principal may delegate to its direct report only.
    match p.delegate("cto", TaskSpec::new("skip the ceo")).await {
        Err(DelegateError::NotAllowed(r)) if r.reason == RefusalReason::NoRoute => {}
        other => fail(B, format!("the founder skipping a level: {other:?}")),
    }
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "Try to delegate")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the chain did not complete");
    }
    let seen = refusals.lock().map(|r| r.clone()).unwrap_or_default();
    if seen.len() != 2 {
        fail(B, format!("the backend's attempts: {seen:?}"));
    }
    for (to, r) in &seen {
        match r {
            Err(msg)
                if msg.contains(&format!("`backend` may not delegate to `{to}`"))
                    && msg.contains("is not a direct report of `backend`")
                    && msg.contains("no shortcut") => {}
            other => fail(
                B,
                format!("delegating to {to}: {other:?}, expected NotAllowed naming the rule"),
            ),
        }
    }
    // Nothing reached the store or the transport: three tasks (ceo, cto,
    // backend), and no task message up or sideways.
    let tasks = tasks_of(B, &s, &org).await;
    if tasks.len() != 3 || tasks.iter().any(|t| t.assigned_by == "backend") {
        fail(
            B,
            format!(
                "task documents after the refusals: {:?}",
                tasks
                    .iter()
                    .map(|t| (&t.assigned_by, &t.assigned_to))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let up: Vec<Envelope> = drain(&mut up, Duration::from_millis(300)).await;
    if up.iter().any(|e| e.kind == Kind::Task) {
        fail(B, format!("a task went up to the cto: {up:?}"));
    }
    let sideways = drain(&mut sideways, Duration::from_millis(100)).await;
    if !sideways.is_empty() {
        fail(
            B,
            format!("messages sideways to the frontend: {sideways:?}"),
        );
    }
    if !j.runs_of("frontend").is_empty() {
        fail(B, "the frontend ran a task");
    }
    o.shutdown().await;
}

/// The chart's shortcut lets the ceo give `api_change` tasks straight to
/// the backend (the cto never sees them); a task of another type, or none,
/// is refused, and a forged task of another type is refused by the backend
/// too (dead-lettered, never run).
pub async fn shortcut_honoured_for_its_task_type(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "shortcut_honoured_for_its_task_type";
    let j = Arc::new(Journal::default());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    /// Delegates an `api_change` to the backend, and tries a `feature` and
    /// an untyped task.
    struct Ceo(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Agent for Ceo {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let mut seen = Vec::new();
            let d = cx
                .delegate(
                    "backend",
                    TaskSpec::new("Add a page parameter to /api/v2/analytics")
                        .task_type("api_change"),
                )
                .await?;
            seen.push(format!("api_change -> {}", d.assigned_to));
            for ty in [Some("feature"), None] {
                let mut spec = TaskSpec::new("Build a whole feature");
                if let Some(ty) = ty {
                    spec = spec.task_type(ty);
                }
                match cx.delegate("backend", spec).await {
                    Err(DelegateError::NotAllowed(r))
                        if r.reason == RefusalReason::NoRoute && r.task_type.as_deref() == ty =>
                    {
                        seen.push(format!("{ty:?} refused: {r}"));
                    }
                    other => seen.push(format!("{ty:?} NOT refused: {other:?}")),
                }
            }
            if let Ok(mut s) = self.0.lock() {
                s.extend(seen);
            }
            Ok(Outcome::AwaitSubtasks)
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Ceo(Arc::clone(&seen)))),
            ("cto", Arc::new(Leaf::completing(&j))),
            ("backend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let root = delegate(B, &p, "ceo", TaskSpec::new("Paginate the analytics API")).await;
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Completed || rec.children.len() != 1 {
        fail(
            B,
            format!(
                "the root ended {} with children {:?}",
                rec.status, rec.children
            ),
        );
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let ok = seen.len() == 3
        && seen[0] == "api_change -> backend"
        && seen[1..]
            .iter()
            .all(|s| s.contains(" refused: ") && s.contains("no shortcut lets `ceo` delegate"));
    if !ok {
        fail(B, format!("the ceo's delegations: {seen:?}"));
    }
    let child = task(B, &p, &rec.children[0]).await;
    if child.assigned_by != "ceo"
        || child.assigned_to != "backend"
        || child.task_type.as_deref() != Some("api_change")
        || child.parent.as_ref() != Some(&root.task_id)
        || child.status != TaskStatus::Completed
    {
        fail(B, format!("the shortcut task: {child:?}"));
    }
    if !j.runs_of("cto").is_empty() || j.runs_of("backend").len() != 1 {
        fail(B, format!("runs: {:?}", j.runs()));
    }
    // The receiving side enforces the same rule: a `feature` task from the
    // ceo, published past the ceo's own check, is never run.
    let (ceo, backend) = (name(B, "ceo"), name(B, "backend"));
    let id = MessageId::new();
    let forged = Envelope::new(
        org.clone(),
        ceo.clone(),
        Kind::Task,
        json!({"task_id": id, "title": "forged feature", "task_type": "feature"}),
    )
    .with_id(id.clone())
    .with_to(backend.clone());
    if let Err(e) = t
        .publish_envelope(&o.subjects().inbox(&backend, &ceo), &forged)
        .await
    {
        fail(B, e);
    }
    let found = dead_letter_of(B, &p, &id).await;
    if found.reason_code != "not_allowed" || found.role != "backend" || found.attempts != 0 {
        fail(B, format!("the forged task's dead letter: {found:?}"));
    }
    if j.runs_of("backend").len() != 1 {
        fail(B, "the backend ran the forged task");
    }
    o.shutdown().await;
}
