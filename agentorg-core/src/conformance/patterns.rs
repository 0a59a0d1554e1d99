//! The pattern conformance suite: the seed's hierarchy (pattern 1) and peer
//! channels (pattern 2) on the seed's GenBrain chart, over any transport +
//! store pair.
//!
//! Every function takes the transport, the store and an org name the
//! transport captures, and starts its own orgs of [`genbrain_chart`] under
//! that name, with the runtime suite's short real durations
//! ([`suite_config`]). Functions may share a transport and store when each
//! gets its own org name.
//!
//! Two lists: [`CASES`] run everywhere — on the memory backends (on tokio's
//! paused clock) and on NATS + Firestore (real servers, short real
//! durations, "not before" and eventual outcomes only); [`PAUSED_ONLY`] wait
//! for minutes of virtual time (an SLA of one minute running out) and run
//! only on the memory backends, on the paused clock.
//!
//! The agents of a case record what they did in a shared journal; the
//! assertions read the journal, the task documents and the principal's
//! streams, and each failure names its behaviour.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use super::runtime::{suite_config, Case, COOLDOWN, LEASE};
use super::{fail, EVENTUALLY};
use crate::agent::{
    default_roll_up, Agent, AgentError, Context, DelegateError, Outcome, SubtaskResult, Task,
    TaskSpec,
};
use crate::chart::{OrgChart, OrgChartBuilder, RefusalReason, RoleSpec};
use crate::envelope::{Envelope, Kind, MessageId, TaskId};
use crate::hierarchy::{gather, Decision, Escalation, EscalationOutcome};
use crate::name::Name;
use crate::peer::{PeerError, PeerMessage};
use crate::runtime::{
    AgentOptions, DeadLetterRecord, DeadLetterStatus, OperationError, Org, Principal,
    PrincipalStream, RuntimeConfig, TaskHandle, TaskRecord, TaskStatus,
};
use crate::store::{CollectionPath, StateStore, StateStoreExt};
use crate::subject::SubjectPattern;
use crate::transport::{PublishOptions, Subscription, Transport, TransportExt};

macro_rules! case_list {
    ($(#[$doc:meta])* $list:ident: $($case:ident),* $(,)?) => {
        $(#[$doc])*
        pub const $list: &[(&str, Case)] = &[
            $((stringify!($case), |t, s, o| Box::pin($case(t, s, o)))),*
        ];
    };
}

case_list!(
    /// Every behaviour that runs on any backend, by name, in the order
    /// [`run_all`] runs them.
    CASES:
    seed_tree_built_by_delegation,
    delegation_up_or_sideways_refused,
    shortcut_honoured_for_its_task_type,
    escalation_reaches_the_principal_and_decisions_come_back,
    breaker_reroutes_to_the_alternate_and_half_opens,
    seed_tree_once_under_redelivery,
    poison_task_dead_lettered_requeued_or_discarded,
    peer_messages_only_on_declared_channels,
    thousand_concurrent_delegations_each_once,
    batch_of_ten_gathered_three_in_flight,
    cancel_ends_the_open_subtree,
    idempotency_key_creates_one_task,
    registry_and_liveness,
);

case_list!(
    /// Behaviours that wait minutes of virtual time: memory backends on
    /// tokio's paused clock only.
    PAUSED_ONLY:
    sla_breach_escalates_once,
);

/// Runs every behaviour of [`CASES`], one after the other; `org` is a
/// factory of fresh org names the transport captures.
pub async fn run_all(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: impl Fn() -> Name) {
    for (_, case) in CASES {
        case(Arc::clone(&t), Arc::clone(&s), org()).await;
    }
}

/// The seed's GenBrain chart (as `examples/genbrain.toml`) under the org
/// name `org`: founder → ceo → cto, cso, marketing; cto → backend, frontend,
/// devops; backend's alternate is frontend; the four peer channels; the
/// shortcut ceo → backend for `api_change` tasks.
pub fn genbrain_chart(org: &Name) -> OrgChart {
    match genbrain_builder(org).build() {
        Ok(c) => c,
        Err(e) => fail("genbrain chart", e),
    }
}

fn genbrain_builder(org: &Name) -> OrgChartBuilder {
    let role = |name: &str, manager: &str, description: &str, tools: &[&str], caps: &[&str]| {
        RoleSpec::new(name)
            .reports_to(manager)
            .description(description)
            .tools(tools.iter().copied())
            .capabilities(caps.iter().copied())
    };
    OrgChart::builder(org.as_str())
        .principal("founder")
        .role(role(
            "ceo",
            "founder",
            "Task decomposition, strategic decisions",
            &["time.*"],
            &["planning", "delegation"],
        ))
        .role(role(
            "cto",
            "ceo",
            "Architecture, code review, technical decisions",
            &["git.*", "time.*"],
            &["architecture", "code-review"],
        ))
        .role(role(
            "cso",
            "ceo",
            "Security scanning, vulnerability remediation",
            &["git.*", "time.*"],
            &["security-review"],
        ))
        .role(role(
            "marketing",
            "ceo",
            "Content creation, blog posts, social media",
            &["time.*"],
            &["blog", "social", "email", "seo"],
        ))
        .role(
            role(
                "backend",
                "cto",
                "API implementation, data models",
                &["git.*", "time.*"],
                &["api", "data-models"],
            )
            .alternate("frontend"),
        )
        .role(role(
            "frontend",
            "cto",
            "UI components, client-side logic",
            &["git.*", "time.*"],
            &["ui"],
        ))
        .role(role(
            "devops",
            "cto",
            "Infrastructure, CI/CD, deployment",
            &["git.*", "time.*"],
            &["infrastructure", "ci-cd", "deployment"],
        ))
        .peer_with_purpose("backend", "frontend", "API contracts")
        .peer_with_purpose("devops", "cso", "infrastructure security")
        .peer_with_purpose("backend", "devops", "deployment configs")
        .peer_with_purpose("frontend", "marketing", "brand assets")
        .shortcut("ceo", "backend", ["api_change"])
}

/// The seed's task tree ("Real task tree from our Firestore"), verbatim.
pub fn seed_task_tree() -> Value {
    json!({
      "task_id": "task-2026-0423-CEO-001",
      "title": "Ship user analytics dashboard",
      "assigned_by": "founder",
      "assigned_to": "ceo",
      "status": "completed",
      "children": [
        {
          "task_id": "task-2026-0423-CTO-001",
          "title": "Technical implementation of analytics dashboard",
          "assigned_by": "ceo",
          "assigned_to": "cto",
          "status": "completed",
          "children": [
            {
              "task_id": "task-2026-0423-BE-001",
              "title": "Create /api/v2/analytics endpoints with ClickHouse queries",
              "assigned_to": "backend",
              "status": "completed",
              "sla_minutes": 120,
              "actual_minutes": 87
            },
            {
              "task_id": "task-2026-0423-FE-001",
              "title": "Build React dashboard with chart components",
              "assigned_to": "frontend",
              "status": "completed",
              "sla_minutes": 120,
              "actual_minutes": 104
            },
            {
              "task_id": "task-2026-0423-DO-001",
              "title": "Set up analytics data pipeline and Grafana dashboards",
              "assigned_to": "devops",
              "status": "completed",
              "sla_minutes": 90,
              "actual_minutes": 62
            }
          ]
        },
        {
          "task_id": "task-2026-0423-CSO-001",
          "title": "Security review of analytics data handling",
          "assigned_to": "cso",
          "status": "completed"
        },
        {
          "task_id": "task-2026-0423-MKT-001",
          "title": "Write analytics dashboard announcement blog post",
          "assigned_to": "marketing",
          "status": "completed"
        }
      ]
    })
}

/// How a task tree (serialized [`TaskTree`](crate::runtime::TaskTree))
/// differs from the seed's shape, or `None` if it has it.
///
/// Node by node, children in order: every field of the seed's node is
/// there with the seed's value, except that `task_id` may be any non-empty
/// id (unique in the tree) and `actual_minutes` any whole number. The tree
/// may have two fields the seed leaves out: `assigned_by` below the root
/// (the runtime records every task's delegator, the seed shows it only
/// where it is not obvious), which must then be the parent's assignee; and
/// `actual_minutes` on every ended task (the seed shows it only on the
/// leaves with an SLA). Any other field (an `error`, an SLA the seed has
/// not, children of a seed leaf) is a difference.
pub fn seed_tree_mismatch(seed: &Value, tree: &Value) -> Option<String> {
    let mut ids = HashSet::new();
    node_mismatch(seed, tree, None, "root", &mut ids).err()
}

fn node_mismatch(
    seed: &Value,
    tree: &Value,
    delegator: Option<&Value>,
    at: &str,
    ids: &mut HashSet<String>,
) -> Result<(), String> {
    let (Some(want), Some(got)) = (seed.as_object(), tree.as_object()) else {
        return Err(format!("{at}: expected an object like {seed}, got {tree}"));
    };
    let at = format!("{at} ({})", want.get("title").unwrap_or(&Value::Null));
    for (key, expected) in want {
        let Some(actual) = got.get(key) else {
            return Err(format!("{at}: no `{key}` (the seed has {expected})"));
        };
        match key.as_str() {
            "task_id" => match actual.as_str() {
                Some(id) if !id.is_empty() => {
                    if !ids.insert(id.to_owned()) {
                        return Err(format!("{at}: task id {id} appears twice"));
                    }
                }
                _ => return Err(format!("{at}: task_id {actual} is not an id")),
            },
            "actual_minutes" if !actual.is_u64() => {
                return Err(format!(
                    "{at}: actual_minutes {actual} is not whole minutes"
                ));
            }
            "actual_minutes" => {}
            "children" => {
                let (Some(w), Some(g)) = (expected.as_array(), actual.as_array()) else {
                    return Err(format!("{at}: children {actual} is not a list"));
                };
                if w.len() != g.len() {
                    return Err(format!(
                        "{at}: {} children, the seed has {}",
                        g.len(),
                        w.len()
                    ));
                }
                for (i, (w, g)) in w.iter().zip(g).enumerate() {
                    node_mismatch(
                        w,
                        g,
                        got.get("assigned_to"),
                        &format!("{at}.children[{i}]"),
                        ids,
                    )?;
                }
            }
            _ if actual != expected => {
                return Err(format!(
                    "{at}: `{key}` is {actual}, the seed's is {expected}"
                ));
            }
            _ => {}
        }
    }
    for (key, actual) in got {
        if want.contains_key(key) {
            continue;
        }
        match (key.as_str(), delegator) {
            ("assigned_by", Some(parent)) if actual == parent => {}
            ("assigned_by", _) => {
                return Err(format!(
                    "{at}: assigned_by {actual} is not the parent's assignee {}",
                    delegator.unwrap_or(&Value::Null)
                ));
            }
            ("actual_minutes", _) if actual.is_u64() => {}
            _ => return Err(format!("{at}: `{key}` = {actual} is not in the seed")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The agents of the suite, and their journal.

/// What an agent of a case did.
#[derive(Debug, Clone)]
enum Entry {
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
struct Journal(Mutex<Vec<Entry>>);

impl Journal {
    fn push(&self, e: Entry) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e);
    }

    fn entries(&self) -> Vec<Entry> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Task runs: (role, task, title, attempt).
    fn runs(&self) -> Vec<(Name, TaskId, String, u32)> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Task {
                    role,
                    task,
                    title,
                    attempt,
                } => Some((role, task, title, attempt)),
                _ => None,
            })
            .collect()
    }

    /// The attempts of the runs of `task`, in order.
    fn attempts_of(&self, task: &TaskId) -> Vec<u32> {
        self.runs()
            .into_iter()
            .filter(|r| &r.1 == task)
            .map(|r| r.3)
            .collect()
    }

    /// The runs of `role`.
    fn runs_of(&self, role: &str) -> Vec<(TaskId, String, u32)> {
        self.runs()
            .into_iter()
            .filter(|r| r.0 == role)
            .map(|r| (r.1, r.2, r.3))
            .collect()
    }

    /// The `on_subtasks_done` calls: (role, task, results).
    fn roll_ups(&self) -> Vec<(Name, TaskId, Vec<SubtaskResult>)> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::SubtasksDone {
                    role,
                    task,
                    results,
                } => Some((role, task, results)),
                _ => None,
            })
            .collect()
    }

    fn escalations_at(&self, at: &str) -> Vec<Escalation> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Escalation { role, escalation } if role == at => Some(escalation),
                _ => None,
            })
            .collect()
    }

    fn decisions_at(&self, at: &str) -> Vec<Decision> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Decision { role, decision } if role == at => Some(decision),
                _ => None,
            })
            .collect()
    }

    fn peer_messages_at(&self, at: &str) -> Vec<PeerMessage> {
        self.entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Peer { role, message } if role == at => Some(message),
                _ => None,
            })
            .collect()
    }
}

