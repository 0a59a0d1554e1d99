//! The runtime conformance suite, over any transport + store pair.
//!
//! Every function takes the transport, the store and an org name the
//! transport captures, and starts its own orgs (with short real durations:
//! see [`suite_config`]). Functions may share a transport and store when each
//! gets its own org name.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{fail, EVENTUALLY};
use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::chart::{OrgChart, RoleSpec};
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::name::Name;
use crate::runtime::{AgentOptions, Org, PrincipalStream, RuntimeConfig, TaskRecord, TaskStatus};
use crate::store::{DocKey, Precondition, StateStore, Write};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{
    Acker, ConsumerConfig, Delivery, DeliveryStream, PublishAck, PublishOptions, Subscription,
    Transport, TransportError, TransportExt,
};

/// The lease the suite configures.
pub const LEASE: Duration = Duration::from_secs(2);
/// The first backoff the suite configures.
pub const MIN_BACKOFF: Duration = Duration::from_millis(400);
/// The breaker cool-down the suite configures.
pub const COOLDOWN: Duration = Duration::from_secs(6);

/// The runtime configuration of the suite: short durations, no jitter.
pub fn suite_config() -> RuntimeConfig {
    RuntimeConfig::default()
        .with_lease(LEASE)
        .with_ack_wait(LEASE)
        .with_backoff(MIN_BACKOFF, Duration::from_secs(2))
        .with_jitter(false)
        .with_retry_delay(Duration::from_millis(200))
        .with_future_version_delay(Duration::from_millis(300))
        .with_breaker(3, COOLDOWN)
        .with_probe_timeout(Duration::from_secs(30))
        .with_sweep(Duration::from_secs(1), Duration::from_millis(500))
        .with_drain_timeout(Duration::from_secs(20))
}

/// One behaviour of the suite, as a plain function pointer.
pub type Case = fn(Arc<dyn Transport>, Arc<dyn StateStore>, Name) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        /// Every behaviour of the suite by name, in the order [`run_all`]
        /// runs them: for backends that run each case on its own (a
        /// transport per org, or in parallel) and check that they run all.
        pub const CASES: &[(&str, Case)] = &[
            $((stringify!($case), |t, s, o| Box::pin($case(t, s, o)))),*
        ];
    };
}

cases!(
    delegation_rolls_up,
    roles_split_across_processes,
    outbox_survives_a_failed_publish,
    processed_once_under_redelivery,
    replay_after_completion_not_rerun,
    lease_expiry_redelivers,
    long_handler_keeps_its_lease,
    backoff_between_attempts,
    dead_letter_after_max_attempts,
    permanent_failure_fails_at_once,
    breaker_opens_reroutes_and_half_opens,
    probe_slot_taken_only_with_the_probe,
    conflicting_staged_writes_rerun_without_spending_attempts,
    a_failed_commit_does_not_spend_an_attempt,
    sender_mismatch_refused,
    undecodable_input_dead_lettered,
    future_version_retried_then_dead_lettered,
    drain_on_shutdown,
);

/// Runs every behaviour of the suite ([`CASES`]), one after the other;
/// `org` is a factory of fresh org names the transport captures.
pub async fn run_all(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: impl Fn() -> Name) {
    for (_, case) in CASES {
        case(Arc::clone(&t), Arc::clone(&s), org()).await;
    }
}

/// The suite's chart: principal `p`; `m` reports to `p` and manages `w`
/// and `alt`; `x` (alternate `y`) and `y` report to `p`.
pub fn suite_chart(org: &Name) -> OrgChart {
    match OrgChart::builder(org.as_str())
        .principal("p")
        .role(RoleSpec::new("m").reports_to("p"))
        .role(RoleSpec::new("w").reports_to("m"))
        .role(RoleSpec::new("alt").reports_to("m"))
        .role(RoleSpec::new("x").reports_to("p").alternate("y"))
        .role(RoleSpec::new("y").reports_to("p"))
        .build()
    {
        Ok(c) => c,
        Err(e) => fail("suite chart", e),
    }
}

/// One run of a scripted handler.
#[derive(Debug, Clone)]
pub struct Run {
    /// The role.
    pub role: Name,
    /// The task.
    pub task: TaskId,
    /// The task's title.
    pub title: String,
    /// The attempt, from the runtime.
    pub attempt: u32,
    /// When it started.
    pub started: Instant,
    /// When it ended.
    pub ended: Instant,
}

type Behaviour =
    Arc<dyn Fn(Task, u32) -> BoxFuture<'static, Result<Outcome, AgentError>> + Send + Sync>;

/// A leaf agent whose behaviour a test scripts, recording every run.
#[derive(Clone)]
pub struct Scripted {
    runs: Arc<Mutex<Vec<Run>>>,
    behave: Behaviour,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted")
            .field("runs", &self.runs().len())
            .finish()
    }
}

impl Scripted {
    /// An agent running `behave(task, attempt)`.
    pub fn new<F, Fut>(behave: F) -> Self
    where
        F: Fn(Task, u32) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
    {
        Self {
            runs: Arc::default(),
            behave: Arc::new(move |t, a| Box::pin(behave(t, a))),
        }
    }

    /// An agent that completes every task with `{"by": role}`.
    pub fn completing() -> Self {
        Self::new(|t, _| async move { Ok(Outcome::Complete(json!({ "by": t.assigned_to }))) })
    }

