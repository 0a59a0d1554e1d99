//! Running an org action with the turn's [`Context`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    precheck, ActionError, ActionHost, End, TurnKind, MAX_DELEGATIONS_PER_TURN, MAX_LEASE_SECS,
    MAX_USAGE_TOKENS,
};
use crate::blackboard::{ArtifactStatus, ArtifactUpdate, DecisionSpec};
use crate::envelope::TaskId;
use crate::hierarchy::TaskSpec;
use crate::meeting::{MeetingStatus, Proposal, Vote};
use crate::saga::SagaDecision;
use crate::tools::ToolHostExt;

fn parse<T: DeserializeOwned>(action: &str, args: Value) -> Result<T, ActionError> {
    let args = if args.is_null() { json!({}) } else { args };
    serde_json::from_value(args)
        .map_err(|e| ActionError::invalid(format!("arguments of `{action}`: {e}")))
}

#[derive(Deserialize)]
struct CompleteArgs {
    result: Value,
}

#[derive(Deserialize)]
struct FailArgs {
    reason: String,
    #[serde(default)]
    retryable: bool,
}

#[derive(Deserialize)]
struct DelegateArgs {
    to: String,
    title: String,
    task_type: Option<String>,
    #[serde(default)]
    input: Value,
    sla_minutes: Option<u64>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
struct EscalateArgs {
    reason: String,
    #[serde(default)]
    details: Value,
}

#[derive(Deserialize)]
struct PeerArgs {
    to: String,
    message: Value,
}

#[derive(Deserialize)]
struct PublishArgs {
    name: String,
    #[serde(default)]
    payload: Value,
}

#[derive(Deserialize)]
struct DecideArgs {
    decision: Value,
}

#[derive(Deserialize)]
struct AnswerArgs {
    answer: Value,
}

#[derive(Deserialize)]
struct TreeArgs {
    task_id: Option<String>,
}

#[derive(Deserialize)]
struct UsageArgs {
    tokens: u64,
    cost_usd: f64,
}

#[derive(Deserialize)]
struct CallArgs {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct ProjectArgs {
    project_id: String,
}

#[derive(Deserialize)]
struct UpdateArgs {
    project_id: String,
    artifact: String,
    status: Option<ArtifactStatus>,
    path: Option<String>,
    content: Option<Value>,
}

#[derive(Deserialize)]
struct ClaimArgs {
    project_id: String,
    artifact: String,
    lease_secs: u64,
}

#[derive(Deserialize)]
struct DecisionArgs {
    project_id: String,
    decision: String,
    rationale: String,
    #[serde(default)]
    artifacts: Vec<String>,
    meeting: Option<String>,
    supersedes: Option<String>,
}

#[derive(Deserialize)]
struct SpeakArgs {
    text: String,
}

#[derive(Deserialize)]
struct ProposeArgs {
    decision: String,
    #[serde(default)]
    rationale: String,
    #[serde(default)]
    action_items: Vec<Value>,
}

#[derive(Deserialize)]
struct VoteArgs {
    vote: String,
    #[serde(default)]
    conditions: Vec<String>,
    reason: Option<String>,
}

/// A saga decision: `{"decision": "retry" | "compensate"}` or
/// `{"decision": "accept", "result": …}`.
pub fn saga_decision(decision: &Value) -> Result<SagaDecision, ActionError> {
    serde_json::from_value(decision.clone()).map_err(|e| {
        ActionError::invalid(format!(
            "a saga decision is {{\"decision\": \"retry\"}}, {{\"decision\": \"compensate\"}} or {{\"decision\": \"accept\", \"result\": …}}: {e}"
        ))
    })
}

fn proposal(v: &Value) -> Result<Proposal, ActionError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        ActionError::invalid(format!(
            "a proposal is {{\"decision\": …, \"rationale\": …, \"action_items\": [{{\"agent\": a participant, \"task\": …}}]}}: {e}"
        ))
    })
}

fn vote(v: &Value) -> Result<Vote, ActionError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        ActionError::invalid(format!(
            "a vote is {{\"vote\": \"approve\" | \"abstain\"}}, {{\"vote\": \"approve_with_conditions\", \"conditions\": [...]}} or {{\"vote\": \"reject\", \"reason\": ...}}: {e}"
        ))
    })
}

/// An org action's arguments, parsed and checked as far as they can be
/// without the turn.
enum Call {
    /// An action that ends the turn.
    End(End),
    Delegate(DelegateArgs),
    Escalate(EscalateArgs),
    SendPeer(PeerArgs),
    Publish(PublishArgs),
    ReadTree(TreeArgs),
    Usage(UsageArgs),
    Granted(CallArgs),
    ReadProject(ProjectArgs),
    Update(UpdateArgs),
    Claim(ClaimArgs),
    Decision(DecisionArgs),
}

