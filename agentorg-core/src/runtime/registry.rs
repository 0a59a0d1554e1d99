//! The agent registry and process heartbeats.
//!
//! Each hosted role accumulates its counters in memory (tasks completed and
//! failed, handler time, reported usage, the last task) and each sweep folds
//! what changed into the role's registry document (the `agents/{id}` of
//! GenBrain's write-up) by an optimistic update, so replicas add up. An idle
//! role writes nothing. Each process also writes one heartbeat document listing
//! the roles it hosts; the liveness view reads those.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::health::RoleStats;
use super::kernel::Kernel;
use super::records::{to_value, AgentRecord, ModelUsage, ProcessRecord};
use crate::name::Name;
use crate::store::{Precondition, StateStoreExt, StoreError};

/// Folds `stats`' changes since the last flush into `role`'s registry entry.
pub(crate) async fn flush(
    shared: &Kernel,
    role: &Name,
    stats: &RoleStats,
) -> Result<(), StoreError> {
    let Some(delta) = stats.take_delta() else {
        return Ok(());
    };
    let key = shared.layout.agent(role)?;
    let capabilities: Vec<String> = shared
        .chart
        .role(role)
        .map(|r| r.capabilities().to_vec())
        .unwrap_or_default();
    let result = shared
        .store
        .update(&key, 16, |current| {
            let mut rec: AgentRecord = current
                .and_then(|v| crate::runtime::from_json(v).ok())
                .unwrap_or_default();
            rec.agent_id = role.to_string();
            rec.capabilities = capabilities.clone();
            rec.tasks_completed += delta.completed;
            rec.tasks_failed += delta.failed;
            rec.execution_ms += delta.execution_ms;
            rec.tokens = rec.tokens.saturating_add(delta.tokens);
            rec.cost_usd += delta.cost_usd;
            for (model, used) in &delta.usage {
                rec.usage.entry(model.clone()).or_default().add(used);
            }
            if delta.current_task.is_some() {
                rec.current_task = delta.current_task.clone();
            }
            if let Some(t) = delta.last_active {
                rec.last_active = Some(rec.last_active.map_or(t, |l| l.max(t)));
            }
            serde_json::to_value(&rec).ok()
        })
        .await;
    if let Err(e) = result {
        // Keep the counts for the next flush.
        stats.restore(delta);
        return Err(e);
    }
    Ok(())
}

/// Writes this process's heartbeat.
pub(crate) async fn heartbeat(
    shared: &Kernel,
    roles: &[Name],
    started_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let record = ProcessRecord {
        instance: shared.instance.clone(),
        roles: roles.to_vec(),
        started_at,
        last_seen: shared.now(),
    };
    shared
        .store
        .put(
            &shared.layout.process(&shared.instance)?,
            to_value(&record)?,
            Precondition::None,
        )
        .await
        .map(drop)
}

/// Removes this process's heartbeat (at shutdown).
pub(crate) async fn farewell(shared: &Kernel) -> Result<(), StoreError> {
    shared
        .store
        .delete(
            &shared.layout.process(&shared.instance)?,
            Precondition::None,
        )
        .await
}

/// `model` as a key of a registry entry's `usage`: a field name every
/// store holds (not empty, not of the reserved form `__x__`, at most 200
/// bytes), so one odd name cannot stop the entry from being updated.
pub(crate) fn usage_key(model: &str) -> String {
    let mut key = if model.is_empty() {
        "(unnamed)".to_owned()
    } else if model.starts_with("__") && model.ends_with("__") {
        format!("model {model}")
    } else {
        model.to_owned()
    };
    if key.len() > 200 {
        let mut end = 200;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

/// The changes of a role's counters since the last flush.
#[derive(Debug, Clone, Default)]
pub(crate) struct Delta {
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) execution_ms: u64,
    pub(crate) tokens: u64,
    pub(crate) cost_usd: f64,
    pub(crate) usage: BTreeMap<String, ModelUsage>,
    pub(crate) current_task: Option<crate::envelope::TaskId>,
    pub(crate) last_active: Option<DateTime<Utc>>,
}

impl RoleStats {
    /// Counts a work item (a task) of this role that ended.
    pub(crate) fn record_work(
        &self,
        task: &crate::envelope::MessageId,
        success: bool,
        execution: std::time::Duration,
        now: DateTime<Utc>,
    ) {
        let mut d = self.delta();
        if success {
            d.completed += 1;
        } else {
            d.failed += 1;
        }
        d.execution_ms += u64::try_from(execution.as_millis()).unwrap_or(u64::MAX);
        d.current_task = Some(task.clone());
        d.last_active = Some(now);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Adds usage a handler reported. Tokens saturate; a cost that is not
    /// a finite, non-negative number is ignored.
    pub(crate) fn add_usage(&self, tokens: u64, cost_usd: f64) {
        let mut d = self.delta();
        d.tokens = d.tokens.saturating_add(tokens);
        if cost_usd.is_finite() && cost_usd >= 0.0 {
            d.cost_usd += cost_usd;
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Adds a model call's usage, under `model` (as [`usage_key`] keeps
    /// it) and in the totals.
    pub(crate) fn add_model_usage(&self, model: &str, used: ModelUsage) {
        let mut d = self.delta();
        d.tokens = d.tokens.saturating_add(used.tokens());
        d.cost_usd += used.cost_usd;
        d.usage.entry(usage_key(model)).or_default().add(&used);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Tokens and cost counted since the last flush.
    pub(crate) fn pending_usage(&self) -> (u64, f64) {
        let d = self.delta();
        (d.tokens, d.cost_usd)
    }

    fn delta(&self) -> std::sync::MutexGuard<'_, Delta> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the changes to flush, if any.
    pub(crate) fn take_delta(&self) -> Option<Delta> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(std::mem::take(&mut *self.delta()))
    }

    /// Puts back changes whose flush failed.
    pub(crate) fn restore(&self, back: Delta) {
        let mut d = self.delta();
        d.completed += back.completed;
        d.failed += back.failed;
        d.execution_ms += back.execution_ms;
        d.tokens = d.tokens.saturating_add(back.tokens);
        d.cost_usd += back.cost_usd;
        for (model, used) in &back.usage {
            d.usage.entry(model.clone()).or_default().add(used);
        }
        if d.current_task.is_none() {
            d.current_task = back.current_task;
        }
        d.last_active = d.last_active.max(back.last_active);
        self.dirty.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::usage_key;

    #[test]
    fn usage_keys_are_field_names_every_store_holds() {
        assert_eq!(usage_key("local"), "local");
        assert_eq!(
            usage_key("anthropic/claude.sonnet"),
            "anthropic/claude.sonnet"
        );
        assert_eq!(usage_key(""), "(unnamed)");
        assert_eq!(usage_key("__local__"), "model __local__");
        assert_eq!(usage_key(&"é".repeat(150)).len(), 200);
    }
}
