//! The architecture review (`--meeting`): the founder asks the CEO for it,
//! the CEO hands it to the CTO, and the CTO schedules GenBrain's meeting
//! (`../shared/fixtures/meeting-request.json`: five participants, three
//! agenda items, a decision required, 15 minutes at most). Each
//! participant speaks on each item in turn; the CTO proposes ClickHouse
//! with column-level encryption for PII; the CTO, Backend and DevOps
//! approve, the CSO approves on the condition of an encryption-at-rest
//! audit, Frontend abstains. Backend, DevOps and the CSO take their action
//! items as tasks of their own and complete them. The founder prints the
//! stored record as JSON.

use std::time::Duration;

use agentorg::meeting::{
    MeetingBallot, MeetingRecord, MeetingSpec, MeetingTurn, Proposal, Vote, ACTION_TASK_TYPE,
};
use agentorg::prelude::*;
use serde_json::{json, Value};

/// The meeting's id in GenBrain's record (the first free one of it, `…-2`,
/// … is used).
const MEETING: &str = "meeting-2026-0423-arch-review";

/// GenBrain's request, as the CTO makes it.
const REQUEST: &str = r#"{
  "title": "Analytics Dashboard Architecture Review",
  "participants": ["cto", "backend", "frontend", "devops", "cso"],
  "agenda": [
    "Review proposed ClickHouse schema for analytics events",
    "Discuss real-time vs batch data pipeline",
    "Agree on API versioning strategy for breaking changes"
  ],
  "decision_required": true,
  "max_duration_minutes": 15
}"#;

const DECISION: &str = "Use ClickHouse with column-level encryption for PII fields";
const CONDITION: &str = "CSO requires encryption-at-rest audit before production launch";
const ACTIONS: [(&str, &str); 3] = [
    (
        "backend",
        "Implement ClickHouse schema with encrypted PII columns",
    ),
    ("devops", "Configure ClickHouse encryption-at-rest"),
    ("cso", "Audit encryption implementation before launch"),
];

/// Whether `task` is the request for the review (its input names it).
pub(crate) fn is_meeting_task(task: &Task) -> bool {
    task.input.get("meeting").is_some()
}

/// Whether `task` is an action item a participant took from the record.
pub(crate) fn is_action_item(task: &Task) -> bool {
    task.task_type.as_deref() == Some(ACTION_TASK_TYPE)
}

/// The CTO's part: schedules the review it facilitates.
pub(crate) async fn cto_schedules(cx: &Context, task: &Task) -> Result<Outcome, AgentError> {
    let request: Value =
        serde_json::from_str(REQUEST).map_err(|e| AgentError::permanent(e.to_string()))?;
    let id = task.input["meeting"].as_str().unwrap_or(MEETING);
    let spec = MeetingSpec::from_request(&request)?.id(id);
    let id = cx.schedule_meeting(&spec).await?;
    eprintln!("genbrain: cto scheduled meeting {id}");
    Ok(Outcome::Complete(json!({ "meeting_id": id })))
}

/// What each participant says on each agenda item.
pub(crate) fn turn(role: &str, turn: &MeetingTurn) -> String {
    let said = match (role, turn.item) {
        ("cto", 0) => "ClickHouse fits our event volume; PII fields need a plan",
        ("cto", 1) => "Real-time for the dashboard, batch for the monthly rollups",
        ("cto", _) => "Version the API in the path: /api/v2, v1 kept six months",
        ("backend", 0) => "A MergeTree table per event type; the user id and email are PII",
        ("backend", 1) => "Kafka into ClickHouse for real-time; the batch jobs stay as they are",
        ("backend", _) => "Breaking changes only in a new major version",
        ("frontend", 0) => "No view on the schema; the charts need per-minute buckets",
        ("frontend", 1) => "Real-time matters for the live counters only",
        ("frontend", _) => "The client pins its API version",
        ("devops", 0) => "ClickHouse is already running in our GKE cluster",
        ("devops", 1) => "Real-time ingestion needs one more node",
        ("devops", _) => "Route both versions from the gateway",
        ("cso", 0) => "PII must be encrypted at rest, column by column",
        ("cso", 1) => "The pipeline must not log PII",
        (_, _) => "No security concern with versioning",
    };
    eprintln!("genbrain: {role} on \"{}\": {said}", turn.agenda_item);
    said.to_owned()
}

