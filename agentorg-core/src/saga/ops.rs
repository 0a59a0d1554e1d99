//! Where saga runs live, what a transition commits (the document and the
//! next message), starting and deciding (from a `Context` and from the
//! principal), listing, and the gates' timer.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::records::{Next, SagaRecord};
use super::{SagaDecision, SagaError};
use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{
    from_json, to_value, Context, Effects, Fault, Kernel, Principal, TimerHandler, TimerRecord,
};
use crate::store::{
    CollectionPath, DocKey, Precondition, StateStoreExt, StoreError, Version, Write,
};

pub(crate) use super::CHANNEL;

/// The kind of the gates' timers.
pub(crate) const GATE_TIMER: &str = "saga-gate";

/// What a saga message asks of its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    /// Run the step.
    Run,
    /// Compensate the step.
    Compensate,
    /// Decide on the step (or pass it up).
    Escalate,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Compensate => "compensate",
            Self::Escalate => "escalate",
        }
    }
}

/// A saga message's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) saga: MessageId,
    pub(crate) step: usize,
    pub(crate) op: Op,
    /// The run (or compensation run) it is about: a message of an earlier
    /// one is stale.
    pub(crate) run: u32,
}

impl Message {
    /// The work item its dead letter is about: `<saga>_<step>_<op>_<run>`.
    pub(crate) fn item(&self) -> Option<MessageId> {
        MessageId::parse(format!(
            "{}_{}_{}_{}",
            self.saga,
            self.step,
            self.op.as_str(),
            self.run
        ))
        .ok()
    }

    /// The message an [`item`](Self::item) was made of.
    pub(crate) fn parse_item(item: &MessageId) -> Option<Self> {
        let mut parts = item.as_str().rsplitn(4, '_');
        let run = parts.next()?.parse().ok()?;
        let op = match parts.next()? {
            "run" => Op::Run,
            "compensate" => Op::Compensate,
            "escalate" => Op::Escalate,
            _ => return None,
        };
        let step = parts.next()?.parse().ok()?;
        let saga = MessageId::parse(parts.next()?).ok()?;
        Some(Self {
            saga,
            step,
            op,
            run,
        })
    }
}

/// The name of the saga channel.
pub(crate) fn channel() -> Result<Name, StoreError> {
    Name::new(CHANNEL).map_err(|e| StoreError::invalid(None, e.to_string()))
}

/// Adds `msg`, from `from` to `to`'s saga channel, to `effects`.
fn send(
    kernel: &Kernel,
    effects: &mut Effects,
    from: &Name,
    to: &Name,
    msg: &Message,
) -> Result<(), StoreError> {
    kernel.send_on_channel(effects, from, to, &channel()?, msg)
}

/// Adds the write of `rec` (with `pre`) to `effects`: contended, so a
/// handler whose run moved meanwhile runs again on what it is now.
fn put_run(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &SagaRecord,
    pre: Precondition,
) -> Result<(), StoreError> {
    effects.contended_write(Write::put(
        run_key(kernel, &rec.saga_id)?,
        to_value(rec)?,
        pre,
    ));
    Ok(())
}

/// Hands `rec`'s pending decision to `to`: recorded as escalated to it,
/// and sent to it from `from` unless it is the principal (who reads the
/// document).
fn escalate_to(
    kernel: &Kernel,
    effects: &mut Effects,
    from: &Name,
    rec: &mut SagaRecord,
    to: Name,
) -> Result<(), StoreError> {
    let Some(pending) = rec.pending.as_mut() else {
        return Ok(());
    };
    pending.escalated_to = to.clone();
    let msg = Message {
        saga: rec.saga_id.clone(),
        step: pending.step,
        op: Op::Escalate,
        run: 0,
    };
    if kernel.chart().is_principal(&to) {
        return Ok(());
    }
    send(kernel, effects, from, &to, &msg)
}

/// `agentorg/<org>/sagas`.
fn runs(kernel: &Kernel) -> Result<CollectionPath, StoreError> {
    kernel.collection("sagas")
}

/// Where run `id` lives.
pub(crate) fn run_key(kernel: &Kernel, id: &MessageId) -> Result<DocKey, StoreError> {
    runs(kernel)?.doc(id.as_str())
}

/// Reads run `id`, with its version.
pub(crate) async fn read_run(
    kernel: &Kernel,
    id: &MessageId,
) -> Result<Option<(SagaRecord, Version)>, StoreError> {
    kernel.read(&run_key(kernel, id)?).await
}

/// The idempotency key of a step's work or compensation.
pub(crate) fn idempotency_key(saga: &MessageId, step: &Name, op: Op) -> String {
    format!("{saga}/{step}/{}", op.as_str())
}

