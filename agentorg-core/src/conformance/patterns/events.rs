//! Events: declared publishers, durable subscriptions, refusals, keys and
//! requeues.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::chart::{OrgChart, RoleSpec};
use crate::envelope::{Envelope, Kind};
use crate::events::{Event, EventError, ReceiptStatus};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::store::StateStore;
use crate::transport::{Transport, TransportExt};

use super::super::fail;
use super::suite_config;
use super::support::*;

/// The events chart: founder → ceo, devops, marketing, cso; devops
/// publishes `deploy.complete` and `deploy.rollback`; the ceo and the cso
/// subscribe to `deploy.complete`; marketing to `deploy.*` when
/// `marketing_subscribes`;
/// `deploy.complete` has a schema (a string `version` is required); the
/// ceo also subscribes to the runtime's `sla.breach`.
fn events_chart(b: &str, org: &Name, marketing_subscribes: bool) -> OrgChart {
    let marketing = RoleSpec::new("marketing").reports_to("founder");
    let marketing = if marketing_subscribes {
        marketing.subscribes(["deploy.*", "deploy.complete"])
    } else {
        marketing
    };
    OrgChart::builder(org.as_str())
        .principal("founder")
        .role(
            RoleSpec::new("ceo")
                .reports_to("founder")
                .subscribes(["deploy.complete", "sla.breach"]),
        )
        .role(
            RoleSpec::new("devops")
                .reports_to("founder")
                .publishes(["deploy.complete", "deploy.rollback"]),
        )
        .role(marketing)
        .role(
            RoleSpec::new("cso")
                .reports_to("founder")
                .subscribes(["deploy.complete"]),
        )
        .event_schema(
            "deploy.complete",
            json!({
                "type": "object",
                "required": ["version"],
                "properties": { "version": { "type": "string" } }
            }),
        )
        .build()
        .unwrap_or_else(|e| fail(b, e))
}

/// What subscribers saw: (role, event).
#[derive(Default)]
struct Seen(Mutex<Vec<(String, Event)>>);

