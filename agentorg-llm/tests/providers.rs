//! Each provider adapter against a local HTTP server answering with the
//! provider's documented response bodies: text, tool calls, 429 with
//! retry-after, 500 — asserting the request we sent. Then failover across
//! two such servers.

use std::sync::Arc;
use std::time::Duration;

use agentorg_llm::{
    BreakerPolicy, ChatRequest, Failover, FinishReason, Message, Model, ModelError, Provider,
    ProviderConfig, ProviderModel, ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-test-key";

fn model(provider: Provider, server: &MockServer, prefix: &str, id: &str) -> ProviderModel {
    ProviderModel::new(
        format!("{provider}-test"),
        ProviderConfig::new(provider, id)
            .base_url(format!("{}{prefix}", server.uri()))
            .api_key(KEY)
            .timeout(Duration::from_secs(30)),
    )
    .unwrap()
}

/// A request with a system prompt, a turn of history with a tool call and
/// its result, and one tool named the way the org names tools.
fn request() -> ChatRequest {
    ChatRequest::new()
        .system("You are the CTO.")
        .user("What time is it?")
        .message(Message::Assistant {
            content: None,
            tool_calls: vec![ToolCall::new(
                "call_0",
                "time.get_current_time",
                json!({"timezone": "UTC"}),
            )],
        })
        .message(Message::Tool {
            call_id: "call_0".into(),
            name: "time.get_current_time".into(),
            content: "12:00".into(),
            is_error: false,
        })
        .user("And in Paris?")
        .tool(ToolSpec::new(
            "time.get_current_time",
            "The current time in a timezone.",
            json!({"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}),
        ))
        .tool_choice(ToolChoice::Tool("time.get_current_time".into()))
        .max_tokens(64)
}

async fn sent(server: &MockServer) -> (wiremock::Request, Value) {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "one request sent");
    let r = requests.into_iter().next().unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    (r, body)
}

fn header<'a>(r: &'a wiremock::Request, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn serve(server: &MockServer, at: &str, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(at))
        .respond_with(response)
        .mount(server)
        .await;
}

/// A provider's documented failures: a 429 that says when to retry (in a
/// header, or Gemini's body), a 500 and a 400.
struct Failures {
    rate_limited: ResponseTemplate,
    wait: Duration,
    server_error: ResponseTemplate,
    bad_request: ResponseTemplate,
}

/// Each failure maps to the kind a caller acts on.
async fn failures(provider: Provider, prefix: &str, at: &str, id: &str, f: Failures) {
    let call = |template: ResponseTemplate| async move {
        let server = MockServer::start().await;
        serve(&server, at, template).await;
        model(provider, &server, prefix, id)
            .chat(&request())
            .await
            .unwrap_err()
    };
    let err = call(f.rate_limited).await;
    assert!(
        matches!(&err, ModelError::RateLimited { retry_after: Some(d), .. } if *d == f.wait),
        "{provider}: {err:?}"
    );
    assert!(err.is_retryable());
    let err = call(f.server_error).await;
    assert!(
        matches!(&err, ModelError::Unavailable { message } if message.contains("500")),
        "{provider}: {err:?}"
    );
    assert!(err.is_retryable());
    let err = call(f.bad_request).await;
    assert!(
        matches!(&err, ModelError::InvalidRequest { .. }),
        "{provider}: {err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn openai_chat_completions() {
    let at = "/v1/chat/completions";
    // Text (the documented chat.completion object).
    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1741569952, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "It is 13:00 in Paris.", "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}
    }))).await;
    let answer = model(Provider::Openai, &server, "/v1", "gpt-4.1")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(answer.text.as_deref(), Some("It is 13:00 in Paris."));
    assert_eq!(answer.usage, Usage::new(19, 10));
    assert_eq!(answer.provider.as_deref(), Some("openai-test"));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let (r, body) = sent(&server).await;
    assert_eq!(header(&r, "authorization"), format!("Bearer {KEY}"));
    assert_eq!(body["model"], "gpt-4.1");
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(
        body["tool_choice"]["function"]["name"],
        "time__get_current_time"
    );
    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
    assert_eq!(messages[0]["content"], "You are the CTO.");
    let call = &messages[2]["tool_calls"][0];
    assert_eq!(call["id"], "call_0");
    assert_eq!(call["function"]["name"], "time__get_current_time");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"timezone": "UTC"}));
    assert_eq!(messages[3]["tool_call_id"], "call_0");
    assert_eq!(messages[3]["content"], "12:00");
    let tool = &body["tools"][0];
    assert_eq!(tool["type"], "function");
    assert_eq!(tool["function"]["name"], "time__get_current_time");
    assert_eq!(
        tool["function"]["parameters"]["required"],
        json!(["timezone"])
    );

    // Tool calls: the provider's name maps back to ours.
    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-2", "object": "chat.completion", "created": 1741569952, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "time__get_current_time", "arguments": "{\"timezone\":\"Europe/Paris\"}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
    }))).await;
    let answer = model(Provider::Openai, &server, "/v1", "gpt-4.1")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(
        answer.tool_calls,
        vec![ToolCall::new(
            "call_1",
            "time.get_current_time",
            json!({"timezone": "Europe/Paris"})
        )]
    );
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    assert_eq!(answer.usage, Usage::new(82, 17));

    failures(Provider::Openai, "/v1", at, "gpt-4.1", Failures {
        // What OpenAI's SDKs read: retry-after-ms, then retry-after.
        rate_limited: ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "7000")
            .set_body_json(json!({"error": {"message": "Rate limit reached for gpt-4.1 on tokens per min (TPM): Limit 30000, Used 30000, Requested 100. Please try again in 7s.",
                                            "type": "tokens", "param": null, "code": "rate_limit_exceeded"}})),
        wait: Duration::from_secs(7),
        server_error: ResponseTemplate::new(500).set_body_json(json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": null}})),
        bad_request: ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "Invalid schema for function 'time__get_current_time'.",
            "type": "invalid_request_error", "param": "tools[0].function.parameters", "code": "invalid_function_parameters"}})),
    })
    .await;
}