/// How often a gate looks at its events' receipts.
fn gate_poll(within: Duration) -> Duration {
    (within / 20).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// What committing `rec` after a transition takes: the document (written
/// with `pre`) and what `next` sends, from `from`. An escalation goes to the
/// manager of the step's role (none when that is the principal: the
/// document shows it).
pub(crate) fn transition(
    kernel: &Kernel,
    from: &Name,
    mut rec: SagaRecord,
    pre: Precondition,
    next: Next,
) -> Result<Effects, StoreError> {
    let mut effects = Effects::new();
    let msg = |step: usize, op: Op, run: u32| Message {
        saga: rec.saga_id.clone(),
        step,
        op,
        run,
    };
    match next {
        Next::Run(i) => {
            if let Some(s) = rec.steps.get(i) {
                send(
                    kernel,
                    &mut effects,
                    from,
                    &s.role,
                    &msg(i, Op::Run, s.runs),
                )?;
            }
        }
        Next::Compensate(i) => {
            if let Some(s) = rec.steps.get(i) {
                let m = msg(i, Op::Compensate, s.compensation_runs);
                send(kernel, &mut effects, from, &s.role, &m)?;
            }
        }
        Next::Escalate(i) => {
            let manager = rec
                .steps
                .get(i)
                .and_then(|s| kernel.chart().manager_of(&s.role))
                .cloned();
            if let Some(manager) = manager {
                escalate_to(kernel, &mut effects, from, &mut rec, manager)?;
            }
        }
        Next::Gate(i) => {
            if let Some(timer) = gate_timer(kernel, &rec, i, 0)? {
                effects.write(kernel.arm_timer(&timer)?);
            }
        }
        Next::Nothing => {}
    }
    put_run(kernel, &mut effects, &rec, pre)?;
    Ok(effects)
}

/// What passing `rec`'s pending decision up from `from` (read at
/// `version`) to its manager commits: the principal at the top reads it in
/// the document.
pub(crate) fn pass_up(
    kernel: &Kernel,
    from: &Name,
    mut rec: SagaRecord,
    version: Version,
) -> Result<Effects, StoreError> {
    let mut effects = Effects::new();
    let Some(up) = kernel.chart().manager_of(from).cloned() else {
        return Ok(effects);
    };
    escalate_to(kernel, &mut effects, from, &mut rec, up)?;
    put_run(kernel, &mut effects, &rec, Precondition::Version(version))?;
    Ok(effects)
}

/// Gate timer number `n` of step `i` of `rec`: due at the next look, or at
/// the deadline. Owned by the previous step's role.
fn gate_timer(
    kernel: &Kernel,
    rec: &SagaRecord,
    i: usize,
    n: u32,
) -> Result<Option<TimerRecord>, StoreError> {
    let (Some(step), Some(prev)) = (
        rec.steps.get(i),
        i.checked_sub(1).and_then(|p| rec.steps.get(p)),
    ) else {
        return Ok(None);
    };
    let Some(gate) = &step.gate else {
        return Ok(None);
    };
    let now = kernel.now();
    let poll = chrono::Duration::from_std(gate_poll(gate.spec.within))
        .unwrap_or_else(|_| chrono::Duration::seconds(1));
    let due = gate.deadline.map_or(now + poll, |d| d.min(now + poll));
    let kind = Name::new(GATE_TIMER).map_err(|e| StoreError::invalid(None, e.to_string()))?;
    Ok(Some(TimerRecord::new(
        kind,
        prev.role.clone(),
        format!("{}-{i}-{n}", rec.saga_id),
        due,
        json!({ "saga": rec.saga_id, "step": i, "n": n }),
    )))
}

/// The id of a run of `name` started with idempotency key `key`.
fn keyed_id(kernel: &Kernel, name: &str, key: &str) -> Result<MessageId, SagaError> {
    let hex = crate::hex::digest(&[kernel.org().as_str(), name, key]);
    MessageId::parse(format!("sg-{hex}")).map_err(|e| SagaError::Encode {
        message: e.to_string(),
    })
}

/// What starting a run of `name` from `from` commits, and its id.
fn start(
    kernel: &Kernel,
    from: &Name,
    name: &str,
    input: Value,
    id: MessageId,
) -> Result<Effects, SagaError> {
    let Some(def) = kernel.chart().saga(name) else {
        return Err(SagaError::UnknownSaga {
            saga: name.to_owned(),
        });
    };
    if !kernel.chart().may_start_saga(from, name) {
        return Err(SagaError::NotAllowed {
            role: from.to_string(),
            action: format!("start saga `{name}`"),
            rule: "only the principal and the role of its first step start a saga".to_owned(),
        });
    }
    let (rec, next) = SagaRecord::start(id, def, from.clone(), input, kernel.now());
    Ok(transition(
        kernel,
        from,
        rec,
        Precondition::MustNotExist,
        next,
    )?)
}

fn encode<T: Serialize + ?Sized>(input: &T) -> Result<Value, SagaError> {
    serde_json::to_value(input).map_err(|e| SagaError::Encode {
        message: e.to_string(),
    })
}

/// Whether `who` may decide for a step of `role`: the principal, and the
/// managers above it.
fn check_decider(kernel: &Kernel, who: &Name, rec: &SagaRecord) -> Result<(), SagaError> {
    let Some(pending) = &rec.pending else {
        return Err(SagaError::NoDecisionPending {
            saga: rec.saga_id.clone(),
        });
    };
    let Some(role) = rec.steps.get(pending.step).map(|s| &s.role) else {
        return Err(SagaError::InvalidDecision {
            saga: rec.saga_id.clone(),
            reason: "the pending decision names no step of the saga".to_owned(),
        });
    };
    let chart = kernel.chart();
    if chart.is_principal(who) || chart.chain_of_command(role).contains(who) {
        return Ok(());
    }
    Err(SagaError::NotAllowed {
        role: who.to_string(),
        action: format!("decide on saga {}", rec.saga_id),
        rule: format!("only the principal and the managers above `{role}` decide for its steps"),
    })
}

/// What deciding `decision` on run `id` from `who` commits.
async fn decide(
    kernel: &Kernel,
    who: &Name,
    id: &MessageId,
    decision: &SagaDecision,
) -> Result<Effects, SagaError> {
    let Some((mut rec, version)) = read_run(kernel, id).await? else {
        return Err(SagaError::Unknown { saga: id.clone() });
    };
    check_decider(kernel, who, &rec)?;
    let next = rec.decide(decision, kernel.now())?;
    Ok(transition(
        kernel,
        who,
        rec,
        Precondition::Version(version),
        next,
    )?)
}

/// The saga pattern's operations of a handler's [`Context`].
impl Context {
    /// Starts a run of the chart's saga `name` with `input` (this role must
    /// run its first step), when the handler's outcome is committed. Its
    /// id derives from this delivery and `name`, so a retried handler
    /// starts one run — and one delivery starts at most one run of a saga
    /// (a second call for the same `name` makes the commit conflict).
    pub fn start_saga<T: Serialize + ?Sized>(
        &self,
        name: &str,
        input: &T,
    ) -> Result<MessageId, SagaError> {
        let kernel = self.kernel();
        let id = keyed_id(kernel, name, self.envelope().id.as_str())?;
        let effects = start(kernel, self.role(), name, encode(input)?, id.clone())?;
        self.with_effects(|staged, _| {
            staged.extend(effects);
        });
        Ok(id)
    }

    /// Decides on run `saga`, which waits for a decision on a step of a
    /// role under this one; committed with the handler's outcome (if the
    /// run moved meanwhile, the handler runs again).
    pub async fn decide_saga(
        &self,
        saga: &MessageId,
        decision: SagaDecision,
    ) -> Result<(), SagaError> {
        let effects = decide(self.kernel(), self.role(), saga, &decision).await?;
        self.with_effects(|staged, _| {
            staged.extend(effects);
        });
        Ok(())
    }
}

/// The saga pattern's operations of the principal.
impl Principal {
    /// Starts a run of the chart's saga `name` with `input`; returns its id.
    pub async fn start_saga<T: Serialize + Sync + ?Sized>(
        &self,
        name: &str,
        input: &T,
    ) -> Result<MessageId, SagaError> {
        let id = MessageId::parse(format!("sg-{}", MessageId::new())).map_err(|e| {
            SagaError::Encode {
                message: e.to_string(),
            }
        })?;
        let effects = start(&self.kernel, self.name(), name, encode(input)?, id.clone())?;
        self.kernel.commit(effects).await?;
        Ok(id)
    }

    /// [`start_saga`](Self::start_saga) once per idempotency key: the
    /// run's id derives from `name` and `key`, and a second call with the
    /// same ones starts nothing and returns the same id.
    pub async fn start_saga_once<T: Serialize + Sync + ?Sized>(
        &self,
        name: &str,
        input: &T,
        key: &str,
    ) -> Result<MessageId, SagaError> {
        let id = keyed_id(&self.kernel, name, key)?;
        let effects = start(&self.kernel, self.name(), name, encode(input)?, id.clone())?;
        match self.kernel.commit(effects).await {
            Err(e) if e.is_precondition_failure() => Ok(id),
            r => r.map(|()| id).map_err(Into::into),
        }
    }

    /// Decides on run `saga`, which waits for a decision (the principal
    /// decides for every step). A conflict (the run moved meanwhile) is
    /// retryable: read it again.
    pub async fn decide_saga(
        &self,
        saga: &MessageId,
        decision: SagaDecision,
    ) -> Result<(), SagaError> {
        let effects = decide(&self.kernel, self.name(), saga, &decision).await?;
        self.kernel.commit(effects).await?;
        Ok(())
    }

    /// Every recorded run, running or over, oldest first.
    pub async fn sagas(&self) -> Result<Vec<SagaRecord>, SagaError> {
        let mut out = Vec::new();
        for doc in self.kernel.store().list_all(&runs(&self.kernel)?).await? {
            match from_json::<SagaRecord>(&doc.value) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(saga = %doc.key, error = %e, "unreadable saga run skipped")
                }
            }
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Run `saga`, to read or wait for.
    pub fn saga(&self, saga: &MessageId) -> SagaWatch {
        SagaWatch {
            principal: self.clone(),
            saga: saga.clone(),
        }
    }
}

/// One saga run, to read or wait for ([`Principal::saga`]).
#[derive(Debug, Clone)]
pub struct SagaWatch {
    principal: Principal,
    saga: MessageId,
}

impl SagaWatch {
    /// The run as recorded now.
    pub async fn now(&self) -> Result<SagaRecord, SagaError> {
        match read_run(&self.principal.kernel, &self.saga).await? {
            Some((rec, _)) => Ok(rec),
            None => Err(SagaError::Unknown {
                saga: self.saga.clone(),
            }),
        }
    }

    /// Waits until the run is over or waits for a decision, or until
    /// `timeout`, and returns it then.
    pub async fn wait(&self, timeout: Duration) -> Result<SagaRecord, SagaError> {
        self.wait_for(timeout, |r| {
            r.status.is_final() || r.status.needs_decision()
        })
        .await
    }

    /// Waits until `done` holds for the run, or until `timeout`, and returns
    /// it then.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&SagaRecord) -> bool + Send,
    ) -> Result<SagaRecord, SagaError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.now().await;
            let now = tokio::time::Instant::now();
            match r {
                Ok(r) if done(&r) || now >= deadline => return Ok(r),
                Err(e) if now >= deadline => return Err(e),
                _ => {}
            }
            tokio::time::sleep_until(deadline.min(now + Duration::from_millis(25))).await;
        }
    }
}