type Behaviour =
    Arc<dyn Fn(Task, u32) -> BoxFuture<'static, Result<Outcome, AgentError>> + Send + Sync>;

/// A leaf agent whose task handler a case scripts; it journals each run
/// (when it starts), each peer message, and each decision it gets, and may
/// report usage.
#[derive(Clone)]
struct Leaf {
    journal: Arc<Journal>,
    behave: Behaviour,
    usage: Option<(u64, f64)>,
}

impl Leaf {
    fn new<F, Fut>(journal: &Arc<Journal>, behave: F) -> Self
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
    fn completing(journal: &Arc<Journal>) -> Self {
        Self::new(journal, |t, _| async move {
            Ok(Outcome::Complete(
                json!({ "by": t.assigned_to, "title": t.title }),
            ))
        })
    }

    /// Reports `tokens` and `cost_usd` on every run.
    fn with_usage(mut self, tokens: u64, cost_usd: f64) -> Self {
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
struct Step {
    to: String,
    title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sla_minutes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_type: Option<String>,
    #[serde(default)]
    input: Value,
}

fn step(to: &str, title: &str) -> Step {
    Step {
        to: to.to_owned(),
        title: title.to_owned(),
        sla_minutes: None,
        task_type: None,
        input: Value::Null,
    }
}

impl Step {
    fn sla(mut self, minutes: u64) -> Self {
        self.sla_minutes = Some(minutes);
        self
    }

    fn then(mut self, steps: Vec<Step>) -> Self {
        self.input = plan(steps);
        self
    }
}

/// A task input that makes a [`Planner`] delegate `steps`.
fn plan(steps: Vec<Step>) -> Value {
    json!({ "delegate": steps })
}

/// The principal's task for the ceo: through the cto, one task to `leaf`.
fn via_cto(title: &str, leaf: &str, leaf_title: &str) -> TaskSpec {
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
struct Planner {
    journal: Arc<Journal>,
    decides: Vec<&'static str>,
}

impl Planner {
    fn new(journal: &Arc<Journal>) -> Self {
        Self {
            journal: Arc::clone(journal),
            decides: Vec::new(),
        }
    }

    fn deciding(mut self, reason: &'static str) -> Self {
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

fn name(b: &str, s: &str) -> Name {
    Name::new(s).unwrap_or_else(|e| fail(b, e))
}

async fn start_with(
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

/// Starts an org of the seed chart hosting `agents`, each with concurrency 4.
async fn start(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    agents: Vec<(&str, Arc<dyn Agent>)>,
) -> Org {
    let agents = agents.into_iter().map(|(r, a)| (r, a, 4)).collect();
    start_with(b, t, s, genbrain_chart(org), suite_config(), agents).await
}

async fn delegate(b: &str, p: &Principal, to: &str, spec: TaskSpec) -> TaskHandle {
    let title = spec.title.clone();
    match p.delegate(to, spec).await {
        Ok(h) => h,
        Err(e) => fail(
            b,
            format!("the principal's delegation {title:?} to {to}: {e}"),
        ),
    }
}

async fn wait_done(b: &str, h: &TaskHandle) -> TaskRecord {
    match h.wait(EVENTUALLY).await {
        Ok(r) => r,
        Err(e) => fail(b, format!("task {} ({}): {e}", h.task_id, h.assigned_to)),
    }
}

async fn task(b: &str, p: &Principal, id: &TaskId) -> TaskRecord {
    match p.task(id).await {
        Ok(Some(r)) => r,
        other => fail(b, format!("task {id}: {other:?}")),
    }
}

/// The task a chain from the principal ended at: the root's first child's
/// first child (founder → ceo → cto → leaf).
async fn leaf_of(b: &str, p: &Principal, root: &TaskId) -> TaskRecord {
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
async fn tasks_of(b: &str, s: &Arc<dyn StateStore>, org: &Name) -> Vec<TaskRecord> {
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
async fn eventually_some<T, F, Fut>(
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

async fn eventually_within<F, Fut>(b: &str, what: &str, within: Duration, every: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some(b, what, within, every, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await;
}

async fn eventually<F, Fut>(b: &str, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(b, what, EVENTUALLY, Duration::from_millis(50), f).await;
}

/// The dead letter of the message `id`, once it is recorded.
async fn dead_letter_of(b: &str, p: &Principal, id: &MessageId) -> DeadLetterRecord {
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
async fn next_matching(
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
async fn none_matching(
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
async fn drain(tap: &mut Subscription, d: Duration) -> Vec<Envelope> {
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

async fn tap(b: &str, t: &Arc<dyn Transport>, subject: crate::subject::Subject) -> Subscription {
    t.subscribe(&SubjectPattern::from(&subject))
        .await
        .unwrap_or_else(|e| fail(b, e))
}

/// A gate handlers wait at until the case opens it (for good).
#[derive(Debug, Clone)]
struct Gate(Arc<Semaphore>);

impl Gate {
    fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    async fn pass(&self) {
        if let Ok(p) = self.0.acquire().await {
            // Leave the permit for the next one: once open, open for all.
            drop(p);
        }
    }

    fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

// ---------------------------------------------------------------------------
// The cases.

/// The seed's tree, built by real delegations down the seed chart — the
/// founder asks the ceo, the ceo delegates to the cto, cso and marketing,
/// the cto to backend, frontend and devops with the seed's SLAs — rolls up
/// completed and reads back as the seed's JSON (see [`seed_tree_mismatch`]).
pub async fn seed_tree_built_by_delegation(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "seed_tree_built_by_delegation";
    let j = Arc::new(Journal::default());
    let o = start(B, &t, &s, &org, seed_agents(&j)).await;
    let seed = seed_task_tree();
    let root = delegate(B, &o.principal(), "ceo", seed_root_spec(&seed)).await;
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Completed {
        fail(
            B,
            format!("the root ended {} ({:?})", rec.status, rec.error),
        );
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let json = serde_json::to_value(&tree).unwrap_or_else(|e| fail(B, e));
    if let Some(diff) = seed_tree_mismatch(&seed, &json) {
        fail(B, format!("the tree is not the seed's: {diff}\n{json:#}"));
    }
    // Every task ran once; the managers rolled up once each.
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    let ids: HashSet<TaskId> = tree.iter().map(|n| n.task_id.clone()).collect();
    if runs.len() != 7 || runs.values().any(|n| *n != 1) || runs.keys().any(|k| !ids.contains(k)) {
        fail(B, format!("handler runs per task: {runs:?}"));
    }
    let roll_ups: Vec<String> = j.roll_ups().iter().map(|r| r.0.to_string()).collect();
    if roll_ups != ["cto", "ceo"] {
        fail(
            B,
            format!("roll-ups {roll_ups:?}, expected the cto's then the ceo's"),
        );
    }
    // The result rolled up: the ceo's result holds each child's.
    let result = rec.result.unwrap_or_default();
    for child in &rec.children {
        if result.get(child.as_str()).is_none() {
            fail(B, format!("the root's result lacks {child}: {result}"));
        }
    }
    o.shutdown().await;
}

/// The agents of the seed tree: planners for the ceo and cto, completing
/// leaves for the others.
fn seed_agents(j: &Arc<Journal>) -> Vec<(&'static str, Arc<dyn Agent>)> {
    vec![
        ("ceo", Arc::new(Planner::new(j))),
        ("cto", Arc::new(Planner::new(j))),
        ("cso", Arc::new(Leaf::completing(j))),
        ("marketing", Arc::new(Leaf::completing(j))),
        ("backend", Arc::new(Leaf::completing(j))),
        ("frontend", Arc::new(Leaf::completing(j))),
        ("devops", Arc::new(Leaf::completing(j))),
    ]
}

/// The founder's task for the ceo that builds the seed's tree: each
/// manager's plan is its children in the seed (titles, assignees, SLAs).
fn seed_root_spec(seed: &Value) -> TaskSpec {
    fn plan_of(node: &Value) -> Value {
        let steps: Vec<Step> = node["children"]
            .as_array()
            .map(|children| {
                children
                    .iter()
                    .map(|c| Step {
                        to: c["assigned_to"].as_str().unwrap_or_default().to_owned(),
                        title: c["title"].as_str().unwrap_or_default().to_owned(),
                        sla_minutes: c["sla_minutes"].as_u64(),
                        task_type: None,
                        input: plan_of(c),
                    })
                    .collect()
            })
            .unwrap_or_default();
        plan(steps)
    }
    TaskSpec::new(seed["title"].as_str().unwrap_or_default()).input(plan_of(seed))
}

/// Delegating up (backend → cto) or sideways (backend → frontend) is
/// refused in the handler with `NotAllowed` naming the rule, before the
/// transport: no task document, no task message. The principal may not skip
/// a level either.
pub async fn delegation_up_or_sideways_refused(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "delegation_up_or_sideways_refused";
    let j = Arc::new(Journal::default());
    /// Per target: the refusal's message, or what happened instead.
    type Seen = Arc<Mutex<Vec<(String, Result<String, String>)>>>;
    let refusals: Seen = Arc::default();
    /// Tries to delegate to the cto (its manager) and to the frontend (a
    /// peer), then completes with what happened.
    struct Backend(Seen);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let mut seen = Vec::new();
            for to in ["cto", "frontend"] {
                let r = match cx.delegate(to, TaskSpec::new(format!("{to}, do it"))).await {
                    Ok(d) => Ok(format!("delegated {}", d.task_id)),
                    Err(DelegateError::NotAllowed(r))
                        if r.from == "backend"
                            && r.to == to
                            && r.reason == RefusalReason::NoRoute =>
                    {
                        Err(r.to_string())
                    }
                    Err(e) => Ok(format!("refused otherwise: {e:?}")),
                };
                seen.push((to.to_owned(), r));
            }
            if let Ok(mut r) = self.0.lock() {
                r.extend(seen);
            }
            Ok(Outcome::Complete(json!("refusals seen")))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(Backend(Arc::clone(&refusals)))),
            ("frontend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let (backend, cto, frontend) = (name(B, "backend"), name(B, "cto"), name(B, "frontend"));
    let mut up = tap(B, &t, o.subjects().inbox(&cto, &backend)).await;
    let mut sideways = tap(B, &t, o.subjects().inbox(&frontend, &backend)).await;
    let p = o.principal();
    // The principal may delegate to its direct report only.
    match p.delegate("cto", TaskSpec::new("skip the ceo")).await {
        Err(DelegateError::NotAllowed(r)) if r.reason == RefusalReason::NoRoute => {}
        other => fail(B, format!("the founder skipping a level: {other:?}")),
    }
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "Try to delegate")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the chain did not complete");
    }
    let seen = refusals.lock().map(|r| r.clone()).unwrap_or_default();
    if seen.len() != 2 {
        fail(B, format!("the backend's attempts: {seen:?}"));
    }
    for (to, r) in &seen {
        match r {
            Err(msg)
                if msg.contains(&format!("`backend` may not delegate to `{to}`"))
                    && msg.contains("is not a direct report of `backend`")
                    && msg.contains("no shortcut") => {}
            other => fail(
                B,
                format!("delegating to {to}: {other:?}, expected NotAllowed naming the rule"),
            ),
        }
    }
    // Nothing reached the store or the transport: three tasks (ceo, cto,
    // backend), and no task message up or sideways.
    let tasks = tasks_of(B, &s, &org).await;
    if tasks.len() != 3 || tasks.iter().any(|t| t.assigned_by == "backend") {
        fail(
            B,
            format!(
                "task documents after the refusals: {:?}",
                tasks
                    .iter()
                    .map(|t| (&t.assigned_by, &t.assigned_to))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let up: Vec<Envelope> = drain(&mut up, Duration::from_millis(300)).await;
    if up.iter().any(|e| e.kind == Kind::Task) {
        fail(B, format!("a task went up to the cto: {up:?}"));
    }
    let sideways = drain(&mut sideways, Duration::from_millis(100)).await;
    if !sideways.is_empty() {
        fail(
            B,
            format!("messages sideways to the frontend: {sideways:?}"),
        );
    }
    if !j.runs_of("frontend").is_empty() {
        fail(B, "the frontend ran a task");
    }
    o.shutdown().await;
}

/// The chart's shortcut lets the ceo give `api_change` tasks straight to
/// the backend (the cto never sees them); a task of another type, or none,
/// is refused, and a forged task of another type is refused by the backend
/// too (dead-lettered, never run).
pub async fn shortcut_honoured_for_its_task_type(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "shortcut_honoured_for_its_task_type";
    let j = Arc::new(Journal::default());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    /// Delegates an `api_change` to the backend, and tries a `feature` and
    /// an untyped task.
    struct Ceo(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Agent for Ceo {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let mut seen = Vec::new();
            let d = cx
                .delegate(
                    "backend",
                    TaskSpec::new("Add a page parameter to /api/v2/analytics")
                        .task_type("api_change"),
                )
                .await?;
            seen.push(format!("api_change -> {}", d.assigned_to));
            for ty in [Some("feature"), None] {
                let mut spec = TaskSpec::new("Build a whole feature");
                if let Some(ty) = ty {
                    spec = spec.task_type(ty);
                }
                match cx.delegate("backend", spec).await {
                    Err(DelegateError::NotAllowed(r))
                        if r.reason == RefusalReason::NoRoute && r.task_type.as_deref() == ty =>
                    {
                        seen.push(format!("{ty:?} refused: {r}"));
                    }
                    other => seen.push(format!("{ty:?} NOT refused: {other:?}")),
                }
            }
            if let Ok(mut s) = self.0.lock() {
                s.extend(seen);
            }
            Ok(Outcome::AwaitSubtasks)
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Ceo(Arc::clone(&seen)))),
            ("cto", Arc::new(Leaf::completing(&j))),
            ("backend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let root = delegate(B, &p, "ceo", TaskSpec::new("Paginate the analytics API")).await;
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Completed || rec.children.len() != 1 {
        fail(
            B,
            format!(
                "the root ended {} with children {:?}",
                rec.status, rec.children
            ),
        );
    }
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let ok = seen.len() == 3
        && seen[0] == "api_change -> backend"
        && seen[1..]
            .iter()
            .all(|s| s.contains(" refused: ") && s.contains("no shortcut lets `ceo` delegate"));
    if !ok {
        fail(B, format!("the ceo's delegations: {seen:?}"));
    }
    let child = task(B, &p, &rec.children[0]).await;
    if child.assigned_by != "ceo"
        || child.assigned_to != "backend"
        || child.task_type.as_deref() != Some("api_change")
        || child.parent.as_ref() != Some(&root.task_id)
        || child.status != TaskStatus::Completed
    {
        fail(B, format!("the shortcut task: {child:?}"));
    }
    if !j.runs_of("cto").is_empty() || j.runs_of("backend").len() != 1 {
        fail(B, format!("runs: {:?}", j.runs()));
    }
    // The receiving side enforces the same rule: a `feature` task from the
    // ceo, published past the ceo's own check, is never run.
    let (ceo, backend) = (name(B, "ceo"), name(B, "backend"));
    let id = MessageId::new();
    let forged = Envelope::new(
        org.clone(),
        ceo.clone(),
        Kind::Task,
        json!({"task_id": id, "title": "forged feature", "task_type": "feature"}),
    )
    .with_id(id.clone())
    .with_to(backend.clone());
    if let Err(e) = t
        .publish_envelope(&o.subjects().inbox(&backend, &ceo), &forged)
        .await
    {
        fail(B, e);
    }
    let found = dead_letter_of(B, &p, &id).await;
    if found.reason_code != "not_allowed" || found.role != "backend" || found.attempts != 0 {
        fail(B, format!("the forged task's dead letter: {found:?}"));
    }
    if j.runs_of("backend").len() != 1 {
        fail(B, "the backend ran the forged task");
    }
    o.shutdown().await;
}

/// An escalation goes up the chain: the backend escalates, the cto passes
/// it up (the default), the ceo too, and the principal's inbox shows it
/// with its path; `Principal::answer` sends the decision back down the same
/// path to the backend's `on_decision`. A level that decides (the cto, for
/// "naming") answers at once and the escalation goes no higher.
pub async fn escalation_reaches_the_principal_and_decisions_come_back(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "escalation_reaches_the_principal_and_decisions_come_back";
    let j = Arc::new(Journal::default());
    /// Escalates a budget question and a naming question, and completes.
    struct Backend(Leaf);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            cx.escalate("budget above my limit", json!({"usd": 25_000}))?;
            cx.escalate("naming", json!({"options": ["v2", "next"]}))?;
            self.0.on_task(cx, task).await
        }
        async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
            self.0.on_decision(cx, decision).await
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j).deciding("naming"))),
            ("backend", Arc::new(Backend(Leaf::completing(&j)))),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let root = delegate(B, &p, "ceo", via_cto("Ship", "backend", "Build the API")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the chain did not complete");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    let env = next_matching(B, "the escalation at the principal", &mut inbox, |e| {
        e.kind == Kind::Escalation
    })
    .await;
    let esc: Escalation = serde_json::from_value(env.payload.clone())
        .unwrap_or_else(|e| fail(B, format!("the escalation's payload: {e}")));
    let path: Vec<&str> = esc.path.iter().map(Name::as_str).collect();
    if env.from != "ceo"
        || esc.origin != "backend"
        || path != ["backend", "cto", "ceo"]
        || esc.reason != "budget above my limit"
        || esc.details["usd"] != 25_000
        || esc.task_id.as_ref() != Some(&leaf.task_id)
    {
        fail(B, format!("the escalation at the principal: {env:?}"));
    }
    if let Err(e) = p.answer(&env, json!({"approved": true})).await {
        fail(B, format!("answering: {e}"));
    }
    eventually(B, "both decisions at the backend", || async {
        j.decisions_at("backend").len() >= 2
    })
    .await;
    let decisions = j.decisions_at("backend");
    let by = |who: &str| decisions.iter().find(|d| d.decided_by == who);
    match by("founder") {
        Some(d)
            if d.escalation_id == esc.escalation_id
                && d.decision == json!({"approved": true})
                && d.reason == "budget above my limit"
                && d.path == esc.path
                && d.task_id.as_ref() == Some(&leaf.task_id) => {}
        other => fail(
            B,
            format!("the founder's decision at the backend: {other:?}"),
        ),
    }
    match by("cto") {
        Some(d)
            if d.reason == "naming"
                && d.decision["decided_by"] == "cto"
                && d.path.len() == 1
                && d.path[0] == "backend" => {}
        other => fail(B, format!("the cto's decision at the backend: {other:?}")),
    }
    if decisions.len() != 2 {
        fail(B, format!("decisions at the backend: {decisions:?}"));
    }
    // Each level saw what came its way, and decisions on the way down are
    // passed, not handled, by the levels above the origin.
    let reasons = |role: &str| -> Vec<String> {
        j.escalations_at(role)
            .into_iter()
            .map(|e| e.reason)
            .collect()
    };
    if reasons("cto").len() != 2 || reasons("ceo") != ["budget above my limit"] {
        fail(
            B,
            format!(
                "escalations at the cto {:?}, at the ceo {:?}",
                reasons("cto"),
                reasons("ceo")
            ),
        );
    }
    if !j.decisions_at("cto").is_empty() || !j.decisions_at("ceo").is_empty() {
        fail(
            B,
            "a level above the origin handled a decision meant for the backend",
        );
    }
    none_matching(
        B,
        "a second escalation at the principal",
        &mut inbox,
        Duration::from_millis(500),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    o.shutdown().await;
}

/// SLA breach (paused clock only): a task past its `sla_minutes` emits one
/// `<org>.events.sla.breach` event, not before the SLA, and escalates once
/// to its delegator's manager; a task the principal delegated alerts the
/// principal instead; a task that ends within its SLA does neither.
pub async fn sla_breach_escalates_once(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "sla_breach_escalates_once";
    let j = Arc::new(Journal::default());
    let slow = |minutes: u64| {
        Leaf::new(&j, move |t, _| async move {
            tokio::time::sleep(Duration::from_secs(minutes)).await;
            Ok(Outcome::Complete(json!({"title": t.title})))
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j).deciding("sla_breach"))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(slow(120))),
            ("devops", Arc::new(slow(10))),
        ],
    )
    .await;
    let p = o.principal();
    let mut events = tap(
        B,
        &t,
        o.subjects().event(&[name(B, "sla"), name(B, "breach")]),
    )
    .await;
    let mut alerts = p.alerts().await.unwrap_or_else(|e| fail(B, e));
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let at = Instant::now();
    let spec = TaskSpec::new("Ship it within a minute")
        .sla_minutes(1)
        .input(plan(vec![step("cto", "Technical part").then(vec![
            step("backend", "Slow endpoint").sla(1),
            step("devops", "Quick pipeline").sla(1),
        ])]));
    let root = delegate(B, &p, "ceo", spec).await;
    // Two breaches: the root's (the founder delegated it) and the backend's
    // (the cto delegated it); not the devops task, done in 10 s.
    let mut breached = BTreeMap::new();
    while breached.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(600), events.next()).await;
        let env = match item {
            Ok(Some(Ok(m))) => m
                .envelope(&crate::codec::Codec::default())
                .unwrap_or_else(|e| fail(B, e)),
            other => fail(B, format!("the breach events: {other:?}")),
        };
        let task_id = env.payload["details"]["task_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if env.kind != Kind::Event || env.payload["event"] != "sla.breach" {
            fail(B, format!("a breach event: {env:?}"));
        }
        if at.elapsed() < Duration::from_secs(60) {
            fail(
                B,
                format!(
                    "a breach after {:?}, before the SLA of 1 minute",
                    at.elapsed()
                ),
            );
        }
        if breached.insert(task_id.clone(), env).is_some() {
            fail(B, format!("two breach events for {task_id}"));
        }
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let backend_task = tree.children[0].children[0].task_id.clone();
    let devops_task = tree.children[0].children[1].task_id.clone();
    match (
        breached.get(root.task_id.as_str()),
        breached.get(backend_task.as_str()),
    ) {
        (Some(r), Some(b)) if r.from == "founder" && b.from == "cto" => {
            if b.payload["details"]["assigned_to"] != "backend"
                || b.payload["details"]["sla_minutes"] != 1
            {
                fail(B, format!("the backend's breach event: {b:?}"));
            }
        }
        _ => fail(
            B,
            format!(
                "breach events for {:?}",
                breached.keys().collect::<Vec<_>>()
            ),
        ),
    }
    if task(B, &p, &backend_task).await.status != TaskStatus::InProgress {
        fail(
            B,
            "the backend's task was not open when its breach was reported",
        );
    }
    // The root's breach alerts the founder (who has no manager).
    let alert = next_matching(B, "the root's breach alert", &mut alerts, |_| true).await;
    if alert.kind != Kind::Alert
        || alert.payload["alert"] != "sla_breach"
        || alert.payload["details"]["task_id"] != json!(root.task_id)
    {
        fail(B, format!("the alert: {alert:?}"));
    }
    // The backend's breach escalates from the cto to its manager, the ceo,
    // once; the ceo decides, and the cto gets the decision.
    eventually(B, "the cto gets the ceo's decision", || async {
        !j.decisions_at("cto").is_empty()
    })
    .await;
    let escalations = j.escalations_at("ceo");
    match escalations.as_slice() {
        [e] if e.reason == "sla_breach"
            && e.origin == "cto"
            && e.task_id.as_ref() == Some(&backend_task) => {}
        other => fail(B, format!("escalations at the ceo: {other:?}")),
    }
    // All ends; nothing more is reported, however long we wait.
    if wait_long(&root).await.status != TaskStatus::Completed {
        fail(B, "the root did not complete");
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    let more = drain(&mut events, Duration::from_millis(10)).await;
    if !more.is_empty() || breached.contains_key(devops_task.as_str()) {
        fail(B, format!("more breach events: {more:?}"));
    }
    none_matching(
        B,
        "a second alert",
        &mut alerts,
        Duration::from_secs(1),
        |_| true,
    )
    .await;
    none_matching(
        B,
        "an escalation at the principal",
        &mut inbox,
        Duration::from_secs(1),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    if j.escalations_at("ceo").len() != 1 {
        fail(B, "the breach escalated more than once");
    }
    o.shutdown().await;
}

async fn wait_long(h: &TaskHandle) -> TaskRecord {
    match h.wait(Duration::from_secs(600)).await {
        Ok(r) => r,
        Err(e) => fail("sla_breach_escalates_once", e),
    }
}

/// The breaker on the seed chart: after three failed tasks in a row the
/// backend's breaker opens, the opening escalates to its manager (the cto,
/// who passes it up to the founder), the cto's next delegations to the
/// backend go to its alternate, the frontend; after the cool-down one probe
/// goes to the backend (others still rerouted), and its success closes the
/// breaker.
pub async fn breaker_reroutes_to_the_alternate_and_half_opens(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "breaker_reroutes_to_the_alternate_and_half_opens";
    let j = Arc::new(Journal::default());
    let healthy = Arc::new(AtomicBool::new(false));
    let gate = Gate::new();
    let probing = Arc::new(AtomicBool::new(false));
    let backend = {
        let (h, g, p) = (Arc::clone(&healthy), gate.clone(), Arc::clone(&probing));
        Leaf::new(&j, move |task, _| {
            let (h, g, p) = (Arc::clone(&h), g.clone(), Arc::clone(&p));
            async move {
                if task.title == "probe" {
                    p.store(true, Ordering::SeqCst);
                    g.pass().await;
                }
                if h.load(Ordering::SeqCst) {
                    Ok(Outcome::Complete(json!("fixed")))
                } else {
                    Err(AgentError::permanent("ClickHouse schema is broken"))
                }
            }
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(backend)),
            ("frontend", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let chain = |title: &str| via_cto(&format!("Ship {title}"), "backend", title);
    for i in 0..3 {
        let root = delegate(B, &p, "ceo", chain(&format!("fail{i}"))).await;
        if wait_done(B, &root).await.status != TaskStatus::Failed {
            fail(B, "a chain onto the broken backend did not fail");
        }
        let leaf = leaf_of(B, &p, &root.task_id).await;
        if leaf.assigned_to != "backend" || leaf.status != TaskStatus::Failed {
            fail(B, format!("broken task {i}: {leaf:?}"));
        }
    }
    // Open: the cto's delegation to the backend goes to the frontend.
    let root = delegate(B, &p, "ceo", chain("rerouted")).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the rerouted chain did not complete");
    }
    let leaf = leaf_of(B, &p, &root.task_id).await;
    if leaf.assigned_to != "frontend"
        || leaf.requested_to.as_ref().map(Name::as_str) != Some("backend")
    {
        fail(B, format!("the delegation while open: {leaf:?}"));
    }
    // The opening escalates to the backend's manager, once, and on up.
    let heard = eventually_some(
        B,
        "the opening's escalation handled or dead-lettered",
        EVENTUALLY,
        Duration::from_millis(50),
        || async {
            if !j.escalations_at("cto").is_empty() {
                return Some(None);
            }
            let dead = p.dead_letter_records().await.unwrap_or_default();
            dead.into_iter().find(|d| d.role == "cto").map(Some)
        },
    )
    .await;
    if let Some(dead) = heard {
        fail(
            B,
            format!(
                "the cto could not take the breaker's escalation: dead-lettered {} ({}): {}",
                dead.reason_code, dead.reason, dead.original
            ),
        );
    }
    let env = next_matching(B, "the opening at the principal", &mut inbox, |e| {
        e.kind == Kind::Escalation
    })
    .await;
    if env.payload["reason"] != "breaker_open" {
        fail(B, format!("the escalation at the principal: {env:?}"));
    }
    match j.escalations_at("cto").as_slice() {
        [e] if e.reason == "breaker_open" && e.origin == "backend" => {}
        other => fail(B, format!("escalations at the cto: {other:?}")),
    }
    // After the cool-down: one probe to the backend; meanwhile the others go
    // to the frontend.
    tokio::time::sleep(COOLDOWN).await;
    healthy.store(true, Ordering::SeqCst);
    let probe = delegate(B, &p, "ceo", chain("probe")).await;
    eventually(B, "the probe reached the backend", || async {
        probing.load(Ordering::SeqCst)
    })
    .await;
    let probe_leaf = leaf_of(B, &p, &probe.task_id).await;
    if probe_leaf.assigned_to != "backend" || !probe_leaf.probe {
        fail(B, format!("the probe: {probe_leaf:?}"));
    }
    let during = delegate(B, &p, "ceo", chain("during")).await;
    if wait_done(B, &during).await.status != TaskStatus::Completed {
        fail(B, "the chain during the probe did not complete");
    }
    let during_leaf = leaf_of(B, &p, &during.task_id).await;
    if during_leaf.assigned_to != "frontend" {
        fail(B, format!("a delegation during the probe: {during_leaf:?}"));
    }
    gate.open();
    if wait_done(B, &probe).await.status != TaskStatus::Completed {
        fail(B, "the probe's chain did not complete");
    }
    // Closed again: the backend gets its tasks.
    let after = delegate(B, &p, "ceo", chain("after")).await;
    if wait_done(B, &after).await.status != TaskStatus::Completed {
        fail(B, "the chain after the probe did not complete");
    }
    let after_leaf = leaf_of(B, &p, &after.task_id).await;
    if after_leaf.assigned_to != "backend" || after_leaf.probe {
        fail(B, format!("after a good probe: {after_leaf:?}"));
    }
    let backend_titles: Vec<String> = j.runs_of("backend").into_iter().map(|r| r.1).collect();
    if backend_titles != ["fail0", "fail1", "fail2", "probe", "after"] {
        fail(B, format!("the backend ran {backend_titles:?}"));
    }
    none_matching(
        B,
        "a second opening at the principal",
        &mut inbox,
        Duration::from_millis(300),
        |e| e.kind == Kind::Escalation,
    )
    .await;
    o.shutdown().await;
}

/// The seed's tree with every first acknowledgement lost (each message
/// comes again): every handler still runs once per task, each manager rolls
/// up once, and the tree is the seed's. A task message replayed after its
/// task completed is acknowledged without running.
pub async fn seed_tree_once_under_redelivery(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "seed_tree_once_under_redelivery";
    let lossy: Arc<dyn Transport> = Arc::new(super::runtime::LosesFirstAcks::new(Arc::clone(&t)));
    let j = Arc::new(Journal::default());
    // Concurrency 1: one sender's messages to a role are handled in order.
    let agents = seed_agents(&j)
        .into_iter()
        .map(|(r, a)| (r, a, 1))
        .collect();
    let o = start_with(B, &lossy, &s, genbrain_chart(&org), suite_config(), agents).await;
    let (backend, cto) = (name(B, "backend"), name(B, "cto"));
    let backend_inbox = o.subjects().inbox(&backend, &cto);
    let mut tapped = tap(B, &t, backend_inbox.clone()).await;
    let seed = seed_task_tree();
    let p = o.principal();
    let root = delegate(B, &p, "ceo", seed_root_spec(&seed)).await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the tree did not complete");
    }
    let tree = root.tree().await.unwrap_or_else(|e| fail(B, e));
    let json = serde_json::to_value(&tree).unwrap_or_else(|e| fail(B, e));
    if let Some(diff) = seed_tree_mismatch(&seed, &json) {
        fail(B, format!("the tree is not the seed's: {diff}"));
    }
    // Replay the backend's task message (same bytes, no dedupe id).
    let raw = loop {
        match tokio::time::timeout(EVENTUALLY, tapped.next()).await {
            Ok(Some(Ok(m))) => {
                let env = m.envelope(&crate::codec::Codec::default());
                if env.is_ok_and(|e| e.kind == Kind::Task) {
                    break m.payload;
                }
            }
            other => fail(B, format!("tapping the backend's task: {other:?}")),
        }
    };
    if let Err(e) = t
        .publish(&backend_inbox, raw, PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    // A second tree sends the backend its next task on the same subject, so
    // the replay is handled before it.
    let second = delegate(B, &p, "ceo", seed_root_spec(&seed)).await;
    if wait_done(B, &second).await.status != TaskStatus::Completed {
        fail(B, "the second tree did not complete");
    }
    // Lost acks bring every message back after the ack wait: let them.
    tokio::time::sleep(LEASE * 2).await;
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    if runs.len() != 14 || runs.values().any(|n| *n != 1) {
        fail(
            B,
            format!("handler runs per task under redelivery: {runs:?}"),
        );
    }
    let mut roll_ups: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _) in j.roll_ups() {
        *roll_ups.entry(id).or_default() += 1;
    }
    if roll_ups.len() != 4 || roll_ups.values().any(|n| *n != 1) {
        fail(B, format!("roll-ups per manager task: {roll_ups:?}"));
    }
    o.shutdown().await;
}

/// A poison task: its handler fails transiently on attempts 1, 2 and 3,
/// then it is dead-lettered (never a 4th run) and its record shows why;
/// requeued once the agent is healthy, it runs again (attempt 1 of a new
/// message), completes, and its parent rolls up. Another, discarded, fails,
/// and its parent rolls up failed.
pub async fn poison_task_dead_lettered_requeued_or_discarded(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "poison_task_dead_lettered_requeued_or_discarded";
    let j = Arc::new(Journal::default());
    let poisoned: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
        ["poison A", "poison B"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    ));
    let marketing = {
        let poisoned = Arc::clone(&poisoned);
        Leaf::new(&j, move |task, attempt| {
            let bad = poisoned
                .lock()
                .map(|p| p.contains(&task.title))
                .unwrap_or(true);
            async move {
                if bad {
                    Err(AgentError::transient(format!(
                        "CMS rejects the post (attempt {attempt})"
                    )))
                } else {
                    Ok(Outcome::Complete(json!({"post": task.title})))
                }
            }
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("marketing", Arc::new(marketing)),
        ],
    )
    .await;
    let p = o.principal();
    let launch = |x: &str| {
        TaskSpec::new(format!("Launch {x}"))
            .input(plan(vec![step("marketing", &format!("poison {x}"))]))
    };
    let a = delegate(B, &p, "ceo", launch("A")).await;
    let b = delegate(B, &p, "ceo", launch("B")).await;
    let records: Vec<DeadLetterRecord> = eventually_some(
        B,
        "two dead letters",
        EVENTUALLY,
        Duration::from_millis(50),
        || async {
            let recs = p.dead_letter_records().await.unwrap_or_default();
            (recs.len() >= 2).then_some(recs)
        },
    )
    .await;
    let a_leaf = leaf_of_manager(B, &p, &a.task_id).await;
    let b_leaf = leaf_of_manager(B, &p, &b.task_id).await;
    let record_of = |leaf: &TaskRecord| -> DeadLetterRecord {
        match records
            .iter()
            .find(|r| r.task_id.as_ref() == Some(&leaf.task_id))
        {
            Some(r) => r.clone(),
            None => fail(B, format!("no dead letter for {}: {records:?}", leaf.title)),
        }
    };
    let (dl_a, dl_b) = (record_of(&a_leaf), record_of(&b_leaf));
    for (dl, leaf) in [(&dl_a, &a_leaf), (&dl_b, &b_leaf)] {
        if records.len() != 2
            || dl.reason_code != "attempts_exhausted"
            || !dl.reason.contains("CMS rejects the post (attempt 3)")
            || dl.attempts != 3
            || dl.status != DeadLetterStatus::Open
            || dl.role != "marketing"
            || dl.sender.as_ref().map(Name::as_str) != Some("ceo")
            || dl.original_id.is_none()
        {
            fail(B, format!("the dead letter of {}: {dl:?}", leaf.title));
        }
        if leaf.status != TaskStatus::DeadLettered {
            fail(B, format!("{} is {}", leaf.title, leaf.status));
        }
        if j.attempts_of(&leaf.task_id) != [1, 2, 3] {
            fail(
                B,
                format!(
                    "attempts of {}: {:?}",
                    leaf.title,
                    j.attempts_of(&leaf.task_id)
                ),
            );
        }
    }
    // The parents wait for the dead-lettered tasks.
    for h in [&a, &b] {
        let rec = task(B, &p, &h.task_id).await;
        if rec.status != TaskStatus::InProgress || rec.open_children.len() != 1 {
            fail(B, format!("a parent of a dead letter: {rec:?}"));
        }
    }
    // Requeued once healthy: a new message, attempt 1, completes; the parent
    // rolls up.
    if let Ok(mut p) = poisoned.lock() {
        p.remove("poison A");
    }
    let fresh = p
        .requeue(&dl_a.dead_letter_id)
        .await
        .unwrap_or_else(|e| fail(B, format!("requeue: {e}")));
    if Some(&fresh) == dl_a.original_id.as_ref() {
        fail(B, "the requeue reused the original's id");
    }
    let rec_a = wait_done(B, &a).await;
    if rec_a.status != TaskStatus::Completed {
        fail(
            B,
            format!(
                "the requeued task's parent ended {} ({:?})",
                rec_a.status, rec_a.error
            ),
        );
    }
    if task(B, &p, &a_leaf.task_id).await.status != TaskStatus::Completed
        || j.attempts_of(&a_leaf.task_id) != [1, 2, 3, 1]
    {
        fail(
            B,
            format!("the requeued task ran {:?}", j.attempts_of(&a_leaf.task_id)),
        );
    }
    // Discarded: the task fails, and so does its parent.
    if let Err(e) = p.discard(&dl_b.dead_letter_id).await {
        fail(B, format!("discard: {e}"));
    }
    let rec_b = wait_done(B, &b).await;
    let b_after = task(B, &p, &b_leaf.task_id).await;
    if rec_b.status != TaskStatus::Failed
        || !rec_b
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("poison B")
        || b_after.status != TaskStatus::Failed
        || !b_after
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("discarded")
    {
        fail(
            B,
            format!("after the discard: parent {rec_b:?}, task {b_after:?}"),
        );
    }
    if j.attempts_of(&b_leaf.task_id) != [1, 2, 3] {
        fail(B, "the discarded task ran again");
    }
    // Each record says what became of it, and is settled for good.
    let after = p.dead_letter_records().await.unwrap_or_else(|e| fail(B, e));
    let status_of = |id: &MessageId| {
        after
            .iter()
            .find(|r| &r.dead_letter_id == id)
            .map(|r| r.status)
    };
    if status_of(&dl_a.dead_letter_id) != Some(DeadLetterStatus::Requeued)
        || status_of(&dl_b.dead_letter_id) != Some(DeadLetterStatus::Discarded)
    {
        fail(B, format!("records after: {after:?}"));
    }
    if !matches!(
        p.requeue(&dl_a.dead_letter_id).await,
        Err(OperationError::InvalidState { .. })
    ) || !matches!(
        p.discard(&dl_b.dead_letter_id).await,
        Err(OperationError::InvalidState { .. })
    ) || !matches!(
        p.requeue(&MessageId::new()).await,
        Err(OperationError::NotFound { .. })
    ) {
        fail(
            B,
            "a settled or unknown dead letter was requeued or discarded again",
        );
    }
    o.shutdown().await;
}

/// The only child of a manager's task (founder → ceo → leaf).
async fn leaf_of_manager(b: &str, p: &Principal, root: &TaskId) -> TaskRecord {
    let rec = task(b, p, root).await;
    match rec.children.as_slice() {
        [leaf] => task(b, p, leaf).await,
        other => fail(b, format!("children of {root}: {other:?}")),
    }
}

/// An API contract change, as the backend sends it to the frontend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiContractChange {
    endpoint: String,
    change_type: String,
    version: u32,
}

/// What the backend asks the devops about a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeployQuery {
    service: String,
}

/// The devops' answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeployConfig {
    service: String,
    replicas: u32,
    image: String,
}

/// Peer channels: the backend's message to the frontend (declared) is
/// delivered exactly once, typed; to the cso or marketing (undeclared) it
/// is refused with `NotDeclared` and nothing is sent; a request to the
/// devops (declared) gets its typed answer, one to the cso is refused, one
/// to a peer that answers no requests comes back as its error. A peer
/// message forged on an undeclared channel is refused by the receiver.
pub async fn peer_messages_only_on_declared_channels(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "peer_messages_only_on_declared_channels";
    let j = Arc::new(Journal::default());
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    /// Sends, and asks, every peer it can think of.
    struct Backend(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            let version = u32::try_from(task.input["version"].as_u64().unwrap_or(0)).unwrap_or(0);
            let change = ApiContractChange {
                endpoint: "/api/v2/analytics".into(),
                change_type: "breaking".into(),
                version,
            };
            let mut seen = Vec::new();
            let refused = |r: Result<(), PeerError>, to: &str| match r {
                Err(PeerError::NotDeclared { from, to: t }) if from == "backend" && t == to => {
                    format!("send to {to}: not declared")
                }
                other => format!("send to {to}: {other:?}"),
            };
            seen.push(match cx.send_peer("frontend", &change) {
                Ok(()) => "send to frontend: ok".to_owned(),
                Err(e) => format!("send to frontend: {e}"),
            });
            seen.push(refused(cx.send_peer("cso", &change), "cso"));
            seen.push(refused(cx.send_peer("marketing", &change), "marketing"));
            let timeout = Duration::from_secs(5);
            let query = DeployQuery {
                service: "analytics".into(),
            };
            seen.push(
                match cx
                    .request_peer::<_, DeployConfig>("devops", &query, timeout)
                    .await
                {
                    Ok(c) if c.service == "analytics" && c.replicas == 3 => {
                        format!("ask devops: {}", c.image)
                    }
                    other => format!("ask devops: {other:?}"),
                },
            );
            seen.push(
                match cx.request_peer::<_, Value>("cso", &query, timeout).await {
                    Err(PeerError::NotDeclared { .. }) => "ask cso: not declared".to_owned(),
                    other => format!("ask cso: {other:?}"),
                },
            );
            seen.push(
                match cx
                    .request_peer::<_, Value>("frontend", &query, timeout)
                    .await
                {
                    Err(PeerError::Remote {
                        peer, retryable, ..
                    }) if peer == "frontend" && !retryable => "ask frontend: refused".to_owned(),
                    other => format!("ask frontend: {other:?}"),
                },
            );
            if let Ok(mut o) = self.0.lock() {
                o.extend(seen);
            }
            Ok(Outcome::Complete(json!("contract changed")))
        }
    }
    /// Answers deployment questions.
    struct Devops;
    #[async_trait]
    impl Agent for Devops {
        async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            Ok(Outcome::Complete(Value::Null))
        }
        async fn on_peer_request(
            &self,
            _cx: &Context,
            request: PeerMessage,
        ) -> Result<Value, AgentError> {
            let q: DeployQuery = request.decode()?;
            serde_json::to_value(DeployConfig {
                service: q.service,
                replicas: 3,
                image: "analytics:v2".into(),
            })
            .map_err(|e| AgentError::permanent(e.to_string()))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(Backend(Arc::clone(&outcomes)))),
            ("frontend", Arc::new(Leaf::completing(&j))),
            ("devops", Arc::new(Devops)),
            ("cso", Arc::new(Leaf::completing(&j))),
            ("marketing", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let backend = name(B, "backend");
    let mut undeclared = Vec::new();
    for to in ["cso", "marketing"] {
        undeclared.push(tap(B, &t, o.subjects().peer(&backend, &name(B, to))).await);
    }
    let p = o.principal();
    for version in [1, 2] {
        let spec =
            TaskSpec::new(format!("Change the contract v{version}")).input(plan(vec![step(
                "cto",
                "Contract change",
            )
            .then(vec![Step {
                input: json!({"version": version}),
                ..step("backend", "Change the analytics API")
            }])]));
        let root = delegate(B, &p, "ceo", spec).await;
        if wait_done(B, &root).await.status != TaskStatus::Completed {
            fail(B, "the backend's chain did not complete");
        }
    }
    let seen = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let expected = [
        "send to frontend: ok",
        "send to cso: not declared",
        "send to marketing: not declared",
        "ask devops: analytics:v2",
        "ask cso: not declared",
        "ask frontend: refused",
    ];
    if seen.len() != 12 || seen[..6] != expected || seen[6..] != expected {
        fail(B, format!("the backend's peer calls: {seen:?}"));
    }
    // Each message reaches the frontend once, typed, in order.
    eventually(B, "both contract changes at the frontend", || async {
        j.peer_messages_at("frontend").len() >= 2
    })
    .await;
    let got = j.peer_messages_at("frontend");
    let versions: Vec<u32> = got
        .iter()
        .map(|m| {
            m.decode::<ApiContractChange>()
                .unwrap_or_else(|e| fail(B, e))
                .version
        })
        .collect();
    let ids: HashSet<&MessageId> = got.iter().map(|m| &m.id).collect();
    if versions != [1, 2] || ids.len() != 2 || got.iter().any(|m| m.from != "backend") {
        fail(B, format!("peer messages at the frontend: {got:?}"));
    }
    for mut tap in undeclared {
        let sent = drain(&mut tap, Duration::from_millis(200)).await;
        if !sent.is_empty() {
            fail(B, format!("sent on an undeclared channel: {sent:?}"));
        }
    }
    // The receiver refuses a peer message on an undeclared channel.
    let cso = name(B, "cso");
    let forged = Envelope::new(org.clone(), backend.clone(), Kind::Peer, json!({"x": 1}))
        .with_to(cso.clone());
    if let Err(e) = t
        .publish_envelope(&o.subjects().peer(&backend, &cso), &forged)
        .await
    {
        fail(B, e);
    }
    let found = dead_letter_of(B, &p, &forged.id).await;
    if found.reason_code != "not_allowed" || found.role != "cso" {
        fail(
            B,
            format!("the forged peer message's dead letter: {found:?}"),
        );
    }
    if !j.peer_messages_at("cso").is_empty() || j.peer_messages_at("frontend").len() != 2 {
        fail(B, format!("peer deliveries: {:?}", j.entries()));
    }
    o.shutdown().await;
}

/// How many delegations [`thousand_concurrent_delegations_each_once`] makes.
pub const CONCURRENT_DELEGATIONS: usize = 1_000;

/// 1,000 delegations from the principal to one agent (concurrency 8), made
/// 100 at a time concurrently: each task runs once and completes.
pub async fn thousand_concurrent_delegations_each_once(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "thousand_concurrent_delegations_each_once";
    let j = Arc::new(Journal::default());
    let o = start_with(
        B,
        &t,
        &s,
        genbrain_chart(&org),
        suite_config(),
        vec![("ceo", Arc::new(Leaf::completing(&j)), 8)],
    )
    .await;
    let p = o.principal();
    let mut ids = HashSet::new();
    let titles: Vec<String> = (0..CONCURRENT_DELEGATIONS)
        .map(|i| format!("task {i}"))
        .collect();
    for chunk in titles.chunks(100) {
        let handles = futures::future::join_all(
            chunk
                .iter()
                .map(|title| p.delegate("ceo", TaskSpec::new(title.clone()))),
        )
        .await;
        for h in handles {
            match h {
                Ok(h) => {
                    ids.insert(h.task_id);
                }
                Err(e) => fail(B, format!("a concurrent delegation: {e}")),
            }
        }
    }
    if ids.len() != CONCURRENT_DELEGATIONS {
        fail(B, format!("{} distinct task ids", ids.len()));
    }
    let within = Duration::from_secs(300);
    eventually_within(
        B,
        "every task ran",
        within,
        Duration::from_millis(200),
        || async { j.runs().len() >= CONCURRENT_DELEGATIONS },
    )
    .await;
    eventually_within(
        B,
        "every task completed",
        within,
        Duration::from_secs(1),
        || async {
            let tasks = tasks_of(B, &s, &org).await;
            let completed = tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Completed)
                .count();
            completed == CONCURRENT_DELEGATIONS
        },
    )
    .await;
    let mut runs: HashMap<TaskId, usize> = HashMap::new();
    for (_, id, _, _) in j.runs() {
        *runs.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    if runs.len() != CONCURRENT_DELEGATIONS
        || !twice.is_empty()
        || runs.keys().any(|k| !ids.contains(k))
    {
        fail(
            B,
            format!("{} tasks ran; ran more than once: {twice:?}", runs.len()),
        );
    }
    o.shutdown().await;
}

/// A batch of 10 (the seed's parallel sub-agents): marketing delegates ten
/// posts to its writers with at most 3 in flight and gathers them; one post
/// fails, and marketing completes with 9 completed and 1 failed. Never more
/// than 3 writers run at once, though the writers could run 10.
pub async fn batch_of_ten_gathered_three_in_flight(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "batch_of_ten_gathered_three_in_flight";
    let j = Arc::new(Journal::default());
    /// Delegates ten posts as a batch and gathers them.
    struct Marketing(Arc<Journal>);
    #[async_trait]
    impl Agent for Marketing {
        async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let specs = (0..10)
                .map(|i| TaskSpec::new(format!("Post {i}")))
                .collect();
            cx.delegate_batch("writer", specs, 3).await?;
            Ok(Outcome::AwaitSubtasks)
        }
        async fn on_subtasks_done(
            &self,
            cx: &Context,
            task: Task,
            results: Vec<SubtaskResult>,
        ) -> Result<Outcome, AgentError> {
            self.0.push(Entry::SubtasksDone {
                role: cx.role().clone(),
                task: task.id,
                results: results.clone(),
            });
            Ok(gather(results))
        }
    }
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        Leaf::new(&j, move |task, _| {
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                if task.title == "Post 7" {
                    return Err(AgentError::permanent("off-brand"));
                }
                Ok(Outcome::Complete(
                    json!({"url": format!("/blog/{}", task.title)}),
                ))
            }
        })
    };
    let chart = match genbrain_builder(&org)
        .role(RoleSpec::new("writer").reports_to("marketing"))
        .build()
    {
        Ok(c) => c,
        Err(e) => fail(B, e),
    };
    let o = start_with(
        B,
        &t,
        &s,
        chart,
        suite_config(),
        vec![
            ("ceo", Arc::new(Planner::new(&j)), 4),
            ("marketing", Arc::new(Marketing(Arc::clone(&j))), 4),
            ("writer", Arc::new(writer), 10),
        ],
    )
    .await;
    let p = o.principal();
    let root = delegate(
        B,
        &p,
        "ceo",
        TaskSpec::new("Announce the dashboard").input(plan(vec![step(
            "marketing",
            "Ten posts about the dashboard",
        )])),
    )
    .await;
    if wait_done(B, &root).await.status != TaskStatus::Completed {
        fail(B, "the root did not complete");
    }
    let mkt = leaf_of_manager(B, &p, &root.task_id).await;
    let result = mkt.result.clone().unwrap_or_default();
    let completed = result["completed"].as_array().map_or(0, Vec::len);
    let failed = result["failed"].as_array().cloned().unwrap_or_default();
    if mkt.status != TaskStatus::Completed
        || completed != 9
        || failed.len() != 1
        || failed[0]["title"] != "Post 7"
        || failed[0]["status"] != "failed"
        || !failed[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("off-brand")
    {
        fail(B, format!("marketing's gathered result: {mkt:?}"));
    }
    let titles: Vec<String> = futures::future::join_all(mkt.children.iter().map(|c| p.task(c)))
        .await
        .into_iter()
        .map(|r| match r {
            Ok(Some(r)) if r.status.is_terminal() => r.title,
            other => fail(B, format!("a batch task: {other:?}")),
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|i| format!("Post {i}")).collect();
    if titles != expected || !mkt.queued_children.is_empty() {
        fail(B, format!("the batch in the tree: {titles:?}"));
    }
    let ran: Vec<(TaskId, String, u32)> = j.runs_of("writer");
    let distinct: HashSet<&TaskId> = ran.iter().map(|r| &r.0).collect();
    if ran.len() != 10 || distinct.len() != 10 {
        fail(B, format!("the writers ran {ran:?}"));
    }
    let most = most.load(Ordering::SeqCst);
    if most > 3 {
        fail(B, format!("{most} batch tasks ran at once, the limit is 3"));
    }
    if most < 2 {
        fail(B, "the batch ran one task at a time");
    }
    if j.roll_ups().iter().filter(|r| r.0 == "marketing").count() != 1 {
        fail(B, "marketing gathered more than once");
    }
    o.shutdown().await;
}

/// Cancelling a tree in progress (the cto waiting on two slow subtasks)
/// cancels every open task of it at once; `wait` returns the cancelled
/// root and the founder is told; when the slow handlers finish, their
/// outcomes are dropped: nothing rolls up and nothing leaves `cancelled`.
pub async fn cancel_ends_the_open_subtree(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "cancel_ends_the_open_subtree";
    let j = Arc::new(Journal::default());
    let gate = Gate::new();
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let slow = || {
        let (g, st, fin) = (gate.clone(), Arc::clone(&started), Arc::clone(&finished));
        Leaf::new(&j, move |task, _| {
            let (g, st, fin) = (g.clone(), Arc::clone(&st), Arc::clone(&fin));
            async move {
                st.fetch_add(1, Ordering::SeqCst);
                g.pass().await;
                fin.fetch_add(1, Ordering::SeqCst);
                Ok(Outcome::Complete(json!({"title": task.title})))
            }
        })
    };
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(slow())),
            ("frontend", Arc::new(slow())),
        ],
    )
    .await;
    let p = o.principal();
    let mut inbox = p.inbox().await.unwrap_or_else(|e| fail(B, e));
    let root = delegate(
        B,
        &p,
        "ceo",
        TaskSpec::new("Ship the dashboard").input(plan(vec![step("cto", "Build it").then(vec![
            step("backend", "Slow API"),
            step("frontend", "Slow UI"),
        ])])),
    )
    .await;
    eventually(B, "both slow handlers started", || async {
        started.load(Ordering::SeqCst) == 2
    })
    .await;
    let cancelled = root.cancel().await.unwrap_or_else(|e| fail(B, e));
    if cancelled != 4 {
        fail(B, format!("{cancelled} tasks cancelled, expected 4"));
    }
    let rec = wait_done(B, &root).await;
    if rec.status != TaskStatus::Cancelled {
        fail(B, format!("wait returned {}", rec.status));
    }
    let told = next_matching(B, "the founder told of the cancellation", &mut inbox, |e| {
        e.kind == Kind::Result
    })
    .await;
    if told.correlation_id.as_ref() != Some(&root.task_id) || told.payload["status"] != "cancelled"
    {
        fail(B, format!("the founder's result: {told:?}"));
    }
    let all_cancelled = |tasks: &[TaskRecord]| {
        tasks.len() == 4 && tasks.iter().all(|t| t.status == TaskStatus::Cancelled)
    };
    let tasks = tasks_of(B, &s, &org).await;
    if !all_cancelled(&tasks) {
        fail(
            B,
            format!(
                "after cancel: {:?}",
                tasks
                    .iter()
                    .map(|t| (&t.assigned_to, t.status))
                    .collect::<Vec<_>>()
            ),
        );
    }
    // The slow handlers finish; their outcomes are dropped.
    gate.open();
    eventually(B, "the slow handlers finished and settled", || async {
        finished.load(Ordering::SeqCst) == 2
            && o.health()
                .iter()
                .filter(|h| h.role == "backend" || h.role == "frontend")
                .all(|h| h.in_flight == 0)
    })
    .await;
    let tasks = tasks_of(B, &s, &org).await;
    if !all_cancelled(&tasks) || tasks.iter().any(|t| t.result.is_some()) {
        fail(B, format!("after the handlers finished: {tasks:?}"));
    }
    if !j.roll_ups().is_empty() {
        fail(
            B,
            format!("a cancelled manager rolled up: {:?}", j.roll_ups()),
        );
    }
    if root.cancel().await.unwrap_or_else(|e| fail(B, e)) != 0 {
        fail(B, "cancelling an ended tree cancelled something");
    }
    o.shutdown().await;
}

/// An idempotency key never creates a second task: the founder delegating
/// twice (or twice at once) with one key gets one task id, one document,
/// one run. Keys are per delegator: the ceo's equal key is its own, and the
/// ceo's second use of it returns its first task.
pub async fn idempotency_key_creates_one_task(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "idempotency_key_creates_one_task";
    let j = Arc::new(Journal::default());
    let made: Arc<Mutex<Vec<TaskId>>> = Arc::default();
    /// Delegates to the cto with the key "k1" and completes with the task id.
    struct Ceo(Arc<Journal>, Arc<Mutex<Vec<TaskId>>>);
    #[async_trait]
    impl Agent for Ceo {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            self.0.push(Entry::Task {
                role: cx.role().clone(),
                task: task.id,
                title: task.title,
                attempt: cx.attempt(),
            });
            let d = cx
                .delegate("cto", TaskSpec::new("Review it").idempotency_key("k1"))
                .await?;
            if let Ok(mut m) = self.1.lock() {
                m.push(d.task_id.clone());
            }
            Ok(Outcome::Complete(json!({ "cto_task": d.task_id })))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Ceo(Arc::clone(&j), Arc::clone(&made)))),
            ("cto", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let p = o.principal();
    let first = delegate(B, &p, "ceo", TaskSpec::new("Once").idempotency_key("k1")).await;
    wait_done(B, &first).await;
    let again = delegate(B, &p, "ceo", TaskSpec::new("Once").idempotency_key("k1")).await;
    if again.task_id != first.task_id {
        fail(
            B,
            format!("key k1 gave {} then {}", first.task_id, again.task_id),
        );
    }
    // Two at once with a new key.
    let (x, y) = futures::join!(
        p.delegate("ceo", TaskSpec::new("Race").idempotency_key("k2")),
        p.delegate("ceo", TaskSpec::new("Race").idempotency_key("k2")),
    );
    let (x, y) = match (x, y) {
        (Ok(x), Ok(y)) => (x, y),
        other => fail(B, format!("concurrent delegations with one key: {other:?}")),
    };
    if x.task_id != y.task_id {
        fail(
            B,
            format!("concurrent uses of k2 made {} and {}", x.task_id, y.task_id),
        );
    }
    wait_done(B, &x).await;
    // The ceo's "k1" is its own key: its first use made a cto task (not the
    // founder's), its second use returned that task.
    eventually(B, "the cto's review ran", || async {
        !j.runs_of("cto").is_empty()
    })
    .await;
    let made = made.lock().map(|m| m.clone()).unwrap_or_default();
    let tasks = tasks_of(B, &s, &org).await;
    let count = |role: &str| tasks.iter().filter(|t| t.assigned_to == role).count();
    if made.len() != 2 || made[0] != made[1] || made[0] == first.task_id {
        fail(B, format!("the ceo's delegations with k1: {made:?}"));
    }
    if count("ceo") != 2 || count("cto") != 1 {
        fail(
            B,
            format!("{} ceo tasks, {} cto tasks", count("ceo"), count("cto")),
        );
    }
    let ceo_runs: Vec<String> = j.runs_of("ceo").into_iter().map(|r| r.1).collect();
    if ceo_runs != ["Once", "Race"] || j.runs_of("cto").len() != 1 {
        fail(B, format!("runs {:?}", j.runs()));
    }
    o.shutdown().await;
}

/// The registry and liveness: after its tasks, the ceo's registry entry
/// shows them completed, its capabilities from the chart and the usage its
/// handler reported; the liveness view shows the hosted roles up, the
/// others down, and a role up while a second process hosts it and down
/// after that process shuts down.
pub async fn registry_and_liveness(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "registry_and_liveness";
    let j = Arc::new(Journal::default());
    let hosted: Vec<(&str, Arc<dyn Agent>)> = vec![
        (
            "ceo",
            Arc::new(Leaf::completing(&j).with_usage(1_000, 0.25)),
        ),
        ("cto", Arc::new(Leaf::completing(&j))),
        ("marketing", Arc::new(Leaf::completing(&j))),
    ];
    let o = start(B, &t, &s, &org, hosted).await;
    let p = o.principal();
    for i in 0..3 {
        let h = delegate(B, &p, "ceo", TaskSpec::new(format!("Plan {i}"))).await;
        if wait_done(B, &h).await.status != TaskStatus::Completed {
            fail(B, "a task did not complete");
        }
    }
    let rec = eventually_some(
        B,
        "the ceo's registry entry with 3 tasks and their usage",
        EVENTUALLY,
        Duration::from_millis(100),
        || async {
            let r = p.agent_record("ceo").await.ok().flatten()?;
            (r.tasks_completed >= 3 && r.tokens >= 3_000 && r.cost_usd >= 0.75 - 1e-9).then_some(r)
        },
    )
    .await;
    if rec.agent_id != "ceo"
        || rec.capabilities != ["planning", "delegation"]
        || rec.tasks_failed != 0
        || rec.last_active.is_none()
        || rec.current_task.is_none()
    {
        fail(B, format!("the ceo's registry entry: {rec:?}"));
    }
    match p.agent_record("cso").await {
        Ok(None) => {}
        other => fail(B, format!("the never-hosted cso's entry: {other:?}")),
    }
    let up_roles = |p: Principal| async move {
        let l = p.liveness().await.unwrap_or_else(|e| fail(B, e));
        let up: Vec<String> = l
            .iter()
            .filter(|r| r.up)
            .map(|r| r.role.to_string())
            .collect();
        (up, l)
    };
    eventually(B, "the hosted roles up, the others down", || {
        let p = p.clone();
        async move { up_roles(p).await.0 == ["ceo", "cto", "marketing"] }
    })
    .await;
    let (_, all) = up_roles(p.clone()).await;
    if all.len() != 7
        || all
            .iter()
            .any(|r| r.up && (r.replicas != 1 || r.last_seen.is_none()))
    {
        fail(B, format!("liveness {all:?}"));
    }
    // A second process hosts the backend: up while it runs, down after.
    let other = start(
        B,
        &t,
        &s,
        &org,
        vec![("backend", Arc::new(Leaf::completing(&j)))],
    )
    .await;
    eventually(B, "the backend up", || {
        let p = p.clone();
        async move { up_roles(p).await.0.iter().any(|r| r == "backend") }
    })
    .await;
    other.shutdown().await;
    eventually(B, "the backend down after its process stopped", || {
        let p = p.clone();
        async move { !up_roles(p).await.0.iter().any(|r| r == "backend") }
    })
    .await;
    o.shutdown().await;
}
