//! The event pattern's handler of a role's durable subscription.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Event, EventCallbacks};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::runtime::{Claimed, Fault, Handler, HostedRole, Reason, Settle};
use crate::subject::{Route, SubjectPattern, Subjects};
use crate::transport::DeliverFrom;

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
        "events"
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
        if !host.kernel().chart().may_publish(&env.from, &name) {
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
        let event = Event {
            id: env.id.clone(),
            name,
            from: env.from.clone(),
            payload: env.payload.clone(),
            published_at: env.created_at,
        };
        let cx = delivery.context(None);
        let r = delivery.run(cb.on_event(&cx, event)).await;
        delivery.settle_call(&cx, r).await
    }
}
