//! Audit of tool calls: a `tracing` span per call and, optionally, a document
//! per call in the [`StateStore`].
//!
//! Two layers record a call:
//!
//! * [`McpToolHost`](crate::McpToolHost) opens a span `mcp.call` with fields
//!   `server`, `tool`, `args_sha256`, `duration_ms` and `outcome`;
//! * [`AuditedToolHost`] (what [`McpTools::for_role`](crate::McpTools::for_role)
//!   returns) opens a span `tool.call` with `role`, `server`, `tool`,
//!   `args_sha256`, `duration_ms` and `outcome` around the role-scoped call,
//!   and can write one document per call to a store collection.
//!
//! Inside an org, the runtime scopes the catalog's router per role itself;
//! its calls then run inside the runtime's `agentorg.delivery` span, which
//! carries the `role`.
//!
//! The arguments are never recorded, only the SHA-256 of their canonical
//! JSON ([`args_digest`]), so secrets in arguments do not reach the logs.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use agentorg_core::store::{CollectionPath, StateStore, StateStoreExt};
use agentorg_core::tools::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};
use agentorg_core::Name;
use async_trait::async_trait;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::Instrument;

/// The SHA-256 (hex) of the canonical JSON of `value` (object keys sorted,
/// no whitespace).
pub fn canonical_sha256(value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_json(value).as_bytes());
    hex(&hasher.finalize())
}

/// The hash of a call's arguments as recorded in audit spans and documents:
/// [`canonical_sha256`] of the arguments.
pub fn args_digest(arguments: &Value) -> String {
    canonical_sha256(arguments)
}

