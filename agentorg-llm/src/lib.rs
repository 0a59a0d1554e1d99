//! Models for agentorg: one [`Model`] trait for a chat call to any LLM, and
//! [`Failover`] over several of them.
//!
//! * [`Model`]: a [`ChatRequest`] (system, user and assistant messages,
//!   tool calls and their results, tools as name, description and JSON
//!   Schema, [`ToolChoice`]) in, a [`ChatResponse`] (text, tool calls,
//!   usage, finish reason, which model answered) out, and one error enum a
//!   caller can act on ([`ModelError`],
//!   [`is_retryable`](ModelError::is_retryable)).
//! * [`ProviderModel`]: one provider's model over HTTP — OpenAI's chat
//!   completions (and every compatible server: llama.cpp, vLLM, Ollama),
//!   Anthropic's messages, Gemini's `generateContent` — through the `genai`
//!   crate; our tool names (`server.tool`) go out provider-safe
//!   ([`ToolNames`]) and come back ours.
//! * [`ModelCatalog`]: named models from TOML ([`catalog`]): provider,
//!   model id, base URL, the environment variable holding the key (never the
//!   key), a [`Price`]; a failover over others.
//! * [`LlmAgent`]: an [`Agent`](agentorg_core::agent::Agent) driven by a
//!   model through the org's actions as tools
//!   ([`agentorg_core::agent::actions`]) and the role's granted tools; a
//!   task's conversation is kept in the store while it waits for its
//!   subtasks ([`agent`]: what is built so far).
//! * [`Failover`]: tries an ordered list of models — a failure of the
//!   provider (rate limited, unavailable, timed out, a refused key, an
//!   unreadable answer) moves to the next, an invalid request never does,
//!   and a breaker per provider skips one that keeps failing for a
//!   cool-down, then lets one call probe it.
//!
//! A call through [`Failover`] always has a timeout (per attempt, 60 s by
//! default, and [`ChatRequest::timeout`] for the whole call); a
//! [`ProviderModel`] bounds each call by [`ChatRequest::timeout`] or its
//! own (60 s by default). Any call is cancelled by dropping its future.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use agentorg_llm::{ChatRequest, ChatResponse, Failover, Model, ModelError};
//!
//! /// A provider that is down.
//! struct Down;
//! #[agentorg_llm::async_trait]
//! impl Model for Down {
//!     fn name(&self) -> &str { "down" }
//!     async fn chat(&self, _req: &ChatRequest) -> Result<ChatResponse, ModelError> {
//!         Err(ModelError::Unavailable { message: "503".into() })
//!     }
//! }
//! /// A provider that answers.
//! struct Echo;
//! #[agentorg_llm::async_trait]
//! impl Model for Echo {
//!     fn name(&self) -> &str { "echo" }
//!     async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, ModelError> {
//!         Ok(ChatResponse::text(format!("{} messages", req.messages.len())))
//!     }
//! }
//!
//! let model = Failover::new([Arc::new(Down) as Arc<dyn Model>, Arc::new(Echo)]);
//! let answer = model.chat(&ChatRequest::new().system("Be brief.").user("Hello")).await.unwrap();
//! assert_eq!(answer.text.as_deref(), Some("2 messages"));
//! assert_eq!(answer.provider.as_deref(), Some("echo"));
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::time::Duration;

pub use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod agent;
mod budget;
pub mod catalog;
mod failover;
mod names;
mod provider;

pub use agent::LlmAgent;
pub use budget::Budget;
pub use catalog::{CatalogError, ModelCatalog, Price};
pub use failover::{BreakerPolicy, Failover};
pub use names::ToolNames;
pub use provider::{ApiKey, Provider, ProviderConfig, ProviderModel, UnknownProvider};

/// A chat model: one provider's model, or several behind [`Failover`].
/// Object-safe: use it as `Arc<dyn Model>`.
#[async_trait]
pub trait Model: Send + Sync + 'static {
    /// Its name (a provider and model, say `anthropic/claude-sonnet`): what
    /// [`ChatResponse::provider`] records.
    fn name(&self) -> &str;

    /// One chat call. Dropping the future cancels it. An implementation
    /// bounds it by [`ChatRequest::timeout`] when set, and by a default of
    /// its own otherwise ([`ModelError::Timeout`]).
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;
}

/// A message of a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// Instructions.
    System {
        /// The text.
        content: String,
    },
    /// The user's turn.
    User {
        /// The text.
        content: String,
    },
    /// The model's earlier turn: text and the tools it called.
    Assistant {
        /// The text, if any.
        #[serde(default)]
        content: Option<String>,
        /// The tools it called.
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// A tool's result, for the call of that id.
    Tool {
        /// The id of the call it answers.
        call_id: String,
        /// The tool's name (some providers want it with the result).
        #[serde(default)]
        name: String,
        /// The result.
        content: String,
        /// Whether the tool failed (`content` says how).
        #[serde(default)]
        is_error: bool,
    },
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// Its name (ours: `server.tool`; see [`ToolNames`]).
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its arguments' JSON Schema.
    pub parameters: Value,
}

