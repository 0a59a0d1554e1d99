//! The kernel's step events (`TRACE` on `agentorg_core::runtime::STEPS`):
//! one delegation round trip on the memory backends yields each documented
//! step once, in the order the messages take, each with its message's id.

use std::sync::{Arc, Mutex, PoisonError};

use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::runtime::{Org, STEPS};
use agentorg_core::store::MemoryStore;
use agentorg_core::transport::MemoryTransport;
use futures::StreamExt;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// One step event: its fields.
#[derive(Debug, Clone, Default, PartialEq)]
struct Step {
    step: String,
    msg_id: String,
    role: Option<String>,
    subject: String,
    ok: Option<bool>,
}

impl Visit for Step {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "ok" {
            self.ok = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}").trim_matches('"').to_owned();
        match field.name() {
            "step" => self.step = text,
            "msg_id" => self.msg_id = text,
            "role" => self.role = Some(text),
            "subject" => self.subject = text,
            _ => {}
        }
    }
}

/// Keeps the events on the steps target; nothing else is enabled.
struct Recorder(Arc<Mutex<Vec<Step>>>);

impl Subscriber for Recorder {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == STEPS
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut step = Step::default();
        event.record(&mut step);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(step);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

// A current-thread runtime: every task of the org runs on this thread, under
// the recorder set as this thread's default.
#[tokio::test(flavor = "current_thread")]
async fn a_round_trip_yields_each_step_once_in_order() {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let _guard = tracing::subscriber::set_default(Recorder(Arc::clone(&steps)));
    let chart = OrgChart::builder("steps")
        .principal("founder")
        .role(RoleSpec::new("worker").reports_to("founder"))
        .build()
        .expect("a valid chart");
    let org = Org::builder(chart)
        .transport(Arc::new(MemoryTransport::new()))
        .store(Arc::new(MemoryStore::new()))
        .agent(
            "worker",
            agent_fn(|_| async { Ok(Outcome::Complete(json!("done"))) }),
        )
        .start()
        .await
        .expect("the org starts");
    let mut inbox = org.principal().inbox().await.expect("the inbox");
    let task = org
        .principal()
        .delegate("worker", TaskSpec::new("ping"))
        .await
        .expect("delegated");
    let result = inbox
        .next()
        .await
        .expect("the inbox goes on")
        .expect("a readable result");
    assert_eq!(result.correlation_id.as_ref(), Some(&task.task_id));
    // The worker settles after the result is published; the shutdown waits
    // for it.
    org.shutdown().await;

    let (to_worker, to_founder) = (
        "steps.agent.worker.inbox.founder",
        "steps.agent.founder.inbox.worker",
    );
    let seen = steps.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let at = |step: &str, subject: &str| {
        let hits: Vec<usize> = (0..seen.len())
            .filter(|&i| seen[i].step == step && seen[i].subject == subject)
            .collect();
        assert_eq!(hits.len(), 1, "`{step}` on {subject} once: {seen:#?}");
        hits[0]
    };
    let publish_task = at("publish", to_worker);
    let published_task = at("published", to_worker);
    let delivered = at("delivered", to_worker);
    let publish_result = at("publish", to_founder);
    let published_result = at("published", to_founder);
    let settled = at("settled", to_worker);
    let received = at("received", to_founder);
    assert!(publish_task < published_task, "{seen:#?}");
    assert!(publish_task < delivered, "{seen:#?}");
    assert!(delivered < publish_result, "{seen:#?}");
    assert!(publish_result < published_result, "{seen:#?}");
    assert!(publish_result < received, "{seen:#?}");
    assert!(published_result < settled, "{seen:#?}");
    for i in [delivered, settled] {
        assert_eq!(seen[i].role.as_deref(), Some("worker"), "{seen:#?}");
    }
    assert_eq!(seen[settled].ok, Some(true), "{seen:#?}");
    // The task's steps carry the task envelope's id (the task's own), the
    // result's the result envelope's (the one the principal got).
    let task_msg = &seen[publish_task].msg_id;
    assert_eq!(task_msg, &task.task_id.to_string(), "{seen:#?}");
    for i in [published_task, delivered, settled] {
        assert_eq!(&seen[i].msg_id, task_msg, "{seen:#?}");
    }
    for i in [publish_result, published_result, received] {
        assert_eq!(seen[i].msg_id, result.id.to_string(), "{seen:#?}");
    }
    assert_ne!(task_msg, &result.id.to_string());
    assert_eq!(seen.len(), 7, "no other step: {seen:#?}");
}
