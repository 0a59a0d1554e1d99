//! The hierarchy's handler of a role's inbox: tasks, results, escalations,
//! decisions and direct messages.

use std::sync::Arc;

use async_trait::async_trait;

use super::breaker::breaker_after_task;
use super::ops;
use super::records::{read_task, Layout, ResultPayload, TaskPayload, TaskStatus};
use super::task::HierarchyCallbacks;
use super::tasks::task_id_of;
use super::{decision_back, Decision, Escalation, EscalationOutcome};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::name::Name;
use crate::runtime::{
    clip, to_value, Claimed, DeadLetterRecord, Effects, Fault, Handler, HostedRole, Kernel,
    Prepared, Reason, Settle,
};
use crate::store::{Precondition, StoreError, Write};
use crate::subject::{Route, SubjectPattern, Subjects};

/// Takes every role's inbox (`<org>.agent.<role>.inbox.*`).
#[derive(Debug)]
pub(crate) struct InboxHandler;

/// The role's hierarchy callbacks, as hosted.
pub(crate) fn callbacks(host: &HostedRole) -> Option<&Arc<dyn HierarchyCallbacks>> {
    host.app::<Arc<dyn HierarchyCallbacks>>()
}

#[async_trait]
impl Handler for InboxHandler {
    fn name(&self) -> &'static str {
        "hierarchy"
    }

    fn subjects(&self, subjects: &Subjects, _chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        vec![subjects.inbox_any(role)]
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, _route: &Route) -> Result<(), Reason> {
        let chart = host.kernel().chart();
        let role = host.role();
        let from = &env.from;
        if env.kind == Kind::Peer {
            return Err(Reason::new(
                "wrong_subject",
                "peer messages travel on peer subjects",
            ));
        }
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{role}` hosts no code for the hierarchy's messages"),
            ));
        }
        match env.kind {
            Kind::Task => {
                let payload: TaskPayload = crate::runtime::from_json(&env.payload)
                    .map_err(|e| Reason::new("malformed_task", e.to_string()))?;
                if !chart.may_receive_task_from(role, from, payload.task_type.as_deref()) {
                    return Err(Reason::new(
                        "not_allowed",
                        format!("the chart does not let `{from}` delegate to `{role}`"),
                    ));
                }
            }
            Kind::Escalation if chart.manager_of(from) != Some(role) => {
                return Err(Reason::new(
                    "not_allowed",
                    format!("`{role}` is not the manager of `{from}`"),
                ))
            }
            Kind::Decision if chart.manager_of(role) != Some(from) => {
                return Err(Reason::new(
                    "not_allowed",
                    format!("`{from}` is not the manager of `{role}`"),
                ))
            }
            Kind::Escalation => {
                crate::runtime::from_json::<Escalation>(&env.payload)
                    .map_err(|e| Reason::new("malformed_escalation", e.to_string()))?;
            }
            Kind::Decision => {
                let decision: Decision = crate::runtime::from_json(&env.payload)
                    .map_err(|e| Reason::new("malformed_decision", e.to_string()))?;
                if !decision.path.contains(role) {
                    return Err(Reason::new(
                        "not_in_path",
                        format!("`{role}` did not pass this escalation up"),
                    ));
                }
            }
            Kind::Result => {
                crate::runtime::from_json::<ResultPayload>(&env.payload)
                    .map_err(|e| Reason::new("malformed_result", e.to_string()))?;
            }
            _ if !chart.may_address(from).contains(role) => {
                return Err(Reason::new(
                    "not_allowed",
                    format!("the chart does not let `{from}` message `{role}`"),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    async fn work_item(&self, kernel: &Kernel, env: &Envelope) -> Result<Option<MessageId>, Fault> {
        Ok(match env.kind {
            // The task's id is in the payload; the claim is on the envelope
            // (a requeued task travels in a new envelope).
            Kind::Task => Some(task_id_of(env)),
            // The roll-up of the parent kept failing: the parent cannot
            // progress, so it is dead-lettered with the result.
            Kind::Result => match crate::runtime::from_json::<ResultPayload>(&env.payload) {
                Ok(p) => read_task(kernel, &p.task_id)
                    .await?
                    .and_then(|(child, _)| child.parent),
                Err(_) => None,
            },
            _ => None,
        })
    }

    async fn prepare(
        &self,
        kernel: &Kernel,
        role: &Name,
        env: &Envelope,
    ) -> Result<Prepared, Fault> {
        match env.kind {
            Kind::Task => super::tasks::prepare_task(kernel, role, env).await,
            _ => Ok(Prepared::none()),
        }
    }

    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let Some(cb) = callbacks(delivery.host()).cloned() else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no hierarchy callbacks"), None)
                .await;
        };
        match delivery.envelope().kind {
            Kind::Task => super::tasks::on_task(&delivery, &*cb).await,
            Kind::Result => super::tasks::on_result(&delivery, &*cb).await,
            Kind::Escalation => on_escalation(&delivery, &*cb).await,
            Kind::Decision => on_decision(&delivery, &*cb).await,
            _ => {
                let cx = delivery.context(None);
                let r = delivery
                    .run(cb.on_message(&cx, delivery.envelope().clone()))
                    .await;
                delivery.settle_call(&cx, r).await
            }
        }
    }

    async fn dead_lettered(
        &self,
        kernel: &Kernel,
        role: &Name,
        item: &MessageId,
        reason: &Reason,
    ) -> Result<Option<Effects>, Fault> {
        let Some((mut rec, v)) = read_task(kernel, item).await? else {
            return Ok(None);
        };
        if rec.status.is_terminal() || &rec.assigned_to != role {
            return Ok(None);
        }
        rec.status = TaskStatus::DeadLettered;
        rec.error = Some(clip(format!("{}: {}", reason.code, reason.message)));
        let mut effects = Effects::new();
        effects.write(Write::put(
            Layout::of(kernel)?.task(item)?,
            to_value(&rec)?,
            Precondition::Version(v),
        ));
        breaker_after_task(kernel, role, false, rec.probe, &mut effects).await?;
        Ok(Some(effects))
    }

    async fn requeued(
        &self,
        kernel: &Kernel,
        record: &DeadLetterRecord,
    ) -> Result<Effects, StoreError> {
        ops::requeued(kernel, record).await
    }

    async fn discarded(
        &self,
        kernel: &Kernel,
        record: &DeadLetterRecord,
    ) -> Result<Effects, StoreError> {
        ops::discarded(kernel, record).await
    }
}

/// An escalation from a report: decide it, or pass it up.
async fn on_escalation(d: &Claimed<'_>, cb: &dyn HierarchyCallbacks) -> Result<Settle, Fault> {
    let env = d.envelope();
    let esc: Escalation = match crate::runtime::from_json(&env.payload) {
        Ok(e) => e,
        Err(e) => {
            return d
                .dead_letter(Reason::new("malformed_escalation", e.to_string()), None)
                .await
        }
    };
    let kernel = d.kernel();
    let role = d.role();
    let cx = d.context(esc.task_id.clone());
    let r = d.run(cb.on_escalation(&cx, esc.clone())).await;
    let mut effects = Effects::new();
    let r = match r {
        Ok(EscalationOutcome::PassUp) => match kernel.chart().manager_of(role) {
            Some(manager) => {
                let mut up = esc;
                up.path.push(role.clone());
                let fwd = kernel
                    .envelope(role.clone(), Kind::Escalation, to_value(&up)?)
                    .with_to(manager.clone())
                    .with_causation(env.id.clone())
                    .with_trace_parent(cx.trace(), None);
                effects.send(kernel.subjects().inbox(manager, role), fwd);
                Ok(())
            }
            None => Ok(()),
        },
        Ok(EscalationOutcome::Decide(decision)) => {
            let (subject, back) = decision_back(kernel, esc, env, role, decision)?;
            effects.send(subject, back.with_trace_parent(cx.trace(), None));
            Ok(())
        }
        Err(e) => Err(e),
    };
    cx.with_effects(|staged, _| {
        staged.extend(effects);
    });
    d.settle_call(&cx, r).await
}

/// A decision from this role's manager: for this role if it raised the
/// escalation, else passed down to the role below it on the way up.
async fn on_decision(d: &Claimed<'_>, cb: &dyn HierarchyCallbacks) -> Result<Settle, Fault> {
    let env = d.envelope();
    let decision: Decision = match crate::runtime::from_json(&env.payload) {
        Ok(x) => x,
        Err(e) => {
            return d
                .dead_letter(Reason::new("malformed_decision", e.to_string()), None)
                .await
        }
    };
    let role = d.role();
    let Some(at) = decision.path.iter().position(|r| r == role) else {
        let reason = Reason::new(
            "not_in_path",
            format!("`{role}` did not pass this escalation up"),
        );
        return d.dead_letter(reason, None).await;
    };
    let kernel = d.kernel();
    let cx = d.context(decision.task_id.clone());
    let r = if at == 0 {
        d.run(cb.on_decision(&cx, decision)).await
    } else {
        let below = decision.path[at - 1].clone();
        let down = kernel
            .envelope(role.clone(), Kind::Decision, to_value(&decision)?)
            .with_to(below.clone())
            .with_causation(env.id.clone())
            .with_trace_parent(cx.trace(), None);
        cx.with_effects(|effects, _| {
            effects.send(kernel.subjects().inbox(&below, role), down);
        });
        Ok(())
    };
    d.settle_call(&cx, r).await
}
