//! Event choreography: roles publish named events, and every role that
//! subscribes to a matching name gets each one, durably.
//!
//! The chart declares, per role, the events it
//! [`publishes`](crate::chart::RoleSpec::publishes) and those it
//! [`subscribes`](crate::chart::RoleSpec::subscribes) to (names, or
//! patterns with `*` and a last `>`), and may declare a JSON Schema for an
//! event's payload ([`event_schema`](crate::chart::OrgChartBuilder::event_schema)).
//! A new subscriber joins by a line in the chart: no publisher changes.
//!
//! * [`Context::publish_event`](crate::runtime::Context::publish_event)
//!   publishes on `<org>.events.<name>`, committed with the handler's
//!   outcome like any message it sends (exactly once);
//!   [`Principal::publish_event`](crate::runtime::Principal::publish_event)
//!   publishes from outside the org, and with an idempotency key a webhook
//!   delivered twice publishes once. A name the publisher does not declare,
//!   or a payload that fails the name's schema, is refused before anything
//!   reaches the transport, naming the rule.
//! * Each subscribing role has **one durable subscription** to all its
//!   patterns (normalized: `deploy.complete` beside `deploy.*` is dropped),
//!   which starts when it is first created: a role that was down gets what
//!   was published meanwhile when it is back, and a role added to the chart
//!   later gets nothing from before it existed. When a role's chart
//!   subscribes it to other patterns, its process starting with that chart
//!   changes the subscription's filters in place (every process hosting the
//!   role should run the same chart). [`subscription_lag`] reads, from
//!   [`Org::health`](crate::runtime::Org::health), how many events a role
//!   has not processed yet.
//! * [`Agent::on_event`](crate::agent::Agent::on_event) receives them. An
//!   event's handling is claimed, retried and dead-lettered like a task's,
//!   per subscriber; dead-lettered events are listed, requeued and
//!   discarded like any dead letter. An event whose `from` is not a
//!   declared publisher of its name is refused (`not_allowed`) and
//!   dead-lettered unrun: an event subject names no sender, so this check
//!   (and, on NATS, the broker's permissions) stands in for the inbox's
//!   sender-in-subject rule. The runtime's own events ([`ORG_EVENTS`]:
//!   `sla.breach`, `breaker.open`, `dead_letter`) may come from any role
//!   of the chart, and a role subscribes to them like to any other.
//! * **Delivery receipts.** An event's subscribers are fixed when it is
//!   published (from the publisher's chart), and each records its own
//!   receipt — processed, failed (a retried attempt, with the reason) or
//!   dead-lettered — with the attempt and the latency since the publish, in
//!   the commit that settles its handling.
//!   [`Principal::receipts`](crate::runtime::Principal::receipts)`(id).wait(timeout)`
//!   returns them and names the subscribers that have not processed it.
//!   Receipts are deleted [`RECEIPT_RETENTION`] after the publish (a
//!   kernel timer of the publisher's).
//! * Order: events of one name arrive in publish order as long as their
//!   handling succeeds; an event whose handling is retried can come after
//!   later ones, as tasks can.
//! * A role seated over MCP (`agentorg_mcp::seat`) gets its events as
//!   `org_event` notices of `wait_for_event`, and publishes with the
//!   `publish_event` tool, held to the same chart.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::events::Event;
//! use agentorg_core::runtime::Org;
//! use async_trait::async_trait;
//! use serde_json::json;
//!
//! struct Devops;
//! #[async_trait]
//! impl Agent for Devops {
//!     async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
//!         cx.publish_event("deploy.complete", &json!({ "version": task.title }))?;
//!         assert!(cx.publish_event("deploy.rollback", &json!({})).is_err()); // not declared
//!         Ok(Outcome::Complete(json!("deployed")))
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Marketing(Arc<Mutex<Vec<String>>>);
//! #[async_trait]
//! impl Agent for Marketing {
//!     async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         Ok(Outcome::Complete(serde_json::Value::Null))
//!     }
//!     async fn on_event(&self, _cx: &Context, event: Event) -> Result<(), AgentError> {
//!         self.0.lock().unwrap().push(format!("{} {}", event.name, event.payload["version"]));
//!         Ok(())
//!     }
//! }
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("devops").reports_to("founder").publishes(["deploy.complete"]))
//!     .role(RoleSpec::new("marketing").reports_to("founder").subscribes(["deploy.*"]))
//!     .build()?;
//! let marketing = Marketing::default();
//! let org = Org::builder(chart)
//!     .agent("devops", Devops)
//!     .agent("marketing", marketing.clone())
//!     .start()
//!     .await?;
//! org.principal().delegate("devops", TaskSpec::new("v2.3.1")).await?.wait(Duration::from_secs(5)).await?;
//! # for _ in 0..200 { if !marketing.0.lock().unwrap().is_empty() { break } tokio::time::sleep(Duration::from_millis(10)).await; }
//! assert_eq!(*marketing.0.lock().unwrap(), ["deploy.complete \"v2.3.1\""]);
//!
//! // The principal publishes too (a webhook, say), and reads who processed it.
//! let founder = org.principal();
//! let id = founder.publish_event("deploy.complete", &json!({ "version": "v2.3.2" })).await?;
//! let receipts = founder.receipts(&id).wait(Duration::from_secs(5)).await?;
//! assert!(receipts.all_processed(), "not processed by {:?}", receipts.not_processed);
//! assert_eq!(receipts.receipts[0].subscriber, "marketing");
//! org.shutdown().await;
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use async_trait::async_trait;

