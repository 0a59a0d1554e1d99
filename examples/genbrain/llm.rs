//! Roles that think (`--llm CATALOG --llm-roles cto,marketing`): those
//! roles are `LlmAgent`s on a model of the catalog (`--llm-model`), acting
//! on the org through its actions as tools; the others stay scripted.
//!
//! Each wraps the `LlmAgent` to keep the example's bookkeeping: a task is
//! counted once when its first turn commits (as the scripted agents do), and
//! Marketing's changelog post for a `deploy.complete` is the model's
//! result, written once with the event's handling. Escalations and peers'
//! messages and requests go to the model as they come; `--llm` runs the
//! task tree only (not `--cicd`, `--blackboard` or `--meeting`).

use std::sync::Arc;

use agentorg::llm::{LlmAgent, ModelCatalog};
use agentorg::prelude::*;

use super::agents::{announce_start, count_work, write_changelog, Knobs};
use super::DEPLOY_COMPLETE;

/// The user's instructions for each role that can think here, after the
/// prompt the agent builds from the chart.
fn instructions(role: &str) -> Option<&'static str> {
    Some(match role {
        "cto" => {
            "You turn a product request into engineering work. For a task, delegate exactly three \
             subtasks with the delegate tool: the API endpoints to backend, the dashboard UI to \
             frontend, the data pipeline and its monitoring to devops (a short title each). Then \
             call await_subtasks. When their results come back, call complete_task with a one-line \
             summary of what was built."
        }
        "marketing" => {
            "You write for the company's users. For a task, write what it asks (two or three \
             sentences) and call complete_task with it as the result. For a `deploy.complete` \
             event, write a one-paragraph changelog post announcing the version in its payload \
             and call complete_task with the post as the result."
        }
        _ => return None,
    })
}

/// Whether `role` can think here (the example has instructions for it).
pub(crate) fn can_think(role: &str) -> anyhow::Result<()> {
    if instructions(role).is_none() {
        anyhow::bail!("--llm-roles: genbrain has no instructions for `{role}` (it has them for cto and marketing)");
    }
    Ok(())
}

/// The thinking agent of `role` on `model` of `catalog`.
pub(crate) fn agent(
    role: &str,
    catalog: &ModelCatalog,
    model: &str,
    knobs: Knobs,
) -> anyhow::Result<Arc<dyn Agent>> {
    can_think(role)?;
    let instructions = instructions(role).unwrap_or_default();
    let llm = LlmAgent::new(catalog.model(model)?)
        .instructions(instructions)
        .prices(catalog)
        .max_turns(8)
        .max_tokens(1024);
    Ok(Arc::new(Thinking { llm, knobs }))
}

/// An `LlmAgent` with the example's bookkeeping.
struct Thinking {
    llm: LlmAgent,
    knobs: Knobs,
}

#[async_trait]
impl Agent for Thinking {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.knobs, cx, &task);
        let outcome = self.llm.on_task(cx, task.clone()).await?;
        count_work(cx, &task).await?;
        if self.knobs.announce {
            let what = match &outcome {
                Outcome::AwaitSubtasks => "awaits its subtasks".to_owned(),
                Outcome::Complete(v) => format!("completed it: {v}"),
                _ => "ended its turn".to_owned(),
            };
            eprintln!("genbrain: {} (llm) {what} on task {}", cx.role(), task.id);
        }
        Ok(outcome)
    }

    async fn on_subtasks_done(
        &self,
        cx: &Context,
        task: Task,
        results: Vec<SubtaskResult>,
    ) -> Result<Outcome, AgentError> {
        let id = task.id.clone();
        let outcome = self.llm.on_subtasks_done(cx, task, results).await?;
        if self.knobs.announce {
            eprintln!(
                "genbrain: {} (llm) resumed task {id} with its subtasks' results (attempt {}, pid {})",
                cx.role(),
                cx.attempt(),
                std::process::id()
            );
        }
        Ok(outcome)
    }

    async fn on_escalation(
        &self,
        cx: &Context,
        escalation: Escalation,
    ) -> Result<EscalationOutcome, AgentError> {
        self.llm.on_escalation(cx, escalation).await
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        self.llm.on_peer(cx, message).await
    }

    async fn on_peer_request(
        &self,
        cx: &Context,
        request: PeerMessage,
    ) -> Result<serde_json::Value, AgentError> {
        self.llm.on_peer_request(cx, request).await
    }

    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        if cx.role() != "marketing" || event.name != DEPLOY_COMPLETE {
            return self.llm.on_event(cx, event).await;
        }
        let post = self.llm.event_turn(cx, event.clone()).await?;
        write_changelog(cx, &event, post).await
    }
}
