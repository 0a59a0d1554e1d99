//! Delivery: roll-up across processes, the outbox, exactly-once state
//! under redelivery, leases and backoff.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::super::faults::{fails_first_publishes, loses_first_acks};
use super::super::{fail, EVENTUALLY};
use super::{
    counter_key, delegate, eventually, next_envelope, start, suite_chart, suite_config, wait_done,
    Manager, Scripted, LEASE, MIN_BACKOFF,
};
use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::envelope::Kind;
use crate::hierarchy::{TaskRecord, TaskStatus};
use crate::name::Name;
use crate::runtime::{org_collection, Org};
use crate::store::{DocKey, Precondition, StateStore, StateStoreExt, Write};
use crate::subject::SubjectPattern;
use crate::transport::{PublishOptions, Transport};

/// A manager's task waits for its subtasks and rolls their results up; the
/// principal reads the finished tree.
pub async fn delegation_rolls_up(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "delegation_rolls_up";
    let w = Scripted::completing();
    let alt = Scripted::completing();
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("m", Arc::new(Manager)),
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(alt.clone())),
        ],
    )
    .await;
    let root = match o
        .principal()
        .delegate(
            "m",
            TaskSpec::new("ship").input(json!({"to": ["w", "alt"]})),
        )
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    let rec = wait_done(B, &o, &root).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("root ended {} ({:?})", rec.status, rec.error));
    }
    if rec.children.len() != 2 || !rec.open_children.is_empty() {
        fail(
            B,
            format!(
                "root children {:?}, open {:?}",
                rec.children, rec.open_children
            ),
        );
    }
    let result = rec.result.clone().unwrap_or_default();
    for child in &rec.children {
        if result.get(child.as_str()).is_none() {
            fail(B, format!("rolled-up result lacks {child}: {result}"));
        }
    }
    let tree = match o.principal().task_tree(&root).await {
        Ok(v) => v,
        Err(e) => fail(B, e),
    };
    if !tree.all_completed() || tree.children.len() != 2 || tree.len() != 3 {
        fail(B, format!("tree {tree:?}"));
    }
    for c in &tree.children {
        if c.assigned_by != "m" || c.sla_minutes != Some(5) {
            fail(B, format!("child in tree {c:?}"));
        }
    }
    // One trace spans the tree: every subtask continues the root's trace.
    let trace_of = |r: &TaskRecord| {
        r.traceparent
            .as_deref()
            .and_then(|t| t.parse::<crate::envelope::TraceContext>().ok())
            .map(|t| t.trace_id)
    };
    let root_trace = trace_of(&rec);
    for child in &rec.children {
        let child_rec = o.principal().task(child).await.ok().flatten();
        if root_trace.is_none() || child_rec.as_ref().map(trace_of) != Some(root_trace) {
            fail(B, format!("subtask {child} is not in the root's trace"));
        }
    }
    let json = serde_json::to_value(&tree).unwrap_or_default();
    if json["children"][0]["status"] != "completed" {
        fail(B, format!("tree JSON {json}"));
    }
    if w.runs().len() != 1 || alt.runs().len() != 1 {
        fail(B, "each subtask ran once");
    }
    // The principal's inbox has the root's result.
    let mut inbox = o.principal().inbox().await.unwrap_or_else(|e| fail(B, e));
    let env = next_envelope(B, "the root's result", &mut inbox).await;
    if env.kind != Kind::Result || env.correlation_id.as_ref() != Some(&root) {
        fail(B, format!("principal inbox got {env:?}"));
    }
    o.shutdown().await;
}

/// Roles hosted by different processes (two orgs of one chart on shared
/// backends) delegate and roll up through the transport; each reports its
/// own agents' health.
pub async fn roles_split_across_processes(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "roles_split_across_processes";
    let managers = start(B, &t, &s, &org, vec![("m", Arc::new(Manager))]).await;
    let w = Scripted::completing();
    let workers = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(Scripted::completing())),
        ],
    )
    .await;
    eventually(B, "both processes ready", || async {
        managers.is_ready() && workers.is_ready()
    })
    .await;
    let root = match managers
        .principal()
        .delegate(
            "m",
            TaskSpec::new("split").input(json!({"to": ["w", "alt"]})),
        )
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    if wait_done(B, &managers, &root).await.status != TaskStatus::Completed {
        fail(B, "the split tree did not complete");
    }
    let hosted: Vec<String> = workers
        .health()
        .iter()
        .map(|h| h.role.to_string())
        .collect();
    if hosted != ["alt", "w"] {
        fail(B, format!("the workers' process reports {hosted:?}"));
    }
    eventually(B, "w's counters", || async {
        workers.health().iter().any(|h| {
            h.role == "w" && h.completed >= 1 && h.last_active.is_some() && h.in_flight == 0
        })
    })
    .await;
    if managers.health().len() != 1 || w.runs().len() != 1 {
        fail(B, format!("managers' health {:?}", managers.health()));
    }
    managers.shutdown().await;
    workers.shutdown().await;
}

