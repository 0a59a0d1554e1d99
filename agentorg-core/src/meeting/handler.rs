//! The meetings' handler of each role's meeting channel — the
//! facilitator's moves (open, record a turn, propose, count the voters,
//! close) and the participants' (speak, vote, take the action items) — and
//! the timers of turns, votes and `max_duration`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::ops::{self, BallotDoc, Msg, Op, Wait};
use super::records::{Closed, MeetingRecord, MeetingStatus};
use super::{MeetingBallot, MeetingCallbacks, MeetingTurn, ACTION_TASK_TYPE};
use crate::chart::OrgChart;
use crate::envelope::{Envelope, Kind};
use crate::hierarchy::TaskSpec;
use crate::name::Name;
use crate::runtime::{
    from_json, to_value, Claimed, Effects, Fault, Handler, HostedRole, Kernel, Reason, Settle,
    TimerHandler, TimerRecord,
};
use crate::store::{Precondition, Version, Write};
use crate::subject::{Route, SubjectPattern, Subjects};

fn callbacks(host: &HostedRole) -> Option<&Arc<dyn MeetingCallbacks>> {
    host.app::<Arc<dyn MeetingCallbacks>>()
}

fn message(env: &Envelope) -> Option<Msg> {
    from_json(&env.payload).ok()
}

/// Takes every meeting role's meeting channel (on its inbox consumer).
#[derive(Debug)]
pub(crate) struct MeetingHandler;

#[async_trait]
impl Handler for MeetingHandler {
    fn name(&self) -> &'static str {
        "meetings"
    }

    fn subjects(&self, subjects: &Subjects, chart: &OrgChart, role: &Name) -> Vec<SubjectPattern> {
        if !super::serves(chart, role) {
            return Vec::new();
        }
        ops::channel()
            .map(|c| vec![subjects.channel_any(role, &c)])
            .unwrap_or_default()
    }

    fn admit(&self, host: &HostedRole, env: &Envelope, _route: &Route) -> Result<(), Reason> {
        if env.kind != Kind::Message || message(env).is_none() {
            return Err(Reason::new("malformed", "not a meeting message"));
        }
        let chart = host.kernel().chart();
        let role = host.role();
        if !chart.meeting_contacts(&env.from).contains(role) {
            return Err(Reason::new(
                "not_allowed",
                format!("`{}` may not send meeting messages to `{role}`: the chart's `meets` does not join them", env.from),
            ));
        }
        if callbacks(host).is_none() {
            return Err(Reason::new(
                "not_hosted",
                format!("`{role}` hosts no code for meetings"),
            ));
        }
        Ok(())
    }

    async fn handle(&self, delivery: Claimed<'_>) -> Result<Settle, Fault> {
        let (Some(cb), Some(msg)) = (
            callbacks(delivery.host()).cloned(),
            message(delivery.envelope()),
        ) else {
            return delivery
                .dead_letter(Reason::new("not_hosted", "no meeting callbacks"), None)
                .await;
        };
        let kernel = delivery.kernel();
        let Some((rec, version)) = ops::read(kernel, &msg.meeting).await? else {
            tracing::warn!(meeting = %msg.meeting, "a meeting message for no recorded meeting; dropped");
            return delivery.done().await;
        };
        let from = &delivery.envelope().from;
        let role = delivery.role();
        // The facilitator's moves come from itself or a participant; the
        // others' from the facilitator.
        let facilitating = &rec.facilitator == role;
        // Its own signals only from itself (Start from whoever scheduled
        // it: itself or the principal).
        let chart = kernel.chart();
        let own = match msg.op {
            Op::Start => from == role || chart.is_principal(from),
            Op::Propose => from == role,
            _ => true,
        };
        match msg.op {
            Op::Start | Op::Spoke | Op::Voted | Op::Propose if facilitating && own => {
                facilitate(&delivery, &*cb, rec, version, msg).await
            }
            Op::Start | Op::Propose => delivery.done().await,
            _ if from != &rec.facilitator => delivery.done().await,
            Op::Turn => speak(&delivery, &*cb, rec, msg).await,
            Op::Ballot => vote(&delivery, &*cb, rec).await,
            Op::Actions => take_actions(&delivery, rec).await,
            Op::Escalated => escalated(&delivery, &*cb, rec).await,
            _ => delivery.done().await,
        }
    }
}

