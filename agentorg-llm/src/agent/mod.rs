//! [`LlmAgent`]: a role that thinks. Each delivery is a turn of tool calls:
//! the model gets the role's prompt (built from the chart) and the
//! delivery, and acts through the org actions
//! ([`agentorg_core::agent::actions`]: the same definitions an MCP client
//! seated in the org uses) and the role's granted tools, listed flat beside
//! them, until it ends the turn.
//!
//! * **Tasks**: `on_task`, and `on_subtasks_done`, which resumes the
//!   task's conversation with its subtasks' results: the conversation is
//!   written to the role's namespace of the store (`conversations/<task>`)
//!   with the turn's outcome, so it survives a crash and another process
//!   resumes it; it is removed when the task completes (a failed task's
//!   stays, for inspection).
//! * **Everything else a role receives**, each one turn on a conversation
//!   of its own with that turn's actions ([`TurnKind`]): events the role
//!   subscribes to and peers' messages (ended by `complete_task`), peers'
//!   requests (`answer_peer_request`), escalations from reports
//!   (`decide_escalation` or `pass_up_escalation`), meeting turns
//!   (`speak`), the facilitator's proposal (`propose`), ballots (`vote`),
//!   artifacts that became ready, saga steps and compensations.
//! * **Bounded**: a malformed or refused tool call is answered with the
//!   error, never a crash; a task not ended within
//!   [`max_turns`](LlmAgent::max_turns) model calls (resumes included)
//!   fails; a conversation past [`context_tokens`](LlmAgent::context_tokens)
//!   moves its oldest turns out (a task's into a page of the store, by
//!   reference); [`task_budget`](LlmAgent::task_budget) and
//!   [`role_budget`](LlmAgent::role_budget), once spent, escalate the task
//!   to the role's manager with what was spent, instead of running on.
//! * **Usage**: each call's tokens go to the role's registry entry
//!   ([`Context::report_model_usage`]: input and output tokens under the
//!   model that answered, with the cost when it has a [`Price`]).
//! * **Cancelled** with its handler: a model call in flight is dropped when
//!   the runtime drops the handler (its `handler_timeout`, the org shutting
//!   down, or the task's lease lost to another attempt).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use agentorg_core::agent::actions::{is_org_action, ActionHost, End, TurnKind};
use agentorg_core::agent::{Agent, AgentError, Context, Outcome, SubtaskResult, Task};
use agentorg_core::blackboard::ReadyArtifact;
use agentorg_core::events::Event;
use agentorg_core::hierarchy::{Escalation, EscalationOutcome};
use agentorg_core::meeting::{MeetingBallot, MeetingRecord, MeetingTurn, Proposal, Vote};
use agentorg_core::peer::PeerMessage;
use agentorg_core::runtime::{ModelUsage, Spent};
use agentorg_core::saga::SagaStep;
use agentorg_core::store::{DocKey, Precondition, Write};
use agentorg_core::tools::{ToolHost, ToolHostExt};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::budget::{self, Budget, Scope};

mod context;
mod turns;

/// The default of [`LlmAgent::context_tokens`].
const DEFAULT_CONTEXT_TOKENS: usize = 24_000;

use crate::{ChatRequest, Message, Model, ModelCatalog, ModelError, Price, ToolChoice, ToolSpec};

/// The collection of the role's namespace holding the conversations of
/// tasks waiting for their subtasks: `<task id>` is `{"messages": <the
/// conversation as JSON text>, "model_calls", "spent": {"tokens",
/// "cost_usd"}, "pages"}`, and `<task id>.<n>` a page of turns moved out of
/// it (`{"messages": <JSON text>}`).
pub const CONVERSATIONS: &str = "conversations";

/// An [`Agent`] driven by a [`Model`] through tool calls.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use agentorg_llm::{LlmAgent, ModelCatalog};
///
/// let catalog = ModelCatalog::from_toml_str(r#"
///     [models.local]
///     provider = "openai"
///     model = "smollm2"
///     base_url = "http://127.0.0.1:8080/v1"
/// "#)?;
/// let cto = LlmAgent::new(catalog.model("local")?)
///     .instructions("Split features into backend and frontend work.")
///     .max_turns(8);
/// // Org::builder(chart).agent("cto", cto) …
/// # let _ = cto; Ok(()) }
/// ```
pub struct LlmAgent {
    model: Arc<dyn Model>,
    instructions: String,
    max_turns: usize,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    tool_choice: ToolChoice,
    price: Option<Price>,
    prices: BTreeMap<String, Price>,
    task_budget: Option<Budget>,
    role_budget: Option<Budget>,
    context_tokens: usize,
}

