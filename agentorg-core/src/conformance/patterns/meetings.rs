//! Meetings: GenBrain's architecture review with a silent participant
//! (absent, never blocking; its action items run as tasks), sealed votes
//! cast once, and each voting rule.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::agent::{Agent, AgentError, Context, Outcome, Task};
use crate::blackboard::{ArtifactSpec, ProjectSpec};
use crate::chart::{OrgChart, RoleSpec};
use crate::hierarchy::TaskStatus;
use crate::meeting::{
    Closed, MeetingBallot, MeetingError, MeetingRecord, MeetingSpec, MeetingStatus, MeetingTurn,
    Proposal, TallyResult, TieBreak, Vote, VotingRule, ACTION_TASK_TYPE,
};
use crate::name::Name;
use crate::runtime::Principal;
use crate::store::StateStore;
use crate::transport::Transport;

use super::super::fail;
use super::suite_config;
use super::support::{eventually_some, name, start_with, tasks_of};

/// How long a turn waits on real servers (a silent participant costs this
/// per turn, and once more for the vote).
const TURN: Duration = Duration::from_secs(4);

/// How long a whole meeting may take to close in the suite.
const CLOSES_WITHIN: Duration = Duration::from_secs(120);

/// The write-up's decision, condition and action items.
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
const AGENDA: [&str; 3] = [
    "Review proposed ClickHouse schema for analytics events",
    "Discuss real-time vs batch data pipeline",
    "Agree on API versioning strategy for breaking changes",
];
const PEOPLE: [&str; 5] = ["cto", "backend", "frontend", "devops", "cso"];

/// founder → ceo → cto, cso; cto → backend, frontend, devops; the cto
/// meets backend, frontend, devops and cso.
fn meeting_chart(b: &str, org: &Name) -> OrgChart {
    OrgChart::builder(org.as_str())
        .principal("founder")
        .role(RoleSpec::new("ceo").reports_to("founder"))
        .role(
            RoleSpec::new("cto")
                .reports_to("ceo")
                .meets(["backend", "frontend", "devops", "cso"]),
        )
        .role(RoleSpec::new("cso").reports_to("ceo"))
        .role(RoleSpec::new("backend").reports_to("cto"))
        .role(RoleSpec::new("frontend").reports_to("cto"))
        .role(RoleSpec::new("devops").reports_to("cto"))
        .build()
        .unwrap_or_else(|e| fail(b, e))
}

/// What the agents saw and did.
#[derive(Debug, Default)]
struct Seen {
    /// (role, meeting, item) of each turn taken.
    turns: Vec<(String, String, usize)>,
    /// The meeting as each voter could read it while voting: (role,
    /// outcome visible, votes visible in its JSON).
    while_voting: Vec<(String, bool, bool)>,
    /// Second votes and what they got.
    second_votes: Vec<String>,
    /// Action items done: (role, meeting, task).
    actions: Vec<(String, String, String)>,
    /// Meetings escalated to each role.
    escalations: Vec<(String, String)>,
}

/// Every role's agent: speaks on each item, the cto proposes the
/// write-up's decision (or, for a meeting titled `rule …`, a bare one), and
/// each votes as the meeting's table says (`votes`: by title, by role).
#[derive(Clone)]
struct Member {
    role: &'static str,
    seen: Arc<Mutex<Seen>>,
    votes: Arc<BTreeMap<String, BTreeMap<String, Vote>>>,
}

impl Member {
    fn log(&self, f: impl FnOnce(&mut Seen)) {
        if let Ok(mut s) = self.seen.lock() {
            f(&mut s);
        }
    }
}

#[async_trait]
impl Agent for Member {
    async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        if task.task_type.as_deref() == Some(ACTION_TASK_TYPE) {
            let meeting = task.input["meeting_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let title = task.title.clone();
            self.log(|s| s.actions.push((self.role.to_owned(), meeting, title)));
        }
        Ok(Outcome::Complete(json!({ "done": task.title })))
    }

