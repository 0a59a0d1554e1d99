//! The fifth scenario of `genbrain_processes` (feature `llm`): the CTO and
//! Marketing think (`--llm`), on a scripted model served over HTTP by the
//! test (an OpenAI-compatible endpoint whose answers follow the
//! conversation it is sent: deterministic). The CTO's first turn delegates
//! to backend, frontend and devops through the org-action tools and awaits;
//! once its conversation is in Firestore (the task waits) its process gets
//! SIGKILL and starts again. The subtasks' results reach the new process,
//! which resumes the conversation from Firestore — the model is sent the
//! killed process's turn with the results — and completes. The founder
//! exits 0 (every task completed and counted once, Marketing's changelog
//! post for `deploy.complete` written once, by the model); the conversation
//! is gone; the CTO's registry entry shows the model's tokens.

use std::sync::{Arc, Mutex};

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;

/// The scripted model's answers, by role and by the conversation's last
/// message; every request's body is kept.
#[derive(Clone, Default)]
struct Script(Arc<Mutex<Vec<Value>>>);

impl Script {
    fn requests(&self) -> Vec<Value> {
        self.0.lock().expect("the requests").clone()
    }
}

/// An OpenAI chat completion calling `calls` (name, arguments) or, with
/// none, answering `text`.
fn completion(calls: &[(&str, Value)], text: &str) -> ResponseTemplate {
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            json!({"id": format!("call_{i}"), "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    let message = if tool_calls.is_empty() {
        json!({"role": "assistant", "content": text})
    } else {
        json!({"role": "assistant", "content": null, "tool_calls": tool_calls})
    };
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": 1_765_000_000,
        "model": "scripted",
        "choices": [{"index": 0, "message": message,
                     "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": 200, "completion_tokens": 30, "total_tokens": 230}
    }))
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        self.0.lock().expect("the requests").push(body.clone());
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let system = messages
            .first()
            .map_or("", |m| m["content"].as_str().unwrap_or(""));
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let said = |prefix: &str| {
            last["role"] == "user" && last["content"].as_str().unwrap_or("").starts_with(prefix)
        };
        let complete =
            |result: Value| completion(&[("complete_task", json!({"result": result}))], "");
        if system.contains("You are `cto`") {
            if said("A task for you") {
                return completion(
                    &[
                        (
                            "delegate",
                            json!({"to": "backend", "title": "Analytics API endpoints", "sla_minutes": 120}),
                        ),
                        (
                            "delegate",
                            json!({"to": "frontend", "title": "Dashboard UI", "sla_minutes": 120}),
                        ),
                        (
                            "delegate",
                            json!({"to": "devops", "title": "Analytics pipeline and monitoring", "sla_minutes": 90}),
                        ),
                        ("await_subtasks", json!({})),
                    ],
                    "",
                );
            }
            if said("Your subtasks") {
                return complete(json!("API, dashboard and pipeline shipped"));
            }
        }
        if system.contains("You are `marketing`") {
            if said("A task for you") {
                return complete(json!("Analytics dashboards are coming to GenBrain."));
            }
            if said("An event you subscribe to") {
                return complete(json!("Changelog: the analytics dashboard is live."));
            }
        }
        completion(&[], "I do not know what to do.")
    }
}