impl fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmAgent")
            .field("model", &self.model.name())
            .field("max_turns", &self.max_turns)
            .finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// Driven by `model`, with no instructions beyond the role's prompt,
    /// at most 12 model calls per turn.
    pub fn new(model: Arc<dyn Model>) -> Self {
        Self {
            model,
            instructions: String::new(),
            max_turns: 12,
            max_tokens: None,
            temperature: None,
            tool_choice: ToolChoice::Auto,
            price: None,
            prices: BTreeMap::new(),
            task_budget: None,
            role_budget: None,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
        }
    }

    /// The user's instructions, after the role's prompt.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// The most model calls a task may take (at least 1; counted across its
    /// resumes, per attempt as [`task_budget`](Self::task_budget) counts);
    /// a task not ended by then fails. Another delivery gets as many.
    pub fn max_turns(mut self, n: usize) -> Self {
        self.max_turns = n.max(1);
        self
    }

    /// The longest answer of each call, in tokens.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Whether each call must call a tool (default: the model decides; a
    /// text answer is sent back with a reminder to act through the tools).
    /// `None`, or a tool that does not end the turn, can never end one.
    /// `Required` keeps some models on track; not every server takes it
    /// (llama-cpp-python's answers 500).
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = choice;
        self
    }

    /// The model's price, to report each call's cost with its tokens (for
    /// a call whose model has no price of its own: see
    /// [`prices`](Self::prices)).
    pub fn price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// The prices of `catalog`'s models, each for the calls that model
    /// answers (a failover's calls are priced by the model that answered).
    pub fn prices(mut self, catalog: &ModelCatalog) -> Self {
        for name in catalog.entries().keys() {
            if let Some(price) = catalog.price(name) {
                self.prices.insert(name.clone(), price);
            }
        }
        self
    }

    /// The most one task may spend (its model calls, resumes included).
    /// Checked before each call: once spent, the task escalates to the
    /// role's manager with what was spent (reason `budget_spent`) and ends
    /// failed, instead of running on. What a task spent is kept with its
    /// conversation when it waits for subtasks; an attempt that fails
    /// transiently (a provider's outage, say) and a rerun (a lost lease, a
    /// conflicting write) start again from there, so a task may spend more
    /// than its budget over its attempts, and the call that crosses it is
    /// not cut short. Deliveries other than tasks are held by the role
    /// budget only.
    pub fn task_budget(mut self, budget: Budget) -> Self {
        self.task_budget = Some(budget);
        self
    }

    /// The most the role may spend, by its registry entry (every process's
    /// calls; another process's show once folded, a sweep behind at most).
    /// Checked before each call: once spent, a task escalates and fails as
    /// with [`task_budget`](Self::task_budget); any other delivery fails
    /// permanently, without an escalation (an event is dead-lettered, which
    /// alerts).
    pub fn role_budget(mut self, budget: Budget) -> Self {
        self.role_budget = Some(budget);
        self
    }

    /// The most tokens a conversation may reach (estimated, four
    /// characters a token; default 24,000, the tools' schemas apart): past
    /// it, before the next call, its oldest turns move out — for a task,
    /// into a page of the store beside the conversation, by reference — and
    /// one message lists what they were. The role's prompt, the opening
    /// message and the latest turns stay.
    pub fn context_tokens(mut self, tokens: usize) -> Self {
        self.context_tokens = tokens.max(1);
        self
    }

    /// An error if a budget is spent (for a task, the escalation staged).
    async fn check_budgets(&self, cx: &Context, tally: &Tally) -> Result<(), AgentError> {
        // Only a task's turns keep a tally across calls and resumes (and
        // can escalate on failing).
        let task = tally.paged.is_some();
        if let (Some(budget), true) = (&self.task_budget, task) {
            if budget.is_spent_by(&tally.spent) {
                return Err(budget::spent(
                    cx,
                    Scope::Task,
                    budget,
                    &tally.spent,
                    tally.calls,
                    true,
                ));
            }
        }
        if let Some(budget) = &self.role_budget {
            let used = cx
                .role_usage()
                .await
                .map_err(|e| AgentError::transient(format!("reading the role's usage: {e}")))?;
            if budget.is_spent_by(&used) {
                return Err(budget::spent(
                    cx,
                    Scope::Role,
                    budget,
                    &used,
                    tally.calls,
                    task,
                ));
            }
        }
        Ok(())
    }

    /// The role's system prompt: who it is in the chart, then the
    /// instructions.
    pub fn role_prompt(&self, cx: &Context) -> String {
        let chart = cx.chart();
        let role = cx.role();
        let list = |names: Vec<String>| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let mut prompt = format!("You are `{role}` in the organization `{}`.", cx.org());
        if let Some(r) = chart.role(role) {
            if !r.description().is_empty() {
                prompt.push_str(&format!(" {}", r.description()));
            }
            prompt.push_str(&format!(
                "\nYour manager: {}.\nYour direct reports (you may delegate to them): {}.\nYour peers: {}.\nEvents you publish: {}.\nEvents you subscribe to: {}.\nCapabilities: {}.",
                r.reports_to().map_or("none".to_owned(), |m| m.to_string()),
                list(chart.reports_of(role).map(|n| n.to_string()).collect()),
                list(chart.peers_of(role).map(|n| n.to_string()).collect()),
                list(r.publishes().to_vec()),
                list(r.subscribes().to_vec()),
                list(r.capabilities().to_vec()),
            ));
        }
        prompt.push_str(
            "\nAct only through the tools. End every turn with one of its ending actions (the message that starts it says which; a task ends with complete_task and your result, await_subtasks after delegating, or fail_task). A refused call says why; adjust and go on.",
        );
        if !self.instructions.is_empty() {
            prompt.push_str("\n\n");
            prompt.push_str(&self.instructions);
        }
        prompt
    }

    /// A new conversation: the role's prompt, then `first` from the user.
    fn opening(&self, cx: &Context, first: String) -> Vec<Message> {
        vec![
            Message::System {
                content: self.role_prompt(cx),
            },
            Message::User { content: first },
        ]
    }

    /// Runs one turn of `kind` on `conversation` until the model ends it,
    /// `tally` counting the model calls the task made so far (at most
    /// `max_turns` in all) and what they spent. The actions in `withheld`
    /// are not offered, and refused if called anyway.
    async fn turn(
        &self,
        cx: &Context,
        kind: TurnKind,
        id: &str,
        withheld: &[&str],
        conversation: &mut Vec<Message>,
        tally: &mut Tally,
    ) -> Result<End, AgentError> {
        let mut host = ActionHost::new(cx, kind, id);
        // Without its granted tools (their servers down) the role can still
        // act on the org.
        let granted = cx.tools().list_tools().await.unwrap_or_else(|e| {
            tracing::warn!(role = %cx.role(), error = %e, "granted tools not listed");
            Vec::new()
        });
        let mut tools: Vec<ToolSpec> = host
            .tools()
            .into_iter()
            .filter(|t| !withheld.contains(&t.name.as_str()))
            .map(|t| ToolSpec::new(t.name, t.description, t.input_schema))
            .collect();
        tools.extend(
            granted
                .iter()
                .map(|t| ToolSpec::new(&t.name, &t.description, t.input_schema.clone())),
        );
        // The request holds the conversation while the turn runs (no copy
        // per call); it goes back to `conversation` when the turn ends.
        let mut request = ChatRequest::new().tool_choice(self.tool_choice.clone());
        request.messages = std::mem::take(conversation);
        request.tools = tools;
        request.max_tokens = self.max_tokens;
        request.temperature = self.temperature;
        while tally.calls < self.max_turns {
            if let Err(e) = self.check_budgets(cx, tally).await {
                *conversation = request.messages;
                return Err(e);
            }
            let page = tally
                .paged
                .as_ref()
                .map(|task| format!("{task}.{}", tally.pages + 1));
            let label = page.as_ref().map(|p| format!("{CONVERSATIONS}/{p}"));
            let moved =
                context::compact(&mut request.messages, self.context_tokens, label.as_deref());
            if let (Some(page), false) = (page, moved.is_empty()) {
                tally.pages += 1;
                tally.moved.push((page, moved));
            }
            tally.calls += 1;
            let answer = match self.model.chat(&request).await {
                Ok(answer) => answer,
                // An answer that could not be read (tool arguments that are
                // not JSON, say) is answered like a malformed call.
                Err(ModelError::Decode { message }) => {
                    request.messages.push(Message::User {
                        content: format!(
                            "Your last answer could not be read ({message}). Answer again: call the tools with JSON arguments."
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    *conversation = request.messages;
                    return Err(model_error(e));
                }
            };
            let usage = answer.usage;
            let model = answer.provider.as_deref().unwrap_or(self.model.name());
            let cost = self
                .prices
                .get(model)
                .or(self.price.as_ref())
                .map_or(0.0, |p| p.cost(usage));
            let used = ModelUsage::call(usage.input_tokens, usage.output_tokens, cost);
            cx.report_model_usage(model, used);
            tally.spent.add(&used);
            let text = answer.text.clone().filter(|t| !t.trim().is_empty());
            if text.is_some() || !answer.tool_calls.is_empty() {
                request.messages.push(Message::Assistant {
                    content: text,
                    tool_calls: answer.tool_calls.clone(),
                });
            }
            if answer.tool_calls.is_empty() {
                request.messages.push(Message::User {
                    content: "Act through the tools: end the turn with one of its ending actions."
                        .into(),
                });
                continue;
            }
            for call in &answer.tool_calls {
                let result = if host.end().is_some() {
                    Err("the turn has already ended: this call was not run".to_owned())
                } else if withheld.contains(&call.name.as_str()) {
                    Err(format!("`{}` is not available in this turn", call.name))
                } else if is_org_action(&call.name) {
                    host.call(&call.name, call.arguments.clone())
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    granted_call(cx.tools().as_ref(), &call.name, call.arguments.clone()).await
                };
                let (content, is_error) = match result {
                    Ok(v) => (v.to_string(), false),
                    Err(e) => (e, true),
                };
                request.messages.push(Message::Tool {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content,
                    is_error,
                });
            }
            if let Some(end) = host.end() {
                *conversation = request.messages;
                return Ok(end.clone());
            }
        }
        *conversation = request.messages;
        Err(AgentError::permanent(format!(
            "`{}` did not end its work within {} model calls (max_turns)",
            cx.role(),
            self.max_turns
        )))
    }

    fn conversation_key(cx: &Context, task: &Task) -> Result<DocKey, AgentError> {
        page_key(cx, task.id.as_ref())
    }

    /// A task turn on `saved.messages` (`saved.tally`: the model calls the
    /// task made before, and what they spent): the outcome; the
    /// conversation kept (with the outcome) while the task waits for its
    /// subtasks, and removed (`kept`: there is one) when it completes. A
    /// failed task's conversation stays, for inspection.
    async fn task_turn(
        &self,
        cx: &Context,
        task: &Task,
        mut saved: Saved,
        kept: bool,
    ) -> Result<Outcome, AgentError> {
        saved.tally.paged = Some(task.id.to_string());
        let stored_pages = saved.tally.pages;
        let end = self
            .turn(
                cx,
                TurnKind::Task,
                task.id.as_ref(),
                TASK_WITHHELD,
                &mut saved.messages,
                &mut saved.tally,
            )
            .await?;
        let stage = |write: Write| {
            cx.stage(write)
                .map_err(|e| AgentError::permanent(e.to_string()))
        };
        let key = Self::conversation_key(cx, task)?;
        match end {
            End::Complete(v) => {
                if kept {
                    stage(Write::delete(key, Precondition::None))?;
                }
                for n in 1..=stored_pages {
                    stage(Write::delete(
                        page_key(cx, &format!("{}.{n}", task.id))?,
                        Precondition::None,
                    ))?;
                }
                Ok(Outcome::Complete(v))
            }
            End::AwaitSubtasks => {
                for (page, messages) in std::mem::take(&mut saved.tally.moved) {
                    let text = serde_json::to_string(&messages)
                        .map_err(|e| AgentError::permanent(e.to_string()))?;
                    stage(Write::put(
                        page_key(cx, &page)?,
                        json!({ "messages": text }),
                        Precondition::None,
                    ))?;
                }
                let doc = serde_json::to_value(&saved)
                    .map_err(|e| AgentError::permanent(e.to_string()))?;
                stage(Write::put(key, doc, Precondition::None))?;
                Ok(Outcome::AwaitSubtasks)
            }
            other => Err(turns::failed(other, "task")),
        }
    }
}

/// The document `id` of the role's conversations collection.
fn page_key(cx: &Context, id: &str) -> Result<DocKey, AgentError> {
    cx.collection(CONVERSATIONS)
        .and_then(|c| c.doc(id))
        .map_err(|e| AgentError::permanent(e.to_string()))
}

/// A task's model calls so far, what they spent, and the pages its
/// conversation's old turns moved out to.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    #[serde(default, rename = "model_calls")]
    calls: usize,
    #[serde(default)]
    spent: Spent,
    /// Pages kept so far (`<task>.1` …), in the conversations collection.
    #[serde(default)]
    pages: usize,
    /// The task whose turns move out to pages (`None`: not kept).
    #[serde(skip)]
    paged: Option<String>,
    /// Pages moved out in this delivery, to stage: id and messages.
    #[serde(skip)]
    moved: Vec<(String, Vec<Message>)>,
}

/// A task's conversation as kept in the store while it waits.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    #[serde(with = "as_json_text")]
    messages: Vec<Message>,
    #[serde(flatten)]
    tally: Tally,
}

