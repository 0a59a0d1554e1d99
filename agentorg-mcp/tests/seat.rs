//! The org as an MCP server: an rmcp client stands in for an LLM client
//! seated in the GenBrain org, on the memory backends (no external
//! servers), over an in-process pipe and over streamable HTTP on loopback.
//!
//! No test sleeps for timing: waits are the seat's own long polls and
//! eventual assertions with deadlines.

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::agent::{agent_fn, Agent, AgentError, Context, Outcome, Task, TaskSpec};
use agentorg_core::chart::OrgChart;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{Org, RuntimeConfig};
use agentorg_core::tools::{LocalToolHost, ToolHost, ToolOutput, ToolRouter};
use agentorg_mcp::seat::{Seat, SeatOptions, SeatToken};
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod seat_support;
use seat_support::{next_event, ok, refused, Client, TestResult, DEADLINE};

fn chart() -> OrgChart {
    match OrgChart::from_toml_str(include_str!("../../examples/genbrain.toml")) {
        Ok(c) => c,
        Err(e) => panic!("the GenBrain chart: {e}"),
    }
}

/// `git.*` and `time.*` (granted to the specialists) and `deploy.*`
/// (granted to no one).
fn tools() -> Arc<dyn ToolHost> {
    let build = || -> Result<ToolRouter, Box<dyn std::error::Error>> {
        let git = LocalToolHost::new();
        git.register(
            "log",
            "Recent commits",
            json!({"type": "object"}),
            |_| async { Ok(ToolOutput::structured(json!({"commits": ["a1b2c3 init"]}))) },
        )?;
        let time = LocalToolHost::new();
        time.register("now", "The time", json!({"type": "object"}), |_| async {
            Ok(ToolOutput::structured(json!({"time": "12:00"})))
        })?;
        let deploy = LocalToolHost::new();
        deploy.register(
            "run",
            "Deploy to production",
            json!({"type": "object"}),
            |_| async { Ok(ToolOutput::text_block("deployed")) },
        )?;
        ToolRouter::new()
            .mount("git".parse()?, Arc::new(git))?
            .mount("time".parse()?, Arc::new(time))?
            .mount("deploy".parse()?, Arc::new(deploy))
            .map_err(Into::into)
    };
    match build() {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("tools: {e}"),
    }
}

/// An ordinary manager: delegates its task to `to` and rolls the result up.
struct Manager {
    to: &'static str,
    task_type: Option<&'static str>,
}

#[agentorg_core::async_trait]
impl Agent for Manager {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let mut spec = TaskSpec::new(format!("{} (via {})", task.title, cx.role()));
        if let Some(t) = self.task_type {
            spec = spec.task_type(t);
        }
        cx.delegate(self.to, spec).await?;
        Ok(Outcome::AwaitSubtasks)
    }
}

fn leaf(role: &'static str) -> impl Agent {
    agent_fn(move |task| async move {
        Ok(Outcome::Complete(
            json!({"by": role, "done": task.title.clone()}),
        ))
    })
}

fn seat_options() -> SeatOptions {
    SeatOptions::default()
        .with_pickup_timeout(DEADLINE)
        .with_idle_timeout(DEADLINE)
        .with_max_wait(Duration::from_secs(5))
}

/// The GenBrain org with `seated` served by a seat and the others by
/// ordinary agents: the CEO delegates to the CTO, the CTO to backend, and
/// the specialists complete.
async fn org_with_seat(seated: &str, options: SeatOptions, config: RuntimeConfig) -> (Org, Seat) {
    org_with(seated, options, config, Vec::new()).await
}

