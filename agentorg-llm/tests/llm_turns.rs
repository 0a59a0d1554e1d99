//! [`LlmAgent`] beyond tasks, with a scripted model (deterministic), in
//! memory: meeting turns, the facilitator's proposal and sealed ballots;
//! an escalation decided by the model; a peer's request answered by it.
//! Each reaches the model as one turn with that turn's actions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::hierarchy::{Decision, TaskStatus};
use agentorg_core::meeting::MeetingSpec;
use agentorg_core::runtime::Org;
use agentorg_llm::{
    async_trait, ChatRequest, ChatResponse, LlmAgent, Message, Model, ModelError, ToolCall, Usage,
};
use serde_json::{json, Value};

/// One model for every thinking role: its answer follows the turn's
/// opening message; it keeps the tools each request offered.
#[derive(Default)]
struct Script {
    offered: Mutex<Vec<(String, Vec<String>)>>,
}

fn call(name: &str, args: Value) -> ChatResponse {
    ChatResponse::tool_calls(vec![ToolCall::new("c0", name, args)])
}

/// The role a request's system prompt names (`You are `x``).
fn role_of(request: &ChatRequest) -> String {
    match request.messages.first() {
        Some(Message::System { content }) => {
            content.split('`').nth(1).unwrap_or_default().to_owned()
        }
        _ => String::new(),
    }
}

#[async_trait]
impl Model for Script {
    fn name(&self) -> &str {
        "script"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let role = role_of(request);
        let Some(Message::User { content: opening }) = request.messages.get(1) else {
            return Ok(ChatResponse::text("no opening"));
        };
        if request.messages.len() == 2 {
            let tools = request.tools.iter().map(|t| t.name.clone()).collect();
            self.offered.lock().unwrap().push((opening.clone(), tools));
        }
        let answer = if opening.starts_with("Your turn to speak") {
            call(
                "speak",
                json!({"text": format!("{role} favours ClickHouse")}),
            )
        } else if opening.starts_with("You facilitate") {
            call(
                "propose",
                json!({"decision": "Use ClickHouse", "rationale": "everyone favours it",
                       "action_items": [{"agent": "backend", "task": "Set up ClickHouse"}]}),
            )
        } else if opening.starts_with("Vote in the meeting") {
            if role == "frontend" {
                call(
                    "vote",
                    json!({"vote": "approve_with_conditions", "conditions": ["a load test"]}),
                )
            } else {
                call("vote", json!({"vote": "approve"}))
            }
        } else if opening.starts_with("An escalation") {
            call(
                "decide_escalation",
                json!({"decision": {"approved": true, "by": role}}),
            )
        } else if opening.starts_with("A request from your peer") {
            call(
                "answer_peer_request",
                json!({"answer": {"schema": "v2", "by": role}}),
            )
        } else if opening.starts_with("A task for you") && role != "cto" {
            call("complete_task", json!({"result": format!("{role} did it")}))
        } else if opening.starts_with("A task for you") {
            match request.messages.last() {
                Some(Message::User { content }) if content.starts_with("Your subtasks") => {
                    call("complete_task", json!({"result": "rolled up"}))
                }
                _ => ChatResponse::tool_calls(vec![
                    ToolCall::new(
                        "c0",
                        "delegate",
                        json!({"to": "backend", "title": "analytics API"}),
                    ),
                    ToolCall::new("c1", "await_subtasks", json!({})),
                ]),
            }
        } else {
            ChatResponse::text("unexpected")
        };
        Ok(answer.with_usage(Usage::new(50, 10)))
    }
}

