//! Chains and sagas: order by completion, compensation in reverse with
//! rollback events, in-doubt steps escalated and decided, failing
//! compensations dead-lettered and escalated, gates and their timeout
//! branch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::agent::{Agent, AgentError, Context, Outcome, Task};
use crate::chart::{GateSpec, GateTimeout, OrgChart, RoleSpec, SagaSpec, StepSpec};
use crate::envelope::MessageId;
use crate::events::Event;
use crate::name::Name;
use crate::runtime::{Org, Principal};
use crate::saga::{SagaDecision, SagaEscalation, SagaRecord, SagaStatus, SagaStep, StepStatus};
use crate::store::StateStore;
use crate::transport::Transport;

use super::super::{fail, EVENTUALLY};
use super::suite_config;
use super::support::{eventually, start_with};

/// The gate's deadline in [`gated_step_takes_its_timeout_branch`].
const GATE_WITHIN: Duration = Duration::from_secs(2);

/// The saga chart: founder → ceo → cto → devops, cso; ceo → marketing.
/// Devops publishes `deploy.complete`, `deploy.rollback` and
/// `infra.released`, the cso `scan.done`; marketing subscribes to
/// `deploy.*` and `infra.*`, the ceo to `deploy.complete` and `scan.done`.
///
/// * `cicd`: provision (devops; compensation publishes `infra.released`),
///   deploy (devops; `deploy.rollback`), smoke_test (cso), changelog
///   (marketing);
/// * `chain`: build (devops), scan (cso), announce (marketing) — no
///   compensation;
/// * `charge`: charge (devops, irreversible), ship (cso, compensated),
///   notify (marketing);
/// * `gated`: release (devops), notify (marketing, gated on all of
///   `deploy.complete`'s subscribers within [`GATE_WITHIN`], skipped on
///   timeout), close (cso).
fn saga_chart(b: &str, org: &Name) -> OrgChart {
    OrgChart::builder(org.as_str())
        .principal("founder")
        .role(
            RoleSpec::new("ceo")
                .reports_to("founder")
                .subscribes(["deploy.complete", "scan.done"]),
        )
        .role(RoleSpec::new("cto").reports_to("ceo"))
        .role(RoleSpec::new("devops").reports_to("cto").publishes([
            "deploy.complete",
            "deploy.rollback",
            "infra.released",
        ]))
        .role(
            RoleSpec::new("cso")
                .reports_to("cto")
                .publishes(["scan.done"]),
        )
        .role(
            RoleSpec::new("marketing")
                .reports_to("ceo")
                .subscribes(["deploy.*", "infra.*"]),
        )
        .saga(
            SagaSpec::new("cicd")
                .step(StepSpec::new("provision", "devops").compensate_with("infra.released"))
                .step(StepSpec::new("deploy", "devops").compensate_with("deploy.rollback"))
                .step(StepSpec::new("smoke_test", "cso"))
                .step(StepSpec::new("changelog", "marketing")),
        )
        .saga(
            SagaSpec::new("charge")
                .step(StepSpec::new("charge", "devops").irreversible())
                .step(StepSpec::new("ship", "cso").compensate())
                .step(StepSpec::new("notify", "marketing")),
        )
        .saga(
            SagaSpec::new("chain")
                .step(StepSpec::new("build", "devops"))
                .step(StepSpec::new("scan", "cso"))
                .step(StepSpec::new("announce", "marketing")),
        )
        .saga(
            SagaSpec::new("gated")
                .step(StepSpec::new("release", "devops"))
                .step(StepSpec::new("notify", "marketing").gate(
                    GateSpec::new("deploy.complete", GATE_WITHIN).on_timeout(GateTimeout::Skip),
                ))
                .step(StepSpec::new("close", "cso")),
        )
        .build()
        .unwrap_or_else(|e| fail(b, e))
}

/// What the agents did: `run:<step>`, `comp:<step>`, `esc:<step>`,
/// `event:<name>`, per role, in order.
#[derive(Default)]
struct Log(Mutex<Vec<(String, String)>>);

impl Log {
    fn push(&self, role: &str, what: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((role.to_owned(), what));
        }
    }

    fn all(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|v| v.iter().map(|(_, w)| w.clone()).collect())
            .unwrap_or_default()
    }

    fn at(&self, role: &str) -> Vec<String> {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(r, _)| r == role)
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|w| *w == what).count()
    }
}

/// Switches the agents read.
#[derive(Default)]
struct Switches {
    /// While set, the step named in the input's `flaky` fails transiently.
    flaky: AtomicBool,
    /// While set, the compensation named in `bad_compensation` fails.
    bad_compensation: AtomicBool,
}