impl Saved {
    fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            tally: Tally::default(),
        }
    }
}

/// Messages kept as one JSON text: whatever a model put in its tool
/// calls' arguments (empty keys, arrays of arrays, deep nesting) is
/// stored as written, within any backend's document limits.
mod as_json_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::Message;

    pub(super) fn serialize<S: Serializer>(m: &[Message], s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(m).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    /// The JSON text, or (as first kept) the messages themselves.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Message>, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(text) => serde_json::from_str(&text),
            other => serde_json::from_value(other),
        }
        .map_err(D::Error::custom)
    }
}

/// Actions a task turn does not offer: the agent reports usage itself and
/// lists the granted tools flat.
const TASK_WITHHELD: &[&str] = &["report_usage", "call_granted_tool"];

/// An event's turn cannot wait for subtasks either (their results come
/// back to `on_result`, not to it).
const EVENT_WITHHELD: &[&str] = &["report_usage", "call_granted_tool", "await_subtasks"];

/// A granted tool's call, its result or failure as the model reads it.
async fn granted_call(tools: &dyn ToolHost, name: &str, args: Value) -> Result<Value, String> {
    tools
        .call_tool(name, args)
        .await
        .map(|out| json!({"structured": out.structured, "text": out.text}))
        .map_err(|e| e.to_string())
}

