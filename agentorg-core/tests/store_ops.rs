//! What one delegation round trip costs in store operations, on the memory
//! backends: at most 3 commits and 2 reads (see BENCHMARKS.md for which).
//!
//! The principal delegates (a read of the worker's breaker; the task and its
//! outbox entry in one commit), the worker claims the task (a read of the
//! task; the claim and the task's `in_progress` status in one commit) and
//! commits its outcome (the task, the completion record and the result's
//! outbox entry in one commit). Published outbox entries are deleted by
//! riding on the next commit, or by the cleaner after a short linger.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::runtime::{Org, PrincipalStream};
use agentorg_core::store::{
    ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage, MemoryStore, StateStore,
    StateStoreExt, StoreError, Version, WatchTarget, Write,
};
use agentorg_core::transport::MemoryTransport;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;

/// The memory store, logging every get and commit.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    log: Mutex<Vec<Op>>,
}

/// One store call: a read (`get <key>`) or a commit (`commit <writes>`).
#[derive(Debug, Clone)]
struct Op {
    commit: bool,
    what: String,
}

impl Counting {
    fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }
    fn push(&self, op: Op) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counting({})", self.inner)
    }
}

#[async_trait]
impl StateStore for Counting {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        self.push(Op {
            commit: false,
            what: format!("get {key}"),
        });
        self.inner.get(key).await
    }
    async fn list(&self, c: &CollectionPath, o: ListOptions) -> Result<ListPage, StoreError> {
        self.inner.list(c, o).await
    }
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        let what: Vec<String> = writes
            .iter()
            .map(|w| {
                let op = if matches!(w, Write::Delete { .. }) {
                    "delete"
                } else {
                    "put"
                };
                format!("{op} {}", w.key())
            })
            .collect();
        self.push(Op {
            commit: true,
            what: format!("commit {}", what.join(", ")),
        });
        self.inner.commit(writes).await
    }
    async fn watch(&self, t: WatchTarget) -> Result<ChangeStream, StoreError> {
        self.inner.watch(t).await
    }
}

async fn round_trip(org: &Org, inbox: &mut PrincipalStream) {
    let task = org
        .principal()
        .delegate("worker", TaskSpec::new("ping"))
        .await
        .expect("delegated");
    loop {
        let env = inbox
            .next()
            .await
            .expect("the inbox goes on")
            .expect("a readable result");
        if env.correlation_id.as_ref() == Some(&task.task_id) {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_delegation_round_trip_costs_at_most_3_commits_and_2_reads() {
    let chart = OrgChart::builder("ops")
        .principal("founder")
        .role(RoleSpec::new("worker").reports_to("founder"))
        .build()
        .expect("a valid chart");
    let store = Arc::new(Counting::default());
    let org = Org::builder(chart)
        .transport(Arc::new(MemoryTransport::new()))
        .store(store.clone())
        .agent(
            "worker",
            agent_fn(|_| async { Ok(Outcome::Complete(json!("done"))) }),
        )
        .start()
        .await
        .expect("the org starts");
    let mut inbox = org.principal().inbox().await.expect("the inbox");
    // The first round trip warms up (timers read, consumers bound).
    round_trip(&org, &mut inbox).await;
    for i in 0..20 {
        store.take();
        round_trip(&org, &mut inbox).await;
        let ops = store.take();
        let commits = ops.iter().filter(|o| o.commit).count();
        let gets = ops.len() - commits;
        let listed: Vec<&str> = ops.iter().map(|o| o.what.as_str()).collect();
        assert!(
            gets <= 2 && commits <= 3 && commits > 0,
            "round trip {i}: {gets} gets and {commits} commits: {listed:#?}"
        );
    }
    // Published entries are deleted: riding on commits, and the last ones
    // by the cleaner once no commit comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outbox = CollectionPath::new("agentorg/ops/outbox").expect("a path");
    let left = store.inner.list_all(&outbox).await.expect("listed");
    assert!(left.is_empty(), "outbox entries left: {left:?}");
    org.shutdown().await;
}
