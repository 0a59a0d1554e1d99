//! Many tasks at once: concurrent delegations, batches, cancellation and
//! idempotency keys.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::agent::{Agent, AgentError, Context, Outcome, SubtaskResult, Task, TaskSpec};
use crate::chart::RoleSpec;
use crate::envelope::{Kind, TaskId};
use crate::hierarchy::{gather, TaskRecord, TaskStatus};
use crate::name::Name;
use crate::store::StateStore;
use crate::transport::Transport;

use super::super::super::fail;
use super::super::support::*;
use super::super::{genbrain_builder, genbrain_chart, suite_config};

/// How many delegations [`thousand_concurrent_delegations_each_once`] makes.
pub const CONCURRENT_DELEGATIONS: usize = 1_000;

/// 1,000 delegations from the principal to one agent (concurrency 8), made
/// 100 at a time concurrently: each task runs once and completes.
pub async fn thousand_concurrent_delegations_each_once(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "thousand_concurrent_delegations_each_once";
    let j = Arc::new(Journal::default());
    let o = start_with(
        B,
        &t,
        &s,
        genbrain_chart(&org),
        suite_config(),
        vec![("ceo", Arc::new(Leaf::completing(&j)), 8)],
    )
    .await;
    let p = o.principal();
    let mut ids = HashSet::new();
    let titles: Vec<String> = (0..CONCURRENT_DELEGATIONS)
        .map(|i| format!("task {i}"))
        .collect();
    for chunk in titles.chunks(100) {
        let handles = futures::future::join_all(
            chunk
                .iter()
                .map(|title| p.delegate("ceo", TaskSpec::new(title.clone()))),
        )
        .await;
        for h in handles {
            match h {
                Ok(h) => {
                    ids.insert(h.task_id);
                }
                Err(e) => fail(B, format!("a concurrent delegation: {e}")),
            }
        }
    }
    if ids.len() != CONCURRENT_DELEGATIONS {
        fail(B, format!("{} distinct task ids", ids.len()));
    }
    let within = Duration::from_secs(300);
    eventually_within(
        B,
        "every task ran",
        within,
        Duration::from_millis(200),
        || async { j.runs().len() >= CONCURRENT_DELEGATIONS },
    )
    .await;
    eventually_within(
        B,
        "every task completed",
        within,
        Duration::from_secs(1),
        || async {
            let tasks = tasks_of(B, &s, &org).await;
            let completed = tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Completed)
                .count();
            completed == CONCURRENT_DELEGATIONS
        },
    )
    .await;
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    if runs.len() != CONCURRENT_DELEGATIONS
        || !twice.is_empty()
        || runs.keys().any(|k| !ids.contains(k))
    {
        fail(
            B,
            format!("{} tasks ran; ran more than once: {twice:?}", runs.len()),
        );
    }
    o.shutdown().await;
}

