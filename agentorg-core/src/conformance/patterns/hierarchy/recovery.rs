//! Exactly once under redelivery, and poison tasks dead-lettered,
//! requeued or discarded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::agent::{AgentError, Outcome, TaskSpec};
use crate::envelope::{Kind, MessageId, TaskId};
use crate::hierarchy::{TaskRecord, TaskStatus};
use crate::name::Name;
use crate::runtime::{DeadLetterRecord, DeadLetterStatus, OperationError};
use crate::store::StateStore;
use crate::transport::{PublishOptions, Transport};

use super::super::super::{fail, EVENTUALLY};
use super::super::support::*;
use super::super::{genbrain_chart, genbrain_task_tree, suite_config, task_tree_mismatch, LEASE};
use super::tree::{genbrain_agents, genbrain_root_spec};

/// GenBrain's task tree with every first acknowledgement lost (each message
/// comes again): every handler still runs once per task, each manager rolls
/// up once, and the tree is GenBrain's. A task message replayed after its
/// task completed is acknowledged without running.
pub async fn genbrain_tree_once_under_redelivery(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "genbrain_tree_once_under_redelivery";
    let lossy: Arc<dyn Transport> = crate::conformance::faults::loses_first_acks(Arc::clone(&t));
    let j = Arc::new(Journal::default());
    // Concurrency 1: one sender's messages to a role are handled in order.
    let agents = genbrain_agents(&j)
        .into_iter()
        .map(|(r, a)| (r, a, 1))
        .collect();
    let o = start_with(B, &lossy, &s, genbrain_chart(&org), suite_config(), agents).await;
    let (backend, cto) = (name(B, "backend"), name(B, "cto"));
    let backend_inbox = o.subjects().inbox(&backend, &cto);
    let mut tapped = tap(B, &t, backend_inbox.clone()).await;
    let seed = genbrain_task_tree();
    let p = o.principal();
    let root = delegate(B, &p, "ceo", genbrain_root_spec(&seed)).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the tree did not complete");
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let json = serde_json::to_value(&tree).unwrap_or_else(|e| fail(B, e));
    if let Some(diff) = task_tree_mismatch(&seed, &json) {
        fail(B, format!("the tree is not GenBrain's: {diff}"));
    }
    // Replay the backend's task message (same bytes, no dedupe id).
    let raw = loop {
        match tokio::time::timeout(EVENTUALLY, tapped.next()).await {
            Ok(Some(Ok(m))) => {
                let env = m.envelope(&crate::codec::Codec::default());
                if env.is_ok_and(|e| e.kind == Kind::Task) {
                    break m.payload;
                }
            }
            other => fail(B, format!("tapping the backend's task: {other:?}")),
        }
    };
    if let Err(e) = t
        .publish(&backend_inbox, raw, PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    // A second tree sends the backend its next task on the same subject, so
    // the replay is handled before it.
    let second = delegate(B, &p, "ceo", genbrain_root_spec(&seed)).await;
    if wait_done(B, &second).await.status != TaskStatus::Completed {
        fail(B, "the second tree did not complete");
    }
    // Lost acks bring every message back after the ack wait: let them.
    tokio::time::sleep(LEASE * 2).await;
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    if runs.len() != 14 || runs.values().any(|n| *n != 1) {
        fail(
            B,
            format!("handler runs per task under redelivery: {runs:?}"),
        );
    }
    let mut roll_ups: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _) in j.roll_ups() {
        *roll_ups.entry(id).or_default() += 1;
    }
    if roll_ups.len() != 4 || roll_ups.values().any(|n| *n != 1) {
        fail(B, format!("roll-ups per manager task: {roll_ups:?}"));
    }
    o.shutdown().await;
}

