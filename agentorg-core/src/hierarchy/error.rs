//! What goes wrong with a delegation.

use chrono::{DateTime, Utc};

use crate::chart::DelegationRefused;
use crate::name::Name;
use crate::runtime::agent_error_from;
use crate::store::StoreError;
use crate::transport::TransportError;

/// A delegation could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DelegateError {
    /// The chart does not let this role delegate to that one (for this task
    /// type). Refused before anything reaches the transport.
    #[error(transparent)]
    NotAllowed(#[from] DelegationRefused),
    /// The target's circuit breaker is open and there is no usable alternate.
    /// Retryable: the breaker half-opens after its cool-down.
    #[error("the circuit breaker of `{role}` is open{}{}",
        until.map(|u| format!(" until {u}")).unwrap_or_default(),
        alternate.as_ref().map(|a| format!(" (alternate `{a}` unavailable too)")).unwrap_or_default())]
    BreakerOpen {
        /// The role whose breaker is open.
        role: Name,
        /// When it may let a probe through.
        until: Option<DateTime<Utc>>,
        /// Its alternate, whose breaker is open too.
        alternate: Option<Name>,
    },
    /// The task cannot be stored (its input breaks the document limits) or a
    /// name is invalid.
    #[error("invalid delegation: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl DelegateError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::BreakerOpen { .. } => true,
            Self::Store(e) => e.is_retryable(),
            Self::Transport(e) => e.is_retryable(),
            _ => false,
        }
    }
}

agent_error_from!(DelegateError);
