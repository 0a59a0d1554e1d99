//! The event pattern's handler of a role's durable subscription.

use std::sync::Arc;

use async_trait::async_trait;

use super::receipts::{self, ReceiptStatus};
use super::{Event, EventCallbacks};
use crate::chart::OrgChart;
use crate::envelope::MessageId;
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::runtime::{
    describe, Claimed, Effects, Fault, Handler, HostedRole, Kernel, Reason, Settle,
};
use crate::subject::{Route, SubjectPattern, Subjects};
use crate::transport::DeliverFrom;

/// The handler's name, as health shows it.
pub(crate) const NAME: &str = "events";

/// The consumer key of a role's subscription (`ev-<role>-<hash>`).
pub(crate) const SUBSCRIPTION: &str = "ev";

/// The role's event callbacks, as hosted.
fn callbacks(host: &HostedRole) -> Option<&Arc<dyn EventCallbacks>> {
    host.app::<Arc<dyn EventCallbacks>>()
}

/// The event name of a route's tokens.
fn event_name(route: &Route) -> Option<String> {
    match route {
        Route::Event { name } => Some(name.iter().map(Name::as_str).collect::<Vec<_>>().join(".")),
        _ => None,
    }
}

/// Takes every subscribing role's events, on one durable consumer per role
/// filtered by its normalized subscriptions, starting at its creation.
#[derive(Debug)]
pub(crate) struct EventHandler;

#[async_trait]
impl Handler for EventHandler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumer(&self) -> &'static str {
        SUBSCRIPTION
    }

    /// A subscription starts when it is created: no history from before the
    /// role subscribed.
    fn deliver(&self) -> DeliverFrom {
        DeliverFrom::New
    }

    fn subjects(&self, subjects: &Subjects, chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        chart
            .subscriptions_of(role)
            .iter()
            // Validated with the chart; a pattern that still does not make
            // a subject (too long with the org's name) takes nothing.
            .filter_map(|p| subjects.events_matching(p).ok())
            .collect()
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, route: &Route) -> Result<(), Reason> {
        if env.kind != Kind::Event {
            return Err(Reason::new(
                "wrong_subject",
                format!("a {} envelope on an event subject", env.kind),
            ));
        }
        let Some(name) = event_name(route) else {
            return Err(Reason::new("wrong_subject", "not an event subject"));
        };
        let chart = host.kernel().chart();
        let org_event = super::ORG_EVENTS.contains(&name.as_str()) && chart.contains(&env.from);
        if !org_event && !chart.may_publish(&env.from, &name) {
            return Err(Reason::new(
                "not_allowed",
                format!(
                    "`{}` is not a declared publisher of event `{name}` in the chart",
                    env.from
                ),
            ));
        }
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{}` hosts no code for events", host.role()),
            ));
        }
        Ok(())
    }

    /// The event (its id as published, through requeues): dead letters are
    /// about it, and its receipt records them.
    async fn work_item(
        &self,
        _kernel: &Kernel,
        envelope: &Envelope,
    ) -> Result<Option<MessageId>, Fault> {
        Ok(Some(receipts::event_id(envelope)))
    }

    /// A dead-lettered event's receipt, committed with the dead letter (if
    /// the event has a record).
    async fn dead_lettered(
        &self,
        kernel: &Kernel,
        role: &Name,
        item: &MessageId,
        reason: &Reason,
    ) -> Result<Option<Effects>, Fault> {
        // No record (the runtime's own events, or past its retention): no
        // receipt.
        let Some(published) = receipts::published_at(kernel, item).await? else {
            return Ok(None);
        };
        let mut effects = Effects::new();
        effects.write(receipts::receipt_write(
            kernel,
            role,
            item,
            published,
            ReceiptStatus::DeadLettered,
            0,
            Some(format!("{}: {}", reason.code, reason.message)),
        )?);
        Ok(Some(effects))
    }

    /// An event the role subscribes to: once per subscriber, like a task.
    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let Some(cb) = callbacks(delivery.host()).cloned() else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no event callbacks"), None)
                .await;
        };
        let env = delivery.envelope();
        // A requeued event is for the subscriber that dead-lettered it.
        if env.to.as_ref().is_some_and(|to| to != delivery.role()) {
            return delivery.done().await;
        }
        let name = delivery
            .kernel()
            .subjects()
            .route(delivery.subject())
            .as_ref()
            .and_then(event_name)
            .unwrap_or_default();
        // The runtime's own events have no record, so no receipts.
        let receipted = !super::ORG_EVENTS.contains(&name.as_str());
        // The event as published (a requeue's envelope has a new id).
        let id = receipts::event_id(env);
        let event = Event {
            id: id.clone(),
            name,
            from: env.from.clone(),
            payload: env.payload.clone(),
            published_at: env.created_at,
        };
        let cx = delivery.context(None);
        let r = delivery.run(cb.on_event(&cx, event)).await;
        let kernel = delivery.kernel();
        let receipt = |status, reason| {
            receipts::receipt_write(
                kernel,
                delivery.role(),
                &id,
                env.created_at,
                status,
                delivery.attempt(),
                reason,
            )
        };
        let (mut effects, _) = cx.take_effects();
        match r {
            Ok(()) => {
                if receipted {
                    effects.write(receipt(ReceiptStatus::Processed, None)?);
                }
                delivery.commit_all(effects).await
            }
            Err(e) if e.is_retryable() && !receipted => {
                delivery.retry_or_dead_letter(e, None).await
            }
            Err(e) if e.is_retryable() => {
                // The failed attempt's receipt, in a commit of its own (the
                // retry commits only the claim), never over a final one (the
                // lease may have moved on to an attempt that finished).
                // Best effort: a lost one is replaced by the next attempt's.
                if let Err(err) = receipts::record_failure(
                    kernel,
                    delivery.role(),
                    &id,
                    receipt(ReceiptStatus::Failed, Some(describe(&e)))?,
                )
                .await
                {
                    tracing::debug!(error = %err, "recording a failed attempt's receipt failed");
                }
                delivery.retry_or_dead_letter(e, Some(&id)).await
            }
            Err(e) => {
                delivery.count_failure();
                let item = receipted.then_some(&id);
                delivery
                    .dead_letter(Reason::new("rejected", describe(&e)), item)
                    .await
            }
        }
    }
}
