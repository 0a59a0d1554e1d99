//! The runtime's own events: dead letters and breaker openings reach the
//! roles that subscribe to them, through the event path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::chart::{OrgChart, RoleSpec};
use crate::events::Event;
use crate::name::Name;
use crate::store::StateStore;
use crate::transport::Transport;

use super::super::fail;
use super::support::*;
use super::{suite_config, COOLDOWN};

/// Records the events it gets; with `fails`, fails each for good after
/// recording it.
struct Watcher {
    seen: Arc<Mutex<Vec<Event>>>,
    fails: bool,
}

#[async_trait]
impl Agent for Watcher {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(Value::Null))
    }
    async fn on_event(&self, _cx: &Context, event: Event) -> Result<(), AgentError> {
        if let Ok(mut v) = self.seen.lock() {
            v.push(event);
        }
        if self.fails {
            return Err(AgentError::permanent("cannot take dead letters"));
        }
        Ok(())
    }
}

/// Fails every attempt of every task (transiently, so the last attempt
/// dead-letters the task).
struct Broken;

#[async_trait]
impl Agent for Broken {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Err(AgentError::transient("the deploy host is down"))
    }
}

fn names(seen: &Mutex<Vec<Event>>) -> Vec<String> {
    seen.lock()
        .map(|v| v.iter().map(|e| e.name.clone()).collect())
        .unwrap_or_default()
}

/// A task whose attempts its role all fails is dead-lettered and (at a breaker
/// threshold of one) opens the role's breaker: a role subscribed to
/// `dead_letter` and `breaker.open` gets both, from the failing role, with
/// the dead letter's id and the breaker's details. A subscriber that fails a
/// `dead_letter` event is dead-lettered for it without a new `dead_letter`
/// event (which it would fail again, and so on). No one may publish these
/// names itself.
pub async fn org_events_reach_subscribers(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "org_events_reach_subscribers";
    let chart = OrgChart::builder(org.as_str())
        .principal("founder")
        .role(
            RoleSpec::new("cto")
                .reports_to("founder")
                .subscribes(["dead_letter", "breaker.*"]),
        )
        .role(
            RoleSpec::new("cso")
                .reports_to("founder")
                .subscribes(["dead_letter"]),
        )
        .role(RoleSpec::new("devops").reports_to("founder"))
        .build()
        .unwrap_or_else(|e| fail(B, e));
    let cto: Arc<Mutex<Vec<Event>>> = Arc::default();
    let cso: Arc<Mutex<Vec<Event>>> = Arc::default();
    let o = start_with(
        B,
        &t,
        &s,
        chart,
        suite_config()
            .with_breaker(1, COOLDOWN)
            .with_max_attempts(2),
        vec![
            ("devops", Arc::new(Broken), 1),
            (
                "cto",
                Arc::new(Watcher {
                    seen: Arc::clone(&cto),
                    fails: false,
                }),
                1,
            ),
            (
                "cso",
                Arc::new(Watcher {
                    seen: Arc::clone(&cso),
                    fails: true,
                }),
                1,
            ),
        ],
    )
    .await;
    let p = o.principal();
    // The runtime's own names are not for publishing.
    match p.publish_event("dead_letter", &serde_json::json!({})).await {
        Err(crate::events::EventError::InvalidName { .. }) => {}
        other => fail(B, format!("publishing `dead_letter` oneself: {other:?}")),
    }
    let h = delegate(B, &p, "devops", TaskSpec::new("Deploy v9")).await;
    eventually(B, "a dead_letter and a breaker.open at the cto", || async {
        let n = names(&cto);
        n.iter().any(|n| n == "dead_letter") && n.iter().any(|n| n == "breaker.open")
    })
    .await;
    let letters = p.dead_letter_records().await.unwrap_or_default();
    let Some(task_letter) = letters
        .iter()
        .find(|r| r.task_id.as_ref() == Some(&h.task_id))
    else {
        fail(B, format!("no dead letter of the task: {letters:?}"));
    };
    let events = cto.lock().map(|v| v.clone()).unwrap_or_default();
    for e in &events {
        let details = &e.payload["details"];
        let ok = e.from == "devops"
            && e.payload["event"] == e.name.as_str()
            && details["role"] == "devops"
            && match e.name.as_str() {
                "dead_letter" => {
                    details["dead_letter_id"] == task_letter.dead_letter_id.as_str()
                        && details["reason"]["code"] == "attempts_exhausted"
                }
                "breaker.open" => details["consecutive_failures"] == 1,
                _ => false,
            };
        if !ok {
            fail(B, format!("an org event at the cto: {e:?}"));
        }
    }
    // The cso failed its dead_letter event: dead-lettered for it, and no
    // new dead_letter event came of that.
    eventually(
        B,
        "the cso's dead letter of the dead_letter event",
        || async {
            p.dead_letter_records()
                .await
                .unwrap_or_default()
                .iter()
                .any(|r| r.role == "cso")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_cto = names(&cto);
    let at_cso = names(&cso);
    if at_cto.iter().filter(|n| *n == "dead_letter").count() != 1 || at_cso != ["dead_letter"] {
        fail(
            B,
            format!("dead_letter events: at the cto {at_cto:?}, at the cso {at_cso:?}"),
        );
    }
    o.shutdown().await;
}

/// Waits at the gate before taking each event.
struct Slow(Gate);

#[async_trait]
impl Agent for Slow {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(Value::Null))
    }
    async fn on_event(&self, _cx: &Context, _event: Event) -> Result<(), AgentError> {
        self.0.pass().await;
        Ok(())
    }
}