/// A model failure as the handler's: retried later if the provider may
/// answer then.
fn model_error(e: ModelError) -> AgentError {
    if e.is_retryable() {
        AgentError::transient(format!("model: {e}"))
    } else {
        AgentError::permanent(format!("model: {e}"))
    }
}

fn task_message(task: &Task) -> String {
    format!(
        "A task for you, from `{}`:\n{}",
        task.assigned_by,
        json!({
            "task_id": task.id,
            "title": task.title,
            "task_type": task.task_type,
            "input": task.input,
            "sla_minutes": task.sla_minutes,
        })
    )
}

#[async_trait]
impl Agent for LlmAgent {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        let saved = Saved::new(self.opening(cx, task_message(&task)));
        self.task_turn(cx, &task, saved, false).await
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let key = Self::conversation_key(cx, &task)?;
        let saved = cx
            .store()
            .get(&key)
            .await
            .map_err(|e| AgentError::transient(e.to_string()))?;
        let (mut saved, found) = match saved {
            Some(doc) => {
                let saved: Saved = serde_json::from_value(doc.value).map_err(|e| {
                    AgentError::permanent(format!(
                        "the conversation of task {} cannot be read: {e}",
                        task.id
                    ))
                })?;
                (saved, true)
            }
            None => {
                // Awaited by another agent, or written before conversations
                // were kept: start from the task.
                tracing::warn!(role = %cx.role(), task = %task.id, "no conversation kept for this task; starting one");
                (Saved::new(self.opening(cx, task_message(&task))), false)
            }
        };
        saved.messages.push(Message::User {
            content: format!(
                "Your subtasks of task {} have ended:\n{}\nComplete the task with complete_task (or delegate more and await_subtasks, or fail_task).",
                task.id,
                serde_json::to_value(&results).unwrap_or(Value::Null)
            ),
        });
        self.task_turn(cx, &task, saved, found).await
    }

    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        self.event_turn(cx, event).await.map(drop)
    }

    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        self.escalation_turn(cx, escalation).await
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        self.peer_turn(cx, message).await
    }

    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<Value, AgentError> {
        self.peer_request_turn(cx, request).await
    }

    async fn on_meeting_turn(&self, cx: &Context, turn: MeetingTurn) -> Result<String, AgentError> {
        self.meeting_turn(cx, turn).await
    }

    async fn on_meeting_proposal(
        &self,
        cx: &Context,
        meeting: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        self.proposal_turn(cx, meeting).await
    }

    async fn on_meeting_ballot(
        &self,
        cx: &Context,
        ballot: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        self.ballot_turn(cx, ballot).await
    }

    async fn on_artifact_ready(
        &self,
        cx: &Context,
        ready: ReadyArtifact,
    ) -> Result<(), AgentError> {
        self.artifact_turn(cx, ready).await
    }

    async fn on_saga_step(&self, cx: &Context, step: SagaStep) -> Result<Value, AgentError> {
        self.saga_turn(cx, step, TurnKind::SagaStep).await
    }

    async fn on_compensate(&self, cx: &Context, step: SagaStep) -> Result<(), AgentError> {
        self.saga_turn(cx, step, TurnKind::Compensation)
            .await
            .map(drop)
    }
}
