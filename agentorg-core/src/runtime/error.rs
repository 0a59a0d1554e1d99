//! The two kinds of failure a delivery can meet: the application's own
//! ([`AgentError`]) and the org's infrastructure's ([`Fault`]).

use serde::{Deserialize, Serialize};

use super::records::UNREADABLE;
use crate::store::StoreError;
use crate::transport::TransportError;

/// A boxed error, kept as the source of an [`AgentError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Whether an agent's failure may go away on retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// Retried with backoff; dead-lettered when the attempts run out.
    Transient,
    /// Fails the work at once; the sender sees the message.
    Permanent,
}

/// An agent's failure: transient (retried with backoff, dead-lettered when
/// the attempts run out) or permanent (fails the task at once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A failure that may go away on retry (an unavailable dependency, a rate
    /// limit). Retried with backoff; dead-lettered when the attempts run out.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A failure that retrying will not fix (bad input, a refused
    /// delegation). Fails the task at once; the delegator sees the message.
    #[error("{message}")]
    Permanent {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl AgentError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// A failure of the kind `retryable` says, for errors that know whether
    /// they are: transient when retryable, else permanent. Keeps `error` as
    /// the source.
    pub fn from_error(error: impl Into<BoxError>, retryable: bool) -> Self {
        let error = error.into();
        let message = error.to_string();
        if retryable {
            Self::Transient {
                message,
                source: Some(error),
            }
        } else {
            Self::Permanent {
                message,
                source: Some(error),
            }
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, error: impl Into<BoxError>) -> Self {
        match &mut self {
            Self::Transient { source, .. } | Self::Permanent { source, .. } => {
                *source = Some(error.into());
            }
        }
        self
    }

    /// Whether the failure is transient or permanent.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Transient { .. } => ErrorKind::Transient,
            Self::Permanent { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the runtime retries it.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The message (without the source).
    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. } | Self::Permanent { message, .. } => message,
        }
    }
}

/// Implements `From<$ty> for AgentError` for error types with an
/// `is_retryable()`: retryable errors are transient, the rest permanent.
macro_rules! agent_error_from {
    ($($ty:ty),* $(,)?) => {$(
        impl From<$ty> for $crate::runtime::AgentError {
            /// Retryable errors are transient, the rest permanent.
            fn from(e: $ty) -> Self {
                let retryable = e.is_retryable();
                Self::from_error(e, retryable)
            }
        }
    )*};
}
pub(crate) use agent_error_from;

agent_error_from!(StoreError, TransportError, crate::tools::ToolError);

/// A failure of the org's own infrastructure while handling a delivery (the
/// store or the transport), as opposed to the application's [`AgentError`].
///
/// The kernel recovers from each kind without spending an attempt of the
/// delivery (an outage never dead-letters work), except
/// [`Permanent`](Fault::Permanent), which means the message can never be processed
/// here and is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// The store or transport is unavailable, or a commit kept conflicting:
    /// the delivery comes back soon, without spending an attempt.
    #[error("{0}")]
    Transient(String),
    /// A runtime document this build cannot read (a newer version wrote it,
    /// during a rolling update): the delivery comes back later.
    #[error("{0}")]
    Unreadable(String),
    /// The store or transport refused for good (an invalid key): the message
    /// can never be processed here, and is dead-lettered.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for Fault {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Other { backend, .. } if *backend == UNREADABLE => {
                Self::Unreadable(e.to_string())
            }
            _ if e.is_retryable() || e.is_precondition_failure() => Self::Transient(e.to_string()),
            _ => Self::Permanent(e.to_string()),
        }
    }
}

impl From<TransportError> for Fault {
    fn from(e: TransportError) -> Self {
        if e.is_retryable() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

/// An error and its sources, as one line (a source already quoted by the
/// message above it is not repeated).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What a caught panic says (its message, if it is a string).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    crate::panics::message(panic)
        .unwrap_or("a non-string panic")
        .to_owned()
}
