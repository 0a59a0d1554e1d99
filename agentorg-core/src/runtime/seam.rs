//! The seam patterns plug into: a [`Pattern`] registers [`Handler`]s,
//! [`TimerHandler`]s and [`Service`]s with the kernel's [`Registry`]; the
//! kernel keeps the table and dispatches by it (it names no pattern).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::claimed::Claimed;
use super::context::Context;
use super::error::Fault;
use super::extensions::Extensions;
use super::host::HostedRole;
use super::kernel::{Effects, Kernel};
use super::records::{clip, DeadLetterRecord, TimerRecord};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, MessageId};
use crate::name::Name;
use crate::store::{StoreError, Write};
use crate::subject::{Route, SubjectPattern, Subjects};

/// The key of every role's inbox consumer, `in-<role>-<hash>`: handlers that
/// keep the default [`Handler::consumer`] add their subjects to it, and the
/// principal's inbox stream reads it.
pub const INBOX: &str = "in";

/// What to tell the transport about a delivery once it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// Done: acknowledge it.
    Ack,
    /// Not now: put it back, to come again after the delay.
    Nak(Duration),
    /// Never: terminate it (it was dead-lettered, or processed elsewhere).
    Term,
}

/// Why a delivery is refused or dead-lettered: a short code (`not_allowed`,
/// `attempts_exhausted`, …) and a message (cut to
/// [`MAX_ERROR_LEN`](super::MAX_ERROR_LEN)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reason {
    /// The code.
    pub code: &'static str,
    /// What happened.
    pub message: String,
}

