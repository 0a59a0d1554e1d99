//! The peer pattern's operations of a handler's `Context`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::PeerError;
use crate::codec::Codec;
use crate::envelope::{Envelope, Kind};
use crate::name::Name;
use crate::runtime::Context;

/// The peer pattern's operations of a handler's [`Context`].
impl Context {
    /// Sends `message` to the peer `to` on their declared channel. Refused at
    /// once if the chart declares none. Sent, exactly once, when the
    /// handler's outcome is committed.
    pub fn send_peer<T: Serialize + ?Sized>(&self, to: &str, message: &T) -> Result<(), PeerError> {
        let (to, env) = self.peer_envelope(to, message)?;
        let subject = self.kernel().subjects().peer(&self.role, &to);
        self.effects().send(subject, env);
        Ok(())
    }

    /// Asks the peer `to` and waits up to `timeout` for its answer (core
    /// request/reply, at most once: not part of the handler's commit).
    /// Refused at once if the chart declares no channel.
    pub async fn request_peer<T, R>(
        &self,
        to: &str,
        request: &T,
        timeout: std::time::Duration,
    ) -> Result<R, PeerError>
    where
        T: Serialize + ?Sized + Sync,
        R: serde::de::DeserializeOwned,
    {
        let (to, env) = self.peer_envelope(to, request)?;
        let bytes = Codec::default()
            .encode(&env)
            .map_err(|e| PeerError::Decode {
                message: e.to_string(),
            })?;
        let answer = self
            .kernel()
            .transport()
            .request(&self.kernel().subjects().rpc(&to), bytes, timeout)
            .await?;
        let reply: PeerReply = serde_json::from_slice(&answer).map_err(|e| PeerError::Decode {
            message: format!("unreadable answer from `{to}`: {e}"),
        })?;
        match reply {
            PeerReply::Ok(v) => serde_json::from_value(v).map_err(|e| PeerError::Decode {
                message: e.to_string(),
            }),
            PeerReply::Error { retryable, message } => Err(PeerError::Remote {
                peer: to,
                retryable,
                message,
            }),
        }
    }

    fn peer_envelope<T: Serialize + ?Sized>(
        &self,
        to: &str,
        message: &T,
    ) -> Result<(Name, Envelope), PeerError> {
        let not_declared = || PeerError::NotDeclared {
            from: self.role.to_string(),
            to: to.to_owned(),
        };
        let to = Name::new(to).map_err(|_| not_declared())?;
        if !self.chart().are_peers(&self.role, &to) {
            return Err(not_declared());
        }
        let payload = serde_json::to_value(message).map_err(|e| PeerError::Decode {
            message: e.to_string(),
        })?;
        let env = self
            .kernel()
            .envelope(self.role.clone(), Kind::Peer, payload)
            .with_to(to.clone())
            .with_causation(self.envelope.id.clone())
            .with_trace_parent(&self.trace, None);
        Ok((to, env))
    }
}

/// The answer to a peer request, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PeerReply {
    /// The handler's value.
    Ok(Value),
    /// The handler's error.
    Error {
        /// Whether it was transient.
        retryable: bool,
        /// Its message.
        message: String,
    },
}
