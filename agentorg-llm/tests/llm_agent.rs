//! [`LlmAgent`] with scripted models (deterministic), in memory: an
//! LLM-driven CTO delegates through the org-action tools (the chart's
//! refusal of a delegation to the CSO comes back to the model, naming the
//! rule), awaits, resumes its conversation with the results and completes;
//! malformed tool calls are answered with the error; a turn that never
//! ends fails at `max_turns`; an LLM-driven Marketing handles the
//! `deploy.complete` event; each call's tokens reach the registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentorg_core::agent::{agent_fn_cx, Outcome, Task, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::Org;
use agentorg_core::store::{DocKey, MemoryStore, StateStore};
use agentorg_llm::agent::CONVERSATIONS;
use agentorg_llm::{
    async_trait, ChatRequest, ChatResponse, LlmAgent, Message, Model, ModelError, ToolCall, Usage,
};
use serde_json::{json, Value};

/// A model whose answer is a function of the conversation so far; it
/// keeps every request it got.
struct Scripted {
    script: fn(&ChatRequest) -> ChatResponse,
    seen: Mutex<Vec<ChatRequest>>,
    /// Answered once, before the script.
    first_error: Mutex<Option<ModelError>>,
}

impl Scripted {
    fn new(script: fn(&ChatRequest) -> ChatResponse) -> Arc<Self> {
        Arc::new(Self {
            script,
            seen: Mutex::default(),
            first_error: Mutex::default(),
        })
    }

    /// Whose first answer cannot be read.
    fn unreadable_first(script: fn(&ChatRequest) -> ChatResponse) -> Arc<Self> {
        let model = Self::new(script);
        *model.first_error.lock().unwrap() = Some(ModelError::Decode {
            message: "tool arguments are not JSON".into(),
        });
        model
    }

    fn seen(&self) -> Vec<ChatRequest> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Model for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.seen.lock().unwrap().push(request.clone());
        if let Some(e) = self.first_error.lock().unwrap().take() {
            return Err(e);
        }
        Ok((self.script)(request).with_usage(Usage::new(100, 20)))
    }
}

fn calls(list: &[(&str, Value)]) -> ChatResponse {
    ChatResponse::tool_calls(
        list.iter()
            .enumerate()
            .map(|(i, (name, args))| ToolCall::new(format!("c{i}"), *name, args.clone()))
            .collect(),
    )
}

fn last(request: &ChatRequest) -> &Message {
    request.messages.last().expect("a conversation")
}

/// The CTO: tries the CSO, then — told the chart's rule — backend and
/// frontend, awaits, and completes with what came back.
fn cto(request: &ChatRequest) -> ChatResponse {
    match last(request) {
        Message::User { content } if content.starts_with("A task for you") => {
            calls(&[("delegate", json!({"to": "cso", "title": "security review"}))])
        }
        Message::Tool {
            is_error: true,
            content,
            ..
        } if content.contains("cso") => calls(&[
            (
                "delegate",
                json!({"to": "backend", "title": "API endpoints"}),
            ),
            (
                "delegate",
                json!({"to": "frontend", "title": "Dashboard UI"}),
            ),
            ("await_subtasks", json!({})),
        ]),
        Message::User { content } if content.starts_with("Your subtasks") => calls(&[(
            "complete_task",
            json!({"result": {"shipped": true, "resumed_with": request.messages.len()}}),
        )]),
        other => ChatResponse::text(format!("unexpected: {other:?}")),
    }
}

fn chart() -> OrgChart {
    OrgChart::builder("genbrain")
        .principal("founder")
        .role(RoleSpec::new("cto").reports_to("founder"))
        .role(RoleSpec::new("cso").reports_to("founder"))
        .role(RoleSpec::new("backend").reports_to("cto"))
        .role(RoleSpec::new("frontend").reports_to("cto"))
        .role(
            RoleSpec::new("devops")
                .reports_to("cto")
                .publishes(["deploy.complete"]),
        )
        .role(
            RoleSpec::new("marketing")
                .reports_to("founder")
                .subscribes(["deploy.complete"]),
        )
        .build()
        .unwrap()
}