/// As [`org_with_seat`], with some roles' agents replaced.
async fn org_with(
    seated: &str,
    options: SeatOptions,
    config: RuntimeConfig,
    overrides: Vec<(&'static str, Arc<dyn Agent>)>,
) -> (Org, Seat) {
    let chart = chart();
    let seat = match Seat::builder(chart.clone(), seated)
        .tools(tools())
        .options(options)
        .build()
    {
        Ok(s) => s,
        Err(e) => panic!("seat: {e}"),
    };
    let mut b = Org::builder(chart).tools(tools()).config(config);
    for role in ["ceo", "cto", "backend", "frontend", "cso"] {
        let replaced = overrides
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, a)| Arc::clone(a));
        let agent: Arc<dyn Agent> = match role {
            _ if role == seated => Arc::new(seat.agent()),
            _ if replaced.is_some() => replaced.unwrap_or_else(|| Arc::new(leaf("none"))),
            "ceo" => Arc::new(Manager {
                to: "cto",
                task_type: None,
            }),
            "cto" => Arc::new(Manager {
                to: "backend",
                task_type: None,
            }),
            "backend" => Arc::new(leaf("backend")),
            "frontend" => Arc::new(leaf("frontend")),
            _ => Arc::new(leaf("cso")),
        };
        b = b.agent_with(role, agent, Default::default());
    }
    match b.start().await {
        Ok(org) => (org, seat),
        Err(e) => panic!("org: {e}"),
    }
}

async fn duplex_client(
    seat: &Seat,
) -> (
    Client,
    RunningService<rmcp::RoleServer, agentorg_mcp::seat::SeatServer>,
) {
    let (server_io, client_io) = tokio::io::duplex(256 * 1024);
    let server = seat.server().serve(server_io);
    let client = ClientConfig::default().serve(client_io);
    let (server, client) = tokio::join!(server, client);
    match (server, client) {
        (Ok(s), Ok(c)) => (c, s),
        (s, c) => panic!("MCP session: server {:?}, client {:?}", s.err(), c.err()),
    }
}

/// The CTO's part, as an LLM client would play it: take the CEO's task,
/// delegate to backend and frontend, await them, read the tree, complete.
async fn play_cto(client: &Client) {
    let tools = match client.list_all_tools().await {
        Ok(t) => t,
        Err(e) => panic!("tools/list: {e}"),
    };
    for name in [
        "wait_for_event",
        "complete_task",
        "delegate",
        "read_task_tree",
    ] {
        assert!(tools.iter().any(|t| t.name == name), "{name} is offered");
    }
    let info = ok(client, "seat_info", json!({})).await;
    assert_eq!(info["role"], "cto");
    assert_eq!(info["manager"], "ceo");

    let task = next_event(client).await;
    assert_eq!(task["event"], "task", "{task}");
    assert_eq!(task["task"]["assigned_by"], "ceo");
    assert_eq!(task["task"]["assigned_to"], "cto");
    let task_id = task["task_id"].as_str().unwrap_or_default().to_owned();

    // A granted tool works while the task is in hand.
    let log = ok(client, "call_granted_tool", json!({"name": "git.log"})).await;
    assert_eq!(log["structured"]["commits"][0], "a1b2c3 init");

    let api = ok(
        client,
        "delegate",
        json!({"to": "backend", "title": "Create /api/v2/analytics", "input": {"store": "clickhouse"}, "sla_minutes": 120}),
    )
    .await;
    assert_eq!(api["assigned_to"], "backend");
    let ui = ok(
        client,
        "delegate",
        json!({"to": "frontend", "title": "Build the dashboard UI", "task_id": task_id}),
    )
    .await;
    assert_eq!(ui["assigned_to"], "frontend");
    ok(client, "await_subtasks", json!({"task_id": task_id})).await;

    let done = next_event(client).await;
    assert_eq!(done["event"], "subtasks_done", "{done}");
    assert_eq!(done["task_id"], task_id.as_str());
    let results = done["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{done}");
    assert!(results.iter().all(|r| r["status"] == "completed"), "{done}");
    let by: Vec<&str> = results
        .iter()
        .filter_map(|r| r["result"]["by"].as_str())
        .collect();
    assert!(
        by.contains(&"backend") && by.contains(&"frontend"),
        "{by:?}"
    );

    // The tree as the seat reads it: its task in progress, both subtasks done.
    let tree = ok(client, "read_task_tree", json!({})).await;
    assert_eq!(tree["task_id"], task_id.as_str());
    assert_eq!(tree["assigned_to"], "cto");
    assert_eq!(tree["status"], "in_progress", "{tree}");
    let children = tree["children"].as_array().cloned().unwrap_or_default();
    assert_eq!(children.len(), 2, "{tree}");
    assert!(
        children.iter().all(|c| c["status"] == "completed"),
        "{tree}"
    );

    ok(
        client,
        "complete_task",
        json!({"result": {"shipped": true, "parts": results.len()}}),
    )
    .await;
    // The turn is over: completing again is refused, not a crash.
    let (kind, _) = refused(client, "complete_task", json!({"result": 1})).await;
    assert_eq!(kind, "no_turn");
}

