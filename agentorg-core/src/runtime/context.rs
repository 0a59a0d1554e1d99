//! The context a handler call runs with.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

use super::extensions::Extensions;
use super::health::RoleStats;
use super::host::HostedRole;
use super::kernel::{Effects, Kernel};
use super::records::role_collection;
use crate::chart::OrgChart;
use crate::envelope::{Envelope, MessageId, TraceContext};
use crate::name::Name;
use crate::store::{CollectionPath, StateStore, StoreError, Write};
use crate::tools::ToolHost;

/// What a handler runs with: its identity, the chart, the delivery, its
/// tools and its own state — and, from each pattern's module, that pattern's
/// operations (`delegate` and `escalate` from the hierarchy, `send_peer` and
/// `request_peer` from the peer channels).
///
/// Everything a call stages — writes, delegations, escalations, peer
/// messages — takes effect only if it succeeds: it is committed atomically
/// with the delivery's completion record, then the messages are published.
/// A call that fails leaves no trace of them, so a retry does not delegate
/// twice.
///
/// # State
///
/// [`store`](Self::store) reaches only this role's own namespace,
/// `agentorg/<org>/roles/<role>/…` ([`collection`](Self::collection) names
/// its collections); reading or writing anything else is refused with
/// [`StoreError::Forbidden`] before the store is called. Shared state — the
/// task tree, the registry — is reached through the patterns, which check
/// the chart.
pub struct Context {
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) role: Name,
    pub(crate) envelope: Arc<Envelope>,
    pub(crate) task: Option<MessageId>,
    pub(crate) attempt: u32,
    pub(crate) trace: TraceContext,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) stats: Arc<RoleStats>,
    effects: Mutex<Effects>,
    extensions: Mutex<Extensions>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("role", &self.role)
            .field("message", &self.envelope.id)
            .field("task", &self.task)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(
        host: &HostedRole,
        envelope: Arc<Envelope>,
        task: Option<MessageId>,
        attempt: u32,
        trace: TraceContext,
    ) -> Self {
        Self {
            kernel: Arc::clone(&host.kernel),
            role: host.role.clone(),
            envelope,
            task,
            attempt,
            trace,
            tools: Arc::clone(&host.tools),
            store: Arc::clone(&host.store),
            stats: Arc::clone(&host.stats),
            effects: Mutex::default(),
            extensions: Mutex::default(),
        }
    }

    /// This role.
    pub fn role(&self) -> &Name {
        &self.role
    }

    /// The org.
    pub fn org(&self) -> &Name {
        self.kernel.org()
    }

    /// The org chart.
    pub fn chart(&self) -> &OrgChart {
        &self.kernel.chart
    }

    /// The envelope being handled.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The task this call is about, if any (the parent of delegations made
    /// here).
    pub fn task_id(&self) -> Option<&MessageId> {
        self.task.as_ref()
    }

    /// This attempt's number, from the claim (1 for the first; 0 for a
    /// request, which is answered at most once).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The trace context of this delivery's span.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// The current time of the runtime's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.kernel.now()
    }

    /// This role's own part of the org's state store, for reads (stage
    /// writes with [`stage`](Self::stage) to have them committed exactly
    /// once). Anything outside the role's namespace is refused (see the
    /// [type docs](Self#state)).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The collection `name` of this role's namespace:
    /// `agentorg/<org>/roles/<role>/<name>`.
    pub fn collection(&self, name: &str) -> Result<CollectionPath, StoreError> {
        role_collection(self.org(), &self.role, name)
    }

    /// The tools this role is granted (others are invisible and `Forbidden`).
    pub fn tools(&self) -> &Arc<dyn ToolHost> {
        &self.tools
    }

    /// A key that is the same on every attempt of this delivery, for making
    /// outside side effects idempotent: `<task or message id>-<step>`.
    pub fn idempotency_key(&self, step: &str) -> String {
        let base = self.task.as_ref().unwrap_or(&self.envelope.id);
        format!("{base}-{step}")
    }

    /// Reports what this call used (e.g. an LLM's tokens and cost), for the
    /// role's registry entry. Counted per call, so a retried call counts
    /// again. Tokens saturate at `u64::MAX`; a cost that is not a finite,
    /// non-negative number is ignored.
    pub fn report_usage(&self, tokens: u64, cost_usd: f64) {
        self.stats.add_usage(tokens, cost_usd);
    }

    /// Reports one model call's usage for the role's registry entry: under
    /// `model` (the model that answered, say a catalog entry's name) in its
    /// [`usage`](super::AgentRecord::usage), and in its totals. Counted per
    /// call, like [`report_usage`](Self::report_usage). A name no store
    /// holds as a field name (empty, `__x__`) is kept as `(unnamed)` or
    /// `model __x__`; one longer than 200 bytes is cut.
    pub fn report_model_usage(&self, model: &str, usage: super::ModelUsage) {
        self.stats.add_model_usage(model, usage);
    }

    /// What this role has used so far (tokens and cost, every process's
    /// calls): its registry entry, which each process folds its counts
    /// into every sweep, plus what this process counted since. Another
    /// process's usage shows once it is folded (a sweep interval behind at
    /// most); while this process folds its own, that part may be missed
    /// for a moment (never counted twice).
    pub async fn role_usage(&self) -> Result<super::Spent, StoreError> {
        let key = self.kernel.layout.agent(&self.role)?;
        let record = self
            .kernel
            .read::<super::AgentRecord>(&key)
            .await?
            .map(|(r, _)| r)
            .unwrap_or_default();
        let (tokens, cost_usd) = self.stats.pending_usage();
        Ok(super::Spent {
            tokens: record.tokens.saturating_add(tokens),
            cost_usd: record.cost_usd + cost_usd,
        })
    }

    /// Stages a write to this role's namespace, to commit atomically with
    /// this delivery's completion record: it happens exactly once, and only
    /// if the handler succeeds. A write outside the namespace is refused
    /// with [`StoreError::Forbidden`].
    pub fn stage(&self, write: Write) -> Result<(), StoreError> {
        let namespace = super::records::role_namespace(self.org(), &self.role);
        let collection = write.key().collection().as_str();
        let inside = collection
            .strip_prefix(namespace.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if !inside {
            return Err(StoreError::Forbidden {
                message: format!(
                    "`{}` may stage writes only in its own namespace ({namespace}/…), not to {}",
                    self.role,
                    write.key()
                ),
                source: None,
            });
        }
        self.effects().contended_write(write);
        Ok(())
    }

    /// The effects this call has staged so far, and the patterns' own
    /// records of it, for a pattern to add to (outside this crate, through
    /// its [`KernelAccess`](super::KernelAccess)).
    pub(crate) fn with_effects<R>(&self, f: impl FnOnce(&mut Effects, &mut Extensions) -> R) -> R {
        let mut effects = self.effects();
        let mut extensions = self
            .extensions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut effects, &mut extensions)
    }

    /// Takes what this call staged (for a pattern committing it itself).
    pub(crate) fn take_effects(&self) -> (Effects, Extensions) {
        let effects = std::mem::take(&mut *self.effects());
        let extensions = std::mem::take(
            &mut *self
                .extensions
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        (effects, extensions)
    }

    pub(crate) fn effects(&self) -> MutexGuard<'_, Effects> {
        self.effects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kernel, for the patterns (see [`KernelAccess`](super::KernelAccess)).
    pub(crate) fn kernel(&self) -> &Kernel {
        &self.kernel
    }
}