fn leaf() -> impl agentorg_core::agent::Agent {
    agent_fn_cx(|_cx, task: Task| {
        Box::pin(async move { Ok(Outcome::Complete(json!({"done": task.title}))) })
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_llm_cto_delegates_is_refused_awaits_resumes_and_completes() {
    let model = Scripted::new(cto);
    let store = Arc::new(MemoryStore::new());
    let org = Org::builder(chart())
        .store(store.clone())
        .agent("cto", LlmAgent::new(model.clone()).instructions("Ship it."))
        .agent("backend", leaf())
        .agent("frontend", leaf())
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let task = founder
        .delegate("cto", TaskSpec::new("analytics dashboard"))
        .await
        .unwrap();
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let tree = founder.task_tree(&task.task_id).await.unwrap();
    assert!(tree.all_completed());

    let seen = model.seen();
    assert_eq!(seen.len(), 3, "three model calls");
    // The role's prompt names its place in the chart, and the tools are
    // the org actions of a task turn.
    let Message::System { content: prompt } = &seen[0].messages[0] else {
        panic!("no system prompt");
    };
    assert!(
        prompt.contains("`cto`") && prompt.contains("backend, devops, frontend"),
        "{prompt}"
    );
    assert!(prompt.contains("Ship it."));
    let tools: Vec<&str> = seen[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert!(
        tools.contains(&"delegate") && tools.contains(&"await_subtasks"),
        "{tools:?}"
    );
    assert!(!tools.contains(&"vote"));
    // The refusal reached the model, naming the rule.
    let Message::Tool {
        content, is_error, ..
    } = last(&seen[1])
    else {
        panic!("no tool result");
    };
    assert!(*is_error && content.contains("not allowed"), "{content}");
    // The third call (another delivery: the agent keeps nothing between
    // them) resumed the whole conversation from the store, refusal
    // included, with the results.
    assert!(seen[2].messages.len() > seen[1].messages.len());
    assert!(seen[2].messages.iter().any(
        |m| matches!(m, Message::Tool { is_error: true, content, .. } if content.contains("cso"))
    ));
    let Message::User { content } = last(&seen[2]) else {
        panic!("no results");
    };
    assert!(
        content.contains("API endpoints") && content.contains("Dashboard UI"),
        "{content}"
    );
    // Every call's tokens went to the registry.
    // The registry's counters are folded in every sweep (30 s): wait for them.
    let mut tokens = 0;
    for _ in 0..1200 {
        tokens = founder
            .agent_record("cto")
            .await
            .unwrap()
            .map_or(0, |r| r.tokens);
        if tokens >= 3 * 120 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tokens, 3 * 120);
    // The conversation was kept while the task waited, and removed when it
    // completed.
    let kept = DocKey::new(
        format!("agentorg/genbrain/roles/cto/{CONVERSATIONS}"),
        &task.task_id,
    )
    .unwrap();
    assert!(store.get(&kept).await.unwrap().is_none());
    org.shutdown().await;
}

/// Nonsense first (an unknown tool, a delegate without a title, plain
/// text), then a clean end: every error goes back to the model.
fn sloppy(request: &ChatRequest) -> ChatResponse {
    let errors = request
        .messages
        .iter()
        .filter(|m| matches!(m, Message::Tool { is_error: true, .. }))
        .count();
    match errors {
        0 => calls(&[
            ("fly_to_the_moon", json!({})),
            ("delegate", json!({"to": "backend"})),
        ]),
        _ if matches!(last(request), Message::Tool { .. }) => ChatResponse::text("thinking…"),
        _ => calls(&[("complete_task", json!({"result": "done anyway"}))]),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn malformed_calls_are_answered_with_the_error_and_a_turn_that_never_ends_fails() {
    let model = Scripted::new(sloppy);
    let silent = Scripted::new(|_| ChatResponse::text("I would rather chat."));
    let org = Org::builder(chart())
        .agent("cto", LlmAgent::new(model.clone()))
        .agent("cso", LlmAgent::new(silent.clone()).max_turns(3))
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let task = founder.delegate("cto", TaskSpec::new("x")).await.unwrap();
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result, Some(json!("done anyway")));
    let first_results: Vec<String> = model.seen()[1]
        .messages
        .iter()
        .filter_map(|m| match m {
            Message::Tool { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect();
    assert!(
        first_results[0].contains("fly_to_the_moon"),
        "{first_results:?}"
    );
    assert!(first_results[1].contains("title"), "{first_results:?}");

    let task = founder.delegate("cso", TaskSpec::new("y")).await.unwrap();
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Failed, "{done:?}");
    assert!(
        done.error
            .as_deref()
            .unwrap_or_default()
            .contains("max_turns"),
        "{done:?}"
    );
    assert_eq!(silent.seen().len(), 3);
    org.shutdown().await;
}

/// Marketing: the event in, a changelog note out.
fn marketing(request: &ChatRequest) -> ChatResponse {
    match last(request) {
        // After the unreadable first answer.
        Message::User { content } if content.contains("could not be read") => {
            calls(&[("await_subtasks", json!({}))])
        }
        Message::Tool {
            is_error: true,
            content,
            ..
        } if content.contains("not available") => calls(&[(
            "complete_task",
            json!({"result": "changelog: v2.4.1 is out"}),
        )]),
        other => ChatResponse::text(format!("unexpected: {other:?}")),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_llm_marketing_handles_deploy_complete() {
    let model = Scripted::unreadable_first(marketing);
    // The founder's task reaches devops through the cto, who delegates it.
    let org = Org::builder(chart())
        .agent(
            "cto",
            agent_fn_cx(|cx, _task: Task| {
                Box::pin(async move {
                    cx.delegate("devops", TaskSpec::new("deploy")).await?;
                    Ok(Outcome::AwaitSubtasks)
                })
            }),
        )
        .agent(
            "devops",
            agent_fn_cx(|cx, _task: Task| {
                Box::pin(async move {
                    cx.publish_event("deploy.complete", &json!({"version": "v2.4.1"}))
                        .map_err(|e| agentorg_core::agent::AgentError::permanent(e.to_string()))?;
                    Ok(Outcome::Complete(json!("deployed")))
                })
            }),
        )
        .agent("marketing", LlmAgent::new(model.clone()))
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let task = founder
        .delegate("cto", TaskSpec::new("release"))
        .await
        .unwrap();
    founder
        .wait_for(&task.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    // Three calls: the unreadable answer, await_subtasks (withheld in an
    // event's turn), complete_task; then nothing more (no retry of a failed
    // event).
    for _ in 0..600 {
        if model.seen().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let seen = model.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let Message::User { content } = &seen[0].messages[1] else {
        panic!("no event message");
    };
    assert!(
        content.contains("v2.4.1") && content.contains("devops"),
        "{content}"
    );
    let tools: Vec<&str> = seen[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert!(
        !tools.contains(&"await_subtasks") && !tools.contains(&"report_usage"),
        "{tools:?}"
    );
    let Message::User { content } = last(&seen[1]) else {
        panic!("the unreadable answer was not answered");
    };
    assert!(content.contains("not JSON"), "{content}");
    org.shutdown().await;
}