/// A poison task: its handler fails transiently on attempts 1, 2 and 3,
/// then it is dead-lettered (never a 4th run) and its record shows why;
/// requeued once the agent is healthy, it runs again (attempt 1 of a new
/// message), completes, and its parent rolls up. Another, discarded, fails,
/// and its parent rolls up failed.
pub async fn poison_task_dead_lettered_requeued_or_discarded(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "poison_task_dead_lettered_requeued_or_discarded";
    let j = Arc::new(Journal::default());
    let poisoned: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
        ["poison A", "poison B"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    ));
    let marketing = {
        let poisoned = Arc::clone(&poisoned);
        Leaf::new(&j, move |task, attempt| {
            let bad = poisoned
                .lock()
                .map(|p| p.contains(&task.title))
                .unwrap_or(true);
            async move {
                if bad {
                    Err(AgentError::transient(format!(
                        "CMS rejects the post (attempt {attempt})"
                    )))
                } else {
                    Ok(Outcome::Complete(json!({"post": task.title})))
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
            ("marketing", Arc::new(marketing)),
        ],
    )
    .await;
    let p = o.principal();
    let launch = |x: &str| {
        TaskSpec::new(format!("Launch {x}"))
            .input(plan(vec![step("marketing", &format!("poison {x}"))]))
    };
    let a = delegate(B, &p, "ceo", launch("A")).await;
    let b = delegate(B, &p, "ceo", launch("B")).await;
    let records: Vec<DeadLetterRecord> = eventually_some(
        B,
        "two dead letters",
        EVENTUALLY,
        Duration::from_millis(50),
        || async {
            let recs = p.dead_letter_records().await.unwrap_or_default();
            (recs.len() >= 2).then_some(recs)
        },
    )
    .await;
    let a_leaf = leaf_of_manager(B, &p, &a.task_id).await;
    let b_leaf = leaf_of_manager(B, &p, &b.task_id).await;
    let record_of = |leaf: &TaskRecord| -> DeadLetterRecord {
        match records
            .iter()
            .find(|r| r.task_id.as_ref() == Some(&leaf.task_id))
        {
            Some(r) => r.clone(),
            None => fail(B, format!("no dead letter for {}: {records:?}", leaf.title)),
        }
    };
    let (dl_a, dl_b) = (record_of(&a_leaf), record_of(&b_leaf));
    for (dl, leaf) in [(&dl_a, &a_leaf), (&dl_b, &b_leaf)] {
        if records.len() != 2
            || dl.reason_code != "attempts_exhausted"
            || !dl.reason.contains("CMS rejects the post (attempt 3)")
            || dl.attempts != 3
            || dl.status != DeadLetterStatus::Open
            || dl.role != "marketing"
            || dl.sender.as_ref().map(Name::as_str) != Some("ceo")
            || dl.original_id.is_none()
        {
            fail(B, format!("the dead letter of {}: {dl:?}", leaf.title));
        }
        if leaf.status != TaskStatus::DeadLettered {
            fail(B, format!("{} is {}", leaf.title, leaf.status));
        }
        if j.attempts_of(&leaf.task_id) != [1, 2, 3] {
            fail(
                B,
                format!(
                    "attempts of {}: {:?}",
                    leaf.title,
                    j.attempts_of(&leaf.task_id)
                ),
            );
        }
    }
    // The parents wait for the dead-lettered tasks.
    for h in [&a, &b] {
        let rec = task(B, &p, &h.task_id).await;
        if rec.status != TaskStatus::InProgress || rec.open_children.len() != 1 {
            fail(B, format!("a parent of a dead letter: {rec:?}"));
        }
    }
    // Requeued once healthy: a new message, attempt 1, completes; the parent
    // rolls up.
    if let Ok(mut p) = poisoned.lock() {
        p.remove("poison A");
    }
    let fresh = p
        .requeue(&dl_a.dead_letter_id)
        .await
        .unwrap_or_else(|e| fail(B, format!("requeue: {e}")));
    if Some(&fresh) == dl_a.original_id.as_ref() {
        fail(B, "the requeue reused the original's id");
    }
    let rec_a = wait_done(B, &a).await;
    if rec_a.status != TaskStatus::Completed {
        fail(
            B,
            format!(
                "the requeued task's parent ended {} ({:?})",
                rec_a.status, rec_a.error
            ),
        );
    }
    if task(B, &p, &a_leaf.task_id).await.status != TaskStatus::Completed
        || j.attempts_of(&a_leaf.task_id) != [1, 2, 3, 1]
    {
        fail(
            B,
            format!("the requeued task ran {:?}", j.attempts_of(&a_leaf.task_id)),
        );
    }
    // Discarded: the task fails, and so does its parent.
    if let Err(e) = p.discard(&dl_b.dead_letter_id).await {
        fail(B, format!("discard: {e}"));
    }
    let rec_b = wait_done(B, &b).await;
    let b_after = task(B, &p, &b_leaf.task_id).await;
    if rec_b.status != TaskStatus::Failed
        || !rec_b
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("poison B")
        || b_after.status != TaskStatus::Failed
        || !b_after
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("discarded")
    {
        fail(
            B,
            format!("after the discard: parent {rec_b:?}, task {b_after:?}"),
        );
    }
    if j.attempts_of(&b_leaf.task_id) != [1, 2, 3] {
        fail(B, "the discarded task ran again");
    }
    // Each record says what became of it, and is settled for good.
    let after = p.dead_letter_records().await.unwrap_or_else(|e| fail(B, e));
    let status_of = |id: &MessageId| {
        after
            .iter()
            .find(|r| &r.dead_letter_id == id)
            .map(|r| r.status)
    };
    if status_of(&dl_a.dead_letter_id) != Some(DeadLetterStatus::Requeued)
        || status_of(&dl_b.dead_letter_id) != Some(DeadLetterStatus::Discarded)
    {
        fail(B, format!("records after: {after:?}"));
    }
    if !matches!(
        p.requeue(&dl_a.dead_letter_id).await,
        Err(OperationError::InvalidState { .. })
    ) || !matches!(
        p.discard(&dl_b.dead_letter_id).await,
        Err(OperationError::InvalidState { .. })
    ) || !matches!(
        p.requeue(&MessageId::new()).await,
        Err(OperationError::NotFound { .. })
    ) {
        fail(
            B,
            "a settled or unknown dead letter was requeued or discarded again",
        );
    }
    o.shutdown().await;
}