    /// The runs so far.
    pub fn runs(&self) -> Vec<Run> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Agent for Scripted {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let started = Instant::now();
        let (id, title) = (task.id.clone(), task.title.clone());
        let r = (self.behave)(task, cx.attempt()).await;
        if let Ok(mut runs) = self.runs.lock() {
            runs.push(Run {
                role: cx.role().clone(),
                task: id,
                title,
                attempt: cx.attempt(),
                started,
                ended: Instant::now(),
            });
        }
        r
    }
}

/// A manager that delegates one subtask per report named in its task's input
/// (`{"to": ["w", "alt"]}`) and completes with their results.
#[derive(Debug, Clone, Default)]
struct Manager;

#[async_trait]
impl Agent for Manager {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let to: Vec<String> = serde_json::from_value(task.input["to"].clone())
            .map_err(|e| AgentError::permanent(e.to_string()))?;
        for role in to {
            cx.delegate(
                &role,
                TaskSpec::new(format!("{} / {role}", task.title)).sla_minutes(5),
            )
            .await?;
        }
        Ok(Outcome::AwaitSubtasks)
    }
}

async fn start(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    agents: Vec<(&str, Arc<dyn Agent>)>,
) -> Org {
    let mut builder = Org::builder(suite_chart(org))
        .transport(Arc::clone(t))
        .store(Arc::clone(s))
        .config(suite_config());
    for (role, agent) in agents {
        builder = builder.agent_with(role, agent, AgentOptions::default().concurrency(4));
    }
    match builder.start().await {
        Ok(o) => o,
        Err(e) => fail(b, format!("org start: {e}")),
    }
}

async fn delegate(b: &str, org: &Org, to: &str, title: &str) -> TaskId {
    match org.principal().delegate(to, TaskSpec::new(title)).await {
        Ok(d) => d.task_id,
        Err(e) => fail(b, format!("delegate to {to}: {e}")),
    }
}

async fn wait_done(b: &str, org: &Org, id: &TaskId) -> TaskRecord {
    match org.principal().wait_for(id, EVENTUALLY).await {
        Ok(r) => r,
        Err(e) => fail(b, format!("task {id}: {e}")),
    }
}

async fn eventually<F, Fut>(b: &str, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENTUALLY;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail(b, format!("not within {EVENTUALLY:?}: {what}"));
}

async fn next_envelope(b: &str, what: &str, s: &mut PrincipalStream) -> Envelope {
    match tokio::time::timeout(EVENTUALLY, s.next()).await {
        Ok(Some(Ok(env))) => env,
        other => fail(b, format!("{what}: {other:?}")),
    }
}

async fn quiet(b: &str, what: &str, s: &mut PrincipalStream, d: Duration) {
    if let Ok(Some(item)) = tokio::time::timeout(d, s.next()).await {
        fail(b, format!("{what}: unexpected {item:?}"));
    }
}

/// A manager's task waits for its subtasks and rolls their results up; the
/// principal reads the finished tree.
pub async fn delegation_rolls_up(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "delegation_rolls_up";
    let w = Scripted::completing();
    let alt = Scripted::completing();
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("m", Arc::new(Manager)),
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(alt.clone())),
        ],
    )
    .await;
    let root = match o
        .principal()
        .delegate(
            "m",
            TaskSpec::new("ship").input(json!({"to": ["w", "alt"]})),
        )
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    let rec = wait_done(B, &o, &root).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("root ended {} ({:?})", rec.status, rec.error));
    }
    if rec.children.len() != 2 || !rec.open_children.is_empty() {
        fail(
            B,
            format!(
                "root children {:?}, open {:?}",
                rec.children, rec.open_children
            ),
        );
    }
    let result = rec.result.clone().unwrap_or_default();
    for child in &rec.children {
        if result.get(child.as_str()).is_none() {
            fail(B, format!("rolled-up result lacks {child}: {result}"));
        }
    }
    let tree = match o.principal().task_tree(&root).await {
        Ok(v) => v,
        Err(e) => fail(B, e),
    };
    if !tree.all_completed() || tree.children.len() != 2 || tree.len() != 3 {
        fail(B, format!("tree {tree:?}"));
    }
    for c in &tree.children {
        if c.assigned_by != "m" || c.sla_minutes != Some(5) {
            fail(B, format!("child in tree {c:?}"));
        }
    }
    // One trace spans the tree: every subtask continues the root's trace.
    let trace_of = |r: &TaskRecord| {
        r.traceparent
            .as_deref()
            .and_then(|t| t.parse::<crate::envelope::TraceContext>().ok())
            .map(|t| t.trace_id)
    };
    let root_trace = trace_of(&rec);
    for child in &rec.children {
        let child_rec = o.principal().task(child).await.ok().flatten();
        if root_trace.is_none() || child_rec.as_ref().map(trace_of) != Some(root_trace) {
            fail(B, format!("subtask {child} is not in the root's trace"));
        }
    }
    let json = serde_json::to_value(&tree).unwrap_or_default();
    if json["children"][0]["status"] != "completed" {
        fail(B, format!("tree JSON {json}"));
    }
    if w.runs().len() != 1 || alt.runs().len() != 1 {
        fail(B, "each subtask ran once");
    }
    // The principal's inbox has the root's result.
    let mut inbox = o.principal().inbox().await.unwrap_or_else(|e| fail(B, e));
    let env = next_envelope(B, "the root's result", &mut inbox).await;
    if env.kind != Kind::Result || env.correlation_id.as_ref() != Some(&root) {
        fail(B, format!("principal inbox got {env:?}"));
    }
    o.shutdown().await;
}