impl Reason {
    /// A reason.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: clip(message.into()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A pattern's handler of deliveries: which subjects it takes for a hosted
/// role, how it admits or refuses a delivery, how it handles a claimed one,
/// and what goes with one of its deliveries being dead-lettered, requeued or
/// discarded.
///
/// The kernel does the rest for every handler alike: it binds the consumers,
/// decodes each delivery, refuses an envelope of another org, addressed to
/// another role, or whose `from` differs from the sender its subject names;
/// then asks [`admit`](Handler::admit); claims the message in the store
/// (a live claim elsewhere puts it back, a completion record acknowledges it
/// without running, spent attempts dead-letter it); and calls
/// [`handle`](Handler::handle) with the claim, through which the handler
/// runs the application's code (keeping the lease), commits the outcome
/// with the completion record, retries or dead-letters.
///
/// # Example
///
/// A pattern whose deliveries on `<org>.events.ping` a role counts, once
/// each, in its own namespace (see the runtime conformance case
/// `a_registered_pattern_is_claimed_retried_and_dead_lettered` for one that
/// is also retried and dead-lettered):
///
/// ```
/// use std::sync::Arc;
/// use agentorg_core::async_trait;
/// use agentorg_core::chart::OrgChart;
/// use agentorg_core::envelope::Envelope;
/// use agentorg_core::name::Name;
/// use agentorg_core::runtime::{
///     role_collection, Claimed, Effects, Fault, Handler, HostedRole, Pattern, Reason, Registry, Settle,
/// };
/// use agentorg_core::store::{Precondition, Write};
/// use agentorg_core::subject::{Route, SubjectPattern, Subjects};
///
/// struct Pings;
///
/// impl Pattern for Pings {
///     fn name(&self) -> &'static str { "pings" }
///     fn register(&self, registry: &mut Registry) { registry.handler(PingHandler); }
/// }
///
/// struct PingHandler;
///
/// #[async_trait]
/// impl Handler for PingHandler {
///     fn name(&self) -> &'static str { "pings" }
///     fn consumer(&self) -> &'static str { "ping" }
///     fn subjects(&self, s: &Subjects, _chart: &OrgChart, _role: &Name) -> Vec<SubjectPattern> {
///         s.events_matching("ping").into_iter().collect()
///     }
///     fn admit(&self, _role: &HostedRole, _env: &Envelope, _route: &Route) -> Result<(), Reason> {
///         Ok(())
///     }
///     async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
///         let k = delivery.kernel();
///         let key = role_collection(k.org(), delivery.role(), "pings")?.doc(delivery.envelope().id.as_str())?;
///         let mut effects = Effects::new();
///         effects.write(Write::put(key, serde_json::json!({"seen": true}), Precondition::None));
///         delivery.commit_all(effects).await
///     }
/// }
/// ```
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// The key of the durable consumer this handler's deliveries come on:
    /// the kernel binds one consumer per hosted role and key, filtered by the
    /// subjects of every handler with that key, in registration order.
    /// Default: the role's [`INBOX`].
    fn consumer(&self) -> &'static str {
        INBOX
    }

    /// Where the consumer of this handler's [`consumer`](Handler::consumer)
    /// key starts when it is first created (the first handler of a key
    /// decides). Default: every stored message
    /// ([`DeliverFrom::All`](crate::transport::DeliverFrom::All)); a
    /// subscription that must not see history from before it existed says
    /// [`New`](crate::transport::DeliverFrom::New).
    fn deliver(&self) -> crate::transport::DeliverFrom {
        crate::transport::DeliverFrom::All
    }

    /// The subjects of `role`'s deliveries this handler takes (none: it does
    /// not serve that role). Asked for every role of the chart and for the
    /// principal (whose inbox consumer the application reads).
    fn subjects(&self, subjects: &Subjects, chart: &OrgChart, role: &Name) -> Vec<SubjectPattern>;

    /// Admission beyond the kernel's checks (org, recipient, the sender a
    /// subject names), before any claim: a refusal dead-letters the delivery
    /// at once, unclaimed, with the reason.
    fn admit(&self, role: &HostedRole, envelope: &Envelope, route: &Route) -> Result<(), Reason>;

    /// The work item a delivery is about (for the hierarchy, the task):
    /// recorded with its dead letter, and handed to
    /// [`dead_lettered`](Handler::dead_lettered) when the kernel dead-letters
    /// it because its attempts are spent.
    async fn work_item(
        &self,
        kernel: &Kernel,
        envelope: &Envelope,
    ) -> Result<Option<MessageId>, Fault> {
        let _ = (kernel, envelope);
        Ok(None)
    }

    /// What to read and write as the delivery is claimed, before
    /// [`handle`](Handler::handle): the writes are committed atomically with
    /// the claim (starting the work costs no commit of its own; if one of
    /// them conflicts, the claim is tried again and this is asked again, so
    /// make them hold for what this call read — a write that can never
    /// succeed keeps the delivery from being claimed), and the note comes
    /// back to `handle` through [`Claimed::prepared`], with the versions the
    /// writes got. It is asked on every attempt, a retry's too. Default:
    /// nothing.
    async fn prepare(
        &self,
        kernel: &Kernel,
        role: &Name,
        envelope: &Envelope,
    ) -> Result<Prepared, Fault> {
        let _ = (kernel, role, envelope);
        Ok(Prepared::none())
    }

    /// Handles a claimed delivery: runs the application's code through it,
    /// and settles it (commit, retry or dead-letter).
    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault>;

    /// What to commit with the dead letter of a delivery of `role` about
    /// `item`: `Some` when the item itself ends failed by it (it is then
    /// counted as failed work in the role's registry entry).
    async fn dead_lettered(
        &self,
        kernel: &Kernel,
        role: &Name,
        item: &MessageId,
        reason: &Reason,
    ) -> Result<Option<Effects>, Fault> {
        let _ = (kernel, role, item, reason);
        Ok(None)
    }

    /// What to commit with one of this handler's dead letters being requeued.
    async fn requeued(
        &self,
        kernel: &Kernel,
        record: &DeadLetterRecord,
    ) -> Result<Effects, StoreError> {
        let _ = (kernel, record);
        Ok(Effects::new())
    }

    /// What to commit with one of this handler's dead letters being
    /// discarded (given up).
    async fn discarded(
        &self,
        kernel: &Kernel,
        record: &DeadLetterRecord,
    ) -> Result<Effects, StoreError> {
        let _ = (kernel, record);
        Ok(Effects::new())
    }
}

/// What a handler reads and writes as a delivery is claimed (see
/// [`Handler::prepare`]): writes committed with the claim, and a note of
/// what it read, for [`Claimed::prepared`].
#[derive(Default)]
pub struct Prepared {
    pub(crate) writes: Vec<Write>,
    pub(crate) note: Option<Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("writes", &self.writes)
            .field("note", &self.note.is_some())
            .finish()
    }
}

impl Prepared {
    /// Nothing to read or write with the claim.
    pub fn none() -> Self {
        Self::default()
    }

    /// `note` handed to [`Handler::handle`], and `writes` committed with
    /// the claim (their versions come with the note, in order).
    pub fn new<T: Any + Send + Sync>(note: T, writes: Vec<Write>) -> Self {
        Self {
            writes,
            note: Some(Box::new(note)),
        }
    }
}

/// Fires the durable timers of one kind (see [`Kernel::arm_timer`]).
#[async_trait]
pub trait TimerHandler: Send + Sync + 'static {
    /// The timer is due: what to commit with its removal. The kernel commits
    /// both atomically, once, whichever process fires it first.
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault>;
}

