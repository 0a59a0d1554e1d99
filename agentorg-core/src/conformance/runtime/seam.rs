//! The seam: a pattern registered from outside the kernel is hosted,
//! claimed, retried, dead-lettered and timed like the built-in ones; and a
//! role's code reaches only its own namespace of the store.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;

use super::super::fail;
use super::{eventually, start, suite_chart, suite_config, wait_done, Scripted};
use crate::agent::{AgentError, Outcome};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::runtime::{
    role_collection, Claimed, Context, DeadLetterRecord, DeadLetterStatus, Effects, Fault, Handler,
    HostedRole, Kernel, KernelAccess, Org, Pattern, Prepared, Reason, Registry, Settle,
    TimerHandler, TimerRecord,
};
use crate::store::{CollectionPath, Precondition, StateStore, StoreError, Write};
use crate::subject::{Route, SubjectPattern, Subjects};
use crate::transport::Transport;
use crate::transport::TransportExt;

/// A pattern of a few dozen lines, registered from outside the kernel:
/// role `x` takes pings on `<org>.events.ping` on a consumer of its own,
/// fails each ping `fail_times` times, records it in its namespace, refuses
/// `refuse` pings, and arms a timer that writes a note when it fires.
struct Pings;

impl Pattern for Pings {
    fn name(&self) -> &'static str {
        "pings"
    }

    fn register(&self, registry: &mut Registry) {
        let access = registry.kernel_access();
        registry
            .handler(PingHandler { access })
            .timer("ping", PingTimer);
    }
}

struct PingHandler {
    access: KernelAccess,
}

/// An operation the ping pattern adds to every handler's context: a note in
/// the org's shared `pings-seen` collection, staged with the call's outcome.
trait SeenPings {
    fn saw_ping(&self, access: &KernelAccess) -> Result<(), StoreError>;
}

impl SeenPings for Context {
    fn saw_ping(&self, access: &KernelAccess) -> Result<(), StoreError> {
        let k = access.kernel(self);
        let key = k
            .collection("pings-seen")?
            .doc(self.envelope().id.as_str())?;
        let write = Write::put(key, json!({"by": self.role()}), Precondition::None);
        access.with_effects(self, |effects, _| {
            effects.write(write);
        });
        Ok(())
    }
}

fn note(k: &Kernel, role: &Name, what: &str, id: &str) -> Result<Write, StoreError> {
    let key = role_collection(k.org(), role, what)?.doc(id)?;
    Ok(Write::put(key, json!({"at": k.now()}), Precondition::None))
}