/// Roles hosted by different processes (two orgs of one chart on shared
/// backends) delegate and roll up through the transport; each reports its
/// own agents' health.
pub async fn roles_split_across_processes(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "roles_split_across_processes";
    let managers = start(B, &t, &s, &org, vec![("m", Arc::new(Manager))]).await;
    let w = Scripted::completing();
    let workers = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(Scripted::completing())),
        ],
    )
    .await;
    eventually(B, "both processes ready", || async {
        managers.is_ready() && workers.is_ready()
    })
    .await;
    let root = match managers
        .principal()
        .delegate(
            "m",
            TaskSpec::new("split").input(json!({"to": ["w", "alt"]})),
        )
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    if wait_done(B, &managers, &root).await.status != TaskStatus::Completed {
        fail(B, "the split tree did not complete");
    }
    let hosted: Vec<String> = workers
        .health()
        .iter()
        .map(|h| h.role.to_string())
        .collect();
    if hosted != ["alt", "w"] {
        fail(B, format!("the workers' process reports {hosted:?}"));
    }
    eventually(B, "w's counters", || async {
        workers.health().iter().any(|h| {
            h.role == "w" && h.completed >= 1 && h.last_active.is_some() && h.in_flight == 0
        })
    })
    .await;
    if managers.health().len() != 1 || w.runs().len() != 1 {
        fail(B, format!("managers' health {:?}", managers.health()));
    }
    managers.shutdown().await;
    workers.shutdown().await;
}

/// Wraps a transport so that its first `n` durable publishes fail as if the
/// broker were down (nothing stored).
#[derive(Debug)]
pub struct FailsFirstPublishes {
    inner: Arc<dyn Transport>,
    left: AtomicU32,
}

impl FailsFirstPublishes {
    /// Wraps `inner`, failing its first `n` publishes.
    pub fn new(inner: Arc<dyn Transport>, n: u32) -> Self {
        Self {
            inner,
            left: AtomicU32::new(n),
        }
    }
}

impl std::fmt::Display for FailsFirstPublishes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailsFirstPublishes({})", self.inner)
    }
}

#[async_trait]
impl Transport for FailsFirstPublishes {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        let fail_now = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail_now {
            return Err(TransportError::Unavailable {
                message: "injected outage".into(),
                source: None,
            });
        }
        self.inner.publish(subject, payload, options).await
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        self.inner.consume(name).await
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
    }
    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.inner.publish_ephemeral(subject, payload).await
    }
    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        self.inner.subscribe(pattern).await
    }
    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.inner.request(subject, payload, timeout).await
    }
}

/// A delegation whose publish fails after its task was written is not lost:
/// the outbox sweep publishes it later.
pub async fn outbox_survives_a_failed_publish(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "outbox_survives_a_failed_publish";
    let flaky: Arc<dyn Transport> = Arc::new(FailsFirstPublishes::new(Arc::clone(&t), 1));
    let x = Scripted::completing();
    let o = start(B, &flaky, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let id = delegate(B, &o, "x", "despite the outage").await;
    if wait_done(B, &o, &id).await.status != TaskStatus::Completed || x.runs().len() != 1 {
        fail(B, format!("runs {:?}", x.runs()));
    }
    o.shutdown().await;
}

/// Wraps a transport so that the first acknowledgement of every delivery is
/// lost (as when a process dies between finishing and acknowledging).
#[derive(Debug)]
pub struct LosesFirstAcks {
    inner: Arc<dyn Transport>,
    lost: Arc<Mutex<std::collections::HashSet<Bytes>>>,
}

impl LosesFirstAcks {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            lost: Arc::default(),
        }
    }
}

impl std::fmt::Display for LosesFirstAcks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LosesFirstAcks({})", self.inner)
    }
}

#[derive(Debug)]
struct LossyAcker {
    inner: Box<dyn Acker>,
    raw: Bytes,
    lost: Arc<Mutex<std::collections::HashSet<Bytes>>>,
}

#[async_trait]
impl Acker for LossyAcker {
    async fn ack(&self) -> Result<(), TransportError> {
        let first = self
            .lost
            .lock()
            .map(|mut l| l.insert(self.raw.clone()))
            .unwrap_or(false);
        if first {
            return Ok(());
        }
        self.inner.ack().await
    }
    async fn nak(&self, delay: Option<Duration>) -> Result<(), TransportError> {
        self.inner.nak(delay).await
    }
    async fn term(&self) -> Result<(), TransportError> {
        self.inner.term().await
    }
    async fn progress(&self) -> Result<(), TransportError> {
        self.inner.progress().await
    }
}

