//! GenBrain's agents: the CEO and CTO decompose, the specialists work;
//! Backend tells Frontend of its API contract change; DevOps publishes
//! `deploy.complete`, Marketing writes the changelog post, the CEO notes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentorg::blackboard::ReadyArtifact;
use agentorg::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use agentorg::prelude::*;
use agentorg::store::{Precondition, Write};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{board, meeting};
use super::{CHANGELOG, DEPLOY_COMPLETE, PEER_MESSAGES, ROLLBACKS, WORK};

/// What the agents of this process share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    /// How long a specialist works.
    pub(crate) work: Duration,
    /// Whether to say on stderr when a task starts and ends (one process per
    /// role: each process's log tells its story).
    pub(crate) announce: bool,
    /// How long DevOps' rollback (the compensation of `deploy`) takes, after
    /// it says on stderr that it started (`--hold-compensation-ms`).
    pub(crate) hold_compensation: Duration,
    /// How long the CTO holds its ballot in a meeting, after it says on
    /// stderr that it does (`--hold-ballot-ms`).
    pub(crate) hold_ballot: Duration,
}

/// GenBrain's peer message: Backend tells Frontend of an API contract change
/// (`/work/shared/fixtures/peer-api-contract-change.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiContractChange {
    /// Always `api_contract_change`.
    #[serde(rename = "type")]
    kind: String,
    from: String,
    endpoint: String,
    change_type: String,
    old_schema: ApiSchema,
    new_schema: ApiSchema,
    migration_deadline: String,
    migration_guide: String,
}

/// A response schema: field name → JSON type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiSchema {
    response: BTreeMap<String, String>,
}

impl ApiContractChange {
    const KIND: &'static str = "api_contract_change";

    /// GenBrain's message.
    fn analytics_v2() -> Self {
        let schema = |fields: &[(&str, &str)]| ApiSchema {
            response: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Self {
            kind: Self::KIND.to_owned(),
            from: "backend".to_owned(),
            endpoint: "/api/v2/analytics".to_owned(),
            change_type: "breaking".to_owned(),
            old_schema: schema(&[("data", "array"), ("total", "number")]),
            new_schema: schema(&[
                ("results", "array"),
                ("total_count", "number"),
                ("page", "number"),
            ]),
            migration_deadline: "2026-05-10T00:00:00Z".to_owned(),
            migration_guide:
                "Rename 'data' to 'results', 'total' to 'total_count', add pagination params"
                    .to_owned(),
        }
    }
}

/// Stages an increment of the counter document `<collection>/<id>` of the
/// role's namespace with
/// `fields` (exactly-once bookkeeping: it commits with the handler's outcome
/// or not at all; a concurrent change makes the runtime run the handler
/// again). Returns the count it will have.
async fn stage_count(
    cx: &Context,
    collection: &str,
    id: &str,
    fields: serde_json::Value,
) -> Result<u64, AgentError> {
    let key = cx.collection(collection)?.doc(id)?;
    let (count, precondition) = match cx.store().get(&key).await? {
        Some(doc) => (
            doc.value["count"].as_u64().unwrap_or(0),
            Precondition::Version(doc.version),
        ),
        None => (0, Precondition::MustNotExist),
    };
    let mut value = fields;
    value["count"] = json!(count + 1);
    value["attempt"] = json!(cx.attempt());
    cx.stage(Write::put(key, value, precondition))?;
    Ok(count + 1)
}

/// Marketing's changelog `post` for a deployment `event`, written once (in
/// [`CHANGELOG`], with the event's handling), and said on stderr.
pub(crate) async fn write_changelog(
    cx: &Context,
    event: &Event,
    post: Value,
) -> Result<(), AgentError> {
    stage_count(
        cx,
        CHANGELOG,
        event.id.as_str(),
        json!({ "event_id": event.id.as_str(), "post": post }),
    )
    .await?;
    eprintln!(
        "genbrain: {} wrote a changelog post for {} (event {}): {post}",
        cx.role(),
        event.name,
        event.id
    );
    Ok(())
}

/// Counts `task` once, in [`WORK`].
pub(crate) async fn count_work(cx: &Context, task: &Task) -> Result<(), AgentError> {
    stage_count(
        cx,
        WORK,
        task.id.as_str(),
        json!({ "task_id": task.id.as_str(), "role": cx.role().as_str(), "title": task.title }),
    )
    .await
    .map(drop)
}

pub(crate) fn announce_start(knobs: Knobs, cx: &Context, task: &Task) {
    if knobs.announce {
        eprintln!(
            "genbrain: {} started task {} \"{}\" (attempt {}, pid {})",
            cx.role(),
            task.id,
            task.title,
            cx.attempt(),
            std::process::id()
        );
    }
}

/// The CEO decomposes the founder's request across its reports.
struct Ceo(Knobs);

#[async_trait]
impl Agent for Ceo {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.0, cx, &task);
        if board::is_board_task(&task) || meeting::is_meeting_task(&task) {
            return board::ceo_hands_over(cx, &task).await;
        }
        let product = task.title.trim_start_matches("Ship ").to_owned();
        cx.delegate(
            "cto",
            TaskSpec::new(format!(
                "Technical implementation of {}",
                strip_user(&product)
            )),
        )
        .await?;
        cx.delegate(
            "cso",
            TaskSpec::new("Security review of analytics data handling"),
        )
        .await?;
        cx.delegate(
            "marketing",
            TaskSpec::new(format!(
                "Write {} announcement blog post",
                strip_user(&product)
            )),
        )
        .await?;
        count_work(cx, &task).await?;
        Ok(Outcome::AwaitSubtasks)
    }

    /// The CEO notes each deployment, and each task past its SLA (its
    /// chart subscribes it to both).
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        let what = match event.name.as_str() {
            DEPLOY_COMPLETE => event.payload["version"].as_str().unwrap_or("?").to_owned(),
            _ => event.payload["details"]["title"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        };
        eprintln!(
            "genbrain: {} noted {} of {what} from {}",
            cx.role(),
            event.name,
            event.from
        );
        Ok(())
    }
}