/// `Org::health` shows a subscription's lag: three events published to a
/// subscriber held at a gate are three not processed; once it goes on,
/// none. A role without subscriptions has no subscription lag.
pub async fn subscription_lag_in_health(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "subscription_lag_in_health";
    let chart = OrgChart::builder(org.as_str())
        .principal("founder")
        .role(
            RoleSpec::new("ceo")
                .reports_to("founder")
                .subscribes(["deploy.complete"]),
        )
        .role(
            RoleSpec::new("devops")
                .reports_to("founder")
                .publishes(["deploy.complete"]),
        )
        .build()
        .unwrap_or_else(|e| fail(B, e));
    let gate = Gate::new();
    let o = start_with(
        B,
        &t,
        &s,
        chart,
        suite_config(),
        vec![
            ("ceo", Arc::new(Slow(gate.clone())), 1),
            ("devops", Arc::new(Broken), 1),
        ],
    )
    .await;
    let p = o.principal();
    for v in 0..3 {
        if let Err(e) = p
            .publish_event("deploy.complete", &serde_json::json!({ "v": v }))
            .await
        {
            fail(B, e);
        }
    }
    let lag_of = |health: &[crate::runtime::AgentHealth], role: &str| {
        health
            .iter()
            .find(|h| h.role == role)
            .and_then(crate::events::subscription_lag)
    };
    eventually(B, "a lag of three at the ceo", || async {
        lag_of(&o.health_now().await, "ceo") == Some(3)
    })
    .await;
    let health = o.health();
    if lag_of(&health, "devops").is_some() || lag_of(&health, "ceo") != Some(3) {
        fail(B, format!("health as last read: {health:?}"));
    }
    gate.open();
    eventually(B, "no lag at the ceo once it goes on", || async {
        lag_of(&o.health_now().await, "ceo") == Some(0)
    })
    .await;
    o.shutdown().await;
}

/// A subscriber's chart subscribes it to more: when its process starts with
/// that chart, its one subscription takes the new names too (no publisher
/// changes).
pub async fn a_changed_subscription_takes_effect_on_restart(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "a_changed_subscription_takes_effect_on_restart";
    let chart = |patterns: &[&str]| {
        OrgChart::builder(org.as_str())
            .principal("founder")
            .role(
                RoleSpec::new("devops")
                    .reports_to("founder")
                    .publishes(["deploy.complete", "deploy.rollback"]),
            )
            .role(
                RoleSpec::new("marketing")
                    .reports_to("founder")
                    .subscribes(patterns.iter().copied()),
            )
            .build()
            .unwrap_or_else(|e| fail(B, e))
    };
    let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
    let watcher = || -> Arc<dyn Agent> {
        Arc::new(Watcher {
            seen: Arc::clone(&seen),
            fails: false,
        })
    };
    let first = start_with(
        B,
        &t,
        &s,
        chart(&["deploy.complete"]),
        suite_config(),
        vec![("marketing", watcher(), 1)],
    )
    .await;
    let publish = |p: crate::runtime::Principal, name: &'static str| async move {
        if let Err(e) = p.publish_event(name, &serde_json::json!({})).await {
            fail(B, e);
        }
    };
    publish(first.principal(), "deploy.complete").await;
    eventually(B, "the first deploy.complete", || async {
        names(&seen) == ["deploy.complete"]
    })
    .await;
    first.shutdown().await;
    let second = start_with(
        B,
        &t,
        &s,
        chart(&["deploy.*"]),
        suite_config(),
        vec![("marketing", watcher(), 1)],
    )
    .await;
    publish(second.principal(), "deploy.rollback").await;
    publish(second.principal(), "deploy.complete").await;
    eventually(B, "a rollback and a second complete", || async {
        names(&seen).len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = names(&seen);
    if got != ["deploy.complete", "deploy.rollback", "deploy.complete"] {
        fail(B, format!("events at marketing: {got:?}"));
    }
    second.shutdown().await;
}