use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{agent_error_from, AgentError, AgentHealth, Context, Pattern, Registry};

mod handler;
mod publish;
mod receipts;

pub use receipts::{EventReceipts, Receipt, ReceiptStatus, Receipts, RECEIPT_RETENTION};

/// The runtime's own events, which any role of the chart may send, and a
/// role may subscribe to like any other:
///
/// * `sla.breach` — a task passed its SLA (from the task's delegator);
/// * `breaker.open` — a role's circuit breaker opened (from that role);
/// * `dead_letter` — a role dead-lettered a delivery (from that role; none
///   for a dead-lettered `dead_letter` event, so a failing subscriber does
///   not feed itself).
///
/// Each is sent only when some role of the sender's chart subscribes to it
/// (no one would take it otherwise), committed with what it reports (once;
/// a dead letter of a message that could not even be claimed publishes its
/// event directly, best effort), with the payload
/// `{ "event": <name>, "details": { … } }` — the details the escalation or
/// the alert of the same occurrence carries. They carry no receipts, and a
/// role may not publish them itself.
pub const ORG_EVENTS: &[&str] = &["sla.breach", "breaker.open", "dead_letter"];

/// A hosted role's subscription lag: the events that reached its durable
/// subscription and are not processed yet (undelivered, or being handled),
/// as [`Org::health`](crate::runtime::Org::health) last read it, or
/// [`Org::health_now`](crate::runtime::Org::health_now) reads it now;
/// `None` for a role that subscribes to nothing (or before the first
/// reading).
pub fn subscription_lag(health: &AgentHealth) -> Option<u64> {
    health.lag(handler::NAME)
}

/// An event's receipts now, for other patterns (the saga pattern's gates);
/// `Ok(None)` when it has no record (never published, or past its
/// retention).
pub(crate) async fn receipts_now(
    kernel: &crate::runtime::Kernel,
    event: &MessageId,
) -> Result<Option<Receipts>, EventError> {
    match receipts::read(kernel, event).await {
        Ok(r) => Ok(Some(r)),
        Err(EventError::Unknown { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The event pattern, as registered with the kernel: the handler of every
/// subscribing role's durable subscription. `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Events;

impl Pattern for Events {
    fn name(&self) -> &'static str {
        "events"
    }

    fn register(&self, registry: &mut Registry) {
        registry
            .handler(handler::EventHandler)
            .timer(receipts::RETENTION_TIMER, receipts::Retention);
    }
}

/// The event pattern's call into a role's code.
///
/// Implemented for every `Agent` by the agent layer (implement `Agent`); the
/// pattern's handler finds it among a hosted role's application objects as
/// `Arc<dyn EventCallbacks>`.
#[async_trait]
pub trait EventCallbacks: Send + Sync + 'static {
    /// An event the role subscribes to (once per subscriber, like a task).
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError>;
}

/// An event, as a subscriber receives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// The envelope id: one per publish (the dedupe key; derived from the
    /// idempotency key when the publisher gave one).
    pub id: MessageId,
    /// Its name (`deploy.complete`).
    pub name: String,
    /// The publishing role (or the principal).
    pub from: Name,
    /// The payload as published (JSON).
    pub payload: Value,
    /// When it was published.
    pub published_at: DateTime<Utc>,
}

impl Event {
    /// An event (for tests and backends).
    pub fn new(id: MessageId, name: impl Into<String>, from: Name, payload: Value) -> Self {
        Self {
            id,
            name: name.into(),
            from,
            payload,
            published_at: Utc::now(),
        }
    }

    /// The payload as a typed value.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, EventError> {
        crate::runtime::from_json(&self.payload).map_err(|e| EventError::Encode {
            message: e.to_string(),
        })
    }
}

/// An event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The chart does not let this role publish this name (not in its
    /// `publishes`; for the principal, not declared anywhere in the
    /// chart). Refused before anything reaches the transport.
    #[error("`{role}` may not publish event `{event}`: not in its `publishes` in the chart")]
    NotDeclared {
        /// The publisher.
        role: String,
        /// The event name.
        event: String,
    },
    /// The name is not a valid event name.
    #[error("invalid event name `{event}`: {reason}")]
    InvalidName {
        /// The name given.
        event: String,
        /// What is wrong.
        reason: String,
    },
    /// The payload fails the JSON Schema the chart declares for the name.
    #[error("event `{event}`: the payload fails the chart's schema: {message}")]
    Schema {
        /// The event name.
        event: String,
        /// The validator's first error, with its path.
        message: String,
    },
    /// The payload could not be encoded or decoded as the expected type.
    #[error("event payload does not fit the expected type: {message}")]
    Encode {
        /// The serializer's message.
        message: String,
    },
    /// No such event is recorded (never published, or past its receipts'
    /// retention).
    #[error("no event {event} is recorded")]
    Unknown {
        /// The event's id.
        event: MessageId,
    },
    /// The store refused or failed the commit (the principal's publish).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl EventError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

agent_error_from!(EventError);

#[cfg(test)]
mod tests {
    /// The names the runtime sends are the ones every role may send.
    #[test]
    fn org_events_are_the_runtimes() {
        for name in [
            crate::hierarchy::BREACH_EVENT,
            crate::hierarchy::BREAKER_OPEN_EVENT,
            crate::runtime::DEAD_LETTER_EVENT,
        ] {
            assert!(super::ORG_EVENTS.contains(&name), "{name}");
            assert!(crate::chart::events::check_name(name).is_ok(), "{name}");
        }
    }
}
