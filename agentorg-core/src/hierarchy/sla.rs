//! SLA deadlines: a kernel timer per task delegated with `sla_minutes`.
//!
//! The timer (kind `sla`, owned by the task's delegator, keyed by the task)
//! is armed in the commit that creates the task and cancelled in the one
//! that ends it. A process hosting the delegator fires it when it is due;
//! if the task is still open then, the breach emits a
//! `<org>.events.sla.breach` event (when a role of the chart subscribes to
//! it) and escalates to the delegator's manager
//! (an alert, when the delegator is the principal) — once, whichever
//! process fires it, since firing deletes the timer in the same commit.

use async_trait::async_trait;
use serde_json::json;

use super::records::{read_task, TaskRecord};
use super::Escalation;
use crate::envelope::{Kind, MessageId};
use crate::name::Name;
use crate::runtime::{to_value, Effects, Fault, Kernel, TimerHandler, TimerRecord};
use crate::store::StoreError;

/// The kind of the hierarchy's SLA timers.
pub(crate) const KIND: &str = "sla";

/// The name of the runtime's event for a task past its SLA.
pub(crate) const BREACH_EVENT: &str = "sla.breach";

/// The SLA timer of `task`, if it has a deadline: the record to arm when the
/// task is created and to cancel when it ends.
pub(crate) fn timer(task: &TaskRecord) -> Option<TimerRecord> {
    let deadline = task.sla_deadline?;
    let kind = Name::new(KIND).ok()?;
    Some(TimerRecord::new(
        kind,
        task.assigned_by.clone(),
        task.task_id.as_str(),
        deadline,
        serde_json::Value::Null,
    ))
}

/// Fires SLA timers: reports the breach of a task still open.
#[derive(Debug)]
pub(crate) struct SlaTimers;

#[async_trait]
impl TimerHandler for SlaTimers {
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let mut effects = Effects::new();
        let Ok(task_id) = MessageId::parse(timer.key.clone()) else {
            tracing::warn!(key = %timer.key, "an SLA timer of no task; dropped");
            return Ok(effects);
        };
        let Some((task, _)) = read_task(kernel, &task_id).await? else {
            return Ok(effects);
        };
        if task.status.is_terminal() {
            return Ok(effects);
        }
        breach(kernel, &task, timer, &mut effects)?;
        tracing::warn!(task = %task.task_id, assignee = %task.assigned_to, "SLA breached; escalated");
        Ok(effects)
    }
}

/// The breach event, and the escalation (or, for the principal, the alert).
fn breach(
    kernel: &Kernel,
    task: &TaskRecord,
    timer: &TimerRecord,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let delegator = &timer.owner;
    let details = json!({
        "task_id": task.task_id,
        "title": task.title,
        "assigned_to": task.assigned_to,
        "sla_minutes": task.sla_minutes,
        "deadline": timer.due,
        "status": task.status,
    });
    if let Some((subject, event)) = kernel.org_event(delegator.clone(), BREACH_EVENT, &details) {
        effects.send(subject, event.with_correlation(task.task_id.clone()));
    }
    match kernel.chart().manager_of(delegator).cloned() {
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
            let env = kernel
                .envelope(delegator.clone(), Kind::Escalation, to_value(&esc)?)
                .with_id(id)
                .with_to(manager.clone());
            effects.send(kernel.subjects().inbox(&manager, delegator), env);
        }
        // The principal delegated it: tell the principal.
        None => {
            let env = kernel
                .envelope(
                    delegator.clone(),
                    Kind::Alert,
                    json!({ "alert": "sla_breach", "details": details }),
                )
                .with_to(delegator.clone())
                .with_correlation(task.task_id.clone());
            effects.send(kernel.subjects().alerts(), env);
        }
    }
    Ok(())
}