/// A delegation whose publish fails after its task was written is not lost:
/// the outbox sweep publishes it later.
pub async fn outbox_survives_a_failed_publish(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "outbox_survives_a_failed_publish";
    let flaky: Arc<dyn Transport> = fails_first_publishes(Arc::clone(&t), 1);
    let x = Scripted::completing();
    let o = start(B, &flaky, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let id = delegate(B, &o, "x", "despite the outage").await;
    if wait_done(B, &o, &id).await.status != TaskStatus::Completed || x.runs().len() != 1 {
        fail(B, format!("runs {:?}", x.runs()));
    }
    o.shutdown().await;
}

/// A published message's outbox entry is deleted (riding on a later commit,
/// or by the cleaner when none comes): the outbox holds only what is not
/// published yet, so a sweep never republishes what went out.
pub async fn published_outbox_entries_are_deleted(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "published_outbox_entries_are_deleted";
    let x = Scripted::completing();
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    for i in 0..3 {
        let id = delegate(B, &o, "x", &format!("t{i}")).await;
        if wait_done(B, &o, &id).await.status != TaskStatus::Completed {
            fail(B, format!("task {i} did not complete"));
        }
    }
    let outbox = crate::runtime::org_collection(&org, "outbox").unwrap_or_else(|e| fail(B, e));
    eventually(B, "the outbox emptied", || async {
        s.list_all(&outbox)
            .await
            .unwrap_or_else(|e| fail(B, e))
            .is_empty()
    })
    .await;
    o.shutdown().await;
}

/// With every first acknowledgement lost, each task still runs once and its
/// staged state changes once.
pub async fn processed_once_under_redelivery(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "processed_once_under_redelivery";
    let lossy: Arc<dyn Transport> = loses_first_acks(Arc::clone(&t));
    let counter = counter_key(B, &org, "x");
    struct Counting {
        key: DocKey,
        runs: Arc<AtomicU32>,
    }
    #[async_trait]
    impl Agent for Counting {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let current = cx.store().get(&self.key).await?;
            let (n, pre) = match current {
                Some(d) => (
                    d.value["n"].as_u64().unwrap_or(0),
                    Precondition::Version(d.version),
                ),
                None => (0, Precondition::MustNotExist),
            };
            cx.stage(Write::put(self.key.clone(), json!({"n": n + 1}), pre))?;
            Ok(Outcome::Complete(json!(n + 1)))
        }
    }
    let runs = Arc::new(AtomicU32::new(0));
    let agent = Counting {
        key: counter.clone(),
        runs: Arc::clone(&runs),
    };
    let o = {
        let builder = Org::builder(suite_chart(&org))
            .transport(Arc::clone(&lossy))
            .store(Arc::clone(&s))
            .config(suite_config())
            .agent("x", agent);
        builder.start().await.unwrap_or_else(|e| fail(B, e))
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(delegate(B, &o, "x", &format!("t{i}")).await);
    }
    for id in &ids {
        let rec = wait_done(B, &o, id).await;
        if rec.status != TaskStatus::Completed {
            fail(B, format!("{id} ended {}", rec.status));
        }
    }
    // Every delivery's first ack was lost, so each comes again after the ack
    // wait; the claims make those redeliveries acks without runs.
    tokio::time::sleep(LEASE * 3).await;
    if runs.load(Ordering::SeqCst) != 3 {
        fail(
            B,
            format!("{} runs for 3 tasks", runs.load(Ordering::SeqCst)),
        );
    }
    match s.get(&counter).await {
        Ok(Some(d)) if d.value["n"] == 3 => {}
        other => fail(
            B,
            format!("staged state changed other than once per task: {other:?}"),
        ),
    }
    o.shutdown().await;
}

/// A completed task's message published again (as a broker may replay after
/// a crash, with attempt 1) is acknowledged without running.
pub async fn replay_after_completion_not_rerun(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "replay_after_completion_not_rerun";
    let x = Scripted::completing();
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let subjects = o.subjects().clone();
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let inbox = subjects.inbox(&n("x"), &n("p"));
    let mut tap = t
        .subscribe(&SubjectPattern::from(&inbox))
        .await
        .unwrap_or_else(|e| fail(B, e));
    let id = delegate(B, &o, "x", "once").await;
    wait_done(B, &o, &id).await;
    let raw = match tokio::time::timeout(EVENTUALLY, tap.next()).await {
        Ok(Some(Ok(m))) => m.payload,
        other => fail(B, format!("tap: {other:?}")),
    };
    // Same bytes, no dedupe id: a new stream message, delivered as attempt 1.
    if let Err(e) = t.publish(&inbox, raw, PublishOptions::default()).await {
        fail(B, e);
    }
    let second = delegate(B, &o, "x", "after").await;
    wait_done(B, &o, &second).await;
    tokio::time::sleep(LEASE).await;
    let runs: Vec<String> = x.runs().into_iter().map(|r| r.title).collect();
    if runs != ["once", "after"] {
        fail(B, format!("runs {runs:?}"));
    }
    o.shutdown().await;
}

