//! The runtime conformance suite on the memory backends, on tokio's paused
//! clock (leases, backoff and cool-downs pass in virtual time).

use std::sync::Arc;

use agentorg_core::conformance::runtime as suite;
use agentorg_core::conformance::unique_org;
use agentorg_core::store::{MemoryStore, StateStore};
use agentorg_core::transport::{MemoryTransport, Transport};

fn backends() -> (Arc<dyn Transport>, Arc<dyn StateStore>) {
    (
        Arc::new(MemoryTransport::new()),
        Arc::new(MemoryStore::new()),
    )
}

// Every case of `runtime::CASES`, each a test on its own backends.
agentorg_core::conformance_tests!(runtime, #[tokio::test(start_paused = true)], |org| {
    let (t, s) = backends();
    Some((t, s, ()))
});

/// The whole suite once more on one shared transport and store, in real
/// time and on several threads, as a real deployment runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_in_real_time_on_shared_backends() {
    let (t, s) = backends();
    suite::run_all(t, s, unique_org).await;
}

mod hosting {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use agentorg_core::agent::{agent_fn, Agent, AgentError, Context, Outcome, Task, TaskSpec};
    use agentorg_core::conformance::runtime::{suite_chart, suite_config};
    use agentorg_core::conformance::unique_org;
    use agentorg_core::hierarchy::TaskStatus;
    use agentorg_core::runtime::{AgentOptions, AgentState, Org, OrgError, RuntimeConfig};
    use async_trait::async_trait;
    use serde_json::Value;

