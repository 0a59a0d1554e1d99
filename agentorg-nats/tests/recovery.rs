//! Crashes and restarts on a real nats-server: `kill -9` of the server
//! during a stream of publishes, a runtime aborted mid-handler, a bound
//! consumer across a restart, publishes during an outage.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentorg_core::agent::{agent_fn, AgentError, Outcome, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::conformance::unique_org;
use agentorg_core::envelope::TaskId;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{AgentOptions, Org, RuntimeConfig};
use agentorg_core::store::{MemoryStore, StateStore};
use agentorg_core::subject::{SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport, TransportError};
use agentorg_core::Name;
use agentorg_testkit::nats_or_skip;
use futures::StreamExt;
use serde_json::json;

fn chart(org: &Name) -> OrgChart {
    OrgChart::builder(org.as_str())
        .principal("p")
        .role(RoleSpec::new("x").reports_to("p"))
        .build()
        .unwrap()
}

fn config() -> RuntimeConfig {
    RuntimeConfig::default()
        .with_lease(Duration::from_secs(2))
        .with_ack_wait(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(200), Duration::from_secs(1))
        .with_retry_delay(Duration::from_millis(200))
        .with_sweep(Duration::from_secs(1), Duration::from_millis(500))
}

/// `kill -9` of the server while 1,000 tasks are being delegated (each a
/// durable publish) and a role is handling them: after the restart every
/// task is handled, and no handler runs twice for one task — even where
/// JetStream delivers acknowledged messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_1000_publishes_every_task_handled_once() {
    common::init_tracing();
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    let org = unique_org();
    let (t, record) = common::recording(common::dyn_transport(&nats.url(), &org).await);
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    // The side effect: one count per handler run, per task.
    let runs: Arc<Mutex<HashMap<TaskId, u32>>> = Arc::default();
    let r = Arc::clone(&runs);
    let worker = agent_fn(move |task| {
        let r = Arc::clone(&r);
        async move {
            *r.lock().unwrap().entry(task.id.clone()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok(Outcome::Complete(json!({ "done": task.title })))
        }
    });
    let o = Org::builder(chart(&org))
        .transport(t.clone())
        .store(Arc::clone(&store))
        .config(config())
        .agent_with(
            "x",
            Arc::new(worker),
            AgentOptions::default().concurrency(8),
        )
        .start()
        .await
        .unwrap();
    let principal = o.principal();
    const N: usize = 1000;
    let delegated = Arc::new(AtomicU32::new(0));
    let d = Arc::clone(&delegated);
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(N);
        for i in 0..N {
            let id = principal
                .delegate("x", TaskSpec::new(format!("t{i}")))
                .await
                .unwrap_or_else(|e| panic!("delegation {i}: {e}"));
            ids.push(id.task_id);
            d.fetch_add(1, Ordering::SeqCst);
        }
        ids
    });
    // Crash the server a third of the way in, with tasks in every state.
    while delegated.load(Ordering::SeqCst) < (N / 3) as u32 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handled_before = runs.lock().unwrap().len();
    nats.kill9();
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().unwrap();
    eprintln!(
        "kill -9 after {} delegations ({handled_before} handled); restarted after {:?}",
        delegated.load(Ordering::SeqCst),
        crashed.elapsed()
    );
    let ids = publisher.await.unwrap();
    let principal = o.principal();
    let deadline = Duration::from_secs(90);
    let started = Instant::now();
    for id in &ids {
        let left = deadline.saturating_sub(started.elapsed());
        let rec = principal
            .wait_for(id, left.max(Duration::from_millis(1)))
            .await
            .unwrap_or_else(|e| panic!("task {id}: {e}"));
        assert_eq!(rec.status, TaskStatus::Completed, "task {id}");
    }
    // Let any replay of acknowledged messages arrive (ack wait, twice).
    tokio::time::sleep(Duration::from_secs(5)).await;
    o.shutdown().await;
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), N, "every task ran");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "tasks whose handler ran more than once: {twice:?}"
    );
    let rec = record.lock().unwrap();
    let to_x = |id: &String| ids.iter().any(|t| t.as_str() == id);
    let acked = rec
        .published
        .iter()
        .filter(|(id, (ok, _))| *ok > 0 && to_x(id))
        .count();
    let failed = rec
        .published
        .iter()
        .filter(|(id, (ok, _))| *ok == 0 && to_x(id))
        .count();
    let redelivered = rec
        .delivered
        .iter()
        .filter(|(id, a)| a.len() > 1 && to_x(id))
        .count();
    let replayed_as_first = rec
        .delivered
        .iter()
        .filter(|(id, a)| a.iter().filter(|n| **n == 1).count() > 1 && to_x(id))
        .count();
    eprintln!(
        "publishes acknowledged: {acked}, failed and left to the outbox: {failed}; \
         tasks delivered more than once: {redelivered} ({replayed_as_first} of them again as attempt 1); \
         handler runs: {} for {N} tasks",
        runs.values().sum::<u32>()
    );
    assert_eq!(acked + failed, N);
}

