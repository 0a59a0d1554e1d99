//! SLA deadlines: documents in the store, watched by the processes hosting
//! the tasks' delegators.
//!
//! A task delegated with `sla_minutes` gets an SLA document (written with
//! the task) that its assignee deletes when the task ends. Each process keeps
//! a timer for the SLAs of the roles it hosts: armed when it delegates, and
//! re-armed from the store at start and on every sweep (so a delegator that
//! restarted, or a replica that took over, still watches). When a deadline
//! passes with the task still open, the breach is recorded by a conditional
//! write — so whichever replica sees it first reports it, once — together
//! with a `<org>.events.sla.breach` event and an escalation to the
//! delegator's manager (an alert, when the delegator is the principal).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::docs::{from_doc, to_value, SlaRecord, TaskRecord};
use super::outbox;
use super::Shared;
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::hierarchy::Escalation;
use crate::name::Name;
use crate::store::{Precondition, StateStoreExt, StoreError, Write};

/// The timers of one process.
#[derive(Debug, Default)]
pub(crate) struct Watcher {
    /// The delegators whose SLAs this process watches.
    delegators: HashSet<Name>,
    state: Mutex<Timers>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, TaskId)>>,
    armed: HashSet<TaskId>,
}

impl Watcher {
    pub(crate) fn new(delegators: HashSet<Name>) -> Self {
        Self {
            delegators,
            ..Self::default()
        }
    }

    /// Arms the timer of `task` (delegated by `delegator`) if this process
    /// watches that delegator and it is not armed yet.
    pub(crate) fn arm(&self, delegator: &Name, task: &TaskId, deadline: DateTime<Utc>) {
        if !self.delegators.contains(delegator) {
            return;
        }
        let mut t = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.armed.insert(task.clone()) {
            t.heap.push(Reverse((deadline, task.clone())));
            drop(t);
            self.wake.notify_one();
        }
    }

    fn next(&self) -> Option<(DateTime<Utc>, TaskId)> {
        let t = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.heap.peek().map(|Reverse(x)| x.clone())
    }

    fn pop(&self, task: &TaskId) {
        let mut t = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.heap.pop();
        t.armed.remove(task);
    }

    /// Arms every open SLA of the watched delegators found in the store.
    pub(crate) async fn rescan(&self, shared: &Shared) {
        if self.delegators.is_empty() {
            return;
        }
        match shared.store.list_all(shared.layout.slas()).await {
            Ok(docs) => {
                for doc in docs {
                    if let Ok((sla, _)) = from_doc::<SlaRecord>(&doc) {
                        if !sla.breached {
                            self.arm(&sla.delegator, &sla.task_id, sla.deadline);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading SLA deadlines failed; retried on the next sweep")
            }
        }
    }
}

/// Fires the watched deadlines as they come, until `shutdown`.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let watcher = &shared.sla;
    if watcher.delegators.is_empty() {
        return;
    }
    watcher.rescan(&shared).await;
    loop {
        let wait = match watcher.next() {
            Some((deadline, task)) => {
                let left = (deadline - shared.now()).to_std().unwrap_or_default();
                if left.is_zero() {
                    watcher.pop(&task);
                    if let Err(e) = fire(&shared, &task).await {
                        tracing::warn!(task = %task, error = %e, "reporting an SLA breach failed; retried on the next sweep");
                    }
                    continue;
                }
                left
            }
            None => std::time::Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = watcher.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Reports `task`'s breach, unless it ended or was reported already.
async fn fire(shared: &Shared, task_id: &TaskId) -> Result<(), StoreError> {
    let key = shared.layout.sla(task_id)?;
    for _ in 0..8 {
        let Some(doc) = shared.store.get(&key).await? else {
            return Ok(()); // The task ended: its assignee deleted the SLA.
        };
        let (mut sla, v): (SlaRecord, _) = from_doc(&doc)?;
        if sla.breached {
            return Ok(());
        }
        let task = match shared.store.get(&shared.layout.task(task_id)?).await? {
            Some(doc) => from_doc::<TaskRecord>(&doc)?.0,
            None => return Ok(()),
        };
        if task.status.is_terminal() {
            return Ok(());
        }
        sla.breached = true;
        let now = shared.now();
        let details = json!({
            "task_id": task.task_id,
            "title": task.title,
            "assigned_to": task.assigned_to,
            "sla_minutes": task.sla_minutes,
            "deadline": sla.deadline,
            "status": task.status,
        });
        let delegator = &sla.delegator;
        let mut writes = vec![Write::put(
            key.clone(),
            to_value(&sla)?,
            Precondition::Version(v),
        )];
        let mut entries = Vec::new();
        let event = Envelope::new(
            shared.org().clone(),
            delegator.clone(),
            Kind::Event,
            json!({ "event": "sla.breach", "details": details }),
        )
        .with_correlation(task.task_id.clone())
        .with_created_at(now);
        let subject = shared.subjects.event(&[
            Name::new("sla").map_err(|e| StoreError::invalid(None, e.to_string()))?,
            Name::new("breach").map_err(|e| StoreError::invalid(None, e.to_string()))?,
        ]);
        let (w, e) = outbox::entry(shared, delegator, subject, &event)?;
        writes.push(w);
        entries.push(e);
        let (subject, notice) = match shared.chart.manager_of(delegator).cloned() {
            Some(manager) => {
                let id = MessageId::new();
                let esc = Escalation {
                    escalation_id: id.clone(),
                    origin: delegator.clone(),
                    path: vec![delegator.clone()],
                    reason: "sla_breach".to_owned(),
                    details,
                    task_id: Some(task.task_id.clone()),
                };
                (
                    shared.subjects.inbox(&manager, delegator),
                    Envelope::new(
                        shared.org().clone(),
                        delegator.clone(),
                        Kind::Escalation,
                        to_value(&esc)?,
                    )
                    .with_id(id)
                    .with_to(manager)
                    .with_created_at(now),
                )
            }
            // The principal delegated it: tell the principal.
            None => (
                shared.subjects.alerts(),
                Envelope::new(
                    shared.org().clone(),
                    delegator.clone(),
                    Kind::Alert,
                    json!({ "alert": "sla_breach", "details": details }),
                )
                .with_to(delegator.clone())
                .with_correlation(task.task_id.clone())
                .with_created_at(now),
            ),
        };
        let (w, e) = outbox::entry(shared, delegator, subject, &notice)?;
        writes.push(w);
        entries.push(e);
        match shared.store.commit(writes).await {
            Ok(_) => {
                tracing::warn!(task = %task.task_id, assignee = %task.assigned_to, "SLA breached; escalated");
                outbox::flush(shared, entries).await;
                return Ok(());
            }
            Err(e) if e.is_precondition_failure() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