#[async_trait]
impl Transport for LosesFirstAcks {
    async fn publish(
        &self,
        subject: &Subject,
        payload: Bytes,
        options: PublishOptions,
    ) -> Result<PublishAck, TransportError> {
        self.inner.publish(subject, payload, options).await
    }
    async fn ensure_consumer(&self, config: &ConsumerConfig) -> Result<(), TransportError> {
        self.inner.ensure_consumer(config).await
    }
    async fn consume(&self, name: &Name) -> Result<DeliveryStream, TransportError> {
        let lost = Arc::clone(&self.lost);
        let inner = self.inner.consume(name).await?;
        Ok(Box::pin(inner.map(move |d| {
            d.map(|d: Delivery| {
                let raw = d.raw().clone();
                let lost = Arc::clone(&lost);
                d.map_acker(|inner| Box::new(LossyAcker { inner, raw, lost }))
            })
        })))
    }
    async fn delete_consumer(&self, name: &Name) -> Result<(), TransportError> {
        self.inner.delete_consumer(name).await
    }
    async fn publish_ephemeral(
        &self,
        subject: &Subject,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        self.inner.publish_ephemeral(subject, payload).await
    }
    async fn subscribe(&self, pattern: &SubjectPattern) -> Result<Subscription, TransportError> {
        self.inner.subscribe(pattern).await
    }
    async fn request(
        &self,
        subject: &Subject,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        self.inner.request(subject, payload, timeout).await
    }
}

fn counter_key(b: &str, org: &Name) -> DocKey {
    DocKey::new(format!("suite/{org}/counters"), "runs").unwrap_or_else(|e| fail(b, e))
}

/// With every first acknowledgement lost, each task still runs once and its
/// staged state changes once.
pub async fn processed_once_under_redelivery(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "processed_once_under_redelivery";
    let lossy: Arc<dyn Transport> = Arc::new(LosesFirstAcks::new(Arc::clone(&t)));
    let counter = counter_key(B, &org);
    let store = Arc::clone(&s);
    struct Counting {
        key: DocKey,
        store: Arc<dyn StateStore>,
        runs: Arc<AtomicU32>,
    }
    #[async_trait]
    impl Agent for Counting {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let current = self.store.get(&self.key).await?;
            let (n, pre) = match current {
                Some(d) => (
                    d.value["n"].as_u64().unwrap_or(0),
                    Precondition::Version(d.version),
                ),
                None => (0, Precondition::MustNotExist),
            };
            cx.stage(Write::put(self.key.clone(), json!({"n": n + 1}), pre));
            Ok(Outcome::Complete(json!(n + 1)))
        }
    }
    let runs = Arc::new(AtomicU32::new(0));
    let agent = Counting {
        key: counter.clone(),
        store,
        runs: Arc::clone(&runs),
    };
    let o = {
        let builder = Org::builder(suite_chart(&org))
            .transport(Arc::clone(&lossy))
            .store(Arc::clone(&s))
            .config(suite_config())
            .agent("x", agent);
        builder.start().await.unwrap_or_else(|e| fail(B, e))
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(delegate(B, &o, "x", &format!("t{i}")).await);
    }
    for id in &ids {
        let rec = wait_done(B, &o, id).await;
        if rec.status != TaskStatus::Completed {
            fail(B, format!("{id} ended {}", rec.status));
        }
    }
    // Every delivery's first ack was lost, so each comes again after the ack
    // wait; the claims make those redeliveries acks without runs.
    tokio::time::sleep(LEASE * 3).await;
    if runs.load(Ordering::SeqCst) != 3 {
        fail(
            B,
            format!("{} runs for 3 tasks", runs.load(Ordering::SeqCst)),
        );
    }
    match s.get(&counter).await {
        Ok(Some(d)) if d.value["n"] == 3 => {}
        other => fail(
            B,
            format!("staged state changed other than once per task: {other:?}"),
        ),
    }
    o.shutdown().await;
}

/// A completed task's message published again (as a broker may replay after
/// a crash, with attempt 1) is acknowledged without running.
pub async fn replay_after_completion_not_rerun(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "replay_after_completion_not_rerun";
    let x = Scripted::completing();
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let subjects = o.subjects().clone();
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let inbox = subjects.inbox(&n("x"), &n("p"));
    let mut tap = t
        .subscribe(&SubjectPattern::from(&inbox))
        .await
        .unwrap_or_else(|e| fail(B, e));
    let id = delegate(B, &o, "x", "once").await;
    wait_done(B, &o, &id).await;
    let raw = match tokio::time::timeout(EVENTUALLY, tap.next()).await {
        Ok(Some(Ok(m))) => m.payload,
        other => fail(B, format!("tap: {other:?}")),
    };
    // Same bytes, no dedupe id: a new stream message, delivered as attempt 1.
    if let Err(e) = t.publish(&inbox, raw, PublishOptions::default()).await {
        fail(B, e);
    }
    let second = delegate(B, &o, "x", "after").await;
    wait_done(B, &o, &second).await;
    tokio::time::sleep(LEASE).await;
    let runs: Vec<String> = x.runs().into_iter().map(|r| r.title).collect();
    if runs != ["once", "after"] {
        fail(B, format!("runs {runs:?}"));
    }
    o.shutdown().await;
}

