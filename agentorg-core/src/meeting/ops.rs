//! Where a meeting lives, its messages, and what each move of its state
//! machine commits: scheduling, the next turn, the vote, the close (the
//! decision into the project's log, the action items to their agents, an
//! escalation) — from a `Context` and from the principal.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::records::{
    outcome_of, Closed, MeetingOutcome, MeetingRecord, MeetingStatus, Proposal, TranscriptEntry,
    INLINE_CONTRIBUTION,
};
use super::rules::Vote;
use super::{MeetingError, MeetingSpec, MAX_AGENDA};
use crate::blackboard::DecisionSpec;
use crate::envelope::{Kind, MessageId};
use crate::name::Name;
use crate::runtime::{from_doc, to_value, Context, Effects, Kernel, Principal, TimerRecord};
use crate::store::{
    CollectionPath, DocKey, Precondition, StateStoreExt, StoreError, Version, Write,
};

pub(crate) use super::CHANNEL;

/// The kind of the timers of a turn (or the vote) waiting for answers.
pub(crate) const TURN_TIMER: &str = "meeting-turn";
/// The kind of the timers of a meeting's `max_duration`.
pub(crate) const END_TIMER: &str = "meeting-end";

/// What a meeting message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    /// Facilitator to itself: open the meeting.
    Start,
    /// Facilitator to a participant: your turn.
    Turn,
    /// Participant to facilitator: my contribution (or none).
    Spoke,
    /// Facilitator to itself: draft the proposal.
    Propose,
    /// Facilitator to a participant: vote.
    Ballot,
    /// Participant to facilitator: I have voted (not how).
    Voted,
    /// Facilitator to a participant: take your action items.
    Actions,
    /// Facilitator to its manager: no decision, over to you.
    Escalated,
}

/// A meeting message's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Msg {
    pub(crate) meeting: String,
    pub(crate) op: Op,
    /// The turn it is about (for `Turn` and `Spoke`).
    #[serde(default)]
    pub(crate) turn: usize,
    /// The contribution's beginning (`Spoke`; `None`: none).
    #[serde(default)]
    pub(crate) said: Option<String>,
    /// Where the whole contribution is (`Spoke`, when long).
    #[serde(default)]
    pub(crate) full: Option<String>,
}

impl Msg {
    pub(crate) fn new(meeting: &str, op: Op, turn: usize) -> Self {
        Self {
            meeting: meeting.to_owned(),
            op,
            turn,
            said: None,
            full: None,
        }
    }
}

/// A turn timer's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Wait {
    pub(crate) meeting: String,
    pub(crate) turn: usize,
    /// Waiting for the votes, not a turn.
    pub(crate) vote: bool,
}

/// A ballot, as stored: `meetings/<id>/ballots/<role>`, written once by
/// its voter and read by nobody before the tally. The close writes one
/// with no vote for each participant who did not vote (so a ballot
/// committed after the tally read the ballots conflicts with the close:
/// either it is counted, or it is refused).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BallotDoc {
    pub(crate) role: Name,
    #[serde(default)]
    pub(crate) vote: Option<Vote>,
}

/// The longest text a meeting keeps in a field (a title, an agenda item, a
/// decision, a rationale, an action item, a condition, a reason), in bytes
/// of UTF-8. With the other bounds ([`MAX_PARTICIPANTS`], [`MAX_AGENDA`],
/// [`MAX_ACTION_ITEMS`], [`MAX_CONDITIONS`],
/// [`INLINE_CONTRIBUTION`](super::INLINE_CONTRIBUTION)), a meeting's
/// document stays under 1 MB, below Firestore's 1 MiB limit.
pub const MAX_TEXT: usize = 1_000;

/// The most participants a meeting has.
pub const MAX_PARTICIPANTS: usize = 12;

/// The most action items a proposal has.
pub const MAX_ACTION_ITEMS: usize = 20;

/// The most conditions one `approve_with_conditions` vote sets.
pub const MAX_CONDITIONS: usize = 3;

/// The longest contribution kept whole, in bytes: a longer one is cut
/// there.
pub const MAX_CONTRIBUTION: usize = 64 * 1024;

/// Whether `s` is too long for a meeting's field.
pub(crate) fn too_long(s: &str) -> bool {
    s.len() > MAX_TEXT
}

