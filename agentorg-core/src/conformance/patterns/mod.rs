//! The pattern conformance suite: the hierarchy ([`hierarchy`]) and peer
//! channels ([`peer`]) on GenBrain's chart, and events ([`events`]) on a
//! small chart of their own, over any transport + store pair.
//!
//! Every function takes the transport, the store and an org name the
//! transport captures, and starts its own orgs of [`genbrain_chart`] under
//! that name, with the runtime suite's short real durations
//! ([`suite_config`]). Functions may share a transport and store when each
//! gets its own org name.
//!
//! Two lists: [`CASES`] run everywhere — on the memory backends (on tokio's
//! paused clock) and on NATS + Firestore (real servers, short real
//! durations, "not before" and eventual outcomes only); [`PAUSED_ONLY`] wait
//! for minutes of virtual time (an SLA of one minute running out) and run
//! only on the memory backends, on the paused clock.
//!
//! The agents of a case record what they did in a shared journal; the
//! assertions read the journal, the task documents and the principal's
//! streams, and each failure names its behaviour.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

pub use super::runtime::{suite_config, Case, COOLDOWN, LEASE};
use super::{fail, Backends};
use crate::chart::{GateSpec, OrgChart, OrgChartBuilder, RoleSpec, SagaSpec, StepSpec};
use crate::name::Name;
use crate::store::StateStore;
use crate::transport::Transport;

pub mod blackboard;
pub mod events;
pub mod hierarchy;
pub mod meetings;
pub mod org_events;
pub mod peer;
mod registry;
pub mod sagas;
mod support;

pub use blackboard::*;
pub use events::*;
pub use hierarchy::*;
pub use meetings::*;
pub use org_events::*;
pub use peer::*;
pub use registry::*;
pub use sagas::*;

crate::__agentorg_pattern_cases!(__agentorg_case_table {});
crate::__agentorg_paused_pattern_cases!(__agentorg_case_table {});

/// Runs every behaviour of [`CASES`], one after the other; `org` is a
/// factory of fresh org names the transport captures.
pub async fn run_all(t: Arc<dyn Transport>, s: Arc<dyn StateStore>, org: impl Fn() -> Name) {
    for (_, case) in CASES {
        case(Backends::new(Arc::clone(&t), Arc::clone(&s), org())).await;
    }
}

/// GenBrain's chart (as `examples/genbrain.toml`) under the org
/// name `org`: founder → ceo → cto, cso, marketing; cto → backend, frontend,
/// devops; backend's alternate is frontend; the four peer channels; the
/// shortcut ceo → backend for `api_change` tasks; devops publishes
/// `deploy.complete` (a string `version` and `task_id`) and
/// `deploy.rollback`, and subscribes to `pr.merged` (an integer `pr` and a
/// string `version`); the ceo and marketing subscribe to `deploy.complete`,
/// marketing also to `deploy.rollback`, the ceo to the runtime's
/// `sla.breach`; the saga `cicd` (deploy, undone with `deploy.rollback`;
/// smoke_test; changelog, gated on `deploy.complete`'s subscribers within
/// 30 s).
pub fn genbrain_chart(org: &Name) -> OrgChart {
    match genbrain_builder(org).build() {
        Ok(c) => c,
        Err(e) => fail("genbrain chart", e),
    }
}