/// A handler that dies mid-task (its process is gone) gets the task again,
/// as attempt 2, once its lease has run out.
pub async fn lease_expiry_redelivers(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "lease_expiry_redelivers";
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let hangs = Scripted::new(move |_, _| {
        flag.store(true, Ordering::SeqCst);
        std::future::pending()
    });
    let a = start(B, &t, &s, &org, vec![("x", Arc::new(hangs))]).await;
    let id = delegate(B, &a, "x", "survive").await;
    eventually(B, "the first attempt started", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    let crashed = Instant::now();
    a.abort().await;
    let x = Scripted::completing();
    let b = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let rec = wait_done(B, &b, &id).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("ended {}", rec.status));
    }
    let runs = x.runs();
    match runs.as_slice() {
        [r] if r.attempt == 2 => {
            // The lease was extended every third of it until the crash.
            if r.started.duration_since(crashed) < LEASE / 2 {
                fail(
                    B,
                    format!(
                        "rerun {:?} after the crash, before the lease ran out",
                        r.started.duration_since(crashed)
                    ),
                );
            }
        }
        other => fail(B, format!("runs after the crash: {other:?}")),
    }
    b.shutdown().await;
}

/// A handler that runs for longer than its lease keeps it (and the
/// transport's ack wait) and runs once.
pub async fn long_handler_keeps_its_lease(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "long_handler_keeps_its_lease";
    let slow = Scripted::new(|_, _| async {
        tokio::time::sleep(LEASE * 3).await;
        Ok(Outcome::Complete(Value::Null))
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(slow.clone()))]).await;
    let id = delegate(B, &o, "x", "slow").await;
    let rec = wait_done(B, &o, &id).await;
    let runs = slow.runs();
    if rec.status != TaskStatus::Completed || runs.len() != 1 || runs[0].attempt != 1 {
        fail(B, format!("status {}, runs {runs:?}", rec.status));
    }
    o.shutdown().await;
}

/// A handler whose lease is lost (another attempt took the message over)
/// is cancelled — what it awaits is dropped — instead of running on to an
/// outcome that cannot be committed; the owner's attempt completes the task.
pub async fn lost_lease_cancels_the_handler(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "lost_lease_cancels_the_handler";
    /// Sets its flag when dropped: the first attempt's work was cancelled.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let started = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let (flag, dropped) = (Arc::clone(&started), Arc::clone(&cancelled));
    let x = Scripted::new(move |_, attempt| {
        let guard = (attempt == 1).then(|| Dropped(Arc::clone(&dropped)));
        flag.store(true, Ordering::SeqCst);
        async move {
            if let Some(_guard) = guard {
                std::future::pending::<()>().await;
            }
            Ok(Outcome::Complete(json!(attempt)))
        }
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let id = delegate(B, &o, "x", "taken over").await;
    eventually(B, "the first attempt started", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    // Another process takes the claim over (as if this one had stalled past
    // its lease): same attempt, another owner.
    let claims = org_collection(&org, "claims").unwrap_or_else(|e| fail(B, e));
    let docs = s.list_all(&claims).await.unwrap_or_else(|e| fail(B, e));
    let Some(claim) = docs
        .into_iter()
        .find(|d| d.key.id().starts_with("x.") && d.value["state"] == "running")
    else {
        fail(B, "no running claim of x");
    };
    let mut stolen = claim.value.clone();
    stolen["owner"] = json!("another-process");
    if let Err(e) = s
        .put(&claim.key, stolen, Precondition::Version(claim.version))
        .await
    {
        fail(B, format!("taking the claim over: {e}"));
    }
    eventually(B, "the first attempt was cancelled", || {
        let cancelled = Arc::clone(&cancelled);
        async move { cancelled.load(Ordering::SeqCst) }
    })
    .await;
    // The taken-over claim's lease runs out; the next attempt completes.
    let rec = wait_done(B, &o, &id).await;
    let runs: Vec<u32> = x.runs().iter().map(|r| r.attempt).collect();
    if rec.status != TaskStatus::Completed || runs != [2] {
        fail(B, format!("status {}, completed runs {runs:?}", rec.status));
    }
    o.shutdown().await;
}

/// A transient failure is retried, not before the backoff.
pub async fn backoff_between_attempts(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "backoff_between_attempts";
    let flaky = Scripted::new(|_, attempt| async move {
        if attempt == 1 {
            Err(AgentError::transient("rate limited"))
        } else {
            Ok(Outcome::Complete(json!(attempt)))
        }
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(flaky.clone()))]).await;
    let id = delegate(B, &o, "x", "flaky").await;
    let rec = wait_done(B, &o, &id).await;
    let runs = flaky.runs();
    match (rec.status, runs.as_slice()) {
        (TaskStatus::Completed, [a, b]) if a.attempt == 1 && b.attempt == 2 => {
            let gap = b.started.duration_since(a.ended);
            if gap < MIN_BACKOFF {
                fail(
                    B,
                    format!("retried after {gap:?}, before the backoff {MIN_BACKOFF:?}"),
                );
            }
        }
        other => fail(B, format!("{other:?}")),
    }
    o.shutdown().await;
}
