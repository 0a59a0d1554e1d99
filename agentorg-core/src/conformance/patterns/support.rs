//! What the pattern cases share: a journal of what agents did, scripted
//! leaves and planners, and helpers that fail with the behaviour's name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::agent::{
    default_roll_up, Agent, AgentError, Context, Outcome, SubtaskResult, Task, TaskSpec,
};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, MessageId, TaskId};
use crate::hierarchy::{Decision, Escalation, EscalationOutcome, TaskHandle, TaskRecord};
use crate::name::Name;
use crate::peer::PeerMessage;
use crate::runtime::{
    AgentOptions, DeadLetterRecord, Org, Principal, PrincipalStream, RuntimeConfig,
};
use crate::store::{CollectionPath, StateStore, StateStoreExt};
use crate::subject::SubjectPattern;
use crate::transport::{Subscription, Transport};

use super::super::{fail, EVENTUALLY};
use super::{genbrain_chart, suite_config};

/// What an agent of a case did.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A task handler started.
    Task {
        role: Name,
        task: TaskId,
        title: String,
        attempt: u32,
    },
    /// `on_subtasks_done` ran.
    SubtasksDone {
        role: Name,
        task: TaskId,
        results: Vec<SubtaskResult>,
    },
    /// `on_escalation` ran.
    Escalation { role: Name, escalation: Escalation },
    /// `on_decision` ran.
    Decision { role: Name, decision: Decision },
    /// `on_peer` ran.
    Peer { role: Name, message: PeerMessage },
}

/// Everything the agents of one case did, in order.
#[derive(Debug, Default)]
pub(crate) struct Journal(Mutex<Vec<Entry>>);

impl Journal {
    pub(crate) fn push(&self, e: Entry) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e);
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The entries `pick` keeps, in order.
    fn picked<T>(&self, pick: impl Fn(Entry) -> Option<T>) -> Vec<T> {
        self.entries().into_iter().filter_map(pick).collect()
    }

    /// Task runs: (role, task, title, attempt).
    pub(crate) fn runs(&self) -> Vec<(Name, TaskId, String, u32)> {
        self.picked(|e| match e {
            Entry::Task {
                role,
                task,
                title,
                attempt,
            } => Some((role, task, title, attempt)),
            _ => None,
        })
    }

    /// The attempts of the runs of `task`, in order.
    pub(crate) fn attempts_of(&self, task: &TaskId) -> Vec<u32> {
        let runs = self.runs().into_iter();
        runs.filter(|r| &r.1 == task).map(|r| r.3).collect()
    }

    /// The runs of `role`.
    pub(crate) fn runs_of(&self, role: &str) -> Vec<(TaskId, String, u32)> {
        let runs = self.runs().into_iter();
        runs.filter(|r| r.0 == role)
            .map(|r| (r.1, r.2, r.3))
            .collect()
    }

    /// The `on_subtasks_done` calls: (role, task, results).
    pub(crate) fn roll_ups(&self) -> Vec<(Name, TaskId, Vec<SubtaskResult>)> {
        self.picked(|e| match e {
            Entry::SubtasksDone {
                role,
                task,
                results,
            } => Some((role, task, results)),
            _ => None,
        })
    }

    /// The escalations `at` received.
    pub(crate) fn escalations_at(&self, at: &str) -> Vec<Escalation> {
        self.picked(|e| match e {
            Entry::Escalation { role, escalation } if role == at => Some(escalation),
            _ => None,
        })
    }

    /// The decisions `at` received.
    pub(crate) fn decisions_at(&self, at: &str) -> Vec<Decision> {
        self.picked(|e| match e {
            Entry::Decision { role, decision } if role == at => Some(decision),
            _ => None,
        })
    }

    /// The peer messages `at` received.
    pub(crate) fn peer_messages_at(&self, at: &str) -> Vec<PeerMessage> {
        self.picked(|e| match e {
            Entry::Peer { role, message } if role == at => Some(message),
            _ => None,
        })
    }
}

pub(crate) type Behaviour =
    Arc<dyn Fn(Task, u32) -> BoxFuture<'static, Result<Outcome, AgentError>> + Send + Sync>;

