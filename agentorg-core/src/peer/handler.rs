//! The peer pattern's handler of a role's peer subjects, and its request
//! server.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::Value;

use super::send::PeerReply;
use super::{PeerCallbacks, PeerMessage};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind, TraceContext};
use crate::name::Name;
use crate::runtime::{
    describe, AgentError, Claimed, Fault, Handler, HostedRole, Lifecycle, Reason, Service, Settle,
};
use crate::subject::{Route, SubjectPattern, Subjects};
use crate::transport::{Message, TransportExt};

/// The role's peer callbacks, as hosted.
fn callbacks(host: &HostedRole) -> Option<&Arc<dyn PeerCallbacks>> {
    host.app::<Arc<dyn PeerCallbacks>>()
}

/// Takes every role's peer subjects (`<org>.peer.*.<role>`).
#[derive(Debug)]
pub(crate) struct PeerHandler;

#[async_trait]
impl Handler for PeerHandler {
    fn name(&self) -> &'static str {
        "peer"
    }

    fn subjects(&self, subjects: &Subjects, _chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        vec![subjects.peer_any(role)]
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, route: &Route) -> Result<(), Reason> {
        if env.kind != Kind::Peer {
            return Err(Reason::new(
                "wrong_subject",
                format!("a {} envelope on a peer subject", env.kind),
            ));
        }
        if let Route::Peer { from, to } = route {
            if !host.kernel().chart().are_peers(from, to) {
                return Err(Reason::new(
                    "not_allowed",
                    format!("no peer channel between `{from}` and `{to}` is declared"),
                ));
            }
        }
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{}` hosts no code for peer messages", host.role()),
            ));
        }
        Ok(())
    }

    /// A message from a declared peer: exactly once, like a task.
    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let Some(cb) = callbacks(delivery.host()).cloned() else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no peer callbacks"), None)
                .await;
        };
        let env = delivery.envelope();
        let message = PeerMessage::new(
            env.id.clone(),
            env.from.clone(),
            delivery.role().clone(),
            env.payload.clone(),
        );
        let cx = delivery.context(None);
        let r = delivery.run(cb.on_peer(&cx, message)).await;
        delivery.settle_call(&cx, r).await
    }
}

/// Answers peer requests on `<org>.rpc.<role>`: core request/reply, at most
/// once, outside the role's concurrency limit (so two peers asking each
/// other cannot deadlock).
#[derive(Debug)]
pub(crate) struct RequestServer;

#[async_trait]
impl Service for RequestServer {
    fn name(&self) -> &'static str {
        "peer requests"
    }

    fn serves(&self, host: &HostedRole) -> bool {
        callbacks(host).is_some() && host.kernel().chart().peers_of(host.role()).next().is_some()
    }

    async fn run(&self, host: Arc<HostedRole>, lc: Lifecycle) {
        let kernel = host.kernel();
        let pattern = SubjectPattern::from(kernel.subjects().rpc(host.role()));
        let mut requests = loop {
            let subscribed = tokio::select! {
                () = lc.shutdown.cancelled() => return,
                r = kernel.transport().subscribe(&pattern) => r,
            };
            match subscribed {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(role = %host.role(), error = %e, "cannot subscribe to peer requests; retrying");
                    tokio::select! {
                        () = lc.shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = lc.shutdown.cancelled() => return,
                next = requests.next() => next,
            };
            match next {
                Some(Ok(m)) => {
                    let host = Arc::clone(&host);
                    let kill = lc.kill.clone();
                    lc.tracker.spawn(async move {
                        tokio::select! {
                            () = kill.cancelled() => {}
                            () = answer(&host, m) => {}
                        }
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(role = %host.role(), error = %e, "peer request subscription reported an error")
                }
                None => return,
            }
        }
    }
}

async fn answer(host: &HostedRole, m: Message) {
    let reply = match answer_inner(host, &m).await {
        Ok(v) => PeerReply::Ok(v),
        Err(e) => PeerReply::Error {
            retryable: e.is_retryable(),
            message: describe(&e),
        },
    };
    let bytes = match serde_json::to_vec(&reply) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a peer answer");
            return;
        }
    };
    if let Err(e) = host.kernel().transport().respond(&m, bytes).await {
        tracing::warn!(error = %e, "sending a peer answer failed");
    }
}

async fn answer_inner(host: &HostedRole, m: &Message) -> Result<Value, AgentError> {
    let kernel = host.kernel();
    let role = host.role();
    let env = m
        .envelope(kernel.codec())
        .map_err(|e| AgentError::permanent(format!("undecodable request: {e}")))?;
    let allowed = env.kind == Kind::Peer
        && &env.org == kernel.org()
        && env.to.as_ref() == Some(role)
        && kernel.chart().are_peers(&env.from, role);
    if !allowed {
        return Err(AgentError::permanent(format!(
            "refused: `{}` has no peer channel to `{role}`",
            env.from
        )));
    }
    let Some(cb) = callbacks(host) else {
        return Err(AgentError::permanent(format!(
            "`{role}` hosts no code for peer requests"
        )));
    };
    let trace = env
        .trace()
        .map_or_else(TraceContext::new_root, |t| t.child());
    let message = PeerMessage::new(
        env.id.clone(),
        env.from.clone(),
        role.clone(),
        env.payload.clone(),
    );
    let cx = host.context(env, None, 0, trace);
    let fut = AssertUnwindSafe(cb.on_peer_request(&cx, message)).catch_unwind();
    let answer = match host.options().handler_timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Err(AgentError::transient(format!("timed out after {t:?}"))),
        },
        None => fut.await,
    }
    .map_err(|_| AgentError::transient("the request handler panicked"))??;
    // What the handler staged is committed, without a claim (a request is
    // not redelivered).
    let (effects, _) = cx.take_effects();
    if !effects.is_empty() {
        kernel.commit(effects).await?;
    }
    Ok(answer)
}
