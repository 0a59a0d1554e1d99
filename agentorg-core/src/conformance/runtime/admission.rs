//! Admission: what is refused before any claim, envelopes of a newer
//! format, and a graceful drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::super::fail;
use super::{
    delegate, eventually, next_envelope, next_item, quiet, start, suite_config, wait_done,
    Scripted, LEASE,
};
use crate::agent::Outcome;
use crate::envelope::{Envelope, Kind, MessageId};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::runtime::{InboxError, Org, PrincipalStream};
use crate::store::StateStore;
use crate::transport::{PublishOptions, Transport, TransportExt};

fn raw_task(org: &Name, from: &str, to: &str, id: MessageId) -> Envelope {
    let n = |s: &str| Name::new(s).unwrap_or_else(|e| fail("fixture", e));
    Envelope::new(
        org.clone(),
        n(from),
        Kind::Task,
        json!({"task_id": id, "title": "forged"}),
    )
    .with_id(id)
    .with_to(n(to))
}

/// An envelope whose `from` differs from its subject's sender is never run;
/// it is dead-lettered with its reason.
pub async fn sender_mismatch_refused(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "sender_mismatch_refused";
    let x = Scripted::completing();
    let (o, mut dead) = x_with_dead_letters(B, &t, &s, &org, x.clone()).await;
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    // Claims to come from `y` but is sent on the principal's subject.
    let forged = raw_task(&org, "y", "x", MessageId::new());
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    if let Err(e) = t.publish_envelope(&subject, &forged).await {
        fail(B, e);
    }
    let dl = next_envelope(B, "the refusal's dead letter", &mut dead).await;
    if dl.payload["reason"]["code"] != "sender_mismatch"
        || dl.causation_id.as_ref() != Some(&forged.id)
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let ok = delegate(B, &o, "x", "legit").await;
    wait_done(B, &o, &ok).await;
    let titles: Vec<String> = x.runs().into_iter().map(|r| r.title).collect();
    if titles != ["legit"] {
        fail(B, format!("runs {titles:?}"));
    }
    o.shutdown().await;
}

/// The principal's inbox gives an envelope whose `from` differs from its
/// subject's sender, and bytes that are not an envelope, as errors (the
/// latter with the bytes whole), terminated: neither comes again, and what
/// follows them is given as sent.
pub async fn principal_inbox_refuses_forged_and_undecodable(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "principal_inbox_refuses_forged_and_undecodable";
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![("x", Arc::new(Scripted::completing()))],
    )
    .await;
    let mut inbox = o.principal().inbox().await.unwrap_or_else(|e| fail(B, e));
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let subject = o.subjects().inbox(&n("p"), &n("x"));
    let note = |from: &str, text: &str| {
        Envelope::new(org.clone(), n(from), Kind::Message, json!({ "text": text })).with_to(n("p"))
    };
    // Claims to come from `y` but is sent on `x`'s subject.
    let forged = note("y", "forged");
    let junk = Bytes::from_static(b"{\"v\":1,\"oops\"");
    let good = note("x", "good");
    if let Err(e) = t.publish_envelope(&subject, &forged).await {
        fail(B, e);
    }
    if let Err(e) = t
        .publish(&subject, junk.clone(), PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    if let Err(e) = t.publish_envelope(&subject, &good).await {
        fail(B, e);
    }
    match next_item(B, "the forged envelope", &mut inbox).await {
        Err(InboxError::SenderMismatch { subject: on, from })
            if on == subject.as_str() && from == n("y") => {}
        other => fail(B, format!("the forged envelope: {other:?}")),
    }
    match next_item(B, "the undecodable bytes", &mut inbox).await {
        Err(InboxError::Undecodable(failure)) if failure.raw == junk => {}
        other => fail(B, format!("the undecodable bytes: {other:?}")),
    }
    match next_item(B, "the good envelope", &mut inbox).await {
        Ok(env) if env == good => {}
        other => fail(B, format!("the good envelope: {other:?}")),
    }
    // Past the ack wait, a refusal that was not terminated would come again.
    quiet(
        B,
        "after the refusals",
        &mut inbox,
        LEASE + Duration::from_secs(1),
    )
    .await;
    o.shutdown().await;
}