fn strip_user(product: &str) -> String {
    product.trim_start_matches("user ").to_owned()
}

/// The CTO splits the technical work between the engineers, with SLAs.
struct Cto(Knobs);

#[async_trait]
impl Agent for Cto {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.0, cx, &task);
        if board::is_board_task(&task) {
            return board::cto_plans(cx, &task).await;
        }
        if meeting::is_meeting_task(&task) {
            return meeting::cto_schedules(cx, &task).await;
        }
        let work = [
            (
                "backend",
                "Create /api/v2/analytics endpoints with ClickHouse queries",
                120,
            ),
            (
                "frontend",
                "Build React dashboard with chart components",
                120,
            ),
            (
                "devops",
                "Set up analytics data pipeline and Grafana dashboards",
                90,
            ),
        ];
        for (role, title, sla) in work {
            cx.delegate(role, TaskSpec::new(title).sla_minutes(sla))
                .await?;
        }
        count_work(cx, &task).await?;
        Ok(Outcome::AwaitSubtasks)
    }

    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        Ok(meeting::turn(cx.role().as_str(), &turn))
    }

    async fn on_meeting_proposal(
        &self,
        _cx: &Context,
        record: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        meeting::proposal(&record)
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        if !self.0.hold_ballot.is_zero() {
            eprintln!(
                "genbrain: cto holds its ballot in {} (attempt {})",
                ballot.meeting_id,
                cx.attempt()
            );
            tokio::time::sleep(self.0.hold_ballot).await;
        }
        Ok(meeting::vote(cx.role().as_str(), &ballot))
    }
}

/// A specialist that does its task itself (here: pretends to, for
/// `--work-ms`). Backend also tells Frontend of its API contract change;
/// Frontend takes note of contract changes.
struct Specialist {
    artifact: &'static str,
    knobs: Knobs,
}