#[async_trait]
impl Handler for PingHandler {
    fn name(&self) -> &'static str {
        "pings"
    }

    fn consumer(&self) -> &'static str {
        "ping"
    }

    fn subjects(&self, s: &Subjects, _chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        if role != "x" {
            return Vec::new();
        }
        s.events_matching("ping").into_iter().collect()
    }

    fn admit(&self, _role: &HostedRole, env: &Envelope, _route: &Route) -> Result<(), Reason> {
        match env.payload["refuse"].as_bool() {
            Some(true) => Err(Reason::new("refused_ping", "this ping asked to be refused")),
            _ => Ok(()),
        }
    }

    /// A note that the ping was claimed, committed with the claim; the
    /// ping's id comes back to `handle`.
    async fn prepare(&self, k: &Kernel, role: &Name, env: &Envelope) -> Result<Prepared, Fault> {
        let write = note(k, role, "ping-claimed", env.id.as_str())?;
        Ok(Prepared::new(env.id.clone(), vec![write]))
    }

    async fn handle(&self, d: Claimed<'_>) -> Result<Settle, Fault> {
        let (k, role, env) = (d.kernel(), d.role().clone(), d.envelope().clone());
        // What `prepare` noted, with the version its write got.
        let prepared = d
            .prepared::<MessageId>()
            .is_some_and(|(id, versions)| id == &env.id && matches!(versions, [Some(_)]));
        let fail_times = env.payload["fail_times"].as_u64().unwrap_or(0);
        let attempt = u64::from(d.attempt());
        let ran = d
            .run(async move {
                if attempt <= fail_times {
                    return Err(AgentError::transient(format!(
                        "ping failed on attempt {attempt}"
                    )));
                }
                Ok(attempt)
            })
            .await;
        let attempt = match ran {
            Ok(a) => a,
            Err(e) => return d.retry_or_dead_letter(e, Some(&env.id)).await,
        };
        // The application's side of the pattern: a context operation that
        // stages shared state, committed with everything else.
        let cx = d.context(Some(env.id.clone()));
        cx.saw_ping(&self.access)?;
        let (mut effects, _) = self.access.take_effects(&cx);
        let key = role_collection(k.org(), &role, "pings")?.doc(env.id.as_str())?;
        let attempt = if prepared {
            json!(attempt)
        } else {
            json!("no prepared note")
        };
        effects.write(Write::put(
            key,
            json!({ "attempt": attempt }),
            Precondition::MustNotExist,
        ));
        let kind = Name::new("ping").map_err(|e| Fault::Permanent(e.to_string()))?;
        let timer = TimerRecord::new(kind, role, env.id.as_str(), k.now(), json!(null));
        effects.write(k.arm_timer(&timer)?);
        d.commit_all(effects).await
    }

    async fn dead_lettered(
        &self,
        k: &Kernel,
        role: &Name,
        item: &MessageId,
        _reason: &Reason,
    ) -> Result<Option<Effects>, Fault> {
        let mut effects = Effects::new();
        effects.write(note(k, role, "ping-dead", item.as_str())?);
        Ok(Some(effects))
    }

    async fn discarded(&self, k: &Kernel, rec: &DeadLetterRecord) -> Result<Effects, StoreError> {
        let mut effects = Effects::new();
        if let Some(item) = &rec.task_id {
            effects.write(note(k, &rec.role, "ping-discarded", item.as_str())?);
        }
        Ok(effects)
    }
}

struct PingTimer;

#[async_trait]
impl TimerHandler for PingTimer {
    async fn fire(&self, k: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let mut effects = Effects::new();
        effects.write(note(k, &timer.owner, "ping-timer", &timer.key)?);
        Ok(effects)
    }
}

async fn exists(b: &str, s: &Arc<dyn StateStore>, c: &CollectionPath, id: &str) -> bool {
    let key = c.doc(id).unwrap_or_else(|e| fail(b, e));
    s.get(&key).await.unwrap_or_else(|e| fail(b, e)).is_some()
}