/// The facilitator's moves: open, record a turn, count a voter, propose.
/// A message that does not fit where the meeting stands (handled already,
/// or overtaken by a timeout) changes nothing.
async fn facilitate(
    delivery: &Claimed<'_>,
    cb: &dyn MeetingCallbacks,
    mut rec: MeetingRecord,
    version: Version,
    msg: Msg,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let from = &delivery.envelope().from;
    let mut effects = Effects::new();
    match msg.op {
        Op::Start if rec.status == MeetingStatus::Scheduled => {
            ops::open(kernel, &mut effects, &mut rec)?;
        }
        Op::Spoke
            if rec.status == MeetingStatus::Turns
                && rec.turn == msg.turn
                && rec.turn_of(msg.turn).is_some_and(|(_, who)| who == from) =>
        {
            // Whole in the participant's store document when it was cut
            // short (the reference is the facilitator's, not the message's).
            let full = msg.full.map(|_| format!("contributions/t{}", msg.turn));
            let said = msg.said.map(|s| ops::excerpt(&s));
            ops::turn_taken(kernel, &mut effects, &mut rec, said, full, false).await?;
        }
        Op::Voted
            if rec.status == MeetingStatus::Voting
                && rec.participants.contains(from)
                && !rec.voted.contains(from) =>
        {
            let ballots = ops::read_ballots(kernel, &rec.meeting_id).await?;
            rec.voted = rec
                .participants
                .iter()
                .filter(|p| ballots.present.contains(p.as_str()))
                .cloned()
                .collect();
            if rec.voted.len() == rec.participants.len() {
                ops::stop_waiting(kernel, &mut effects, &mut rec, false)?;
                ops::close(kernel, &mut effects, &mut rec, Closed::Completed, ballots).await?;
            }
        }
        Op::Propose if rec.status == MeetingStatus::Proposing => {
            return propose(delivery, cb, rec, version).await;
        }
        _ => return delivery.done().await,
    }
    ops::put(kernel, &mut effects, &rec, version)?;
    delivery.commit_all(effects).await
}

/// The facilitator drafts its proposal and puts it to the vote; no
/// proposal (or a failure to make one) closes the meeting without a
/// decision.
async fn propose(
    delivery: &Claimed<'_>,
    cb: &dyn MeetingCallbacks,
    mut rec: MeetingRecord,
    version: Version,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let cx = delivery.context(None);
    let r = delivery.run(cb.on_meeting_proposal(&cx, rec.clone())).await;
    let (mut effects, _) = cx.take_effects();
    let proposal = match r {
        Ok(Some(p)) => match p.check(&rec.participants) {
            Err(why) => {
                tracing::warn!(meeting = %rec.meeting_id, "the facilitator's proposal is refused ({why}); no proposal");
                None
            }
            Ok(()) => Some(p),
        },
        Ok(None) => None,
        Err(e) if e.is_retryable() => return delivery.retry_or_dead_letter(e, None).await,
        Err(e) => {
            delivery.count_failure();
            tracing::warn!(meeting = %rec.meeting_id, error = %crate::runtime::describe(&e), "the facilitator made no proposal");
            effects = Effects::new();
            None
        }
    };
    match proposal {
        Some(p) => ops::open_vote(kernel, &mut effects, &mut rec, p)?,
        None => {
            let none = Default::default();
            ops::close(kernel, &mut effects, &mut rec, Closed::NoProposal, none).await?;
        }
    }
    ops::put(kernel, &mut effects, &rec, version)?;
    delivery.commit_all(effects).await
}