/// How a long-running task of the org stops: `shutdown` ends intake,
/// `kill` cancels work in flight (a crash, or a drain that timed out), and
/// every task spawned on `tracker` is waited for by the org's shutdown.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lifecycle {
    /// Stop taking new work.
    pub shutdown: CancellationToken,
    /// Cancel work in flight.
    pub kill: CancellationToken,
    /// Where to spawn tasks the org waits for.
    pub tracker: TaskTracker,
}

/// A background task a pattern runs for each hosted role it serves (the
/// peer pattern's request server, say), outside the role's concurrency
/// limit.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Whether it runs for `role`.
    fn serves(&self, role: &HostedRole) -> bool;

    /// Runs until `lifecycle.shutdown` (spawning per-request tasks on its
    /// tracker, each stopped by `kill`).
    async fn run(&self, role: Arc<HostedRole>, lifecycle: Lifecycle);
}

/// A coordination pattern: what it registers with the kernel, as a plug-in
/// registers with an app. Adding a pattern adds a registration; it edits no
/// kernel code.
pub trait Pattern: Send + Sync + 'static {
    /// Its name.
    fn name(&self) -> &'static str;

    /// Registers its handlers, timers and services.
    fn register(&self, registry: &mut Registry);
}

/// The table patterns register into (see [`Pattern`]): only the kernel
/// makes one, and hands it to each pattern as it registers.
pub struct Registry {
    pub(crate) handlers: Vec<Arc<dyn Handler>>,
    pub(crate) timers: BTreeMap<String, Arc<dyn TimerHandler>>,
    pub(crate) services: Vec<Arc<dyn Service>>,
    pub(crate) patterns: Vec<&'static str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("patterns", &self.patterns)
            .field(
                "handlers",
                &self.handlers.iter().map(|h| h.name()).collect::<Vec<_>>(),
            )
            .field("timers", &self.timers.keys().collect::<Vec<_>>())
            .field(
                "services",
                &self.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            handlers: Vec::new(),
            timers: BTreeMap::new(),
            services: Vec::new(),
            patterns: Vec::new(),
        }
    }

    /// Registers a handler of deliveries.
    pub fn handler(&mut self, handler: impl Handler) -> &mut Self {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Registers the handler of the durable timers of `kind` (a valid
    /// [`Name`]; checked when the org starts).
    pub fn timer(&mut self, kind: &str, handler: impl TimerHandler) -> &mut Self {
        self.timers.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    /// Registers a service run for each hosted role it serves.
    pub fn service(&mut self, service: impl Service) -> &mut Self {
        self.services.push(Arc::new(service));
        self
    }

    /// The pattern's access to the kernel from a handler call's context, for
    /// the operations it adds to [`Context`] (see [`KernelAccess`]).
    pub fn kernel_access(&self) -> KernelAccess {
        KernelAccess { _private: () }
    }

    pub(crate) fn add(&mut self, pattern: &dyn Pattern) {
        self.patterns.push(pattern.name());
        pattern.register(self);
    }
}

/// A registered pattern's access to the kernel from a handler call's
/// [`Context`]: what a pattern needs to add operations to `Context` (from an
/// extension trait of its own) that read the org's shared records or stage
/// writes and messages with the call's outcome — as the hierarchy's
/// `delegate` does. The [`Registry`] hands it to patterns as they register;
/// application code, which reaches only its own namespace, holds none.
///
/// ```
/// use agentorg_core::runtime::{Context, KernelAccess};
/// use agentorg_core::store::{Precondition, StoreError, Write};
///
/// /// An operation a pattern adds to every handler's context.
/// trait Notes {
///     fn note(&self, access: &KernelAccess, text: &str) -> Result<(), StoreError>;
/// }
///
/// impl Notes for Context {
///     fn note(&self, access: &KernelAccess, text: &str) -> Result<(), StoreError> {
///         let key = access.kernel(self).collection("notes")?.doc(self.envelope().id.as_str())?;
///         let write = Write::put(key, serde_json::json!({ "text": text }), Precondition::None);
///         access.with_effects(self, |effects, _| { effects.write(write); });
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct KernelAccess {
    _private: (),
}

impl KernelAccess {
    /// The kernel of the org `cx` runs in.
    pub fn kernel<'a>(&self, cx: &'a Context) -> &'a Kernel {
        cx.kernel()
    }

    /// The effects `cx` has staged so far, and the patterns' records of its
    /// call, to add to: committed with the call's outcome.
    pub fn with_effects<R>(
        &self,
        cx: &Context,
        f: impl FnOnce(&mut Effects, &mut Extensions) -> R,
    ) -> R {
        cx.with_effects(f)
    }

    /// Takes what `cx` staged, for a pattern that commits it itself.
    pub fn take_effects(&self, cx: &Context) -> (Effects, Extensions) {
        cx.take_effects()
    }
}
