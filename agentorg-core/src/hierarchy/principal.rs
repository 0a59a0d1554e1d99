//! The hierarchy's operations of the principal: delegate, await and cancel
//! tasks, answer escalations, read task trees.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::delegate::{plan, BreakersSeen, Delegation, Plan};
use super::error::DelegateError;
use super::ops;
use super::records::{read_task, Layout, TaskRecord, TaskStatus};
use super::task::TaskSpec;
use super::tree::{self, TaskTree};
use super::{decision_back, Escalation};
use crate::envelope::{Envelope, Kind, TaskId};
use crate::name::Name;
use crate::runtime::{from_doc, optimistic, Effects, OperationError, Principal};
use crate::store::{Change, StoreError, WatchTarget};

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

/// The hierarchy's operations of the principal.
impl Principal {
    /// Delegates a task to one of the principal's direct reports (or a
    /// shortcut target): writes the task document and an outbox entry, then
    /// publishes. Returns a handle to await or cancel it. With an
    /// idempotency key that already created a task, that task's handle is
    /// returned and nothing new is created.
    pub async fn delegate(&self, to: &str, spec: TaskSpec) -> Result<TaskHandle, DelegateError> {
        let kernel = &*self.kernel;
        let me = self.name().clone();
        // A conflict means another delegator took a half-open breaker's probe
        // slot or the same idempotency key first: plan again.
        let conflict = std::sync::Mutex::new(None);
        let made = optimistic(|| async {
            let planned = match plan(
                kernel,
                &me,
                to,
                spec.clone(),
                None,
                None,
                None,
                &[],
                &mut BreakersSeen::default(),
            )
            .await?
            {
                Plan::Existing(d) => return Ok(Some(d)),
                Plan::New(p) => p,
            };
            let delegation = planned.delegation();
            let mut effects = Effects::new();
            for w in planned.writes {
                effects.write(w);
            }
            effects.send_encoded(planned.subject, planned.envelope, planned.encoded);
            match kernel.commit(effects).await {
                Ok(()) => Ok(Some(delegation)),
                Err(e) if e.is_precondition_failure() => {
                    *conflict
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                    Ok(None)
                }
                Err(e) => Err(DelegateError::from(e)),
            }
        })
        .await?;
        let conflict = conflict
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (made, conflict) {
            (Some(d), _) => Ok(self.handle(d)),
            (None, Some(e)) => Err(e.into()),
            (None, None) => Err(DelegateError::InvalidInput {
                message: "the delegation kept conflicting".to_owned(),
            }),
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
        ops::cancel_subtree(&self.kernel, task_id).await
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
        let esc: Escalation = crate::runtime::from_json(&escalation.payload)
            .map_err(|e| invalid(&format!("unreadable escalation: {e}")))?;
        let kernel = &*self.kernel;
        let me = self.name().clone();
        let (subject, env) = decision_back(kernel, esc, escalation, &me, decision)?;
        let mut effects = Effects::new();
        effects.send(subject, env);
        kernel.commit(effects).await?;
        Ok(())
    }

    /// Reads one task.
    pub async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(read_task(&self.kernel, id).await?.map(|(t, _)| t))
    }

    /// The whole tree under `root`, in the shape of GenBrain's task tree
    /// (serialize it for their JSON).
    pub async fn task_tree(&self, root: &TaskId) -> Result<TaskTree, StoreError> {
        tree::read(&self.kernel, root).await
    }

    /// Waits until the task is completed, failed, cancelled or dead-lettered,
    /// and returns it.
    pub async fn wait_for(&self, id: &TaskId, timeout: Duration) -> Result<TaskRecord, WaitError> {
        let key = Layout::of(&self.kernel)?.task(id)?;
        let mut changes = self
            .kernel
            .store()
            .watch(WatchTarget::Document(key))
            .await?;
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
}
