//! One hosted role: its consumer loop, and what happens to each delivery.
//!
//! Failures are of three kinds, each with its own way back:
//!
//! * the handler's own (an [`AgentError`]): transient ones spend an attempt
//!   and are retried with backoff until the attempts run out, permanent ones
//!   fail the task;
//! * the org's infrastructure ([`Fault`]): the store or transport is down, a
//!   commit kept conflicting, a document is of a newer version. The claim is
//!   released *without* spending an attempt and the delivery comes back
//!   later — an outage never dead-letters work;
//! * what can never be processed (undecodable input, a refusal, a key the
//!   store refuses): dead-lettered at once, with its reason.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::context::{task_envelope, Context, Effects, PeerReply, ResultPayload, TaskPayload};
use super::docs::{
    clip, from_doc, to_value, ClaimDoc, ClaimState, DeadLetterRecord, DeadLetterStatus, TaskRecord,
    TaskStatus, UNREADABLE,
};
use super::ops;
use super::outbox::{self, Entry};
use super::{breaker, AgentOptions, AgentState, RoleStats, Shared};
use crate::agent::{Agent, AgentError, Outcome, SubtaskResult, Task};
use crate::codec::DecodeError;
use crate::envelope::{Envelope, Kind, MessageId, TaskId, TraceContext};
use crate::hierarchy::{Decision, Escalation, EscalationOutcome};
use crate::name::Name;
use crate::peer::PeerMessage;
use crate::store::{
    DocKey, Precondition, StateStoreExt, StoreError, Version, Write, MAX_DOCUMENT_BYTES,
};
use crate::subject::{Route, SubjectPattern};
use crate::tools::{ScopedToolHost, ToolHost};
use crate::transport::{Delivery, Message, TransportError, TransportExt};

/// What to tell the transport about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    Ack,
    Nak(Duration),
    Term,
}

/// A failure of the org's own infrastructure while handling a delivery.
#[derive(Debug, thiserror::Error)]
enum Fault {
    /// The store or transport is unavailable, or a commit kept conflicting:
    /// try again soon, without spending an attempt.
    #[error("{0}")]
    Transient(String),
    /// A runtime document this build cannot read (a newer version wrote it,
    /// during a rolling update): try again later.
    #[error("{0}")]
    Unreadable(String),
    /// The store or transport refused for good (an invalid key): the message
    /// can never be processed here.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Other { backend, .. } if *backend == UNREADABLE => {
                Self::Unreadable(e.to_string())
            }
            _ if e.is_retryable() || e.is_precondition_failure() => Self::Transient(e.to_string()),
            _ => Self::Permanent(e.to_string()),
        }
    }
}

impl From<TransportError> for Fault {
    fn from(e: TransportError) -> Self {
        if e.is_retryable() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
struct Reason {
    code: &'static str,
    message: String,
}

impl Reason {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: clip(message.into()),
        }
    }
}

/// How a task handler ended, as it will be recorded.
#[derive(Debug, Clone)]
enum End {
    Completed(Value),
    Failed(String),
    Waiting,
}

/// A claim this process holds: which attempt, and its current version
/// (moved on by lease extensions).
#[derive(Debug)]
struct Hold {
    key: DocKey,
    attempt: u32,
    version: AtomicU64,
    lost: AtomicBool,
}

impl Hold {
    fn new(key: DocKey, attempt: u32, version: Version) -> Self {
        Self {
            key,
            attempt,
            version: AtomicU64::new(version.raw()),
            lost: AtomicBool::new(false),
        }
    }

    fn version(&self) -> Version {
        Version::from_raw(self.version.load(Ordering::SeqCst))
    }

    fn set_version(&self, v: Version) {
        self.version.store(v.raw(), Ordering::SeqCst);
    }
}

enum Acquire {
    Run(Hold),
    Done,
    DeadLettered,
    Busy(Duration),
    Exhausted {
        version: Version,
        attempts: u32,
        last_error: Option<String>,
    },
}