/// A handler that dies mid-task (its process is gone) gets the task again,
/// as attempt 2, once its lease has run out.
pub async fn lease_expiry_redelivers(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "lease_expiry_redelivers";
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let hangs = Scripted::new(move |_, _| {
        flag.store(true, Ordering::SeqCst);
        std::future::pending()
    });
    let a = start(B, &t, &s, &org, vec![("x", Arc::new(hangs))]).await;
    let id = delegate(B, &a, "x", "survive").await;
    eventually(B, "the first attempt started", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    let crashed = Instant::now();
    a.abort().await;
    let x = Scripted::completing();
    let b = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let rec = wait_done(B, &b, &id).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("ended {}", rec.status));
    }
    let runs = x.runs();
    match runs.as_slice() {
        [r] if r.attempt == 2 => {
            // The lease was extended every third of it until the crash.
            if r.started.duration_since(crashed) < LEASE / 2 {
                fail(
                    B,
                    format!(
                        "rerun {:?} after the crash, before the lease ran out",
                        r.started.duration_since(crashed)
                    ),
                );
            }
        }
        other => fail(B, format!("runs after the crash: {other:?}")),
    }
    b.shutdown().await;
}

/// A handler that runs for longer than its lease keeps it (and the
/// transport's ack wait) and runs once.
pub async fn long_handler_keeps_its_lease(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "long_handler_keeps_its_lease";
    let slow = Scripted::new(|_, _| async {
        tokio::time::sleep(LEASE * 3).await;
        Ok(Outcome::Complete(Value::Null))
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(slow.clone()))]).await;
    let id = delegate(B, &o, "x", "slow").await;
    let rec = wait_done(B, &o, &id).await;
    let runs = slow.runs();
    if rec.status != TaskStatus::Completed || runs.len() != 1 || runs[0].attempt != 1 {
        fail(B, format!("status {}, runs {runs:?}", rec.status));
    }
    o.shutdown().await;
}

/// A transient failure is retried, not before the backoff.
pub async fn backoff_between_attempts(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "backoff_between_attempts";
    let flaky = Scripted::new(|_, attempt| async move {
        if attempt == 1 {
            Err(AgentError::transient("rate limited"))
        } else {
            Ok(Outcome::Complete(json!(attempt)))
        }
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(flaky.clone()))]).await;
    let id = delegate(B, &o, "x", "flaky").await;
    let rec = wait_done(B, &o, &id).await;
    let runs = flaky.runs();
    match (rec.status, runs.as_slice()) {
        (TaskStatus::Completed, [a, b]) if a.attempt == 1 && b.attempt == 2 => {
            let gap = b.started.duration_since(a.ended);
            if gap < MIN_BACKOFF {
                fail(
                    B,
                    format!("retried after {gap:?}, before the backoff {MIN_BACKOFF:?}"),
                );
            }
        }
        other => fail(B, format!("{other:?}")),
    }
    o.shutdown().await;
}

/// A handler that always fails transiently runs exactly `max_attempts` (3)
/// times; one dead letter and one alert follow; the task is dead-lettered.
pub async fn dead_letter_after_max_attempts(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "dead_letter_after_max_attempts";
    let broken = Scripted::new(|_, _| async { Err(AgentError::transient("upstream down")) });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(broken.clone()))]).await;
    let principal = o.principal();
    let mut dead = principal
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(B, e));
    let mut alerts = principal.alerts().await.unwrap_or_else(|e| fail(B, e));
    let id = delegate(B, &o, "x", "doomed").await;
    let rec = wait_done(B, &o, &id).await;
    if rec.status != TaskStatus::DeadLettered {
        fail(B, format!("task ended {}", rec.status));
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    if dl.kind != Kind::DeadLetter
        || dl.causation_id.as_ref() != Some(&id)
        || dl.payload["attempts"] != 3
        || dl.payload["reason"]["code"] != "attempts_exhausted"
        || dl.id == id
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let original = dl.payload["original"]["body"].as_str().unwrap_or_default();
    if !original.contains(id.as_str()) {
        fail(B, "the dead letter does not keep the original body");
    }
    let alert = next_envelope(B, "the alert", &mut alerts).await;
    if alert.kind != Kind::Alert || alert.payload["dead_letter_id"] != json!(dl.id) {
        fail(B, format!("alert {alert:?}"));
    }
    quiet(B, "a second dead letter", &mut dead, LEASE * 3).await;
    quiet(B, "a second alert", &mut alerts, Duration::from_millis(100)).await;
    let attempts: Vec<u32> = broken.runs().iter().map(|r| r.attempt).collect();
    if attempts != [1, 2, 3] {
        fail(B, format!("attempts {attempts:?}"));
    }
    o.shutdown().await;
}

/// A permanent failure fails the task at once (no retry) and the delegator
/// sees why.
pub async fn permanent_failure_fails_at_once(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "permanent_failure_fails_at_once";
    let bad = Scripted::new(|_, _| async { Err(AgentError::permanent("spec is contradictory")) });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("m", Arc::new(Manager)), ("w", Arc::new(bad.clone()))],
    )
    .await;
    let root = match o
        .principal()
        .delegate("m", TaskSpec::new("plan").input(json!({"to": ["w"]})))
        .await
    {
        Ok(d) => d.task_id,
        Err(e) => fail(B, e),
    };
    let rec = wait_done(B, &o, &root).await;
    let why = rec.error.clone().unwrap_or_default();
    if rec.status != TaskStatus::Failed || !why.contains("spec is contradictory") {
        fail(B, format!("root ended {} with {why:?}", rec.status));
    }
    if bad.runs().len() != 1 {
        fail(B, format!("{} runs", bad.runs().len()));
    }
    o.shutdown().await;
}

