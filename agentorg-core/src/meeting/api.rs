//! The meetings' operations: scheduling (what it commits), reading and
//! listing, voting — from a `Context` and from the principal.

use std::time::Duration;

use serde_json::json;

use super::limits::{invalid, too_long};
use super::ops::{
    action_key, ballots, meeting_key, read, send, timer_kind, BallotDoc, Msg, Op, END_TIMER,
};
use super::records::{MeetingRecord, MeetingStatus};
use super::rules::Vote;
use super::{MeetingError, MeetingSpec, MAX_AGENDA, MAX_PARTICIPANTS, MAX_TEXT};
use crate::envelope::MessageId;
use crate::name::Name;
use crate::runtime::{from_doc, to_value, Context, Effects, Kernel, Principal, TimerRecord};
use crate::store::{Precondition, StateStoreExt, Write};

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
            .map_err(|e| match e {
                crate::blackboard::BoardError::Store(e) => MeetingError::Store(e),
                e => invalid(e.to_string()),
            })?;
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
    let mut vetoes = spec.rule.veto.clone();
    vetoes.sort();
    vetoes.dedup();
    if vetoes.len() != spec.rule.veto.len() {
        return Err(invalid("a veto role is listed twice"));
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
        if let Some(doc) = kernel.store().get(&key).await? {
            // No vote in it: the close sealed the box meanwhile. Any other
            // ballot (readable or not) is a vote cast.
            let sealed = from_doc::<BallotDoc>(&doc).is_ok_and(|(b, _)| b.vote.is_none());
            return Err(if sealed {
                MeetingError::NotVoting {
                    meeting: id.to_owned(),
                    role: me,
                    status: MeetingStatus::Closed,
                }
            } else {
                already
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
