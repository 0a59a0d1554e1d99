//! Where a meeting lives, its messages, and what each move of its state
//! machine commits: the next turn, the vote, the close (the decision into
//! the project's log, the action items to their agents, an escalation).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::records::{
    outcome_of, Closed, MeetingOutcome, MeetingRecord, MeetingStatus, Proposal, TranscriptEntry,
    INLINE_CONTRIBUTION,
};
use super::rules::Vote;
use super::MAX_CONTRIBUTION;
use crate::blackboard::DecisionSpec;
use crate::name::Name;
use crate::runtime::{from_doc, to_value, Effects, Kernel, TimerRecord};
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

/// Stages `msg` from `from` to `to`'s meeting channel.
pub(crate) fn send(
    kernel: &Kernel,
    effects: &mut Effects,
    from: &Name,
    to: &Name,
    msg: &Msg,
) -> Result<(), StoreError> {
    kernel.send_on_channel(effects, from, to, &channel()?, msg)
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
