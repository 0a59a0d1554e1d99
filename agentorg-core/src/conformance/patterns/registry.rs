//! The registry of roles and their liveness.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::{Agent, TaskSpec};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::runtime::Principal;
use crate::store::StateStore;
use crate::transport::Transport;

use super::super::{fail, EVENTUALLY};
use super::support::*;

/// The registry and liveness: after its tasks, the ceo's registry entry
/// shows them completed, its capabilities from the chart and the usage its
/// handler reported; the liveness view shows the hosted roles up, the
/// others down, and a role up while a second process hosts it and down
/// after that process shuts down.
pub async fn registry_and_liveness(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "registry_and_liveness";
    let j = Arc::new(Journal::default());
    let hosted: Vec<(&str, Arc<dyn Agent>)> = vec![
        (
            "ceo",
            Arc::new(Leaf::completing(&j).with_usage(1_000, 0.25)),
        ),
        ("cto", Arc::new(Leaf::completing(&j))),
        ("marketing", Arc::new(Leaf::completing(&j))),
    ];
    let o = start(B, &t, &s, &org, hosted).await;
    let p = o.principal();
    for i in 0..3 {
        let h = delegate(B, &p, "ceo", TaskSpec::new(format!("Plan {i}"))).await;
        if wait_done(B, &h).await.status != TaskStatus::Completed {
            fail(B, "a task did not complete");
        }
    }
    let rec = eventually_some(
        B,
        "the ceo's registry entry with 3 tasks and their usage",
        EVENTUALLY,
        Duration::from_millis(100),
        || async {
            let r = p.agent_record("ceo").await.ok().flatten()?;
            (r.tasks_completed >= 3 && r.tokens >= 3_000 && r.cost_usd >= 0.75 - 1e-9).then_some(r)
        },
    )
    .await;
    if rec.agent_id != "ceo"
        || rec.capabilities != ["planning", "delegation"]
        || rec.tasks_failed != 0
        || rec.last_active.is_none()
        || rec.current_task.is_none()
    {
        fail(B, format!("the ceo's registry entry: {rec:?}"));
    }
    match p.agent_record("cso").await {
        Ok(None) => {}
        other => fail(B, format!("the never-hosted cso's entry: {other:?}")),
    }
    let up_roles = |p: Principal| async move {
        let l = p.liveness().await.unwrap_or_else(|e| fail(B, e));
        let up: Vec<String> = l
            .iter()
            .filter(|r| r.up)
            .map(|r| r.role.to_string())
            .collect();
        (up, l)
    };
    eventually(B, "the hosted roles up, the others down", || {
        let p = p.clone();
        async move { up_roles(p).await.0 == ["ceo", "cto", "marketing"] }
    })
    .await;
    let (_, all) = up_roles(p.clone()).await;
    if all.len() != 7
        || all
            .iter()
            .any(|r| r.up && (r.replicas != 1 || r.last_seen.is_none()))
    {
        fail(B, format!("liveness {all:?}"));
    }
    // A second process hosts the backend: up while it runs, down after.
    let other = start(
        B,
        &t,
        &s,
        &org,
        vec![("backend", Arc::new(Leaf::completing(&j)))],
    )
    .await;
    eventually(B, "the backend up", || {
        let p = p.clone();
        async move { up_roles(p).await.0.iter().any(|r| r == "backend") }
    })
    .await;
    other.shutdown().await;
    eventually(B, "the backend down after its process stopped", || {
        let p = p.clone();
        async move { !up_roles(p).await.0.iter().any(|r| r == "backend") }
    })
    .await;
    o.shutdown().await;
}