/// A leaf agent whose task handler a case scripts; it journals each run
/// (when it starts), each peer message, and each decision it gets, and may
/// report usage.
#[derive(Clone)]
pub(crate) struct Leaf {
    journal: Arc<Journal>,
    behave: Behaviour,
    usage: Option<(u64, f64)>,
}

impl Leaf {
    pub(crate) fn new<F, Fut>(journal: &Arc<Journal>, behave: F) -> Self
    where
        F: Fn(Task, u32) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Outcome, AgentError>> + Send + 'static,
    {
        Self {
            journal: Arc::clone(journal),
            behave: Arc::new(move |t, a| Box::pin(behave(t, a))),
            usage: None,
        }
    }

    /// Completes every task with `{"by": role, "title": title}`.
    pub(crate) fn completing(journal: &Arc<Journal>) -> Self {
        Self::new(journal, |t, _| async move {
            Ok(Outcome::Complete(
                json!({ "by": t.assigned_to, "title": t.title }),
            ))
        })
    }

    /// Reports `tokens` and `cost_usd` on every run.
    pub(crate) fn with_usage(mut self, tokens: u64, cost_usd: f64) -> Self {
        self.usage = Some((tokens, cost_usd));
        self
    }
}

#[async_trait]
impl Agent for Leaf {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        self.journal.push(Entry::Task {
            role: cx.role().clone(),
            task: task.id.clone(),
            title: task.title.clone(),
            attempt: cx.attempt(),
        });
        if let Some((tokens, cost)) = self.usage {
            cx.report_usage(tokens, cost);
        }
        (self.behave)(task, cx.attempt()).await
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        self.journal.push(Entry::Peer {
            role: cx.role().clone(),
            message,
        });
        Ok(())
    }

    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        self.journal.push(Entry::Decision {
            role: cx.role().clone(),
            decision,
        });
        Ok(())
    }
}

/// One delegation of a plan (see [`Planner`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Step {
    pub(crate) to: String,
    pub(crate) title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sla_minutes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) task_type: Option<String>,
    #[serde(default)]
    pub(crate) input: Value,
}

pub(crate) fn step(to: &str, title: &str) -> Step {
    Step {
        to: to.to_owned(),
        title: title.to_owned(),
        sla_minutes: None,
        task_type: None,
        input: Value::Null,
    }
}

impl Step {
    pub(crate) fn sla(mut self, minutes: u64) -> Self {
        self.sla_minutes = Some(minutes);
        self
    }

    pub(crate) fn then(mut self, steps: Vec<Step>) -> Self {
        self.input = plan(steps);
        self
    }
}

/// A task input that makes a [`Planner`] delegate `steps`.
pub(crate) fn plan(steps: Vec<Step>) -> Value {
    json!({ "delegate": steps })
}

/// The principal's task for the ceo: through the cto, one task to `leaf`.
pub(crate) fn via_cto(title: &str, leaf: &str, leaf_title: &str) -> TaskSpec {
    TaskSpec::new(title).input(plan(vec![
        step("cto", &format!("{title} (cto)")).then(vec![step(leaf, leaf_title)])
    ]))
}

/// A manager that delegates what its task's input plans
/// (`{"delegate": [step…]}`, each step with its own input for the next
/// level) and rolls up with the default roll-up; with no plan it completes
/// at once. It decides the escalations whose reason it is told to, passes
/// the others up, and journals everything.
#[derive(Clone)]
pub(crate) struct Planner {
    journal: Arc<Journal>,
    decides: Vec<&'static str>,
}

impl Planner {
    pub(crate) fn new(journal: &Arc<Journal>) -> Self {
        Self {
            journal: Arc::clone(journal),
            decides: Vec::new(),
        }
    }

    pub(crate) fn deciding(mut self, reason: &'static str) -> Self {
        self.decides.push(reason);
        self
    }
}

