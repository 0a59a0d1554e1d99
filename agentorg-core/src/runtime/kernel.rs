//! What every part of a running org shares: the [`Kernel`], and the
//! [`Effects`] that patterns commit through it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::config::RuntimeConfig;
use super::extensions::Extensions;
use super::outbox;
use super::records::{from_doc, org_collection, to_value, Layout, TimerRecord};
use super::seam::{Handler, TimerHandler};
use super::timers::Timers;
use crate::chart::OrgChart;
use crate::clock::Clock;
use crate::codec::Codec;
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::store::{CollectionPath, DocKey, Precondition, StateStore, StoreError, Version, Write};
use crate::subject::{Subject, Subjects};
use crate::tools::ToolHost;
use crate::transport::Transport;

/// The kernel of a running org: its chart, backends, clock and
/// configuration, and the table of what the patterns registered.
///
/// Patterns get it in every call the kernel makes into them (a handler's
/// [`Claimed`](super::Claimed) delivery, a timer, a service) and use it to
/// read and commit the org's shared state. Application code never sees it:
/// an agent reaches shared state only through the patterns, which check the
/// chart.
pub struct Kernel {
    pub(crate) chart: OrgChart,
    pub(crate) subjects: Subjects,
    pub(crate) layout: Layout,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: RuntimeConfig,
    pub(crate) codec: Codec,
    /// This process's claim owner id.
    pub(crate) instance: String,
    /// The registered handlers, in registration order (which is the order
    /// of a shared consumer's filters).
    pub(crate) handlers: Vec<Arc<dyn Handler>>,
    /// The registered timer handlers, by timer kind.
    pub(crate) timer_handlers: BTreeMap<Name, Arc<dyn TimerHandler>>,
    /// The durable timers this process fires.
    pub(crate) timers: Timers,
    /// What patterns derive once per org ([`Kernel::cached`]).
    pub(crate) cache: Mutex<Extensions>,
    /// Published outbox entries still to delete.
    pub(crate) cleanup: outbox::Cleanup,
    /// Commits through [`Kernel::commit_writes`] refused for a precondition.
    pub(crate) conflicts: AtomicU64,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("org", self.chart.org())
            .field("transport", &self.transport.to_string())
            .field("store", &self.store.to_string())
            .field("instance", &self.instance)
            .field(
                "handlers",
                &self.handlers.iter().map(|h| h.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// The org's name.
    pub fn org(&self) -> &Name {
        self.chart.org()
    }

    /// The org chart.
    pub fn chart(&self) -> &OrgChart {
        &self.chart
    }

    /// The org's subjects.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The whole state store (not scoped to a role).
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// The runtime configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// The envelope codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The current time of the org's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// This process's id (the owner of its claims).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A new envelope of this org from `from`, created now.
    pub fn envelope(&self, from: Name, kind: Kind, payload: Value) -> Envelope {
        Envelope::new(self.org().clone(), from, kind, payload).with_created_at(self.now())
    }

    /// Stages `payload` as a message from `from` to `to`'s channel
    /// `channel` (`<org>.agent.<to>.<channel>.<from>`) in `effects`: sent
    /// with their commit, through the outbox.
    pub fn send_on_channel<T: serde::Serialize>(
        &self,
        effects: &mut Effects,
        from: &Name,
        to: &Name,
        channel: &Name,
        payload: &T,
    ) -> Result<(), StoreError> {
        let env = self
            .envelope(from.clone(), Kind::Message, to_value(payload)?)
            .with_to(to.clone());
        effects.send(self.subjects().channel(to, channel, from), env);
        Ok(())
    }

    /// The runtime's own event `name` (`sla.breach`, `breaker.open`,
    /// `dead_letter`) from `from`: its subject and envelope, payload
    /// `{ "event": name, "details": details }`, to send with what it
    /// reports. `None` when no role of the chart subscribes to `name` (no
    /// one would take it) or `name` makes no event subject.
    pub fn org_event(
        &self,
        from: Name,
        name: &str,
        details: &Value,
    ) -> Option<(Subject, Envelope)> {
        self.chart.subscribers_of(name).next()?;
        let subject = self.subjects.event_named(name).ok()?;
        let payload = serde_json::json!({ "event": name, "details": details });
        Some((subject, self.envelope(from, Kind::Event, payload)))
    }

    /// `agentorg/<org>/<name>`: a collection of the org's shared records
    /// (a pattern keeps its own there, e.g. the hierarchy's `tasks`).
    pub fn collection(&self, name: &str) -> Result<CollectionPath, StoreError> {
        org_collection(self.org(), name)
    }

    /// A value of type `T` kept for the life of the org, made by `init` on
    /// first use: what a pattern derives once (where its records live, say).
    pub fn cached<T, E>(&self, init: impl FnOnce(&Kernel) -> Result<T, E>) -> Result<Arc<T>, E>
    where
        T: Send + Sync + 'static,
    {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = cache.get::<Arc<T>>() {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(init(self)?);
        cache.insert(Arc::clone(&v));
        Ok(v)
    }

    /// Reads and decodes a record, with its version.
    pub async fn read<T: serde::de::DeserializeOwned>(
        &self,
        key: &DocKey,
    ) -> Result<Option<(T, Version)>, StoreError> {
        match self.store.get(key).await? {
            Some(doc) => from_doc(&doc).map(Some),
            None => Ok(None),
        }
    }

    /// The write that arms `timer` (it must not exist yet); commit it with
    /// what it is about. A process hosting the timer's owner fires it when
    /// it is due, once, with the handler registered for its kind.
    pub fn arm_timer(&self, timer: &TimerRecord) -> Result<Write, StoreError> {
        Ok(Write::put(
            self.layout.timer(timer)?,
            to_value(timer)?,
            Precondition::MustNotExist,
        ))
    }

    /// The write that cancels `timer` (as armed: same kind, owner, key and
    /// due time); nothing happens if it has fired already.
    pub fn cancel_timer(&self, timer: &TimerRecord) -> Result<Write, StoreError> {
        Ok(Write::delete(self.layout.timer(timer)?, Precondition::None))
    }

    /// Commits `effects` atomically — the writes, and the messages into the
    /// outbox — then publishes the messages. A message that cannot be
    /// published now stays in the outbox for the sweep: nothing is lost.
    pub async fn commit(&self, effects: Effects) -> Result<(), StoreError> {
        let (writes, entries) = self.outbox_writes(effects, Vec::new())?;
        let armed = self.timers.arms_any(&writes);
        self.commit_writes(writes).await?;
        self.after_commit(entries, armed).await;
        Ok(())
    }

    /// How many commits of this process met a conflict so far (each was
    /// then read again and retried, or settled otherwise).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Commits `writes` atomically, with the deletions of published outbox
    /// entries riding along; the versions of `writes`, in order.
    pub async fn commit_writes(
        &self,
        mut writes: Vec<Write>,
    ) -> Result<Vec<Option<Version>>, StoreError> {
        let own = writes.len();
        let riders = self.cleanup.ride(&mut writes);
        match self.store.commit(writes).await {
            Ok(mut versions) => {
                versions.truncate(own);
                Ok(versions)
            }
            Err(e) => {
                if e.is_precondition_failure() {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                self.cleanup.restore(riders);
                Err(e)
            }
        }
    }

    /// The writes of `effects` after `first`, with an outbox entry per
    /// message; and the entries to publish once committed.
    pub(crate) fn outbox_writes(
        &self,
        effects: Effects,
        mut first: Vec<Write>,
    ) -> Result<(Vec<Write>, Vec<outbox::Entry>), StoreError> {
        first.extend(effects.writes);
        let mut entries = Vec::with_capacity(effects.messages.len());
        let mut encoded = effects.encoded.into_iter();
        for (subject, env) in effects.messages {
            let bytes = encoded.next().flatten();
            let (w, e) = outbox::entry(self, subject, &env, bytes)?;
            first.push(w);
            entries.push(e);
        }
        Ok((first, entries))
    }

    /// After a commit: publishes its messages and wakes the timers if it
    /// armed one.
    pub(crate) async fn after_commit(&self, entries: Vec<outbox::Entry>, armed: bool) {
        outbox::flush(self, entries).await;
        if armed {
            self.timers.wake();
        }
    }

    /// The consumers `role` binds, from the registered handlers.
    pub(crate) fn role_consumers(&self, role: &Name) -> Vec<crate::transport::ConsumerConfig> {
        super::consumers::role_consumers(
            &self.chart,
            &self.subjects,
            &self.config,
            &self.handlers,
            role,
        )
    }

    /// `role`'s consumers, each with the names of the handlers whose
    /// deliveries it carries.
    pub(crate) fn role_consumer_handlers(&self, role: &Name) -> Vec<(Name, Vec<&'static str>)> {
        let mut out: Vec<(Name, Vec<&'static str>)> = Vec::new();
        for h in &self.handlers {
            if h.subjects(&self.subjects, &self.chart, role).is_empty() {
                continue;
            }
            let name = super::consumers::consumer_name(h.consumer(), self.chart.org(), role);
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, handlers)) => handlers.push(h.name()),
                None => out.push((name, vec![h.name()])),
            }
        }
        out
    }

    /// The handler that takes `role`'s deliveries on `subject`, if any.
    pub(crate) fn handler_for(&self, role: &Name, subject: &Subject) -> Option<&Arc<dyn Handler>> {
        self.handlers.iter().find(|h| {
            h.subjects(&self.subjects, &self.chart, role)
                .iter()
                .any(|p| p.matches(subject))
        })
    }
}

/// What a handler asked for, committed atomically with its outcome: writes
/// and messages (published from the outbox after the commit, as their
/// envelopes' senders).
///
/// Application code stages its own writes through
/// [`Context::stage`](super::Context::stage) (scoped to its role); patterns
/// add theirs to the same effects, and to any they commit themselves.
///
/// ```
/// use agentorg_core::runtime::Effects;
/// use agentorg_core::store::{CollectionPath, Precondition, Write};
///
/// let mut effects = Effects::new();
/// let key = CollectionPath::new("things")?.doc("a")?;
/// effects.write(Write::put(key, serde_json::json!({"n": 1}), Precondition::MustNotExist));
/// assert!(!effects.is_empty() && !effects.is_contended());
/// # Ok::<(), agentorg_core::store::StoreError>(())
/// ```
#[derive(Debug, Default, Clone)]
pub struct Effects {
    pub(crate) writes: Vec<Write>,
    pub(crate) messages: Vec<(Subject, Envelope)>,
    /// Each message's encoding, if its sender already made it (aligned
    /// with `messages`): each envelope is encoded once.
    pub(crate) encoded: Vec<Option<bytes::Bytes>>,
    pub(crate) contended: bool,
}

impl Effects {
    /// No effects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write whose preconditions only the runtime's own records can
    /// break (a record this delivery owns).
    pub fn write(&mut self, write: Write) -> &mut Self {
        self.writes.push(write);
        self
    }

    /// Adds a write that may conflict with someone else's: if the commit
    /// then conflicts, the outcome was computed from stale state and the
    /// handler runs again.
    pub fn contended_write(&mut self, write: Write) -> &mut Self {
        self.contended = true;
        self.writes.push(write);
        self
    }

    /// Marks these effects as computed from state others may change.
    pub fn mark_contended(&mut self) -> &mut Self {
        self.contended = true;
        self
    }

    /// Adds a message to publish on `subject` once committed.
    pub fn send(&mut self, subject: Subject, envelope: Envelope) -> &mut Self {
        self.messages.push((subject, envelope));
        self.encoded.push(None);
        self
    }

    /// Adds a message already encoded (as [`Kernel::codec`] encodes it):
    /// sent as `bytes`, without encoding it again.
    pub fn send_encoded(
        &mut self,
        subject: Subject,
        envelope: Envelope,
        bytes: bytes::Bytes,
    ) -> &mut Self {
        self.messages.push((subject, envelope));
        self.encoded.push(Some(bytes));
        self
    }

    /// Adds `other`'s writes and messages.
    pub fn extend(&mut self, other: Effects) -> &mut Self {
        self.writes.extend(other.writes);
        self.encoded.resize(self.messages.len(), None);
        self.messages.extend(other.messages);
        self.encoded.extend(other.encoded);
        self.contended |= other.contended;
        self
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.messages.is_empty()
    }

    /// Whether a conflict on these makes the outcome stale.
    pub fn is_contended(&self) -> bool {
        self.contended
    }

    /// The writes.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// The messages, with their subjects.
    pub fn messages(&self) -> &[(Subject, Envelope)] {
        &self.messages
    }
}