    async fn on_meeting_turn(
        &self,
        _cx: &Context,
        turn: MeetingTurn,
    ) -> Result<String, AgentError> {
        self.log(|s| {
            s.turns
                .push((self.role.to_owned(), turn.meeting_id.clone(), turn.item))
        });
        Ok(format!("{} on {}", self.role, turn.agenda_item))
    }

    async fn on_meeting_proposal(
        &self,
        _cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        if meeting.title.starts_with("rule") {
            return Ok(Some(Proposal::new(format!("decide {}", meeting.title))));
        }
        let mut p =
            Proposal::new(DECISION).rationale("The turns agree on ClickHouse; PII encrypted");
        for (agent, task) in ACTIONS {
            p = p.action_item(
                Name::new(agent).map_err(|e| AgentError::permanent(e.to_string()))?,
                task,
            );
        }
        Ok(Some(p))
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        if self.role == "frontend" && ballot.title == "rule quorum" {
            return Err(AgentError::permanent("frontend cannot vote today"));
        }
        let rec = cx.meeting(&ballot.meeting_id).await?;
        let json = rec.to_json();
        let votes_visible = json["votes"].as_object().is_some_and(|v| !v.is_empty());
        self.log(|s| {
            s.while_voting
                .push((self.role.to_owned(), rec.outcome.is_some(), votes_visible))
        });
        let vote = self
            .votes
            .get(&ballot.title)
            .and_then(|t| t.get(self.role))
            .cloned()
            .unwrap_or(Vote::Abstain);
        if self.role == "backend" && !ballot.title.starts_with("rule") {
            // Cast here, then try to change it: refused.
            cx.vote(&ballot.meeting_id, vote.clone()).await?;
            let again = cx
                .vote(
                    &ballot.meeting_id,
                    Vote::Reject {
                        reason: "changed my mind".into(),
                    },
                )
                .await;
            let got = match again {
                Err(MeetingError::AlreadyVoted { .. }) => "already_voted".to_owned(),
                other => format!("{other:?}"),
            };
            self.log(|s| s.second_votes.push(got));
        }
        Ok(vote)
    }

    async fn on_meeting_escalation(
        &self,
        _cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        self.log(|s| {
            s.escalations
                .push((self.role.to_owned(), meeting.meeting_id.clone()))
        });
        Ok(())
    }
}

fn review_votes() -> BTreeMap<String, Vote> {
    let mut v = BTreeMap::new();
    for role in ["cto", "backend", "devops"] {
        v.insert(role.to_owned(), Vote::Approve);
    }
    v.insert(
        "cso".to_owned(),
        Vote::ApproveWithConditions {
            conditions: vec![CONDITION.to_owned()],
        },
    );
    v.insert("frontend".to_owned(), Vote::Abstain);
    v
}

const REVIEW: &str = "Analytics Dashboard Architecture Review";

