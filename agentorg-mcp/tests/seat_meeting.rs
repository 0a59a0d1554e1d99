//! Meetings through seats: the CTO's seat facilitates (it speaks, proposes
//! and votes), Backend's seat speaks on its turn — after the CTO, seeing
//! its contribution — and votes on conditions, sealed (its ballot shows
//! the proposal, no vote); a second vote is refused; the CSO, a Rust agent,
//! takes its turn and approves. The record has the three votes, Backend's
//! condition linked to its action item, which comes to Backend's seat as a
//! task, is completed, and its result comes back to it as a notice.
//! Memory backends, in-process pipes.

use std::time::Duration;

use agentorg_core::agent::{Agent, AgentError, Context, Outcome, Task};
use agentorg_core::async_trait;
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::meeting::{MeetingBallot, MeetingSpec, MeetingTurn, Vote};
use agentorg_core::runtime::Org;
use agentorg_mcp::seat::Seat;
use serde_json::json;

mod seat_support;
use seat_support::{client_of, next_event, ok, refused, test_seat, TestResult, DEADLINE};

/// founder → cto → backend, cso; the cto meets both.
fn chart() -> OrgChart {
    let built = OrgChart::builder("seatmeet")
        .principal("founder")
        .role(
            RoleSpec::new("cto")
                .reports_to("founder")
                .meets(["backend", "cso"]),
        )
        .role(RoleSpec::new("backend").reports_to("cto"))
        .role(RoleSpec::new("cso").reports_to("cto"))
        .build();
    match built {
        Ok(c) => c,
        Err(e) => panic!("chart: {e}"),
    }
}

/// The CSO: speaks and approves.
struct Cso;

#[async_trait]
impl Agent for Cso {
    async fn on_task(&self, _cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(json!(null)))
    }
    async fn on_meeting_turn(&self, _cx: &Context, _t: MeetingTurn) -> Result<String, AgentError> {
        Ok("encrypt PII".to_owned())
    }
    async fn on_meeting_ballot(
        &self,
        _cx: &Context,
        _b: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        Ok(Vote::Approve)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_speak_propose_and_vote_sealed() -> TestResult {
    let (cto, backend): (Seat, Seat) = (test_seat(chart(), "cto"), test_seat(chart(), "backend"));
    let org = Org::builder(chart())
        .agent("cto", cto.agent())
        .agent("backend", backend.agent())
        .agent("cso", Cso)
        .start()
        .await?;
    let (cto_client, _cto_server) = client_of(&cto).await;
    let (client, _server) = client_of(&backend).await;
    let founder = org.principal();
    let spec = MeetingSpec::new("Storage review")
        .participants(["cto", "backend", "cso"])
        .agenda(["Which store for analytics events"])
        .turn_timeout(Duration::from_secs(60));
    let id = founder.schedule_meeting("cto", &spec).await?;

    // The CTO speaks first.
    let turn = next_event(&cto_client).await;
    assert_eq!(turn["event"], "meeting_turn", "{turn}");
    assert_eq!(turn["agenda_item"], "Which store for analytics events");
    // A turn is no ballot.
    let (kind, _) = refused(&cto_client, "vote", json!({"vote": "approve"})).await;
    assert_eq!(kind, "no_turn");
    ok(&cto_client, "speak", json!({"text": "ClickHouse"})).await;

    // Backend's turn shows the CTO's contribution.
    let turn = next_event(&client).await;
    assert_eq!(turn["event"], "meeting_turn", "{turn}");
    assert_eq!(turn["transcript"][0]["said"], "ClickHouse", "{turn}");
    ok(
        &client,
        "speak",
        json!({"text": "agreed, with encrypted PII"}),
    )
    .await;

    // The CTO proposes; a proposal with a malformed action item is refused
    // and the turn goes on.
    let proposing = next_event(&cto_client).await;
    assert_eq!(proposing["event"], "meeting_proposal", "{proposing}");
    assert_eq!(proposing["transcript"].as_array().map(Vec::len), Some(3));
    let (kind, _) = refused(
        &cto_client,
        "propose",
        json!({"decision": "Use ClickHouse", "action_items": [{"agent": "Not A Role", "task": "x"}]}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    let (kind, message) = refused(
        &cto_client,
        "propose",
        json!({"decision": "Use ClickHouse", "action_items": [{"agent": "founder", "task": "x"}]}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    assert!(message.contains("not in the meeting"), "{message}");
    ok(
        &cto_client,
        "propose",
        json!({"decision": "Use ClickHouse", "rationale": "fast enough",
               "action_items": [{"agent": "backend", "task": "Write the schema"}]}),
    )
    .await;

    // Ballots: the CTO's and Backend's, sealed.
    let ballot = next_event(&cto_client).await;
    assert_eq!(ballot["event"], "meeting_ballot", "{ballot}");
    ok(&cto_client, "vote", json!({"vote": "approve"})).await;
    let ballot = next_event(&client).await;
    assert_eq!(ballot["event"], "meeting_ballot", "{ballot}");
    assert_eq!(ballot["proposal"]["decision"], "Use ClickHouse");
    assert!(ballot.get("votes").is_none(), "{ballot}");
    // Too many conditions: refused, and the ballot is still in hand.
    let (kind, _) = refused(
        &client,
        "vote",
        json!({"vote": "approve_with_conditions", "conditions": ["a", "b", "c", "d"]}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    ok(
        &client,
        "vote",
        json!({"vote": "approve_with_conditions", "conditions": ["an encryption audit first"]}),
    )
    .await;
    let (kind, message) = refused(
        &client,
        "vote",
        json!({"vote": "reject", "reason": "changed my mind", "turn_id": ballot["turn_id"]}),
    )
    .await;
    assert_eq!(kind, "released", "{message}");
    assert!(message.contains("ended with vote"), "{message}");

    let record = founder.wait_meeting(&id, DEADLINE).await?.to_json();
    assert_eq!(
        record["votes"],
        json!({"cto": "approve", "backend": "approve_with_conditions", "cso": "approve"}),
        "{record}"
    );
    assert_eq!(record["decision"], "Use ClickHouse");
    assert_eq!(record["condition_links"][0]["action_item"], 0, "{record}");

    // The action item comes to Backend's seat as a task of its own.
    let task = next_event(&client).await;
    assert_eq!(task["event"], "task", "{task}");
    assert_eq!(task["task"]["title"], "Write the schema", "{task}");
    assert_eq!(task["task"]["input"]["meeting_id"], id.as_str(), "{task}");
    assert_eq!(
        task["task"]["input"]["conditions"],
        json!(["an encryption audit first"])
    );
    ok(
        &client,
        "complete_task",
        json!({"result": "schema written"}),
    )
    .await;
    // Its result comes back to Backend (its own task), as a notice.
    let result = next_event(&client).await;
    assert_eq!(result["event"], "result", "{result}");
    ok(&client, "seat_info", json!({})).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let actions = founder.meeting_actions(&id).await?;
        if actions[0]
            .as_ref()
            .is_some_and(|t| t.status == TaskStatus::Completed)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{actions:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    org.shutdown().await;
    Ok(())
}