/// The CTO and Marketing on the scripted model, the CTO SIGKILLed while
/// it waits for its subtasks (see the module's docs).
pub(crate) async fn llm_scenario(exe: &Path, nats: &NatsServer, firestore: &FirestoreEmulator) {
    const CONVERSATIONS: &str = "agentorg/genbrain/roles/cto/conversations";
    let t0 = Instant::now();
    let server = MockServer::start().await;
    let script = Script::default();
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    // The specialists work 6 s: the kill lands while the CTO waits.
    let (mut org, store) = processes(exe, nats, firestore, "6000").await;
    let catalog = org.logs.join("models.toml");
    std::fs::write(
        &catalog,
        format!(
            "[models.scripted]\nprovider = \"openai\"\nmodel = \"scripted\"\nbase_url = \"{}/v1\"\n",
            server.uri()
        ),
    )
    .expect("writing the model catalog");
    let catalog = catalog.to_string_lossy().into_owned();
    let thinking = [
        "--llm",
        catalog.as_str(),
        "--llm-model",
        "scripted",
        "--llm-roles",
        "cto,marketing",
    ];
    for role in ["ceo", "cso", "backend", "frontend", "devops"] {
        org.start(role);
    }
    org.start_with("cto", &thinking);
    org.start_with("marketing", &thinking);
    org.start("founder");

    let waiting = until(
        "the cto's conversation in the store (its task waits)",
        Duration::from_secs(60),
        || async {
            let kept = docs(&store, CONVERSATIONS).await;
            (!kept.is_empty()).then_some(kept)
        },
    )
    .await;
    org.kill9("cto");
    eprintln!(
        "{NAME}: {:.1} s: the cto's task waits for its subtasks, its conversation stored: SIGKILLed the cto",
        t0.elapsed().as_secs_f64()
    );
    org.start_with("cto", &thinking);
    assert_eq!(waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting[0]["model_calls"], 1, "{:#}", waiting[0]);

    let status = org
        .wait_founder(FOUNDER_TIMEOUT + Duration::from_secs(30))
        .await;
    assert!(status.success(), "the founder's process failed: {status}");
    let stdout = org.read("founder.stdout");
    let tree = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("the founder printed no tree: {stdout}"));
    let cto_task = flatten(&tree)
        .into_iter()
        .find(|t| t["assigned_to"] == "cto")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(cto_task["status"], "completed", "{tree:#}");
    let id = cto_task["task_id"].as_str().expect("the cto's task id");
    let stored = get(&store, TASKS, id).await.expect("the cto's task");
    assert_eq!(
        stored["result"], "API, dashboard and pipeline shipped",
        "{stored:#}"
    );

    // The resume: sent by the new process, with the killed process's turn
    // (its three delegations and the await) and the subtasks' results.
    let requests = script.requests();
    let resumed: Vec<&Value> = requests
        .iter()
        .filter(|r| {
            r["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| {
                    m["content"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with("Your subtasks")
                })
        })
        .collect();
    assert_eq!(resumed.len(), 1, "{requests:#?}");
    let history = resumed[0]["messages"].to_string();
    for needle in [
        "Analytics API endpoints",
        "Dashboard UI",
        "await_subtasks",
        "Analytics pipeline and monitoring",
    ] {
        assert!(
            history.contains(needle),
            "the resumed conversation lacks {needle}: {history}"
        );
    }
    let killed = org.read("cto.1.log");
    assert!(
        killed.contains("(llm) awaits its subtasks") && !killed.contains("resumed task"),
        "the killed cto awaited and never resumed:\n{killed}"
    );
    assert!(
        org.read("cto.2.log").contains("resumed task"),
        "the new cto process resumed the task"
    );
    until(
        "the conversation removed",
        Duration::from_secs(10),
        || async { docs(&store, CONVERSATIONS).await.is_empty().then_some(()) },
    )
    .await;
    for (name, status) in org.terminate_all(Duration::from_secs(30)).await {
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }
    // Each process folds its counters into the registry when it stops: the
    // new cto's call (the killed one's were never folded, or were).
    let cto = get(&store, "agentorg/genbrain/agents", "cto")
        .await
        .expect("the cto's registry entry");
    let used = &cto["usage"]["scripted"];
    assert!(
        used["calls"].as_u64().unwrap_or(0) >= 1
            && used["input_tokens"].as_u64().unwrap_or(0) >= 200,
        "{cto:#}"
    );
    eprintln!(
        "{NAME}: {:.1} s: llm scenario done",
        t0.elapsed().as_secs_f64()
    );
}
