//! Publishing events: from a handler's `Context` (with its outcome) and
//! from the principal (from outside the org).

use serde::Serialize;
use serde_json::{json, Value};

use super::{receipts, EventError};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::name::Name;
use crate::runtime::{role_collection, Context, Effects, Kernel, Principal};
use crate::store::{DocKey, Precondition, Write};
use crate::subject::Subject;

/// The event `name` from `from` with `payload`, checked against the chart:
/// the subject, and the payload as JSON.
fn checked<T: Serialize + ?Sized>(
    chart: &OrgChart,
    subjects: &crate::subject::Subjects,
    from: &Name,
    name: &str,
    payload: &T,
) -> Result<(Subject, Value), EventError> {
    crate::chart::events::check_name(name).map_err(|reason| EventError::InvalidName {
        event: name.to_owned(),
        reason,
    })?;
    if super::ORG_EVENTS.contains(&name) {
        return Err(EventError::InvalidName {
            event: name.to_owned(),
            reason: "reserved for the runtime's own events".to_owned(),
        });
    }
    if !chart.may_publish(from, name) {
        return Err(EventError::NotDeclared {
            role: from.to_string(),
            event: name.to_owned(),
        });
    }
    let payload = serde_json::to_value(payload).map_err(|e| EventError::Encode {
        message: e.to_string(),
    })?;
    if let Some(schema) = chart.event_schema(name) {
        // The chart checked the schema when it was built.
        let validator = jsonschema::validator_for(schema).map_err(|e| EventError::Schema {
            event: name.to_owned(),
            message: format!("unusable schema: {e}"),
        })?;
        let violations = crate::tools::schema_violations(&validator, &payload);
        if !violations.is_empty() {
            return Err(EventError::Schema {
                event: name.to_owned(),
                message: violations.join("; "),
            });
        }
    }
    let subject = subjects
        .event_named(name)
        .map_err(|e| EventError::InvalidName {
            event: name.to_owned(),
            reason: e.to_string(),
        })?;
    Ok((subject, payload))
}

/// The event `name` from `from` with `payload`, checked against the chart:
/// its envelope (its id derived from `key` when there is one, and carried in
/// its header through requeues) and its subject.
fn event_envelope<T: Serialize + ?Sized>(
    kernel: &Kernel,
    from: &Name,
    name: &str,
    payload: &T,
    key: Option<&str>,
) -> Result<(Envelope, Subject), EventError> {
    let (subject, payload) = checked(kernel.chart(), kernel.subjects(), from, name, payload)?;
    let mut env = kernel.envelope(from.clone(), Kind::Event, payload);
    if let Some(key) = key {
        env = env.with_id(keyed_id(kernel.org(), from, name, key)?);
    }
    let id = env.id.clone();
    Ok((
        env.with_header(receipts::EVENT_ID_HEADER, id.as_str()),
        subject,
    ))
}

/// Adds the event's record and retention timer (and the end of its key's
/// record, `key_doc`) to the effects its publish commits with.
fn add_record(
    effects: &mut Effects,
    kernel: &Kernel,
    env: &Envelope,
    name: &str,
    key_doc: Option<&DocKey>,
) -> Result<(), EventError> {
    for w in receipts::at_publish(kernel, env, name, key_doc)? {
        effects.write(w);
    }
    Ok(())
}

/// The envelope id of a publish with an idempotency key: the same for the
/// same org, publisher, name and key.
fn keyed_id(org: &Name, from: &Name, name: &str, key: &str) -> Result<MessageId, EventError> {
    let hex = crate::hex::digest(&[org.as_str(), from.as_str(), name, key]);
    MessageId::parse(format!("ev-{hex}")).map_err(|e| EventError::InvalidName {
        event: name.to_owned(),
        reason: e.to_string(),
    })
}

/// The event pattern's operations of a handler's [`Context`].
impl Context {
    /// Publishes the event `name` with `payload` to every role that
    /// subscribes to it. Refused at once if the chart does not let this
    /// role publish `name` or the payload fails the name's schema.
    /// Published, exactly once, when the handler's outcome is committed.
    pub fn publish_event<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> Result<MessageId, EventError> {
        self.publish_event_inner(name, payload, None)
    }

    /// [`publish_event`](Self::publish_event) with an idempotency key: the
    /// event's id derives from the key, so publishing the same key again
    /// (from another run of a handler, say) is one event to subscribers.
    pub fn publish_event_once<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        key: &str,
    ) -> Result<MessageId, EventError> {
        self.publish_event_inner(name, payload, Some(key))
    }

    fn publish_event_inner<T: Serialize + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        key: Option<&str>,
    ) -> Result<MessageId, EventError> {
        let kernel = self.kernel();
        let (env, subject) = event_envelope(kernel, &self.role, name, payload, key)?;
        let env = env
            .with_causation(self.envelope.id.clone())
            .with_trace_parent(&self.trace, None);
        let id = env.id.clone();
        let mut effects = self.effects();
        add_record(&mut effects, kernel, &env, name, None)?;
        effects.send(subject, env);
        Ok(id)
    }
}

/// The event pattern's operations of the principal.
impl Principal {
    /// Publishes the event `name` with `payload` as the principal (who may
    /// publish every event the chart declares): committed to the outbox,
    /// then published. Returns the event's id.
    pub async fn publish_event<T: Serialize + Sync + ?Sized>(
        &self,
        name: &str,
        payload: &T,
    ) -> Result<MessageId, EventError> {
        let kernel = &*self.kernel;
        let (env, subject) = event_envelope(kernel, self.name(), name, payload, None)?;
        let id = env.id.clone();
        let mut effects = Effects::new();
        add_record(&mut effects, kernel, &env, name, None)?;
        effects.send(subject, env);
        self.kernel.commit(effects).await?;
        Ok(id)
    }

    /// [`publish_event`](Self::publish_event) at most once per idempotency
    /// key (a webhook delivered twice from outside, say): the first call
    /// records the key with the event, in one commit; a later call with
    /// the same key publishes nothing and returns the first event's id. The
    /// key is remembered as long as the event's receipts
    /// ([`RECEIPT_RETENTION`](super::RECEIPT_RETENTION)); after that the
    /// same key publishes again.
    pub async fn publish_event_once<T: Serialize + Sync + ?Sized>(
        &self,
        name: &str,
        payload: &T,
        key: &str,
    ) -> Result<MessageId, EventError> {
        let kernel = &*self.kernel;
        let (env, subject) = event_envelope(kernel, self.name(), name, payload, Some(key))?;
        let id = env.id.clone();
        let record = role_collection(kernel.org(), self.name(), "event-keys")?.doc(id.as_str())?;
        let mut effects = Effects::new();
        add_record(&mut effects, kernel, &env, name, Some(&record))?;
        effects.write(Write::put(
            record,
            json!({ "event": name, "key": key, "published_at": kernel.now().to_rfc3339() }),
            Precondition::MustNotExist,
        ));
        effects.send(subject, env);
        match kernel.commit(effects).await {
            Ok(()) => Ok(id),
            // The key was published before: nothing new.
            Err(e) if e.is_precondition_failure() => Ok(id),
            Err(e) => Err(e.into()),
        }
    }
}
