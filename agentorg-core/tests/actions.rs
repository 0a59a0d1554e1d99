//! The org actions as tools ([`agentorg_core::agent::actions`]), driven by
//! a script of tool calls the way a model drives them: a CTO delegates
//! through `delegate` (a delegation the chart forbids comes back as a
//! refusal naming the rule), ends its turn with `await_subtasks`, reads its
//! tree when the results are in and completes; a turn's end is recorded,
//! not acted on, and nothing runs after it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentorg_core::agent::actions::{
    actions_for, check_args, ActionError, ActionHost, End, TurnKind,
};
use agentorg_core::agent::{
    agent_fn, Agent, AgentError, Context, Outcome, SubtaskResult, Task, TaskSpec,
};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::Org;
use async_trait::async_trait;
use serde_json::{json, Value};

/// The founder's CTO and CSO; backend and frontend report to the CTO.
fn chart() -> OrgChart {
    OrgChart::builder("genbrain")
        .principal("founder")
        .role(RoleSpec::new("cto").reports_to("founder"))
        .role(RoleSpec::new("cso").reports_to("founder"))
        .role(RoleSpec::new("backend").reports_to("cto"))
        .role(RoleSpec::new("frontend").reports_to("cto"))
        .build()
        .unwrap()
}

/// What each call answered, in order.
type Log = Arc<Mutex<Vec<(String, Result<Value, String>)>>>;

/// Runs `calls` through a host of a task turn; returns the turn's outcome
/// from its recorded end.
async fn script(
    cx: &Context,
    id: &str,
    calls: Vec<(&str, Value)>,
    log: &Log,
) -> Result<Outcome, AgentError> {
    let mut host = ActionHost::new(cx, TurnKind::Task, id);
    for (name, args) in calls {
        let r = host.call(name, args).await;
        log.lock().unwrap().push((
            name.to_owned(),
            r.map_err(|e| format!("{}: {e}", e.kind_name())),
        ));
    }
    match host.into_end() {
        Some(End::Complete(v)) => Ok(Outcome::Complete(v)),
        Some(End::AwaitSubtasks) => Ok(Outcome::AwaitSubtasks),
        Some(end) => Err(end
            .as_error()
            .unwrap_or_else(|| AgentError::permanent("ended wrongly"))),
        None => Err(AgentError::permanent("the script did not end the turn")),
    }
}

struct ScriptedCto {
    log: Log,
}

#[async_trait]
impl Agent for ScriptedCto {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let calls = vec![
            // Nothing delegated yet: refused.
            ("await_subtasks", json!({})),
            ("delegate", json!({"to": "cso", "title": "audit it"})),
            (
                "delegate",
                json!({"to": "backend", "title": "API", "input": {"spec": "v2"}}),
            ),
            ("delegate", json!({"to": "frontend", "title": "UI"})),
            ("vote", json!({"vote": "approve"})),
            ("report_usage", json!({"tokens": 10, "cost_usd": -1.0})),
            ("report_usage", json!({"tokens": 10, "cost_usd": 0.5})),
            ("await_subtasks", json!({})),
            // After the end: refused, not run.
            ("delegate", json!({"to": "backend", "title": "one more"})),
        ];
        script(cx, task.id.as_ref(), calls, &self.log).await
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let calls = vec![
            ("read_task_tree", json!({})),
            ("complete_task", json!({"result": {"parts": results.len()}})),
        ];
        script(cx, task.id.as_ref(), calls, &self.log).await
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_scripted_cto_delegates_awaits_and_completes_through_the_actions() {
    let log: Log = Arc::default();
    let leaf =
        || agent_fn(|task: Task| async move { Ok(Outcome::Complete(json!({"done": task.title}))) });
    let org = Org::builder(chart())
        .agent(
            "cto",
            ScriptedCto {
                log: Arc::clone(&log),
            },
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
        .wait_for(&task.task_id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result, Some(json!({"parts": 2})));
    let tree = founder.task_tree(&task.task_id).await.unwrap();
    assert!(tree.all_completed());

    let log = log.lock().unwrap().clone();
    let names: Vec<&str> = log.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "await_subtasks",
            "delegate",
            "delegate",
            "delegate",
            "vote",
            "report_usage",
            "report_usage",
            "await_subtasks",
            "delegate",
            "read_task_tree",
            "complete_task"
        ]
    );
    let refused = |i: usize| log[i].1.as_ref().unwrap_err().clone();
    assert!(
        refused(0).contains("at least one delegation"),
        "{}",
        refused(0)
    );
    // The chart's rule, named: the CTO manages backend and frontend only.
    assert!(
        refused(1).starts_with("not_allowed") && refused(1).contains("cso"),
        "{}",
        refused(1)
    );
    assert_eq!(log[2].1.as_ref().unwrap()["assigned_to"], "backend");
    // Not an action of a task turn.
    assert!(refused(4).starts_with("invalid_input"), "{}", refused(4));
    assert!(refused(5).contains("cost_usd"), "{}", refused(5));
    assert_eq!(log[6].1.as_ref().unwrap()["reported"], true);
    assert_eq!(log[7].1.as_ref().unwrap()["with"], "await_subtasks");
    // Nothing after the end.
    assert!(refused(8).starts_with("ended"), "{}", refused(8));
    // The registry's counters are folded in every sweep (30 s): wait for it.
    let mut record = None;
    for _ in 0..1200 {
        record = founder.agent_record("cto").await.unwrap();
        if record.as_ref().is_some_and(|r| r.tokens >= 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = record.expect("the cto's registry entry");
    assert!(record.tokens >= 10 && record.cost_usd >= 0.5, "{record:?}");
    let tree = log[9].1.as_ref().unwrap();
    assert_eq!(tree["children"].as_array().map(Vec::len), Some(2), "{tree}");
    org.shutdown().await;
}

#[test]
fn each_turn_kind_lists_its_actions_and_bad_arguments_are_caught_early() {
    let names = |kind| -> Vec<String> { actions_for(kind).into_iter().map(|t| t.name).collect() };
    let task = names(TurnKind::Task);
    for action in [
        "delegate",
        "escalate",
        "send_peer",
        "publish_event",
        "complete_task",
        "fail_task",
        "await_subtasks",
        "read_project",
    ] {
        assert!(task.contains(&action.to_string()), "{action}");
    }
    assert!(!task.contains(&"speak".to_string()));
    assert_eq!(
        names(TurnKind::MeetingBallot),
        ["fail_task", "call_granted_tool", "vote"]
    );
    for spec in actions_for(TurnKind::Task) {
        assert_eq!(spec.input_schema["type"], "object", "{}", spec.name);
        assert!(!spec.description.is_empty());
    }
    assert!(matches!(
        check_args("delegate", &json!({"title": 7})),
        Err(ActionError::InvalidInput { .. })
    ));
    assert!(matches!(
        check_args(
            "claim_artifact",
            &json!({"project_id": "p", "artifact": "a", "lease_secs": 0})
        ),
        Err(ActionError::InvalidInput { .. })
    ));
    assert!(matches!(
        check_args("vote", &json!({"vote": "maybe"})),
        Err(ActionError::InvalidInput { .. })
    ));
    assert!(matches!(
        check_args("no_such", &json!({})),
        Err(ActionError::Unknown { .. })
    ));
    assert!(check_args("delegate", &json!({"to": "backend", "title": "API"})).is_ok());
}