fn genbrain_builder(org: &Name) -> OrgChartBuilder {
    let role = |name: &str, manager: &str, description: &str, tools: &[&str], caps: &[&str]| {
        RoleSpec::new(name)
            .reports_to(manager)
            .description(description)
            .tools(tools.iter().copied())
            .capabilities(caps.iter().copied())
    };
    OrgChart::builder(org.as_str())
        .principal("founder")
        .role(
            role(
                "ceo",
                "founder",
                "Task decomposition, strategic decisions",
                &["time.*"],
                &["planning", "delegation"],
            )
            .subscribes(["deploy.complete", "sla.breach"]),
        )
        .role(
            role(
                "cto",
                "ceo",
                "Architecture, code review, technical decisions",
                &["git.*", "time.*"],
                &["architecture", "code-review"],
            )
            .meets(["backend", "frontend", "devops", "cso"]),
        )
        .role(role(
            "cso",
            "ceo",
            "Security scanning, vulnerability remediation",
            &["git.*", "time.*"],
            &["security-review"],
        ))
        .role(
            role(
                "marketing",
                "ceo",
                "Content creation, blog posts, social media",
                &["time.*"],
                &["blog", "social", "email", "seo"],
            )
            .subscribes(["deploy.complete", "deploy.rollback"]),
        )
        .role(
            role(
                "backend",
                "cto",
                "API implementation, data models",
                &["git.*", "time.*"],
                &["api", "data-models"],
            )
            .alternate("frontend"),
        )
        .role(role(
            "frontend",
            "cto",
            "UI components, client-side logic",
            &["git.*", "time.*"],
            &["ui"],
        ))
        .role(
            role(
                "devops",
                "cto",
                "Infrastructure, CI/CD, deployment",
                &["git.*", "time.*"],
                &["infrastructure", "ci-cd", "deployment"],
            )
            .publishes(["deploy.complete", "deploy.rollback"])
            .subscribes(["pr.merged"]),
        )
        .peer_with_purpose("backend", "frontend", "API contracts")
        .peer_with_purpose("devops", "cso", "infrastructure security")
        .peer_with_purpose("backend", "devops", "deployment configs")
        .peer_with_purpose("frontend", "marketing", "brand assets")
        .shortcut("ceo", "backend", ["api_change"])
        .event_schema(
            "pr.merged",
            json!({
                "type": "object",
                "required": ["pr", "version"],
                "properties": {
                    "pr": { "type": "integer" },
                    "version": { "type": "string" },
                },
            }),
        )
        .saga(
            SagaSpec::new("cicd")
                .description("pr.merged → deploy → smoke test → deploy.complete → changelog")
                .step(StepSpec::new("deploy", "devops").compensate_with("deploy.rollback"))
                .step(StepSpec::new("smoke_test", "devops"))
                .step(StepSpec::new("changelog", "marketing").gate(GateSpec::new(
                    "deploy.complete",
                    std::time::Duration::from_secs(30),
                ))),
        )
        .event_schema(
            "deploy.complete",
            json!({
                "type": "object",
                "required": ["version", "task_id"],
                "properties": {
                    "version": { "type": "string" },
                    "task_id": { "type": "string" },
                },
            }),
        )
}

/// GenBrain's task tree from their write-up ("Real task tree from our
/// Firestore"), verbatim.
pub fn genbrain_task_tree() -> Value {
    json!({
      "task_id": "task-2026-0423-CEO-001",
      "title": "Ship user analytics dashboard",
      "assigned_by": "founder",
      "assigned_to": "ceo",
      "status": "completed",
      "children": [
        {
          "task_id": "task-2026-0423-CTO-001",
          "title": "Technical implementation of analytics dashboard",
          "assigned_by": "ceo",
          "assigned_to": "cto",
          "status": "completed",
          "children": [
            {
              "task_id": "task-2026-0423-BE-001",
              "title": "Create /api/v2/analytics endpoints with ClickHouse queries",
              "assigned_to": "backend",
              "status": "completed",
              "sla_minutes": 120,
              "actual_minutes": 87
            },
            {
              "task_id": "task-2026-0423-FE-001",
              "title": "Build React dashboard with chart components",
              "assigned_to": "frontend",
              "status": "completed",
              "sla_minutes": 120,
              "actual_minutes": 104
            },
            {
              "task_id": "task-2026-0423-DO-001",
              "title": "Set up analytics data pipeline and Grafana dashboards",
              "assigned_to": "devops",
              "status": "completed",
              "sla_minutes": 90,
              "actual_minutes": 62
            }
          ]
        },
        {
          "task_id": "task-2026-0423-CSO-001",
          "title": "Security review of analytics data handling",
          "assigned_to": "cso",
          "status": "completed"
        },
        {
          "task_id": "task-2026-0423-MKT-001",
          "title": "Write analytics dashboard announcement blog post",
          "assigned_to": "marketing",
          "status": "completed"
        }
      ]
    })
}

