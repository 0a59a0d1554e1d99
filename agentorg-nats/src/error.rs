//! The one place where async-nats errors become [`TransportError`]s.
//!
//! Every failure inside the crate is first an [`Error`] that keeps the
//! async-nats error and what was being done; the single `From<Error> for
//! TransportError` below decides the kind a caller acts on. Tests match those
//! kinds.

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::transport::{BoxError, TransportError};
use async_nats::jetstream;
use async_nats::jetstream::context::{
    PublishErrorKind as JsPublishErrorKind, RequestErrorKind as JsRequestErrorKind,
};
use async_nats::jetstream::ErrorCode;

use crate::violations::{Guarded, Violation};

const BACKEND: &str = "nats";

/// What went wrong, with the async-nats error as the source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The initial connection failed.
    #[error("cannot connect to {servers}: {source}")]
    Connect {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// A durable (JetStream) publish failed.
    #[error("publish to {subject}: {source}")]
    Publish {
        subject: String,
        size: usize,
        limit: usize,
        timeout: Duration,
        #[source]
        source: jetstream::context::PublishError,
    },
    /// A core publish failed.
    #[error("core publish to {subject}: {source}")]
    CorePublish {
        subject: String,
        size: usize,
        limit: usize,
        #[source]
        source: async_nats::client::PublishError,
    },
    /// A core request failed.
    #[error("request to {subject}: {source}")]
    Request {
        subject: String,
        size: usize,
        limit: usize,
        timeout: Duration,
        #[source]
        source: async_nats::client::RequestError,
    },
    /// A subscription could not be made.
    #[error("subscribe to {pattern}: {source}")]
    Subscribe {
        pattern: String,
        #[source]
        source: async_nats::client::SubscribeError,
    },
    /// A round trip to the server (PING/PONG) failed.
    #[error("flush: {source}")]
    Flush {
        #[source]
        source: async_nats::client::FlushError,
    },
    /// A JetStream API request got no answer or an unreadable one.
    #[error("{operation}: {source}")]
    Api {
        operation: String,
        timeout: Duration,
        #[source]
        source: jetstream::context::RequestError,
    },
    /// The JetStream API answered with an error.
    #[error("{operation}: {source}")]
    JetStream {
        operation: String,
        #[source]
        source: jetstream::Error,
    },
    /// Binding a pull subscription failed.
    #[error("binding consumer {consumer}: {source}")]
    Bind {
        consumer: String,
        #[source]
        source: async_nats::Error,
    },
    /// Acknowledging a delivery failed.
    #[error("{what} of a delivery: {source}")]
    Ack {
        what: &'static str,
        #[source]
        source: async_nats::Error,
    },
    /// The server refused the operation for this user.
    #[error("{operation}: {}", violation.text)]
    Forbidden {
        operation: String,
        violation: Arc<Violation>,
    },
    /// A consumer or stream does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// A consumer or stream exists with an incompatible configuration.
    #[error("{message}")]
    Conflict { message: String },
    /// The request is invalid before anything is sent.
    #[error("{message}")]
    Invalid { message: String },
}

impl Error {
    /// Wraps a guarded operation's outcome: a refusal becomes `Forbidden`.
    pub(crate) fn guarded<E>(
        operation: impl FnOnce() -> String,
        g: Guarded<E>,
        map: impl FnOnce(E) -> Error,
    ) -> Error {
        match g {
            Guarded::Failed(e) => map(e),
            Guarded::Refused(violation) => Error::Forbidden {
                operation: operation(),
                violation,
            },
        }
    }

    /// The JetStream API error code, for errors answered by JetStream.
    pub(crate) fn jetstream_code(&self) -> Option<ErrorCode> {
        match self {
            Error::JetStream { source, .. } => Some(source.error_code()),
            _ => None,
        }
    }

