//! The saga pattern's handler of each role's saga channel: runs a step,
//! a compensation, or an escalation, and commits the run's next move with
//! the outcome.

use std::sync::Arc;

use async_trait::async_trait;

use super::ops::{self, Message, Op};
use super::records::{Next, SagaRecord};
use super::{SagaCallbacks, SagaEscalation, SagaStep, StepStatus};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::name::Name;
use crate::runtime::{
    describe, from_json, Claimed, DeadLetterRecord, Effects, Fault, Handler, HostedRole, Kernel,
    Reason, Settle,
};
use crate::store::{Precondition, StoreError, Version};
use crate::subject::{Route, SubjectPattern, Subjects};

/// The role's saga callbacks, as hosted.
fn callbacks(host: &HostedRole) -> Option<&Arc<dyn SagaCallbacks>> {
    host.app::<Arc<dyn SagaCallbacks>>()
}

fn message(env: &Envelope) -> Option<Message> {
    from_json(&env.payload).ok()
}

/// Takes every saga role's saga channel (on its inbox consumer).
#[derive(Debug)]
pub(crate) struct SagaHandler;

#[async_trait]
impl Handler for SagaHandler {
    fn name(&self) -> &'static str {
        "sagas"
    }

    fn subjects(&self, subjects: &Subjects, chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        // The members of a saga: its step roles and the managers above
        // them (escalations climb to them).
        let member = chart
            .sagas()
            .flat_map(|d| d.steps.iter())
            .any(|s| &s.role == role || chart.chain_of_command(&s.role).contains(role));
        if !member || chart.is_principal(role) {
            return Vec::new();
        }
        ops::channel()
            .map(|c| vec![subjects.channel_any(role, &c)])
            .unwrap_or_default()
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, route: &Route) -> Result<(), Reason> {
        if env.kind != Kind::Message || message(env).is_none() {
            return Err(Reason::new("malformed", "not a saga message"));
        }
        let chart = host.kernel().chart();
        let role = host.role();
        if !chart.saga_contacts(&env.from).contains(role) {
            return Err(Reason::new(
                "not_allowed",
                format!(
                    "`{}` may not send saga messages to `{role}`: they are not members of one saga (its step roles and their managers)",
                    env.from
                ),
            ));
        }
        let _ = route;
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{role}` hosts no code for saga steps"),
            ));
        }
        Ok(())
    }

    async fn work_item(
        &self,
        _kernel: &Kernel,
        envelope: &Envelope,
    ) -> Result<Option<MessageId>, Fault> {
        Ok(message(envelope).and_then(|m| m.item()))
    }

    /// Attempts spent (or a compensation refused): a step is in doubt, a
    /// compensation failed; either escalates. An escalation its manager
    /// could not handle goes on up. A dead letter of a run, compensation or
    /// escalation the saga moved past changes nothing.
    async fn dead_lettered(
        &self,
        kernel: &Kernel,
        role: &Name,
        item: &MessageId,
        reason: &Reason,
    ) -> Result<Option<Effects>, Fault> {
        let Some(msg) = Message::parse_item(item) else {
            return Ok(None);
        };
        let Some((mut rec, version)) = ops::read_run(kernel, &msg.saga).await? else {
            return Ok(None);
        };
        let now = kernel.now();
        let why = format!("{}: {}", reason.code, reason.message);
        let Some(step) = rec.steps.get(msg.step) else {
            return Ok(None);
        };
        let next = match msg.op {
            Op::Run if step.status == StepStatus::Running && step.runs == msg.run => {
                rec.in_doubt(msg.step, why, now)
            }
            Op::Compensate
                if step.status == StepStatus::Compensating && step.compensation_runs == msg.run =>
            {
                rec.compensation_failed(msg.step, why, now)
            }
            Op::Escalate if escalated_here(&rec, &msg, role) => {
                return Ok(Some(ops::pass_up(kernel, role, rec, version)?));
            }
            _ => return Ok(None),
        };
        Ok(Some(ops::transition(
            kernel,
            role,
            rec,
            Precondition::Version(version),
            next,
        )?))
    }

    /// The latest dead-lettered run of an in-doubt step, or compensation,
    /// requeued: running (compensating) again. An older one changes nothing
    /// (the saga drops it as stale).
    async fn requeued(
        &self,
        kernel: &Kernel,
        record: &DeadLetterRecord,
    ) -> Result<Effects, StoreError> {
        let Some(msg) = record.task_id.as_ref().and_then(Message::parse_item) else {
            return Ok(Effects::new());
        };
        let Some((mut rec, version)) = ops::read_run(kernel, &msg.saga).await? else {
            return Ok(Effects::new());
        };
        let Some(step) = rec.steps.get(msg.step) else {
            return Ok(Effects::new());
        };
        match msg.op {
            Op::Run if step.runs == msg.run => rec.run_requeued(msg.step, kernel.now()),
            Op::Compensate if step.compensation_runs == msg.run => {
                rec.compensation_requeued(msg.step, kernel.now());
            }
            _ => return Ok(Effects::new()),
        }
        ops::transition(
            kernel,
            &record.role,
            rec,
            Precondition::Version(version),
            Next::Nothing,
        )
    }

    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let (Some(cb), Some(msg)) = (
            callbacks(delivery.host()).cloned(),
            message(delivery.envelope()),
        ) else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no saga callbacks"), None)
                .await;
        };
        let kernel = delivery.kernel();
        let Some((rec, version)) = ops::read_run(kernel, &msg.saga).await? else {
            tracing::warn!(saga = %msg.saga, "a saga message for no recorded run; dropped");
            return delivery.done().await;
        };
        let Some(step) = rec.steps.get(msg.step) else {
            return delivery.done().await;
        };
        // A message of a run, compensation or escalation that moved on
        // (processed already, or decided meanwhile) is stale.
        let current = match msg.op {
            Op::Run => step.status == StepStatus::Running && step.runs == msg.run,
            Op::Compensate => {
                step.status == StepStatus::Compensating && step.compensation_runs == msg.run
            }
            Op::Escalate => rec
                .pending
                .as_ref()
                .is_some_and(|p| p.step == msg.step && &p.escalated_to == delivery.role()),
        };
        if !current {
            tracing::debug!(saga = %msg.saga, step = msg.step, op = ?msg.op, "stale saga message");
            return delivery.done().await;
        }
        match msg.op {
            Op::Run => run(&delivery, &*cb, rec, version, msg).await,
            Op::Compensate => compensate(&delivery, &*cb, rec, version, msg).await,
            Op::Escalate => escalate(&delivery, &*cb, rec, version, msg).await,
        }
    }
}

/// Whether `msg` escalates `rec`'s pending decision to `role` (and nothing
/// moved it since).
fn escalated_here(rec: &SagaRecord, msg: &Message, role: &Name) -> bool {
    rec.pending
        .as_ref()
        .is_some_and(|p| p.step == msg.step && &p.escalated_to == role)
}

fn step_of(rec: &SagaRecord, i: usize, op: Op) -> SagaStep {
    let s = &rec.steps[i];
    SagaStep {
        saga_id: rec.saga_id.clone(),
        saga: rec.name.clone(),
        step: s.name.clone(),
        index: i,
        input: rec.input.clone(),
        results: rec.results_before(i),
        result: if op == Op::Compensate {
            s.result.clone()
        } else {
            None
        },
        idempotency_key: ops::idempotency_key(&rec.saga_id, &s.name, op),
        run: if op == Op::Compensate {
            s.compensation_runs
        } else {
            s.runs
        },
    }
}

/// The events a step's effects publish: (name, id).
fn published(kernel: &Kernel, effects: &Effects) -> Vec<(String, MessageId)> {
    effects
        .messages()
        .iter()
        .filter(|(_, env)| env.kind == Kind::Event)
        .filter_map(|(subject, env)| match kernel.subjects().route(subject)? {
            Route::Event { name } => Some((
                name.iter().map(Name::as_str).collect::<Vec<_>>().join("."),
                env.id.clone(),
            )),
            _ => None,
        })
        .collect()
}

/// Commits `effects` with `rec` moved to `next` (compared-and-set against
/// `version`) and what `next` sends, from the delivery's role.
async fn commit_next(
    delivery: &Claimed<'_>,
    mut effects: Effects,
    rec: SagaRecord,
    version: Version,
    next: Next,
) -> Result<Settle, Fault> {
    let pre = Precondition::Version(version);
    effects.extend(ops::transition(
        delivery.kernel(),
        delivery.role(),
        rec,
        pre,
        next,
    )?);
    delivery.commit_all(effects).await
}

async fn run(
    delivery: &Claimed<'_>,
    cb: &dyn SagaCallbacks,
    mut rec: SagaRecord,
    version: Version,
    msg: Message,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let cx = delivery.context(None);
    let started = tokio::time::Instant::now();
    let r = delivery
        .run(cb.on_saga_step(&cx, step_of(&rec, msg.step, Op::Run)))
        .await;
    let (mut effects, _) = cx.take_effects();
    let item = msg.item();
    let now = kernel.now();
    let next = match r {
        Ok(result) => {
            let events = published(kernel, &effects);
            if let Some(item) = &item {
                delivery.record_work(item, true, started.elapsed());
            }
            rec.completed(msg.step, result, &events, now)
        }
        Err(e) if e.is_retryable() => return delivery.retry_or_dead_letter(e, item.as_ref()).await,
        Err(e) => {
            delivery.count_failure();
            // A failed step's staged effects are dropped with it.
            effects = Effects::new();
            rec.failed(msg.step, describe(&e), now)
        }
    };
    commit_next(delivery, effects, rec, version, next).await
}

async fn compensate(
    delivery: &Claimed<'_>,
    cb: &dyn SagaCallbacks,
    mut rec: SagaRecord,
    version: Version,
    msg: Message,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let cx = delivery.context(None);
    let step = step_of(&rec, msg.step, Op::Compensate);
    let r = delivery.run(cb.on_compensate(&cx, step.clone())).await;
    let item = msg.item();
    match r {
        Ok(()) => {
            let mut rollback = None;
            let event = rec
                .steps
                .get(msg.step)
                .and_then(|s| s.rollback_event.clone());
            if let Some(event) = event {
                let payload = serde_json::json!({
                    "saga": rec.name,
                    "saga_id": rec.saga_id,
                    "step": step.step,
                    "input": rec.input,
                    "result": step.result,
                });
                match cx.publish_event_once(&event, &payload, &step.idempotency_key) {
                    Ok(id) => rollback = Some((event, id)),
                    // The chart checked the event; a payload its schema
                    // refuses is the compensation's failure.
                    Err(e) => {
                        return delivery
                            .dead_letter(Reason::new("rejected", e.to_string()), item.as_ref())
                            .await
                    }
                }
            }
            let (effects, _) = cx.take_effects();
            let next = rec.compensated(msg.step, rollback, kernel.now());
            commit_next(delivery, effects, rec, version, next).await
        }
        Err(e) if e.is_retryable() => delivery.retry_or_dead_letter(e, item.as_ref()).await,
        Err(e) => {
            // A compensation is never skipped: dead-lettered at once (and
            // escalated), to be requeued or decided.
            delivery.count_failure();
            delivery
                .dead_letter(Reason::new("rejected", describe(&e)), item.as_ref())
                .await
        }
    }
}

async fn escalate(
    delivery: &Claimed<'_>,
    cb: &dyn SagaCallbacks,
    mut rec: SagaRecord,
    version: Version,
    msg: Message,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let (Some(pending), Some(step)) = (rec.pending.clone(), rec.steps.get(msg.step)) else {
        return delivery.done().await;
    };
    let escalation = SagaEscalation {
        saga_id: rec.saga_id.clone(),
        step: step.name.clone(),
        role: step.role.clone(),
        status: rec.status,
        reason: pending.reason.clone(),
        record: rec.clone(),
    };
    let cx = delivery.context(None);
    let r = delivery.run(cb.on_saga_escalation(&cx, escalation)).await;
    let (mut effects, _) = cx.take_effects();
    let role = delivery.role();
    let decided = match r {
        Ok(Some(decision)) => match rec.decide(&decision, kernel.now()) {
            Ok(next) => Some(next),
            Err(e) => {
                tracing::warn!(saga = %rec.saga_id, error = %e, "a manager's saga decision does not apply; passed up");
                None
            }
        },
        Ok(None) => None,
        Err(e) if e.is_retryable() => {
            return delivery.retry_or_dead_letter(e, msg.item().as_ref()).await
        }
        Err(e) => {
            delivery.count_failure();
            tracing::warn!(saga = %rec.saga_id, error = %describe(&e), "a manager failed to decide on a saga; passed up");
            effects = Effects::new();
            None
        }
    };
    // A decision (from what was read, `rec` moved by it), or up the line.
    if let Some(next) = decided {
        return commit_next(delivery, effects, rec, version, next).await;
    }
    let Some((fresh, version)) = ops::read_run(kernel, &rec.saga_id).await? else {
        return delivery.done().await;
    };
    effects.extend(ops::pass_up(kernel, role, fresh, version)?);
    delivery.commit_all(effects).await
}
