//! The application's handle on the principal: the person at the top.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;

use serde_json::Value;

use super::context::{plan, DelegateError, Delegation, Plan};
use super::docs::{from_doc, to_value, AgentRecord, DeadLetterRecord, TaskRecord, TaskStatus};
use super::ops::{self, OperationError, RoleLiveness};
use super::{outbox, Shared};
use crate::agent::TaskSpec;
use crate::codec::DecodeFailure;
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::hierarchy::{Decision, Escalation};
use crate::name::Name;
use crate::store::{Change, StateStore, StateStoreExt, StoreError, WatchTarget};
use crate::subject::Route;
use crate::transport::{ConsumerConfig, Delivery, TransportError};

/// Waiting for a task failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The task does not exist.
    #[error("task {task_id} not found")]
    NotFound {
        /// The task.
        task_id: TaskId,
    },
    /// The task did not finish in time.
    #[error("task {task_id} still {status} after {after:?}")]
    Timeout {
        /// The task.
        task_id: TaskId,
        /// Its status when the wait gave up.
        status: TaskStatus,
        /// How long the wait was.
        after: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An item of the principal's streams that is not a usable envelope. It has
/// been terminated on the transport (it would never become usable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The message could not be decoded.
    #[error("undecodable message: {0}")]
    Undecodable(DecodeFailure),
    /// The envelope's `from` differs from the sender its subject names.
    #[error("refused: envelope from `{from}` on subject {subject}")]
    SenderMismatch {
        /// The subject.
        subject: String,
        /// The `from` of the envelope.
        from: Name,
    },
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A delegated task: await its end or cancel it (with its open subtree).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskHandle {
    /// The task.
    pub task_id: TaskId,
    /// The role it went to.
    pub assigned_to: Name,
    /// The role it was meant for, when a breaker rerouted it to an alternate.
    pub rerouted_from: Option<Name>,
    principal: Principal,
}

impl TaskHandle {
    /// Waits until the task is completed, failed, cancelled or
    /// dead-lettered, and returns it.
    pub async fn wait(&self, timeout: Duration) -> Result<TaskRecord, WaitError> {
        self.principal.wait_for(&self.task_id, timeout).await
    }

    /// Cancels the task and its open subtree (see [`Principal::cancel`]).
    pub async fn cancel(&self) -> Result<usize, OperationError> {
        self.principal.cancel(&self.task_id).await
    }

    /// The task as stored now.
    pub async fn record(&self) -> Result<Option<TaskRecord>, StoreError> {
        self.principal.task(&self.task_id).await
    }

    /// The tree under the task.
    pub async fn tree(&self) -> Result<TaskTree, StoreError> {
        self.principal.task_tree(&self.task_id).await
    }
}

/// The principal's messages: each envelope is acknowledged when the next one
/// is asked for, so one the application had not finished with comes again
/// after a crash.
pub type PrincipalStream = BoxStream<'static, Result<Envelope, InboxError>>;

/// The application acting as the org's principal (the person at the top of
/// the chart): it delegates to its direct reports, reads task trees, and
/// receives results, escalations, alerts and dead letters.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Principal {
    shared: Arc<Shared>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", self.name())
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The principal's name in the chart.
    pub fn name(&self) -> &Name {
        self.shared.chart.principal()
    }

    /// Delegates a task to one of the principal's direct reports (or a
    /// shortcut target): writes the task document and an outbox entry, then
    /// publishes. Returns a handle to await or cancel it. With an
    /// idempotency key that already created a task, that task's handle is
    /// returned and nothing new is created.
    pub async fn delegate(&self, to: &str, spec: TaskSpec) -> Result<TaskHandle, DelegateError> {
        let shared = &self.shared;
        let me = self.name().clone();
        // A conflict means another delegator took a half-open breaker's probe
        // slot or the same idempotency key first: plan again.
        let mut tries = 0;
        loop {
            tries += 1;
            let planned = match plan(shared, &me, to, spec.clone(), None, None, None, &[]).await? {
                Plan::Existing(d) => return Ok(self.handle(d)),
                Plan::New(p) => p,
            };
            let (out_write, entry) =
                outbox::entry(shared, &me, planned.subject.clone(), &planned.envelope)?;
            let mut writes = planned.writes.clone();
            writes.push(out_write);
            match shared.store.commit(writes).await {
                Ok(_) => {}
                Err(e) if e.is_precondition_failure() && tries < 8 => continue,
                Err(e) => return Err(e.into()),
            }
            outbox::flush(shared, vec![entry]).await;
            if let Some(deadline) = planned.record.sla_deadline {
                shared.sla.arm(&me, &planned.record.task_id, deadline);
            }
            return Ok(self.handle(planned.delegation()));
        }
    }

    fn handle(&self, d: Delegation) -> TaskHandle {
        TaskHandle {
            task_id: d.task_id,
            assigned_to: d.assigned_to,
            rerouted_from: d.rerouted_from,
            principal: self.clone(),
        }
    }

    /// A handle on an existing task.
    pub fn handle_of(&self, task_id: TaskId, assigned_to: Name) -> TaskHandle {
        TaskHandle {
            task_id,
            assigned_to,
            rerouted_from: None,
            principal: self.clone(),
        }
    }

    /// Cancels a task and its open subtree: every task of it not yet ended
    /// becomes `cancelled`; handlers in flight finish but their outcomes are
    /// dropped, and undelivered tasks are never run. The task's delegator is
    /// told. Returns how many tasks were cancelled (0 if it had ended).
    pub async fn cancel(&self, task_id: &TaskId) -> Result<usize, OperationError> {
        ops::cancel_subtree(&self.shared, task_id).await
    }

    /// Answers an escalation that reached the principal (an envelope of kind
    /// [`Kind::Escalation`](crate::envelope::Kind::Escalation) from the
    /// inbox): the decision flows back down the chain to the role that
    /// raised it.
    pub async fn answer(
        &self,
        escalation: &Envelope,
        decision: Value,
    ) -> Result<(), OperationError> {
        let invalid = |m: &str| OperationError::InvalidState {
            message: m.to_owned(),
        };
        if escalation.kind != Kind::Escalation || escalation.to.as_ref() != Some(self.name()) {
            return Err(invalid("not an escalation to the principal"));
        }
        let esc: Escalation = serde_json::from_value(escalation.payload.clone())
            .map_err(|e| invalid(&format!("unreadable escalation: {e}")))?;
        let shared = &self.shared;
        let me = self.name().clone();
        let d = Decision {
            escalation_id: esc.escalation_id,
            decided_by: me.clone(),
            decision,
            reason: esc.reason,
            task_id: esc.task_id,
            path: esc.path,
        };
        let env = Envelope::new(
            shared.org().clone(),
            me.clone(),
            Kind::Decision,
            to_value(&d)?,
        )
        .with_to(escalation.from.clone())
        .with_causation(escalation.id.clone())
        .with_created_at(shared.now());
        let subject = shared.subjects.inbox(&escalation.from, &me);
        let (w, entry) = outbox::entry(shared, &me, subject, &env)?;
        shared.store.commit(vec![w]).await?;
        outbox::flush(shared, vec![entry]).await;
        Ok(())
    }

    /// The dead letters kept in the store, oldest first (open ones and those
    /// already requeued or discarded).
    pub async fn dead_letter_records(&self) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let mut out = Vec::new();
        for doc in self
            .shared
            .store
            .list_all(self.shared.layout.deadletters())
            .await?
        {
            out.push(from_doc::<DeadLetterRecord>(&doc)?.0);
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Publishes a dead letter's original again as a new envelope on its
    /// original subject (its task, if any, becomes `pending`); returns the
    /// new envelope's id. Needs the right to publish as the original sender
    /// (under per-role broker permissions: the admin).
    pub async fn requeue(&self, dead_letter: &MessageId) -> Result<MessageId, OperationError> {
        ops::requeue(&self.shared, dead_letter).await
    }

    /// Gives a dead letter up: its task, if any, fails, and its delegator is
    /// told.
    pub async fn discard(&self, dead_letter: &MessageId) -> Result<(), OperationError> {
        ops::discard(&self.shared, dead_letter).await
    }

    /// Which roles are up, from the heartbeats of the processes hosting
    /// them.
    pub async fn liveness(&self) -> Result<Vec<RoleLiveness>, StoreError> {
        ops::liveness(&self.shared).await
    }

    /// A role's registry entry (tasks completed, last active, capabilities,
    /// execution time, reported usage), as last flushed by its processes.
    pub async fn agent_record(&self, role: &str) -> Result<Option<AgentRecord>, StoreError> {
        let role = Name::new(role).map_err(|e| StoreError::InvalidInput {
            key: None,
            message: e.to_string(),
        })?;
        match self
            .shared
            .store
            .get(&self.shared.layout.agent(&role)?)
            .await?
        {
            Some(doc) => Ok(Some(from_doc::<AgentRecord>(&doc)?.0)),
            None => Ok(None),
        }
    }

    /// Reads one task.
    pub async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        read_task(&*self.shared.store, &self.shared, id).await
    }

    /// The whole tree under `root`, in the seed's shape (serialize it for the
    /// seed's JSON).
    pub async fn task_tree(&self, root: &TaskId) -> Result<TaskTree, StoreError> {
        let mut seen = HashSet::new();
        tree(&self.shared, root, &mut seen, 0).await
    }

    /// Waits until the task is completed, failed, cancelled or dead-lettered,
    /// and returns it.
    pub async fn wait_for(&self, id: &TaskId, timeout: Duration) -> Result<TaskRecord, WaitError> {
        let key = self.shared.layout.task(id)?;
        let mut changes = self.shared.store.watch(WatchTarget::Document(key)).await?;
        let mut last = None;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            // The watch yields the current state first, then each change.
            let first = last.is_none();
            tokio::select! {
                change = changes.next() => match change {
                    Some(Ok(Change::Put(doc))) => {
                        let (rec, _): (TaskRecord, _) = from_doc(&doc)?;
                        if rec.status.is_terminal() || rec.status == TaskStatus::DeadLettered {
                            return Ok(rec);
                        }
                        last = Some(rec.status);
                    }
                    Some(Ok(_)) => return Err(WaitError::NotFound { task_id: id.clone() }),
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(WaitError::Store(StoreError::Unavailable { message: "watch ended".into(), source: None })),
                },
                () = &mut deadline => {
                    return match last {
                        Some(status) => Err(WaitError::Timeout { task_id: id.clone(), status, after: timeout }),
                        None if first => match self.task(id).await? {
                            Some(rec) => Err(WaitError::Timeout { task_id: id.clone(), status: rec.status, after: timeout }),
                            None => Err(WaitError::NotFound { task_id: id.clone() }),
                        },
                        None => Err(WaitError::NotFound { task_id: id.clone() }),
                    };
                }
            }
        }
    }

    /// Results, escalations and other messages sent to the principal.
    pub async fn inbox(&self) -> Result<PrincipalStream, TransportError> {
        let consumer = self.shared.inbox_consumer(self.name());
        self.stream(consumer, true).await
    }

    /// Alerts to the principal (`<org>.alerts`): dead letters, breakers.
    pub async fn alerts(&self) -> Result<PrincipalStream, TransportError> {
        let consumer = self.shared.alerts_consumer();
        self.stream(consumer, false).await
    }

    /// Dead letters (`<org>.deadletter`): each a new envelope whose payload
    /// has the reason, the attempts and the original message.
    pub async fn dead_letters(&self) -> Result<PrincipalStream, TransportError> {
        let consumer = self.shared.deadletter_consumer();
        self.stream(consumer, false).await
    }

    async fn stream(
        &self,
        consumer: ConsumerConfig,
        check_sender: bool,
    ) -> Result<PrincipalStream, TransportError> {
        let shared = Arc::clone(&self.shared);
        if shared.config.provision {
            shared.transport.ensure_consumer(&consumer).await?;
        }
        let deliveries = shared.transport.consume(&consumer.name).await?;
        let state = (deliveries, None::<Delivery>, shared);
        let stream = futures::stream::unfold(
            state,
            move |(mut deliveries, prev, shared)| async move {
                if let Some(prev) = prev {
                    if let Err(e) = prev.ack().await {
                        tracing::warn!(error = %e, "acknowledging a principal message failed; it may come again");
                    }
                }
                let d = match deliveries.next().await? {
                    Ok(d) => d,
                    Err(e) => {
                        return Some((Err(InboxError::Transport(e)), (deliveries, None, shared)))
                    }
                };
                let item = match d.to_message() {
                    Err(failure) => Err(InboxError::Undecodable(failure)),
                    Ok(env) => match shared.subjects.route(d.subject()) {
                        Some(Route::Inbox { from, .. }) if check_sender && from != env.from => {
                            Err(InboxError::SenderMismatch {
                                subject: d.subject().to_string(),
                                from: env.from,
                            })
                        }
                        _ => Ok(env),
                    },
                };
                if item.is_err() {
                    if let Err(e) = d.term().await {
                        tracing::warn!(error = %e, "terminating a refused principal message failed");
                    }
                    return Some((item, (deliveries, None, shared)));
                }
                Some((item, (deliveries, Some(d), shared)))
            },
        );
        Ok(Box::pin(stream))
    }
}