impl Call {
    fn parse(name: &str, args: Value) -> Result<Self, ActionError> {
        Ok(match name {
            "complete_task" => Self::End(End::Complete(parse::<CompleteArgs>(name, args)?.result)),
            "fail_task" => {
                let a: FailArgs = parse(name, args)?;
                Self::End(End::Fail {
                    message: a.reason,
                    retryable: a.retryable,
                })
            }
            "await_subtasks" => Self::End(End::AwaitSubtasks),
            "decide_escalation" => {
                Self::End(End::Decide(parse::<DecideArgs>(name, args)?.decision))
            }
            "pass_up_escalation" => Self::End(End::PassUp),
            "answer_peer_request" => {
                Self::End(End::Answer(parse::<AnswerArgs>(name, args)?.answer))
            }
            "speak" => Self::End(End::Speak(parse::<SpeakArgs>(name, args)?.text)),
            "propose" => {
                let a: ProposeArgs = parse(name, args)?;
                Self::End(End::Propose(proposal(&json!({
                    "decision": a.decision,
                    "rationale": a.rationale,
                    "action_items": a.action_items,
                }))?))
            }
            "vote" => {
                let a: VoteArgs = parse(name, args)?;
                let mut v = json!({ "vote": a.vote });
                match a.vote.as_str() {
                    "approve_with_conditions" => v["conditions"] = json!(a.conditions),
                    "reject" => v["reason"] = json!(a.reason.unwrap_or_default()),
                    _ => {}
                }
                Self::End(End::Vote(vote(&v)?))
            }
            "delegate" => Self::Delegate(parse(name, args)?),
            "escalate" => Self::Escalate(parse(name, args)?),
            "send_peer" => Self::SendPeer(parse(name, args)?),
            "publish_event" => Self::Publish(parse(name, args)?),
            "read_task_tree" => {
                let a: TreeArgs = parse(name, args)?;
                if let Some(id) = &a.task_id {
                    id.parse::<TaskId>()
                        .map_err(|e| ActionError::invalid(format!("task_id: {e}")))?;
                }
                Self::ReadTree(a)
            }
            "report_usage" => {
                let a: UsageArgs = parse(name, args)?;
                if !a.cost_usd.is_finite() || a.cost_usd < 0.0 {
                    return Err(ActionError::invalid(format!(
                        "cost_usd must be a finite, non-negative number, not {}",
                        a.cost_usd
                    )));
                }
                if a.tokens > MAX_USAGE_TOKENS {
                    return Err(ActionError::invalid(format!(
                        "tokens must be at most {MAX_USAGE_TOKENS} in one report, not {}",
                        a.tokens
                    )));
                }
                Self::Usage(a)
            }
            "call_granted_tool" => Self::Granted(parse(name, args)?),
            "read_project" => Self::ReadProject(parse(name, args)?),
            "update_artifact" => {
                let a: UpdateArgs = parse(name, args)?;
                if a.status.is_none() && a.path.is_none() && a.content.is_none() {
                    return Err(ActionError::invalid(
                        "update_artifact: give a status, a path or content",
                    ));
                }
                Self::Update(a)
            }
            "claim_artifact" => {
                let a: ClaimArgs = parse(name, args)?;
                if a.lease_secs == 0 || a.lease_secs > MAX_LEASE_SECS {
                    return Err(ActionError::invalid(format!(
                        "lease_secs must be 1 to {MAX_LEASE_SECS}, not {}",
                        a.lease_secs
                    )));
                }
                Self::Claim(a)
            }
            "record_decision" => Self::Decision(parse(name, args)?),
            other => return Err(ActionError::Unknown { name: other.into() }),
        })
    }
}

/// Checks the arguments of the org action `name` as far as that needs no
/// turn (their shape, bounds, a proposal's or vote's form), so a caller can
/// refuse bad input before it picks a turn.
///
/// # Errors
/// `Unknown` or `InvalidInput`.
pub fn check_args(name: &str, args: &Value) -> Result<(), ActionError> {
    Call::parse(name, args.clone()).map(|_| ())
}