/// A batch of 10 (GenBrain's parallel sub-agents): marketing delegates ten
/// posts to its writers with at most 3 in flight and gathers them; one post
/// fails, and marketing completes with 9 completed and 1 failed. Never more
/// than 3 writers run at once, though the writers could run 10.
pub async fn batch_of_ten_gathered_three_in_flight(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "batch_of_ten_gathered_three_in_flight";
    let j = Arc::new(Journal::default());
    /// Delegates ten posts as a batch and gathers them.
    struct Marketing(Arc<Journal>);
    #[async_trait]
    impl Agent for Marketing {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let specs = (0..10)
                .map(|i| TaskSpec::new(format!("Post {i}")))
                .collect();
            cx.delegate_batch("writer", specs, 3).await?;
            Ok(Outcome::AwaitSubtasks)
        }
        async fn on_subtasks_done(
            &self,
            cx: &Context,
            task: Task,
            results: Vec<SubtaskResult>,
        ) -> Result<Outcome, AgentError> {
            self.0.push(Entry::SubtasksDone {
                role: cx.role().clone(),
                task: task.id,
                results: results.clone(),
            });
            Ok(gather(results))
        }
    }
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        Leaf::new(&j, move |task, _| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if task.title == "Post 7" {
                    return Err(AgentError::permanent("off-brand"));
                }
                Ok(Outcome::Complete(
                    json!({"url": format!("/blog/{}", task.title)}),
                ))
            }
        })
    };
    let chart = match genbrain_builder(&org)
        .role(RoleSpec::new("writer").reports_to("marketing"))
        .build()
    {
        Ok(c) => c,
        Err(e) => fail(B, e),
    };
    let o = start_with(
        B,
        &t,
        &s,
        chart,
        suite_config(),
        vec![
            ("ceo", Arc::new(Planner::new(&j)), 4),
            ("marketing", Arc::new(Marketing(Arc::clone(&j))), 4),
            ("writer", Arc::new(writer), 10),
        ],
    )
    .await;
    let p = o.principal();
    let root = delegate(
        B,
        &p,
        "ceo",
        TaskSpec::new("Announce the dashboard").input(plan(vec![step(
            "marketing",
            "Ten posts about the dashboard",
        )])),
    )
    .await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the root did not complete");
    }
    let mkt = leaf_of_manager(B, &p, &root.task_id).await;
    let result = mkt.result.clone().unwrap_or_default();
    let completed = result["completed"].as_array().map_or(0, Vec::len);
    let failed = result["failed"].as_array().cloned().unwrap_or_default();
    if mkt.status != TaskStatus::Completed
        || completed != 9
        || failed.len() != 1
        || failed[0]["title"] != "Post 7"
        || failed[0]["status"] != "failed"
        || !failed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("off-brand")
    {
        fail(B, format!("marketing's gathered result: {mkt:?}"));
    }
    let titles: Vec<String> = futures::future::join_all(mkt.children.iter().map(|c| p.task(c)))
        .await
        .into_iter()
        .map(|r| match r {
            Ok(Some(r)) if r.status.is_terminal() => r.title,
            other => fail(B, format!("a batch task: {other:?}")),
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("Post {i}")).collect();
    if titles != expected || !mkt.queued_children.is_empty() {
        fail(B, format!("the batch in the tree: {titles:?}"));
    }
    let ran: Vec<(TaskId, String, u32)> = j.runs_of("writer");
    let distinct: HashSet<&TaskId> = ran.iter().map(|r| &r.0).collect();
    if ran.len() != 10 || distinct.len() != 10 {
        fail(B, format!("the writers ran {ran:?}"));
    }
    let most = most.load(Ordering::SeqCst);
    if most > 3 {
        fail(B, format!("{most} batch tasks ran at once, the limit is 3"));
    }
    if most < 2 {
        fail(B, "the batch ran one task at a time");
    }
    if j.roll_ups().iter().filter(|r| r.0 == "marketing").count() != 1 {
        fail(B, "marketing gathered more than once");
    }
    o.shutdown().await;
}