/// Every role's agent in the saga cases. A step named in the input's
/// `fail` fails permanently; devops publishes `deploy.complete` in
/// `build`, `deploy` and `release`, the cso `scan.done` in `scan`; the ceo refuses
/// (transiently) a `deploy.complete` until it has seen `scan.done`, so it
/// receives the chain's events out of order; the ceo decides an escalation
/// when the input says `ceo_decides` (retry, and the flaky step heals),
/// the cto accepts the step when it says `cto_accepts`, and passes the
/// rest up.
struct SagaAgent {
    role: &'static str,
    log: Arc<Log>,
    switches: Arc<Switches>,
}

impl SagaAgent {
    fn agent(role: &'static str, log: &Arc<Log>, switches: &Arc<Switches>) -> Arc<dyn Agent> {
        Arc::new(Self {
            role,
            log: Arc::clone(log),
            switches: Arc::clone(switches),
        })
    }
}

#[async_trait]
impl Agent for SagaAgent {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(Value::Null))
    }

    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        let name = step.step.as_str();
        self.log.push(self.role, format!("run:{name}"));
        if step.input["flaky"] == name && self.switches.flaky.load(Ordering::SeqCst) {
            return Err(AgentError::transient("the migration's outcome is unknown"));
        }
        if step.input["fail"] == name {
            return Err(AgentError::permanent(format!("{name} failed")));
        }
        match name {
            "build" | "deploy" | "release" => {
                cx.publish_event("deploy.complete", &json!({ "saga": step.saga_id }))?;
            }
            "scan" => {
                cx.publish_event("scan.done", &json!({ "saga": step.saga_id }))?;
            }
            _ => {}
        }
        let before: Vec<&String> = step.results.keys().collect();
        Ok(json!({ "step": name, "saw": before, "key": step.idempotency_key }))
    }

    async fn on_compensate(&self, _cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        let name = step.step.as_str();
        self.log.push(self.role, format!("comp:{name}"));
        if step.input["bad_compensation"] == name
            && self.switches.bad_compensation.load(Ordering::SeqCst)
        {
            return Err(AgentError::transient("the rollback API is down"));
        }
        Ok(())
    }

    async fn on_saga_escalation(
        &self,
        _cx: &Context,
        e: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError> {
        self.log.push(self.role, format!("esc:{}", e.step));
        if self.role == "ceo" && e.record.input["ceo_decides"] == true {
            self.switches.flaky.store(false, Ordering::SeqCst);
            return Ok(Some(SagaDecision::Retry));
        }
        if self.role == "cto" && e.record.input["cto_accepts"] == true {
            return Ok(Some(SagaDecision::Accept(json!("accepted by the cto"))));
        }
        Ok(None)
    }

    async fn on_event(&self, _cx: &Context, event: Event) -> Result<(), AgentError> {
        if self.role == "ceo"
            && event.name == "deploy.complete"
            && !self.log.at("ceo").contains(&"event:scan.done".to_owned())
        {
            return Err(AgentError::transient("waiting for the scan"));
        }
        self.log.push(self.role, format!("event:{}", event.name));
        Ok(())
    }
}

const ROLES: [&str; 5] = ["ceo", "cto", "devops", "cso", "marketing"];