#[tokio::test]
async fn anthropic_messages() {
    let at = "/v1/messages";
    let server = MockServer::start().await;
    serve(
        &server,
        at,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "It is 13:00 in Paris."}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 11}
        })),
    )
    .await;
    let answer = model(Provider::Anthropic, &server, "/v1", "claude-sonnet-4-5")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(answer.text.as_deref(), Some("It is 13:00 in Paris."));
    assert_eq!(answer.usage, Usage::new(25, 11));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let (r, body) = sent(&server).await;
    assert_eq!(header(&r, "x-api-key"), KEY);
    assert!(!header(&r, "anthropic-version").is_empty());
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 64);
    assert!(
        body["system"].to_string().contains("You are the CTO."),
        "{}",
        body["system"]
    );
    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "user"]);
    let tool_use = &messages[1]["content"][0];
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_use["id"], "call_0");
    assert_eq!(tool_use["name"], "time__get_current_time");
    assert_eq!(tool_use["input"], json!({"timezone": "UTC"}));
    let result = &messages[2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "call_0");
    let tool = &body["tools"][0];
    assert_eq!(tool["name"], "time__get_current_time");
    assert_eq!(tool["input_schema"]["required"], json!(["timezone"]));

    let server = MockServer::start().await;
    serve(
        &server,
        at,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "time__get_current_time",
                 "input": {"timezone": "Europe/Paris"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 80, "output_tokens": 30}
        })),
    )
    .await;
    let answer = model(Provider::Anthropic, &server, "/v1", "claude-sonnet-4-5")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(answer.text.as_deref(), Some("Let me check."));
    assert_eq!(
        answer.tool_calls,
        vec![ToolCall::new(
            "toolu_01",
            "time.get_current_time",
            json!({"timezone": "Europe/Paris"})
        )]
    );
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    assert_eq!(answer.usage, Usage::new(80, 30));

    failures(Provider::Anthropic, "/v1", at, "claude-sonnet-4-5", Failures {
        rate_limited: ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_json(json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "This request would exceed the rate limit for your organization of 50 requests per minute."}})),
        wait: Duration::from_secs(7),
        server_error: ResponseTemplate::new(500).set_body_json(json!({"type": "error",
            "error": {"type": "api_error", "message": "Internal server error"}})),
        bad_request: ResponseTemplate::new(400).set_body_json(json!({"type": "error",
            "error": {"type": "invalid_request_error", "message": "tools.0.input_schema: JSON schema is invalid"}})),
    })
    .await;
    // Anthropic's 529, overloaded: unavailable too.
    let server = MockServer::start().await;
    serve(
        &server,
        at,
        ResponseTemplate::new(529).set_body_json(json!({"type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    )
    .await;
    let err = model(Provider::Anthropic, &server, "/v1", "claude-sonnet-4-5")
        .chat(&request())
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn gemini_generate_content() {
    let at = "/v1beta/models/gemini-2.5-flash:generateContent";
    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"parts": [{"text": "It is 13:00 in Paris."}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 21, "candidatesTokenCount": 9, "totalTokenCount": 30},
        "modelVersion": "gemini-2.5-flash"
    }))).await;
    let answer = model(Provider::Gemini, &server, "/v1beta", "gemini-2.5-flash")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(answer.text.as_deref(), Some("It is 13:00 in Paris."));
    assert_eq!(answer.usage, Usage::new(21, 9));
    assert_eq!(answer.finish_reason, FinishReason::Stop);
    let (r, body) = sent(&server).await;
    assert_eq!(header(&r, "x-goog-api-key"), KEY);
    assert!(
        body["systemInstruction"]
            .to_string()
            .contains("You are the CTO."),
        "{body}"
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 64);
    let contents = body["contents"].as_array().unwrap();
    let roles: Vec<&str> = contents
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user", "user"]);
    let call = &contents[1]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "time__get_current_time");
    assert_eq!(call["args"], json!({"timezone": "UTC"}));
    let response = &contents[2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"], "time__get_current_time");
    let decl = &body["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "time__get_current_time");

    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"parts": [{"functionCall": {"name": "time__get_current_time",
                                                                 "args": {"timezone": "Europe/Paris"}}}],
                                    "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 70, "candidatesTokenCount": 12, "totalTokenCount": 82}
    }))).await;
    let answer = model(Provider::Gemini, &server, "/v1beta", "gemini-2.5-flash")
        .chat(&request())
        .await
        .unwrap();
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].name, "time.get_current_time");
    assert_eq!(
        answer.tool_calls[0].arguments,
        json!({"timezone": "Europe/Paris"})
    );
    assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
    assert_eq!(answer.usage, Usage::new(70, 12));

    failures(Provider::Gemini, "/v1beta", at, "gemini-2.5-flash", Failures {
        // Gemini says when in the body (google.rpc.RetryInfo), not a header.
        rate_limited: ResponseTemplate::new(429).set_body_json(json!({"error": {
            "code": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}})),
        wait: Duration::from_secs(7),
        server_error: ResponseTemplate::new(500).set_body_json(json!({"error": {
            "code": 500, "message": "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
            "status": "INTERNAL"}})),
        bad_request: ResponseTemplate::new(400).set_body_json(json!({"error": {
            "code": 400, "message": "Invalid JSON payload received. Unknown name \"foo\": Cannot find field.",
            "status": "INVALID_ARGUMENT"}})),
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_answer_and_a_closed_port() {
    let at = "/v1/chat/completions";
    let server = MockServer::start().await;
    serve(
        &server,
        at,
        ResponseTemplate::new(200).set_body_string("<html>gateway</html>"),
    )
    .await;
    let err = model(Provider::Openai, &server, "/v1", "m")
        .chat(&request())
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Decode { .. }), "{err:?}");

    // Nothing listens on the port: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = ProviderModel::new(
        "gone",
        ProviderConfig::new(Provider::Openai, "m").base_url(format!("http://127.0.0.1:{port}/v1")),
    )
    .unwrap();
    let err = gone.chat(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_request_timeout_bounds_the_call() {
    let server = MockServer::start().await;
    serve(
        &server,
        "/v1/chat/completions",
        ResponseTemplate::new(200)
            .set_delay(Duration::from_secs(30))
            .set_body_json(json!({})),
    )
    .await;
    let err = model(Provider::Openai, &server, "/v1", "m")
        .chat(&request().timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::Timeout {
            after: Duration::from_millis(200)
        }
    );
}

fn openai_text(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-3", "object": "chat.completion", "created": 1741569952, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    }))
}

/// Two OpenAI-compatible servers behind a failover: the first answers
/// `first`, the second always answers.
async fn pair(first: ResponseTemplate) -> (MockServer, MockServer, Failover) {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    serve(&a, "/v1/chat/completions", first).await;
    serve(&b, "/v1/chat/completions", openai_text("from b")).await;
    let failover = Failover::new([
        Arc::new(model(Provider::Openai, &a, "/v1", "m")) as Arc<dyn Model>,
        Arc::new(
            ProviderModel::new(
                "second",
                ProviderConfig::new(Provider::Openai, "m")
                    .base_url(format!("{}/v1", b.uri()))
                    .api_key(KEY),
            )
            .unwrap(),
        ),
    ])
    .breaker(BreakerPolicy::new(2, Duration::from_secs(600)));
    (a, b, failover)
}

async fn count(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn failover_moves_on_429_and_503_not_on_400() {
    for status in [429, 503] {
        let (a, b, failover) = pair(ResponseTemplate::new(status).set_body_string("no")).await;
        let answer = failover.chat(&request()).await.unwrap();
        assert_eq!(answer.text.as_deref(), Some("from b"), "{status}");
        assert_eq!(answer.provider.as_deref(), Some("second"));
        assert_eq!((count(&a).await, count(&b).await), (1, 1), "{status}");
    }
    let (a, b, failover) = pair(ResponseTemplate::new(400).set_body_string("bad")).await;
    let err = failover.chat(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::InvalidRequest { .. }), "{err:?}");
    assert_eq!((count(&a).await, count(&b).await), (1, 0));
}

#[tokio::test]
async fn a_provider_that_keeps_failing_is_skipped_while_its_breaker_is_open() {
    let (a, b, failover) = pair(ResponseTemplate::new(503).set_body_string("down")).await;
    for _ in 0..5 {
        let answer = failover.chat(&request()).await.unwrap();
        assert_eq!(answer.provider.as_deref(), Some("second"));
    }
    // Two failures opened the breaker (for 600 s): the next three calls
    // went straight to the second.
    assert_eq!((count(&a).await, count(&b).await), (2, 5));
}

#[tokio::test]
async fn gemini_thought_signatures_go_back_with_their_call() {
    let at = "/v1beta/models/gemini-3-pro:generateContent";
    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"parts": [{"functionCall": {"name": "time__get_current_time",
                                                                 "args": {"timezone": "UTC"}},
                                                "thoughtSignature": "c2lnbmF0dXJl"}],
                                    "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
    }))).await;
    let gemini = model(Provider::Gemini, &server, "/v1beta", "gemini-3-pro");
    let answer = gemini.chat(&request()).await.unwrap();
    assert_eq!(answer.tool_calls[0].signatures, ["c2lnbmF0dXJl"]);

    // The call in the next request's history carries its signature.
    let server = MockServer::start().await;
    serve(&server, at, ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"content": {"parts": [{"text": "12:00"}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 2, "totalTokenCount": 22}
    }))).await;
    let call = answer.tool_calls[0].clone();
    let next = ChatRequest::new()
        .user("What time is it?")
        .message(Message::Assistant {
            content: None,
            tool_calls: vec![call.clone()],
        })
        .message(Message::Tool {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content: "12:00".into(),
            is_error: false,
        });
    model(Provider::Gemini, &server, "/v1beta", "gemini-3-pro")
        .chat(&next)
        .await
        .unwrap();
    let (_, body) = sent(&server).await;
    assert!(
        body["contents"].to_string().contains("c2lnbmF0dXJl"),
        "{}",
        body["contents"]
    );
}