/// Cancelling a tree in progress (the cto waiting on two slow subtasks)
/// cancels every open task of it at once; `wait` returns the cancelled
/// root and the founder is told; when the slow handlers finish, their
/// outcomes are dropped: nothing rolls up and nothing leaves `cancelled`.
pub async fn cancel_ends_the_open_subtree(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "cancel_ends_the_open_subtree";
    let j = Arc::new(Journal::default());
    let gate = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let slow = || {
        let (g, st, fin) = (gate.clone(), Arc::clone(&started), Arc::clone(&finished));
        Leaf::new(&j, move |task, _| {
            let (g, st, fin) = (g.clone(), Arc::clone(&st), Arc::clone(&fin));
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                g.pass().await;
                fin.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Complete(json!({"title": task.title})))
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
            ("backend", Arc::new(slow())),
            ("frontend", Arc::new(slow())),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let root = delegate(
        B,
        &p,
        "ceo",
        TaskSpec::new("Ship the dashboard").input(plan(vec![step("cto", "Build it").then(vec![
            step("backend", "Slow API"),
            step("frontend", "Slow UI"),
        ])])),
    )
    .await;
    eventually(B, "both slow handlers started", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    let cancelled = root.cancel().await.unwrap_or_else(|e| fail(B, e));
    if cancelled != 4 {
        fail(B, format!("{cancelled} tasks cancelled, expected 4"));
    }
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Cancelled {
        fail(B, format!("wait returned {}", rec.status));
    }
    let told = next_matching(B, "the founder told of the cancellation", &mut inbox, |e| {
        e.kind == Kind::Result
    })
    .await;
    if told.correlation_id.as_ref() != Some(&root.task_id) || told.payload["status"] != "cancelled"
    {
        fail(B, format!("the founder's result: {told:?}"));
    }
    let all_cancelled = |tasks: &[TaskRecord]| {
        tasks.len() == 4 && tasks.iter().all(|t| t.status == TaskStatus::Cancelled)
    };
    let tasks = tasks_of(B, &s, &org).await;
    if !all_cancelled(&tasks) {
        fail(
            B,
            format!(
                "after cancel: {:?}",
                tasks
                    .iter()
                    .map(|t| (&t.assigned_to, t.status))
                    .collect::<Vec<_>>()
            ),
        );
    }
    // The slow handlers finish; their outcomes are dropped.
    gate.open();
    eventually(B, "the slow handlers finished and settled", || async {
        finished.load(Ordering::SeqCst) == 2
            && o.health()
                .iter()
                .filter(|h| h.role == "backend" || h.role == "frontend")
                .all(|h| h.in_flight == 0)
    })
    .await;
    let tasks = tasks_of(B, &s, &org).await;
    if !all_cancelled(&tasks) || tasks.iter().any(|t| t.result.is_some()) {
        fail(B, format!("after the handlers finished: {tasks:?}"));
    }
    if !j.roll_ups().is_empty() {
        fail(
            B,
            format!("a cancelled manager rolled up: {:?}", j.roll_ups()),
        );
    }
    if root.cancel().await.unwrap_or_else(|e| fail(B, e)) != 0 {
        fail(B, "cancelling an ended tree cancelled something");
    }
    o.shutdown().await;
}

/// An idempotency key never creates a second task: the founder delegating
/// twice (or twice at once) with one key gets one task id, one document,
/// one run. Keys are per delegator: the ceo's equal key is its own, and the
/// ceo's second use of it returns its first task.
pub async fn idempotency_key_creates_one_task(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "idempotency_key_creates_one_task";
    let j = Arc::new(Journal::default());
    let made: Arc<Mutex<Vec<TaskId>>> = Arc::default();
    /// Delegates to the cto with the key "k1" and completes with the task id.
    struct Ceo(Arc<Journal>, Arc<Mutex<Vec<TaskId>>>);
    #[async_trait]
    impl Agent for Ceo {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            self.0.push(Entry::Task {
                role: cx.role().clone(),
                task: task.id,
                title: task.title,
                attempt: cx.attempt(),
            });
            let d = cx
                .delegate("cto", TaskSpec::new("Review it").idempotency_key("k1"))
                .await?;
            if let Ok(mut m) = self.1.lock() {
                m.push(d.task_id.clone());
            }
            Ok(Outcome::Complete(json!({ "cto_task": d.task_id })))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Ceo(Arc::clone(&j), Arc::clone(&made)))),
            ("cto", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let first = delegate(B, &p, "ceo", TaskSpec::new("Once").idempotency_key("k1")).await;
    wait_done(B, &first).await;
    let again = delegate(B, &p, "ceo", TaskSpec::new("Once").idempotency_key("k1")).await;
    if again.task_id != first.task_id {
        fail(
            B,
            format!("key k1 gave {} then {}", first.task_id, again.task_id),
        );
    }
    // Two at once with a new key.
    let (x, y) = futures::join!(
        p.delegate("ceo", TaskSpec::new("Race").idempotency_key("k2")),
        p.delegate("ceo", TaskSpec::new("Race").idempotency_key("k2")),
    );
    let (x, y) = match (x, y) {
        (Ok(x), Ok(y)) => (x, y),
        other => fail(B, format!("concurrent delegations with one key: {other:?}")),
    };
    if x.task_id != y.task_id {
        fail(
            B,
            format!("concurrent uses of k2 made {} and {}", x.task_id, y.task_id),
        );
    }
    wait_done(B, &x).await;
    // The ceo's "k1" is its own key: its first use made a cto task (not the
    // founder's), its second use returned that task.
    eventually(B, "the cto's review ran", || async {
        !j.runs_of("cto").is_empty()
    })
    .await;
    let made = made.lock().map(|m| m.clone()).unwrap_or_default();
    let tasks = tasks_of(B, &s, &org).await;
    let count = |role: &str| tasks.iter().filter(|t| t.assigned_to == role).count();
    if made.len() != 2 || made[0] != made[1] || made[0] == first.task_id {
        fail(B, format!("the ceo's delegations with k1: {made:?}"));
    }
    if count("ceo") != 2 || count("cto") != 1 {
        fail(
            B,
            format!("{} ceo tasks, {} cto tasks", count("ceo"), count("cto")),
        );
    }
    let ceo_runs: Vec<String> = j.runs_of("ceo").into_iter().map(|r| r.1).collect();
    if ceo_runs != ["Once", "Race"] || j.runs_of("cto").len() != 1 {
        fail(B, format!("runs {:?}", j.runs()));
    }
    o.shutdown().await;
}
