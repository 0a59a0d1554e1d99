//! Peer channels: messages and requests only on declared channels.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use crate::envelope::{Envelope, Kind, MessageId};
use crate::hierarchy::TaskStatus;
use crate::name::Name;
use crate::peer::{PeerError, PeerMessage};
use crate::store::StateStore;
use crate::transport::Transport;
use crate::transport::TransportExt;

use super::super::fail;
use super::support::*;

/// An API contract change, as the backend sends it to the frontend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiContractChange {
    endpoint: String,
    change_type: String,
    version: u32,
}

/// What the backend asks the devops about a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeployQuery {
    service: String,
}

/// The devops' answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DeployConfig {
    service: String,
    replicas: u32,
    image: String,
}

/// Peer channels: the backend's message to the frontend (declared) is
/// delivered exactly once, typed; to the cso or marketing (undeclared) it
/// is refused with `NotDeclared` and nothing is sent; a request to the
/// devops (declared) gets its typed answer, one to the cso is refused, one
/// to a peer that answers no requests comes back as its error. A peer
/// message forged on an undeclared channel is refused by the receiver.
pub async fn peer_messages_only_on_declared_channels(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "peer_messages_only_on_declared_channels";
    let j = Arc::new(Journal::default());
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    /// Sends, and asks, every peer it can think of.
    struct Backend(Arc<Mutex<Vec<String>>>);
    #[async_trait]
    impl Agent for Backend {
        async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
            let version = u32::try_from(task.input["version"].as_u64().unwrap_or(0)).unwrap_or(0);
            let change = ApiContractChange {
                endpoint: "/api/v2/analytics".into(),
                change_type: "breaking".into(),
                version,
            };
            let mut seen = Vec::new();
            let refused = |r: Result<(), PeerError>, to: &str| match r {
                Err(PeerError::NotDeclared { from, to: t }) if from == "backend" && t == to => {
                    format!("send to {to}: not declared")
                }
                other => format!("send to {to}: {other:?}"),
            };
            seen.push(match cx.send_peer("frontend", &change) {
                Ok(()) => "send to frontend: ok".to_owned(),
                Err(e) => format!("send to frontend: {e}"),
            });
            seen.push(refused(cx.send_peer("cso", &change), "cso"));
            seen.push(refused(cx.send_peer("marketing", &change), "marketing"));
            let timeout = Duration::from_secs(5);
            let query = DeployQuery {
                service: "analytics".into(),
            };
            seen.push(
                match cx
                    .request_peer::<_, DeployConfig>("devops", &query, timeout)
                    .await
                {
                    Ok(c) if c.service == "analytics" && c.replicas == 3 => {
                        format!("ask devops: {}", c.image)
                    }
                    other => format!("ask devops: {other:?}"),
                },
            );
            seen.push(
                match cx.request_peer::<_, Value>("cso", &query, timeout).await {
                    Err(PeerError::NotDeclared { .. }) => "ask cso: not declared".to_owned(),
                    other => format!("ask cso: {other:?}"),
                },
            );
            seen.push(
                match cx
                    .request_peer::<_, Value>("frontend", &query, timeout)
                    .await
                {
                    Err(PeerError::Remote {
                        peer, retryable, ..
                    }) if peer == "frontend" && !retryable => "ask frontend: refused".to_owned(),
                    other => format!("ask frontend: {other:?}"),
                },
            );
            if let Ok(mut o) = self.0.lock() {
                o.extend(seen);
            }
            Ok(Outcome::Complete(json!("contract changed")))
        }
    }
    /// Answers deployment questions.
    struct Devops;
    #[async_trait]
    impl Agent for Devops {
        async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
            Ok(Outcome::Complete(Value::Null))
        }
        async fn on_peer_request(
            &self,
            _cx: &Context,
            request: PeerMessage,
        ) -> Result<Value, AgentError> {
            let q: DeployQuery = request.decode()?;
            serde_json::to_value(DeployConfig {
                service: q.service,
                replicas: 3,
                image: "analytics:v2".into(),
            })
            .map_err(|e| AgentError::permanent(e.to_string()))
        }
    }
    let o = start(
        B,
        &t,
        &s,
        &org,
        vec![
            ("ceo", Arc::new(Planner::new(&j))),
            ("cto", Arc::new(Planner::new(&j))),
            ("backend", Arc::new(Backend(Arc::clone(&outcomes)))),
            ("frontend", Arc::new(Leaf::completing(&j))),
            ("devops", Arc::new(Devops)),
            ("cso", Arc::new(Leaf::completing(&j))),
            ("marketing", Arc::new(Leaf::completing(&j))),
        ],
    )
    .await;
    let backend = name(B, "backend");
    let mut undeclared = Vec::new();
    for to in ["cso", "marketing"] {
        undeclared.push(tap(B, &t, o.subjects().peer(&backend, &name(B, to))).await);
    }
    let p = o.principal();
    for version in [1, 2] {
        let spec =
            TaskSpec::new(format!("Change the contract v{version}")).input(plan(vec![step(
                "cto",
                "Contract change",
            )
            .then(vec![Step {
                input: json!({"version": version}),
                ..step("backend", "Change the analytics API")
            }])]));
        let root = delegate(B, &p, "ceo", spec).await;
        if wait_done(B, &root).await.status != TaskStatus::Completed {
            fail(B, "the backend's chain did not complete");
        }
    }
    let seen = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let expected = [
        "send to frontend: ok",
        "send to cso: not declared",
        "send to marketing: not declared",
        "ask devops: analytics:v2",
        "ask cso: not declared",
        "ask frontend: refused",
    ];
    if seen.len() != 12 || seen[..6] != expected || seen[6..] != expected {
        fail(B, format!("the backend's peer calls: {seen:?}"));
    }
    // Each message reaches the frontend once, typed, in order.
    eventually(B, "both contract changes at the frontend", || async {
        j.peer_messages_at("frontend").len() >= 2
    })
    .await;
    let got = j.peer_messages_at("frontend");
    let versions: Vec<u32> = got
        .iter()
        .map(|m| {
            m.decode::<ApiContractChange>()
                .unwrap_or_else(|e| fail(B, e))
                .version
        })
        .collect();
    let ids: HashSet<&MessageId> = got.iter().map(|m| &m.id).collect();
    if versions != [1, 2] || ids.len() != 2 || got.iter().any(|m| m.from != "backend") {
        fail(B, format!("peer messages at the frontend: {got:?}"));
    }
    for mut tap in undeclared {
        let sent = drain(&mut tap, Duration::from_millis(200)).await;
        if !sent.is_empty() {
            fail(B, format!("sent on an undeclared channel: {sent:?}"));
        }
    }
    // The receiver refuses a peer message on an undeclared channel.
    let cso = name(B, "cso");
    let forged = Envelope::new(org.clone(), backend.clone(), Kind::Peer, json!({"x": 1}))
        .with_to(cso.clone());
    if let Err(e) = t
        .publish_envelope(&o.subjects().peer(&backend, &cso), &forged)
        .await
    {
        fail(B, e);
    }
    let found = dead_letter_of(B, &p, &forged.id).await;
    if found.reason_code != "not_allowed" || found.role != "cso" {
        fail(
            B,
            format!("the forged peer message's dead letter: {found:?}"),
        );
    }
    if !j.peer_messages_at("cso").is_empty() || j.peer_messages_at("frontend").len() != 2 {
        fail(B, format!("peer deliveries: {:?}", j.entries()));
    }
    o.shutdown().await;
}