impl Proposal {
    /// Checks it for a meeting of `participants`: a decision of 1 to
    /// [`MAX_TEXT`] bytes, a rationale and action items of at most that, at
    /// most [`MAX_ACTION_ITEMS`] action items, each for a participant.
    pub fn check(&self, participants: &[Name]) -> Result<(), MeetingError> {
        if self.decision.trim().is_empty() || too_long(&self.decision) || too_long(&self.rationale)
        {
            return Err(invalid(format!(
                "a proposal's decision has 1 to {MAX_TEXT} bytes, its rationale at most {MAX_TEXT}"
            )));
        }
        if self.action_items.len() > MAX_ACTION_ITEMS {
            return Err(invalid(format!(
                "a proposal has at most {MAX_ACTION_ITEMS} action items, not {}",
                self.action_items.len()
            )));
        }
        for a in &self.action_items {
            if !participants.contains(&a.agent) {
                return Err(invalid(format!(
                    "the action item for `{}` is for a role not in the meeting",
                    a.agent
                )));
            }
            if a.task.trim().is_empty() || too_long(&a.task) {
                return Err(invalid(format!("an action item has 1 to {MAX_TEXT} bytes")));
            }
        }
        Ok(())
    }
}

impl Vote {
    /// Checks it: at most [`MAX_CONDITIONS`] conditions, each (and a
    /// rejection's reason) of at most [`MAX_TEXT`] bytes.
    pub fn check(&self) -> Result<(), MeetingError> {
        let texts: Vec<&String> = match self {
            Vote::ApproveWithConditions { conditions } => conditions.iter().collect(),
            Vote::Reject { reason } => vec![reason],
            _ => Vec::new(),
        };
        if texts.len() > MAX_CONDITIONS || texts.iter().any(|t| too_long(t)) {
            return Err(invalid(format!(
                "a vote has at most {MAX_CONDITIONS} conditions, each (and a reason) of at most {MAX_TEXT} bytes"
            )));
        }
        Ok(())
    }
}

pub(crate) fn channel() -> Result<Name, StoreError> {
    Name::new(CHANNEL).map_err(|e| StoreError::invalid(None, e.to_string()))
}

pub(crate) fn meeting_key(kernel: &Kernel, id: &str) -> Result<DocKey, StoreError> {
    kernel.collection("meetings")?.doc(id)
}

pub(crate) fn ballots(kernel: &Kernel, id: &str) -> Result<CollectionPath, StoreError> {
    meeting_key(kernel, id)?.subcollection("ballots")
}

fn contributions(kernel: &Kernel, id: &str) -> Result<CollectionPath, StoreError> {
    meeting_key(kernel, id)?.subcollection("contributions")
}

/// Reads meeting `id`, with its version.
pub(crate) async fn read(
    kernel: &Kernel,
    id: &str,
) -> Result<Option<(MeetingRecord, Version)>, StoreError> {
    kernel.read(&meeting_key(kernel, id)?).await
}

async fn read_known(kernel: &Kernel, id: &str) -> Result<MeetingRecord, MeetingError> {
    match read(kernel, id).await? {
        Some((rec, _)) => Ok(rec),
        None => Err(MeetingError::UnknownMeeting {
            meeting: id.to_owned(),
        }),
    }
}

/// Every meeting, oldest id first.
async fn list(kernel: &Kernel) -> Result<Vec<MeetingRecord>, MeetingError> {
    let mut out = Vec::new();
    for doc in kernel
        .store()
        .list_all(&kernel.collection("meetings")?)
        .await?
    {
        out.push(from_doc::<MeetingRecord>(&doc)?.0);
    }
    Ok(out)
}

/// Stages `msg` from `from` to `to`'s meeting channel.
pub(crate) fn send(
    kernel: &Kernel,
    effects: &mut Effects,
    from: &Name,
    to: &Name,
    msg: &Msg,
) -> Result<(), StoreError> {
    let env = kernel
        .envelope(from.clone(), Kind::Message, to_value(msg)?)
        .with_to(to.clone());
    effects.send(kernel.subjects().channel(to, &channel()?, from), env);
    Ok(())
}

/// Stages the write of `rec` over `version` (contended: a handler whose
/// meeting moved meanwhile runs again on what it is now).
pub(crate) fn put(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &MeetingRecord,
    version: Version,
) -> Result<(), StoreError> {
    effects.contended_write(Write::put(
        meeting_key(kernel, &rec.meeting_id)?,
        to_value(rec)?,
        Precondition::Version(version),
    ));
    Ok(())
}

