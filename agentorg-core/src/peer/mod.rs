//! Peer channels: messages between two roles the chart declares as peers.
//!
//! GenBrain's four channels — backend↔frontend (API contracts), devops↔cso
//! (infrastructure security), backend↔devops (deployment configs),
//! frontend↔marketing (brand assets) — are declared in the chart; anything
//! else is refused before it reaches the transport.
//!
//! * [`Context::send_peer`](crate::runtime::Context::send_peer) sends a typed
//!   message on `<org>.peer.<from>.<to>`, durably and exactly once (it is
//!   committed with the handler's outcome, then published); the receiver's
//!   [`Agent::on_peer`](crate::agent::Agent::on_peer) gets it.
//! * [`Context::request_peer`](crate::runtime::Context::request_peer) asks a
//!   peer and waits for its answer (core request/reply on `<org>.rpc.<to>`,
//!   at most once, with a timeout); the peer's
//!   [`Agent::on_peer_request`](crate::agent::Agent::on_peer_request)
//!   answers. Requests are served outside the peer's concurrency limit, so
//!   two peers asking each other cannot deadlock.
//!
//! The pattern ([`Peer`]) registers the handler of every role's peer
//! subjects and the request server of each hosted role with peers; it calls
//! into a role's code through [`PeerCallbacks`], which the agent layer
//! implements for every `Agent`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::peer::PeerMessage;
//! use agentorg_core::runtime::Org;
//! use async_trait::async_trait;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct ApiContractChange { endpoint: String, change_type: String }
//!
//! struct Backend;
//! #[async_trait]
//! impl Agent for Backend {
//!     async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         let change = ApiContractChange { endpoint: "/api/v2/analytics".into(), change_type: "breaking".into() };
//!         cx.send_peer("frontend", &change)?; // declared channel: allowed
//!         assert!(cx.send_peer("cso", &change).is_err()); // undeclared: refused
//!         Ok(Outcome::Complete(serde_json::json!("shipped")))
//!     }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Frontend(Arc<Mutex<Vec<String>>>);
//! #[async_trait]
//! impl Agent for Frontend {
//!     async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
//!         Ok(Outcome::Complete(serde_json::Value::Null))
//!     }
//!     async fn on_peer(&self, _cx: &Context, msg: PeerMessage) -> Result<(), AgentError> {
//!         let change: ApiContractChange = msg.decode()?;
//!         self.0.lock().unwrap().push(change.endpoint);
//!         Ok(())
//!     }
//! }
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("backend").reports_to("founder"))
//!     .role(RoleSpec::new("frontend").reports_to("founder"))
//!     .role(RoleSpec::new("cso").reports_to("founder"))
//!     .peer("backend", "frontend")
//!     .build()?;
//! let frontend = Frontend::default();
//! let org = Org::builder(chart)
//!     .agent("backend", Backend)
//!     .agent("frontend", frontend.clone())
//!     .start()
//!     .await?;
//! let task = org.principal().delegate("backend", TaskSpec::new("change the API")).await?;
//! task.wait(Duration::from_secs(5)).await?;
//! # for _ in 0..100 { if !frontend.0.lock().unwrap().is_empty() { break } tokio::time::sleep(Duration::from_millis(10)).await; }
//! assert_eq!(*frontend.0.lock().unwrap(), ["/api/v2/analytics"]);
//! org.shutdown().await;
//! # Ok(()) }
//! ```

use serde::de::DeserializeOwned;
use serde_json::Value;

use async_trait::async_trait;

use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{agent_error_from, AgentError, Context, Pattern, Registry};

mod handler;
mod send;

/// The peer pattern, as registered with the kernel: the handler of every
/// role's peer subjects, and a request server for each hosted role with
/// peers. `Org::builder` registers it.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct Peer;

impl Pattern for Peer {
    fn name(&self) -> &'static str {
        "peer"
    }

    fn register(&self, registry: &mut Registry) {
        registry
            .handler(handler::PeerHandler)
            .service(handler::RequestServer);
    }
}

/// The peer pattern's calls into a role's code: a message from a declared
/// peer, and a request to answer.
///
/// Implemented for every `Agent` by the agent layer (implement `Agent`); the
/// pattern's handler finds it among a hosted role's application objects as
/// `Arc<dyn PeerCallbacks>`.
#[async_trait]
pub trait PeerCallbacks: Send + Sync + 'static {
    /// A message from a declared peer (exactly once, like a task).
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError>;

    /// A request from a declared peer, answered with the returned value (at
    /// most once: a request is not retried).
    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<serde_json::Value, AgentError>;
}

/// A message received on a peer channel.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PeerMessage {
    /// The envelope id (the dedupe key).
    pub id: MessageId,
    /// The sending peer.
    pub from: Name,
    /// The receiving role.
    pub to: Name,
    /// The message as sent (JSON).
    pub payload: Value,
}

impl PeerMessage {
    /// A message (for tests and backends).
    pub fn new(id: MessageId, from: Name, to: Name, payload: Value) -> Self {
        Self {
            id,
            from,
            to,
            payload,
        }
    }

    /// The payload as a typed value.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, PeerError> {
        crate::runtime::from_json(&self.payload).map_err(|e| PeerError::Decode {
            message: e.to_string(),
        })
    }
}

/// A peer message could not be sent or answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The chart declares no channel between the two roles. Refused before
    /// anything reaches the transport.
    #[error("no peer channel between `{from}` and `{to}` is declared in the chart")]
    NotDeclared {
        /// The sender.
        from: String,
        /// The intended receiver.
        to: String,
    },
    /// The message could not be encoded or decoded as the expected type.
    #[error("peer message does not fit the expected type: {message}")]
    Decode {
        /// The serializer's message.
        message: String,
    },
    /// The peer answered a request with an error.
    #[error("peer `{peer}` answered with an error: {message}")]
    Remote {
        /// The peer.
        peer: Name,
        /// Whether retrying may help (the peer's error was transient).
        retryable: bool,
        /// Its message.
        message: String,
    },
    /// The transport failed (no responder, timeout, …).
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
}

impl PeerError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Remote { retryable, .. } => *retryable,
            Self::Transport(e) => e.is_retryable(),
            _ => false,
        }
    }
}

agent_error_from!(PeerError);