/// A participant's turn: its contribution goes back to the facilitator (a
/// long one kept in the store, by reference); a permanent failure is
/// an absence.
async fn speak(
    delivery: &Claimed<'_>,
    cb: &dyn MeetingCallbacks,
    rec: MeetingRecord,
    msg: Msg,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let me = delivery.role();
    let Some((item, who)) = rec.turn_of(msg.turn) else {
        return delivery.done().await;
    };
    if rec.status != MeetingStatus::Turns || rec.turn != msg.turn || who != me {
        return delivery.done().await;
    }
    let turn = MeetingTurn {
        meeting_id: rec.meeting_id.clone(),
        title: rec.title.clone(),
        item,
        agenda_item: rec.agenda[item].clone(),
        transcript: rec.transcript.clone(),
    };
    let cx = delivery.context(None);
    let r = delivery.run(cb.on_meeting_turn(&cx, turn)).await;
    let (mut effects, _) = cx.take_effects();
    let mut reply = Msg::new(&rec.meeting_id, Op::Spoke, msg.turn);
    match r {
        Ok(said) => {
            if let Some((write, full)) = ops::keep_whole(kernel, &rec, &said)? {
                effects.write(write);
                reply.full = Some(full);
            }
            reply.said = Some(ops::excerpt(&said));
        }
        Err(e) if e.is_retryable() => return delivery.retry_or_dead_letter(e, None).await,
        Err(e) => {
            delivery.count_failure();
            tracing::warn!(meeting = %rec.meeting_id, error = %crate::runtime::describe(&e), "a participant could not take its turn; recorded absent");
            effects = Effects::new();
        }
    }
    ops::send(kernel, &mut effects, me, &rec.facilitator, &reply)?;
    delivery.commit_all(effects).await
}

/// A participant's vote: its ballot is written once, sealed (only the
/// tally reads it), and the facilitator hears that it voted — not how.
async fn vote(
    delivery: &Claimed<'_>,
    cb: &dyn MeetingCallbacks,
    rec: MeetingRecord,
) -> Result<Settle, Fault> {
    let kernel = delivery.kernel();
    let me = delivery.role();
    let (Some(proposal), true) = (
        rec.proposal.clone(),
        rec.status == MeetingStatus::Voting && rec.participants.contains(me),
    ) else {
        return delivery.done().await;
    };
    let key = ops::ballots(kernel, &rec.meeting_id)?.doc(me.as_str())?;
    if kernel.store().get(&key).await?.is_some() {
        return delivery.done().await;
    }
    let ballot = MeetingBallot {
        meeting_id: rec.meeting_id.clone(),
        title: rec.title.clone(),
        proposal,
        transcript: rec.transcript.clone(),
    };
    let cx = delivery.context(None);
    let r = delivery.run(cb.on_meeting_ballot(&cx, ballot)).await;
    let cast = super::api::voted_here(&cx, &rec.meeting_id);
    let (mut effects, _) = cx.take_effects();
    match r {
        Ok(_) if cast => delivery.commit_all(effects).await,
        Ok(vote) if vote.check().is_err() => {
            tracing::warn!(meeting = %rec.meeting_id, "a participant's vote is refused (too long, or too many conditions); recorded absent");
            delivery.done().await
        }
        Ok(vote) => {
            let doc = BallotDoc {
                role: me.clone(),
                vote: Some(vote),
            };
            effects.contended_write(Write::put(key, to_value(&doc)?, Precondition::MustNotExist));
            let voted = Msg::new(&rec.meeting_id, Op::Voted, rec.turn);
            ops::send(kernel, &mut effects, me, &rec.facilitator, &voted)?;
            delivery.commit_all(effects).await
        }
        Err(e) if e.is_retryable() => delivery.retry_or_dead_letter(e, None).await,
        Err(e) => {
            delivery.count_failure();
            tracing::warn!(meeting = %rec.meeting_id, error = %crate::runtime::describe(&e), "a participant could not vote; recorded absent");
            delivery.done().await
        }
    }
}