/// Fires a gate: opens it when its events' receipts are in, takes its
/// branch at the deadline, or looks again later.
#[derive(Debug)]
pub(crate) struct GateTimer;

#[async_trait]
impl TimerHandler for GateTimer {
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let (Some(id), Some(i), n) = (
            timer.payload["saga"]
                .as_str()
                .and_then(|s| MessageId::parse(s).ok()),
            timer.payload["step"]
                .as_u64()
                .and_then(|i| usize::try_from(i).ok()),
            timer.payload["n"].as_u64().unwrap_or(0),
        ) else {
            return Ok(Effects::new());
        };
        let Some((mut rec, version)) = read_run(kernel, &id).await? else {
            return Ok(Effects::new());
        };
        let Some(gate) = rec
            .steps
            .get(i)
            .filter(|s| s.status == super::StepStatus::Waiting)
            .and_then(|s| s.gate.clone())
        else {
            return Ok(Effects::new());
        };
        let mut open = true;
        for event in &gate.events {
            let receipts = crate::events::receipts_now(kernel, event)
                .await
                .map_err(|e| Fault::Transient(e.to_string()))?;
            // No record: past its retention, nothing to wait for.
            if let Some(r) = receipts {
                let processed = r.subscribers.len().saturating_sub(r.not_processed.len());
                let needed = gate
                    .spec
                    .quorum
                    .map_or(r.subscribers.len(), |q| q as usize)
                    .min(r.subscribers.len());
                open &= processed >= needed;
            }
        }
        let now = kernel.now();
        let owner = timer.owner.clone();
        let next = if open {
            rec.gate_open(i, now)
        } else if gate.deadline.is_some_and(|d| now >= d) {
            rec.gate_timed_out(i, now)
        } else {
            let mut effects = Effects::new();
            let n = u32::try_from(n).unwrap_or(u32::MAX).saturating_add(1);
            if let Some(t) = gate_timer(kernel, &rec, i, n)? {
                effects.write(kernel.arm_timer(&t)?);
            }
            return Ok(effects);
        };
        Ok(transition(
            kernel,
            &owner,
            rec,
            Precondition::Version(version),
            next,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_items_name_saga_step_and_op() {
        let saga = MessageId::parse("sg-01ABC").unwrap();
        for op in [Op::Run, Op::Compensate, Op::Escalate] {
            let m = Message {
                saga: saga.clone(),
                step: 12,
                op,
                run: 1,
            };
            let back = Message::parse_item(&m.item().unwrap()).unwrap();
            assert_eq!(
                (back.saga, back.step, back.op, back.run),
                (saga.clone(), 12, op, 1)
            );
        }
    }
}