    /// Whether a durable publish that failed this way may be sent again
    /// without risking a second copy: the message was certainly not stored
    /// (no stream answered, the stream had no leader), or it may have been
    /// but the publish carries a dedupe id (`deduplicated`).
    pub(crate) fn publish_retryable(&self, deduplicated: bool) -> bool {
        match self {
            Error::Publish { source, .. } => match source.kind() {
                JsPublishErrorKind::StreamNotFound => true,
                JsPublishErrorKind::TimedOut | JsPublishErrorKind::BrokenPipe => deduplicated,
                JsPublishErrorKind::Other => {
                    js_source(source).is_some_and(|e| e.code() == 503 && !is_full(e))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// The JetStream error inside a publish error, if the server answered one.
fn js_source(e: &jetstream::context::PublishError) -> Option<&jetstream::Error> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<jetstream::Error>())
}

/// Whether a JetStream error says a limit refused the message (`discard:
/// new`): a stream's message or byte limit, or the account's storage.
fn is_full(e: &jetstream::Error) -> bool {
    let code = e.error_code();
    let text = e.to_string().to_ascii_lowercase();
    (code == ErrorCode::STREAM_STORE_FAILED && text.contains("maximum"))
        || [
            ErrorCode::STORAGE_RESOURCES_EXCEEDED,
            ErrorCode::INSUFFICIENT_RESOURCES,
            ErrorCode::MEMORY_RESOURCES_EXCEEDED,
            ErrorCode::ACCOUNT_RESOURCES_EXCEEDED,
            ErrorCode::STREAM_MAX_STREAM_BYTES_EXCEEDED,
        ]
        .contains(&code)
}

fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> TransportError {
    TransportError::Unavailable {
        message: message.into(),
        source: Some(source.into()),
    }
}

fn other(source: impl Into<BoxError>) -> TransportError {
    TransportError::Other {
        backend: BACKEND,
        source: source.into(),
    }
}

/// A JetStream API error answer, by its error code first, then its status.
fn from_jetstream(operation: String, e: jetstream::Error) -> TransportError {
    let code = e.error_code();
    if code == ErrorCode::CONSUMER_NOT_FOUND || code == ErrorCode::STREAM_NOT_FOUND {
        return TransportError::NotFound {
            what: format!("{operation}: {e}"),
        };
    }
    if [
        ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE,
        ErrorCode::CONSUMER_WQ_MULTIPLE_UNFILTERED,
        ErrorCode::CONSUMER_OVERLAPPING_SUBJECT_FILTERS,
        ErrorCode::CONSUMER_ALREADY_EXISTS,
        ErrorCode::CONSUMER_NAME_EXIST,
        ErrorCode::STREAM_NAME_EXIST,
        ErrorCode::STREAM_SUBJECT_OVERLAP,
    ]
    .contains(&code)
    {
        return TransportError::Conflict {
            message: format!("{operation}: {e}"),
        };
    }
    if is_full(&e) {
        return TransportError::Full {
            message: format!("{operation}: {e}"),
        };
    }
    match e.code() {
        400 => TransportError::InvalidInput {
            message: format!("{operation}: {e}"),
        },
        404 => TransportError::NotFound {
            what: format!("{operation}: {e}"),
        },
        408 => TransportError::Timeout {
            operation,
            after: Duration::ZERO,
        },
        409 => TransportError::Conflict {
            message: format!("{operation}: {e}"),
        },
        // No leader, cluster not ready, JetStream temporarily unavailable.
        500 | 503 => unavailable(operation, e),
        _ => other(e),
    }
}

impl From<Error> for TransportError {
    fn from(e: Error) -> Self {
        match e {
            Error::Connect { servers, source } => {
                use async_nats::ConnectErrorKind as K;
                match source.kind() {
                    K::Authentication | K::AuthorizationViolation => TransportError::Forbidden {
                        operation: format!("connect to {servers}"),
                        source: Some(Box::new(source)),
                    },
                    K::ServerParse | K::Tls => TransportError::InvalidInput {
                        message: format!("connect to {servers}: {source}"),
                    },
                    K::TimedOut | K::Dns | K::Io | K::MaxReconnects => {
                        unavailable(format!("cannot connect to {servers}"), source)
                    }
                }
            }
            Error::Publish {
                subject,
                size,
                limit,
                timeout,
                source,
            } => match source.kind() {
                JsPublishErrorKind::MaxPayloadExceeded => TransportError::TooLarge { size, limit },
                // No stream answered: not stored. Either the stream is being
                // failed over (a new leader is elected within seconds) or it
                // is gone; both are worth a later retry.
                JsPublishErrorKind::StreamNotFound => unavailable(
                    format!("publish to {subject}: no stream answered (stream leader election, or the stream is missing)"),
                    source,
                ),
                JsPublishErrorKind::TimedOut => TransportError::Timeout {
                    operation: format!("publish to {subject} (it may have been stored)"),
                    after: timeout,
                },
                JsPublishErrorKind::BrokenPipe | JsPublishErrorKind::MaxAckPending => {
                    unavailable(format!("publish to {subject}"), source)
                }
                JsPublishErrorKind::Other => match js_source(&source) {
                    Some(js) if is_full(js) => TransportError::Full {
                        message: format!("publish to {subject}: {js}"),
                    },
                    Some(js)
                        if js.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                            || js.error_code() == ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM =>
                    {
                        TransportError::TooLarge { size, limit }
                    }
                    Some(js) if js.code() == 503 || js.code() == 500 => {
                        unavailable(format!("publish to {subject}"), source)
                    }
                    _ => other(source),
                },
                _ => other(source),
            },
            Error::CorePublish {
                subject,
                size,
                limit,
                source,
            } => {
                use async_nats::client::PublishErrorKind as K;
                match source.kind() {
                    K::MaxPayloadExceeded => TransportError::TooLarge { size, limit },
                    K::InvalidSubject => TransportError::InvalidInput {
                        message: format!("publish to {subject}: {source}"),
                    },
                    // The connection's command channel is closed: the client
                    // is gone.
                    K::Send => TransportError::Closed,
                }
            }
            Error::Request {
                subject,
                size,
                limit,
                timeout,
                source,
            } => {
                use async_nats::client::RequestErrorKind as K;
                match source.kind() {
                    K::TimedOut => TransportError::Timeout {
                        operation: format!("request to {subject}"),
                        after: timeout,
                    },
                    K::NoResponders => TransportError::NoResponders { subject },
                    K::MaxPayloadExceeded => TransportError::TooLarge { size, limit },
                    K::InvalidSubject => TransportError::InvalidInput {
                        message: format!("request to {subject}: {source}"),
                    },
                    K::Other => unavailable(format!("request to {subject}"), source),
                }
            }
            Error::Subscribe { pattern, source } => {
                use async_nats::client::SubscribeErrorKind as K;
                match source.kind() {
                    K::InvalidSubject | K::InvalidQueueName => TransportError::InvalidInput {
                        message: format!("subscribe to {pattern}: {source}"),
                    },
                    K::Other => unavailable(format!("subscribe to {pattern}"), source),
                }
            }
            Error::Flush { source } => unavailable("round trip to the server", source),
            Error::Api {
                operation,
                timeout,
                source,
            } => match source.kind() {
                JsRequestErrorKind::TimedOut => TransportError::Timeout {
                    operation,
                    after: timeout,
                },
                // No one answers the JetStream API: JetStream is disabled, or
                // a cluster is electing its meta leader.
                JsRequestErrorKind::NoResponders => {
                    unavailable(format!("{operation}: JetStream did not answer"), source)
                }
                JsRequestErrorKind::InvalidSubject => TransportError::InvalidInput {
                    message: format!("{operation}: {source}"),
                },
                JsRequestErrorKind::Other => {
                    let unreadable = std::error::Error::source(&source)
                        .is_some_and(|s| s.downcast_ref::<serde_json::Error>().is_some());
                    if unreadable {
                        other(source)
                    } else {
                        unavailable(operation, source)
                    }
                }
            },
            Error::JetStream { operation, source } => from_jetstream(operation, source),
            Error::Bind { consumer, source } => {
                unavailable(format!("binding consumer {consumer}"), source)
            }
            Error::Ack { what, source } => unavailable(format!("{what} of a delivery"), source),
            Error::Forbidden {
                operation,
                violation,
            } => TransportError::Forbidden {
                operation,
                source: Some(violation.text.clone().into()),
            },
            Error::NotFound { what } => TransportError::NotFound { what },
            Error::Conflict { message } => TransportError::Conflict { message },
            Error::Invalid { message } => TransportError::InvalidInput { message },
        }
    }
}