/// A runtime aborted mid-handler (nothing acknowledged, the claim left as
/// it was) over a shared store: its message comes back after the lease and
/// is finished once, by the next runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_runtime_message_returns_after_the_lease_and_finishes_once() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::dyn_transport(&nats.url(), &org).await;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let started = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&started);
    let hangs = agent_fn(move |_| {
        s.store(true, Ordering::SeqCst);
        std::future::pending::<Result<Outcome, AgentError>>()
    });
    let a = Org::builder(chart(&org))
        .transport(Arc::clone(&t))
        .store(Arc::clone(&store))
        .config(config())
        .agent("x", hangs)
        .start()
        .await
        .unwrap();
    let id = a
        .principal()
        .delegate("x", TaskSpec::new("survive"))
        .await
        .unwrap()
        .task_id;
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let crashed = Instant::now();
    a.abort().await;
    let finished = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::clone(&finished);
    let completes = agent_fn(move |task| {
        let f = Arc::clone(&f);
        async move {
            f.lock().unwrap().push((task.id.clone(), Instant::now()));
            Ok(Outcome::Complete(json!("ok")))
        }
    });
    let b = Org::builder(chart(&org))
        .transport(Arc::clone(&t))
        .store(Arc::clone(&store))
        .config(config())
        .agent("x", completes)
        .start()
        .await
        .unwrap();
    let rec = b
        .principal()
        .wait_for(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.shutdown().await;
    let finished = finished.lock().unwrap();
    assert_eq!(finished.len(), 1, "finished once: {finished:?}");
    let after = finished[0].1.duration_since(crashed);
    // The lease (2 s) was extended every third of it until the crash.
    assert!(
        after >= Duration::from_secs(1),
        "rerun {after:?} after the crash, before the lease ran out"
    );
}

/// A bound consumer keeps delivering across a `kill -9` and restart of the
/// server, without the caller binding again; what was published before the
/// crash and not acknowledged comes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_consumer_resumes_after_a_restart() {
    common::init_tracing();
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    let org = unique_org();
    let t = common::transport(&nats.url(), &org).await;
    let s = Subjects::new(org.clone());
    let n = |v: &str| Name::new(v).unwrap();
    let subject = s.event(&[n("tick")]);
    let c = ConsumerConfig::new(n("ticks"), SubjectPattern::from(&subject))
        .with_ack_wait(Duration::from_secs(2));
    t.ensure_consumer(&c).await.unwrap();
    let mut deliveries = t.consume(&c.name).await.unwrap();
    let publish = |i: u32| {
        let t = t.clone();
        let subject = subject.clone();
        async move {
            t.publish(
                &subject,
                format!("m{i}").into(),
                PublishOptions::with_msg_id(format!("m{i}")),
            )
            .await
            .unwrap()
        }
    };
    publish(1).await;
    let first = deliveries.next().await.unwrap().unwrap();
    assert_eq!(&first.raw()[..], b"m1");
    first.ack().await.unwrap();
    publish(2).await; // stored, never acknowledged before the crash
    nats.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart().unwrap();
    publish(3).await; // retried until the server is back
    let mut got = Vec::new();
    while !got.contains(&b"m3".to_vec()) {
        let d = tokio::time::timeout(Duration::from_secs(30), deliveries.next())
            .await
            .expect("a delivery after the restart")
            .expect("the stream goes on")
            .expect("no error");
        got.push(d.raw().to_vec());
        d.ack().await.unwrap();
    }
    assert!(got.contains(&b"m2".to_vec()), "m2 came (again): {got:?}");
}

/// A publish while the server is down fails after the publish budget, with
/// a retryable error, and stores nothing twice; one whose server comes back
/// within the budget succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_during_an_outage_succeeds_after_restart_or_fails_retryably() {
    common::init_tracing();
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_request_timeout(Duration::from_millis(500))
        .with_publish_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let subject = Subjects::new(org.clone()).alerts();
    nats.kill9();
    let at = Instant::now();
    let r = t
        .publish(&subject, "lost?".into(), PublishOptions::with_msg_id("a"))
        .await;
    match &r {
        Err(e @ (TransportError::Unavailable { .. } | TransportError::Timeout { .. })) => {
            assert!(e.is_retryable());
        }
        other => panic!("publish with the server down: {other:?}"),
    }
    assert!(
        at.elapsed() >= Duration::from_secs(2),
        "gave up after {:?}",
        at.elapsed()
    );
    // Down again at the start of the next publish, back within its budget.
    let t2 = t.clone();
    let s2 = subject.clone();
    let pending = tokio::spawn(async move {
        t2.publish(&s2, "kept".into(), PublishOptions::with_msg_id("b"))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.restart().unwrap();
    // (Its acknowledgement may say "duplicate": an attempt queued while the
    // server was down can reach it before the retry does.)
    pending
        .await
        .unwrap()
        .expect("published once the server was back");
    // The failed publish may have been stored after all (its request was
    // queued while the server was down): retrying it with the same id
    // stores it at most once.
    t.publish(&subject, "lost?".into(), PublishOptions::with_msg_id("a"))
        .await
        .unwrap();
    let info = t
        .stream_info(agentorg_nats::StreamKind::DeadLetter)
        .await
        .unwrap();
    assert_eq!(info.state.messages, 2, "a and b, once each");
}
