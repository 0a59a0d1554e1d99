//! The in-process tool host: async Rust functions as tools.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::{CallOptions, ToolError, ToolHost, ToolOutput, ToolSpec};

/// The longest tool name accepted, in bytes.
const MAX_TOOL_NAME_LEN: usize = 128;

type ToolFn = dyn Fn(Value) -> BoxFuture<'static, Result<ToolOutput, ToolError>> + Send + Sync;

/// A [`ToolHost`] over async Rust functions registered as tools.
///
/// Each tool has a name (1 to 128 characters from `[A-Za-z0-9_.-]`), a
/// description and a JSON Schema of its arguments, compiled once at
/// registration. A call:
///
/// 1. fails with `NotFound` for an unknown name;
/// 2. checks the arguments against the schema — `InvalidInput`, listing every
///    violation, and the function does not run;
/// 3. runs the function, with the call's timeout (or the host default,
///    [`with_default_timeout`](Self::with_default_timeout)) — `Timeout`, and
///    the function's future is dropped;
/// 4. turns a panic in the function into [`ToolError::Other`]: the caller and
///    the host keep working;
/// 5. refuses a result larger than
///    [`with_max_result_bytes`](Self::with_max_result_bytes) (as JSON) —
///    `TooLarge`.
///
/// Errors the function returns (such as [`ToolError::Failed`] for its own
/// failures) are passed through unchanged.
///
/// Cheap to clone: clones share the registered tools, while the `with_*`
/// settings belong to each handle.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), agentorg_core::tools::ToolError> {
/// use agentorg_core::tools::{LocalToolHost, ToolError, ToolHostExt, ToolOutput};
/// use serde_json::json;
///
/// let host = LocalToolHost::new();
/// host.register(
///     "add",
///     "Adds two integers",
///     json!({
///         "type": "object",
///         "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
///         "required": ["a", "b"]
///     }),
///     |args| async move {
///         let sum = args["a"].as_i64().unwrap_or(0) + args["b"].as_i64().unwrap_or(0);
///         Ok(ToolOutput::structured(json!({"sum": sum})))
///     },
/// )?;
/// let out = host.call_tool("add", json!({"a": 2, "b": 3})).await?;
/// assert_eq!(out.into_json(), json!({"sum": 5}));
/// let bad = host.call_tool("add", json!({"a": "two"})).await;
/// assert!(matches!(bad, Err(ToolError::InvalidInput { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalToolHost {
    // A std RwLock: it is held only to look up or insert a tool, never across
    // an await, so calls run concurrently.
    tools: Arc<RwLock<BTreeMap<String, Arc<Tool>>>>,
    default_timeout: Option<Duration>,
    max_result_bytes: usize,
}

struct Tool {
    spec: ToolSpec,
    validator: jsonschema::Validator,
    f: Box<ToolFn>,
}

impl LocalToolHost {
    /// The default result size limit: 1 MiB of JSON.
    pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;

    /// A host without tools, without a default timeout, and with a result
    /// limit of [`DEFAULT_MAX_RESULT_BYTES`](Self::DEFAULT_MAX_RESULT_BYTES).
    pub fn new() -> Self {
        Self {
            tools: Arc::default(),
            default_timeout: None,
            max_result_bytes: Self::DEFAULT_MAX_RESULT_BYTES,
        }
    }

    /// Times out calls that give no timeout of their own after `timeout`.
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = Some(timeout);
        self
    }

    /// Refuses results larger than `limit` bytes when serialized as JSON.
    pub fn with_max_result_bytes(mut self, limit: usize) -> Self {
        self.max_result_bytes = limit;
        self
    }

    /// Registers the async function `f` as tool `name`.
    ///
    /// Fails with [`ToolError::InvalidInput`] if the name is not 1 to 128
    /// characters from `[A-Za-z0-9_.-]`, is already registered, or if
    /// `input_schema` is not a valid JSON Schema. Returns `self`, so
    /// registrations chain.
    pub fn register<F, Fut>(
        &self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        f: F,
    ) -> Result<&Self, ToolError>
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ToolOutput, ToolError>> + Send + 'static,
    {
        let name = name.into();
        let invalid = |message: String| ToolError::InvalidInput {
            tool: name.clone(),
            message,
        };
        if !is_valid_tool_name(&name) {
            return Err(invalid(format!(
                "tool names are 1 to {MAX_TOOL_NAME_LEN} characters from [A-Za-z0-9_.-]"
            )));
        }
        let validator = jsonschema::validator_for(&input_schema)
            .map_err(|e| invalid(format!("unusable input schema: {e}")))?;
        let mut tools = self.tools.write().unwrap_or_else(PoisonError::into_inner);
        if tools.contains_key(&name) {
            return Err(invalid("a tool of this name is already registered".into()));
        }
        let tool = Tool {
            spec: ToolSpec::new(name.clone(), description, input_schema),
            validator,
            f: Box::new(move |args| f(args).boxed()),
        };
        tools.insert(name, Arc::new(tool));
        Ok(self)
    }

    fn tool(&self, name: &str) -> Result<Arc<Tool>, ToolError> {
        let tools = self.tools.read().unwrap_or_else(PoisonError::into_inner);
        tools
            .get(name)
            .map(Arc::clone)
            .ok_or_else(|| ToolError::NotFound {
                tool: name.to_owned(),
            })
    }

    fn check_size(&self, name: &str, output: &ToolOutput) -> Result<(), ToolError> {
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, output).map_err(|e| ToolError::Other {
            backend: "local",
            source: e.into(),
        })?;
        if counter.0 > self.max_result_bytes {
            return Err(ToolError::TooLarge {
                tool: name.to_owned(),
                size: counter.0,
                limit: self.max_result_bytes,
            });
        }
        Ok(())
    }
}

impl Default for LocalToolHost {
    fn default() -> Self {
        Self::new()
    }
}

fn is_valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    crate::panics::message(payload).unwrap_or("(no message)")
}

/// Counts the bytes of a serialization without keeping them.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ToolHost for LocalToolHost {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        let tools = self.tools.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tools.values().map(|t| t.spec.clone()).collect())
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        let tool = self.tool(name)?;
        let violations = super::schema_violations(&tool.validator, &arguments);
        if !violations.is_empty() {
            return Err(ToolError::InvalidInput {
                tool: name.to_owned(),
                message: violations.join("; "),
            });
        }

        // The function is called inside the guarded future, so a panic in its
        // synchronous part is caught as well as one in its future. Running it
        // inline (not spawned) means a timeout or a dropped call drops it too.
        let run = AssertUnwindSafe(async { (tool.f)(arguments).await })
            .catch_unwind()
            .map(|result| {
                result.unwrap_or_else(|payload| {
                    Err(ToolError::Other {
                        backend: "local",
                        source: format!("tool `{name}` panicked: {}", panic_message(&*payload))
                            .into(),
                    })
                })
            });
        let output = match options.timeout.or(self.default_timeout) {
            Some(after) => {
                tokio::time::timeout(after, run)
                    .await
                    .map_err(|_| ToolError::Timeout {
                        tool: name.to_owned(),
                        after,
                    })??
            }
            None => run.await?,
        };
        self.check_size(name, &output)?;
        Ok(output)
    }
}

impl fmt::Debug for LocalToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tools = self.tools.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("LocalToolHost")
            .field("tools", &tools.keys().collect::<Vec<_>>())
            .field("default_timeout", &self.default_timeout)
            .field("max_result_bytes", &self.max_result_bytes)
            .finish()
    }
}

impl fmt::Display for LocalToolHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalToolHost")
    }
}