/// How a task tree (serialized [`TaskTree`](crate::hierarchy::TaskTree))
/// differs from GenBrain's shape, or `None` if it has it.
///
/// Node by node, children in order: every field of GenBrain's node is
/// there with its value, except that `task_id` may be any non-empty
/// id (unique in the tree) and `actual_minutes` any whole number. The tree
/// may have two fields GenBrain's leaves out: `assigned_by` below the root
/// (the runtime records every task's delegator, GenBrain's shows it only
/// where it is not obvious), which must then be the parent's assignee; and
/// `actual_minutes` on every ended task (GenBrain's shows it only on the
/// leaves with an SLA). Any other field (an `error`, an SLA GenBrain's has
/// not, children of one of its leaves) is a difference.
pub fn task_tree_mismatch(seed: &Value, tree: &Value) -> Option<String> {
    let mut ids = HashSet::new();
    node_mismatch(seed, tree, None, "root", &mut ids).err()
}

fn node_mismatch(
    seed: &Value,
    tree: &Value,
    delegator: Option<&Value>,
    at: &str,
    ids: &mut HashSet<String>,
) -> Result<(), String> {
    let (Some(want), Some(got)) = (seed.as_object(), tree.as_object()) else {
        return Err(format!("{at}: expected an object like {seed}, got {tree}"));
    };
    let at = format!("{at} ({})", want.get("title").unwrap_or(&Value::Null));
    for (key, expected) in want {
        let Some(actual) = got.get(key) else {
            return Err(format!("{at}: no `{key}` (GenBrain's has {expected})"));
        };
        match key.as_str() {
            "task_id" => match actual.as_str() {
                Some(id) if !id.is_empty() => {
                    if !ids.insert(id.to_owned()) {
                        return Err(format!("{at}: task id {id} appears twice"));
                    }
                }
                _ => return Err(format!("{at}: task_id {actual} is not an id")),
            },
            "actual_minutes" if !actual.is_u64() => {
                return Err(format!(
                    "{at}: actual_minutes {actual} is not whole minutes"
                ));
            }
            "actual_minutes" => {}
            "children" => {
                let (Some(w), Some(g)) = (expected.as_array(), actual.as_array()) else {
                    return Err(format!("{at}: children {actual} is not a list"));
                };
                if w.len() != g.len() {
                    return Err(format!(
                        "{at}: {} children, GenBrain's has {}",
                        g.len(),
                        w.len()
                    ));
                }
                for (i, (w, g)) in w.iter().zip(g).enumerate() {
                    node_mismatch(
                        w,
                        g,
                        got.get("assigned_to"),
                        &format!("{at}.children[{i}]"),
                        ids,
                    )?;
                }
            }
            _ if actual != expected => {
                return Err(format!(
                    "{at}: `{key}` is {actual}, GenBrain's is {expected}"
                ));
            }
            _ => {}
        }
    }
    for (key, actual) in got {
        if want.contains_key(key) {
            continue;
        }
        match (key.as_str(), delegator) {
            ("assigned_by", Some(parent)) if actual == parent => {}
            ("assigned_by", _) => {
                return Err(format!(
                    "{at}: assigned_by {actual} is not the parent's assignee {}",
                    delegator.unwrap_or(&Value::Null)
                ));
            }
            ("actual_minutes", _) if actual.is_u64() => {}
            _ => {
                return Err(format!(
                    "{at}: `{key}` = {actual} is not in GenBrain's tree"
                ))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The agents of the suite, and their journal.
