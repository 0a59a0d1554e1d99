//! Circuit breakers, one document per role, shared by all its replicas.
//!
//! * **closed**: delegations flow; each task that ends failed or
//!   dead-lettered adds one to `consecutive_failures`, each completed task
//!   resets it. At the threshold the breaker opens (once: the opening is a
//!   conditional write, and its escalation is committed with it).
//! * **open**: until the cool-down ends, delegations are rerouted to the
//!   chart's alternate (if its own breaker is closed) or refused.
//! * **half-open**: the first delegation after the cool-down takes the probe
//!   (a conditional write, so one replica wins); the others are rerouted or
//!   refused until the probe ends or its time is up. A completed probe closes
//!   the breaker; a failed one opens it again for another cool-down.
//!
//! A task whose assignee's breaker had counted no failure when it was
//! delegated (`TaskRecord::breaker_clear`) completes without reading the
//! breaker: a completion resets the failures counted before its task was
//! delegated, so when there were none it has nothing to reset, and failures
//! of tasks that overlap it stand (a sequence of tasks, each delegated after
//! the previous one ended, counts exactly as "consecutive").

use chrono::{DateTime, Utc};

use super::error::DelegateError;
use super::records::{BreakerRecord, BreakerState, Layout};
use super::Escalation;
use crate::envelope::TaskId;
use crate::envelope::{Kind, MessageId};
use crate::name::Name;
use crate::runtime::Effects;
use crate::runtime::{to_value, Kernel, RuntimeConfig};
use crate::store::{Precondition, StoreError, Version, Write};

fn add(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) async fn read(
    shared: &Kernel,
    role: &Name,
) -> Result<Option<(BreakerRecord, Version)>, StoreError> {
    shared.read(&Layout::of(shared)?.breaker(role)?).await
}

/// Where a delegation goes (see [`choose_target`]).
#[derive(Debug)]
pub(crate) struct Target {
    /// The role that gets the task.
    pub(crate) role: Name,
    /// The write that takes its half-open breaker's probe slot.
    pub(crate) probe: Option<Write>,
    /// Whether its breaker had counted no failure.
    pub(crate) clear: bool,
    /// The requested role's breaker as read, when it was closed (or had no
    /// record): later delegations of the same handler call to the same role
    /// go by it without reading it again.
    pub(crate) closed: Option<Option<BreakerRecord>>,
}

impl Target {
    fn closed(role: &Name, rec: Option<&BreakerRecord>) -> Self {
        Self {
            role: role.clone(),
            probe: None,
            clear: rec.is_none_or(|r| r.consecutive_failures == 0),
            closed: None,
        }
    }
}

/// Where a delegation to `to` goes: `to` itself, or its alternate while its
/// breaker is open. When the cool-down is over and no probe is out (nor
/// already planned by this caller, `probing`), the delegation becomes the
/// probe: the returned write takes the probe slot, conditionally, and must be
/// committed together with the probe task (so a handler that fails, or a
/// commit that loses the race, leaves the slot free).
///
/// `seen` is `to`'s closed breaker as this handler call already read it
/// (see [`Target::closed`]); `None` reads it.
pub(crate) async fn choose_target(
    shared: &Kernel,
    to: &Name,
    task: &TaskId,
    probing: bool,
    seen: Option<Option<BreakerRecord>>,
) -> Result<Target, DelegateError> {
    let now = shared.now();
    let current = match seen {
        Some(closed) => closed.map(|rec| (rec, None)),
        None => read(shared, to).await?.map(|(rec, v)| (rec, Some(v))),
    };
    let Some((rec, version)) = current else {
        return Ok(Target {
            closed: Some(None),
            ..Target::closed(to, None)
        });
    };
    let until = rec.until.unwrap_or(now);
    if rec.state == BreakerState::Closed {
        return Ok(Target {
            closed: Some(Some(rec.clone())),
            ..Target::closed(to, Some(&rec))
        });
    }
    let Some(version) = version else {
        // Only closed breakers are remembered; read it afresh.
        return Box::pin(choose_target(shared, to, task, probing, None)).await;
    };
    if until > now || probing {
        return reroute(shared, to, Some(until)).await;
    }
    let probe = BreakerRecord {
        state: BreakerState::HalfOpen,
        until: Some(add(now, shared.config().probe_timeout)),
        probe_task: Some(task.clone()),
        ..rec
    };
    tracing::info!(role = %to, task = %task, "breaker half-open: this delegation is the probe");
    let write = Write::put(
        Layout::of(shared)?.breaker(to)?,
        to_value(&probe)?,
        Precondition::Version(version),
    );
    Ok(Target {
        role: to.clone(),
        probe: Some(write),
        clear: false,
        closed: None,
    })
}

async fn reroute(
    shared: &Kernel,
    to: &Name,
    until: Option<DateTime<Utc>>,
) -> Result<Target, DelegateError> {
    let alternate = shared.chart().alternate_of(to).cloned();
    if let Some(alt) = &alternate {
        let rec = read(shared, alt).await?.map(|(rec, _)| rec);
        if rec.as_ref().is_none_or(|r| r.state == BreakerState::Closed) {
            tracing::info!(role = %to, alternate = %alt, "breaker open: rerouted to the alternate");
            return Ok(Target::closed(alt, rec.as_ref()));
        }
    }
    Err(DelegateError::BreakerOpen {
        role: to.clone(),
        until,
        alternate,
    })
}