#[async_trait]
impl Agent for Planner {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        self.journal.push(Entry::Task {
            role: cx.role().clone(),
            task: task.id.clone(),
            title: task.title.clone(),
            attempt: cx.attempt(),
        });
        let steps: Vec<Step> = match task.input.get("delegate") {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| AgentError::permanent(format!("bad plan: {e}")))?,
            None => Vec::new(),
        };
        if steps.is_empty() {
            return Ok(Outcome::Complete(json!({ "by": cx.role() })));
        }
        for s in steps {
            let mut spec = TaskSpec::new(s.title).input(s.input);
            if let Some(m) = s.sla_minutes {
                spec = spec.sla_minutes(m);
            }
            if let Some(t) = s.task_type {
                spec = spec.task_type(t);
            }
            cx.delegate(&s.to, spec).await?;
        }
        Ok(Outcome::AwaitSubtasks)
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        self.journal.push(Entry::SubtasksDone {
            role: cx.role().clone(),
            task: task.id,
            results: results.clone(),
        });
        default_roll_up(results)
    }

    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        self.journal.push(Entry::Escalation {
            role: cx.role().clone(),
            escalation: escalation.clone(),
        });
        if self.decides.contains(&escalation.reason.as_str()) {
            return Ok(EscalationOutcome::Decide(
                json!({ "decided_by": cx.role(), "on": escalation.reason }),
            ));
        }
        Ok(EscalationOutcome::PassUp)
    }

    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        self.journal.push(Entry::Decision {
            role: cx.role().clone(),
            decision,
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers.

pub(crate) fn name(b: &str, s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| fail(b, e))
}

pub(crate) async fn start_with(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    chart: OrgChart,
    config: RuntimeConfig,
    agents: Vec<(&str, Arc<dyn Agent>, usize)>,
) -> Org {
    let mut builder = Org::builder(chart)
        .transport(Arc::clone(t))
        .store(Arc::clone(s))
        .config(config);
    for (role, agent, concurrency) in agents {
        builder = builder.agent_with(
            role,
            agent,
            AgentOptions::default().concurrency(concurrency),
        );
    }
    let org = match builder.start().await {
        Ok(o) => o,
        Err(e) => fail(b, format!("org start: {e}")),
    };
    eventually(b, "every hosted agent ready", || async { org.is_ready() }).await;
    org
}

/// Starts an org of GenBrain's chart hosting `agents`, each with concurrency 4.
pub(crate) async fn start(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    agents: Vec<(&str, Arc<dyn Agent>)>,
) -> Org {
    let agents = agents.into_iter().map(|(r, a)| (r, a, 4)).collect();
    start_with(b, t, s, genbrain_chart(org), suite_config(), agents).await
}

pub(crate) async fn delegate(b: &str, p: &Principal, to: &str, spec: TaskSpec) -> TaskHandle {
    let title = spec.title.clone();
    match p.delegate(to, spec).await {
        Ok(h) => h,
        Err(e) => fail(
            b,
            format!("the principal's delegation {title:?} to {to}: {e}"),
        ),
    }
}

pub(crate) async fn wait_done(b: &str, h: &TaskHandle) -> TaskRecord {
    match h.wait(EVENTUALLY).await {
        Ok(r) => r,
        Err(e) => fail(b, format!("task {} ({}): {e}", h.task_id, h.assigned_to)),
    }
}

pub(crate) async fn task(b: &str, p: &Principal, id: &TaskId) -> TaskRecord {
    match p.task(id).await {
        Ok(Some(r)) => r,
        other => fail(b, format!("task {id}: {other:?}")),
    }
}

/// The task a chain from the principal ended at: the root's first child's
/// first child (founder → ceo → cto → leaf).
pub(crate) async fn leaf_of(b: &str, p: &Principal, root: &TaskId) -> TaskRecord {
    let tree = p.task_tree(root).await.unwrap_or_else(|e| fail(b, e));
    let Some(leaf) = tree
        .children
        .first()
        .and_then(|c| c.children.first())
        .map(|l| l.task_id.clone())
    else {
        fail(b, format!("the chain under {root} has no leaf: {tree:?}"));
    };
    task(b, p, &leaf).await
}

/// Every task document of the org.
pub(crate) async fn tasks_of(b: &str, s: &Arc<dyn StateStore>, org: &Name) -> Vec<TaskRecord> {
    let tasks = CollectionPath::new(format!("agentorg/{org}/tasks")).unwrap_or_else(|e| fail(b, e));
    let docs = s.list_all(&tasks).await.unwrap_or_else(|e| fail(b, e));
    docs.into_iter()
        .map(|d| {
            serde_json::from_value(d.value)
                .unwrap_or_else(|e| fail(b, format!("task document: {e}")))
        })
        .collect()
}

/// Polls `f` every `every` until it gives a value, for at most `within`.
pub(crate) async fn eventually_some<T, F, Fut>(
    b: &str,
    what: &str,
    within: Duration,
    every: Duration,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            fail(b, format!("not within {within:?}: {what}"));
        }
        tokio::time::sleep(every).await;
    }
}