pub(crate) async fn read_task(
    store: &dyn StateStore,
    shared: &Shared,
    id: &TaskId,
) -> Result<Option<TaskRecord>, StoreError> {
    let key = shared.layout.task(id)?;
    match store.get(&key).await? {
        Some(doc) => Ok(Some(from_doc::<TaskRecord>(&doc)?.0)),
        None => Ok(None),
    }
}

/// Trees deeper than this are cut (a guard against corrupted documents).
const MAX_TREE_DEPTH: usize = 64;

/// A task and its subtasks, in the seed's shape (fields in this order when
/// serialized; empty or unknown ones left out).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct TaskTree {
    /// The task's id.
    pub task_id: TaskId,
    /// What it was.
    pub title: String,
    /// Who delegated it.
    pub assigned_by: Name,
    /// Who did it.
    pub assigned_to: Name,
    /// How it stands.
    pub status: TaskStatus,
    /// Its subtasks, in delegation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TaskTree>,
    /// Its SLA in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_minutes: Option<u64>,
    /// How long it took, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual_minutes: Option<u64>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TaskTree {
    /// The number of tasks in the tree.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(TaskTree::len).sum::<usize>()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether every task of the tree completed.
    pub fn all_completed(&self) -> bool {
        self.status == TaskStatus::Completed && self.children.iter().all(TaskTree::all_completed)
    }

    /// Every task of the tree, depth first.
    pub fn iter(&self) -> impl Iterator<Item = &TaskTree> {
        let mut stack = vec![self];
        std::iter::from_fn(move || {
            let node = stack.pop()?;
            stack.extend(node.children.iter().rev());
            Some(node)
        })
    }
}

pub(crate) fn tree<'a>(
    shared: &'a Shared,
    id: &'a TaskId,
    seen: &'a mut HashSet<TaskId>,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<TaskTree, StoreError>> {
    Box::pin(async move {
        let Some(rec) = read_task(&*shared.store, shared, id).await? else {
            return Err(StoreError::NotFound {
                key: shared.layout.task(id)?.to_string(),
            });
        };
        seen.insert(id.clone());
        let mut children = Vec::new();
        if depth < MAX_TREE_DEPTH {
            for child in &rec.children {
                if !seen.contains(child) {
                    children.push(tree(shared, child, seen, depth + 1).await?);
                }
            }
        }
        Ok(TaskTree {
            task_id: rec.task_id,
            title: rec.title,
            assigned_by: rec.assigned_by,
            assigned_to: rec.assigned_to,
            status: rec.status,
            children,
            sla_minutes: rec.sla_minutes,
            actual_minutes: rec.actual_minutes,
            error: rec.error,
        })
    })
}