/// Three failed tasks open a role's breaker: its manager is told once,
/// delegations go to the alternate (or are refused without one); after the
/// cool-down one probe goes through, and its success closes the breaker.
pub async fn breaker_opens_reroutes_and_half_opens(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "breaker_opens_reroutes_and_half_opens";
    let healthy = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (h, g) = (Arc::clone(&healthy), Arc::clone(&gate));
    let x = Scripted::new(move |task, _| {
        let (h, g) = (Arc::clone(&h), Arc::clone(&g));
        async move {
            if task.title == "probe" {
                g.notified().await;
            }
            if h.load(Ordering::SeqCst) {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("broken"))
            }
        }
    });
    let y_ok = Arc::new(AtomicBool::new(true));
    let yk = Arc::clone(&y_ok);
    let y = Scripted::new(move |_, _| {
        let ok = yk.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("also broken"))
            }
        }
    });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("x", Arc::new(x.clone())), ("y", Arc::new(y.clone()))],
    )
    .await;
    let principal = o.principal();
    let mut inbox = principal.inbox().await.unwrap_or_else(|e| fail(B, e));
    for i in 0..3 {
        let id = delegate(B, &o, "x", &format!("fail{i}")).await;
        if wait_done(B, &o, &id).await.status != TaskStatus::Failed {
            fail(B, "a broken task did not fail");
        }
    }
    // Open: rerouted to the alternate.
    let d = principal
        .delegate("x", TaskSpec::new("rerouted"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if d.assigned_to != "y" || d.rerouted_from.as_ref().map(Name::as_str) != Some("x") {
        fail(B, format!("delegation while open: {d:?}"));
    }
    if wait_done(B, &o, &d.task_id).await.status != TaskStatus::Completed {
        fail(B, "the rerouted task did not complete");
    }
    // The manager (the principal here) gets one escalation, besides the results.
    let mut escalations = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), inbox.next()).await {
            Ok(Some(Ok(env))) if env.kind == Kind::Escalation => {
                if env.payload["reason"] != "breaker_open" || env.from != "x" {
                    fail(B, format!("escalation {env:?}"));
                }
                escalations += 1;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            other => fail(B, format!("inbox: {other:?}")),
        }
    }
    if escalations != 1 {
        fail(B, format!("{escalations} escalations for one opening"));
    }
    // After the cool-down: one probe goes to x; meanwhile others are rerouted.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let probe = principal
        .delegate("x", TaskSpec::new("probe"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if probe.assigned_to != "x" {
        fail(B, format!("the probe went to {}", probe.assigned_to));
    }
    let during = principal
        .delegate("x", TaskSpec::new("during"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if during.assigned_to != "y" {
        fail(
            B,
            format!(
                "a delegation during the probe went to {}",
                during.assigned_to
            ),
        );
    }
    // The probe may not have reached its gate yet: keep opening it until done.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        gate.notify_waiters();
        if let Ok(Some(rec)) = principal.task(&probe.task_id).await {
            if rec.status.is_terminal() {
                if rec.status != TaskStatus::Completed {
                    fail(B, format!("the probe ended {}", rec.status));
                }
                break;
            }
        }
        if Instant::now() > deadline {
            fail(B, "the probe did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = principal
        .delegate("x", TaskSpec::new("after"))
        .await
        .unwrap_or_else(|e| fail(B, e));
    if after.assigned_to != "x" {
        fail(
            B,
            format!("after a good probe the task went to {}", after.assigned_to),
        );
    }
    wait_done(B, &o, &after.task_id).await;
    // Without an alternate, an open breaker refuses.
    y_ok.store(false, Ordering::SeqCst);
    for i in 0..3 {
        let id = delegate(B, &o, "y", &format!("yfail{i}")).await;
        wait_done(B, &o, &id).await;
    }
    match principal.delegate("y", TaskSpec::new("refused")).await {
        Err(crate::agent::DelegateError::BreakerOpen { role, .. }) if role == "y" => {}
        other => fail(
            B,
            format!("delegation to an open breaker without alternate: {other:?}"),
        ),
    }
    o.shutdown().await;
}

/// A handler that plans a probe and then fails leaves the breaker's probe
/// slot free: the next delegation becomes the probe.
pub async fn probe_slot_taken_only_with_the_probe(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "probe_slot_taken_only_with_the_probe";
    /// Delegates to `w`; fails afterwards when the task says so.
    struct Delegator;
    #[async_trait]
    impl Agent for Delegator {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            let d = cx.delegate("w", TaskSpec::new(task.title.clone())).await?;
            if task.title.starts_with("fail") {
                return Err(AgentError::permanent(format!(
                    "changed my mind about {}",
                    d.task_id
                )));
            }
            Ok(Outcome::AwaitSubtasks)
        }
    }
    let healthy = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&healthy);
    let w = Scripted::new(move |_, _| {
        let ok = h.load(Ordering::SeqCst);
        async move {
            if ok {
                Ok(Outcome::Complete(Value::Null))
            } else {
                Err(AgentError::permanent("broken"))
            }
        }
    });
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("m", Arc::new(Delegator)),
            ("w", Arc::new(w.clone())),
            ("alt", Arc::new(Scripted::completing())),
        ],
    )
    .await;
    for i in 0..3 {
        let id = delegate(B, &o, "m", &format!("break{i}")).await;
        wait_done(B, &o, &id).await;
    }
    // w's breaker is open: m's next delegations go to w's alternate.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let failed = delegate(B, &o, "m", "fail after planning the probe").await;
    if wait_done(B, &o, &failed).await.status != TaskStatus::Failed {
        fail(B, "the failing delegator's task did not fail");
    }
    let runs_before = w.runs().len();
    let probe = delegate(B, &o, "m", "the real probe").await;
    let rec = wait_done(B, &o, &probe).await;
    if rec.status != TaskStatus::Completed {
        fail(B, format!("the probe's parent ended {}", rec.status));
    }
    let child = match o.principal().task(&rec.children[0]).await {
        Ok(Some(c)) => c,
        other => fail(B, format!("probe child {other:?}")),
    };
    if child.assigned_to != "w" || !child.probe {
        fail(
            B,
            format!("the second delegation was not the probe: {child:?}"),
        );
    }
    if w.runs().len() != runs_before + 1 {
        fail(B, "the probe did not run on w");
    }
    o.shutdown().await;
}

/// Handlers that stage conflicting optimistic writes: the loser's outcome is
/// stale, so its handler runs again — on the same attempt — and both tasks
/// complete with every increment counted.
pub async fn conflicting_staged_writes_rerun_without_spending_attempts(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "conflicting_staged_writes_rerun_without_spending_attempts";
    struct Incrementing {
        key: DocKey,
        store: Arc<dyn StateStore>,
        attempts: Arc<Mutex<Vec<u32>>>,
    }
    #[async_trait]
    impl Agent for Incrementing {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            if let Ok(mut a) = self.attempts.lock() {
                a.push(cx.attempt());
            }
            let current = self.store.get(&self.key).await?;
            let (n, pre) = match current {
                Some(d) => (
                    d.value["n"].as_u64().unwrap_or(0),
                    Precondition::Version(d.version),
                ),
                None => (0, Precondition::MustNotExist),
            };
            // Both handlers read before either commits.
            tokio::time::sleep(Duration::from_millis(300)).await;
            cx.stage(Write::put(self.key.clone(), json!({"n": n + 1}), pre));
            Ok(Outcome::Complete(json!(n + 1)))
        }
    }
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let key = counter_key(B, &org);
    let agent = Incrementing {
        key: key.clone(),
        store: Arc::clone(&s),
        attempts: Arc::clone(&attempts),
    };
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(agent))]).await;
    let a = delegate(B, &o, "x", "a").await;
    let b = delegate(B, &o, "x", "b").await;
    for id in [&a, &b] {
        if wait_done(B, &o, id).await.status != TaskStatus::Completed {
            fail(B, format!("{id} did not complete"));
        }
    }
    match s.get(&key).await {
        Ok(Some(d)) if d.value["n"] == 2 => {}
        other => fail(B, format!("counter {other:?}")),
    }
    let seen = attempts.lock().map(|a| a.clone()).unwrap_or_default();
    if seen.len() < 2 || seen.iter().any(|a| *a != 1) {
        fail(B, format!("attempt numbers of the runs: {seen:?}"));
    }
    o.shutdown().await;
}

