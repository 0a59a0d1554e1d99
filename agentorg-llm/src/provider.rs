//! One provider's model over HTTP, through the `genai` crate: OpenAI's chat
//! completions (and every server that speaks them: llama.cpp, vLLM,
//! Ollama, …), Anthropic's messages and Gemini's `generateContent`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use genai::adapter::AdapterKind;
use genai::chat::{self as g, ChatMessage, ChatOptions, ContentPart, MessageContent, StopReason};
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use serde::{Deserialize, Serialize};

use crate::{
    ChatRequest, ChatResponse, FinishReason, Message, Model, ModelError, ToolCall, ToolChoice,
    ToolNames, Usage,
};

/// The API a model is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI's chat completions (`POST {base_url}chat/completions`, bearer
    /// key): OpenAI itself and any compatible server — llama.cpp, vLLM,
    /// Ollama, a gateway.
    Openai,
    /// Anthropic's messages (`POST {base_url}messages`, `x-api-key`).
    Anthropic,
    /// Gemini's `generateContent` (`POST {base_url}models/{model}:generateContent`,
    /// `x-goog-api-key`).
    Gemini,
}

impl Provider {
    /// Its public endpoint, used when no base URL is given.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Openai => "https://api.openai.com/v1/",
            Self::Anthropic => "https://api.anthropic.com/v1/",
            Self::Gemini => "https://generativelanguage.googleapis.com/v1beta/",
        }
    }

    /// Its name in a catalog (`openai`, `anthropic`, `gemini`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
        }
    }

    fn adapter(self) -> AdapterKind {
        match self {
            Self::Openai => AdapterKind::OpenAI,
            Self::Anthropic => AdapterKind::Anthropic,
            Self::Gemini => AdapterKind::Gemini,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{name}` (known: openai — also for OpenAI-compatible servers —, anthropic, gemini)")]
#[non_exhaustive]
pub struct UnknownProvider {
    /// The name given.
    pub name: String,
}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, UnknownProvider> {
        match s {
            "openai" => Ok(Self::Openai),
            "anthropic" => Ok(Self::Anthropic),
            "gemini" => Ok(Self::Gemini),
            other => Err(UnknownProvider { name: other.into() }),
        }
    }
}

/// Whether `name` can name an environment variable (`[A-Za-z_][A-Za-z0-9_]*`):
/// a key pasted in its place cannot end up printed as a name.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A provider's key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiKey {
    /// None (a local server).
    None,
    /// In this environment variable, read at each call.
    Env(String),
    /// This key (never printed).
    Value(String),
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Env(var) if is_env_name(var) => f.debug_tuple("Env").field(var).finish(),
            Self::Env(_) => f.write_str("Env(REDACTED: not a variable name)"),
            Self::Value(_) => f.write_str("Value(REDACTED)"),
        }
    }
}

/// How to reach one provider's model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// The API.
    pub provider: Provider,
    /// The provider's model id (`claude-sonnet-4-5`, `gpt-4.1`, …). For
    /// `openai` and `gemini`, an id ending in a reasoning effort (`-low`,
    /// `-medium`, `-high`, `-xhigh`, `-max`, `-minimal`, `-none`, `-zero`)
    /// is sent without it, the effort as the request's reasoning setting
    /// (`o3-high` → `o3` at high effort): the `genai` crate's convention.
    pub model: String,
    /// Where its API is (ends with `/`); `None`: the provider's public
    /// endpoint ([`Provider::default_base_url`]).
    pub base_url: Option<String>,
    /// Its key.
    pub api_key: ApiKey,
    /// A call's timeout when the request sets none (60 s by default).
    pub timeout: Duration,
}

impl ProviderConfig {
    /// `model` through `provider`, at its public endpoint, with no key.
    pub fn new(provider: Provider, model: impl Into<String>) -> Self {
        Self {
            provider,
            model: model.into(),
            base_url: None,
            api_key: ApiKey::None,
            timeout: Duration::from_secs(60),
        }
    }

    /// At `base_url` (a `/` is added if missing).
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        let mut url = base_url.into();
        if !url.ends_with('/') {
            url.push('/');
        }
        self.base_url = Some(url);
        self
    }

    /// With the key in the environment variable `var`, read at each call.
    pub fn api_key_env(mut self, var: impl Into<String>) -> Self {
        self.api_key = ApiKey::Env(var.into());
        self
    }

    /// With this key (from a secret store, say; a catalog names a variable
    /// instead).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = ApiKey::Value(key.into());
        self
    }

    /// With this default timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// One provider's model: a [`Model`] over HTTP.
///
/// A call maps our tool names to names the provider accepts and back
/// ([`ToolNames`]), sends the key from the environment, is bounded by
/// [`ChatRequest::timeout`] or the config's, and maps the answer's failures
/// to [`ModelError`]: 429 → `RateLimited` (with `retry-after-ms` or
/// `retry-after` seconds), 401/403 → `Unauthorized`, 413 or a 400 that says
/// the context is too long → `ContextTooLong`, another 4xx →
/// `InvalidRequest`, a 5xx (Anthropic's 529 too) or a failed connection →
/// `Unavailable`, an answer it cannot read (tool arguments that are not JSON
/// included) → `Decode`.
///
/// A failed tool result ([`Message::Tool`] with `is_error`) is sent with
/// its content prefixed `error: ` (the crate sends no error flag).
pub struct ProviderModel {
    name: String,
    config: ProviderConfig,
    client: genai::Client,
}

impl fmt::Debug for ProviderModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderModel")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProviderModel {
    /// The model `name` (what [`ChatResponse::provider`] records), reached
    /// as `config` says.
    ///
    /// # Errors
    /// [`ModelError::Unavailable`] if its HTTP client cannot be built (no
    /// TLS roots, say).
    pub fn new(name: impl Into<String>, config: ProviderConfig) -> Result<Self, ModelError> {
        let name = name.into();
        let client = genai::Client::new().map_err(|e| ModelError::Unavailable {
            message: format!("{name}: its HTTP client: {e}"),
        })?;
        Ok(Self {
            name,
            config,
            client,
        })
    }

    /// How it is reached.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    fn target(&self) -> Result<ServiceTarget, ModelError> {
        let auth = match &self.config.api_key {
            ApiKey::Value(key) => AuthData::from_single(key.as_str()),
            ApiKey::Env(var) if !is_env_name(var) => {
                return Err(ModelError::Unauthorized {
                    message: format!(
                        "{}: its api_key_env is not a variable name (the key itself? name the variable holding it)",
                        self.name
                    ),
                })
            }
            ApiKey::Env(var) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => AuthData::from_single(key),
                _ => {
                    return Err(ModelError::Unauthorized {
                        message: format!(
                            "{}: environment variable {var} (its API key) is not set",
                            self.name
                        ),
                    })
                }
            },
            // A keyless local server: the header goes out empty.
            ApiKey::None => AuthData::from_single(String::new()),
        };
        let base = self
            .config
            .base_url
            .clone()
            .unwrap_or_else(|| self.config.provider.default_base_url().to_owned());
        Ok(ServiceTarget {
            endpoint: Endpoint::from_owned(base),
            auth,
            model: ModelIden::new(self.config.provider.adapter(), self.config.model.as_str()),
        })
    }
}

#[async_trait]
impl Model for ProviderModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let target = self.target()?;
        let names = tool_names(request);
        let (req, options) = to_genai(request, &names);
        let timeout = request.timeout.unwrap_or(self.config.timeout);
        let answer =
            tokio::time::timeout(timeout, self.client.exec_chat(target, req, Some(&options)))
                .await
                .map_err(|_| ModelError::Timeout { after: timeout })?
                .map_err(|e| map_error(&self.name, e))?;
        let mut answer = from_genai(answer, &names);
        answer.provider = Some(self.name.clone());
        Ok(answer)
    }
}

/// Every tool name the request uses: its tools' and its history's calls'.
fn tool_names(request: &ChatRequest) -> ToolNames {
    let history = request.messages.iter().flat_map(|m| match m {
        Message::Assistant { tool_calls, .. } => {
            tool_calls.iter().map(|c| c.name.as_str()).collect()
        }
        Message::Tool { name, .. } if !name.is_empty() => vec![name.as_str()],
        _ => Vec::new(),
    });
    ToolNames::new(request.tools.iter().map(|t| t.name.as_str()).chain(history))
}

fn provider_name<'a>(names: &'a ToolNames, ours: &'a str) -> &'a str {
    names.to_provider(ours).unwrap_or(ours)
}

fn to_genai(request: &ChatRequest, names: &ToolNames) -> (g::ChatRequest, ChatOptions) {
    let messages = request
        .messages
        .iter()
        .map(|m| match m {
            Message::System { content } => ChatMessage::system(content.as_str()),
            Message::User { content } => ChatMessage::user(content.as_str()),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut parts: Vec<ContentPart> = Vec::new();
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    parts.push(ContentPart::Text(text.to_owned()));
                }
                parts.extend(tool_calls.iter().map(|c| {
                    ContentPart::ToolCall(g::ToolCall {
                        call_id: c.id.clone(),
                        fn_name: provider_name(names, &c.name).to_owned(),
                        fn_arguments: c.arguments.clone(),
                        thought_signatures: (!c.signatures.is_empty())
                            .then(|| c.signatures.clone()),
                    })
                }));
                ChatMessage::assistant(MessageContent::from_parts(parts))
            }
            Message::Tool {
                call_id,
                name,
                content,
                is_error,
            } => {
                let content = if *is_error {
                    format!("error: {content}")
                } else {
                    content.clone()
                };
                let mut response = g::ToolResponse::new(call_id.as_str(), content);
                if !name.is_empty() {
                    response = response.with_fn_name(provider_name(names, name));
                }
                ChatMessage::tool(response)
            }
        })
        .collect();
    let mut req = g::ChatRequest::new(messages);
    if !request.tools.is_empty() {
        req = req.with_tools(request.tools.iter().map(|t| {
            g::Tool::new(provider_name(names, &t.name))
                .with_description(t.description.as_str())
                .with_schema(t.parameters.clone())
        }));
    }
    let mut options = ChatOptions::default()
        .with_capture_usage(true)
        .with_capture_content(true)
        .with_capture_tool_calls(true);
    let choice = match &request.tool_choice {
        ToolChoice::Auto => None,
        ToolChoice::None => Some(g::ToolChoice::None),
        ToolChoice::Required => Some(g::ToolChoice::Required),
        ToolChoice::Tool(name) => Some(g::ToolChoice::tool(provider_name(names, name))),
    };
    if let Some(choice) = choice {
        options = options.with_tool_choice(choice);
    }
    if let Some(max) = request.max_tokens {
        options = options.with_max_tokens(max);
    }
    if let Some(t) = request.temperature {
        options = options.with_temperature(f64::from(t));
    }
    (req, options)
}

fn from_genai(answer: g::ChatResponse, names: &ToolNames) -> ChatResponse {
    let texts = answer.texts();
    let text = (!texts.is_empty()).then(|| texts.concat());
    let tool_calls = answer
        .tool_calls()
        .into_iter()
        .map(|c| {
            let name = names.to_ours(&c.fn_name).unwrap_or(&c.fn_name);
            let mut call = ToolCall::new(c.call_id.as_str(), name, c.fn_arguments.clone());
            call.signatures = c.thought_signatures.clone().unwrap_or_default();
            call
        })
        .collect::<Vec<_>>();
    let tokens = |n: Option<i32>| n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let usage = Usage::new(
        tokens(answer.usage.prompt_tokens),
        tokens(answer.usage.completion_tokens),
    );
    let finish_reason = match &answer.stop_reason {
        Some(StopReason::Completed(_) | StopReason::StopSequence(_)) => FinishReason::Stop,
        Some(StopReason::ToolCall(_)) => FinishReason::ToolCalls,
        Some(StopReason::MaxTokens(_)) => FinishReason::Length,
        Some(StopReason::ContentFilter(_)) => FinishReason::ContentFilter,
        Some(StopReason::Other(s)) => FinishReason::Other(s.clone()),
        None => FinishReason::Stop,
    };
    // Gemini says "STOP" for a tool call too.
    let finish_reason = match finish_reason {
        FinishReason::Stop if !tool_calls.is_empty() => FinishReason::ToolCalls,
        other => other,
    };
    ChatResponse {
        text,
        tool_calls,
        usage,
        finish_reason,
        provider: None,
    }
}

/// The longest provider text an error carries.
const MAX_MESSAGE: usize = 2000;

/// `text` cut to [`MAX_MESSAGE`] characters.
fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_MESSAGE).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// What the provider's failure means for the caller.
fn map_error(model: &str, error: genai::Error) -> ModelError {
    use genai::webc::Error as Web;
    use genai::Error as E;
    let message = |detail: &dyn fmt::Display| format!("{model}: {}", clip(&detail.to_string()));
    match error {
        E::HttpError {
            status,
            body,
            headers,
            ..
        } => from_status(model, status.as_u16(), &body, &headers),
        E::WebModelCall { webc_error, .. } | E::WebAdapterCall { webc_error, .. } => {
            match webc_error {
                Web::ResponseFailedStatus {
                    status,
                    body,
                    headers,
                } => from_status(model, status.as_u16(), &body, &headers),
                Web::Reqwest(e) if e.is_decode() => ModelError::Decode {
                    message: message(&e),
                },
                // A refused connection, a reset, the client's own timeout.
                Web::Reqwest(e) => ModelError::Unavailable {
                    message: message(&e),
                },
                e @ (Web::ResponseFailedNotJson { .. }
                | Web::ResponseFailedInvalidJson { .. }
                | Web::JsonValueExt(_)) => ModelError::Decode {
                    message: message(&e),
                },
            }
        }
        // Its message would carry the whole request: the cause only.
        E::ChatResponseGeneration { cause, .. } => ModelError::Decode {
            message: message(&format!("an answer it could not read: {cause}")),
        },
        e @ (E::RequiresApiKey { .. } | E::NoAuthResolver { .. } | E::NoAuthData { .. }) => {
            ModelError::Unauthorized {
                message: message(&e),
            }
        }
        e @ (E::ChatReqHasNoMessages { .. }
        | E::LastChatMessageIsNotUser { .. }
        | E::MessageRoleNotSupported { .. }
        | E::MessageContentTypeNotSupported { .. }
        | E::AdapterNotSupported { .. }) => ModelError::InvalidRequest {
            message: message(&e),
        },
        e => ModelError::Decode {
            message: message(&e),
        },
    }
}

fn from_status(model: &str, status: u16, body: &str, headers: &http::HeaderMap) -> ModelError {
    let message = format!("{model}: HTTP {status}: {}", clip(body));
    let lower = body.to_ascii_lowercase();
    let too_long = [
        "context_length_exceeded",
        "context length",
        "context window",
        "prompt is too long",
        "too many tokens",
        "exceeds the maximum",
    ]
    .iter()
    .any(|p| lower.contains(p));
    match status {
        429 => ModelError::RateLimited {
            retry_after: retry_after(headers).or_else(|| retry_delay(body)),
            message,
        },
        401 | 403 => ModelError::Unauthorized { message },
        413 => ModelError::ContextTooLong { message },
        // The provider's own timeout, or a model or path this provider does
        // not have (a wrong base URL or model id): another may answer.
        404 | 408 => ModelError::Unavailable { message },
        400..=499 if too_long => ModelError::ContextTooLong { message },
        400..=499 => ModelError::InvalidRequest { message },
        _ => ModelError::Unavailable { message },
    }
}

/// `retry-after-ms` (OpenAI's, milliseconds) or `retry-after` (seconds; an
/// HTTP date is not read).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    read("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| read("retry-after"))
        .and_then(seconds)
}

/// Gemini's wait, in the body: a `google.rpc.RetryInfo` detail's
/// `retryDelay` (`"7s"`, `"0.5s"`).
fn retry_delay(body: &str) -> Option<Duration> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    body["error"]["details"]
        .as_array()?
        .iter()
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .find_map(|d| {
            d["retryDelay"]
                .as_str()?
                .strip_suffix('s')?
                .parse::<f64>()
                .ok()
        })
        .and_then(seconds)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn statuses_map_to_what_a_caller_does() {
        let none = headers(&[]);
        assert!(matches!(
            from_status("m", 429, "", &headers(&[("retry-after", "7")])),
            ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            from_status("m", 429, "", &headers(&[("retry-after-ms", "250"), ("retry-after", "7")])),
            ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_millis(250)
        ));
        assert!(matches!(
            from_status(
                "m",
                429,
                "",
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")])
            ),
            ModelError::RateLimited {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            from_status("m", 401, "", &none),
            ModelError::Unauthorized { .. }
        ));
        assert!(matches!(
            from_status("m", 403, "", &none),
            ModelError::Unauthorized { .. }
        ));
        assert!(matches!(
            from_status(
                "m",
                400,
                r#"{"error":{"code":"context_length_exceeded"}}"#,
                &none
            ),
            ModelError::ContextTooLong { .. }
        ));
        assert!(matches!(
            from_status("m", 400, r#"{"error":"bad"}"#, &none),
            ModelError::InvalidRequest { .. }
        ));
        assert!(matches!(
            from_status("m", 404, "", &none),
            ModelError::Unavailable { .. }
        ));
        assert!(matches!(
            from_status("m", 408, "", &none),
            ModelError::Unavailable { .. }
        ));
        assert!(matches!(
            from_status("m", 422, "", &none),
            ModelError::InvalidRequest { .. }
        ));
        let gemini = r#"{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.5s"}]}}"#;
        assert!(matches!(
            from_status("m", 429, gemini, &none),
            ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_millis(7500)
        ));
        assert!(matches!(
            from_status("m", 500, "", &none),
            ModelError::Unavailable { .. }
        ));
        assert!(matches!(
            from_status("m", 529, "", &none),
            ModelError::Unavailable { .. }
        ));
        let long = "x".repeat(5000);
        let ModelError::InvalidRequest { message } = from_status("m", 400, &long, &none) else {
            panic!("not invalid");
        };
        assert!(message.len() < 2100 && message.ends_with('…'));
    }

    #[test]
    fn providers_parse_by_name() {
        for p in [Provider::Openai, Provider::Anthropic, Provider::Gemini] {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
        }
        assert!("mistral"
            .parse::<Provider>()
            .unwrap_err()
            .to_string()
            .contains("openai"));
        assert!(is_env_name("OPENAI_API_KEY") && is_env_name("_K1"));
        assert!(!is_env_name("sk-proj-abc") && !is_env_name("1KEY") && !is_env_name(""));
    }

    #[test]
    fn a_missing_key_is_unauthorized_before_any_call() {
        let model = ProviderModel::new(
            "m",
            ProviderConfig::new(Provider::Anthropic, "claude")
                .api_key_env("AGENTORG_TEST_SURELY_UNSET_KEY"),
        )
        .unwrap();
        let err = model.target().unwrap_err();
        let with_key = ProviderConfig::new(Provider::Openai, "m").api_key("sk-secret");
        assert!(!format!("{with_key:?}").contains("sk-secret"));
        // A key pasted where a variable's name goes is never printed.
        let pasted = ProviderModel::new(
            "m",
            ProviderConfig::new(Provider::Openai, "m").api_key_env("sk-proj-secret"),
        )
        .unwrap();
        assert!(!format!("{pasted:?}").contains("sk-proj-secret"));
        let refused = pasted.target().unwrap_err();
        assert!(matches!(&refused, ModelError::Unauthorized { .. }));
        assert!(!refused.to_string().contains("sk-proj-secret"));
        assert!(
            matches!(&err, ModelError::Unauthorized { message } if message.contains("AGENTORG_TEST_SURELY_UNSET_KEY")),
            "{err}"
        );
    }
}