impl ToolSpec {
    /// Tool `name`, doing `description`, with arguments of `parameters`.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// Its id (a [`Message::Tool`] answers it).
    pub id: String,
    /// The tool.
    pub name: String,
    /// The arguments, as the model gave them (not checked against the
    /// schema: a small model's nonsense arrives as it is).
    pub arguments: Value,
    /// What the provider attached to the call for its own use (Gemini's
    /// thought signatures), sent back with it when the call is in a later
    /// request's history. Opaque; keep it with the call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<String>,
}

impl ToolCall {
    /// A call `id` of `name` with `arguments`.
    pub fn new(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments,
            signatures: Vec::new(),
        }
    }
}

/// Whether the model must call a tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolChoice {
    /// It decides (the default).
    #[default]
    Auto,
    /// It calls none.
    None,
    /// It calls at least one.
    Required,
    /// It calls this one (our name).
    Tool(String),
}

/// A chat request.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// The tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Whether it must call one.
    pub tool_choice: ToolChoice,
    /// The longest answer, in tokens.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// How long the whole call may take (every attempt of a [`Failover`]
    /// included).
    pub timeout: Option<Duration>,
}

impl ChatRequest {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a system message.
    pub fn system(mut self, content: impl Into<String>) -> Self {
        self.messages.push(Message::System {
            content: content.into(),
        });
        self
    }

    /// Adds a user message.
    pub fn user(mut self, content: impl Into<String>) -> Self {
        self.messages.push(Message::User {
            content: content.into(),
        });
        self
    }

    /// Adds a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Offers a tool.
    pub fn tool(mut self, tool: ToolSpec) -> Self {
        self.tools.push(tool);
        self
    }

    /// Whether the model must call a tool.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = choice;
        self
    }

    /// The longest answer, in tokens.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Bounds the whole call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens in.
    pub input_tokens: u64,
    /// Tokens out.
    pub output_tokens: u64,
}

impl Usage {
    /// `input` tokens in, `output` out.
    pub fn new(input: u64, output: u64) -> Self {
        Self {
            input_tokens: input,
            output_tokens: output,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// It finished its answer.
    Stop,
    /// It called tools.
    ToolCalls,
    /// It ran out of `max_tokens`.
    Length,
    /// A content filter stopped it.
    ContentFilter,
    /// What the provider said, unmapped.
    Other(String),
}

/// A chat response.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatResponse {
    /// Its text, if any.
    pub text: Option<String>,
    /// The tools it called.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used.
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Which model answered ([`Model::name`]): a [`ProviderModel`] sets
    /// it, a [`Failover`] keeps the innermost.
    pub provider: Option<String>,
}

impl ChatResponse {
    /// A plain text answer (finished, no usage counted).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            tool_calls: Vec::new(),
            usage: Usage::default(),
            finish_reason: FinishReason::Stop,
            provider: None,
        }
    }

    /// An answer that calls tools (no text, no usage counted).
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self {
            text: None,
            tool_calls: calls,
            usage: Usage::default(),
            finish_reason: FinishReason::ToolCalls,
            provider: None,
        }
    }

    /// With this usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// With this finish reason.
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish_reason = reason;
        self
    }
}

/// A model call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Too many requests: try again after `retry_after`, if given.
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        /// When to try again, if the provider said.
        retry_after: Option<Duration>,
        /// What it said.
        message: String,
    },
    /// The provider is down or overloaded (a 5xx, a refused connection).
    #[error("unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
    },
    /// The call took longer than its timeout.
    #[error("timed out after {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// The request is wrong (a 400): trying it elsewhere does not help.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What the provider said.
        message: String,
    },
    /// The messages are longer than the model's context.
    #[error("context too long: {message}")]
    ContextTooLong {
        /// What the provider said.
        message: String,
    },
    /// The key is missing, wrong or not allowed this model.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// What the provider said.
        message: String,
    },
    /// The answer could not be read.
    #[error("unreadable answer: {message}")]
    Decode {
        /// What is wrong.
        message: String,
    },
    /// A [`Failover`] skipped the model: its breaker is open (for
    /// `retry_in` yet; zero: another call is probing it).
    #[error("skipped: its breaker is open (for {retry_in:?} yet)")]
    BreakerOpen {
        /// How long it stays open.
        retry_in: Duration,
    },
    /// Every model of a [`Failover`] failed or was skipped.
    #[error("no model answered: {}", tried.iter().map(|(m, e)| format!("{m}: {e}")).collect::<Vec<_>>().join("; "))]
    Exhausted {
        /// Each model tried (or skipped, its breaker open) and why.
        tried: Vec<(String, ModelError)>,
    },
}

impl ModelError {
    /// Whether another attempt (later, or on another provider) may
    /// succeed: rate limited, unavailable, timed out — and a failover whose
    /// every model failed so.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Unavailable { .. }
            | Self::Timeout { .. }
            | Self::BreakerOpen { .. } => true,
            Self::Exhausted { tried } => {
                !tried.is_empty() && tried.iter().all(|(_, e)| e.is_retryable())
            }
            _ => false,
        }
    }
}