/// Wraps a store so that its next `n` commits after `arm` fail as if the
/// store were unreachable.
#[derive(Debug)]
pub struct FailsNextCommits {
    inner: Arc<dyn StateStore>,
    armed: AtomicU32,
}

impl FailsNextCommits {
    /// Wraps `inner`, unarmed.
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            armed: AtomicU32::new(0),
        }
    }

    /// Makes the next `n` commits fail.
    pub fn arm(&self, n: u32) {
        self.armed.store(n, Ordering::SeqCst);
    }
}

impl std::fmt::Display for FailsNextCommits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FailsNextCommits({})", self.inner)
    }
}

#[async_trait]
impl StateStore for FailsNextCommits {
    async fn get(
        &self,
        key: &DocKey,
    ) -> Result<Option<crate::store::Document>, crate::store::StoreError> {
        self.inner.get(key).await
    }
    async fn list(
        &self,
        collection: &crate::store::CollectionPath,
        options: crate::store::ListOptions,
    ) -> Result<crate::store::ListPage, crate::store::StoreError> {
        self.inner.list(collection, options).await
    }
    async fn commit(
        &self,
        writes: Vec<Write>,
    ) -> Result<Vec<Option<crate::store::Version>>, crate::store::StoreError> {
        let fail_now = self
            .armed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail_now {
            return Err(crate::store::StoreError::Unavailable {
                message: "injected outage".into(),
                source: None,
            });
        }
        self.inner.commit(writes).await
    }
    async fn watch(
        &self,
        target: crate::store::WatchTarget,
    ) -> Result<crate::store::ChangeStream, crate::store::StoreError> {
        self.inner.watch(target).await
    }
}

