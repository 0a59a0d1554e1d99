//! Permission violations reported by the server.
//!
//! nats-server refuses a publish or a subscription the user's permissions do
//! not allow by dropping it and sending an asynchronous
//! `-ERR 'Permissions Violation for Publish to "<subject>"'` (or `…for
//! Subscription to "<pattern>"`). async-nats hands that to the connection's
//! event callback only; the publish itself would just time out. The
//! transport's event callback parses each violation and broadcasts it here,
//! and every operation that can be refused watches for its own subject while
//! it waits, so it fails at once with `Forbidden` instead of timing out.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::broadcast;

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Publish,
    Subscribe,
}

/// One refusal, parsed from the server's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) op: Op,
    pub(crate) subject: String,
    pub(crate) text: String,
}

impl Violation {
    /// Parses `Permissions Violation for Publish to "x"` and `Permissions
    /// Violation for Subscription to "x"` (optionally followed by ` using
    /// queue "q"`); `None` for any other server error.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let rest = text
            .trim()
            .strip_prefix("Permissions Violation for ")
            .or_else(|| text.trim().strip_prefix("permissions violation for "))?;
        let (op, rest) = if let Some(r) = rest.strip_prefix("Publish to ") {
            (Op::Publish, r)
        } else if let Some(r) = rest.strip_prefix("Subscription to ") {
            (Op::Subscribe, r)
        } else {
            return None;
        };
        let rest = rest.trim_start().strip_prefix('"')?;
        let subject = &rest[..rest.find('"')?];
        Some(Self {
            op,
            subject: subject.to_owned(),
            text: text.trim().to_owned(),
        })
    }
}

/// The broadcast of violations of one connection.
///
/// Cheap to watch: a watcher is a broadcast receiver, created before the
/// operation is sent so that a refusal that arrives first is not missed.
#[derive(Debug, Clone)]
pub(crate) struct Violations {
    tx: broadcast::Sender<Arc<Violation>>,
}

impl Violations {
    pub(crate) fn new() -> Self {
        // Violations are rare; a watcher that falls 64 behind only loses the
        // fast path (its operation then times out as it would without this).
        let (tx, _) = broadcast::channel(64);
        Self { tx }
    }

    /// Reports a server error; returns the violation if it was one.
    pub(crate) fn report(&self, text: &str) -> Option<Arc<Violation>> {
        let v = Arc::new(Violation::parse(text)?);
        // No receiver means no operation is waiting: nothing to do.
        let _ = self.tx.send(Arc::clone(&v));
        Some(v)
    }

    /// Starts watching; call before sending the operation.
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            rx: self.tx.subscribe(),
        }
    }

    /// Runs `fut` (which publishes to or subscribes on `subject`), failing
    /// with the violation if the server refuses that subject first.
    pub(crate) async fn guard<T, E>(
        &self,
        op: Op,
        subject: &str,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Guarded<E>> {
        let mut watch = self.watch();
        tokio::select! {
            biased;
            r = fut => r.map_err(Guarded::Failed),
            v = watch.refused(op, subject) => Err(Guarded::Refused(v)),
        }
    }
}

/// The outcome of a guarded operation that did not succeed.
#[derive(Debug)]
pub(crate) enum Guarded<E> {
    /// The operation failed on its own.
    Failed(E),
    /// The server refused its subject.
    Refused(Arc<Violation>),
}

/// A watcher of violations.
#[derive(Debug)]
pub(crate) struct Watch {
    rx: broadcast::Receiver<Arc<Violation>>,
}

impl Watch {
    /// Resolves with the first violation of `op` on exactly `subject`; never
    /// resolves if there is none.
    pub(crate) async fn refused(&mut self, op: Op, subject: &str) -> Arc<Violation> {
        loop {
            match self.rx.recv().await {
                Ok(v) if v.op == op && v.subject == subject => return v,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_servers_texts() {
        let v = Violation::parse(r#"Permissions Violation for Publish to "o.agent.x.inbox.z""#)
            .unwrap();
        assert_eq!(
            (v.op, v.subject.as_str()),
            (Op::Publish, "o.agent.x.inbox.z")
        );
        let v = Violation::parse(
            r#"Permissions Violation for Subscription to "o.agent.x.inbox.*" using queue "q""#,
        )
        .unwrap();
        assert_eq!(
            (v.op, v.subject.as_str()),
            (Op::Subscribe, "o.agent.x.inbox.*")
        );
        assert!(Violation::parse("Authorization Violation").is_none());
        assert!(Violation::parse("Permissions Violation for Publish to x").is_none());
    }

    #[tokio::test]
    async fn a_guard_fails_fast_on_its_own_subject_only() {
        let v = Violations::new();
        let v2 = v.clone();
        let r: Result<(), Guarded<()>> = v
            .guard(Op::Publish, "a.b", async move {
                v2.report(r#"Permissions Violation for Publish to "a.c""#);
                v2.report(r#"Permissions Violation for Subscription to "a.b""#);
                v2.report(r#"Permissions Violation for Publish to "a.b""#);
                std::future::pending().await
            })
            .await;
        match r {
            Err(Guarded::Refused(v)) => assert_eq!(v.subject, "a.b"),
            other => panic!("{other:?}"),
        }
    }
}