/// A participant takes its own action items from the closed record, as
/// tasks of its own (once each: keyed by meeting and item).
async fn take_actions(delivery: &Claimed<'_>, rec: MeetingRecord) -> Result<Settle, Fault> {
    let me = delivery.role().clone();
    let Some(outcome) = rec.outcome.as_ref().filter(|_| rec.is_closed()) else {
        return delivery.done().await;
    };
    let cx = delivery.context(None);
    let r = async {
        for (i, item) in outcome.action_items.iter().enumerate() {
            if item.agent != me {
                continue;
            }
            let conditions: Vec<&str> = outcome
                .conditions
                .iter()
                .filter(|c| c.action_item == i)
                .map(|c| c.condition.as_str())
                .collect();
            let spec = TaskSpec::new(item.task.clone())
                .task_type(ACTION_TASK_TYPE)
                .input(json!({
                    "meeting_id": rec.meeting_id,
                    "action_item": i,
                    "conditions": conditions,
                    "decision": outcome.decision,
                }))
                .idempotency_key(ops::action_key(&rec.meeting_id, i));
            cx.delegate(me.as_str(), spec).await?;
        }
        Ok(())
    }
    .await;
    delivery.settle_call(&cx, r).await
}

/// The facilitator's manager hears of a meeting that escalated to it.
async fn escalated(
    delivery: &Claimed<'_>,
    cb: &dyn MeetingCallbacks,
    rec: MeetingRecord,
) -> Result<Settle, Fault> {
    let me = delivery.role();
    let to_me = rec
        .outcome
        .as_ref()
        .is_some_and(|o| o.escalated_to.as_ref() == Some(me));
    if !to_me {
        return delivery.done().await;
    }
    let cx = delivery.context(None);
    let r = delivery.run(cb.on_meeting_escalation(&cx, rec)).await;
    delivery.settle_call(&cx, r).await
}

/// A turn (or the vote) waited its time: the participant is recorded
/// absent and the meeting moves on (the vote is counted with the ballots
/// cast).
#[derive(Debug)]
pub(crate) struct TurnTimer;

#[async_trait]
impl TimerHandler for TurnTimer {
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let mut effects = Effects::new();
        let Ok(w) = from_json::<Wait>(&timer.payload) else {
            return Ok(effects);
        };
        let Some((mut rec, version)) = ops::read(kernel, &w.meeting).await? else {
            return Ok(effects);
        };
        if w.vote && rec.status == MeetingStatus::Voting {
            ops::stop_waiting(kernel, &mut effects, &mut rec, true)?;
            let ballots = ops::read_ballots(kernel, &rec.meeting_id).await?;
            ops::close(kernel, &mut effects, &mut rec, Closed::Completed, ballots).await?;
        } else if !w.vote && rec.status == MeetingStatus::Turns && rec.turn == w.turn {
            ops::turn_taken(kernel, &mut effects, &mut rec, None, None, true).await?;
        } else {
            return Ok(effects);
        }
        ops::put(kernel, &mut effects, &rec, version)?;
        Ok(effects)
    }
}

/// A meeting's `max_duration` ran out: it closes with what it has (the
/// ballots cast, if it was voting; no decision otherwise).
#[derive(Debug)]
pub(crate) struct EndTimer;

#[async_trait]
impl TimerHandler for EndTimer {
    async fn fire(&self, kernel: &Kernel, timer: &TimerRecord) -> Result<Effects, Fault> {
        let mut effects = Effects::new();
        let Some(id) = timer.payload["meeting"].as_str() else {
            return Ok(effects);
        };
        let Some((mut rec, version)) = ops::read(kernel, id).await? else {
            return Ok(effects);
        };
        if rec.is_closed() {
            return Ok(effects);
        }
        let ballots = if rec.status == MeetingStatus::Voting {
            ops::read_ballots(kernel, id).await?
        } else {
            Default::default()
        };
        ops::stop_waiting(kernel, &mut effects, &mut rec, false)?;
        ops::close(kernel, &mut effects, &mut rec, Closed::MaxDuration, ballots).await?;
        ops::put(kernel, &mut effects, &rec, version)?;
        Ok(effects)
    }
}