    /// Records how many handlers run at once.
    #[derive(Default)]
    struct Busy {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    #[async_trait]
    impl Agent for Busy {
        async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Outcome::Complete(Value::Null))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn per_agent_concurrency_is_a_limit() {
        for limit in [1, 3] {
            let busy = Arc::new(Busy::default());
            let org = Org::builder(suite_chart(&unique_org()))
                .config(suite_config())
                .agent_with(
                    "x",
                    Arc::clone(&busy) as Arc<dyn Agent>,
                    AgentOptions::default().concurrency(limit),
                )
                .start()
                .await
                .unwrap();
            let mut ids = Vec::new();
            for i in 0..8 {
                ids.push(
                    org.principal()
                        .delegate("x", TaskSpec::new(format!("t{i}")))
                        .await
                        .unwrap()
                        .task_id,
                );
            }
            for id in &ids {
                let rec = org
                    .principal()
                    .wait_for(id, Duration::from_secs(60))
                    .await
                    .unwrap();
                assert_eq!(rec.status, TaskStatus::Completed);
            }
            assert_eq!(
                busy.max.load(Ordering::SeqCst),
                limit,
                "concurrency {limit}"
            );
            org.shutdown().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_follows_the_lifecycle() {
        let org = Org::builder(suite_chart(&unique_org()))
            .agent(
                "x",
                agent_fn(|_| async { Ok(Outcome::Complete(Value::Null)) }),
            )
            .agent(
                "y",
                agent_fn(|_| async { Ok(Outcome::Complete(Value::Null)) }),
            )
            .start()
            .await
            .unwrap();
        for _ in 0..100 {
            if org.is_ready() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(org.is_ready(), "{:?}", org.health());
        let roles: Vec<_> = org
            .health()
            .into_iter()
            .map(|h| (h.role.to_string(), h.state))
            .collect();
        assert_eq!(
            roles,
            [
                ("x".into(), AgentState::Ready),
                ("y".into(), AgentState::Ready)
            ]
        );
        org.shutdown().await;
        org.shutdown().await; // idempotent
        assert!(org.health().iter().all(|h| h.state == AgentState::Stopped));
    }

    /// Settled claims are kept for the retention, then the sweep deletes
    /// them; a claim still running is never deleted.
    #[tokio::test(start_paused = true)]
    async fn settled_claims_expire_after_the_retention() {
        use agentorg_core::store::{CollectionPath, MemoryStore, StateStoreExt};
        let org_name = unique_org();
        let store = Arc::new(MemoryStore::new());
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = Arc::clone(&gate);
        let org = Org::builder(suite_chart(&org_name))
            .store(store.clone())
            .config(
                suite_config()
                    .with_claim_retention(Duration::from_secs(10))
                    .with_lease(Duration::from_secs(60)),
            )
            .agent(
                "x",
                agent_fn(|_| async { Ok(Outcome::Complete(Value::Null)) }),
            )
            .agent(
                "y",
                agent_fn(move |_| {
                    let g = Arc::clone(&g);
                    async move {
                        g.notified().await;
                        Ok(Outcome::Complete(Value::Null))
                    }
                }),
            )
            .start()
            .await
            .unwrap();
        let claims = CollectionPath::new(format!("agentorg/{org_name}/claims")).unwrap();
        let done = org
            .principal()
            .delegate("x", TaskSpec::new("quick"))
            .await
            .unwrap();
        org.principal()
            .wait_for(&done.task_id, Duration::from_secs(5))
            .await
            .unwrap();
        let _running = org
            .principal()
            .delegate("y", TaskSpec::new("slow"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(store.list_all(&claims).await.unwrap().len(), 2);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let left = store.list_all(&claims).await.unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].value["state"], "running");
        gate.notify_waiters();
        org.shutdown().await;
    }

    /// A handler past its timeout is a transient failure: retried, then
    /// dead-lettered when the attempts run out.
    #[tokio::test(start_paused = true)]
    async fn a_handler_timeout_is_a_transient_failure() {
        let hangs = agent_fn(|_| std::future::pending());
        let org = Org::builder(suite_chart(&unique_org()))
            .config(suite_config())
            .agent_with(
                "x",
                Arc::new(hangs),
                AgentOptions::default().handler_timeout(Duration::from_secs(5)),
            )
            .start()
            .await
            .unwrap();
        let id = org
            .principal()
            .delegate("x", TaskSpec::new("forever"))
            .await
            .unwrap()
            .task_id;
        let rec = org
            .principal()
            .wait_for(&id, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(rec.status, TaskStatus::DeadLettered);
        assert!(rec.error.unwrap().contains("timed out"));
        org.shutdown().await;
    }

    /// Two shutdowns at once: both return only when the in-flight handler
    /// has finished.
    #[tokio::test(start_paused = true)]
    async fn concurrent_shutdowns_both_wait_for_the_drain() {
        let slow = agent_fn(|_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(Outcome::Complete(Value::Null))
        });
        let org = Arc::new(
            Org::builder(suite_chart(&unique_org()))
                .config(suite_config())
                .agent("x", slow)
                .start()
                .await
                .unwrap(),
        );
        let id = org
            .principal()
            .delegate("x", TaskSpec::new("slow"))
            .await
            .unwrap()
            .task_id;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (a, b) = (Arc::clone(&org), Arc::clone(&org));
        let (ra, rb) = tokio::join!(
            async move {
                a.shutdown().await;
                a.principal().task(&id).await.unwrap().unwrap().status
            },
            async move {
                b.shutdown().await;
                b.health()
            }
        );
        assert_eq!(ra, TaskStatus::Completed);
        assert!(rb.iter().all(|h| h.state == AgentState::Stopped), "{rb:?}");
    }

    #[tokio::test]
    async fn the_builder_refuses_what_cannot_run() {
        let chart = || suite_chart(&unique_org());
        let leaf = || agent_fn(|_| async { Ok(Outcome::Complete(Value::Null)) });
        let unknown = Org::builder(chart()).agent("nobody", leaf()).start().await;
        assert!(matches!(unknown, Err(OrgError::UnknownRole { role }) if role == "nobody"));
        let principal = Org::builder(chart()).agent("p", leaf()).start().await;
        assert!(matches!(principal, Err(OrgError::PrincipalHosted { .. })));
        let twice = Org::builder(chart())
            .agent("x", leaf())
            .agent("x", leaf())
            .start()
            .await;
        assert!(matches!(twice, Err(OrgError::DuplicateAgent { .. })));
        let bad = Org::builder(chart())
            .config(RuntimeConfig::default().with_max_attempts(0))
            .start()
            .await;
        assert!(matches!(bad, Err(OrgError::InvalidConfig { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn delegation_outside_the_chart_is_refused_before_the_transport() {
        let org = Org::builder(suite_chart(&unique_org()))
            .start()
            .await
            .unwrap();
        // `w` reports to `m`, not to the principal, and no shortcut exists.
        let refused = org
            .principal()
            .delegate("w", TaskSpec::new("skip a level"))
            .await;
        match refused {
            Err(agentorg_core::agent::DelegateError::NotAllowed(r)) => {
                assert_eq!(r.to, "w");
                assert!(r.to_string().contains("w"), "{r}");
            }
            other => panic!("{other:?}"),
        }
        org.shutdown().await;
    }
}