/// Canonical JSON: object keys sorted at every level, no whitespace.
pub(crate) fn canonical_json(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::with_capacity(map.len());
                for k in keys {
                    out.insert(k.clone(), sort(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // serde_json keeps insertion order only with `preserve_order`; the
    // default map is a BTreeMap, already sorted. Sorting again is cheap and
    // makes the digest independent of that feature.
    sort(value).to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The outcome of a call as recorded: `ok` or the error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The call returned a result.
    Ok,
    /// `NotFound`.
    NotFound,
    /// `Forbidden`.
    Forbidden,
    /// `InvalidInput`.
    InvalidInput,
    /// `Failed` (the tool's own failure).
    Failed,
    /// `Timeout`.
    Timeout,
    /// `Unavailable`.
    Unavailable,
    /// `TooLarge`.
    TooLarge,
    /// `DefinitionChanged` (pinning).
    DefinitionChanged,
    /// Anything else.
    Other,
}

impl Outcome {
    /// The outcome of a call's result.
    pub fn of<T>(result: &Result<T, ToolError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(ToolError::NotFound { .. }) => Self::NotFound,
            Err(ToolError::Forbidden { .. }) => Self::Forbidden,
            Err(ToolError::InvalidInput { .. }) => Self::InvalidInput,
            Err(ToolError::Failed { .. }) => Self::Failed,
            Err(ToolError::Timeout { .. }) => Self::Timeout,
            Err(ToolError::Unavailable { .. }) => Self::Unavailable,
            Err(ToolError::TooLarge { .. }) => Self::TooLarge,
            Err(ToolError::DefinitionChanged { .. }) => Self::DefinitionChanged,
            Err(_) => Self::Other,
        }
    }

    /// Its name: `ok`, `not_found`, `forbidden`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::InvalidInput => "invalid_input",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::TooLarge => "too_large",
            Self::DefinitionChanged => "definition_changed",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role's tool host with every call audited: a `tool.call` span and,
/// if a store is given, one document per call in a collection:
///
/// ```json
/// {"role": "devops", "server": "time", "tool": "get_current_time",
///  "args_sha256": "…", "outcome": "ok", "duration_ms": 12.5, "at_unix_ms": 1767225600000}
/// ```
///
/// A failure to write the document is logged, never fails the call.
#[derive(Clone)]
pub struct AuditedToolHost {
    inner: Arc<dyn ToolHost>,
    role: Name,
    store: Option<(Arc<dyn StateStore>, CollectionPath)>,
}

impl AuditedToolHost {
    /// Audits the calls of `role` through `inner` in spans only.
    pub fn new(inner: Arc<dyn ToolHost>, role: Name) -> Self {
        Self {
            inner,
            role,
            store: None,
        }
    }

    /// Also writes one document per call into `collection` of `store`.
    pub fn with_store(mut self, store: Arc<dyn StateStore>, collection: CollectionPath) -> Self {
        self.store = Some((store, collection));
        self
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for AuditedToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        self.inner.list_tools().await
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        let (server, tool) = name.split_once('.').unwrap_or(("", name));
        let digest = args_digest(&arguments);
        let span = tracing::info_span!(
            "tool.call",
            role = %self.role,
            server = %server,
            tool = %tool,
            args_sha256 = %digest,
            duration_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .inner
            .call_tool_opts(name, arguments, options)
            .instrument(span.clone())
            .await;
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        let outcome = Outcome::of(&result);
        span.record("duration_ms", duration_ms);
        span.record("outcome", outcome.as_str());
        if let Some((store, collection)) = &self.store {
            let at_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let doc = json!({
                "role": self.role.as_str(),
                "server": server,
                "tool": tool,
                "args_sha256": digest,
                "outcome": outcome.as_str(),
                "duration_ms": duration_ms,
                "at_unix_ms": at_unix_ms,
            });
            let written = match collection.doc(ulid::Ulid::new().to_string()) {
                Ok(key) => store.create(&key, doc).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::warn!(role = %self.role, tool = %name, error = %e, "could not write the audit document");
            }
        }
        result
    }
}

impl fmt::Debug for AuditedToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditedToolHost")
            .field("role", &self.role)
            .field("inner", &self.inner)
            .field(
                "store",
                &self.store.as_ref().map(|(s, c)| (s.to_string(), c.clone())),
            )
            .finish()
    }
}

impl fmt::Display for AuditedToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditedToolHost({} over {})", self.role, self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentorg_core::store::MemoryStore;
    use agentorg_core::tools::{LocalToolHost, ToolHostExt, ToolRouter};

    #[tokio::test]
    async fn every_call_writes_one_audit_document_with_its_outcome() {
        let clock = LocalToolHost::new();
        clock
            .register(
                "now",
                "The time",
                json!({"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}),
                |_| async move { Ok(ToolOutput::structured(json!({"time": "12:00"}))) },
            )
            .unwrap();
        let router = ToolRouter::new()
            .mount("time".parse().unwrap(), Arc::new(clock))
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        let collection = CollectionPath::new("audit").unwrap();
        let audited = AuditedToolHost::new(Arc::new(router), "devops".parse().unwrap()).with_store(
            Arc::clone(&store) as Arc<dyn StateStore>,
            collection.clone(),
        );

        audited
            .call_tool("time.now", json!({"tz": "UTC"}))
            .await
            .unwrap();
        let bad = audited.call_tool("time.now", json!({})).await;
        assert!(
            matches!(bad, Err(ToolError::InvalidInput { .. })),
            "{bad:?}"
        );

        let docs = store.list_all(&collection).await.unwrap();
        assert_eq!(docs.len(), 2, "{docs:?}");
        let mut outcomes: Vec<String> = docs
            .iter()
            .map(|d| {
                assert_eq!(d.value["role"], "devops");
                assert_eq!(d.value["server"], "time");
                assert_eq!(d.value["tool"], "now");
                d.value["outcome"].as_str().unwrap().to_owned()
            })
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            [Outcome::InvalidInput.as_str(), Outcome::Ok.as_str()]
        );
        let ok = docs
            .iter()
            .find(|d| d.value["outcome"] == Outcome::Ok.as_str())
            .unwrap();
        assert_eq!(ok.value["args_sha256"], args_digest(&json!({"tz": "UTC"})));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"d":1,"c":2}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
        assert_eq!(canonical_sha256(&a), canonical_sha256(&b));
        assert_eq!(canonical_sha256(&a).len(), 64);
    }
}
