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
use agentorg_core::envelope::Kind;
use agentorg_core::hierarchy::Escalation;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{AgentRecord, Org, Principal};
use agentorg_core::store::{DocKey, MemoryStore, StateStore};
use agentorg_llm::agent::CONVERSATIONS;
use agentorg_llm::{
    async_trait, Budget, ChatRequest, ChatResponse, LlmAgent, Message, Model, ModelError, Price,
    ToolCall, Usage,
};
use futures::StreamExt;
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

/// The role's registry entry once it counts `tokens` (the counters are
/// folded every sweep, 30 s).
async fn registry_with(founder: &Principal, role: &str, tokens: u64) -> AgentRecord {
    for _ in 0..1200 {
        if let Some(r) = founder.agent_record(role).await.unwrap() {
            if r.tokens >= tokens {
                assert_eq!(r.tokens, tokens, "{r:?}");
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{role}` never counted {tokens} tokens");
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
        .agent(
            "cto",
            LlmAgent::new(model.clone())
                .instructions("Ship it.")
                .price(Price::new(1.0, 2.0)),
        )
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
    // Every call's tokens went to the registry, in and out, under the model
    // that answered, priced.
    let record = registry_with(&founder, "cto", 3 * 120).await;
    let used = record.usage["scripted"];
    assert_eq!(
        (used.calls, used.input_tokens, used.output_tokens),
        (3, 300, 60)
    );
    let cost = 300.0 / 1e6 + 60.0 * 2.0 / 1e6;
    assert!((used.cost_usd - cost).abs() < 1e-12, "{used:?}");
    assert!((record.cost_usd - cost).abs() < 1e-12, "{record:?}");
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

/// A model that never ends its turn: it reads the task tree, again and
/// again (each call 120 tokens).
fn dawdler(_: &ChatRequest) -> ChatResponse {
    calls(&[("read_task_tree", json!({}))])
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_spent_task_budget_escalates_to_the_manager_with_what_was_spent() {
    let model = Scripted::new(dawdler);
    let org = Org::builder(chart())
        .agent(
            "cso",
            LlmAgent::new(model.clone()).task_budget(Budget::tokens(250)),
        )
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let mut inbox = founder.inbox().await.unwrap();
    let task = founder
        .delegate("cso", TaskSpec::new("audit"))
        .await
        .unwrap();
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    // Three calls (0, 120, 240 tokens spent before each), then 360 ≥ 250:
    // no fourth call.
    assert_eq!(model.seen().len(), 3);
    assert_eq!(done.status, TaskStatus::Failed);
    let why = done.error.unwrap_or_default();
    assert!(
        why.contains("task budget") && why.contains("360 tokens") && why.contains("founder"),
        "{why}"
    );
    let escalation = loop {
        let env = tokio::time::timeout(Duration::from_secs(60), inbox.next())
            .await
            .expect("an escalation")
            .expect("the inbox")
            .unwrap();
        if env.kind == Kind::Escalation {
            break serde_json::from_value::<Escalation>(env.payload).unwrap();
        }
    };
    assert_eq!(escalation.reason, "budget_spent");
    assert_eq!(escalation.task_id.as_ref(), Some(&task.task_id));
    assert_eq!(escalation.details["scope"], "task");
    assert_eq!(escalation.details["spent"]["tokens"], 360);
    assert_eq!(escalation.details["budget"]["tokens"], 250);
    assert_eq!(escalation.details["model_calls"], 3);
    org.shutdown().await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_spent_role_budget_stops_the_next_task_before_any_call() {
    // Three calls per task: a refused call, text, then complete.
    let model = Scripted::new(sloppy);
    let org = Org::builder(chart())
        .agent(
            "cto",
            LlmAgent::new(model.clone()).role_budget(Budget::tokens(300)),
        )
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let first = founder.delegate("cto", TaskSpec::new("one")).await.unwrap();
    let done = founder
        .wait_for(&first.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let calls = model.seen().len();
    assert_eq!(calls, 3);
    // 360 tokens spent by the role (not yet folded into its registry entry:
    // this process's own count is included).
    let second = founder.delegate("cto", TaskSpec::new("two")).await.unwrap();
    let done = founder
        .wait_for(&second.task_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Failed);
    let why = done.error.unwrap_or_default();
    assert!(
        why.contains("role budget") && why.contains("360 tokens"),
        "{why}"
    );
    assert_eq!(
        model.seen().len(),
        calls,
        "no call once the budget is spent"
    );
    org.shutdown().await;
}

/// Reads the task tree twelve times (its own count: the conversation
/// forgets), then delegates to backend and awaits; completes with the
/// results. Keeps every request.
#[derive(Default)]
struct Reader {
    seen: Mutex<Vec<ChatRequest>>,
}

#[async_trait]
impl Model for Reader {
    fn name(&self) -> &str {
        "reader"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let calls_so_far = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(request.clone());
            seen.len() - 1
        };
        Ok(match last(request) {
            Message::User { content } if content.starts_with("Your subtasks") => {
                calls(&[("complete_task", json!({"result": "read and done"}))])
            }
            _ if calls_so_far < 12 => calls(&[("read_task_tree", json!({}))]),
            _ => calls(&[
                (
                    "delegate",
                    json!({"to": "backend", "title": "API endpoints"}),
                ),
                ("await_subtasks", json!({})),
            ]),
        })
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_long_conversation_stays_bounded_its_old_turns_kept_by_reference() {
    const BUDGET: usize = 600;
    let model = Arc::new(Reader::default());
    let store = Arc::new(MemoryStore::new());
    let org = Org::builder(chart())
        .store(store.clone())
        .agent(
            "cto",
            LlmAgent::new(model.clone())
                .context_tokens(BUDGET)
                .max_turns(20),
        )
        .agent(
            "backend",
            agent_fn_cx(|_cx, _task: Task| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Outcome::Complete(json!("endpoints")))
                })
            }),
        )
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let task = founder
        .delegate("cto", TaskSpec::new("dashboards"))
        .await
        .unwrap();
    let page = |n: usize| {
        DocKey::new(
            format!("agentorg/genbrain/roles/cto/{CONVERSATIONS}"),
            format!("{}.{n}", task.task_id),
        )
        .unwrap()
    };
    // While the task waits, its old turns are in a page of the store.
    let mut kept = None;
    for _ in 0..600 {
        kept = store.get(&page(1)).await.unwrap();
        if kept.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = kept.expect("a page of old turns while the task waits");
    let moved: Vec<Message> = serde_json::from_str(
        kept.value["messages"]
            .as_str()
            .expect("the messages as text"),
    )
    .unwrap();
    assert!(
        moved
            .iter()
            .any(|m| matches!(m, Message::Assistant { tool_calls, .. } if tool_calls[0].name == "read_task_tree")),
        "{moved:?}"
    );
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(done.result, Some(json!("read and done")));
    let seen = model.seen.lock().unwrap().clone();
    // Twelve reads and the delegation in the first delivery, the completion
    // after: every request within the budget, its head kept, and a
    // stand-in naming a page once turns moved out.
    assert_eq!(seen.len(), 14);
    for request in &seen {
        // Estimated as the agent does: four characters a token, and four
        // a message.
        let chars: usize = request
            .messages
            .iter()
            .map(|m| match m {
                Message::System { content } | Message::User { content } => content.len(),
                Message::Assistant { tool_calls, .. } => tool_calls
                    .iter()
                    .map(|c| c.name.len() + c.arguments.to_string().len())
                    .sum(),
                Message::Tool { content, name, .. } => content.len() + name.len(),
                _ => 0,
            })
            .sum();
        let tokens = chars / 4 + 4 * request.messages.len();
        assert!(tokens <= BUDGET, "{tokens} tokens");
        assert!(matches!(request.messages[0], Message::System { .. }));
        assert!(
            matches!(&request.messages[1], Message::User { content } if content.starts_with("A task for you"))
        );
    }
    let stand_in = seen.iter().rev().find_map(|r| match &r.messages[2] {
        Message::User { content } if content.contains("moved out") => Some(content.clone()),
        _ => None,
    });
    let stand_in = stand_in.expect("a stand-in for the moved turns");
    assert!(
        stand_in.contains(&format!("{CONVERSATIONS}/{}.", task.task_id)),
        "{stand_in}"
    );
    // Once completed, the conversation and its pages are gone.
    for n in 1..=3 {
        assert!(store.get(&page(n)).await.unwrap().is_none());
    }
    org.shutdown().await;
}