/// A pattern registered from outside the kernel (a test's few dozen lines)
/// gets a consumer of its own for its hosted role, and its deliveries are
/// claimed (with what its `prepare` writes, committed with the claim, and
/// its note handed to `handle`) and committed once, retried with backoff on a transient failure,
/// refused by its admission, and dead-lettered when their attempts run out —
/// with its own records committed along, and its dead letters discarded
/// through it; a timer it arms fires once.
pub async fn a_registered_pattern_is_claimed_retried_and_dead_lettered(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_registered_pattern_is_claimed_retried_and_dead_lettered";
    // `x` hosts an agent (the default patterns, on its inbox consumer) and
    // the ping pattern (on a consumer of its own), with concurrency 1: both
    // consumers are served.
    let o = Org::builder(suite_chart(&org))
        .transport(Arc::clone(&t))
        .store(Arc::clone(&s))
        .config(suite_config())
        .pattern(Pings)
        .agent("x", Scripted::completing())
        .start()
        .await
        .unwrap_or_else(|e| fail(B, e));
    eventually(B, "x's consumers bound", || async { o.is_ready() }).await;
    let task = super::delegate(B, &o, "x", "a task beside the pings").await;
    let subject = o
        .subjects()
        .event(&[Name::new("ping").unwrap_or_else(|e| fail(B, e))]);
    let p = Name::new("p").unwrap_or_else(|e| fail(B, e));
    let ping =
        |payload: serde_json::Value| Envelope::new(org.clone(), p.clone(), Kind::Event, payload);
    let (ok, flaky, poison, refused) = (
        ping(json!({})),
        ping(json!({"fail_times": 1})),
        ping(json!({"fail_times": 99})),
        ping(json!({"refuse": true})),
    );
    for env in [&ok, &flaky, &poison, &refused] {
        t.publish_envelope(&subject, env)
            .await
            .unwrap_or_else(|e| fail(B, e));
    }
    let x = Name::new("x").unwrap_or_else(|e| fail(B, e));
    let pings = role_collection(&org, &x, "pings").unwrap_or_else(|e| fail(B, e));
    let timers = role_collection(&org, &x, "ping-timer").unwrap_or_else(|e| fail(B, e));
    let dead = role_collection(&org, &x, "ping-dead").unwrap_or_else(|e| fail(B, e));
    let attempt_of = |id: MessageId| {
        let (s, pings) = (Arc::clone(&s), pings.clone());
        async move {
            let key = pings.doc(id.as_str()).ok()?;
            s.get(&key)
                .await
                .ok()
                .flatten()
                .map(|d| d.value["attempt"].clone())
        }
    };
    eventually(B, "the plain ping processed on attempt 1", || async {
        attempt_of(ok.id.clone()).await == Some(json!(1))
    })
    .await;
    eventually(
        B,
        "the flaky ping retried, then processed on attempt 2",
        || async { attempt_of(flaky.id.clone()).await == Some(json!(2)) },
    )
    .await;
    if wait_done(B, &o, &task).await.status != TaskStatus::Completed {
        fail(B, "x's task did not complete beside its pings");
    }
    let claimed = role_collection(&org, &x, "ping-claimed").unwrap_or_else(|e| fail(B, e));
    if !exists(B, &s, &claimed, ok.id.as_str()).await
        || !exists(B, &s, &claimed, flaky.id.as_str()).await
    {
        fail(B, "what prepare wrote was not committed with the claim");
    }
    let seen = crate::runtime::org_collection(&org, "pings-seen").unwrap_or_else(|e| fail(B, e));
    if !exists(B, &s, &seen, ok.id.as_str()).await || !exists(B, &s, &seen, flaky.id.as_str()).await
    {
        fail(
            B,
            "the shared notes a context operation staged were not committed",
        );
    }
    eventually(B, "each processed ping's timer fired", || async {
        exists(B, &s, &timers, ok.id.as_str()).await
            && exists(B, &s, &timers, flaky.id.as_str()).await
    })
    .await;
    eventually(
        B,
        "the poison ping dead-lettered with the pattern's record",
        || async { exists(B, &s, &dead, poison.id.as_str()).await },
    )
    .await;
    let records = || async {
        o.principal()
            .dead_letter_records()
            .await
            .unwrap_or_else(|e| fail(B, e))
    };
    eventually(B, "two dead-letter records", || async {
        records().await.len() == 2
    })
    .await;
    let all = records().await;
    let of = |id: &MessageId| {
        all.iter()
            .find(|r| r.original_id.as_ref() == Some(id))
            .cloned()
    };
    match of(&poison.id) {
        Some(r)
            if r.reason_code == "attempts_exhausted"
                && r.attempts == 3
                && r.role == "x"
                && r.task_id.as_ref() == Some(&poison.id) => {}
        other => fail(B, format!("the poison ping's dead letter: {other:?}")),
    }
    match of(&refused.id) {
        Some(r) if r.reason_code == "refused_ping" && r.attempts == 0 => {}
        other => fail(B, format!("the refused ping's dead letter: {other:?}")),
    }
    if attempt_of(poison.id.clone()).await.is_some()
        || attempt_of(refused.id.clone()).await.is_some()
    {
        fail(B, "a dead-lettered ping was recorded as processed");
    }
    if exists(B, &s, &claimed, refused.id.as_str()).await {
        fail(B, "a ping refused before its claim was prepared");
    }
    let dl = of(&poison.id)
        .map(|r| r.dead_letter_id)
        .unwrap_or_else(|| fail(B, "no poison dead letter"));
    o.principal()
        .discard(&dl)
        .await
        .unwrap_or_else(|e| fail(B, e));
    let discarded = role_collection(&org, &x, "ping-discarded").unwrap_or_else(|e| fail(B, e));
    if !exists(B, &s, &discarded, poison.id.as_str()).await {
        fail(
            B,
            "the pattern's discard hook did not commit with the discard",
        );
    }
    if records()
        .await
        .iter()
        .find(|r| r.dead_letter_id == dl)
        .map(|r| r.status)
        != Some(DeadLetterStatus::Discarded)
    {
        fail(B, "the dead letter is not discarded");
    }
    o.shutdown().await;
}