fn chart() -> OrgChart {
    OrgChart::builder("genbrain")
        .principal("founder")
        .role(
            RoleSpec::new("cto")
                .reports_to("founder")
                .meets(["backend", "frontend"]),
        )
        .role(RoleSpec::new("backend").reports_to("cto"))
        .role(RoleSpec::new("frontend").reports_to("cto"))
        .peer("backend", "frontend")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn llm_participants_speak_propose_and_vote() {
    let model = Arc::new(Script::default());
    let mut builder = Org::builder(chart());
    for role in ["cto", "backend", "frontend"] {
        builder = builder.agent(role, LlmAgent::new(model.clone()));
    }
    let org = builder.start().await.unwrap();
    let founder = org.principal();
    let spec = MeetingSpec::new("Architecture review")
        .participants(["cto", "backend", "frontend"])
        .agenda(["Storage for analytics events"])
        .turn_timeout(Duration::from_secs(60));
    let id = founder.schedule_meeting("cto", &spec).await.unwrap();
    let record = founder
        .wait_meeting(&id, Duration::from_secs(300))
        .await
        .unwrap()
        .to_json();
    assert_eq!(record["decision"], "Use ClickHouse", "{record:#}");
    assert_eq!(
        record["votes"],
        json!({"cto": "approve", "backend": "approve", "frontend": "approve_with_conditions"}),
        "{record:#}"
    );
    let said: Vec<&str> = record["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["said"].as_str())
        .collect();
    assert_eq!(
        said,
        [
            "cto favours ClickHouse",
            "backend favours ClickHouse",
            "frontend favours ClickHouse"
        ],
        "{record:#}"
    );
    assert_eq!(record["action_items"][0]["agent"], "backend");
    // Each turn was offered its own ending action, not another's.
    for (opening, tools) in model.offered.lock().unwrap().iter() {
        let has = |t: &str| tools.iter().any(|x| x == t);
        if opening.starts_with("Your turn to speak") {
            assert!(
                has("speak") && !has("vote") && !has("complete_task"),
                "{tools:?}"
            );
        } else if opening.starts_with("Vote in the meeting") {
            assert!(has("vote") && !has("speak") && !has("propose"), "{tools:?}");
        } else if opening.starts_with("You facilitate") {
            assert!(has("propose") && !has("vote"), "{tools:?}");
        }
    }
    org.shutdown().await;
}

/// Backend asks Frontend (its peer) a question and escalates to the CTO;
/// both answers come from the model.
#[derive(Clone, Default)]
struct Backend {
    heard: Arc<Mutex<Vec<Value>>>,
}

#[async_trait]
impl Agent for Backend {
    async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        let answer: Value = cx
            .request_peer(
                "frontend",
                &json!({"question": "which schema?"}),
                Duration::from_secs(120),
            )
            .await
            .map_err(|e| AgentError::permanent(e.to_string()))?;
        cx.escalate("needs a ClickHouse cluster", json!({"usd": 900}))?;
        Ok(Outcome::Complete(answer))
    }

    async fn on_decision(&self, _cx: &Context, decision: Decision) -> Result<(), AgentError> {
        self.heard.lock().unwrap().push(decision.decision);
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_llm_answers_a_peer_request_and_decides_an_escalation() {
    let model = Arc::new(Script::default());
    let backend = Backend::default();
    let org = Org::builder(chart())
        .agent("cto", LlmAgent::new(model.clone()))
        .agent("frontend", LlmAgent::new(model.clone()))
        .agent("backend", backend.clone())
        .start()
        .await
        .unwrap();
    let founder = org.principal();
    let task = founder
        .delegate("cto", TaskSpec::new("analytics"))
        .await
        .unwrap();
    let done = founder
        .wait_for(&task.task_id, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    let tree = founder.task_tree(&task.task_id).await.unwrap();
    let leaf = tree
        .iter()
        .find(|t| t.assigned_to == "backend")
        .expect("backend's task");
    let leaf = founder.task(&leaf.task_id).await.unwrap().unwrap();
    // Frontend's model answered the request.
    assert_eq!(leaf.result, Some(json!({"schema": "v2", "by": "frontend"})));
    for _ in 0..3000 {
        if !backend.heard.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        *backend.heard.lock().unwrap(),
        [json!({"approved": true, "by": "cto"})]
    );
    org.shutdown().await;
}
