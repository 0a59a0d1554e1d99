//! The real local model: SmolLM2-135M-Instruct behind llama-cpp-python's
//! OpenAI-compatible server (llama.cpp; agentorg-testkit starts it,
//! `scripts/test` installs it). The test asserts the path — a real
//! completion parsed, real usage counted, a real tool call parsed, and the
//! call and its result sent back and answered — never the quality of the
//! answers (a 135M model's tool arguments are often nonsense: they are
//! surfaced as given).
//!
//! The server's `chatml-function-calling` template renders a tool result's
//! role but drops its content, so what the model sees of the result cannot
//! be checked here; `tests/providers.rs` checks that we send it.
//!
//! Then an `LlmAgent` role takes a task through the same server and ends it
//! cleanly (completed, or failed within `max_turns`), its tokens in the
//! role's registry entry.
//!
//! One test, so the calls run one at a time (2 cores).

use std::time::Duration;

use std::sync::Arc;

use agentorg_core::agent::TaskSpec;
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{AgentRecord, Org};
use agentorg_core::store::{DocKey, MemoryStore, StateStore};
use agentorg_llm::{
    ChatRequest, FinishReason, LlmAgent, Message, ModelCatalog, ModelError, ToolChoice, ToolSpec,
};
use serde_json::json;

#[tokio::test]
async fn chat_and_a_tool_call_round_trip_through_llama_cpp() {
    let Some(llm) = agentorg_testkit::llama_or_skip!() else {
        return;
    };
    // Nothing listens on `dead`: the failover moves to the local model.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base_url = llm.base_url();
    let env = |name: &str| match name {
        "LLM_URL" => Some(base_url.clone()),
        "DEAD_URL" => Some(format!("http://127.0.0.1:{dead_port}/v1")),
        _ => None,
    };
    let catalog = ModelCatalog::from_toml_str_with_env(
        r#"
        [models.dead]
        provider = "openai"
        model = "smollm2"
        base_url = "${DEAD_URL}"

        [models.local]
        provider = "openai"
        model = "smollm2"
        base_url = "${LLM_URL}"
        timeout_ms = 120000

        [models.smart]
        failover = ["dead", "local"]
        "#,
        env,
    )
    .unwrap();
    let model = catalog.model("smart").unwrap();
    let local = catalog.model("local").unwrap();

    // A plain completion.
    let answer = model
        .chat(
            &ChatRequest::new()
                .system("You are a helpful assistant. Answer in one short sentence.")
                .user("What is the capital of France?")
                .max_tokens(32)
                .temperature(0.0),
        )
        .await
        .unwrap_or_else(|e| panic!("{e} (log: {})", llm.log_path().display()));
    assert_eq!(answer.provider.as_deref(), Some("local"));
    assert!(
        answer.text.as_deref().is_some_and(|t| !t.trim().is_empty()),
        "{answer:?}"
    );
    assert!(
        matches!(
            answer.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ),
        "{answer:?}"
    );
    assert!(answer.usage.input_tokens > 0 && answer.usage.output_tokens > 0);
    assert!(answer.usage.output_tokens <= 32, "{:?}", answer.usage);

    // A tool call: our dotted name goes out provider-safe and comes back ours.
    let tool = ToolSpec::new(
        "time.get_current_time",
        "The current time in an IANA timezone.",
        json!({"type": "object",
               "properties": {"timezone": {"type": "string", "description": "IANA timezone, e.g. Europe/Paris"}},
               "required": ["timezone"]}),
    );
    let asked = ChatRequest::new()
        .system("You are a helpful assistant with tools.")
        .user("What time is it in Paris?")
        .tool(tool.clone())
        .tool_choice(ToolChoice::Tool("time.get_current_time".into()))
        .max_tokens(256)
        .temperature(0.0);
    let call = match local.chat(&asked).await {
        Ok(answer) => answer,
        // Arguments cut off mid-JSON are unreadable, and said so.
        Err(e @ ModelError::Decode { .. }) => panic!("the model's tool call did not parse: {e}"),
        Err(e) => panic!("{e} (log: {})", llm.log_path().display()),
    };
    assert_eq!(call.finish_reason, FinishReason::ToolCalls, "{call:?}");
    assert!(call.usage.input_tokens > 0 && call.usage.output_tokens > 0);
    let [first] = call.tool_calls.as_slice() else {
        panic!("one tool call expected: {call:?}");
    };
    assert_eq!(first.name, "time.get_current_time");
    // Whatever it chose, surfaced as it gave it: an object (the schema's
    // grammar), maybe with a nonsense timezone.
    assert!(first.arguments.is_object(), "{:?}", first.arguments);
    assert!(!first.id.is_empty());

    // The call and its result go back in the history; the model answers.
    let question = ChatRequest::new()
        .system("You are a helpful assistant with tools.")
        .user("What time is it in Paris?")
        .tool(tool)
        .tool_choice(ToolChoice::None)
        .temperature(0.0)
        .timeout(Duration::from_secs(120));
    let bare = model
        .chat(&question.clone().max_tokens(1))
        .await
        .unwrap_or_else(|e| panic!("{e} (log: {})", llm.log_path().display()));
    let mut with_result = question;
    with_result.messages.extend([
        Message::Assistant {
            content: call.text.clone(),
            tool_calls: call.tool_calls.clone(),
        },
        Message::Tool {
            call_id: first.id.clone(),
            name: first.name.clone(),
            content: "2026-12-06T17:00:00+01:00".into(),
            is_error: false,
        },
    ]);
    let answered = model
        .chat(&with_result.max_tokens(48))
        .await
        .unwrap_or_else(|e| panic!("{e} (log: {})", llm.log_path().display()));
    assert!(answered.tool_calls.is_empty(), "{answered:?}");
    assert!(answered.text.is_some(), "{answered:?}");
    assert!(
        answered.usage.input_tokens > bare.usage.input_tokens,
        "the call went back in the history: {:?} without, {:?} with",
        bare.usage,
        answered.usage
    );

    // An LlmAgent takes a task through the local model and ends it cleanly
    // — completed, or failed within max_turns (a 135M model rarely finds
    // the right tool) — its calls' tokens in the registry.
    let chart = OrgChart::builder("local")
        .principal("founder")
        .role(
            RoleSpec::new("writer")
                .reports_to("founder")
                .description("Writes short texts."),
        )
        .build()
        .unwrap();
    let store = Arc::new(MemoryStore::new());
    let writer = LlmAgent::new(model.clone())
        .instructions("Write what the task asks, then call complete_task with it as the result.")
        .max_turns(3)
        .max_tokens(96)
        .temperature(0.0);
    let org = Org::builder(chart)
        .store(store.clone())
        .agent("writer", writer)
        .start()
        .await
        .unwrap();
    let task = org
        .principal()
        .delegate(
            "writer",
            TaskSpec::new("Write a one-line greeting for new users"),
        )
        .await
        .unwrap();
    let done = org
        .principal()
        .wait_for(&task.task_id, Duration::from_secs(600))
        .await
        .unwrap_or_else(|e| panic!("{e} (log: {})", llm.log_path().display()));
    assert!(
        matches!(done.status, TaskStatus::Completed | TaskStatus::Failed),
        "{done:?}"
    );
    if done.status == TaskStatus::Failed {
        let why = done.error.clone().unwrap_or_default();
        assert!(why.contains("max_turns"), "failed otherwise: {why}");
    }
    eprintln!(
        "local model: the writer's task ended {}: {:?} {:?}",
        done.status, done.result, done.error
    );
    // Shutting down folds the role's counters into its registry entry.
    org.shutdown().await;
    let entry = store
        .get(&DocKey::new("agentorg/local/agents", "writer").unwrap())
        .await
        .unwrap()
        .expect("the writer's registry entry");
    let record: AgentRecord = serde_json::from_value(entry.value).unwrap();
    let used = record.usage.get("local").copied().unwrap_or_default();
    assert!(
        record.tokens > 0 && used.calls >= 1 && used.input_tokens > 0 && used.output_tokens > 0,
        "{record:?}"
    );
}