impl ActionHost<'_> {
    /// Parses `args`, checks them against the chart and this turn's kind
    /// (one of `kinds`, those `name` acts in), then runs the action.
    pub(super) async fn dispatch(
        &mut self,
        name: &str,
        kinds: &[TurnKind],
        args: Value,
    ) -> Result<Value, ActionError> {
        let call = Call::parse(name, args.clone())?;
        precheck(self.cx.chart(), self.cx.role(), name, &args)?;
        if !kinds.contains(&self.kind) {
            return Err(ActionError::invalid(format!(
                "`{name}` is not an action of a {} turn (it acts in: {})",
                self.kind.noun(),
                kinds
                    .iter()
                    .map(|k| k.noun())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.run(call).await
    }

    async fn run(&mut self, call: Call) -> Result<Value, ActionError> {
        let cx = self.cx;
        match call {
            Call::End(end) => self.finish(end).await,
            Call::Delegate(a) => {
                if self.delegated >= MAX_DELEGATIONS_PER_TURN {
                    return Err(ActionError::invalid(format!(
                        "a turn may make at most {MAX_DELEGATIONS_PER_TURN} delegations; end this one (await_subtasks) and delegate more in the next"
                    )));
                }
                let mut spec = TaskSpec::new(a.title).input(a.input);
                if let Some(t) = a.task_type {
                    spec = spec.task_type(t);
                }
                if let Some(m) = a.sla_minutes {
                    spec = spec.sla_minutes(m);
                }
                if let Some(k) = a.idempotency_key {
                    spec = spec.idempotency_key(k);
                }
                let d = cx
                    .delegate(&a.to, spec)
                    .await
                    .map_err(ActionError::from_delegate)?;
                self.delegated += 1;
                Ok(json!({
                    "task_id": d.task_id,
                    "assigned_to": d.assigned_to,
                    "rerouted_from": d.rerouted_from,
                    "note": "created when this turn ends (complete_task or await_subtasks)",
                }))
            }
            Call::Escalate(a) => {
                cx.escalate(a.reason, a.details)
                    .map_err(ActionError::from_delegate)?;
                Ok(json!({"escalated_to": cx.chart().manager_of(cx.role())}))
            }
            Call::SendPeer(a) => {
                cx.send_peer(&a.to, &a.message)
                    .map_err(ActionError::from_peer)?;
                Ok(json!({"to": a.to, "note": "sent when this turn ends"}))
            }
            Call::Publish(a) => {
                let id = cx
                    .publish_event(&a.name, &a.payload)
                    .map_err(ActionError::from_event)?;
                Ok(json!({"event_id": id, "name": a.name, "note": "published when this turn ends"}))
            }
            Call::ReadTree(a) => self.read_tree(a.task_id.as_deref()).await,
            Call::Usage(a) => {
                cx.report_usage(a.tokens, a.cost_usd);
                Ok(json!({"reported": true}))
            }
            Call::Granted(a) => {
                let arguments = a.arguments.unwrap_or_else(|| json!({}));
                let out = cx
                    .tools()
                    .call_tool(&a.name, arguments)
                    .await
                    .map_err(ActionError::from_tool)?;
                Ok(json!({"structured": out.structured, "text": out.text}))
            }
            call => self.board(call).await,
        }
    }

    /// Ends the turn with `end`, if it may: `TooLate` ends it but says it
    /// did not count.
    async fn finish(&mut self, end: End) -> Result<Value, ActionError> {
        self.check_end(&end)?;
        let late = self.check_meeting(&end).await?;
        let action = end.action();
        self.end = Some(end);
        match late {
            Some(message) => Err(ActionError::TooLate { message }),
            None => Ok(json!({"ended": self.id, "with": action})),
        }
    }

    /// Whether `end` may end this turn.
    fn check_end(&self, end: &End) -> Result<(), ActionError> {
        let kind = self.kind;
        let wrong = |what: &str| {
            Err(ActionError::invalid(format!(
                "{what} cannot end a {} turn",
                kind.noun()
            )))
        };
        match (kind, end) {
            (_, End::Fail { .. }) => Ok(()),
            (TurnKind::Task, End::Complete(_)) => Ok(()),
            (TurnKind::Task, End::AwaitSubtasks) if self.delegated == 0 => {
                Err(ActionError::invalid(
                    "await_subtasks needs at least one delegation made in this turn",
                ))
            }
            (TurnKind::Task, End::AwaitSubtasks) => Ok(()),
            (TurnKind::Escalation | TurnKind::SagaEscalation, End::PassUp) => Ok(()),
            (TurnKind::Escalation, End::Decide(_)) => Ok(()),
            (TurnKind::SagaEscalation, End::Decide(d)) => saga_decision(d).map(|_| ()),
            (
                TurnKind::SagaStep | TurnKind::Compensation | TurnKind::ArtifactReady,
                End::Complete(_),
            ) => Ok(()),
            (TurnKind::PeerRequest, End::Answer(_)) => Ok(()),
            (TurnKind::MeetingTurn, End::Speak(_)) => Ok(()),
            (TurnKind::MeetingProposal, End::Propose(_)) => Ok(()),
            (TurnKind::MeetingBallot, End::Vote(_)) => Ok(()),
            (_, e) => wrong(e.action()),
        }
    }

    /// Before a meeting turn ends with `end`: `Err` refuses the end (the turn
    /// goes on: a proposal or vote the meeting would refuse); `Ok(Some(why))`
    /// ends the turn but it came too late (the meeting moved on: its vote
    /// closed, the turn timed out) and is not counted.
    async fn check_meeting(&self, end: &End) -> Result<Option<String>, ActionError> {
        let kind = self.kind;
        if !matches!(
            kind,
            TurnKind::MeetingTurn | TurnKind::MeetingProposal | TurnKind::MeetingBallot
        ) || matches!(end, End::Fail { .. })
        {
            return Ok(None);
        }
        let meeting = self.id.split('/').next().unwrap_or_default();
        let rec = self
            .cx
            .meeting(meeting)
            .await
            .map_err(ActionError::from_meeting)?;
        let moved = |what: &str| {
            Ok(Some(format!(
                "meeting `{meeting}` moved on ({what}, now {}): not counted",
                rec.status
            )))
        };
        match (kind, end) {
            (TurnKind::MeetingTurn, _) => {
                let n: Option<usize> = self.id.rsplit('/').next().and_then(|n| n.parse().ok());
                if rec.status != MeetingStatus::Turns || Some(rec.turn) != n {
                    return moved("the turn timed out");
                }
            }
            (TurnKind::MeetingProposal, End::Propose(p)) => {
                p.check(&rec.participants)
                    .map_err(ActionError::from_meeting)?;
                if rec.status != MeetingStatus::Proposing {
                    return moved("it closed");
                }
            }
            (TurnKind::MeetingBallot, End::Vote(v)) => {
                v.check().map_err(ActionError::from_meeting)?;
                if rec.status != MeetingStatus::Voting {
                    return moved("its vote closed");
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// The tree under `root` (default: the turn's task), if this role was
    /// assigned or delegated that task.
    async fn read_tree(&self, root: Option<&str>) -> Result<Value, ActionError> {
        let cx = self.cx;
        let root = match root {
            Some(s) => s
                .parse::<TaskId>()
                .map_err(|e| ActionError::invalid(e.to_string()))?,
            None => match cx.task_id() {
                Some(id) => id.clone(),
                None => {
                    return Err(ActionError::invalid(
                        "name the task whose tree to read (`task_id`)",
                    ))
                }
            },
        };
        let record = cx
            .task_record(&root)
            .await
            .map_err(ActionError::from_store)?
            .ok_or_else(|| ActionError::invalid(format!("no task {root}")))?;
        let role = cx.role();
        if &record.assigned_to != role && &record.assigned_by != role {
            return Err(ActionError::NotAllowed {
                message: format!(
                    "`{role}` may read only the trees of tasks it was assigned or delegated; task {root} went from `{}` to `{}`",
                    record.assigned_by, record.assigned_to
                ),
            });
        }
        let tree = cx.task_tree(&root).await.map_err(ActionError::from_store)?;
        serde_json::to_value(&tree).map_err(|e| ActionError::Unavailable {
            message: e.to_string(),
        })
    }

    /// A blackboard action, held to the chart (only an artifact's owner
    /// changes it).
    async fn board(&self, call: Call) -> Result<Value, ActionError> {
        let cx = self.cx;
        let r = match call {
            Call::ReadProject(a) => match cx.project(&a.project_id).await {
                Ok(p) => cx.ready_artifacts(&a.project_id).await.map(|ready| {
                    let mut doc = p.to_json();
                    doc["ready"] = json!(ready);
                    doc
                }),
                Err(e) => Err(e),
            },
            Call::Update(a) => {
                let update = ArtifactUpdate {
                    status: a.status,
                    path: a.path,
                    content: a.content,
                    ..Default::default()
                };
                cx.update_artifact(&a.project_id, &a.artifact, update)
                    .await
                    .map(|revision| {
                        json!({
                            "artifact": a.artifact,
                            "revision": revision,
                            "note": "written when this turn ends",
                        })
                    })
            }
            Call::Claim(a) => cx
                .claim_artifact(
                    &a.project_id,
                    &a.artifact,
                    Duration::from_secs(a.lease_secs),
                )
                .await
                .map(|c| {
                    json!({
                        "artifact": c.artifact,
                        "holder": c.holder,
                        "until": c.until.to_rfc3339(),
                        "status": ArtifactStatus::InProgress,
                    })
                }),
            Call::Decision(a) => {
                let mut decision =
                    DecisionSpec::new(a.decision, a.rationale).artifacts(a.artifacts);
                decision.meeting = a.meeting;
                decision.supersedes = a.supersedes;
                cx.record_decision(&a.project_id, decision)
                    .await
                    .map(|id| json!({ "decision_id": id, "note": "recorded when this turn ends" }))
            }
            _ => return Err(ActionError::invalid("not a blackboard action")),
        };
        r.map_err(ActionError::from_board)
    }
}