fn invalid(message: impl Into<String>) -> MeetingError {
    MeetingError::InvalidInput {
        message: message.into(),
    }
}

fn millis(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// What scheduling `spec`, facilitated by `facilitator`, commits: the
/// meeting's document, its deadline's timer, and the facilitator's signal
/// to open it. Returns the meeting's id.
async fn schedule(
    kernel: &Kernel,
    by: &Name,
    facilitator: &Name,
    spec: &MeetingSpec,
) -> Result<(Effects, String), MeetingError> {
    let chart = kernel.chart();
    let meets = chart.role(facilitator).map(|r| r.meets().len());
    if chart.is_principal(facilitator) || meets.is_none() {
        return Err(invalid(format!(
            "the facilitator `{facilitator}` is not a role of the chart"
        )));
    }
    if meets == Some(0) {
        return Err(invalid(format!(
            "`{facilitator}` meets nobody: the chart's `meets` of `{facilitator}` is empty"
        )));
    }
    let id = match &spec.meeting_id {
        Some(id) => id.clone(),
        None => format!("meeting-{}", MessageId::new().as_str().to_ascii_lowercase()),
    };
    Name::new(&id).map_err(|e| invalid(format!("meeting id `{id}`: {e}")))?;
    if spec.title.trim().is_empty() || too_long(&spec.title) {
        return Err(invalid(format!(
            "a meeting's title has 1 to {MAX_TEXT} bytes"
        )));
    }
    if spec
        .agenda
        .iter()
        .any(|a| a.trim().is_empty() || too_long(a))
    {
        return Err(invalid(format!("an agenda item has 1 to {MAX_TEXT} bytes")));
    }
    if spec.agenda.is_empty() || spec.agenda.len() > MAX_AGENDA {
        return Err(invalid(format!(
            "a meeting has 1 to {MAX_AGENDA} agenda items, not {}",
            spec.agenda.len()
        )));
    }
    if spec.turn_timeout < Duration::from_millis(1) || spec.max_duration < Duration::from_millis(1)
    {
        return Err(invalid(
            "the turn timeout and max_duration must be 1 ms at least",
        ));
    }
    if spec.rule.quorum == Some(0) {
        return Err(invalid("a quorum of 0 votes is no quorum"));
    }
    let mut participants = Vec::new();
    for p in &spec.participants {
        let name = Name::new(p).map_err(|e| invalid(format!("participant `{p}`: {e}")))?;
        if participants.contains(&name) {
            return Err(invalid(format!("participant `{p}` is listed twice")));
        }
        if &name != facilitator && !chart.may_meet(facilitator, &name) {
            return Err(MeetingError::NotAllowed {
                facilitator: facilitator.clone(),
                participant: p.clone(),
            });
        }
        participants.push(name);
    }
    if participants.len() > MAX_PARTICIPANTS {
        return Err(invalid(format!(
            "a meeting has at most {MAX_PARTICIPANTS} participants, not {}",
            participants.len()
        )));
    }
    if !participants.contains(facilitator) {
        return Err(invalid(format!(
            "the facilitator `{facilitator}` is not among the participants"
        )));
    }
    if let Some(project) = &spec.project {
        crate::blackboard::read_project_exists(kernel, project)
            .await
            .map_err(|e| invalid(e.to_string()))?;
    }
    if spec.rule.quorum.is_some_and(|q| q > participants.len()) {
        return Err(invalid(format!(
            "a quorum of {} votes of {} participants is never met",
            spec.rule.quorum.unwrap_or_default(),
            participants.len()
        )));
    }
    if let Some(roles) = spec.rule.veto.iter().find(|r| !participants.contains(r)) {
        return Err(invalid(format!("veto role `{roles}` is not a participant")));
    }
    let now = kernel.now();
    let deadline = now
        .checked_add_signed(millis(spec.max_duration))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let rec = MeetingRecord {
        meeting_id: id.clone(),
        title: spec.title.clone(),
        facilitator: facilitator.clone(),
        participants,
        agenda: spec.agenda.clone(),
        decision_required: spec.decision_required,
        project: spec.project.clone(),
        rule: spec.rule.clone(),
        turn_timeout_ms: u64::try_from(spec.turn_timeout.as_millis()).unwrap_or(u64::MAX),
        deadline,
        status: MeetingStatus::Scheduled,
        turn: 0,
        waiting_until: None,
        transcript: Vec::new(),
        proposal: None,
        voted: Vec::new(),
        outcome: None,
        created_at: now,
        closed_at: None,
    };
    let mut effects = Effects::new();
    effects.contended_write(Write::put(
        meeting_key(kernel, &id)?,
        to_value(&rec)?,
        Precondition::MustNotExist,
    ));
    let end = TimerRecord::new(
        timer_kind(END_TIMER)?,
        facilitator.clone(),
        id.clone(),
        deadline,
        json!({ "meeting": id }),
    );
    effects.write(kernel.arm_timer(&end)?);
    send(
        kernel,
        &mut effects,
        by,
        facilitator,
        &Msg::new(&id, Op::Start, 0),
    )?;
    Ok((effects, id))
}

pub(crate) fn timer_kind(kind: &str) -> Result<Name, StoreError> {
    Name::new(kind).map_err(|e| StoreError::invalid(None, e.to_string()))
}

/// The timer of what `rec` waits for now (a turn, or the votes).
fn wait_timer(rec: &MeetingRecord) -> Result<Option<TimerRecord>, StoreError> {
    let Some(due) = rec.waiting_until else {
        return Ok(None);
    };
    let vote = rec.status == MeetingStatus::Voting;
    let key = if vote {
        format!("{}-vote", rec.meeting_id)
    } else {
        format!("{}-t{}", rec.meeting_id, rec.turn)
    };
    let payload = to_value(&Wait {
        meeting: rec.meeting_id.clone(),
        turn: rec.turn,
        vote,
    })?;
    Ok(Some(TimerRecord::new(
        timer_kind(TURN_TIMER)?,
        rec.facilitator.clone(),
        key,
        due,
        payload,
    )))
}

/// Stops waiting: cancels the timer of what `rec` waited for, unless it is
/// the one firing (`firing`: its removal is the kernel's).
pub(crate) fn stop_waiting(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
    firing: bool,
) -> Result<(), StoreError> {
    if !firing {
        if let Some(t) = wait_timer(rec)? {
            effects.write(kernel.cancel_timer(&t)?);
        }
    }
    rec.waiting_until = None;
    Ok(())
}

/// Starts waiting (for the turn under way, or the votes): arms its timer.
fn wait(kernel: &Kernel, effects: &mut Effects, rec: &mut MeetingRecord) -> Result<(), StoreError> {
    let due = kernel
        .now()
        .checked_add_signed(chrono::TimeDelta::milliseconds(
            i64::try_from(rec.turn_timeout_ms).unwrap_or(i64::MAX),
        ))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    rec.waiting_until = Some(due);
    if let Some(t) = wait_timer(rec)? {
        effects.write(kernel.arm_timer(&t)?);
    }
    Ok(())
}

/// Opens the meeting: the first turn.
pub(crate) fn open(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
) -> Result<(), StoreError> {
    rec.status = MeetingStatus::Turns;
    rec.turn = 0;
    give_turn(kernel, effects, rec)
}

fn give_turn(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
) -> Result<(), StoreError> {
    if let Some((_, who)) = rec.turn_of(rec.turn) {
        let who = who.clone();
        send(
            kernel,
            effects,
            &rec.facilitator,
            &who,
            &Msg::new(&rec.meeting_id, Op::Turn, rec.turn),
        )?;
        wait(kernel, effects, rec)?;
    }
    Ok(())
}

/// Records the turn under way (`said`: `None` absent) and moves on: the
/// next turn, the proposal, or (no decision required) the close.
pub(crate) async fn turn_taken(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
    said: Option<String>,
    full: Option<String>,
    firing: bool,
) -> Result<(), StoreError> {
    let Some((item, who)) = rec.turn_of(rec.turn) else {
        return Ok(());
    };
    let entry = TranscriptEntry {
        item,
        role: who.clone(),
        said: said.map(|s| excerpt(&s)),
        full,
        at: kernel.now(),
    };
    stop_waiting(kernel, effects, rec, firing)?;
    rec.transcript.push(entry);
    rec.turn += 1;
    if rec.turn < rec.turns() {
        return give_turn(kernel, effects, rec);
    }
    if rec.decision_required {
        rec.status = MeetingStatus::Proposing;
        let me = rec.facilitator.clone();
        return send(
            kernel,
            effects,
            &me,
            &me,
            &Msg::new(&rec.meeting_id, Op::Propose, rec.turn),
        );
    }
    close(kernel, effects, rec, Closed::Completed, Ballots::default()).await
}

/// The idempotency key of the task taken from action item `i` of meeting
/// `id`.
pub(crate) fn action_key(id: &str, i: usize) -> String {
    format!("{id}-action-{i}")
}

/// The first [`INLINE_CONTRIBUTION`] characters of `s`.
pub(crate) fn excerpt(s: &str) -> String {
    s.chars().take(INLINE_CONTRIBUTION).collect()
}

/// Where a participant keeps a long contribution (whole), when it is
/// longer than the transcript keeps: the write, and its reference.
pub(crate) fn keep_whole(
    kernel: &Kernel,
    rec: &MeetingRecord,
    said: &str,
) -> Result<Option<(Write, String)>, StoreError> {
    if said.chars().count() <= INLINE_CONTRIBUTION {
        return Ok(None);
    }
    let id = format!("t{}", rec.turn);
    let key = contributions(kernel, &rec.meeting_id)?.doc(&id)?;
    let mut end = said.len().min(MAX_CONTRIBUTION);
    while !said.is_char_boundary(end) {
        end -= 1;
    }
    let write = Write::put(
        key,
        json!({ "turn": rec.turn, "said": &said[..end], "cut": end < said.len() }),
        Precondition::None,
    );
    Ok(Some((write, format!("contributions/{id}"))))
}

/// Puts `proposal` to the vote: a ballot to every participant.
pub(crate) fn open_vote(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
    proposal: Proposal,
) -> Result<(), StoreError> {
    rec.status = MeetingStatus::Voting;
    rec.proposal = Some(proposal);
    for p in rec.participants.clone() {
        send(
            kernel,
            effects,
            &rec.facilitator,
            &p,
            &Msg::new(&rec.meeting_id, Op::Ballot, rec.turn),
        )?;
    }
    wait(kernel, effects, rec)
}

/// The ballot box of a meeting, as read.
#[derive(Debug, Default)]
pub(crate) struct Ballots {
    /// The votes cast, by voter.
    pub(crate) votes: BTreeMap<Name, Vote>,
    /// Every ballot document there (by its id: the voter), a vote in it or
    /// not, readable or not.
    pub(crate) present: std::collections::BTreeSet<String>,
}

/// The sealed ballots cast in `id` (read only to count them, and at the
/// tally). An unreadable ballot counts as absent.
pub(crate) async fn read_ballots(kernel: &Kernel, id: &str) -> Result<Ballots, StoreError> {
    let mut out = Ballots::default();
    for doc in kernel.store().list_all(&ballots(kernel, id)?).await? {
        out.present.insert(doc.key.id().to_owned());
        match from_doc::<BallotDoc>(&doc) {
            Ok((
                BallotDoc {
                    role,
                    vote: Some(v),
                },
                _,
            )) => {
                out.votes.insert(role, v);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(meeting = %id, ballot = %doc.key, error = %e, "an unreadable ballot counts as absent");
            }
        }
    }
    Ok(out)
}

/// Closes the meeting with `ballots` (the ballot box as read; empty when
/// there was no vote): the outcome, the decision into the project's log,
/// each action item to its agent, the escalation to the facilitator's
/// manager.
pub(crate) async fn close(
    kernel: &Kernel,
    effects: &mut Effects,
    rec: &mut MeetingRecord,
    closed: Closed,
    ballots: Ballots,
) -> Result<(), StoreError> {
    let Ballots { votes, present } = ballots;
    let chart = kernel.chart();
    let manager = chart.manager_of(&rec.facilitator).cloned();
    let mut outcome = if rec.status == MeetingStatus::Voting {
        // Seal the ballot box: a ballot committed after `votes` was read
        // conflicts with this close (which then reads them again).
        for p in rec
            .participants
            .iter()
            .filter(|p| !present.contains(p.as_str()))
        {
            let none = BallotDoc {
                role: p.clone(),
                vote: None,
            };
            effects.contended_write(Write::put(
                self::ballots(kernel, &rec.meeting_id)?.doc(p.as_str())?,
                to_value(&none)?,
                Precondition::MustNotExist,
            ));
        }
        outcome_of(rec, votes, manager.as_ref(), closed)
    } else {
        MeetingOutcome {
            closed,
            decision: None,
            votes: BTreeMap::new(),
            tally: None,
            conditions: Vec::new(),
            action_items: Vec::new(),
            // A decision was required and no vote was taken (no proposal,
            // or `max_duration` before the vote): over to the manager.
            escalated_to: if rec.decision_required {
                manager.clone()
            } else {
                None
            },
            decision_id: None,
        }
    };
    let me = rec.facilitator.clone();
    if closed != Closed::MaxDuration {
        // Its deadline's timer has nothing left to do (the end timer that
        // fires removes its own record).
        let end = TimerRecord::new(
            timer_kind(END_TIMER)?,
            me.clone(),
            rec.meeting_id.clone(),
            rec.deadline,
            json!({ "meeting": rec.meeting_id }),
        );
        effects.write(kernel.cancel_timer(&end)?);
    }
    if let (Some(decision), Some(project)) = (&outcome.decision, &rec.project) {
        let rationale = rec
            .proposal
            .as_ref()
            .map(|p| p.rationale.clone())
            .unwrap_or_default();
        let spec = DecisionSpec::new(decision.clone(), rationale).meeting(rec.meeting_id.clone());
        match crate::blackboard::decision_effects(kernel, &me, project, spec).await {
            Ok((e, id)) => {
                effects.extend(e);
                outcome.decision_id = Some(id);
            }
            Err(crate::blackboard::BoardError::Store(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(meeting = %rec.meeting_id, project = %project, error = %e, "the meeting's decision could not go into the project's log");
            }
        }
    }
    let mut agents: Vec<&Name> = outcome.action_items.iter().map(|a| &a.agent).collect();
    agents.sort();
    agents.dedup();
    for agent in agents {
        send(
            kernel,
            effects,
            &me,
            agent,
            &Msg::new(&rec.meeting_id, Op::Actions, 0),
        )?;
    }
    if let Some(to) = &outcome.escalated_to {
        if !chart.is_principal(to) {
            send(
                kernel,
                effects,
                &me,
                to,
                &Msg::new(&rec.meeting_id, Op::Escalated, 0),
            )?;
        }
    }
    // Who voted, as counted.
    rec.voted = rec
        .participants
        .iter()
        .filter(|p| outcome.votes.contains_key(*p))
        .cloned()
        .collect();
    rec.outcome = Some(outcome);
    rec.status = MeetingStatus::Closed;
    rec.closed_at = Some(kernel.now());
    Ok(())
}

/// The meetings' operations of a handler's [`Context`].
impl Context {
    /// Schedules a meeting this role facilitates, when the handler's
    /// outcome is committed; returns its id. Every other participant must
    /// be in this role's `meets`.
    pub async fn schedule_meeting(&self, spec: &MeetingSpec) -> Result<String, MeetingError> {
        let (effects, id) = schedule(self.kernel(), self.role(), self.role(), spec).await?;
        if self
            .kernel()
            .store()
            .get(&meeting_key(self.kernel(), &id)?)
            .await?
            .is_some()
        {
            return Err(MeetingError::Exists { meeting: id });
        }
        self.with_effects(|e, _| {
            e.extend(effects);
        });
        Ok(id)
    }

    /// Reads meeting `id` (the votes only once it is closed: the ballots
    /// are sealed until the tally).
    pub async fn meeting(&self, id: &str) -> Result<MeetingRecord, MeetingError> {
        read_known(self.kernel(), id).await
    }

    /// Casts this role's vote in meeting `id`, with the handler's outcome:
    /// sealed (written once, read by nobody before the tally; the
    /// facilitator hears only that it voted). Refused if the meeting is not
    /// voting or this role is not a participant
    /// ([`MeetingError::NotVoting`]), and if it voted already, in this call
    /// or before ([`MeetingError::AlreadyVoted`]): a vote is never changed.
    /// Inside [`on_meeting_ballot`](crate::agent::Agent::on_meeting_ballot),
    /// a vote cast this way is the one that counts (the callback's return
    /// is then not cast again).
    pub async fn vote(&self, id: &str, vote: Vote) -> Result<(), MeetingError> {
        let kernel = self.kernel();
        let me = self.role().clone();
        let rec = read_known(kernel, id).await?;
        if rec.status != MeetingStatus::Voting || !rec.participants.contains(&me) {
            return Err(MeetingError::NotVoting {
                meeting: id.to_owned(),
                role: me,
                status: rec.status,
            });
        }
        let key = ballots(kernel, id)?.doc(me.as_str())?;
        let already = MeetingError::AlreadyVoted {
            meeting: id.to_owned(),
            role: me.clone(),
        };
        if voted_here(self, id) {
            return Err(already);
        }
        if let Some((b, _)) = kernel.read::<BallotDoc>(&key).await? {
            // No vote in it: the close sealed the box meanwhile.
            return Err(match b.vote {
                Some(_) => already,
                None => MeetingError::NotVoting {
                    meeting: id.to_owned(),
                    role: me,
                    status: MeetingStatus::Closed,
                },
            });
        }
        vote.check()?;
        let doc = to_value(&BallotDoc {
            role: me.clone(),
            vote: Some(vote),
        })?;
        self.with_effects(|effects, ext| {
            ext.get_or_default::<VotesCast>().0.push(id.to_owned());
            effects.contended_write(Write::put(key, doc, Precondition::MustNotExist));
            send(
                kernel,
                effects,
                &me,
                &rec.facilitator,
                &Msg::new(id, Op::Voted, rec.turn),
            )
        })?;
        Ok(())
    }
}

/// The meetings a handler call voted in (with [`Context::vote`]).
#[derive(Debug, Default)]
pub(crate) struct VotesCast(pub(crate) Vec<String>);

/// Whether this call voted in meeting `id` already.
pub(crate) fn voted_here(cx: &Context, id: &str) -> bool {
    cx.with_effects(|_, ext| {
        ext.get::<VotesCast>()
            .is_some_and(|v| v.0.iter().any(|m| m == id))
    })
}

/// The meetings' operations of the principal.
impl Principal {
    /// Schedules a meeting facilitated by `facilitator` (a role, which must
    /// be among the participants; every other must be in its `meets`);
    /// returns its id.
    pub async fn schedule_meeting(
        &self,
        facilitator: &str,
        spec: &MeetingSpec,
    ) -> Result<String, MeetingError> {
        let f = Name::new(facilitator)
            .map_err(|e| invalid(format!("facilitator `{facilitator}`: {e}")))?;
        let (effects, id) = schedule(&self.kernel, self.name(), &f, spec).await?;
        match self.kernel.commit(effects).await {
            Err(e) if e.is_precondition_failure() => Err(MeetingError::Exists { meeting: id }),
            r => r.map(|()| id).map_err(Into::into),
        }
    }

    /// Reads meeting `id` (the votes only once it is closed).
    pub async fn meeting(&self, id: &str) -> Result<MeetingRecord, MeetingError> {
        read_known(&self.kernel, id).await
    }

    /// Every meeting, scheduled, under way or closed.
    pub async fn meetings(&self) -> Result<Vec<MeetingRecord>, MeetingError> {
        list(&self.kernel).await
    }

    /// The tasks taken from closed meeting `id`'s action items, in the
    /// record's order (`None`: not taken yet).
    pub async fn meeting_actions(
        &self,
        id: &str,
    ) -> Result<Vec<Option<crate::hierarchy::TaskRecord>>, MeetingError> {
        let rec = read_known(&self.kernel, id).await?;
        let mut out = Vec::new();
        for (i, item) in rec
            .outcome
            .iter()
            .flat_map(|o| o.action_items.iter())
            .enumerate()
        {
            let key = action_key(id, i);
            out.push(crate::hierarchy::task_by_key(&self.kernel, &item.agent, &key).await?);
        }
        Ok(out)
    }

    /// Waits until meeting `id` is closed, up to `timeout`, and returns it.
    pub async fn wait_meeting(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<MeetingRecord, MeetingError> {
        let waited = async {
            loop {
                let rec = read_known(&self.kernel, id).await?;
                if rec.is_closed() {
                    return Ok(rec);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(timeout, waited)
            .await
            .unwrap_or_else(|_| {
                Err(MeetingError::Timeout {
                    meeting: id.to_owned(),
                    waited: timeout,
                })
            })
    }
}