/// Bytes that are not an envelope are dead-lettered whole, with the reason,
/// and the role goes on.
pub async fn undecodable_input_dead_lettered(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "undecodable_input_dead_lettered";
    let x = Scripted::completing();
    let (o, mut dead) = x_with_dead_letters(B, &t, &s, &org, x.clone()).await;
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    let junk = Bytes::from_static(b"{\"v\":1,\"oops\"");
    if let Err(e) = t
        .publish(&subject, junk.clone(), PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    if dl.payload["reason"]["code"] != "malformed"
        || dl.payload["original"]["body"] != "{\"v\":1,\"oops\""
    {
        fail(B, format!("dead letter {dl:?}"));
    }
    let ok = delegate(B, &o, "x", "next").await;
    wait_done(B, &o, &ok).await;
    o.shutdown().await;
}

/// An envelope of a newer format version is put back (not before the
/// configured delay each time) and dead-lettered when its attempts run out.
pub async fn future_version_retried_then_dead_lettered(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "future_version_retried_then_dead_lettered";
    let (o, mut dead) = x_with_dead_letters(B, &t, &s, &org, Scripted::completing()).await;
    let n = |v: &str| Name::new(v).unwrap_or_else(|e| fail(B, e));
    let subject = o.subjects().inbox(&n("x"), &n("p"));
    let id = MessageId::new();
    let newer = format!(
        r#"{{"v": 2, "id": "{id}", "org": "{org}", "from": "p", "kind": "task", "new_field": 1}}"#
    );
    let at = Instant::now();
    if let Err(e) = t
        .publish(&subject, Bytes::from(newer), PublishOptions::default())
        .await
    {
        fail(B, e);
    }
    let dl = next_envelope(B, "the dead letter", &mut dead).await;
    let delay = suite_config().future_version_delay;
    if dl.payload["reason"]["code"] != "future_version" || dl.payload["attempts"] != 3 {
        fail(B, format!("dead letter {dl:?}"));
    }
    if at.elapsed() < delay * 2 {
        fail(
            B,
            format!("dead-lettered after {:?}, before two delays", at.elapsed()),
        );
    }
    o.shutdown().await;
}

/// Shutdown stops intake and waits for the handler in flight, whose task
/// completes; nothing new is taken afterwards.
pub async fn drain_on_shutdown(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "drain_on_shutdown";
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let slow = Scripted::new(move |_, _| {
        flag.store(true, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(Outcome::Complete(Value::Null))
        }
    });
    let o = start(B, &t, &s, &org, vec![("x", Arc::new(slow.clone()))]).await;
    let id = delegate(B, &o, "x", "in flight").await;
    eventually(B, "the handler started", || {
        let started = Arc::clone(&started);
        async move { started.load(Ordering::SeqCst) }
    })
    .await;
    o.shutdown().await;
    match o.principal().task(&id).await {
        Ok(Some(rec)) if rec.status == TaskStatus::Completed => {}
        other => fail(B, format!("after shutdown the in-flight task is {other:?}")),
    }
    if o.health()
        .iter()
        .any(|h| h.state != crate::runtime::AgentState::Stopped)
    {
        fail(B, format!("health after shutdown: {:?}", o.health()));
    }
    let later = delegate(B, &o, "x", "after shutdown").await;
    tokio::time::sleep(LEASE).await;
    match o.principal().task(&later).await {
        Ok(Some(rec)) if rec.status == TaskStatus::Pending => {}
        other => fail(B, format!("a stopped org took a task: {other:?}")),
    }
    if slow.runs().len() != 1 {
        fail(B, format!("{} runs", slow.runs().len()));
    }
}

/// An org hosting `x` (the suite's chart), and the principal's stream of
/// dead letters, opened before anything is refused.
async fn x_with_dead_letters(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    x: Scripted,
) -> (Org, PrincipalStream) {
    let o = start(b, t, s, org, vec![("x", Arc::new(x))]).await;
    let dead = o
        .principal()
        .dead_letters()
        .await
        .unwrap_or_else(|e| fail(b, e));
    (o, dead)
}
