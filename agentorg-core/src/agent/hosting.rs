//! Hosting agents: the default patterns, and an [`Agent`] handed to each
//! pattern as the callbacks it calls.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::Agent;
use crate::blackboard::{Blackboard, BoardCallbacks, ReadyArtifact, ReworkArtifact};
use crate::chart::OrgChart;
use crate::envelope::Envelope;
use crate::events::{Event, EventCallbacks, Events};
use crate::hierarchy::{
    Decision, Escalation, EscalationOutcome, Hierarchy, HierarchyCallbacks, Outcome, SubtaskResult,
    Task,
};
use crate::meeting::{
    MeetingBallot, MeetingCallbacks, MeetingRecord, MeetingTurn, Meetings, Proposal, Vote,
};
use crate::peer::{Peer, PeerCallbacks, PeerMessage};
use crate::runtime::{
    AgentError, AgentOptions, Context, Extensions, Org, OrgBuilder, OrgConsumers, RuntimeConfig,
};
use crate::saga::{SagaCallbacks, SagaDecision, SagaEscalation, SagaStep, Sagas};

/// `builder` with the default patterns registered: the hierarchy, peer
/// channels, events, chains and sagas, the blackboard, and meetings.
pub fn default_patterns(builder: OrgBuilder) -> OrgBuilder {
    builder
        .pattern(Hierarchy)
        .pattern(Peer)
        .pattern(Events)
        .pattern(Sagas)
        .pattern(Blackboard)
        .pattern(Meetings)
}

impl Org {
    /// Starts building an org of `chart` with the default patterns (the
    /// hierarchy, peer channels and events) and the in-memory backends; host agents
    /// with [`OrgBuilder::agent`].
    pub fn builder(chart: OrgChart) -> OrgBuilder {
        default_patterns(OrgBuilder::new(chart))
    }
}

impl OrgBuilder {
    /// Hosts `agent` for `role` in this process, with default options.
    pub fn agent(self, role: impl Into<String>, agent: impl Agent) -> Self {
        self.agent_with(role, Arc::new(agent), AgentOptions::default())
    }

    /// Hosts `agent` for `role` in this process: every pattern calls into it.
    pub fn agent_with(
        self,
        role: impl Into<String>,
        agent: Arc<dyn Agent>,
        options: AgentOptions,
    ) -> Self {
        let callbacks = Arc::new(AgentCallbacks(agent));
        let mut app = Extensions::new();
        app.insert(Arc::clone(&callbacks) as Arc<dyn HierarchyCallbacks>);
        app.insert(Arc::clone(&callbacks) as Arc<dyn PeerCallbacks>);
        app.insert(Arc::clone(&callbacks) as Arc<dyn EventCallbacks>);
        app.insert(Arc::clone(&callbacks) as Arc<dyn SagaCallbacks>);
        app.insert(Arc::clone(&callbacks) as Arc<dyn BoardCallbacks>);
        app.insert(callbacks as Arc<dyn MeetingCallbacks>);
        self.host(role, options, app)
    }
}

impl OrgConsumers {
    /// The consumers the runtime binds for `chart` under `config` with the
    /// default patterns (names, filters, ack wait, pending limits).
    pub fn new(chart: &OrgChart, config: &RuntimeConfig) -> Self {
        let builder = default_patterns(OrgBuilder::new(chart.clone()));
        Self::with_handlers(chart, config, &builder.registry().handlers)
    }
}

/// An agent, as the callbacks of each pattern.
struct AgentCallbacks(Arc<dyn Agent>);

#[async_trait]
impl HierarchyCallbacks for AgentCallbacks {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        self.0.on_task(cx, task).await
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        self.0.on_subtasks_done(cx, task, results).await
    }

    async fn on_result(&self, cx: &Context, result: SubtaskResult) -> Result<(), AgentError> {
        self.0.on_result(cx, result).await
    }

    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        self.0.on_escalation(cx, escalation).await
    }

    async fn on_decision(&self, cx: &Context, decision: Decision) -> Result<(), AgentError> {
        self.0.on_decision(cx, decision).await
    }

    async fn on_message(&self, cx: &Context, message: Envelope) -> Result<(), AgentError> {
        self.0.on_message(cx, message).await
    }
}

#[async_trait]
impl PeerCallbacks for AgentCallbacks {
    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        self.0.on_peer(cx, message).await
    }

    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        self.0.on_peer_request(cx, request).await
    }
}

#[async_trait]
impl EventCallbacks for AgentCallbacks {
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        self.0.on_event(cx, event).await
    }
}

#[async_trait]
impl SagaCallbacks for AgentCallbacks {
    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        self.0.on_saga_step(cx, step).await
    }

    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        self.0.on_compensate(cx, step).await
    }

    async fn on_saga_escalation(
        &self,
        cx: &Context,
        escalation: SagaEscalation,
    ) -> Result<Option<SagaDecision>, AgentError> {
        self.0.on_saga_escalation(cx, escalation).await
    }
}

#[async_trait]
impl BoardCallbacks for AgentCallbacks {
    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        self.0.on_artifact_ready(cx, ready).await
    }

    async fn on_artifact_rework(
        &self,
        cx: &Context,
        rework: ReworkArtifact,
    ) -> Result<(), AgentError> {
        self.0.on_artifact_rework(cx, rework).await
    }
}

#[async_trait]
impl MeetingCallbacks for AgentCallbacks {
    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        self.0.on_meeting_turn(cx, turn).await
    }

    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        self.0.on_meeting_proposal(cx, meeting).await
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        self.0.on_meeting_ballot(cx, ballot).await
    }

    async fn on_meeting_escalation(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<(), AgentError> {
        self.0.on_meeting_escalation(cx, meeting).await
    }
}
