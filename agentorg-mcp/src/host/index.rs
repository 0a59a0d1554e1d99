//! A session's index of listed tools, deadlines, and the shape of results.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentorg_core::tools::{ToolOutput, ToolSpec};
use agentorg_core::Name;
use rmcp::model::{ContentBlock, ResourceContents};
use serde_json::Value;

/// The listed tools of a session, with their compiled argument validators.
pub(super) struct ToolIndex {
    /// The value of `Session::changes` when the listing was asked for: the
    /// listing is stale once a change notification has arrived since.
    pub(super) generation: u64,
    pub(super) specs: Vec<ToolSpec>,
    pub(super) by_name: HashMap<String, (usize, Option<Arc<jsonschema::Validator>>)>,
    /// Tools of this listing whose definitions matched their pins: the
    /// listing never changes, so each is hashed and checked once per
    /// listing, not on every call.
    pub(super) pins_matched: Mutex<HashSet<String>>,
}

impl ToolIndex {
    pub(super) fn new(server: &Name, generation: u64, tools: Vec<rmcp::model::Tool>) -> Self {
        let mut specs = Vec::with_capacity(tools.len());
        let mut by_name = HashMap::with_capacity(tools.len());
        for tool in tools {
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match jsonschema::validator_for(&schema) {
                Ok(v) => Some(Arc::new(v)),
                Err(e) => {
                    tracing::warn!(%server, tool = %tool.name, error = %e,
                        "unusable input schema; arguments are not checked before sending");
                    None
                }
            };
            by_name.insert(tool.name.to_string(), (specs.len(), validator));
            specs.push(ToolSpec::new(
                tool.name.into_owned(),
                tool.description.map(|d| d.into_owned()).unwrap_or_default(),
                schema,
            ));
        }
        Self {
            generation,
            specs,
            by_name,
            pins_matched: Mutex::new(HashSet::new()),
        }
    }

    /// `None` if not listed; else its definition and argument validator.
    pub(super) fn lookup(
        &self,
        name: &str,
    ) -> Option<(&ToolSpec, Option<Arc<jsonschema::Validator>>)> {
        self.by_name
            .get(name)
            .map(|(i, v)| (&self.specs[*i], v.clone()))
    }
}

/// When a call (or a listing) must be done by, and the timeout it came from.
#[derive(Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: tokio::time::Instant,
    pub(super) after: Duration,
}

impl Deadline {
    pub(super) fn after(after: Duration) -> Self {
        Self {
            at: tokio::time::Instant::now() + after,
            after,
        }
    }
}

/// Whether an error message says the tool is unknown, in the words of the
/// SDKs: rmcp "tool not found", TypeScript "Tool x not found", Python
/// "Unknown tool: x".
pub(super) fn says_unknown_tool(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    (m.contains("tool") && m.contains("not found")) || m.contains("unknown tool")
}

pub(super) fn to_output(structured: Option<Value>, content: &[ContentBlock]) -> ToolOutput {
    let mut output = ToolOutput::default();
    output.structured = structured;
    output.text = content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(t) => Some(t.text.clone()),
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { text, .. } => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    output
}

/// Serialized size of an output, counted without keeping the bytes.
pub(super) fn json_size(output: &ToolOutput) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, output) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tool_messages_of_the_sdks() {
        assert!(says_unknown_tool("tool not found"));
        assert!(says_unknown_tool("MCP error -32602: Tool nope not found"));
        assert!(says_unknown_tool("Unknown tool: nope"));
        assert!(!says_unknown_tool("file /tmp/x not found"));
        assert!(!says_unknown_tool("division by zero"));
    }

    #[test]
    fn output_keeps_structured_and_text() {
        let out = to_output(
            Some(serde_json::json!({"a": 1})),
            &[ContentBlock::text("one"), ContentBlock::text("two")],
        );
        assert_eq!(out.structured, Some(serde_json::json!({"a": 1})));
        assert_eq!(out.text, vec!["one", "two"]);
        assert!(json_size(&out) > 10);
    }
}
