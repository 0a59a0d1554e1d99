//! Dead letters on a real nats-server: a poison task, and a flood of
//! malformed and oversized payloads published raw to an inbox.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::agent::{AgentError, Outcome, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::conformance::runtime::Scripted;
use agentorg_core::conformance::unique_org;
use agentorg_core::envelope::Kind;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{AgentOptions, Org, RuntimeConfig};
use agentorg_core::store::MemoryStore;
use agentorg_core::transport::{PublishOptions, Transport};
use agentorg_core::Name;
use agentorg_testkit::{nats_or_skip, NatsServer};
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
        .with_backoff(Duration::from_millis(400), Duration::from_secs(2))
        .with_jitter(false)
}

/// A task whose handler always fails transiently runs exactly 3 times and
/// is dead-lettered with attempts = 3, while the tasks behind it are
/// handled meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_task_dead_lettered_at_attempt_3_while_others_flow() {
    common::init_tracing();
    let Some(nats) = nats_or_skip!() else { return };
    let org = unique_org();
    let t = common::dyn_transport(&nats.url(), &org).await;
    let x = Scripted::new(|task, _| async move {
        if task.title == "poison" {
            Err(AgentError::transient("always fails"))
        } else {
            Ok(Outcome::Complete(json!(task.title)))
        }
    });
    let o = Org::builder(chart(&org))
        .transport(t)
        .store(Arc::new(MemoryStore::new()))
        .config(config())
        .agent_with("x", Arc::new(x.clone()), AgentOptions::default())
        .start()
        .await
        .unwrap();
    let principal = o.principal();
    let mut dead = principal.dead_letters().await.unwrap();
    let poison = principal
        .delegate("x", TaskSpec::new("poison"))
        .await
        .unwrap()
        .task_id;
    let mut good = Vec::new();
    for i in 0..20 {
        good.push(
            principal
                .delegate("x", TaskSpec::new(format!("good{i}")))
                .await
                .unwrap()
                .task_id,
        );
    }
    let dl = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .expect("a dead letter")
        .unwrap()
        .unwrap();
    assert_eq!(dl.kind, Kind::DeadLetter);
    assert_eq!(dl.causation_id.as_ref(), Some(&poison));
    assert_eq!(dl.payload["attempts"], 3);
    assert_eq!(dl.payload["reason"]["code"], "attempts_exhausted");
    let rec = principal
        .wait_for(&poison, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rec.status, TaskStatus::DeadLettered);
    for id in &good {
        let rec = principal
            .wait_for(id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(rec.status, TaskStatus::Completed);
    }
    let runs = x.runs();
    let poison_runs: Vec<_> = runs.iter().filter(|r| r.title == "poison").collect();
    let attempts: Vec<u32> = poison_runs.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "the poison's attempts");
    // The others were not held up behind it: some finished before its last
    // attempt began.
    let last = poison_runs[2].started;
    let before = runs
        .iter()
        .filter(|r| r.title != "poison" && r.ended < last)
        .count();
    assert!(
        before > 0,
        "no good task finished before the poison's third attempt"
    );
    assert_eq!(runs.len(), 3 + 20);
    tokio::time::timeout(Duration::from_secs(3), dead.next())
        .await
        .expect_err("one dead letter only");
    o.shutdown().await;
}

/// 100 malformed or oversized payloads published raw to a role's inbox are
/// each dead-lettered with its reason (and one alert each), and the role
/// goes on with real work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_malformed_or_oversized_payloads_dead_lettered() {
    common::init_tracing();
    // Room for payloads above the consumers' 1 MiB decode limit.
    let Some(nats) = nats_or_skip!(NatsServer::builder()
        .config_text("max_payload: 2MB")
        .start())
    else {
        return;
    };
    let org = unique_org();
    let t = common::dyn_transport(&nats.url(), &org).await;
    let x = Scripted::completing();
    let o = Org::builder(chart(&org))
        .transport(Arc::clone(&t))
        .store(Arc::new(MemoryStore::new()))
        .config(config())
        .agent_with(
            "x",
            Arc::new(x.clone()),
            AgentOptions::default().concurrency(4),
        )
        .start()
        .await
        .unwrap();
    let principal = o.principal();
    let mut dead = principal.dead_letters().await.unwrap();
    let mut alerts = principal.alerts().await.unwrap();
    let n = |v: &str| Name::new(v).unwrap();
    let inbox = o.subjects().inbox(&n("x"), &n("p"));
    for i in 0..100u32 {
        // Each distinct: the runtime recognises a payload it already
        // dead-lettered by its hash.
        let raw = if i % 5 == 0 {
            let mut big = format!("{{\"v\":1,\"n\":{i},\"pad\":\"").into_bytes();
            big.resize(1_200_000, b'x');
            big
        } else {
            format!("{{\"v\":1, broken {i}").into_bytes()
        };
        t.publish(&inbox, raw.into(), PublishOptions::default())
            .await
            .unwrap();
    }
    let after = principal
        .delegate("x", TaskSpec::new("after the junk"))
        .await
        .unwrap()
        .task_id;
    let mut codes = BTreeMap::<String, u32>::new();
    for _ in 0..100 {
        let dl = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("a dead letter per payload")
            .unwrap()
            .unwrap();
        let code = dl.payload["reason"]["code"].as_str().unwrap().to_owned();
        assert!(
            dl.payload["reason"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "a reason message: {}",
            dl.payload
        );
        assert!(!dl.payload["original"].is_null(), "the original is kept");
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get("malformed"), Some(&80), "{codes:?}");
    assert_eq!(codes.get("oversized"), Some(&20), "{codes:?}");
    for _ in 0..100 {
        let a = tokio::time::timeout(Duration::from_secs(30), alerts.next())
            .await
            .expect("an alert per dead letter")
            .unwrap()
            .unwrap();
        assert_eq!(a.kind, Kind::Alert);
    }
    let rec = principal
        .wait_for(&after, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(x.runs().len(), 1, "only the real task ran");
    let health = o.health();
    assert_eq!(health[0].dead_lettered, 100, "{health:?}");
    o.shutdown().await;
}