/// A role's code reads and writes only its own namespace: the store its
/// context gives refuses other roles' and the org's records before any
/// store call, and so does staging a write; its own namespace works.
pub async fn a_role_reaches_only_its_own_namespace(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_role_reaches_only_its_own_namespace";
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&refusals);
    let runs = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&runs);
    let x = crate::agent::agent_fn_cx(move |cx, _task| {
        let seen = Arc::clone(&seen);
        let count = Arc::clone(&count);
        Box::pin(async move {
            count.fetch_add(1, Ordering::SeqCst);
            let org = cx.org().clone();
            let y = Name::new("y").map_err(|e| AgentError::permanent(e.to_string()))?;
            let theirs = role_collection(&org, &y, "notes")?.doc("a")?;
            let shared = CollectionPath::new(format!("agentorg/{org}/tasks"))?.doc("t")?;
            let mine = cx.collection("notes")?.doc("a")?;
            let mut refused = Vec::new();
            for key in [&theirs, &shared] {
                refused.push(matches!(
                    cx.store().get(key).await,
                    Err(StoreError::Forbidden { .. })
                ));
                refused.push(matches!(
                    cx.stage(Write::put(key.clone(), json!(1), Precondition::None)),
                    Err(StoreError::Forbidden { .. })
                ));
            }
            refused.push(matches!(
                cx.store()
                    .list(&theirs.collection().clone(), Default::default())
                    .await,
                Err(StoreError::Forbidden { .. })
            ));
            if let Ok(mut s) = seen.lock() {
                s.extend(refused);
            }
            cx.store().get(&mine).await?;
            cx.stage(Write::put(mine, json!({"mine": true}), Precondition::None))?;
            Ok(Outcome::Complete(json!("ok")))
        })
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(x))]).await;
    let id = super::delegate(B, &o, "x", "touch the store").await;
    let rec = wait_done(B, &o, &id).await;
    if rec.status != TaskStatus::Completed {
        fail(
            B,
            format!("the task ended {} ({:?})", rec.status, rec.error),
        );
    }
    let seen = refusals.lock().map(|r| r.clone()).unwrap_or_default();
    if seen.len() != 5 || seen.iter().any(|r| !r) {
        fail(
            B,
            format!("refused (get/stage other role, get/stage org, list other role): {seen:?}"),
        );
    }
    let x = Name::new("x").unwrap_or_else(|e| fail(B, e));
    let mine = role_collection(&org, &x, "notes").unwrap_or_else(|e| fail(B, e));
    if !exists(B, &s, &mine, "a").await {
        fail(B, "the write to its own namespace was not committed");
    }
    if runs.load(Ordering::SeqCst) != 1 {
        fail(B, "the handler ran more than once");
    }
    o.shutdown().await;
}