/// Starts an org of the meeting chart hosting `roles` (the rest are
/// silent: nobody hosts them).
async fn start_members(
    b: &str,
    t: &Arc<dyn Transport>,
    s: &Arc<dyn StateStore>,
    org: &Name,
    roles: &[&'static str],
    votes: BTreeMap<String, BTreeMap<String, Vote>>,
) -> (crate::runtime::Org, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let votes = Arc::new(votes);
    let agents: Vec<(&str, Arc<dyn Agent>, usize)> = roles
        .iter()
        .map(|r| {
            let m = Member {
                role: r,
                seen: Arc::clone(&seen),
                votes: Arc::clone(&votes),
            };
            (*r, Arc::new(m) as Arc<dyn Agent>, 4)
        })
        .collect();
    let o = start_with(b, t, s, meeting_chart(b, org), suite_config(), agents).await;
    (o, seen)
}

async fn closed(b: &str, p: &Principal, id: &str) -> MeetingRecord {
    p.wait_meeting(id, CLOSES_WITHIN)
        .await
        .unwrap_or_else(|e| fail(b, format!("meeting {id}: {e}")))
}

/// The review, frontend silent (not hosted): the record in the write-up's
/// shape (frontend absent, not voting), and its three action items taken
/// as tasks by their agents, completed.
async fn silent_review(
    b: &str,
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) -> (MeetingRecord, Arc<Mutex<Seen>>) {
    let hosted = ["ceo", "cto", "backend", "devops", "cso"];
    let votes = BTreeMap::from([(REVIEW.to_owned(), review_votes())]);
    let (o, seen) = start_members(b, &t, &s, &org, &hosted, votes).await;
    let p = o.principal();
    let project = ProjectSpec::new("dashboard").artifact(ArtifactSpec::new("schema", "backend"));
    p.create_project(&project)
        .await
        .unwrap_or_else(|e| fail(b, e));
    let spec = MeetingSpec::new(REVIEW)
        .id("meeting-2026-0423-arch-review")
        .participants(PEOPLE)
        .agenda(AGENDA)
        .turn_timeout(TURN)
        .project("dashboard");
    let id = p
        .schedule_meeting("cto", &spec)
        .await
        .unwrap_or_else(|e| fail(b, e));
    let rec = closed(b, &p, &id).await;
    let json = rec.to_json();
    let expect_votes = json!({
        "cto": "approve", "backend": "approve", "devops": "approve",
        "cso": "approve_with_conditions",
    });
    if json["decision"] != DECISION
        || json["votes"] != expect_votes
        || json["conditions"] != json!([CONDITION])
        || json["action_items"] != json!(ACTIONS.map(|(a, t)| json!({ "agent": a, "task": t })))
        || json["meeting_id"] != "meeting-2026-0423-arch-review"
    {
        fail(b, format!("the record: {json:#}"));
    }
    // The decision is in the project's log, by the cto, naming the meeting.
    let log = p
        .project("dashboard")
        .await
        .unwrap_or_else(|e| fail(b, e))
        .decisions;
    let logged = log.iter().any(|d| {
        d.decision == DECISION
            && d.agent.as_str() == "cto"
            && d.meeting.as_deref() == Some(id.as_str())
            && Some(&d.decision_id) == rec.outcome.as_ref().and_then(|o| o.decision_id.as_ref())
    });
    if log.len() != 1 || !logged {
        fail(b, format!("the project's decision log: {log:?}"));
    }
    // The condition is linked to the cso's audit.
    if json["condition_links"][0]["action_item"] != 2 {
        fail(
            b,
            format!("the condition's link: {}", json["condition_links"]),
        );
    }
    let absent: Vec<&str> = rec
        .transcript
        .iter()
        .filter(|e| e.is_absent())
        .map(|e| e.role.as_str())
        .collect();
    if rec.transcript.len() != 15 || absent != ["frontend"; 3] {
        fail(b, format!("the transcript: {:?}", rec.transcript));
    }
    if json["absences"]["frontend"] != json!(AGENDA)
        || json["tally"]["absent"] != json!(["frontend"])
    {
        fail(
            b,
            format!("the absences: {} / {}", json["absences"], json["tally"]),
        );
    }
    // Turns in order: item by item, participants in the order given.
    let order: Vec<(usize, &str)> = rec
        .transcript
        .iter()
        .map(|e| (e.item, e.role.as_str()))
        .collect();
    let expected: Vec<(usize, &str)> = (0..3).flat_map(|i| PEOPLE.map(|r| (i, r))).collect();
    if order != expected {
        fail(b, format!("the turn order: {order:?}"));
    }
    // The action items run as tasks of their own agents, and complete.
    let done = eventually_some(
        b,
        "the three action items completed as tasks",
        CLOSES_WITHIN,
        Duration::from_millis(100),
        || {
            let s = Arc::clone(&s);
            let org = org.clone();
            async move {
                let tasks: Vec<_> = tasks_of(b, &s, &org)
                    .await
                    .into_iter()
                    .filter(|t| t.task_type.as_deref() == Some(ACTION_TASK_TYPE))
                    .collect();
                (tasks.len() == 3 && tasks.iter().all(|t| t.status == TaskStatus::Completed))
                    .then_some(tasks)
            }
        },
    )
    .await;
    for (agent, task) in ACTIONS {
        let ok = done.iter().any(|t| {
            t.assigned_to.as_str() == agent
                && t.assigned_by.as_str() == agent
                && t.title == task
                && t.input["meeting_id"] == "meeting-2026-0423-arch-review"
        });
        if !ok {
            fail(
                b,
                format!("no completed action item `{task}` of {agent}: {done:?}"),
            );
        }
    }
    let cso_task = done.iter().find(|t| t.assigned_to.as_str() == "cso");
    if cso_task.map(|t| t.input["conditions"].clone()) != Some(json!([CONDITION])) {
        fail(
            b,
            format!("the cso's action item carries no condition: {cso_task:?}"),
        );
    }
    {
        let seen = seen.lock().unwrap_or_else(|e| fail(b, e));
        // Sealed: no voter saw an outcome or a vote while voting; the
        // backend's second vote was refused, and its first counted.
        if seen.while_voting.len() != 4 || seen.while_voting.iter().any(|(_, o, v)| *o || *v) {
            fail(
                b,
                format!("what the voters saw while voting: {:?}", seen.while_voting),
            );
        }
        if seen.second_votes != ["already_voted"] {
            fail(
                b,
                format!("the backend's second vote: {:?}", seen.second_votes),
            );
        }
        // Each hosted participant's turn ran (a callback may run again
        // after a crash; the transcript, checked above, records it once).
        let mut turns = seen.turns.clone();
        turns.sort();
        turns.dedup();
        if turns.len() != 12 {
            fail(b, format!("the turns taken: {:?}", seen.turns));
        }
    }
    if p.meetings().await.map(|m| m.len()).ok() != Some(1) {
        fail(b, "the meeting is not listed");
    }
    o.shutdown().await;
    (rec, seen)
}

/// GenBrain's architecture review with frontend silent: it is recorded
/// absent for each turn and for the vote and never blocks the meeting;
/// the record has the write-up's decision, votes, condition (linked to the
/// cso's audit) and action items, the decision goes into the project's
/// log, which arrive as tasks of their agents
/// and complete; turns run item by item in the order given; no voter sees
/// an outcome or another's vote while voting, and a second vote is
/// refused; the meeting is listed.
pub async fn architecture_review_with_a_silent_participant(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    silent_review("architecture_review_with_a_silent_participant", t, s, org).await;
}

/// On tokio's paused clock: the silent participant's turns end exactly at
/// the turn timeout (each absence recorded `TURN` after the turn before).
pub async fn meeting_moves_on_exactly_at_the_turn_timeout(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "meeting_moves_on_exactly_at_the_turn_timeout";
    let (rec, _) = silent_review(B, t, s, org).await;
    let turn = chrono::TimeDelta::from_std(TURN).unwrap_or_else(|e| fail(B, e));
    for (i, e) in rec.transcript.iter().enumerate() {
        if !e.is_absent() {
            continue;
        }
        let Some(before) = i.checked_sub(1).and_then(|j| rec.transcript.get(j)) else {
            fail(B, "the first turn is absent");
        };
        if e.at - before.at != turn {
            fail(
                B,
                format!(
                    "turn {i} ended {:?} after the one before, not {TURN:?}",
                    e.at - before.at
                ),
            );
        }
    }
}

/// One meeting per rule, every participant hosted and answering at once:
/// a simple majority approves 3–2; unanimity rejects on one rejection; the
/// cso's veto rejects against a majority; a quorum of five with one
/// participant failing to vote (the vote closes at its timeout) records no
/// decision and escalates to the
/// cto's manager (the ceo hears of it); a tie the rule escalates does too,
/// and a tie the facilitator breaks goes its way. A role outside the
/// facilitator's `meets`, a facilitator that meets nobody and a title past
/// `MAX_TEXT` are refused.
pub async fn each_voting_rule(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: Name) {
    const B: &str = "each_voting_rule";
    let a = || Vote::Approve;
    let r = || Vote::Reject {
        reason: "no".into(),
    };
    let table = |vs: [(&str, Vote); 5]| -> BTreeMap<String, Vote> {
        vs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    let people5 = [
        ("cto", a()),
        ("backend", a()),
        ("frontend", a()),
        ("devops", r()),
        ("cso", r()),
    ];
    let unanimous = [
        ("cto", a()),
        ("backend", a()),
        ("frontend", a()),
        ("devops", a()),
        ("cso", r()),
    ];
    let vetoed = [
        ("cto", a()),
        ("backend", a()),
        ("frontend", a()),
        ("devops", a()),
        ("cso", r()),
    ];
    let tie = [
        ("cto", a()),
        ("backend", a()),
        ("frontend", r()),
        ("devops", r()),
        ("cso", Vote::Abstain),
    ];
    let votes = BTreeMap::from([
        ("rule majority".to_owned(), table(people5.clone())),
        ("rule unanimity".to_owned(), table(unanimous)),
        ("rule veto".to_owned(), table(vetoed)),
        ("rule quorum".to_owned(), table(people5)),
        ("rule tie escalates".to_owned(), table(tie.clone())),
        ("rule tie facilitator".to_owned(), table(tie)),
    ]);
    let hosted = ["ceo", "cto", "backend", "frontend", "devops", "cso"];
    let (o, seen) = start_members(B, &t, &s, &org, &hosted, votes).await;
    let p = o.principal();
    let cso = name(B, "cso");
    let rules = [
        (
            "rule majority",
            VotingRule::majority(),
            TallyResult::Approved,
        ),
        (
            "rule unanimity",
            VotingRule::unanimity(),
            TallyResult::Rejected,
        ),
        (
            "rule veto",
            VotingRule::majority().veto([cso.clone()]),
            TallyResult::Vetoed { by: cso },
        ),
        (
            "rule quorum",
            VotingRule::majority().quorum(5),
            TallyResult::NoQuorum,
        ),
        (
            "rule tie escalates",
            VotingRule::majority().tie(TieBreak::Escalate),
            TallyResult::Tied,
        ),
        (
            "rule tie facilitator",
            VotingRule::majority(),
            TallyResult::Approved,
        ),
    ];
    let mut ids = Vec::new();
    for (title, rule, _) in &rules {
        // Frontend fails to vote in the quorum meeting: the vote closes
        // when the turn timeout runs out, one short of its quorum.
        let wait = if *title == "rule quorum" {
            TURN
        } else {
            CLOSES_WITHIN
        };
        let spec = MeetingSpec::new(*title)
            .participants(PEOPLE)
            .agenda(["the one item"])
            .turn_timeout(wait)
            .rule(rule.clone());
        match p.schedule_meeting("cto", &spec).await {
            Ok(id) => ids.push(id),
            Err(e) => fail(B, format!("{title}: {e}")),
        }
    }
    for ((title, _, result), id) in rules.iter().zip(&ids) {
        let rec = closed(B, &p, id).await;
        let Some(outcome) = rec.outcome.as_ref() else {
            fail(B, format!("{title}: no outcome"));
        };
        let got = outcome.tally.as_ref().map(|t| t.result.clone());
        if got.as_ref() != Some(result) {
            fail(B, format!("{title}: {got:?}, not {result:?}"));
        }
        let decided = *result == TallyResult::Approved;
        if outcome.decision.is_some() != decided || rec.status != MeetingStatus::Closed {
            fail(B, format!("{title}: decision {:?}", outcome.decision));
        }
        let escalates = matches!(result, TallyResult::NoQuorum | TallyResult::Tied);
        let to = outcome.escalated_to.as_ref().map(Name::as_str);
        if to != escalates.then_some("ceo") {
            fail(B, format!("{title}: escalated to {to:?}"));
        }
    }
    let escalated = eventually_some(
        B,
        "the ceo hears of both escalations",
        CLOSES_WITHIN,
        Duration::from_millis(100),
        || {
            let seen = Arc::clone(&seen);
            async move {
                let e = seen.lock().ok()?.escalations.clone();
                (e.len() >= 2).then_some(e)
            }
        },
    )
    .await;
    if escalated.len() != 2 || escalated.iter().any(|(r, _)| r != "ceo") {
        fail(B, format!("the escalations: {escalated:?}"));
    }
    // A bad meeting is refused: a role outside the cto's `meets`.
    let bad = MeetingSpec::new("x")
        .participants(["cto", "ceo"])
        .agenda(["y"]);
    match p.schedule_meeting("cto", &bad).await {
        Err(MeetingError::NotAllowed { .. }) => {}
        other => fail(B, format!("a meeting with the ceo: {other:?}")),
    }
    // A facilitator that meets nobody; a title past MAX_TEXT.
    let alone = MeetingSpec::new("x").participants(["ceo"]).agenda(["y"]);
    match p.schedule_meeting("ceo", &alone).await {
        Err(MeetingError::InvalidInput { message }) if message.contains("meets nobody") => {}
        other => fail(
            B,
            format!("a meeting of the ceo, who meets nobody: {other:?}"),
        ),
    }
    let long = MeetingSpec::new("x".repeat(crate::meeting::MAX_TEXT + 1))
        .participants(["cto"])
        .agenda(["y"]);
    match p.schedule_meeting("cto", &long).await {
        Err(MeetingError::InvalidInput { .. }) => {}
        other => fail(B, format!("a title past MAX_TEXT: {other:?}")),
    }
    o.shutdown().await;
}

/// A meeting past its `max_duration` closes with what it has: frontend
/// (silent) holds its first turn past the meeting's end (the turn would
/// wait far longer); the meeting closes `max_duration`, not before, with
/// the turns taken before it and no decision (escalated to the cto's
/// manager: a decision was required), and no vote is taken.
pub async fn max_duration_closes_with_what_it_has(
    t: Arc<dyn Transport>,
    s: Arc<dyn StateStore>,
    org: Name,
) {
    const B: &str = "max_duration_closes_with_what_it_has";
    let hosted = ["ceo", "cto", "backend", "devops", "cso"];
    let (o, seen) = start_members(B, &t, &s, &org, &hosted, BTreeMap::new()).await;
    let p = o.principal();
    let max = Duration::from_secs(3);
    let spec = MeetingSpec::new(REVIEW)
        .participants(PEOPLE)
        .agenda(AGENDA)
        .turn_timeout(CLOSES_WITHIN)
        .max_duration(max);
    let id = p
        .schedule_meeting("cto", &spec)
        .await
        .unwrap_or_else(|e| fail(B, e));
    let rec = closed(B, &p, &id).await;
    let Some(outcome) = rec.outcome.as_ref() else {
        fail(B, "no outcome");
    };
    let lasted = rec.closed_at.map(|c| c - rec.created_at);
    let max_delta = chrono::TimeDelta::from_std(max).unwrap_or_else(|e| fail(B, e));
    if outcome.closed != Closed::MaxDuration
        || outcome.decision.is_some()
        || outcome.tally.is_some()
        || rec.proposal.is_some()
        || outcome.escalated_to.as_ref().map(Name::as_str) != Some("ceo")
        || lasted.is_none_or(|l| l < max_delta)
    {
        fail(B, format!("the close: {outcome:?} after {lasted:?}"));
    }
    // Only turns before frontend's first: it was not recorded absent (the
    // meeting ended during its turn).
    let roles: Vec<&str> = rec.transcript.iter().map(|e| e.role.as_str()).collect();
    if roles.len() > 2 || roles.iter().zip(["cto", "backend"]).any(|(a, b)| *a != b) {
        fail(B, format!("the transcript: {:?}", rec.transcript));
    }
    if seen.lock().map(|s| s.while_voting.len()).unwrap_or(1) != 0 {
        fail(B, "a vote was taken");
    }
    o.shutdown().await;
}