async fn start_saga_org(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    roles: &[&'static str],
    log: &Arc<Log>,
    switches: &Arc<Switches>,
) -> Org {
    let agents = roles
        .iter()
        .map(|r| (*r, SagaAgent::agent(r, log, switches), 4))
        .collect();
    start_with(b, t, s, saga_chart(b, org), suite_config(), agents).await
}

async fn start_run(b: &str, p: &Principal, name: &str, input: Value) -> MessageId {
    p.start_saga(name, &input)
        .await
        .unwrap_or_else(|e| fail(b, format!("starting saga {name}: {e}")))
}

/// Waits until run `id` satisfies `done`.
async fn run_until(
    b: &str,
    p: &Principal,
    id: &MessageId,
    what: &str,
    done: impl Fn(&SagaRecord) -> bool + Send + Sync,
) -> SagaRecord {
    let rec = p
        .saga(id)
        .wait_for(EVENTUALLY, &done)
        .await
        .unwrap_or_else(|e| fail(b, format!("saga {id}: {e}")));
    if !done(&rec) {
        fail(b, format!("saga {id} never {what}: {rec:?}"));
    }
    rec
}

fn statuses(rec: &SagaRecord) -> Vec<(String, StepStatus)> {
    rec.steps
        .iter()
        .map(|s| (s.name.to_string(), s.status))
        .collect()
}

/// A chain runs step after step on each one's completion: the ceo receives
/// the chain's events out of order (`scan.done` before `deploy.complete`),
/// and the chain still ran build, scan, announce, each once, each seeing
/// the results of the steps before.
pub async fn chain_runs_in_order_whatever_order_events_arrive(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "chain_runs_in_order_whatever_order_events_arrive";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    let o = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = o.principal();
    let id = start_run(B, &p, "chain", json!({})).await;
    let rec = run_until(B, &p, &id, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    let runs: Vec<String> = log
        .all()
        .into_iter()
        .filter(|w| w.starts_with("run:"))
        .collect();
    if runs != ["run:build", "run:scan", "run:announce"] {
        fail(B, format!("the chain's steps ran as {runs:?}"));
    }
    let saw = |i: usize| rec.steps[i].result.as_ref().map(|r| r["saw"].clone());
    if saw(2) != Some(json!(["build", "scan"])) || saw(1) != Some(json!(["build"])) {
        fail(B, format!("the steps' inputs: {:?}", rec.steps));
    }
    let seen = p
        .saga(&id)
        .wait_for(EVENTUALLY, |_| log.at("ceo").len() >= 2)
        .await;
    if log.at("ceo").len() < 2 {
        fail(B, format!("the ceo's events: {:?} ({seen:?})", log.all()));
    }
    if log.at("ceo") != ["event:scan.done", "event:deploy.complete"] {
        fail(
            B,
            format!(
                "the ceo's events did not arrive out of order: {:?}",
                log.at("ceo")
            ),
        );
    }
    if !rec.compensations.is_empty() || rec.steps.iter().any(|s| s.runs != 1) {
        fail(B, format!("a chain that completed: {rec:?}"));
    }
    o.shutdown().await;
}

/// The CI/CD saga: without a failure every step completes once, in order;
/// when the smoke test fails, the completed steps are compensated in
/// reverse (deploy, then provision), each compensation publishes its
/// rollback event (which a subscriber receives), and the changelog never
/// runs.
pub async fn cicd_saga_compensates_in_reverse(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "cicd_saga_compensates_in_reverse";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    let o = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = o.principal();
    let ok = start_run(B, &p, "cicd", json!({ "version": "v1" })).await;
    let rec = run_until(B, &p, &ok, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    if rec
        .steps
        .iter()
        .any(|s| s.status != StepStatus::Completed || s.runs != 1)
    {
        fail(B, format!("the saga without failure: {:?}", statuses(&rec)));
    }
    let failing = start_run(
        B,
        &p,
        "cicd",
        json!({ "version": "v2", "fail": "smoke_test" }),
    )
    .await;
    let rec = run_until(B, &p, &failing, "compensated", |r| {
        r.status == SagaStatus::Compensated
    })
    .await;
    if rec.compensations != ["deploy", "provision"] {
        fail(B, format!("compensations ran as {:?}", rec.compensations));
    }
    let want = [
        ("provision", StepStatus::Compensated),
        ("deploy", StepStatus::Compensated),
        ("smoke_test", StepStatus::Failed),
        ("changelog", StepStatus::Pending),
    ];
    let got = statuses(&rec);
    if got
        .iter()
        .map(|(n, s)| (n.as_str(), *s))
        .collect::<Vec<_>>()
        != want
    {
        fail(B, format!("the steps after the failure: {got:?}"));
    }
    let events: Vec<&str> = rec
        .rollback_events
        .iter()
        .map(|r| r.event.as_str())
        .collect();
    if events != ["deploy.rollback", "infra.released"] {
        fail(B, format!("rollback events recorded: {events:?}"));
    }
    eventually(B, "the rollback events at marketing", || async {
        log.count("event:deploy.rollback") == 1 && log.count("event:infra.released") == 1
    })
    .await;
    if log.count("run:changelog") != 1 || log.count("comp:deploy") != 1 {
        fail(B, format!("what ran: {:?}", log.all()));
    }
    let listed = p.sagas().await.unwrap_or_else(|e| fail(B, e));
    if listed.len() != 2 || listed.iter().any(|r| !r.status.is_final()) {
        fail(B, format!("the listed runs: {listed:?}"));
    }
    o.shutdown().await;
}

/// A step whose attempts run out is in doubt: not compensated, escalated
/// up its role's line (the cto passes it up, the ceo decides to retry, and
/// the run completes with the step run twice); when no manager decides, it
/// reaches the principal, whose decision to compensate undoes the steps
/// before it.
pub async fn in_doubt_step_escalates_and_a_decision_resolves_it(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "in_doubt_step_escalates_and_a_decision_resolves_it";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    let o = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = o.principal();
    switches.flaky.store(true, Ordering::SeqCst);
    let decided = start_run(
        B,
        &p,
        "cicd",
        json!({ "flaky": "smoke_test", "ceo_decides": true }),
    )
    .await;
    let rec = run_until(B, &p, &decided, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    if rec.steps[2].runs != 2 || !rec.compensations.is_empty() {
        fail(B, format!("the decided run: {rec:?}"));
    }
    switches.flaky.store(true, Ordering::SeqCst);
    if log.at("cto") != ["esc:smoke_test"] || log.at("ceo").iter().all(|w| w != "esc:smoke_test") {
        fail(B, format!("the escalation's path: {:?}", log.all()));
    }
    // The cto accepts the step in doubt: the next step, on a role outside
    // the cto's line (marketing), runs.
    let accepted = start_run(
        B,
        &p,
        "cicd",
        json!({ "flaky": "smoke_test", "cto_accepts": true }),
    )
    .await;
    let rec = run_until(B, &p, &accepted, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    if rec.steps[2].result != Some(json!("accepted by the cto"))
        || rec.steps[3].status != StepStatus::Completed
    {
        fail(B, format!("the accepted run: {rec:?}"));
    }
    // No manager decides: the principal does.
    let undecided = start_run(B, &p, "cicd", json!({ "flaky": "smoke_test" })).await;
    let rec = run_until(B, &p, &undecided, "in doubt at the principal", |r| {
        r.status == SagaStatus::InDoubt
            && r.pending
                .as_ref()
                .is_some_and(|d| d.escalated_to == "founder")
    })
    .await;
    if rec.steps[2].status != StepStatus::InDoubt || rec.steps[1].status != StepStatus::Completed {
        fail(B, format!("in doubt: {:?}", statuses(&rec)));
    }
    let in_doubt = p.sagas().await.unwrap_or_else(|e| fail(B, e));
    if !in_doubt
        .iter()
        .any(|r| r.saga_id == undecided && r.status.needs_decision())
    {
        fail(
            B,
            "the in-doubt run is not listed as waiting for a decision",
        );
    }
    p.decide_saga(&undecided, SagaDecision::Compensate)
        .await
        .unwrap_or_else(|e| fail(B, format!("the principal's decision: {e}")));
    let rec = run_until(B, &p, &undecided, "compensated", |r| {
        r.status == SagaStatus::Compensated
    })
    .await;
    if rec.compensations != ["deploy", "provision"] {
        fail(B, format!("after the decision: {:?}", rec.compensations));
    }
    o.shutdown().await;
}

/// A compensation that keeps failing is retried, dead-lettered, and the run
/// shows it and escalates (here to the principal); requeuing the dead
/// letter once the rollback works finishes the compensation, once.
pub async fn failing_compensation_dead_letters_and_escalates(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "failing_compensation_dead_letters_and_escalates";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    let o = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = o.principal();
    switches.bad_compensation.store(true, Ordering::SeqCst);
    let id = start_run(
        B,
        &p,
        "cicd",
        json!({ "fail": "smoke_test", "bad_compensation": "deploy" }),
    )
    .await;
    let rec = run_until(B, &p, &id, "escalated to the principal", |r| {
        r.status == SagaStatus::CompensationFailed
            && r.pending
                .as_ref()
                .is_some_and(|d| d.escalated_to == "founder")
    })
    .await;
    if rec.steps[1].status != StepStatus::CompensationFailed
        || rec.steps[0].status != StepStatus::Completed
        || !rec.compensations.is_empty()
    {
        fail(B, format!("a failed compensation: {:?}", statuses(&rec)));
    }
    if log.count("comp:deploy") < 2 {
        fail(
            B,
            format!("the compensation was not retried: {:?}", log.all()),
        );
    }
    let dead = p
        .dead_letter_records()
        .await
        .unwrap_or_else(|e| fail(B, e))
        .into_iter()
        .find(|d| d.role == "devops" && d.reason_code == "attempts_exhausted")
        .unwrap_or_else(|| fail(B, "no dead letter of the compensation"));
    switches.bad_compensation.store(false, Ordering::SeqCst);
    p.requeue(&dead.dead_letter_id)
        .await
        .unwrap_or_else(|e| fail(B, format!("requeue: {e}")));
    let rec = run_until(B, &p, &id, "compensated", |r| {
        r.status == SagaStatus::Compensated
    })
    .await;
    if rec.compensations != ["deploy", "provision"] || rec.rollback_events.len() != 2 {
        fail(B, format!("after the requeue: {rec:?}"));
    }
    o.shutdown().await;
}

/// A gated step starts when its predecessor's event is processed by every
/// subscriber; when one subscriber is not running, the gate's deadline
/// passes (not before it) and the step takes its branch (skipped), and the
/// saga goes on.
pub async fn gated_step_takes_its_timeout_branch(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "gated_step_takes_its_timeout_branch";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    // The ceo (a subscriber of `deploy.complete`) must see `scan.done`
    // first: give it one, so it processes `deploy.complete` at once.
    let all = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = all.principal();
    let chain = start_run(B, &p, "chain", json!({})).await;
    run_until(B, &p, &chain, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    let open = start_run(B, &p, "gated", json!({})).await;
    let rec = run_until(B, &p, &open, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    let gate = rec.steps[1]
        .gate
        .clone()
        .unwrap_or_else(|| fail(B, "no gate recorded"));
    if rec.steps[1].status != StepStatus::Completed || gate.timed_out || gate.events.len() != 1 {
        fail(B, format!("the open gate: {rec:?}"));
    }
    all.shutdown().await;
    // Without the ceo, `deploy.complete` is never processed by all.
    let roles = ["cto", "devops", "cso", "marketing"];
    let some = start_saga_org(B, &t, &s, &org, &roles, &log, &switches).await;
    let p = some.principal();
    let shut = start_run(B, &p, "gated", json!({})).await;
    let rec = run_until(B, &p, &shut, "completed", |r| {
        r.status == SagaStatus::Completed
    })
    .await;
    let notify = &rec.steps[1];
    let gate = notify
        .gate
        .clone()
        .unwrap_or_else(|| fail(B, "no gate recorded"));
    if notify.status != StepStatus::Skipped || !gate.timed_out || notify.runs != 0 {
        fail(B, format!("the timed-out gate: {notify:?}"));
    }
    let (Some(released), Some(closed)) = (rec.steps[0].finished_at, rec.steps[2].started_at) else {
        fail(B, format!("times: {rec:?}"));
    };
    let waited = (closed - released).to_std().unwrap_or_default();
    if waited < GATE_WITHIN {
        fail(
            B,
            format!("the gate gave up after {waited:?}, before {GATE_WITHIN:?}"),
        );
    }
    some.shutdown().await;
}

/// A step past an irreversible one fails: the steps after the irreversible
/// one are compensated, then the saga is blocked and escalates; only
/// accepting it (as failed) applies, and the irreversible step is never
/// undone.
pub async fn irreversible_step_blocks_compensation_and_escalates(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "irreversible_step_blocks_compensation_and_escalates";
    let (log, switches) = (Arc::new(Log::default()), Arc::new(Switches::default()));
    let o = start_saga_org(B, &t, &s, &org, &ROLES, &log, &switches).await;
    let p = o.principal();
    let id = start_run(B, &p, "charge", json!({ "fail": "notify" })).await;
    let rec = run_until(B, &p, &id, "blocked at the principal", |r| {
        r.status == SagaStatus::Blocked
            && r.pending
                .as_ref()
                .is_some_and(|d| d.escalated_to == "founder")
    })
    .await;
    let pending = rec
        .pending
        .clone()
        .unwrap_or_else(|| fail(B, "no pending decision"));
    if rec.compensations != ["ship"]
        || rec.steps[0].status != StepStatus::Completed
        || pending.step != 2
        || rec.blocked_by.as_ref().is_none_or(|b| b != "charge")
    {
        fail(B, format!("the blocked run: {rec:?}"));
    }
    if log.count("comp:charge") != 0 || !log.at("ceo").contains(&"esc:notify".to_owned()) {
        fail(B, format!("what ran: {:?}", log.all()));
    }
    match p.decide_saga(&id, SagaDecision::Retry).await {
        Err(crate::saga::SagaError::InvalidDecision { .. }) => {}
        other => fail(B, format!("a retry of a blocked saga: {other:?}")),
    }
    p.decide_saga(&id, SagaDecision::Accept(Value::Null))
        .await
        .unwrap_or_else(|e| fail(B, format!("accepting: {e}")));
    let rec = run_until(B, &p, &id, "failed", |r| r.status == SagaStatus::Failed).await;
    if rec.pending.is_some() {
        fail(B, format!("a decided run still pending: {rec:?}"));
    }
    o.shutdown().await;
}