/// A completion commit that fails because the store is briefly unreachable
/// puts the delivery back without spending an attempt: the handler runs
/// again as the same attempt, and the task completes.
pub async fn a_failed_commit_does_not_spend_an_attempt(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_failed_commit_does_not_spend_an_attempt";
    let flaky = Arc::new(FailsNextCommits::new(Arc::clone(&s)));
    let arm = Arc::clone(&flaky);
    let first = Arc::new(AtomicBool::new(true));
    let x = Scripted::new(move |_, _| {
        // The first run's completion commit fails.
        if first.swap(false, Ordering::SeqCst) {
            arm.arm(1);
        }
        async { Ok(Outcome::Complete(Value::Null)) }
    });
    let store: Arc<dyn StateStore> = flaky;
    let o = start(B, &t, &store, &org, vec![("x", Arc::new(x.clone()))]).await;
    let id = delegate(B, &o, "x", "despite a blip").await;
    if wait_done(B, &o, &id).await.status != TaskStatus::Completed {
        fail(B, "the task did not complete");
    }
    let attempts: Vec<u32> = x.runs().iter().map(|r| r.attempt).collect();
    if attempts != [1, 1] {
        fail(
            B,
            format!("attempts of the runs: {attempts:?} (expected the blip to cost no attempt)"),
        );
    }
    o.shutdown().await;
}

fn raw_task(org: &Name, from: &str, to: &str, id: MessageId) -> Envelope {
    let n = |s: &str| Name::new(s).unwrap_or_else(|e| fail("fixture", e));
    Envelope::new(
        org.clone(),
        n(from),
        Kind::Task,
        json!({"task_id": id, "title": "forged"}),
    )
    .with_id(id)
    .with_to(n(to))
}

/// An envelope whose `from` differs from its subject's sender is never run;
/// it is dead-lettered with its reason.
pub async fn sender_mismatch_refused(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "sender_mismatch_refused";
    let x = Scripted::completing();
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let mut dead = o
        .principal()
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(B, e));
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    // Claims to come from `y` but is sent on the principal's subject.
    let forged = raw_task(&org, "y", "x", MessageId::new());
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    if let Err(e) = t.publish_envelope(&subject, &forged).await {
        fail(B, e);
    }
    let dl = next_envelope(B, "the refusal's dead letter", &mut dead).await;
    if dl.payload["reason"]["code"] != "sender_mismatch"
        || dl.causation_id.as_ref() != Some(&forged.id)
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let ok = delegate(B, &o, "x", "legit").await;
    wait_done(B, &o, &ok).await;
    let titles: Vec<String> = x.runs().into_iter().map(|r| r.title).collect();
    if titles != ["legit"] {
        fail(B, format!("runs {titles:?}"));
    }
    o.shutdown().await;
}

/// Bytes that are not an envelope are dead-lettered whole, with the reason,
/// and the role goes on.
pub async fn undecodable_input_dead_lettered(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "undecodable_input_dead_lettered";
    let x = Scripted::completing();
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x.clone()))]).await;
    let mut dead = o
        .principal()
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(B, e));
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    let junk = Bytes::from_static(b"{\"v\":1,\"oops\"");
    if let Err(e) = t
        .publish(&subject, junk.clone(), PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    if dl.payload["reason"]["code"] != "malformed"
        || dl.payload["original"]["body"] != "{\"v\":1,\"oops\""
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let ok = delegate(B, &o, "x", "next").await;
    wait_done(B, &o, &ok).await;
    o.shutdown().await;
}

/// An envelope of a newer format version is put back (not before the
/// configured delay each time) and dead-lettered when its attempts run out.
pub async fn future_version_retried_then_dead_lettered(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "future_version_retried_then_dead_lettered";
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("x", Arc::new(Scripted::completing()))],
    )
    .await;
    let mut dead = o
        .principal()
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(B, e));
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    let id = MessageId::new();
    let newer = format!(
        r#"{{"v": 2, "id": "{id}", "org": "{org}", "from": "p", "kind": "task", "new_field": 1}}"#
    );
    let at = Instant::now();
    if let Err(e) = t
        .publish(&subject, Bytes::from(newer), PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    let delay = suite_config().future_version_delay;
    if dl.payload["reason"]["code"] != "future_version" || dl.payload["attempts"] != 3 {
        fail(B, format!("dead letter {dl:?}"));
    }
    if at.elapsed() < delay * 2 {
        fail(
            B,
            format!("dead-lettered after {:?}, before two delays", at.elapsed()),
        );
    }
    o.shutdown().await;
}

/// Shutdown stops intake and waits for the handler in flight, whose task
/// completes; nothing new is taken afterwards.
pub async fn drain_on_shutdown(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "drain_on_shutdown";
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let slow = Scripted::new(move |_, _| {
        flag.store(true, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(Outcome::Complete(Value::Null))
        }
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(slow.clone()))]).await;
    let id = delegate(B, &o, "x", "in flight").await;
    eventually(B, "the handler started", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    o.shutdown().await;
    match o.principal().task(&id).await {
        Ok(Some(rec)) if rec.status == TaskStatus::Completed => {}
        other => fail(B, format!("after shutdown the in-flight task is {other:?}")),
    }
    if o.health()
        .iter()
        .any(|h| h.state != crate::runtime::AgentState::Stopped)
    {
        fail(B, format!("health after shutdown: {:?}", o.health()));
    }
    let later = delegate(B, &o, "x", "after shutdown").await;
    tokio::time::sleep(LEASE).await;
    match o.principal().task(&later).await {
        Ok(Some(rec)) if rec.status == TaskStatus::Pending => {}
        other => fail(B, format!("a stopped org took a task: {other:?}")),
    }
    if slow.runs().len() != 1 {
        fail(B, format!("{} runs", slow.runs().len()));
    }
}
