//! The runtime conformance suite, over any transport + store pair.
//!
//! Every function takes the transport, the store and an org name the
//! transport captures, and starts its own orgs (with short real durations:
//! see [`suite_config`]). Functions may share a transport and store when each
//! gets its own org name.

//!
//! Cases by concern: `delivery` (roll-up, processes, outbox, redelivery,
//! leases, backoff), `failures` (dead letters, permanent failures,
//! breakers, conflicts, store outages), `admission` (refusals, malformed
//! input, format versions, drain) and `seam` (a pattern registered from
//! outside, and the roles' own namespaces).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::{fail, Backends, EVENTUALLY};
use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::chart::{OrgChart, RoleSpec};
use crate::envelope::{Envelope, TaskId};
use crate::hierarchy::TaskRecord;
use crate::name::Name;
use crate::runtime::{
    role_collection, AgentOptions, InboxError, Org, PrincipalStream, RuntimeConfig,
};
use crate::store::{DocKey, StateStore};
use crate::transport::Transport;

mod admission;
mod delivery;
mod failures;
mod seam;

pub use admission::*;
pub use delivery::*;
pub use failures::*;
pub use seam::*;

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
pub type Case = fn(Backends) -> BoxFuture<'static, ()>;

crate::__agentorg_runtime_cases!(__agentorg_case_table {});

/// Runs every behaviour of the suite ([`CASES`]), one after the other;
/// `org` is a factory of fresh org names the transport captures.
pub async fn run_all(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: impl Fn() -> Name) {
    for (_, case) in CASES {
        case(Backends::new(Arc::clone(&t), Arc::clone(&s), org())).await;
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
pub(super) struct Manager;

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

/// The suite's counter document in `role`'s own namespace (what the
/// role's handler stages through its context).
pub(super) fn counter_key(b: &str, org: &Name, role: &str) -> DocKey {
    let role = Name::new(role).unwrap_or_else(|e| fail(b, e));
    role_collection(org, &role, "counters")
        .and_then(|c| c.doc("runs"))
        .unwrap_or_else(|e| fail(b, e))
}

pub(super) async fn start(
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

pub(super) async fn delegate(b: &str, org: &Org, to: &str, title: &str) -> TaskId {
    match org.principal().delegate(to, TaskSpec::new(title)).await {
        Ok(d) => d.task_id,
        Err(e) => fail(b, format!("delegate to {to}: {e}")),
    }
}

pub(super) async fn wait_done(b: &str, org: &Org, id: &TaskId) -> TaskRecord {
    match org.principal().wait_for(id, EVENTUALLY).await {
        Ok(r) => r,
        Err(e) => fail(b, format!("task {id}: {e}")),
    }
}

pub(super) async fn eventually<F, Fut>(b: &str, what: &str, mut f: F)
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

pub(super) async fn next_envelope(b: &str, what: &str, s: &mut PrincipalStream) -> Envelope {
    match next_item(b, what, s).await {
        Ok(env) => env,
        Err(e) => fail(b, format!("{what}: {e:?}")),
    }
}

/// The stream's next item, an envelope or a refusal.
pub(super) async fn next_item(
    b: &str,
    what: &str,
    s: &mut PrincipalStream,
) -> Result<Envelope, InboxError> {
    match tokio::time::timeout(EVENTUALLY, s.next()).await {
        Ok(Some(item)) => item,
        other => fail(b, format!("{what}: {other:?}")),
    }
}

pub(super) async fn quiet(b: &str, what: &str, s: &mut PrincipalStream, d: Duration) {
    if let Ok(Some(item)) = tokio::time::timeout(d, s.next()).await {
        fail(b, format!("{what}: unexpected {item:?}"));
    }
}