/// What a commit attempt says to do next.
enum Next {
    Settled(Disposition),
    /// Something the outcome depends on moved: read again and recompute.
    Again,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    role: Name,
    agent: Arc<dyn Agent>,
    tools: Arc<dyn ToolHost>,
    options: AgentOptions,
    stats: Arc<RoleStats>,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        role: Name,
        agent: Arc<dyn Agent>,
        options: AgentOptions,
        stats: Arc<RoleStats>,
    ) -> Arc<Self> {
        let grants = shared.chart.tool_grants(&role).to_vec();
        let tools: Arc<dyn ToolHost> = Arc::new(ScopedToolHost::new(
            Arc::clone(&shared.tools),
            role.clone(),
            grants,
        ));
        Arc::new(Self {
            shared,
            role,
            agent,
            tools,
            options,
            stats,
        })
    }

    /// Takes deliveries until `shutdown`, each on its own task (tracked by
    /// `tracker`, cancelled by `kill`), at most `concurrency` at once.
    pub(crate) async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        kill: CancellationToken,
        tracker: TaskTracker,
    ) {
        self.stats.set_state(AgentState::Starting);
        if self.shared.chart.peers_of(&self.role).next().is_some() {
            tracker.spawn(Arc::clone(&self).serve_requests(
                shutdown.clone(),
                kill.clone(),
                tracker.clone(),
            ));
        }
        let consumer = self.shared.inbox_consumer(&self.role).name;
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let mut stream = None;
        let mut pause = Duration::from_millis(100);
        loop {
            let deliveries = match stream.as_mut() {
                Some(s) => s,
                None => {
                    let bound = tokio::select! {
                        () = shutdown.cancelled() => break,
                        r = self.shared.transport.consume(&consumer) => r,
                    };
                    match bound {
                        Ok(s) => {
                            pause = Duration::from_millis(100);
                            self.stats.set_state(AgentState::Ready);
                            stream.insert(s)
                        }
                        Err(e) => {
                            tracing::warn!(role = %self.role, error = %e, "cannot bind the inbox consumer; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => break,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
            };
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            match next {
                Some(Ok(d)) => {
                    let w = Arc::clone(&self);
                    let kill = kill.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = kill.cancelled() => {}
                            () = w.process(d) => {}
                        }
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(role = %self.role, error = %e, "inbox consumer failed; rebinding");
                    stream = None;
                    self.stats.set_state(AgentState::Starting);
                }
                None => {
                    tracing::warn!(role = %self.role, "inbox consumer ended; rebinding");
                    stream = None;
                    self.stats.set_state(AgentState::Starting);
                }
            }
        }
        self.stats.set_state(AgentState::Draining);
        let all = u32::try_from(self.options.concurrency).unwrap_or(u32::MAX);
        tokio::select! {
            () = kill.cancelled() => {}
            _ = permits.acquire_many(all) => {}
        }
        self.stats.set_state(AgentState::Stopped);
    }

    fn span(&self, d: &Delivery) -> (tracing::Span, TraceContext) {
        let incoming = d.message().ok().and_then(Envelope::trace);
        let own = incoming.map_or_else(TraceContext::new_root, |t| t.child());
        let (id, kind) = match d.message() {
            Ok(env) => (env.id.to_string(), env.kind.to_string()),
            Err(e) => (String::new(), format!("undecodable:{}", e.kind_str())),
        };
        let span = tracing::info_span!(
            "agentorg.delivery",
            org = %self.shared.org(),
            role = %self.role,
            subject = %d.subject(),
            msg_id = %id,
            kind = %kind,
            delivery_attempt = d.attempt(),
            trace_id = %own.trace_id_hex(),
            span_id = %own.span_id_hex(),
            parent_span_id = incoming.map(|t| t.span_id_hex()).unwrap_or_default(),
        );
        (span, own)
    }

    async fn process(self: Arc<Self>, d: Delivery) {
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let (span, trace) = self.span(&d);
        let disposition = async {
            match self.handle(&d, trace).await {
                Ok(x) => x,
                Err(fault) => self.recover(&d, fault).await,
            }
        }
        .instrument(span.clone())
        .await;
        let settled = match disposition {
            Disposition::Ack => d.ack().await,
            Disposition::Nak(delay) => d.nak(Some(delay)).await,
            Disposition::Term => d.term().await,
        };
        if let Err(e) = settled {
            span.in_scope(|| tracing::warn!(error = %e, ?disposition, "settling the delivery failed; it may come again"));
        }
        if matches!(disposition, Disposition::Ack | Disposition::Term) {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.touch(self.shared.now());
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// After an infrastructure fault: give the claim back without spending
    /// an attempt (if this process holds it) and put the delivery back; or,
    /// if the message can never be processed here, dead-letter it.
    async fn recover(&self, d: &Delivery, fault: Fault) -> Disposition {
        let cfg = &self.shared.config;
        let delay = match &fault {
            Fault::Transient(_) => cfg.retry_delay,
            Fault::Unreadable(_) => cfg.future_version_delay,
            Fault::Permanent(why) => {
                tracing::error!(error = %why, "the store or transport refused this message for good; dead-lettering it");
                return self.dead_letter_direct(d, why).await;
            }
        };
        tracing::warn!(error = %fault, retry_in = ?delay, "interrupted by an infrastructure failure; the delivery comes back without spending an attempt");
        let id = match d.message() {
            Ok(env) => Some(env.id.clone()),
            Err(DecodeError::FutureVersion { id, .. }) => id.clone(),
            Err(_) => None,
        };
        if let Some(id) = id {
            if let Err(e) = self.give_back(id.as_str()).await {
                tracing::debug!(error = %e, "could not give the claim back; it frees itself when its lease ends");
            }
        }
        Disposition::Nak(delay)
    }

    /// Releases this process's running claim on message `id`, uncounted.
    async fn give_back(&self, id: &str) -> Result<(), StoreError> {
        let key = self.claim_key(id)?;
        let Some(doc) = self.shared.store.get(&key).await? else {
            return Ok(());
        };
        let (c, v): (ClaimDoc, Version) = from_doc(&doc)?;
        if c.state != ClaimState::Running || c.owner != self.shared.instance {
            return Ok(());
        }
        let doc = ClaimDoc {
            attempts: c.attempts.saturating_sub(1),
            ..self.claim_doc(
                ClaimState::Released,
                c.attempts,
                Duration::ZERO,
                c.last_error,
            )
        };
        self.shared
            .store
            .put(&key, to_value(&doc)?, Precondition::Version(v))
            .await
            .map(drop)
    }

    async fn handle(&self, d: &Delivery, trace: TraceContext) -> Result<Disposition, Fault> {
        let env = match d.message() {
            Ok(env) => env.clone(),
            Err(DecodeError::FutureVersion { id: Some(id), .. }) => {
                return self.future_version(d, id).await;
            }
            Err(e) => {
                let hash = hex(&Sha256::digest(d.raw()), 16);
                let key = self.claim_key(&format!("raw-{hash}"))?;
                let reason = Reason::new(e.kind_str(), e.to_string());
                return self
                    .dead_letter(d, None, key, Precondition::MustNotExist, reason, 0, None)
                    .await;
            }
        };
        if let Some(reason) = self.refusal(d, &env) {
            tracing::warn!(code = reason.code, reason = %reason.message, "refused");
            return self.refuse_unclaimed(d, &env, reason).await;
        }
        match env.kind {
            Kind::Task => self.on_task(d, env, trace).await,
            Kind::Result => self.on_result(d, env, trace).await,
            Kind::Peer => self.on_peer(d, env, trace).await,
            Kind::Escalation => self.on_escalation(d, env, trace).await,
            Kind::Decision => self.on_decision(d, env, trace).await,
            _ => self.on_message(d, env, trace).await,
        }
    }

    /// What the chart and the subject scheme forbid, checked before any
    /// claim: such a message is never run.
    fn refusal(&self, d: &Delivery, env: &Envelope) -> Option<Reason> {
        let chart = &self.shared.chart;
        let (role, from) = match self.shared.subjects.route(d.subject()) {
            Some(Route::Inbox { role, from }) => {
                if env.kind == Kind::Peer {
                    return Some(Reason::new(
                        "wrong_subject",
                        "peer messages travel on peer subjects",
                    ));
                }
                (role, from)
            }
            Some(Route::Peer { from, to }) => {
                if env.kind != Kind::Peer {
                    return Some(Reason::new(
                        "wrong_subject",
                        format!("a {} envelope on a peer subject", env.kind),
                    ));
                }
                if !chart.are_peers(&from, &to) {
                    return Some(Reason::new(
                        "not_allowed",
                        format!("no peer channel between `{from}` and `{to}` is declared"),
                    ));
                }
                (to, from)
            }
            _ => {
                return Some(Reason::new(
                    "unroutable",
                    format!("{} is not an inbox or peer subject", d.subject()),
                ))
            }
        };
        if role != self.role {
            return Some(Reason::new(
                "wrong_recipient",
                format!("{} is not `{}`'s inbox", d.subject(), self.role),
            ));
        }
        if env.from != from {
            return Some(Reason::new(
                "sender_mismatch",
                format!(
                    "envelope from `{}` on a subject whose sender is `{from}`",
                    env.from
                ),
            ));
        }
        if &env.org != self.shared.org() {
            return Some(Reason::new(
                "wrong_org",
                format!("envelope of org `{}`", env.org),
            ));
        }
        if env.to.as_ref() != Some(&self.role) {
            return Some(Reason::new(
                "wrong_recipient",
                format!(
                    "envelope addressed to {:?}",
                    env.to.as_ref().map(Name::as_str)
                ),
            ));
        }
        match env.kind {
            Kind::Task => {
                let payload: TaskPayload = match serde_json::from_value(env.payload.clone()) {
                    Ok(p) => p,
                    Err(e) => return Some(Reason::new("malformed_task", e.to_string())),
                };
                if !chart.may_receive_task_from(&self.role, &from, payload.task_type.as_deref()) {
                    return Some(Reason::new(
                        "not_allowed",
                        format!(
                            "the chart does not let `{from}` delegate to `{}`",
                            self.role
                        ),
                    ));
                }
                None
            }
            Kind::Escalation if chart.manager_of(&from) != Some(&self.role) => Some(Reason::new(
                "not_allowed",
                format!("`{}` is not the manager of `{from}`", self.role),
            )),
            Kind::Decision if chart.manager_of(&self.role) != Some(&from) => Some(Reason::new(
                "not_allowed",
                format!("`{from}` is not the manager of `{}`", self.role),
            )),
            Kind::Escalation | Kind::Decision | Kind::Result | Kind::Peer => None,
            _ if !chart.may_address(&from).contains(&self.role) => Some(Reason::new(
                "not_allowed",
                format!("the chart does not let `{from}` message `{}`", self.role),
            )),
            _ => None,
        }
    }

    fn claim_key(&self, id: &str) -> Result<DocKey, StoreError> {
        self.shared.layout.claim(&self.role, id)
    }

    fn claim_doc(
        &self,
        state: ClaimState,
        attempts: u32,
        lease: Duration,
        error: Option<String>,
    ) -> ClaimDoc {
        let now = self.shared.now();
        let settled = matches!(state, ClaimState::Done | ClaimState::DeadLettered);
        ClaimDoc {
            state,
            owner: self.shared.instance.clone(),
            attempts,
            deferrals: 0,
            lease_until: add(now, lease),
            updated_at: now,
            last_error: error.map(clip),
            expires_at: settled.then(|| add(now, self.shared.config.claim_retention)),
        }
    }

    /// Claims message `id` for a run, or says why not.
    async fn acquire(&self, id: &str) -> Result<Acquire, Fault> {
        let key = self.claim_key(id)?;
        let cfg = &self.shared.config;
        for _ in 0..8 {
            let now = self.shared.now();
            let (attempts, pre, last_error, deferrals) = match self.shared.store.get(&key).await? {
                None => (1, Precondition::MustNotExist, None, 0),
                Some(doc) => {
                    let (c, v): (ClaimDoc, Version) = from_doc(&doc)?;
                    match c.state {
                        ClaimState::Done => return Ok(Acquire::Done),
                        ClaimState::DeadLettered => return Ok(Acquire::DeadLettered),
                        ClaimState::Running if c.lease_until > now => {
                            let left = (c.lease_until - now).to_std().unwrap_or_default();
                            return Ok(Acquire::Busy(
                                left.clamp(Duration::from_millis(10), cfg.lease),
                            ));
                        }
                        _ if c.attempts >= cfg.max_attempts => {
                            return Ok(Acquire::Exhausted {
                                version: v,
                                attempts: c.attempts,
                                last_error: c.last_error,
                            })
                        }
                        _ => (
                            c.attempts + 1,
                            Precondition::Version(v),
                            c.last_error,
                            c.deferrals,
                        ),
                    }
                }
            };
            let doc = ClaimDoc {
                deferrals,
                ..self.claim_doc(ClaimState::Running, attempts, cfg.lease, last_error)
            };
            match self.shared.store.put(&key, to_value(&doc)?, pre).await {
                Ok(v) => return Ok(Acquire::Run(Hold::new(key, attempts, v))),
                Err(e) if e.is_precondition_failure() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Acquire::Busy(cfg.retry_delay))
    }

    /// An envelope of a newer format version: put back, counting deferrals
    /// apart from the handler's attempts, and dead-lettered when they run out.
    async fn future_version(&self, d: &Delivery, id: &MessageId) -> Result<Disposition, Fault> {
        let key = self.claim_key(id.as_str())?;
        let cfg = &self.shared.config;
        for _ in 0..8 {
            let now = self.shared.now();
            let (current, pre) = match self.shared.store.get(&key).await? {
                None => (None, Precondition::MustNotExist),
                Some(doc) => {
                    let (c, v): (ClaimDoc, Version) = from_doc(&doc)?;
                    (Some(c), Precondition::Version(v))
                }
            };
            let (attempts, deferrals) = match &current {
                Some(c) if c.state == ClaimState::Done => return Ok(Disposition::Ack),
                Some(c) if c.state == ClaimState::DeadLettered => return Ok(Disposition::Term),
                Some(c) if c.state == ClaimState::Running && c.lease_until > now => {
                    // A newer process is running it.
                    return Ok(Disposition::Nak(cfg.future_version_delay));
                }
                Some(c) => (c.attempts, c.deferrals),
                None => (0, 0),
            };
            if deferrals >= cfg.max_attempts {
                let reason = Reason::new(
                    "future_version",
                    d.message()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                );
                return self
                    .dead_letter(d, None, key, pre, reason, deferrals, None)
                    .await;
            }
            let doc = ClaimDoc {
                deferrals: deferrals + 1,
                ..self.claim_doc(
                    ClaimState::Released,
                    attempts,
                    Duration::ZERO,
                    Some("envelope of a newer format version".to_owned()),
                )
            };
            match self.shared.store.put(&key, to_value(&doc)?, pre).await {
                Ok(_) => {
                    tracing::info!(
                        deferrals = deferrals + 1,
                        "envelope of a newer format version; putting it back"
                    );
                    return Ok(Disposition::Nak(cfg.future_version_delay));
                }
                Err(e) if e.is_precondition_failure() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Disposition::Nak(cfg.retry_delay))
    }

    /// Whether `hold` still owns its claim (a commit conflict may come from
    /// another document, or an earlier write's outcome was unknown);
    /// refreshes its version if so.
    async fn still_mine(&self, hold: &Hold) -> Result<bool, Fault> {
        let Some(doc) = self.shared.store.get(&hold.key).await? else {
            return Ok(false);
        };
        let (c, v): (ClaimDoc, Version) = from_doc(&doc)?;
        let mine = c.state == ClaimState::Running
            && c.owner == self.shared.instance
            && c.attempts == hold.attempt;
        if mine {
            hold.set_version(v);
        }
        Ok(mine)
    }

    /// Extends the lease every third of it, in the store and with the
    /// transport, for as long as it is polled (it never completes).
    async fn keep_lease(&self, d: &Delivery, hold: &Hold) {
        let lease = self.shared.config.lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            if hold.lost.load(Ordering::SeqCst) {
                continue;
            }
            let doc = self.claim_doc(ClaimState::Running, hold.attempt, lease, None);
            let Ok(value) = to_value(&doc) else {
                continue;
            };
            match self
                .shared
                .store
                .put(&hold.key, value, Precondition::Version(hold.version()))
                .await
            {
                Ok(v) => hold.set_version(v),
                // An earlier extension whose answer was lost may have landed:
                // look before giving the claim up.
                Err(e) if e.is_precondition_failure() => {
                    if !matches!(self.still_mine(hold).await, Ok(true)) {
                        hold.lost.store(true, Ordering::SeqCst);
                        tracing::warn!("lost the claim (the lease ran out); this attempt's outcome will not be committed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "extending the lease failed; retrying"),
            }
            if let Err(e) = d.progress().await {
                tracing::debug!(error = %e, "progress acknowledgement failed");
            }
        }
    }

    /// Runs a handler future while keeping the lease, within the agent's
    /// handler timeout; a panic or a timeout becomes a transient error.
    async fn guarded<T, F>(&self, d: &Delivery, hold: &Hold, fut: F) -> Result<T, AgentError>
    where
        F: std::future::Future<Output = Result<T, AgentError>> + Send,
    {
        let limit = self.options.handler_timeout;
        let fut = async {
            match limit {
                Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                    Err(AgentError::transient(format!(
                        "handler timed out after {t:?}"
                    )))
                }),
                None => fut.await,
            }
        };
        let fut = AssertUnwindSafe(fut).catch_unwind();
        tokio::pin!(fut);
        let keeper = self.keep_lease(d, hold);
        tokio::pin!(keeper);
        let outcome = tokio::select! {
            biased;
            r = &mut fut => r,
            () = &mut keeper => fut.await,
        };
        match outcome {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic".to_owned());
                Err(AgentError::transient(format!("handler panicked: {what}")))
            }
        }
    }

    fn context(
        &self,
        env: &Envelope,
        task: Option<TaskId>,
        attempt: u32,
        trace: TraceContext,
    ) -> Context {
        Context {
            shared: Arc::clone(&self.shared),
            role: self.role.clone(),
            envelope: env.clone(),
            task,
            attempt,
            trace,
            tools: Arc::clone(&self.tools),
            stats: Arc::clone(&self.stats),
            effects: Mutex::new(Effects::default()),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cfg = &self.shared.config;
        let mut b = backon::ExponentialBuilder::default()
            .with_min_delay(cfg.min_backoff)
            .with_max_delay(cfg.max_backoff)
            .with_factor(2.0)
            .without_max_times();
        if cfg.jitter {
            b = b.with_jitter();
        }
        let n = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        b.build().nth(n).unwrap_or(cfg.max_backoff)
    }

    /// Releases the claim so the next delivery may run it. `spent`: whether
    /// this attempt counts (a handler failure) or not (an infrastructure
    /// problem or a stale outcome).
    async fn release(&self, hold: &Hold, error: &str, spent: bool) -> Result<(), Fault> {
        let attempts = if spent {
            hold.attempt
        } else {
            hold.attempt.saturating_sub(1)
        };
        for _ in 0..2 {
            let doc = self.claim_doc(
                ClaimState::Released,
                attempts,
                Duration::ZERO,
                Some(error.to_owned()),
            );
            match self
                .shared
                .store
                .put(
                    &hold.key,
                    to_value(&doc)?,
                    Precondition::Version(hold.version()),
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Our version may be stale (a lease extension's answer was
                // lost); if someone else owns it now, they decide.
                Err(e) if e.is_precondition_failure() => {
                    if !self.still_mine(hold).await? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The outcome went stale (what it was computed from changed, or the
    /// commit kept conflicting): run the handler again soon, on the same
    /// attempt.
    async fn rerun(&self, hold: &Hold, why: &str) -> Result<Disposition, Fault> {
        tracing::info!(reason = why, "outcome stale; running the handler again");
        self.release(hold, why, false).await?;
        Ok(Disposition::Nak(self.shared.config.retry_delay))
    }

    /// A transient failure: retry with backoff, or dead-letter when this was
    /// the last attempt.
    async fn retry_or_dead_letter(
        &self,
        d: &Delivery,
        env: &Envelope,
        hold: &Hold,
        err: AgentError,
        task: Option<&TaskId>,
    ) -> Result<Disposition, Fault> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let max = self.shared.config.max_attempts;
        if hold.attempt >= max {
            tracing::warn!(attempt = hold.attempt, error = %err, "transient failure on the last attempt: dead-lettering");
            let reason = Reason::new("attempts_exhausted", describe(&err));
            return self
                .dead_letter(
                    d,
                    Some(env),
                    hold.key.clone(),
                    Precondition::Version(hold.version()),
                    reason,
                    hold.attempt,
                    task,
                )
                .await;
        }
        let delay = self.backoff(hold.attempt);
        tracing::info!(attempt = hold.attempt, error = %err, retry_in = ?delay, "transient failure; retrying");
        self.release(hold, &describe(&err), true).await?;
        Ok(Disposition::Nak(delay))
    }

    /// The disposition of a claim that is not ours to run.
    fn settled(&self, a: Acquire) -> Disposition {
        match a {
            Acquire::Done => Disposition::Ack,
            Acquire::DeadLettered => Disposition::Term,
            Acquire::Busy(d) => Disposition::Nak(d),
            Acquire::Run(_) | Acquire::Exhausted { .. } => {
                Disposition::Nak(self.shared.config.retry_delay)
            }
        }
    }

    /// Dead-letters a message whose attempts are spent (the last attempt's
    /// error, if recorded, is the reason).
    #[allow(clippy::too_many_arguments)]
    /// Claims `env` to run its handler. `Err` with the disposition when it
    /// is not to run now: already done or dead-lettered, held by a live
    /// claim elsewhere, or its attempts spent (then dead-lettered here, with
    /// `task` marked dead-lettered if given).
    async fn claim_to_run(
        &self,
        d: &Delivery,
        env: &Envelope,
        task: Option<&TaskId>,
    ) -> Result<Result<Hold, Disposition>, Fault> {
        Ok(match self.acquire(env.id.as_str()).await? {
            Acquire::Run(hold) => Ok(hold),
            Acquire::Exhausted {
                version,
                attempts,
                last_error,
            } => Err(self
                .exhausted(d, env, version, attempts, last_error, task)
                .await?),
            other => Err(self.settled(other)),
        })
    }

    /// Dead-letters `env` for `reason` before any claim was taken (refused or
    /// undecodable input): no attempt is spent on it.
    async fn refuse_unclaimed(
        &self,
        d: &Delivery,
        env: &Envelope,
        reason: Reason,
    ) -> Result<Disposition, Fault> {
        let key = self.claim_key(env.id.as_str())?;
        self.dead_letter(
            d,
            Some(env),
            key,
            Precondition::MustNotExist,
            reason,
            0,
            None,
        )
        .await
    }

    async fn exhausted(
        &self,
        d: &Delivery,
        env: &Envelope,
        version: Version,
        attempts: u32,
        last_error: Option<String>,
        task: Option<&TaskId>,
    ) -> Result<Disposition, Fault> {
        let reason = Reason::new(
            "attempts_exhausted",
            last_error.unwrap_or_else(|| "attempts spent (the handler never finished)".to_owned()),
        );
        let key = self.claim_key(env.id.as_str())?;
        self.dead_letter(
            d,
            Some(env),
            key,
            Precondition::Version(version),
            reason,
            attempts,
            task,
        )
        .await
    }

    async fn read_task(&self, id: &TaskId) -> Result<Option<(TaskRecord, Version)>, Fault> {
        let key = self.shared.layout.task(id)?;
        match self.shared.store.get(&key).await? {
            Some(doc) => Ok(Some(from_doc(&doc)?)),
            None => Ok(None),
        }
    }

    async fn on_task(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        // The task's id is in the payload; the claim is on the envelope (a
        // requeued task travels in a new envelope, with fresh attempts).
        let task_id = match serde_json::from_value::<TaskPayload>(env.payload.clone()) {
            Ok(p) => p.task_id,
            Err(_) => env.id.clone(),
        };
        let hold = match self.claim_to_run(d, &env, Some(&task_id)).await? {
            Ok(hold) => hold,
            Err(settled) => return Ok(settled),
        };
        // Mark the task started (the document was written before the message).
        let record = loop {
            let Some((mut rec, v)) = self.read_task(&task_id).await? else {
                let reason = Reason::new("unknown_task", "no task document for this task message");
                return self
                    .dead_letter(
                        d,
                        Some(&env),
                        hold.key.clone(),
                        Precondition::Version(hold.version()),
                        reason,
                        hold.attempt,
                        None,
                    )
                    .await;
            };
            if rec.status.is_terminal() {
                return self.commit_ended(&hold, &rec).await;
            }
            if rec.assigned_to != self.role {
                let reason = Reason::new(
                    "not_assigned",
                    format!("the task is assigned to `{}`", rec.assigned_to),
                );
                return self
                    .dead_letter(
                        d,
                        Some(&env),
                        hold.key.clone(),
                        Precondition::Version(hold.version()),
                        reason,
                        hold.attempt,
                        None,
                    )
                    .await;
            }
            if rec.status == TaskStatus::InProgress && rec.started_at.is_some() {
                break rec;
            }
            rec.status = TaskStatus::InProgress;
            rec.started_at.get_or_insert(self.shared.now());
            let key = self.shared.layout.task(&task_id)?;
            match self
                .shared
                .store
                .put(&key, to_value(&rec)?, Precondition::Version(v))
                .await
            {
                Ok(_) => break rec,
                Err(e) if e.is_precondition_failure() => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let cx = self.context(&env, Some(task_id.clone()), hold.attempt, trace);
        let started = tokio::time::Instant::now();
        let outcome = self
            .guarded(d, &hold, self.agent.on_task(&cx, to_task(&record)))
            .await;
        let effects = cx.take_effects();
        let ran = Some(started.elapsed());
        self.end_task(d, &env, &hold, &task_id, None, outcome, effects, ran)
            .await
    }

    /// Commits the completion record for a task that had already ended
    /// (cancelled, say): nothing to run; a cancelled task's delegator is
    /// told (with the notice's fixed id, so once however often it is sent).
    async fn commit_ended(&self, hold: &Hold, task: &TaskRecord) -> Result<Disposition, Fault> {
        if task.status != TaskStatus::Cancelled {
            return self.commit_done(hold).await;
        }
        for _ in 0..16 {
            let (w, entry) = ops::result_entry(
                &self.shared,
                task,
                Some(ops::notice_id(&task.task_id, "cancelled")),
            )?;
            match self
                .shared
                .store
                .commit(vec![self.done_write(hold)?, w])
                .await
            {
                Ok(_) => {
                    outbox::flush(&self.shared, vec![entry]).await;
                    return Ok(Disposition::Ack);
                }
                Err(e) if e.is_precondition_failure() => {
                    if let Next::Settled(d) = self.after_conflict(hold, None).await? {
                        return Ok(d);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rerun(hold, "the claim kept changing").await
    }

    /// Records a task handler's outcome.
    #[allow(clippy::too_many_arguments)]
    async fn end_task(
        &self,
        d: &Delivery,
        env: &Envelope,
        hold: &Hold,
        task_id: &TaskId,
        rollup_child: Option<&TaskId>,
        outcome: Result<Outcome, AgentError>,
        effects: Effects,
        ran: Option<Duration>,
    ) -> Result<Disposition, Fault> {
        let end = match outcome {
            Ok(Outcome::Complete(v)) => End::Completed(v),
            Ok(Outcome::AwaitSubtasks) if effects.delegations.is_empty() => End::Failed(
                "the handler returned AwaitSubtasks without delegating a subtask".to_owned(),
            ),
            Ok(Outcome::AwaitSubtasks) => End::Waiting,
            Err(e) if e.is_retryable() => {
                return self
                    .retry_or_dead_letter(d, env, hold, e, Some(task_id))
                    .await;
            }
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %e, "task failed permanently");
                End::Failed(clip(describe(&e)))
            }
        };
        self.finish_task(hold, task_id, rollup_child, end, effects, ran)
            .await
    }

    /// Commits a task's end with the completion record, retrying on
    /// conflicts with other writers of the task and breaker documents.
    async fn finish_task(
        &self,
        hold: &Hold,
        task_id: &TaskId,
        rollup_child: Option<&TaskId>,
        mut end: End,
        effects: Effects,
        ran: Option<Duration>,
    ) -> Result<Disposition, Fault> {
        for _ in 0..16 {
            let Some((mut task, task_v)) = self.read_task(task_id).await? else {
                return self.commit_done(hold).await;
            };
            if task.status.is_terminal() {
                // Cancelled (or ended) meanwhile: the outcome is dropped.
                return self.commit_ended(hold, &task).await;
            }
            if let Some(child) = rollup_child {
                if !task.open_children.contains(child) {
                    return self.commit_done(hold).await;
                }
                task.open_children.retain(|c| c != child);
            }
            let now = self.shared.now();
            let mut writes = vec![self.done_write(hold)?];
            let mut entries = Vec::new();
            let keep_effects = !matches!(end, End::Failed(_));
            if keep_effects {
                // Subtasks join the tree; while the task waits they are open
                // (queued ones too, until they end).
                for p in &effects.delegations {
                    task.children.push(p.record.task_id.clone());
                    if matches!(end, End::Waiting) {
                        task.open_children.push(p.record.task_id.clone());
                        if p.queued {
                            task.queued_children.push(p.record.task_id.clone());
                        }
                    }
                }
            }
            let ended = match &end {
                End::Completed(v) => {
                    task.status = TaskStatus::Completed;
                    task.result = Some(v.clone());
                    Some(true)
                }
                End::Failed(m) => {
                    task.status = TaskStatus::Failed;
                    task.error = Some(m.clone());
                    Some(false)
                }
                End::Waiting => {
                    task.status = TaskStatus::InProgress;
                    None
                }
            };
            if let Some(success) = ended {
                task.completed_at = Some(now);
                let start = task.started_at.unwrap_or(task.created_at);
                let secs = u64::try_from((now - start).num_seconds()).unwrap_or(0);
                task.actual_minutes = Some((secs + 30) / 60);
                // The breaker judges the role by its own handler's outcomes:
                // a roll-up that fails because a subtask failed says nothing
                // about this role.
                if rollup_child.is_none() {
                    let current = breaker::read(&self.shared, &self.role).await?;
                    if let Some((rec, pre, opened)) =
                        breaker::after_task(&self.shared.config, current, success, task.probe, now)
                    {
                        writes.push(breaker::write(&self.shared, &self.role, &rec, pre)?);
                        if opened {
                            self.breaker_escalation(&rec, &mut writes, &mut entries)?;
                        }
                    }
                }
                if task.sla_deadline.is_some() {
                    writes.push(Write::delete(
                        self.shared.layout.sla(task_id)?,
                        Precondition::None,
                    ));
                }
                let (w, e) = ops::result_entry(&self.shared, &task, None)?;
                writes.push(w);
                entries.push(e);
            }
            let key = self.shared.layout.task(task_id)?;
            writes.push(Write::put(
                key,
                to_value(&task)?,
                Precondition::Version(task_v),
            ));
            if keep_effects {
                self.effect_writes(&effects, &mut writes, &mut entries)?;
            }
            match self.shared.store.commit(writes).await {
                Ok(_) => {
                    outbox::flush(&self.shared, entries).await;
                    if keep_effects {
                        self.arm_slas(&effects);
                    }
                    if let (Some(success), Some(ran), None) = (ended, ran, rollup_child) {
                        self.stats.record_task(task_id, success, ran, now);
                    }
                    return Ok(Disposition::Ack);
                }
                Err(e) if e.is_precondition_failure() => {
                    match self
                        .after_conflict(hold, keep_effects.then_some(&effects))
                        .await?
                    {
                        Next::Settled(d) => return Ok(d),
                        Next::Again => {}
                    }
                }
                Err(StoreError::InvalidInput { message, .. }) if keep_effects => {
                    tracing::warn!(error = %message, "the outcome cannot be stored; failing the task");
                    end = End::Failed(clip(format!("the outcome cannot be stored: {message}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rerun(hold, "the task kept changing under the commit")
            .await
    }

    /// After a commit conflict: if the claim is gone, another attempt owns
    /// the message; if the handler's own writes (staged writes, a breaker
    /// probe) may be what conflicted, its outcome is stale and it runs again;
    /// else the runtime's documents moved and the commit is recomputed.
    async fn after_conflict(&self, hold: &Hold, effects: Option<&Effects>) -> Result<Next, Fault> {
        if !self.still_mine(hold).await? {
            tracing::warn!("lost the claim before committing; another attempt owns the message");
            return Ok(Next::Settled(Disposition::Nak(
                self.shared.config.retry_delay,
            )));
        }
        let stale = effects.is_some_and(Effects::contended);
        if stale {
            return self
                .rerun(hold, "a write of the handler conflicted")
                .await
                .map(Next::Settled);
        }
        Ok(Next::Again)
    }

    /// Starts watching the SLAs of committed delegations.
    fn arm_slas(&self, effects: &Effects) {
        for p in &effects.delegations {
            if let Some(deadline) = p.record.sla_deadline {
                self.shared.sla.arm(&self.role, &p.record.task_id, deadline);
            }
        }
    }

    fn envelope(&self, kind: Kind, payload: Value) -> Envelope {
        Envelope::new(self.shared.org().clone(), self.role.clone(), kind, payload)
            .with_created_at(self.shared.now())
    }

    fn done_write(&self, hold: &Hold) -> Result<Write, StoreError> {
        let doc = self.claim_doc(ClaimState::Done, hold.attempt, Duration::ZERO, None);
        Ok(Write::put(
            hold.key.clone(),
            to_value(&doc)?,
            Precondition::Version(hold.version()),
        ))
    }

    /// Adds a handler's delegations (with any probe slots), staged writes and
    /// messages to a commit.
    fn effect_writes(
        &self,
        effects: &Effects,
        writes: &mut Vec<Write>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        for p in &effects.delegations {
            writes.extend(p.writes.iter().cloned());
            if p.queued {
                // Sent when a slot frees up (see `on_result`).
                continue;
            }
            let (w, e) = outbox::entry(&self.shared, &self.role, p.subject.clone(), &p.envelope)?;
            writes.push(w);
            entries.push(e);
        }
        writes.extend(effects.writes.iter().cloned());
        for (subject, env) in &effects.messages {
            let (w, e) = outbox::entry(&self.shared, &self.role, subject.clone(), env)?;
            writes.push(w);
            entries.push(e);
        }
        Ok(())
    }

    /// Commits the completion record alone.
    async fn commit_done(&self, hold: &Hold) -> Result<Disposition, Fault> {
        for _ in 0..16 {
            match self.shared.store.commit(vec![self.done_write(hold)?]).await {
                Ok(_) => return Ok(Disposition::Ack),
                Err(e) if e.is_precondition_failure() => {
                    if let Next::Settled(d) = self.after_conflict(hold, None).await? {
                        return Ok(d);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rerun(hold, "the claim kept changing").await
    }

    /// Commits the completion record with a handler's effects (for messages
    /// that are not tasks).
    async fn commit_effects(
        &self,
        d: &Delivery,
        env: &Envelope,
        hold: &Hold,
        effects: Effects,
    ) -> Result<Disposition, Fault> {
        for _ in 0..16 {
            let mut writes = vec![self.done_write(hold)?];
            let mut entries = Vec::new();
            self.effect_writes(&effects, &mut writes, &mut entries)?;
            match self.shared.store.commit(writes).await {
                Ok(_) => {
                    outbox::flush(&self.shared, entries).await;
                    self.arm_slas(&effects);
                    return Ok(Disposition::Ack);
                }
                Err(e) if e.is_precondition_failure() => {
                    if let Next::Settled(d) = self.after_conflict(hold, Some(&effects)).await? {
                        return Ok(d);
                    }
                }
                Err(StoreError::InvalidInput { message, .. }) => {
                    let reason = Reason::new(
                        "unstorable_outcome",
                        format!("the outcome cannot be stored: {message}"),
                    );
                    return self
                        .dead_letter(
                            d,
                            Some(env),
                            hold.key.clone(),
                            Precondition::Version(hold.version()),
                            reason,
                            hold.attempt,
                            None,
                        )
                        .await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rerun(hold, "the commit kept conflicting").await
    }

    fn breaker_escalation(
        &self,
        rec: &super::BreakerRecord,
        writes: &mut Vec<Write>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), StoreError> {
        let Some(manager) = self.shared.chart.manager_of(&self.role).cloned() else {
            return Ok(());
        };
        tracing::warn!(
            failures = rec.consecutive_failures,
            "circuit breaker opened; escalating to `{manager}`"
        );
        // An escalation like any other (see `hierarchy::Escalation`), so the
        // manager's `on_escalation` decides it or passes it up.
        let id = MessageId::new();
        let escalation = Escalation {
            escalation_id: id.clone(),
            origin: self.role.clone(),
            path: vec![self.role.clone()],
            reason: "breaker_open".to_owned(),
            details: json!({
                "role": self.role,
                "consecutive_failures": rec.consecutive_failures,
                "until": rec.until,
                "alternate": self.shared.chart.alternate_of(&self.role),
            }),
            task_id: None,
        };
        let env = self
            .envelope(Kind::Escalation, to_value(&escalation)?)
            .with_id(id)
            .with_to(manager.clone());
        let subject = self.shared.subjects.inbox(&manager, &self.role);
        let (w, e) = outbox::entry(&self.shared, &self.role, subject, &env)?;
        writes.push(w);
        entries.push(e);
        Ok(())
    }

    async fn on_result(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        let payload: ResultPayload = match serde_json::from_value(env.payload.clone()) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .refuse_unclaimed(d, &env, Reason::new("malformed_result", e.to_string()))
                    .await;
            }
        };
        let child_id = payload.task_id.clone();
        let hold = match self.acquire(env.id.as_str()).await? {
            Acquire::Run(hold) => hold,
            Acquire::Exhausted {
                version,
                attempts,
                last_error,
            } => {
                // The roll-up of the parent kept failing: the parent cannot
                // progress, so it is dead-lettered with the result.
                let parent = self.read_task(&child_id).await?.and_then(|(c, _)| c.parent);
                return self
                    .exhausted(d, &env, version, attempts, last_error, parent.as_ref())
                    .await;
            }
            other => return Ok(self.settled(other)),
        };
        let refuse = |code: &'static str, message: String| Reason::new(code, message);
        let Some((child, _)) = self.read_task(&child_id).await? else {
            let reason = refuse("unknown_task", format!("no task {child_id}"));
            return self
                .dead_letter(
                    d,
                    Some(&env),
                    hold.key.clone(),
                    Precondition::Version(hold.version()),
                    reason,
                    hold.attempt,
                    None,
                )
                .await;
        };
        let reason = if child.assigned_by != self.role || child.assigned_to != env.from {
            Some(refuse(
                "not_allowed",
                format!(
                    "task {child_id} was not delegated by `{}` to `{}`",
                    self.role, env.from
                ),
            ))
        } else if !child.status.is_terminal() {
            Some(refuse(
                "premature_result",
                format!("task {child_id} is {}, not finished", child.status),
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return self
                .dead_letter(
                    d,
                    Some(&env),
                    hold.key.clone(),
                    Precondition::Version(hold.version()),
                    reason,
                    hold.attempt,
                    None,
                )
                .await;
        }
        let Some(parent_id) = child.parent.clone() else {
            let cx = self.context(&env, None, hold.attempt, trace);
            let r = self
                .guarded(d, &hold, self.agent.on_result(&cx, subtask_result(&child)))
                .await;
            return self.end_message(d, &env, &hold, &cx, r).await;
        };
        for _ in 0..16 {
            let Some((parent, parent_v)) = self.read_task(&parent_id).await? else {
                return self.commit_done(&hold).await;
            };
            if parent.assigned_to != self.role {
                let reason = refuse(
                    "not_allowed",
                    format!("task {parent_id} is not `{}`'s", self.role),
                );
                return self
                    .dead_letter(
                        d,
                        Some(&env),
                        hold.key.clone(),
                        Precondition::Version(hold.version()),
                        reason,
                        hold.attempt,
                        None,
                    )
                    .await;
            }
            if parent.status.is_terminal() || !parent.open_children.contains(&child_id) {
                return self.commit_done(&hold).await;
            }
            let remaining: Vec<TaskId> = parent
                .open_children
                .iter()
                .filter(|c| **c != child_id)
                .cloned()
                .collect();
            if remaining.is_empty() {
                // The last subtask: the agent decides the parent's outcome.
                let mut results = Vec::with_capacity(parent.children.len());
                for c in &parent.children {
                    if let Some((rec, _)) = self.read_task(c).await? {
                        results.push(subtask_result(&rec));
                    }
                }
                let cx = self.context(&env, Some(parent_id.clone()), hold.attempt, trace);
                let outcome = self
                    .guarded(
                        d,
                        &hold,
                        self.agent.on_subtasks_done(&cx, to_task(&parent), results),
                    )
                    .await;
                let effects = cx.take_effects();
                return self
                    .end_task(
                        d,
                        &env,
                        &hold,
                        &parent_id,
                        Some(&child_id),
                        outcome,
                        effects,
                        None,
                    )
                    .await;
            }
            let mut updated = parent;
            updated.open_children = remaining;
            let key = self.shared.layout.task(&parent_id)?;
            let mut writes = vec![self.done_write(&hold)?];
            let mut entries = Vec::new();
            // A batch: the slot this subtask held goes to the next queued one.
            if !updated.queued_children.is_empty() {
                let next = updated.queued_children.remove(0);
                if let Some((queued, _)) = self.read_task(&next).await? {
                    let env = task_envelope(&self.shared, &queued, Some(env.id.clone()))?;
                    let subject = self.shared.subjects.inbox(&queued.assigned_to, &self.role);
                    let (w, e) = outbox::entry(&self.shared, &self.role, subject, &env)?;
                    writes.push(w);
                    entries.push(e);
                }
            }
            writes.push(Write::put(
                key,
                to_value(&updated)?,
                Precondition::Version(parent_v),
            ));
            match self.shared.store.commit(writes).await {
                Ok(_) => {
                    outbox::flush(&self.shared, entries).await;
                    return Ok(Disposition::Ack);
                }
                Err(e) if e.is_precondition_failure() => {
                    if let Next::Settled(d) = self.after_conflict(&hold, None).await? {
                        return Ok(d);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rerun(&hold, "the parent task kept changing").await
    }

    async fn on_message(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        let hold = match self.claim_to_run(d, &env, None).await? {
            Ok(hold) => hold,
            Err(settled) => return Ok(settled),
        };
        let cx = self.context(&env, None, hold.attempt, trace);
        let r = self
            .guarded(d, &hold, self.agent.on_message(&cx, env.clone()))
            .await;
        self.end_message(d, &env, &hold, &cx, r).await
    }

    async fn end_message(
        &self,
        d: &Delivery,
        env: &Envelope,
        hold: &Hold,
        cx: &Context,
        r: Result<(), AgentError>,
    ) -> Result<Disposition, Fault> {
        let effects = cx.take_effects();
        match r {
            Ok(()) => self.commit_effects(d, env, hold, effects).await,
            Err(e) if e.is_retryable() => self.retry_or_dead_letter(d, env, hold, e, None).await,
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                let reason = Reason::new("rejected", describe(&e));
                self.dead_letter(
                    d,
                    Some(env),
                    hold.key.clone(),
                    Precondition::Version(hold.version()),
                    reason,
                    hold.attempt,
                    None,
                )
                .await
            }
        }
    }

    /// Dead-letters a delivery, once: the claim becomes `dead_lettered` in
    /// the same commit as the dead-letter envelope and the alert (in the
    /// outbox), the task's status and its breaker. Then the original is
    /// terminated.
    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        d: &Delivery,
        env: Option<&Envelope>,
        claim: DocKey,
        mut claim_pre: Precondition,
        reason: Reason,
        attempts: u32,
        task: Option<&TaskId>,
    ) -> Result<Disposition, Fault> {
        let (dl, alert, original) = self.dead_letter_envelopes(d, env, &reason, attempts, task);
        let record = DeadLetterRecord {
            dead_letter_id: dl.id.clone(),
            original_id: env.map(|e| e.id.clone()),
            subject: d.subject().to_string(),
            role: self.role.clone(),
            sender: env.map(|e| e.from.clone()),
            task_id: task.cloned(),
            reason_code: reason.code.to_owned(),
            reason: reason.message.clone(),
            attempts,
            status: DeadLetterStatus::Open,
            created_at: self.shared.now(),
            original,
        };
        let record_write = Write::put(
            self.shared.layout.deadletter(&dl.id)?,
            to_value(&record)?,
            Precondition::MustNotExist,
        );
        let mut counted = None;
        for _ in 0..8 {
            let doc = self.claim_doc(
                ClaimState::DeadLettered,
                attempts,
                Duration::ZERO,
                Some(reason.message.clone()),
            );
            let mut writes = vec![
                Write::put(claim.clone(), to_value(&doc)?, claim_pre),
                record_write.clone(),
            ];
            let mut entries = Vec::new();
            for (subject, e) in [
                (self.shared.subjects.deadletter(), &dl),
                (self.shared.subjects.alerts(), &alert),
            ] {
                let (w, entry) = outbox::entry(&self.shared, &self.role, subject, e)?;
                writes.push(w);
                entries.push(entry);
            }
            if let Some(task_id) = task {
                if let Some((mut rec, v)) = self.read_task(task_id).await? {
                    if !rec.status.is_terminal() && rec.assigned_to == self.role {
                        rec.status = TaskStatus::DeadLettered;
                        rec.error = Some(clip(format!("{}: {}", reason.code, reason.message)));
                        counted = Some(task_id.clone());
                        let probe = rec.probe;
                        writes.push(Write::put(
                            self.shared.layout.task(task_id)?,
                            to_value(&rec)?,
                            Precondition::Version(v),
                        ));
                        let now = self.shared.now();
                        let current = breaker::read(&self.shared, &self.role).await?;
                        if let Some((b, pre, opened)) =
                            breaker::after_task(&self.shared.config, current, false, probe, now)
                        {
                            writes.push(breaker::write(&self.shared, &self.role, &b, pre)?);
                            if opened {
                                self.breaker_escalation(&b, &mut writes, &mut entries)?;
                            }
                        }
                    }
                }
            }
            match self.shared.store.commit(writes).await {
                Ok(_) => {
                    tracing::warn!(code = reason.code, reason = %reason.message, attempts, dead_letter = %dl.id, "dead-lettered");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = &counted {
                        self.stats
                            .record_task(t, false, Duration::ZERO, self.shared.now());
                    }
                    outbox::flush(&self.shared, entries).await;
                    return Ok(Disposition::Term);
                }
                Err(e) if e.is_precondition_failure() => {
                    // Someone else settled the claim, or a task or breaker
                    // document moved, or our claim version was stale.
                    let current = match self.shared.store.get(&claim).await? {
                        Some(doc) => Some(from_doc::<ClaimDoc>(&doc)?),
                        None => None,
                    };
                    match (current, claim_pre) {
                        (Some((c, _)), _) if c.state == ClaimState::DeadLettered => {
                            return Ok(Disposition::Term)
                        }
                        (Some((c, _)), _) if c.state == ClaimState::Done => {
                            return Ok(Disposition::Ack)
                        }
                        (Some((_, v)), Precondition::Version(pv)) if v == pv => {}
                        (Some((c, v)), Precondition::Version(_))
                            if c.state == ClaimState::Running
                                && c.owner == self.shared.instance
                                && c.attempts == attempts =>
                        {
                            claim_pre = Precondition::Version(v);
                        }
                        (None, Precondition::MustNotExist) => {}
                        _ => return Ok(Disposition::Nak(self.shared.config.retry_delay)),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Disposition::Nak(self.shared.config.retry_delay))
    }

    /// Dead-letters a message that cannot even be claimed (the store refuses
    /// its key): publishes the dead letter and the alert directly, then
    /// terminates it. Without a claim, a redelivery before the termination
    /// lands could dead-letter it twice; that is the price of not losing it.
    async fn dead_letter_direct(&self, d: &Delivery, why: &str) -> Disposition {
        let reason = Reason::new("store_refused", why.to_owned());
        let env = d.message().ok();
        let (dl, alert, _) = self.dead_letter_envelopes(d, env, &reason, 0, None);
        let t = &self.shared.transport;
        let published = async {
            t.publish_envelope(&self.shared.subjects.deadletter(), &dl)
                .await?;
            t.publish_envelope(&self.shared.subjects.alerts(), &alert)
                .await
        }
        .await;
        match published {
            Ok(_) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Disposition::Term
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish the dead letter yet; the delivery comes back");
                Disposition::Nak(self.shared.config.retry_delay)
            }
        }
    }

    /// The dead-letter envelope (a new message, caused by the original, whose
    /// body it keeps whole when it fits and else a prefix and a hash) and the
    /// principal's alert.
    fn dead_letter_envelopes(
        &self,
        d: &Delivery,
        env: Option<&Envelope>,
        reason: &Reason,
        attempts: u32,
        task: Option<&TaskId>,
    ) -> (Envelope, Envelope, Value) {
        let raw = d.raw();
        let make = |original: &Value| {
            let mut e = self.envelope(
                Kind::DeadLetter,
                json!({
                    "reason": { "code": reason.code, "message": reason.message },
                    "attempts": attempts,
                    "role": self.role,
                    "subject": d.subject().as_str(),
                    "original_id": env.map(|e| e.id.to_string()),
                    "original": original,
                }),
            );
            if let Some(env) = env {
                e = e.with_causation(env.id.clone());
            }
            if let Some(t) = task {
                e = e.with_correlation(t.clone());
            }
            e
        };
        // Whole if the dead letter still fits a document (its outbox entry,
        // and its record).
        let budget = MAX_DOCUMENT_BYTES - 16 * 1024;
        let whole = ops::original_body(raw, true);
        let full = make(&whole);
        let (dl, original) = match self.shared.codec.encode(&full) {
            Ok(bytes) if bytes.len() <= budget => (full, whole),
            _ => {
                let cut = ops::original_body(raw, false);
                (make(&cut), cut)
            }
        };
        let alert = self
            .envelope(
                Kind::Alert,
                json!({
                    "alert": "dead_letter",
                    "dead_letter_id": dl.id,
                    "original_id": env.map(|e| e.id.to_string()),
                    "role": self.role,
                    "reason": { "code": reason.code, "message": reason.message },
                    "attempts": attempts,
                }),
            )
            .with_to(self.shared.chart.principal().clone())
            .with_causation(dl.id.clone());
        (dl, alert, original)
    }

    /// A message from a declared peer: exactly once, like a task.
    async fn on_peer(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        let hold = match self.claim_to_run(d, &env, None).await? {
            Ok(hold) => hold,
            Err(settled) => return Ok(settled),
        };
        let message = PeerMessage::new(
            env.id.clone(),
            env.from.clone(),
            self.role.clone(),
            env.payload.clone(),
        );
        let cx = self.context(&env, None, hold.attempt, trace);
        let r = self
            .guarded(d, &hold, self.agent.on_peer(&cx, message))
            .await;
        self.end_message(d, &env, &hold, &cx, r).await
    }

    /// An escalation from a report: decide it, or pass it up.
    async fn on_escalation(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        let esc: Escalation = match serde_json::from_value(env.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                return self
                    .refuse_unclaimed(d, &env, Reason::new("malformed_escalation", e.to_string()))
                    .await;
            }
        };
        let hold = match self.claim_to_run(d, &env, None).await? {
            Ok(hold) => hold,
            Err(settled) => return Ok(settled),
        };
        let cx = self.context(&env, esc.task_id.clone(), hold.attempt, trace);
        let r = self
            .guarded(d, &hold, self.agent.on_escalation(&cx, esc.clone()))
            .await;
        let r = match r {
            Ok(EscalationOutcome::PassUp) => match self.shared.chart.manager_of(&self.role) {
                Some(manager) => {
                    let mut up = esc;
                    up.path.push(self.role.clone());
                    to_value(&up).map(|payload| {
                        let fwd = self
                            .envelope(Kind::Escalation, payload)
                            .with_to(manager.clone())
                            .with_causation(env.id.clone())
                            .with_trace_parent(&cx.trace, None);
                        cx.push_message(self.shared.subjects.inbox(manager, &self.role), fwd);
                    })?;
                    Ok(())
                }
                None => Ok(()),
            },
            Ok(EscalationOutcome::Decide(decision)) => {
                let down = Decision {
                    escalation_id: esc.escalation_id,
                    decided_by: self.role.clone(),
                    decision,
                    reason: esc.reason,
                    task_id: esc.task_id,
                    path: esc.path,
                };
                let back = self
                    .envelope(Kind::Decision, to_value(&down)?)
                    .with_to(env.from.clone())
                    .with_causation(env.id.clone())
                    .with_trace_parent(&cx.trace, None);
                cx.push_message(self.shared.subjects.inbox(&env.from, &self.role), back);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.end_message(d, &env, &hold, &cx, r).await
    }

    /// A decision from this role's manager: for this role if it raised the
    /// escalation, else passed down to the role below it on the way up.
    async fn on_decision(
        &self,
        d: &Delivery,
        env: Envelope,
        trace: TraceContext,
    ) -> Result<Disposition, Fault> {
        let refuse = |code: &'static str, message: String| Reason::new(code, message);
        let decision: Decision = match serde_json::from_value(env.payload.clone()) {
            Ok(x) => x,
            Err(e) => {
                return self
                    .refuse_unclaimed(d, &env, refuse("malformed_decision", e.to_string()))
                    .await;
            }
        };
        let Some(at) = decision.path.iter().position(|r| r == &self.role) else {
            return self
                .refuse_unclaimed(
                    d,
                    &env,
                    refuse(
                        "not_in_path",
                        format!("`{}` did not pass this escalation up", self.role),
                    ),
                )
                .await;
        };
        let hold = match self.claim_to_run(d, &env, None).await? {
            Ok(hold) => hold,
            Err(settled) => return Ok(settled),
        };
        let cx = self.context(&env, decision.task_id.clone(), hold.attempt, trace);
        let r = if at == 0 {
            self.guarded(d, &hold, self.agent.on_decision(&cx, decision))
                .await
        } else {
            let below = decision.path[at - 1].clone();
            let down = self
                .envelope(Kind::Decision, to_value(&decision)?)
                .with_to(below.clone())
                .with_causation(env.id.clone())
                .with_trace_parent(&cx.trace, None);
            cx.push_message(self.shared.subjects.inbox(&below, &self.role), down);
            Ok(())
        };
        self.end_message(d, &env, &hold, &cx, r).await
    }

    /// Answers peer requests on `<org>.rpc.<role>` until `shutdown`: core
    /// request/reply, at most once, outside the role's concurrency limit.
    pub(crate) async fn serve_requests(
        self: Arc<Self>,
        shutdown: CancellationToken,
        kill: CancellationToken,
        tracker: TaskTracker,
    ) {
        let pattern = SubjectPattern::from(self.shared.subjects.rpc(&self.role));
        let mut requests = loop {
            let subscribed = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.shared.transport.subscribe(&pattern) => r,
            };
            match subscribed {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(role = %self.role, error = %e, "cannot subscribe to peer requests; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = requests.next() => next,
            };
            match next {
                Some(Ok(m)) => {
                    let w = Arc::clone(&self);
                    let kill = kill.clone();
                    tracker.spawn(async move {
                        tokio::select! {
                            () = kill.cancelled() => {}
                            () = w.answer(m) => {}
                        }
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(role = %self.role, error = %e, "peer request subscription reported an error")
                }
                None => return,
            }
        }
    }

    async fn answer(&self, m: Message) {
        let reply = match self.answer_inner(&m).await {
            Ok(v) => PeerReply::Ok(v),
            Err(e) => PeerReply::Error {
                retryable: e.is_retryable(),
                message: describe(&e),
            },
        };
        let bytes = match serde_json::to_vec(&reply) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a peer answer");
                return;
            }
        };
        if let Err(e) = self.shared.transport.respond(&m, bytes).await {
            tracing::warn!(error = %e, "sending a peer answer failed");
        }
    }

    async fn answer_inner(&self, m: &Message) -> Result<Value, AgentError> {
        let env = m
            .envelope(&self.shared.codec)
            .map_err(|e| AgentError::permanent(format!("undecodable request: {e}")))?;
        let allowed = env.kind == Kind::Peer
            && &env.org == self.shared.org()
            && env.to.as_ref() == Some(&self.role)
            && self.shared.chart.are_peers(&env.from, &self.role);
        if !allowed {
            return Err(AgentError::permanent(format!(
                "refused: `{}` has no peer channel to `{}`",
                env.from, self.role
            )));
        }
        let trace = env
            .trace()
            .map_or_else(TraceContext::new_root, |t| t.child());
        let cx = self.context(&env, None, 0, trace);
        let message = PeerMessage::new(
            env.id.clone(),
            env.from.clone(),
            self.role.clone(),
            env.payload.clone(),
        );
        let fut = AssertUnwindSafe(self.agent.on_peer_request(&cx, message)).catch_unwind();
        let answer = match self.options.handler_timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => return Err(AgentError::transient(format!("timed out after {t:?}"))),
            },
            None => fut.await,
        }
        .map_err(|_| AgentError::transient("the request handler panicked"))??;
        // What the handler staged is committed, without a claim (a request is
        // not redelivered).
        let effects = cx.take_effects();
        let mut writes = Vec::new();
        let mut entries = Vec::new();
        self.effect_writes(&effects, &mut writes, &mut entries)?;
        if !writes.is_empty() {
            self.shared.store.commit(writes).await?;
            outbox::flush(&self.shared, entries).await;
            self.arm_slas(&effects);
        }
        Ok(answer)
    }
}

/// An error and its sources, as one line (a source already quoted by the
/// message above it is not repeated).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

fn to_task(rec: &TaskRecord) -> Task {
    Task {
        id: rec.task_id.clone(),
        title: rec.title.clone(),
        task_type: rec.task_type.clone(),
        input: rec.input.clone(),
        parent: rec.parent.clone(),
        assigned_by: rec.assigned_by.clone(),
        assigned_to: rec.assigned_to.clone(),
        sla_minutes: rec.sla_minutes,
        created_at: rec.created_at,
    }
}

fn subtask_result(rec: &TaskRecord) -> SubtaskResult {
    SubtaskResult {
        task_id: rec.task_id.clone(),
        title: rec.title.clone(),
        assigned_to: rec.assigned_to.clone(),
        status: rec.status,
        result: rec.result.clone(),
        error: rec.error.clone(),
    }
}

fn hex(bytes: &[u8], len: usize) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(len)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
        .collect()
}

fn add(now: chrono::DateTime<chrono::Utc>, d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}