pub(crate) async fn eventually_within<F, Fut>(
    b: &str,
    what: &str,
    within: Duration,
    every: Duration,
    mut f: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(b, what, within, every, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await;
}

pub(crate) async fn eventually<F, Fut>(b: &str, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(b, what, EVENTUALLY, Duration::from_millis(50), f).await;
}

/// The dead letter of the message `id`, once it is recorded.
pub(crate) async fn dead_letter_of(b: &str, p: &Principal, id: &MessageId) -> DeadLetterRecord {
    eventually_some(
        b,
        &format!("the dead letter of {id}"),
        EVENTUALLY,
        Duration::from_millis(50),
        || async {
            let recs = p.dead_letter_records().await.unwrap_or_default();
            recs.into_iter()
                .find(|r| r.original_id.as_ref() == Some(id))
        },
    )
    .await
}

/// The next envelope of `s` that `pick` accepts (others are skipped).
pub(crate) async fn next_matching(
    b: &str,
    what: &str,
    s: &mut PrincipalStream,
    pick: impl Fn(&Envelope) -> bool,
) -> Envelope {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(Ok(env))) if pick(&env) => return env,
            Ok(Some(Ok(_))) => {}
            other => fail(b, format!("{what}: {other:?}")),
        }
    }
}

/// Fails if `s` yields an envelope `pick` accepts within `d`.
pub(crate) async fn none_matching(
    b: &str,
    what: &str,
    s: &mut PrincipalStream,
    d: Duration,
    pick: impl Fn(&Envelope) -> bool,
) {
    let deadline = Instant::now() + d;
    while let Ok(item) = tokio::time::timeout_at(deadline, s.next()).await {
        match item {
            Some(Ok(env)) if pick(&env) => fail(b, format!("{what}: {env:?}")),
            Some(Ok(_)) => {}
            other => fail(b, format!("{what}: the stream ended: {other:?}")),
        }
    }
}

/// The envelopes a tap got within `d`.
pub(crate) async fn drain(tap: &mut Subscription, d: Duration) -> Vec<Envelope> {
    let mut out = Vec::new();
    let deadline = Instant::now() + d;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, tap.next()).await {
        if let Ok(m) = item {
            if let Ok(env) = m.envelope(&crate::codec::Codec::default()) {
                out.push(env);
            }
        }
    }
    out
}

pub(crate) async fn tap(
    b: &str,
    t: &Arc<dyn Transport>,
    subject: crate::subject::Subject,
) -> Subscription {
    t.subscribe(&SubjectPattern::from(&subject))
        .await
        .unwrap_or_else(|e| fail(b, e))
}

/// A gate handlers wait at until the case opens it (for good).
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Semaphore>);

impl Gate {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    pub(crate) async fn pass(&self) {
        if let Ok(p) = self.0.acquire().await {
            // Leave the permit for the next one: once open, open for all.
            drop(p);
        }
    }

    pub(crate) fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

// ---------------------------------------------------------------------------
// The cases.

/// The only child of a manager's task (founder → ceo → leaf).
pub(crate) async fn leaf_of_manager(b: &str, p: &Principal, root: &TaskId) -> TaskRecord {
    let rec = task(b, p, root).await;
    match rec.children.as_slice() {
        [leaf] => task(b, p, leaf).await,
        other => fail(b, format!("children of {root}: {other:?}")),
    }
}

pub(crate) async fn wait_long(h: &TaskHandle) -> TaskRecord {
    match h.wait(Duration::from_secs(600)).await {
        Ok(r) => r,
        Err(e) => fail("sla_breach_escalates_once", e),
    }
}