/// The breaker write that goes with a task of `role` ending, if any, and
/// whether it opens the breaker (which escalates).
pub(crate) fn after_task(
    config: &RuntimeConfig,
    current: Option<(BreakerRecord, Version)>,
    success: bool,
    probe: bool,
    now: DateTime<Utc>,
) -> Option<(BreakerRecord, Precondition, bool)> {
    let (mut rec, pre) = match current {
        Some((rec, v)) => (rec, Precondition::Version(v)),
        None => (BreakerRecord::default(), Precondition::MustNotExist),
    };
    if success {
        if rec.state == BreakerState::Closed && rec.consecutive_failures == 0 {
            return None;
        }
        return Some((BreakerRecord::default(), pre, false));
    }
    rec.consecutive_failures = rec.consecutive_failures.saturating_add(1);
    let mut opened = false;
    match rec.state {
        BreakerState::Closed if rec.consecutive_failures >= config.breaker_threshold => {
            rec.state = BreakerState::Open;
            rec.opened_at = Some(now);
            rec.until = Some(add(now, config.breaker_cooldown));
            opened = true;
        }
        BreakerState::HalfOpen if probe => {
            rec.state = BreakerState::Open;
            rec.opened_at = Some(now);
            rec.until = Some(add(now, config.breaker_cooldown));
            rec.probe_task = None;
        }
        _ => {}
    }
    Some((rec, pre, opened))
}

/// The write for [`after_task`]'s decision.
pub(crate) fn write(
    shared: &Kernel,
    role: &Name,
    rec: &BreakerRecord,
    pre: Precondition,
) -> Result<Write, StoreError> {
    Ok(Write::put(
        Layout::of(shared)?.breaker(role)?,
        to_value(rec)?,
        pre,
    ))
}

/// The name of the runtime's event when a role's breaker opens.
pub(crate) const BREAKER_OPEN_EVENT: &str = "breaker.open";

/// Adds `role`'s breaker change for a task of it that ended (`success` or
/// not) to `effects`, with the escalation to its manager if it opens.
pub(crate) async fn breaker_after_task(
    kernel: &Kernel,
    role: &Name,
    success: bool,
    probe: bool,
    effects: &mut Effects,
) -> Result<(), StoreError> {
    let current = read(kernel, role).await?;
    let Some((rec, pre, opened)) =
        after_task(kernel.config(), current, success, probe, kernel.now())
    else {
        return Ok(());
    };
    effects.write(write(kernel, role, &rec, pre)?);
    if !opened {
        return Ok(());
    }
    let details = serde_json::json!({
        "role": role,
        "consecutive_failures": rec.consecutive_failures,
        "until": rec.until,
        "alternate": kernel.chart().alternate_of(role),
    });
    if let Some((subject, event)) = kernel.org_event(role.clone(), BREAKER_OPEN_EVENT, &details) {
        effects.send(subject, event);
    }
    let Some(manager) = kernel.chart().manager_of(role).cloned() else {
        return Ok(());
    };
    tracing::warn!(
        failures = rec.consecutive_failures,
        "circuit breaker opened; escalating to `{manager}`"
    );
    // An escalation like any other, so the manager's `on_escalation` decides
    // it or passes it up.
    let id = MessageId::new();
    let escalation = Escalation {
        escalation_id: id.clone(),
        origin: role.clone(),
        path: vec![role.clone()],
        reason: "breaker_open".to_owned(),
        details,
        task_id: None,
    };
    let env = kernel
        .envelope(role.clone(), Kind::Escalation, to_value(&escalation)?)
        .with_id(id)
        .with_to(manager.clone());
    effects.send(kernel.subjects().inbox(&manager, role), env);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_threshold_once_and_resets_on_success() {
        let cfg = RuntimeConfig::default();
        let now = Utc::now();
        let v = Version::from_raw(1);
        let mut cur: Option<(BreakerRecord, Version)> = None;
        let mut opened = 0;
        for _ in 0..5 {
            let (rec, _, o) = after_task(&cfg, cur.clone(), false, false, now).unwrap();
            opened += u32::from(o);
            cur = Some((rec, v));
        }
        assert_eq!(opened, 1, "escalates once per opening");
        assert_eq!(cur.as_ref().unwrap().0.state, BreakerState::Open);
        let (rec, _, _) = after_task(&cfg, cur, true, false, now).unwrap();
        assert_eq!(rec, BreakerRecord::default());
        assert!(after_task(&cfg, Some((rec, v)), true, false, now).is_none());
    }

    #[test]
    fn failed_probe_reopens_without_escalating() {
        let cfg = RuntimeConfig::default();
        let now = Utc::now();
        let half = BreakerRecord {
            state: BreakerState::HalfOpen,
            consecutive_failures: 3,
            ..BreakerRecord::default()
        };
        let (rec, _, opened) =
            after_task(&cfg, Some((half, Version::from_raw(1))), false, true, now).unwrap();
        assert_eq!(rec.state, BreakerState::Open);
        assert!(!opened);
    }
}