/// The founder's view once the CTO completed: the whole tree completed, in
/// the shape founder → ceo → cto → {backend, frontend}.
async fn assert_tree(org: &Org, root: &agentorg_core::hierarchy::TaskHandle) {
    let record = match root.wait(DEADLINE).await {
        Ok(r) => r,
        Err(e) => panic!("root task: {e}"),
    };
    assert_eq!(record.status, TaskStatus::Completed);
    let tree = match org.principal().task_tree(&root.task_id).await {
        Ok(t) => t,
        Err(e) => panic!("tree: {e}"),
    };
    assert!(tree.all_completed(), "{tree:#?}");
    assert_eq!(tree.len(), 4, "{tree:#?}");
    assert_eq!(tree.assigned_to.as_str(), "ceo");
    assert_eq!(tree.children.len(), 1);
    let cto = &tree.children[0];
    assert_eq!(cto.assigned_to.as_str(), "cto");
    assert_eq!(cto.assigned_by.as_str(), "ceo");
    let mut reports: Vec<&str> = cto
        .children
        .iter()
        .map(|c| c.assigned_to.as_str())
        .collect();
    reports.sort_unstable();
    assert_eq!(reports, ["backend", "frontend"]);
    assert!(cto.children.iter().all(|c| c.assigned_by.as_str() == "cto"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cto_seat_takes_the_ceos_task_delegates_and_completes() -> TestResult {
    let (org, seat) = org_with_seat("cto", seat_options(), RuntimeConfig::default()).await;
    let (client, server) = duplex_client(&seat).await;
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("Build analytics dashboard"))
        .await?;
    play_cto(&client).await;
    assert_tree(&org, &root).await;
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_seat_is_held_to_the_chart() -> TestResult {
    let (org, seat) = org_with_seat("backend", seat_options(), RuntimeConfig::default()).await;
    let (client, server) = duplex_client(&seat).await;

    // Refused before any task is in hand, naming the rule.
    let (kind, why) = refused(&client, "delegate", json!({"to": "cso", "title": "audit"})).await;
    assert_eq!(kind, "not_allowed");
    assert!(why.contains("`backend` may not delegate to `cso`"), "{why}");
    let (kind, why) = refused(&client, "call_granted_tool", json!({"name": "deploy.run"})).await;
    assert_eq!(kind, "not_allowed");
    assert!(
        why.contains("role `backend` is not granted tool `deploy.run`"),
        "{why}"
    );
    let listed = ok(&client, "list_granted_tools", json!({})).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"git.log") && names.contains(&"time.now"),
        "{names:?}"
    );
    assert!(!names.contains(&"deploy.run"), "{names:?}");
    let (kind, _) = refused(&client, "complete_task", json!({"result": 1})).await;
    assert_eq!(kind, "no_turn");
    // Bad arguments are tool errors too, and unknown seat tools protocol errors.
    let (kind, _) = refused(&client, "delegate", json!({"title": 7})).await;
    assert_eq!(kind, "invalid_input");
    let unknown = client
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await;
    assert!(unknown.is_err());

    // With the task in hand (founder → ceo → cto → backend), still refused.
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("Analytics endpoints"))
        .await?;
    let task = next_event(&client).await;
    assert_eq!(task["event"], "task", "{task}");
    assert_eq!(task["task"]["assigned_by"], "cto");
    let (kind, why) = refused(&client, "delegate", json!({"to": "cso", "title": "audit"})).await;
    assert_eq!(kind, "not_allowed");
    assert!(why.contains("no shortcut lets `backend` delegate"), "{why}");
    let (kind, _) = refused(&client, "call_granted_tool", json!({"name": "deploy.run"})).await;
    assert_eq!(kind, "not_allowed");
    let (kind, why) = refused(&client, "send_peer", json!({"to": "cso", "message": "hi"})).await;
    assert_eq!(kind, "not_allowed");
    assert!(
        why.contains("no peer channel between `backend` and `cso`"),
        "{why}"
    );
    // Ending a turn wrongly is refused and the turn stays held.
    let (kind, why) = refused(&client, "await_subtasks", json!({})).await;
    assert_eq!(kind, "invalid_input");
    assert!(why.contains("at least one delegation"), "{why}");
    // The tree of a task it has no part in is refused.
    let (kind, why) = refused(
        &client,
        "read_task_tree",
        json!({"task_id": root.task_id.to_string()}),
    )
    .await;
    assert_eq!(kind, "not_allowed");
    assert!(why.contains("may read only the trees"), "{why}");

    // What the chart allows works: a granted tool, the declared peer channel.
    let now = ok(&client, "call_granted_tool", json!({"name": "time.now"})).await;
    assert_eq!(now["structured"]["time"], "12:00");
    ok(
        &client,
        "send_peer",
        json!({"to": "frontend", "message": {"contract": "/api/v2/analytics"}}),
    )
    .await;
    ok(
        &client,
        "report_usage",
        json!({"tokens": 1200, "cost_usd": 0.01}),
    )
    .await;
    ok(
        &client,
        "complete_task",
        json!({"result": {"endpoints": ["/api/v2/analytics"]}}),
    )
    .await;

    let record = root.wait(DEADLINE).await?;
    assert_eq!(record.status, TaskStatus::Completed);
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

/// Polls (through `watcher`, a session that holds nothing, so its calls
/// keep no turn alive) until the seat no longer holds `id`.
async fn until_not_held(watcher: &Client, id: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let info = ok(watcher, "seat_info", json!({})).await;
        let held = info["held"].as_array().cloned().unwrap_or_default();
        if !held.iter().any(|t| t["id"] == id) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} still held after {DEADLINE:?}"
        );
        // A poll interval, not a timing assumption.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_does_not_hold_the_task_forever() -> TestResult {
    let options = seat_options().with_idle_timeout(Duration::from_millis(300));
    let config = RuntimeConfig::default()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .with_jitter(false);
    let (org, seat) = org_with_seat("cto", options, config).await;
    let (client, server) = duplex_client(&seat).await;
    let (watcher, watcher_server) = duplex_client(&seat).await;
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("Analytics endpoints"))
        .await?;
    let first = next_event(&client).await;
    assert_eq!(first["event"], "task");
    assert_eq!(first["attempt"], 1);
    let id = first["task_id"].as_str().unwrap_or_default().to_owned();
    let info = ok(&watcher, "seat_info", json!({})).await;
    assert_eq!(info["held"], json!([{"id": id, "kind": "task"}]), "{info}");
    // It delegates, then goes quiet. The seat releases the task (a
    // transient failure), dropping the staged delegation.
    ok(
        &client,
        "delegate",
        json!({"to": "backend", "title": "endpoints"}),
    )
    .await;
    until_not_held(&watcher, &id).await;
    // Calls on the released task are refused as `released`, with the
    // reason: the session's first call naming no task, and any naming it.
    let (kind, why) = refused(&client, "complete_task", json!({"result": 1})).await;
    assert_eq!(kind, "released", "{why}");
    assert!(why.contains("was idle for"), "{why}");
    let (kind, why) = refused(
        &client,
        "delegate",
        json!({"to": "backend", "title": "again", "task_id": id}),
    )
    .await;
    assert_eq!(kind, "released", "{why}");
    assert!(why.contains("was idle for"), "{why}");
    // Told once when naming none; then nothing is held.
    let (kind, _) = refused(&client, "complete_task", json!({"result": 1})).await;
    assert_eq!(kind, "no_turn");
    // The runtime offers it again: the next event is attempt 2.
    let again = next_event(&client).await;
    assert_eq!(again["event"], "task", "{again}");
    assert_eq!(again["task_id"], id.as_str());
    assert_eq!(again["attempt"], 2, "{again}");
    ok(
        &client,
        "delegate",
        json!({"to": "backend", "title": "endpoints"}),
    )
    .await;
    ok(&client, "await_subtasks", json!({})).await;
    let done = next_event(&client).await;
    assert_eq!(done["event"], "subtasks_done", "{done}");
    ok(
        &client,
        "complete_task",
        json!({"result": "done on the second attempt"}),
    )
    .await;
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);
    // The retry did not delegate twice: the CTO's task has one subtask.
    let tree = org.principal().task_tree(&root.task_id).await?;
    let cto = &tree.children[0];
    assert_eq!(cto.assigned_to.as_str(), "cto");
    assert_eq!(cto.children.len(), 1, "{tree:#?}");
    assert_eq!(tree.len(), 3, "{tree:#?}");
    client.cancel().await?;
    server.cancel().await?;
    watcher.cancel().await?;
    watcher_server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_turn_releases_a_turn_kept_alive_by_seat_info() -> TestResult {
    let idle = Duration::from_millis(300);
    let max_turn = Duration::from_millis(1200);
    // A short pickup, so that the retry no one takes does not hold up the
    // org's shutdown.
    let options = seat_options()
        .with_idle_timeout(idle)
        .with_max_turn(max_turn)
        .with_pickup_timeout(Duration::from_millis(500));
    let config = RuntimeConfig::default()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .with_jitter(false);
    let (org, seat) = org_with_seat("backend", options, config).await;
    let (client, server) = duplex_client(&seat).await;
    org.principal()
        .delegate("ceo", TaskSpec::new("Analytics endpoints"))
        .await?;
    let task = next_event(&client).await;
    assert_eq!(task["event"], "task");
    let id = task["task_id"].as_str().unwrap_or_default().to_owned();
    let taken = tokio::time::Instant::now();
    // The client keeps calling seat_info (which keeps its turns alive past
    // the idle timeout) but never ends the turn.
    let deadline = taken + DEADLINE;
    loop {
        let info = ok(&client, "seat_info", json!({})).await;
        let held = info["held"].as_array().cloned().unwrap_or_default();
        if !held.iter().any(|t| t["id"] == id.as_str()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never released");
        // A poll interval, well under the idle timeout.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kept well past the idle timeout: released by max_turn.
    assert!(taken.elapsed() > idle * 2, "{:?}", taken.elapsed());
    let (kind, why) = refused(
        &client,
        "complete_task",
        json!({"result": 1, "task_id": id}),
    )
    .await;
    assert_eq!(kind, "released", "{why}");
    assert!(why.contains("max_turn"), "{why}");
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

/// Backend: escalates every task to its manager, completes it, and passes
/// the decisions it gets to the test.
struct Escalating {
    decisions: tokio::sync::mpsc::UnboundedSender<Value>,
}

#[agentorg_core::async_trait]
impl Agent for Escalating {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        cx.escalate(format!("budget for {}", task.title), json!({"usd": 100}))?;
        Ok(Outcome::Complete(json!({"by": "backend"})))
    }

    async fn on_decision(
        &self,
        _cx: &Context,
        decision: agentorg_core::hierarchy::Decision,
    ) -> Result<(), AgentError> {
        let _ = self
            .decisions
            .send(serde_json::to_value(&decision).unwrap_or(Value::Null));
        Ok(())
    }
}

/// The CTO seat's part: take the CEO's task, delegate to backend, and
/// handle the escalation (with `end`) and the results, in whatever order.
async fn cto_with_an_escalation(client: &Client, end: &'static str, args: Value) -> Value {
    let task = next_event(client).await;
    assert_eq!(task["event"], "task", "{task}");
    ok(
        client,
        "delegate",
        json!({"to": "backend", "title": "endpoints"}),
    )
    .await;
    ok(client, "await_subtasks", json!({})).await;
    let (mut escalation, mut done) = (Value::Null, false);
    while escalation.is_null() || !done {
        let e = next_event(client).await;
        match e["event"].as_str() {
            Some("escalation") => {
                escalation = e.clone();
                ok(client, end, args.clone()).await;
            }
            Some("subtasks_done") => {
                done = true;
                ok(client, "complete_task", json!({"result": "ok"})).await;
            }
            _ => panic!("unexpected event {e}"),
        }
    }
    escalation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_decides_one_escalation_and_passes_another_up() -> TestResult {
    use futures::StreamExt;
    let (decisions, mut decided) = tokio::sync::mpsc::unbounded_channel();
    let backend: Arc<dyn Agent> = Arc::new(Escalating { decisions });
    let (org, seat) = org_with(
        "cto",
        seat_options(),
        RuntimeConfig::default(),
        vec![("backend", backend)],
    )
    .await;
    let (client, server) = duplex_client(&seat).await;
    let founder = org.principal();
    let mut inbox = founder.inbox().await?;

    // Decided by the seat: the decision goes back to backend.
    let root = founder.delegate("ceo", TaskSpec::new("first")).await?;
    let escalation = cto_with_an_escalation(
        &client,
        "decide_escalation",
        json!({"decision": {"approved": true}}),
    )
    .await;
    assert_eq!(
        escalation["escalation"]["origin"], "backend",
        "{escalation}"
    );
    let decision = tokio::time::timeout(DEADLINE, decided.recv())
        .await?
        .ok_or("no decision")?;
    assert_eq!(decision["decision"]["approved"], true, "{decision}");
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);

    // Passed up by the seat: the CEO passes it up too; the founder gets it.
    let root = founder.delegate("ceo", TaskSpec::new("second")).await?;
    cto_with_an_escalation(&client, "pass_up_escalation", json!({})).await;
    let up = tokio::time::timeout(DEADLINE, async {
        loop {
            match inbox.next().await {
                Some(Ok(env)) if env.kind == agentorg_core::envelope::Kind::Escalation => {
                    break Some(env)
                }
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await?
    .ok_or("the founder's inbox ended")?;
    assert_eq!(up.payload["origin"], "backend");
    assert_eq!(up.payload["reason"], "budget for endpoints");
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

/// Frontend: asks its peer backend for the API contract, completes with it.
struct Asking;

#[agentorg_core::async_trait]
impl Agent for Asking {
    async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        let answer: Value = cx
            .request_peer("backend", &json!({"need": "contract"}), DEADLINE)
            .await
            .map_err(|e| AgentError::transient(e.to_string()))?;
        Ok(Outcome::Complete(json!({"answer": answer})))
    }
}

/// Frontend: tells its peer backend, then completes.
struct Telling;

#[agentorg_core::async_trait]
impl Agent for Telling {
    async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        cx.send_peer("backend", &json!({"hello": "backend"}))
            .map_err(|e| AgentError::permanent(e.to_string()))?;
        Ok(Outcome::Complete(json!({"told": true})))
    }
}

fn cto_to_frontend() -> Arc<dyn Agent> {
    Arc::new(Manager {
        to: "frontend",
        task_type: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_answers_a_peer_request() -> TestResult {
    let (org, seat) = org_with(
        "backend",
        seat_options(),
        RuntimeConfig::default(),
        vec![("cto", cto_to_frontend()), ("frontend", Arc::new(Asking))],
    )
    .await;
    let (client, server) = duplex_client(&seat).await;
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("dashboard"))
        .await?;
    let request = next_event(&client).await;
    assert_eq!(request["event"], "peer_request", "{request}");
    assert_eq!(request["from"], "frontend");
    assert_eq!(request["request"]["need"], "contract");
    // A task tool cannot end it.
    let (kind, _) = refused(&client, "complete_task", json!({"result": 1})).await;
    assert_eq!(kind, "no_turn");
    ok(
        &client,
        "answer_peer_request",
        json!({"answer": {"contract": "/api/v2/analytics"}}),
    )
    .await;
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);
    let tree = org.principal().task_tree(&root.task_id).await?;
    let frontend = &tree.children[0].children[0];
    let record = org
        .principal()
        .task(&frontend.task_id)
        .await?
        .ok_or("the frontend task")?;
    assert_eq!(
        record
            .result
            .as_ref()
            .map(|r| r["answer"]["contract"].clone()),
        Some(json!("/api/v2/analytics")),
        "{record:?}"
    );
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_whose_client_went_away_unacknowledged_is_offered_again() -> TestResult {
    let options = seat_options().with_idle_timeout(Duration::from_millis(400));
    let config = RuntimeConfig::default()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .with_jitter(false);
    let (org, seat) = org_with(
        "backend",
        options,
        config,
        vec![("cto", cto_to_frontend()), ("frontend", Arc::new(Telling))],
    )
    .await;
    let (first, first_server) = duplex_client(&seat).await;
    org.principal()
        .delegate("ceo", TaskSpec::new("dashboard"))
        .await?;
    let message = next_event(&first).await;
    assert_eq!(message["event"], "peer_message", "{message}");
    assert_eq!(message["message"]["hello"], "backend");
    // The first client goes away without another call: the notice is not
    // acknowledged, and a second client gets it again.
    first.cancel().await?;
    first_server.cancel().await?;
    let (second, second_server) = duplex_client(&seat).await;
    let again = next_event(&second).await;
    assert_eq!(again["event"], "peer_message", "{again}");
    assert_eq!(again["message_id"], message["message_id"]);
    // Acknowledged by the next call: not offered a third time.
    ok(&second, "seat_info", json!({})).await;
    let none = ok(&second, "wait_for_event", json!({"timeout_secs": 1})).await;
    assert_eq!(none["event"], "none", "{none}");
    second.cancel().await?;
    second_server.cancel().await?;
    org.shutdown().await;
    Ok(())
}

/// Sends a raw MCP `initialize` POST and returns the HTTP status.
async fn raw_status(addr: std::net::SocketAddr, authorization: Option<&str>) -> u16 {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}
    }})
    .to_string();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        panic!("write: {e}");
    }
    let mut head = [0u8; 12];
    if let Err(e) = stream.read_exact(&mut head).await {
        panic!("read: {e}");
    }
    let line = String::from_utf8_lossy(&head);
    line[9..12].parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cto_seat_over_streamable_http_with_a_bearer_token() -> TestResult {
    let (org, seat) = org_with_seat("cto", seat_options(), RuntimeConfig::default()).await;
    let token = "cto-seat-token-0123456789abcdef";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let http = seat.http(SeatToken::new(token)?);
    let serving = tokio::spawn(http.serve(listener, shutdown.clone()));

    // Without a token, with a wrong one, or not as a bearer: 401.
    assert_eq!(raw_status(addr, None).await, 401);
    assert_eq!(
        raw_status(addr, Some("Bearer wrong-token-0123456789abcdef")).await,
        401
    );
    assert_eq!(raw_status(addr, Some(token)).await, 401);
    let wrong = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
                .auth_header("wrong-token-0123456789abcdef"),
        ))
        .await;
    assert!(wrong.is_err(), "a client with a wrong token is refused");
    // With the seat's token the request reaches the MCP server.
    assert_eq!(
        raw_status(addr, Some(&format!("Bearer {token}"))).await,
        200
    );

    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp"))
                .auth_header(token),
        ))
        .await?;
    let root = org
        .principal()
        .delegate("ceo", TaskSpec::new("Build analytics dashboard"))
        .await?;
    play_cto(&client).await;
    assert_tree(&org, &root).await;
    client.cancel().await?;
    shutdown.cancel();
    serving.await??;
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_client_takes_is_released_and_dead_lettered() -> TestResult {
    let options = seat_options().with_pickup_timeout(Duration::from_millis(200));
    let config = RuntimeConfig::default()
        .with_max_attempts(2)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(50))
        .with_jitter(false);
    // No MCP client ever connects to the backend seat.
    let (org, _seat) = org_with_seat("backend", options, config).await;
    let founder = org.principal();
    founder
        .delegate("ceo", TaskSpec::new("Analytics endpoints"))
        .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let dead = loop {
        let records = founder.dead_letter_records().await?;
        if let Some(r) = records.into_iter().find(|r| r.role.as_str() == "backend") {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the untaken task was not dead-lettered within {DEADLINE:?}"
        );
        // A poll interval, not a timing assumption.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead.attempts, 2, "{dead:?}");
    assert!(
        dead.reason
            .contains("no MCP client of seat `backend` took the task"),
        "{dead:?}"
    );
    let task = dead.task_id.ok_or("the dead letter names its task")?;
    let record = founder.task(&task).await?.ok_or("the task exists")?;
    assert_eq!(record.status, TaskStatus::DeadLettered);
    org.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_escalates_up_the_chain_to_the_founder() -> TestResult {
    use futures::StreamExt;
    let (org, seat) = org_with_seat("backend", seat_options(), RuntimeConfig::default()).await;
    let (client, server) = duplex_client(&seat).await;
    let founder = org.principal();
    let mut inbox = founder.inbox().await?;
    let root = founder
        .delegate("ceo", TaskSpec::new("Analytics endpoints"))
        .await?;
    let task = next_event(&client).await;
    assert_eq!(task["event"], "task");
    let up = ok(
        &client,
        "escalate",
        json!({"reason": "needs a ClickHouse budget", "details": {"usd": 2000}}),
    )
    .await;
    assert_eq!(up["escalated_to"], "cto");
    ok(
        &client,
        "complete_task",
        json!({"result": "done pending budget"}),
    )
    .await;
    // The CTO and CEO agents pass it up (their default); it reaches the founder.
    let escalation = tokio::time::timeout(DEADLINE, async {
        loop {
            match inbox.next().await {
                Some(Ok(env)) if env.kind == agentorg_core::envelope::Kind::Escalation => {
                    break Some(env)
                }
                Some(_) => continue,
                None => break None,
            }
        }
    })
    .await?
    .ok_or("the founder's inbox ended")?;
    assert_eq!(escalation.payload["origin"], "backend");
    assert_eq!(escalation.payload["reason"], "needs a ClickHouse budget");
    // The founder decides; the decision comes back to the seat as a notice.
    founder
        .answer(&escalation, json!({"approved": true}))
        .await?;
    let decision = next_event(&client).await;
    assert_eq!(decision["event"], "decision", "{decision}");
    assert_eq!(decision["decision"]["decision"]["approved"], true);
    // The next call acknowledges the notice (else it would come again).
    ok(&client, "seat_info", json!({})).await;
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}