/// The CTO's proposal: the write-up's decision and its three action items.
pub(crate) fn proposal(meeting: &MeetingRecord) -> Result<Option<Proposal>, AgentError> {
    let mut p = Proposal::new(DECISION).rationale(format!(
        "{} turns over {} items: ClickHouse is in place and fast enough; the CSO needs PII encrypted",
        meeting.transcript.len(),
        meeting.agenda.len()
    ));
    for (agent, task) in ACTIONS {
        let agent = agent
            .parse()
            .map_err(|e: agentorg::NameError| AgentError::permanent(e.to_string()))?;
        p = p.action_item(agent, task);
    }
    eprintln!("genbrain: cto proposes: {DECISION}");
    Ok(Some(p))
}

/// Each participant's vote, as in the write-up.
pub(crate) fn vote(role: &str, ballot: &MeetingBallot) -> Vote {
    let vote = match role {
        "cso" => Vote::ApproveWithConditions {
            conditions: vec![CONDITION.to_owned()],
        },
        "frontend" => Vote::Abstain,
        _ => Vote::Approve,
    };
    eprintln!(
        "genbrain: {role} votes on \"{}\" (sealed)",
        ballot.proposal.decision
    );
    vote
}

/// A participant's action item: done.
pub(crate) fn act(cx: &Context, task: &Task) -> Outcome {
    eprintln!(
        "genbrain: {} does its action item of {}: {}",
        cx.role(),
        task.input["meeting_id"].as_str().unwrap_or("?"),
        task.title
    );
    Outcome::Complete(json!({ "done": task.title }))
}

/// The founder's part: asks the CEO for the review, waits for the meeting
/// to close and its action items to complete, prints the record, and
/// checks it. `Ok(true)` iff the record has the write-up's decision, votes,
/// condition and action items, and every action item completed as a task.
pub(crate) async fn drive(org: &Org, timeout: Duration) -> anyhow::Result<bool> {
    let founder = org.principal();
    let existing: Vec<String> = founder
        .meetings()
        .await?
        .into_iter()
        .map(|m| m.meeting_id)
        .collect();
    let id = (1..)
        .map(|n| match n {
            1 => MEETING.to_owned(),
            n => format!("{MEETING}-{n}"),
        })
        .find(|id| !existing.contains(id))
        .unwrap_or_else(|| MEETING.to_owned());
    let task = founder
        .delegate(
            "ceo",
            TaskSpec::new("Hold the analytics dashboard architecture review")
                .input(json!({ "meeting": id })),
        )
        .await?;
    task.wait(timeout).await?;
    let record = founder.wait_meeting(&id, timeout).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let actions = loop {
        let actions = founder.meeting_actions(&id).await?;
        let done = actions.iter().all(|t| {
            t.as_ref()
                .is_some_and(|t| t.status == TaskStatus::Completed)
        });
        if done || tokio::time::Instant::now() >= deadline {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let json = record.to_json();
    println!("{}", serde_json::to_string_pretty(&json)?);
    let expected = json!({
        "decision": DECISION,
        "votes": {
            "cto": "approve", "backend": "approve", "cso": "approve_with_conditions",
            "devops": "approve", "frontend": "abstain"
        },
        "conditions": [CONDITION],
        "action_items": ACTIONS.map(|(a, t)| json!({ "agent": a, "task": t })),
    });
    let as_written = ["decision", "votes", "conditions", "action_items"]
        .iter()
        .all(|k| json[k] == expected[k]);
    let completed = actions.len() == ACTIONS.len()
        && actions.iter().all(|t| {
            t.as_ref()
                .is_some_and(|t| t.status == TaskStatus::Completed)
        });
    eprintln!(
        "genbrain: meeting {id} {}; {} of {} action items completed as tasks",
        if as_written {
            "recorded as in the write-up"
        } else {
            "NOT recorded as in the write-up"
        },
        actions
            .iter()
            .filter(|t| t
                .as_ref()
                .is_some_and(|t| t.status == TaskStatus::Completed))
            .count(),
        ACTIONS.len()
    );
    Ok(as_written && completed)
}
