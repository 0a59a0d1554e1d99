//! The JSON codec of envelopes, with a size limit and distinct errors for
//! malformed, oversized and future-version input.
//!
//! ```
//! use agentorg_core::codec::{Codec, DecodeError};
//! use agentorg_core::envelope::{Envelope, Kind};
//! use agentorg_core::Name;
//!
//! let n = |s: &str| Name::new(s).unwrap();
//! let codec = Codec::default();
//! let env = Envelope::new(n("genbrain"), n("ceo"), Kind::Task, serde_json::json!({"title": "Ship"}));
//! let bytes = codec.encode(&env).unwrap();
//! assert_eq!(codec.decode(&bytes).unwrap(), env);
//!
//! assert!(matches!(codec.decode(b"{not json"), Err(DecodeError::Malformed { .. })));
//! let tiny = Codec::with_max_bytes(16);
//! assert!(matches!(tiny.decode(&bytes), Err(DecodeError::Oversized { .. })));
//! ```

use bytes::Bytes;
use serde::Deserialize;

use crate::envelope::{Envelope, MessageId, FORMAT_VERSION};

/// Encodes and decodes envelopes as JSON, refusing anything over a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_bytes: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self {
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// Input could not be decoded into an envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than the codec's limit. Never retried.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The input is not a valid envelope of a known version. Never retried.
    #[error("malformed envelope: {reason}")]
    Malformed {
        /// What was wrong, from the JSON parser.
        reason: String,
    },
    /// The envelope is of a newer format version than this build reads. A
    /// rolling update may be under way, so the runtime naks it with a delay
    /// and dead-letters it only when its attempts run out.
    #[error("envelope format version {version} is newer than the supported {supported}")]
    FutureVersion {
        /// The version the input declares.
        version: u64,
        /// The newest version this build reads.
        supported: u32,
        /// The envelope id, when it could be read.
        id: Option<MessageId>,
    },
}

impl DecodeError {
    /// Whether waiting could help (only a future version can become readable,
    /// once this process is upgraded).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::FutureVersion { .. })
    }

    /// A short stable name of the kind, for dead-letter reasons and metrics.
    pub fn kind_str(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Malformed { .. } => "malformed",
            Self::FutureVersion { .. } => "future_version",
        }
    }
}

/// An envelope could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded envelope is larger than the codec's limit.
    #[error("encoded envelope of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// JSON serialization failed (e.g. a map with non-string keys in the payload).
    #[error("cannot encode envelope: {0}")]
    Json(#[from] serde_json::Error),
}

/// A delivery that could not be decoded, with its raw bytes kept whole so it
/// can be dead-lettered with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeFailure {
    /// Why decoding failed.
    pub error: DecodeError,
    /// The bytes as delivered.
    pub raw: Bytes,
}

impl std::fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.error, self.raw.len())
    }
}

impl std::error::Error for DecodeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What a newer format must still have for us to read: a version, and
/// perhaps an id (of any JSON type: a later format may change it).
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<u64>,
    id: Option<serde_json::Value>,
}

impl Codec {
    /// The default limit: 1 MiB, NATS' default maximum payload.
    pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

    /// A codec with another limit.
    pub fn with_max_bytes(max_bytes: usize) -> Self {
        Self { max_bytes }
    }

    /// The limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Encodes `env` as JSON.
    pub fn encode(&self, env: &Envelope) -> Result<Bytes, EncodeError> {
        let bytes = serde_json::to_vec(env)?;
        if bytes.len() > self.max_bytes {
            return Err(EncodeError::Oversized {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        Ok(Bytes::from(bytes))
    }

    /// Decodes an envelope, checking the size first and the version before
    /// reporting a malformed body.
    pub fn decode(&self, raw: &[u8]) -> Result<Envelope, DecodeError> {
        if raw.len() > self.max_bytes {
            return Err(DecodeError::Oversized {
                size: raw.len(),
                limit: self.max_bytes,
            });
        }
        // An envelope is a JSON object (serde would also take an array of
        // the fields in order; the wire format does not allow it).
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(DecodeError::Malformed {
                reason: "an envelope is a JSON object".to_owned(),
            });
        }
        let future = |probe: VersionProbe| match probe.v {
            Some(v) if v > u64::from(FORMAT_VERSION) => Some(DecodeError::FutureVersion {
                version: v,
                supported: FORMAT_VERSION,
                id: probe
                    .id
                    .and_then(|id| id.as_str().and_then(|s| MessageId::parse(s).ok())),
            }),
            _ => None,
        };
        match serde_json::from_slice::<Envelope>(raw) {
            Ok(env) if env.v == 0 => Err(DecodeError::Malformed {
                reason: "format version 0 does not exist".to_owned(),
            }),
            Ok(env) if env.v > FORMAT_VERSION => Err(DecodeError::FutureVersion {
                version: u64::from(env.v),
                supported: FORMAT_VERSION,
                id: Some(env.id),
            }),
            Ok(env) => Ok(env),
            Err(e) => Err(serde_json::from_slice::<VersionProbe>(raw)
                .ok()
                .and_then(future)
                .unwrap_or(DecodeError::Malformed {
                    reason: e.to_string(),
                })),
        }
    }

    /// Decodes, keeping the raw bytes on failure.
    pub fn decode_bytes(&self, raw: Bytes) -> Result<Envelope, DecodeFailure> {
        self.decode(&raw)
            .map_err(|error| DecodeFailure { error, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn future_version_is_distinct_even_when_the_shape_changed() {
        let codec = Codec::default();
        let newer = br#"{"v": 2, "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "renamed": true}"#;
        match codec.decode(newer) {
            Err(DecodeError::FutureVersion { version, id, .. }) => {
                assert_eq!(version, 2);
                assert_eq!(id.unwrap().as_str(), "01ARZ3NDEKTSV4RRFFQ69G5FAV");
            }
            other => panic!("expected FutureVersion, got {other:?}"),
        }
        // A later format may change the id's type: still a future version.
        assert!(matches!(
            codec.decode(br#"{"v": 2, "id": 5}"#),
            Err(DecodeError::FutureVersion { id: None, .. })
        ));
        assert!(matches!(
            codec.decode(br#"[2, "x"]"#),
            Err(DecodeError::Malformed { .. })
        ));
        let current_but_broken = br#"{"v": 1, "id": "x"}"#;
        assert!(matches!(
            codec.decode(current_but_broken),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            codec.decode(br#"[1,2]"#),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