#[async_trait]
impl Agent for Specialist {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.knobs, cx, &task);
        if board::is_board_task(&task) {
            let result = board::engineer_works(cx, &task, self.knobs.work).await?;
            return Ok(Outcome::Complete(result));
        }
        if meeting::is_action_item(&task) {
            return Ok(meeting::act(cx, &task));
        }
        if cx.role() == "devops" {
            devops_checks_the_time(cx).await?;
        }
        tokio::time::sleep(self.knobs.work).await;
        if cx.role() == "backend" {
            // Sent when this handler's outcome commits: exactly once, even if
            // this attempt dies before that and another runs.
            cx.send_peer("frontend", &ApiContractChange::analytics_v2())?;
        }
        count_work(cx, &task).await?;
        // DevOps announces the deployment to whoever subscribes: published
        // when this handler's outcome commits, exactly once.
        let deploy_event = if cx.role() == "devops" {
            let id = cx.publish_event(
                DEPLOY_COMPLETE,
                &json!({ "version": "analytics-v2", "task_id": task.id.as_str() }),
            )?;
            Some(id)
        } else {
            None
        };
        if self.knobs.announce {
            eprintln!(
                "genbrain: {} finished task {} (attempt {})",
                cx.role(),
                task.id,
                cx.attempt()
            );
        }
        tracing::info!(role = %task.assigned_to, task = %task.title, "done");
        let mut result = json!({ self.artifact: task.title });
        if let Some(id) = deploy_event {
            result["deploy_event"] = json!(id);
        }
        Ok(Outcome::Complete(result))
    }

    /// Marketing writes a changelog post for each deployment (exactly once:
    /// staged with the event's handling), and notes each rollback; DevOps
    /// starts the CI/CD saga for each merged pull request.
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        if cx.role() == "devops" && event.name == "pr.merged" {
            let mut input = event.payload.clone();
            input["pr_event"] = json!(event.id.as_str());
            let id = cx.start_saga("cicd", &input)?;
            eprintln!(
                "genbrain: devops started saga cicd {id} for PR {}",
                event.payload["pr"]
            );
            return Ok(());
        }
        if cx.role() != "marketing" {
            return Ok(());
        }
        if event.name == "deploy.rollback" {
            eprintln!(
                "genbrain: marketing got {} from {}: {} was rolled back",
                event.name, event.from, event.payload["input"]["version"]
            );
            return Ok(());
        }
        let version = event.payload["version"].as_str().unwrap_or("?").to_owned();
        let post = format!("Changelog: {version} is live (deployed by {}).", event.from);
        write_changelog(cx, &event, json!(post)).await?;
        Ok(())
    }

    /// The CI/CD saga's steps: DevOps deploys and runs the smoke test
    /// (which publishes `deploy.complete`), Marketing writes the changelog.
    /// The step named in the input's `fail_step` fails (permanently).
    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        let version = step.input["version"].as_str().unwrap_or("?").to_owned();
        eprintln!(
            "genbrain: {} runs step {} of saga {} {} (attempt {})",
            cx.role(),
            step.step,
            step.saga,
            step.saga_id,
            cx.attempt()
        );
        if step.input["fail_step"] == step.step.as_str() {
            return Err(AgentError::permanent(format!(
                "{} failed: /health returns 503 on {version}",
                step.step
            )));
        }
        tokio::time::sleep(self.knobs.work).await;
        match (cx.role().as_str(), step.step.as_str()) {
            ("devops", "deploy") => Ok(json!({ "deployed": version })),
            ("devops", "smoke_test") => {
                cx.publish_event(
                    DEPLOY_COMPLETE,
                    &json!({ "version": version, "task_id": step.saga_id.as_str() }),
                )?;
                Ok(json!({ "healthy": true }))
            }
            ("marketing", "changelog") => {
                let post = format!("Changelog: {version} is live (PR {}).", step.input["pr"]);
                stage_count(
                    cx,
                    CHANGELOG,
                    step.saga_id.as_str(),
                    json!({ "post": post }),
                )
                .await?;
                Ok(json!({ "post": post }))
            }
            (role, name) => Err(AgentError::permanent(format!(
                "{role} has no step `{name}`"
            ))),
        }
    }

    /// DevOps rolls a deployment back: says so on stderr, takes
    /// `--hold-compensation-ms`, and counts the rollback (staged: exactly
    /// once per saga, however often it runs).
    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        if (cx.role().as_str(), step.step.as_str()) != ("devops", "deploy") {
            return Err(AgentError::permanent(format!(
                "{} cannot undo `{}`",
                cx.role(),
                step.step
            )));
        }
        eprintln!(
            "genbrain: devops compensating deploy of saga {} (attempt {}, key {})",
            step.saga_id,
            cx.attempt(),
            step.idempotency_key
        );
        tokio::time::sleep(self.knobs.hold_compensation).await;
        stage_count(
            cx,
            ROLLBACKS,
            step.saga_id.as_str(),
            json!({ "rolled_back": step.result }),
        )
        .await?;
        eprintln!(
            "genbrain: devops rolled back deploy of saga {} (attempt {})",
            step.saga_id,
            cx.attempt()
        );
        Ok(())
    }

    /// The CSO reviews the API spec once it is complete (on the
    /// blackboard: nobody messages it).
    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        board::review_when_ready(cx, &ready, self.knobs.work).await
    }

    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        Ok(meeting::turn(cx.role().as_str(), &turn))
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        Ok(meeting::vote(cx.role().as_str(), &ballot))
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let change: ApiContractChange = message.decode()?;
        if change.kind != ApiContractChange::KIND {
            return Err(AgentError::permanent(format!(
                "unexpected peer message of type `{}` from {}",
                change.kind, message.from
            )));
        }
        // The task that sent it: the message is caused by its delivery.
        let cause = cx
            .envelope()
            .causation_id
            .as_ref()
            .map(|id| id.as_str().to_owned());
        stage_count(
            cx,
            PEER_MESSAGES,
            message.id.as_str(),
            json!({
                "type": change.kind,
                "from": message.from.as_str(),
                "to": cx.role().as_str(),
                "endpoint": change.endpoint,
                "change_type": change.change_type,
                "cause": cause,
            }),
        )
        .await?;
        eprintln!(
            "genbrain: {} got {} for {} from {} ({}; new response fields: {})",
            cx.role(),
            change.kind,
            change.endpoint,
            message.from,
            change.change_type,
            change
                .new_schema
                .response
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

/// DevOps stamps its pipeline with the time from the `time` MCP server, when
/// the org has one (`--mcp`): a real MCP tool call through the role's
/// granted tools.
async fn devops_checks_the_time(cx: &Context) -> Result<(), AgentError> {
    const TOOL: &str = "time.get_current_time";
    use agentorg::tools::ToolHostExt as _;
    // Retried only when the tool error says a retry can help.
    fn to_agent(e: agentorg::tools::ToolError) -> AgentError {
        if e.is_retryable() {
            AgentError::transient(e.to_string())
        } else {
            AgentError::permanent(e.to_string())
        }
    }
    let tools = cx.tools();
    let listed = tools.list_tools().await.map_err(to_agent)?;
    if !listed.iter().any(|t| t.name == TOOL) {
        return Ok(());
    }
    let out = tools
        .call_tool(TOOL, json!({ "timezone": "UTC" }))
        .await
        .map_err(to_agent)?;
    eprintln!(
        "genbrain: {} called MCP tool {TOOL}: {}",
        cx.role(),
        out.into_json()
    );
    Ok(())
}

/// The agent of `role`.
pub(crate) fn agent_for(role: &str, knobs: Knobs) -> anyhow::Result<Arc<dyn Agent>> {
    let specialist = |artifact| -> Arc<dyn Agent> { Arc::new(Specialist { artifact, knobs }) };
    Ok(match role {
        "ceo" => Arc::new(Ceo(knobs)),
        "cto" => Arc::new(Cto(knobs)),
        "cso" => specialist("review"),
        "marketing" => specialist("post"),
        "backend" => specialist("endpoint"),
        "frontend" => specialist("component"),
        "devops" => specialist("pipeline"),
        other => anyhow::bail!("genbrain has no agent for role `{other}`"),
    })
}