impl Seen {
    fn at(&self, role: &str) -> Vec<Event> {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|(r, _)| r == role)
                    .map(|(_, e)| e.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn versions_at(&self, role: &str) -> Vec<String> {
        self.at(role)
            .iter()
            .map(|e| e.payload["version"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

/// A subscriber that records what it gets; while `poisoned`, it fails
/// every event permanently.
struct Subscriber {
    role: &'static str,
    seen: Arc<Seen>,
    poisoned: Arc<AtomicBool>,
}

impl Subscriber {
    fn new(role: &'static str, seen: &Arc<Seen>) -> Arc<Self> {
        Arc::new(Self {
            role,
            seen: Arc::clone(seen),
            poisoned: Arc::default(),
        })
    }
}

#[async_trait]
impl Agent for Subscriber {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(Value::Null))
    }
    async fn on_event(&self, _cx: &Context, event: Event) -> Result<(), AgentError> {
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(AgentError::permanent("cannot take this event now"));
        }
        if let Ok(mut v) = self.seen.0.lock() {
            v.push((self.role.to_owned(), event));
        }
        Ok(())
    }
}

/// Publishes `deploy.complete` with the task's input; reports any refusal
/// of the other publishes it tries.
struct Devops(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Agent for Devops {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let mut notes = Vec::new();
        if task.input["try_refused"].as_bool() == Some(true) {
            notes.push(match cx.publish_event("deploy.started", &json!({})) {
                Err(EventError::NotDeclared { role, event }) => {
                    format!("undeclared {event} by {role}: refused")
                }
                other => format!("undeclared: {other:?}"),
            });
            notes.push(
                match cx.publish_event("deploy.complete", &json!({ "version": 7 })) {
                    Err(EventError::Schema { event, .. }) => format!("schema of {event}: refused"),
                    other => format!("schema: {other:?}"),
                },
            );
        }
        cx.publish_event("deploy.complete", &task.input["event"])?;
        if let Ok(mut n) = self.0.lock() {
            n.extend(notes);
        }
        Ok(Outcome::Complete(json!("deployed")))
    }
}

async fn deploy(b: &str, o: &crate::runtime::Org, version: &str, try_refused: bool) {
    let spec = TaskSpec::new(format!("Deploy {version}")).input(json!({
        "event": { "version": version },
        "try_refused": try_refused,
    }));
    let h = delegate(b, &o.principal(), "devops", spec).await;
    if wait_done(b, &h).await.status != TaskStatus::Completed {
        fail(b, format!("the deploy of {version} did not complete"));
    }
}

/// Durable subscriptions: every subscriber gets each event once, in order;
/// a subscriber whose process was down gets, when it is back, what was
/// published meanwhile; a subscriber added to the chart later needs no
/// change at the publisher and gets nothing published before it existed.
pub async fn events_reach_subscribers_durably(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "events_reach_subscribers_durably";
    let seen = Arc::new(Seen::default());
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let without_marketing = || events_chart(B, &org, false);
    // The publisher's process runs the first chart throughout.
    let devops = start_with(
        B,
        &t,
        &s,
        without_marketing(),
        suite_config(),
        vec![("devops", Arc::new(Devops(Arc::clone(&notes))), 1)],
    )
    .await;
    // The ceo's process subscribes, then stops.
    let ceo = start_with(
        B,
        &t,
        &s,
        without_marketing(),
        suite_config(),
        vec![("ceo", Subscriber::new("ceo", &seen), 1)],
    )
    .await;
    deploy(B, &devops, "v1", false).await;
    eventually(B, "v1 at the ceo", || async {
        seen.versions_at("ceo") == ["v1"]
    })
    .await;
    ceo.shutdown().await;
    deploy(B, &devops, "v2", false).await;
    // A deploy is done once its outcome is committed, and the event
    // committed with it is published right after; a subscription starts
    // where the stream is when it is created. So v2 must be stored before
    // marketing joins: then it waits, undelivered, on the stopped ceo's
    // subscription.
    eventually(B, "v2 stored, held for the stopped ceo", || async {
        ceo.health_now()
            .await
            .iter()
            .filter(|h| h.role == "ceo")
            .flat_map(|h| &h.backlog)
            .filter(|b| b.handlers.contains(&"events"))
            .map(|b| b.lag.undelivered)
            .sum::<u64>()
            == 1
    })
    .await;
    // Marketing joins: its chart subscribes it; the publisher's does not
    // change.
    let marketing = start_with(
        B,
        &t,
        &s,
        events_chart(B, &org, true),
        suite_config(),
        vec![("marketing", Subscriber::new("marketing", &seen), 1)],
    )
    .await;
    deploy(B, &devops, "v3", false).await;
    eventually(B, "v3 at marketing", || async {
        seen.versions_at("marketing") == ["v3"]
    })
    .await;
    // The ceo comes back and gets what it missed.
    let ceo = start_with(
        B,
        &t,
        &s,
        without_marketing(),
        suite_config(),
        vec![("ceo", Subscriber::new("ceo", &seen), 1)],
    )
    .await;
    eventually(B, "v2 and v3 at the ceo after its restart", || async {
        seen.versions_at("ceo").len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    if seen.versions_at("ceo") != ["v1", "v2", "v3"] {
        fail(
            B,
            format!("events at the ceo: {:?}", seen.versions_at("ceo")),
        );
    }
    if seen.versions_at("marketing") != ["v3"] {
        fail(
            B,
            format!(
                "events at marketing (joined after v2): {:?}",
                seen.versions_at("marketing")
            ),
        );
    }
    for e in seen.at("ceo").iter().chain(&seen.at("marketing")) {
        if e.name != "deploy.complete" || e.from != "devops" {
            fail(B, format!("an event as received: {e:?}"));
        }
    }
    for o in [devops, ceo, marketing] {
        o.shutdown().await;
    }
}

/// Refusals: an undeclared name and a payload failing the name's schema
/// are refused at the publisher before the transport (nothing reaches the
/// subject); an event whose `from` is not a declared publisher of its name
/// is dead-lettered `not_allowed` at the subscriber, unrun; the principal
/// may publish a declared event, not an undeclared one; the runtime's own
/// `sla.breach` is taken from any role of the chart, without receipts.
pub async fn events_refused_when_undeclared_spoofed_or_invalid(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "events_refused_when_undeclared_spoofed_or_invalid";
    let seen = Arc::new(Seen::default());
    let notes: Arc<Mutex<Vec<String>>> = Arc::default();
    let o = start_with(
        B,
        &t,
        &s,
        events_chart(B, &org, true),
        suite_config(),
        vec![
            ("devops", Arc::new(Devops(Arc::clone(&notes))), 1),
            ("ceo", Subscriber::new("ceo", &seen), 1),
            ("marketing", Subscriber::new("marketing", &seen), 1),
        ],
    )
    .await;
    let subjects = o.subjects().clone();
    let started = [name(B, "deploy"), name(B, "started")];
    let mut undeclared = tap(B, &t, subjects.event(&started)).await;
    deploy(B, &o, "v1", true).await;
    let got = notes.lock().map(|n| n.clone()).unwrap_or_default();
    if got
        != [
            "undeclared deploy.started by devops: refused",
            "schema of deploy.complete: refused",
        ]
    {
        fail(B, format!("the devops' refused publishes: {got:?}"));
    }
    if !drain(&mut undeclared, Duration::from_millis(200))
        .await
        .is_empty()
    {
        fail(B, "an undeclared event reached the transport");
    }
    eventually(B, "v1 at both subscribers", || async {
        seen.versions_at("ceo") == ["v1"] && seen.versions_at("marketing") == ["v1"]
    })
    .await;
    // A spoofed publisher: the cso declares no events.
    let complete = [name(B, "deploy"), name(B, "complete")];
    let spoofed = Envelope::new(
        org.clone(),
        name(B, "cso"),
        Kind::Event,
        json!({ "version": "evil" }),
    );
    if let Err(e) = t
        .publish_envelope(&subjects.event(&complete), &spoofed)
        .await
    {
        fail(B, e);
    }
    let p = o.principal();
    let dl = dead_letter_of(B, &p, &spoofed.id).await;
    if dl.reason_code != "not_allowed" {
        fail(B, format!("the spoofed event's dead letter: {dl:?}"));
    }
    // The principal: a declared event goes through, an undeclared one not.
    match p
        .publish_event("deploy.complete", &json!({ "version": "v2" }))
        .await
    {
        Ok(_) => {}
        Err(e) => fail(B, format!("the principal's declared event: {e}")),
    }
    match p.publish_event("deploy.started", &json!({})).await {
        Err(EventError::NotDeclared { .. }) => {}
        other => fail(B, format!("the principal's undeclared event: {other:?}")),
    }
    eventually(B, "v2 at both subscribers", || async {
        seen.versions_at("ceo") == ["v1", "v2"] && seen.versions_at("marketing") == ["v1", "v2"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    if seen.versions_at("ceo").contains(&"evil".to_owned())
        || seen.versions_at("marketing").contains(&"evil".to_owned())
    {
        fail(B, "a spoofed event was handled");
    }
    // The runtime's own `sla.breach` may come from any role of the chart
    // (the delegator of the late task), and has no receipts.
    let breach = Envelope::new(
        org.clone(),
        name(B, "cso"),
        Kind::Event,
        json!({ "event": "sla.breach" }),
    );
    let sla = [name(B, "sla"), name(B, "breach")];
    if let Err(e) = t.publish_envelope(&subjects.event(&sla), &breach).await {
        fail(B, e);
    }
    eventually(B, "the sla.breach at the ceo", || async {
        seen.at("ceo")
            .iter()
            .any(|e| e.name == "sla.breach" && e.id == breach.id)
    })
    .await;
    match p.receipts(&breach.id).now().await {
        Err(EventError::Unknown { .. }) => {}
        other => fail(B, format!("receipts of an sla.breach: {other:?}")),
    }
    o.shutdown().await;
}

/// Keys and dead letters: the same idempotency key published twice is one
/// event to each subscriber; an event a subscriber fails is dead-lettered
/// for that subscriber alone, and requeued it reaches that subscriber
/// again, with its id as published (not the others, who had it).
pub async fn events_once_per_key_and_requeued_after_dead_letter(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "events_once_per_key_and_requeued_after_dead_letter";
    let seen = Arc::new(Seen::default());
    let marketing = Subscriber::new("marketing", &seen);
    let o = start_with(
        B,
        &t,
        &s,
        events_chart(B, &org, true),
        suite_config(),
        vec![
            ("ceo", Subscriber::new("ceo", &seen), 1),
            ("marketing", Arc::clone(&marketing) as Arc<dyn Agent>, 1),
        ],
    )
    .await;
    let p = o.principal();
    let payload = json!({ "version": "webhook-1" });
    let first = p
        .publish_event_once("deploy.complete", &payload, "gh-delivery-1")
        .await
        .unwrap_or_else(|e| fail(B, e));
    let second = p
        .publish_event_once("deploy.complete", &payload, "gh-delivery-1")
        .await
        .unwrap_or_else(|e| fail(B, e));
    if first != second {
        fail(B, format!("one key, two event ids: {first} and {second}"));
    }
    eventually(B, "the keyed event at both subscribers", || async {
        !seen.at("ceo").is_empty() && !seen.at("marketing").is_empty()
    })
    .await;
    // Marketing fails the next event for good: dead-lettered for it alone.
    marketing.poisoned.store(true, Ordering::SeqCst);
    let poison = p
        .publish_event("deploy.complete", &json!({ "version": "v-poison" }))
        .await
        .unwrap_or_else(|e| fail(B, e));
    let dl = dead_letter_of(B, &p, &poison).await;
    if dl.role != "marketing" {
        fail(B, format!("the poisoned event's dead letter: {dl:?}"));
    }
    eventually(B, "the poisoned event at the ceo", || async {
        seen.versions_at("ceo").len() == 2
    })
    .await;
    marketing.poisoned.store(false, Ordering::SeqCst);
    p.requeue(&dl.dead_letter_id)
        .await
        .unwrap_or_else(|e| fail(B, e));
    eventually(B, "the requeued event at marketing", || async {
        seen.versions_at("marketing") == ["webhook-1", "v-poison"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The requeued event comes with its id as published.
    let ids: Vec<_> = seen.at("marketing").iter().map(|e| e.id.clone()).collect();
    if ids != [first.clone(), poison.clone()] {
        fail(
            B,
            format!("event ids at marketing: {ids:?}, published {first}, {poison}"),
        );
    }
    if seen.versions_at("ceo") != ["webhook-1", "v-poison"]
        || seen.versions_at("marketing") != ["webhook-1", "v-poison"]
    {
        fail(
            B,
            format!(
                "events: ceo {:?}, marketing {:?}",
                seen.versions_at("ceo"),
                seen.versions_at("marketing")
            ),
        );
    }
    o.shutdown().await;
}

/// Receipts: an event's subscribers are fixed at its publish; each records
/// what it did — processed, dead-lettered — and the receipts name the
/// subscribers that have not processed it (one that dead-lettered it, one
/// whose process never ran); requeued, the dead-lettered one's receipt
/// becomes processed.
pub async fn event_receipts_name_who_did_not_process(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "event_receipts_name_who_did_not_process";
    let seen = Arc::new(Seen::default());
    let marketing = Subscriber::new("marketing", &seen);
    marketing.poisoned.store(true, Ordering::SeqCst);
    // The cso subscribes but no process hosts it.
    let o = start_with(
        B,
        &t,
        &s,
        events_chart(B, &org, true),
        suite_config(),
        vec![
            ("ceo", Subscriber::new("ceo", &seen), 1),
            ("marketing", Arc::clone(&marketing) as Arc<dyn Agent>, 1),
        ],
    )
    .await;
    let p = o.principal();
    let id = p
        .publish_event("deploy.complete", &json!({ "version": "r1" }))
        .await
        .unwrap_or_else(|e| fail(B, e));
    let receipts = p.receipts(&id);
    let got = eventually_some(
        B,
        "the ceo's and marketing's receipts",
        super::super::EVENTUALLY,
        Duration::from_millis(50),
        || async {
            let r = receipts.wait(Duration::from_millis(200)).await.ok()?;
            let status = |role: &str| {
                r.receipts
                    .iter()
                    .find(|x| x.subscriber == role)
                    .map(|x| x.status)
            };
            (status("ceo") == Some(ReceiptStatus::Processed)
                && status("marketing") == Some(ReceiptStatus::DeadLettered))
            .then_some(r)
        },
    )
    .await;
    let names = |v: &[Name]| v.iter().map(Name::to_string).collect::<Vec<_>>();
    if names(&got.subscribers) != ["ceo", "cso", "marketing"]
        || names(&got.not_processed) != ["cso", "marketing"]
        || got.name != "deploy.complete"
        || got.receipts.len() != 2
        || got.all_processed()
    {
        fail(B, format!("the receipts: {got:?}"));
    }
    let dead = got
        .receipts
        .iter()
        .find(|r| r.subscriber == "marketing")
        .and_then(|r| r.reason.clone())
        .unwrap_or_default();
    if !dead.contains("cannot take this event now") {
        fail(
            B,
            format!("marketing's dead-letter receipt reason: {dead:?}"),
        );
    }
    // Requeued, marketing processes it: its receipt says so.
    marketing.poisoned.store(false, Ordering::SeqCst);
    let dl = dead_letter_of(B, &p, &id).await;
    p.requeue(&dl.dead_letter_id)
        .await
        .unwrap_or_else(|e| fail(B, e));
    let after = eventually_some(
        B,
        "marketing's receipt processed after the requeue",
        super::super::EVENTUALLY,
        Duration::from_millis(50),
        || async {
            let r = receipts.now().await.ok()?;
            (names(&r.not_processed) == ["cso"]).then_some(r)
        },
    )
    .await;
    if seen.versions_at("marketing") != ["r1"] || seen.versions_at("ceo") != ["r1"] {
        fail(
            B,
            format!(
                "handled: ceo {:?}, marketing {:?}; receipts {after:?}",
                seen.versions_at("ceo"),
                seen.versions_at("marketing")
            ),
        );
    }
    // An unknown event has no receipts.
    match p.receipts(&crate::envelope::MessageId::new()).now().await {
        Err(EventError::Unknown { .. }) => {}
        other => fail(B, format!("receipts of an unknown event: {other:?}")),
    }
    o.shutdown().await;
}

/// Retention (paused clock): an event's receipts and record, and the
/// record of its idempotency key, are deleted by a kernel timer
/// [`RECEIPT_RETENTION`](crate::events::RECEIPT_RETENTION) after its
/// publish, not before.
pub async fn event_receipts_expire_after_retention(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "event_receipts_expire_after_retention";
    let seen = Arc::new(Seen::default());
    // An hourly sweep: a week of virtual time stays cheap.
    let config = suite_config().with_sweep(Duration::from_secs(3600), Duration::from_millis(500));
    let o = start_with(
        B,
        &t,
        &s,
        events_chart(B, &org, false),
        config,
        vec![("ceo", Subscriber::new("ceo", &seen), 1)],
    )
    .await;
    let p = o.principal();
    let id = p
        .publish_event("deploy.complete", &json!({ "version": "old" }))
        .await
        .unwrap_or_else(|e| fail(B, e));
    // And one with an idempotency key: the key goes with the receipts.
    let keyed = p
        .publish_event_once("deploy.complete", &json!({ "version": "hook" }), "hook-1")
        .await
        .unwrap_or_else(|e| fail(B, e));
    let key_doc = crate::runtime::role_collection(&org, p.name(), "event-keys")
        .and_then(|c| c.doc(keyed.as_str()))
        .unwrap_or_else(|e| fail(B, e));
    let key_kept = || async {
        match s.get(&key_doc).await {
            Ok(doc) => doc.is_some(),
            Err(e) => fail(B, e),
        }
    };
    if !key_kept().await {
        fail(B, "the idempotency key was not recorded");
    }
    let receipts = p.receipts(&id);
    eventually(B, "the ceo's receipt", || async {
        receipts
            .now()
            .await
            .is_ok_and(|r| r.not_processed.iter().all(|n| n != "ceo"))
    })
    .await;
    let retention = crate::events::RECEIPT_RETENTION;
    tokio::time::sleep(retention - Duration::from_secs(3600)).await;
    if receipts.now().await.is_err() || !key_kept().await {
        fail(
            B,
            "the receipts or the key went before their retention ended",
        );
    }
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    eventually(B, "the receipts deleted after their retention", || async {
        matches!(receipts.now().await, Err(EventError::Unknown { .. }))
            && matches!(
                p.receipts(&keyed).now().await,
                Err(EventError::Unknown { .. })
            )
            && !key_kept().await
    })
    .await;
    o.shutdown().await;
}
