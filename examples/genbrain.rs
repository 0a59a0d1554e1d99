//! The GenBrain org of GenBrain's write-ups: one request delegated down the chart and
//! rolled up, in one process on the in-memory backends, or as one process
//! per role on NATS + Firestore.
//!
//! The founder asks the CEO to "Ship user analytics dashboard". The CEO
//! delegates the technical work to the CTO, a security review to the CSO and
//! the announcement to Marketing; the CTO splits its part between Backend,
//! Frontend and DevOps. While Backend works on the endpoints it tells
//! Frontend of the breaking API contract change on their peer channel (the
//! write-up's `api_contract_change` message), and Frontend says that it got it.
//! When DevOps finishes its pipeline it publishes a `deploy.complete` event
//! (the chart says DevOps `publishes` it): Marketing, which only
//! `subscribes` to it in the chart — no code in DevOps names it — writes
//! a changelog post for the deployment, and the CEO, also subscribed, notes
//! it. Every result rolls up, and the finished task tree is printed on
//! stdout as JSON in the shape of GenBrain's task tree, followed by a second
//! JSON document, `{"receipts": …}`: the event's delivery receipts, who
//! processed it and how fast. A summary goes to stderr. The exit status is 0
//! only if every task completed (and, see below, was counted exactly once,
//! Frontend got the contract change, and every subscriber processed the
//! event once); 1 if not; 2 on an error.
//!
//! ```text
//! cargo run --example genbrain
//! RUST_LOG=agentorg_core=debug cargo run --example genbrain   # every delivery's span
//! cargo run --example genbrain --features nats -- --nats nats://127.0.0.1:4222
//! cargo run --example genbrain --features firestore -- --firestore 127.0.0.1:8686
//! cargo run --example genbrain --features nats,firestore -- --nats nats://127.0.0.1:4222 --firestore 127.0.0.1:8686
//! cargo run --example genbrain --features mcp -- --mcp examples/tools.toml
//! ```
//!
//! With `--nats`, the org runs over NATS JetStream (the streams of org
//! `genbrain` are created if missing; `scripts/servers` starts a local
//! server). Credentials, if the server wants them, come from `NATS_USER` and
//! `NATS_PASSWORD` or `NATS_TOKEN`.
//!
//! With `--firestore HOST:PORT` (a Firestore emulator, e.g. the one
//! `scripts/servers` starts) the org keeps its state — the task tree, claims,
//! breakers, outbox — in Firestore project `--project` (default
//! `genbrain-demo`); at the end the example reads the tree back from
//! Firestore over a new connection and says where it lives. With both, the
//! org runs entirely on GenBrain's stack (NATS JetStream and Firestore).
//!
//! # One process per role
//!
//! With `--nats`, `--firestore` and `--roles a,b,…` this process hosts only
//! the roles listed; the others run in other processes that share the same
//! NATS server and Firestore project (`--project`). A process whose list
//! includes the principal, `founder`, drives: it delegates the request, waits
//! for the tree, prints it and exits as above (after a graceful shutdown). A
//! process without the founder serves its roles until SIGTERM or Ctrl-C, then
//! shuts down gracefully (intake stops, in-flight handlers finish) and exits
//! 0. `scripts/genbrain-processes` starts the whole org that way, one process
//! per role plus the founder's:
//!
//! ```text
//! scripts/servers              # in another terminal: nats-server and the emulator
//! scripts/genbrain-processes   # 8 processes; logs in .tools/logs/genbrain-<role>.log
//! # by hand, one terminal each (every process with the same flags but --roles):
//! cargo run --example genbrain --features nats,firestore -- --nats nats://127.0.0.1:4222 --firestore 127.0.0.1:8686 --roles backend
//! cargo run --example genbrain --features nats,firestore -- --nats nats://127.0.0.1:4222 --firestore 127.0.0.1:8686 --roles founder
//! ```
//!
//! Messages wait in JetStream for roles that start late, and a role process
//! killed mid-task (even with SIGKILL) and started again takes its task over
//! once the claim's lease has run out (`--lease-secs`):
//! `tests/genbrain_processes.rs` does exactly that.
//!
//! # Exactly-once bookkeeping
//!
//! Every task handler stages (`Context::stage`) an increment of a counter
//! document for its task in its role's own namespace,
//! `agentorg/genbrain/roles/<role>/work/<task id>` (`count`, and the
//! `attempt` that committed it), and Frontend stages one for each contract
//! change it gets, `agentorg/genbrain/roles/frontend/peer_messages/<message
//! id>`. Staged
//! writes commit atomically with the handler's outcome, so a handler that
//! crashed or ran twice still counts once. The driving process checks that
//! every task of the tree counted exactly 1 and that Frontend handled
//! Backend's message, and says so on stderr. Marketing's changelog posts are
//! counted the same way, one document per event in
//! `agentorg/genbrain/roles/marketing/changelog/<event id>`.
//!
//! # Flags
//!
//! * `--nats URL`, `--firestore HOST:PORT`, `--project ID`: the backends (see
//!   above).
//! * `--roles ROLE,…`: host only these roles (default: all, and drive).
//! * `--mcp CATALOG` (needs `--features mcp`): the org's tools are the MCP
//!   servers of the catalog (`examples/tools.toml`: `mcp-server-time` over
//!   stdio, from `$AGENTORG_MCP_TIME` or `PATH`); each role sees its chart
//!   grants, and DevOps calls `time.get_current_time` while it works and
//!   prints what it got.
//! * `--timeout SECS` (default 60): how long the founder waits for the tree.
//! * `--lease-secs SECS` (default: the runtime's 30 s): the claims' lease and
//!   the inbox consumers' ack wait, i.e. how soon the task of a crashed
//!   process is taken over. Give every process of an org the same value.
//! * `--work-ms MS` (default 20): how long each specialist (backend, frontend,
//!   devops, cso, marketing) works on its task.
//! * `--stop-on-stdin-eof`: also stop (as on SIGTERM) when stdin reaches end
//!   of file, for a supervisor that holds the other end of a pipe: the
//!   process cannot outlive it, even if it is killed.
//!
//! Ctrl-C or SIGTERM stops any process gracefully: intake stops, in-flight
//! handlers finish, then it exits (the founder's with status 1: the tree was
//! not finished).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agentorg::envelope::MessageId;
use agentorg::events::ReceiptStatus;
use agentorg::prelude::*;
use agentorg::runtime::role_collection;
use agentorg::store::{MemoryStore, Precondition, StateStore, StateStoreExt, Write};
use agentorg::transport::{MemoryTransport, Transport};
use anyhow::Context as _;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// GenBrain's chart: founder → ceo → cto, cso, marketing; cto → backend,
/// frontend, devops; four peer channels; one delegation shortcut.
const CHART: &str = include_str!("genbrain.toml");

/// The exactly-once counters of a role's tasks, one document per task, in
/// the role's own namespace.
const WORK: &str = "work";
/// Marketing's changelog posts, one document per `deploy.complete` event, in
/// its own namespace.
const CHANGELOG: &str = "changelog";
/// The event DevOps publishes when its pipeline is done.
const DEPLOY_COMPLETE: &str = "deploy.complete";
/// Frontend's receipts of contract changes, one document per message, in its
/// namespace.
const PEER_MESSAGES: &str = "peer_messages";

#[derive(Debug, Parser)]
#[command(
    about = "Run the GenBrain org: one request delegated down the chart and rolled up, \
             in one process or one process per role"
)]
struct Args {
    /// NATS server URL for the transport (needs `--features nats`); the
    /// org's streams are created if missing.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Firestore emulator HOST:PORT for the state store (needs `--features firestore`).
    #[arg(long, value_name = "HOST:PORT")]
    firestore: Option<String>,
    /// The Firestore project the state goes to (with `--firestore`); every
    /// process of one org must use the same.
    #[arg(long, default_value = "genbrain-demo")]
    project: String,
    /// How long the founder waits for the whole tree, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Host only these roles in this process (comma-separated; needs `--nats`
    /// and `--firestore`). With `founder` this process drives (delegates,
    /// waits, prints the tree, exits); without, it serves until SIGTERM.
    #[arg(long, value_delimiter = ',', value_name = "ROLE,…")]
    roles: Option<Vec<String>>,
    /// The claims' lease and the inbox consumers' ack wait, in seconds
    /// (default: the runtime's 30): how soon a crashed process's task is
    /// taken over. Use the same value in every process of the org.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    lease_secs: Option<u64>,
    /// How long each specialist works on its task, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    work_ms: u64,
    /// Also stop, as on SIGTERM, when stdin reaches end of file (for a
    /// supervisor holding a pipe to it: the process cannot outlive it).
    #[arg(long)]
    stop_on_stdin_eof: bool,
    /// An MCP catalog (TOML) whose servers are the org's tools (needs
    /// `--features mcp`), e.g. `examples/tools.toml`.
    #[arg(long, value_name = "CATALOG")]
    mcp: Option<std::path::PathBuf>,
}

/// What the agents of this process share.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    /// How long a specialist works.
    work: Duration,
    /// Whether to say on stderr when a task starts and ends (one process per
    /// role: each process's log tells its story).
    announce: bool,
}

/// GenBrain's peer message: Backend tells Frontend of an API contract change
/// (`/work/shared/fixtures/peer-api-contract-change.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiContractChange {
    /// Always `api_contract_change`.
    #[serde(rename = "type")]
    kind: String,
    from: String,
    endpoint: String,
    change_type: String,
    old_schema: ApiSchema,
    new_schema: ApiSchema,
    migration_deadline: String,
    migration_guide: String,
}

/// A response schema: field name → JSON type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiSchema {
    response: BTreeMap<String, String>,
}

impl ApiContractChange {
    const KIND: &'static str = "api_contract_change";

    /// GenBrain's message.
    fn analytics_v2() -> Self {
        let schema = |fields: &[(&str, &str)]| ApiSchema {
            response: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Self {
            kind: Self::KIND.to_owned(),
            from: "backend".to_owned(),
            endpoint: "/api/v2/analytics".to_owned(),
            change_type: "breaking".to_owned(),
            old_schema: schema(&[("data", "array"), ("total", "number")]),
            new_schema: schema(&[
                ("results", "array"),
                ("total_count", "number"),
                ("page", "number"),
            ]),
            migration_deadline: "2026-05-10T00:00:00Z".to_owned(),
            migration_guide:
                "Rename 'data' to 'results', 'total' to 'total_count', add pagination params"
                    .to_owned(),
        }
    }
}

/// Stages an increment of the counter document `<collection>/<id>` of the
/// role's namespace with
/// `fields` (exactly-once bookkeeping: it commits with the handler's outcome
/// or not at all; a concurrent change makes the runtime run the handler
/// again). Returns the count it will have.
async fn stage_count(
    cx: &Context,
    collection: &str,
    id: &str,
    fields: serde_json::Value,
) -> Result<u64, AgentError> {
    let key = cx.collection(collection)?.doc(id)?;
    let (count, precondition) = match cx.store().get(&key).await? {
        Some(doc) => (
            doc.value["count"].as_u64().unwrap_or(0),
            Precondition::Version(doc.version),
        ),
        None => (0, Precondition::MustNotExist),
    };
    let mut value = fields;
    value["count"] = json!(count + 1);
    value["attempt"] = json!(cx.attempt());
    cx.stage(Write::put(key, value, precondition))?;
    Ok(count + 1)
}

/// Counts `task` once, in [`WORK`].
async fn count_work(cx: &Context, task: &Task) -> Result<(), AgentError> {
    stage_count(
        cx,
        WORK,
        task.id.as_str(),
        json!({ "task_id": task.id.as_str(), "role": cx.role().as_str(), "title": task.title }),
    )
    .await
    .map(drop)
}

fn announce_start(knobs: Knobs, cx: &Context, task: &Task) {
    if knobs.announce {
        eprintln!(
            "genbrain: {} started task {} \"{}\" (attempt {}, pid {})",
            cx.role(),
            task.id,
            task.title,
            cx.attempt(),
            std::process::id()
        );
    }
}

/// The CEO decomposes the founder's request across its reports.
struct Ceo(Knobs);

#[async_trait]
impl Agent for Ceo {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.0, cx, &task);
        let product = task.title.trim_start_matches("Ship ").to_owned();
        cx.delegate(
            "cto",
            TaskSpec::new(format!(
                "Technical implementation of {}",
                strip_user(&product)
            )),
        )
        .await?;
        cx.delegate(
            "cso",
            TaskSpec::new("Security review of analytics data handling"),
        )
        .await?;
        cx.delegate(
            "marketing",
            TaskSpec::new(format!(
                "Write {} announcement blog post",
                strip_user(&product)
            )),
        )
        .await?;
        count_work(cx, &task).await?;
        Ok(Outcome::AwaitSubtasks)
    }

    /// The CEO notes each deployment, and each task past its SLA (its
    /// chart subscribes it to both).
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        let what = match event.name.as_str() {
            DEPLOY_COMPLETE => event.payload["version"].as_str().unwrap_or("?").to_owned(),
            _ => event.payload["details"]["title"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        };
        eprintln!(
            "genbrain: {} noted {} of {what} from {}",
            cx.role(),
            event.name,
            event.from
        );
        Ok(())
    }
}

fn strip_user(product: &str) -> String {
    product.trim_start_matches("user ").to_owned()
}

/// The CTO splits the technical work between the engineers, with SLAs.
struct Cto(Knobs);

#[async_trait]
impl Agent for Cto {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.0, cx, &task);
        let work = [
            (
                "backend",
                "Create /api/v2/analytics endpoints with ClickHouse queries",
                120,
            ),
            (
                "frontend",
                "Build React dashboard with chart components",
                120,
            ),
            (
                "devops",
                "Set up analytics data pipeline and Grafana dashboards",
                90,
            ),
        ];
        for (role, title, sla) in work {
            cx.delegate(role, TaskSpec::new(title).sla_minutes(sla))
                .await?;
        }
        count_work(cx, &task).await?;
        Ok(Outcome::AwaitSubtasks)
    }
}

/// A specialist that does its task itself (here: pretends to, for
/// `--work-ms`). Backend also tells Frontend of its API contract change;
/// Frontend takes note of contract changes.
struct Specialist {
    artifact: &'static str,
    knobs: Knobs,
}

#[async_trait]
impl Agent for Specialist {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        announce_start(self.knobs, cx, &task);
        if cx.role() == "devops" {
            devops_checks_the_time(cx).await?;
        }
        tokio::time::sleep(self.knobs.work).await;
        if cx.role() == "backend" {
            // Sent when this handler's outcome commits: exactly once, even if
            // this attempt dies before that and another runs.
            cx.send_peer("frontend", &ApiContractChange::analytics_v2())?;
        }
        count_work(cx, &task).await?;
        // DevOps announces the deployment to whoever subscribes: published
        // when this handler's outcome commits, exactly once.
        let deploy_event = if cx.role() == "devops" {
            let id = cx.publish_event(
                DEPLOY_COMPLETE,
                &json!({ "version": "analytics-v2", "task_id": task.id.as_str() }),
            )?;
            Some(id)
        } else {
            None
        };
        if self.knobs.announce {
            eprintln!(
                "genbrain: {} finished task {} (attempt {})",
                cx.role(),
                task.id,
                cx.attempt()
            );
        }
        tracing::info!(role = %task.assigned_to, task = %task.title, "done");
        let mut result = json!({ self.artifact: task.title });
        if let Some(id) = deploy_event {
            result["deploy_event"] = json!(id);
        }
        Ok(Outcome::Complete(result))
    }

    /// Marketing writes a changelog post for each deployment (exactly once:
    /// staged with the event's handling).
    async fn on_event(&self, cx: &Context, event: Event) -> Result<(), AgentError> {
        if cx.role() != "marketing" {
            return Ok(());
        }
        let version = event.payload["version"].as_str().unwrap_or("?").to_owned();
        let post = format!("Changelog: {version} is live (deployed by {}).", event.from);
        stage_count(
            cx,
            CHANGELOG,
            event.id.as_str(),
            json!({ "event_id": event.id.as_str(), "post": post }),
        )
        .await?;
        eprintln!(
            "genbrain: {} wrote a changelog post for {} {version} (event {})",
            cx.role(),
            event.name,
            event.id
        );
        Ok(())
    }

    async fn on_peer(&self, cx: &Context, message: PeerMessage) -> Result<(), AgentError> {
        let change: ApiContractChange = message.decode()?;
        if change.kind != ApiContractChange::KIND {
            return Err(AgentError::permanent(format!(
                "unexpected peer message of type `{}` from {}",
                change.kind, message.from
            )));
        }
        // The task that sent it: the message is caused by its delivery.
        let cause = cx
            .envelope()
            .causation_id
            .as_ref()
            .map(|id| id.as_str().to_owned());
        stage_count(
            cx,
            PEER_MESSAGES,
            message.id.as_str(),
            json!({
                "type": change.kind,
                "from": message.from.as_str(),
                "to": cx.role().as_str(),
                "endpoint": change.endpoint,
                "change_type": change.change_type,
                "cause": cause,
            }),
        )
        .await?;
        eprintln!(
            "genbrain: {} got {} for {} from {} ({}; new response fields: {})",
            cx.role(),
            change.kind,
            change.endpoint,
            message.from,
            change.change_type,
            change
                .new_schema
                .response
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

/// DevOps stamps its pipeline with the time from the `time` MCP server, when
/// the org has one (`--mcp`): a real MCP tool call through the role's
/// granted tools.
async fn devops_checks_the_time(cx: &Context) -> Result<(), AgentError> {
    const TOOL: &str = "time.get_current_time";
    use agentorg::tools::ToolHostExt as _;
    // Retried only when the tool error says a retry can help.
    fn to_agent(e: agentorg::tools::ToolError) -> AgentError {
        if e.is_retryable() {
            AgentError::transient(e.to_string())
        } else {
            AgentError::permanent(e.to_string())
        }
    }
    let tools = cx.tools();
    let listed = tools.list_tools().await.map_err(to_agent)?;
    if !listed.iter().any(|t| t.name == TOOL) {
        return Ok(());
    }
    let out = tools
        .call_tool(TOOL, json!({ "timezone": "UTC" }))
        .await
        .map_err(to_agent)?;
    eprintln!(
        "genbrain: {} called MCP tool {TOOL}: {}",
        cx.role(),
        out.into_json()
    );
    Ok(())
}

/// The agent of `role`.
fn agent_for(role: &str, knobs: Knobs) -> anyhow::Result<Arc<dyn Agent>> {
    let specialist = |artifact| -> Arc<dyn Agent> { Arc::new(Specialist { artifact, knobs }) };
    Ok(match role {
        "ceo" => Arc::new(Ceo(knobs)),
        "cto" => Arc::new(Cto(knobs)),
        "cso" => specialist("review"),
        "marketing" => specialist("post"),
        "backend" => specialist("endpoint"),
        "frontend" => specialist("component"),
        "devops" => specialist("pipeline"),
        other => anyhow::bail!("genbrain has no agent for role `{other}`"),
    })
}

async fn backends(
    args: &Args,
    chart: &OrgChart,
) -> anyhow::Result<(Arc<dyn Transport>, Arc<dyn StateStore>)> {
    let transport: Arc<dyn Transport> = match &args.nats {
        Some(url) => nats_transport(url, chart).await?,
        None => Arc::new(MemoryTransport::new()),
    };
    let store: Arc<dyn StateStore> = match &args.firestore {
        Some(host_port) => firestore_store(host_port, &args.project).await?,
        None => Arc::new(MemoryStore::new()),
    };
    Ok((transport, store))
}

/// The MCP servers of `catalog`, started lazily (each on first use).
#[cfg(feature = "mcp")]
fn mcp_tools(catalog: &std::path::Path) -> anyhow::Result<agentorg::mcp::McpTools> {
    let catalog = agentorg::mcp::McpCatalog::load(catalog)?;
    Ok(catalog.start(agentorg::mcp::StartOptions::default())?)
}

#[cfg(not(feature = "mcp"))]
fn mcp_tools(_catalog: &std::path::Path) -> anyhow::Result<NoMcp> {
    anyhow::bail!("--mcp needs the MCP tool host: rebuild with `cargo run --example genbrain --features mcp -- --mcp examples/tools.toml`")
}

/// Stands in for `McpTools` without the `mcp` feature (never built).
#[cfg(not(feature = "mcp"))]
struct NoMcp;

#[cfg(not(feature = "mcp"))]
impl NoMcp {
    fn router(&self) -> Arc<dyn agentorg::tools::ToolHost> {
        Arc::new(agentorg::tools::ToolRouter::new())
    }
    async fn shutdown(&self) {}
}

/// A NATS JetStream transport for the chart's org on `url`.
#[cfg(feature = "nats")]
async fn nats_transport(url: &str, chart: &OrgChart) -> anyhow::Result<Arc<dyn Transport>> {
    let transport = agentorg::nats::NatsTransportBuilder::from_env()
        .with_server(url)
        .with_org(chart.org().as_str())
        .with_name("genbrain example")
        .build()
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok(Arc::new(transport))
}

#[cfg(not(feature = "nats"))]
async fn nats_transport(_url: &str, _chart: &OrgChart) -> anyhow::Result<Arc<dyn Transport>> {
    anyhow::bail!("--nats needs the NATS backend: rebuild with `cargo run --example genbrain --features nats -- --nats URL`")
}

/// A Firestore store on the emulator at `host_port`, project `project`.
#[cfg(feature = "firestore")]
async fn firestore_store(host_port: &str, project: &str) -> anyhow::Result<Arc<dyn StateStore>> {
    let store = agentorg::firestore::FirestoreStore::builder()
        .with_project_id(project)
        .with_emulator(host_port)
        .build()
        .await
        .with_context(|| format!("connecting to the Firestore emulator at {host_port}"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "firestore"))]
async fn firestore_store(_: &str, _: &str) -> anyhow::Result<Arc<dyn StateStore>> {
    anyhow::bail!("--firestore needs the Firestore backend: rebuild with `cargo run --example genbrain --features firestore -- --firestore HOST:PORT`")
}

/// Reads every task of `tree` back from Firestore over a new connection, and
/// says where the tree lives. Fails unless all are there, as in the tree.
#[cfg(feature = "firestore")]
async fn read_back_from_firestore(
    args: &Args,
    org: &agentorg::Name,
    tree: &TaskTree,
) -> anyhow::Result<bool> {
    use agentorg::store::{DocKey, StateStore as _};
    let Some(host_port) = &args.firestore else {
        return Ok(true);
    };
    let store = agentorg::firestore::FirestoreStore::builder()
        .with_project_id(&args.project)
        .with_emulator(host_port)
        .build()
        .await?;
    let collection = format!("agentorg/{org}/tasks");
    let mut found = 0;
    for task in tree.iter() {
        let key = DocKey::new(&collection, task.task_id.as_str())?;
        match store.get(&key).await? {
            Some(doc) if doc.value["status"] == serde_json::to_value(task.status)? => found += 1,
            Some(doc) => eprintln!(
                "genbrain: {key} in Firestore has status {}",
                doc.value["status"]
            ),
            None => eprintln!("genbrain: {key} is missing from Firestore"),
        }
    }
    let root = DocKey::new(&collection, tree.task_id.as_str())?;
    eprintln!(
        "genbrain: read {found} of {} task documents back from Firestore: project {}, collection {collection} (root {})",
        tree.len(),
        args.project,
        store.document_name(&root),
    );
    Ok(found == tree.len())
}

#[cfg(not(feature = "firestore"))]
async fn read_back_from_firestore(
    _: &Args,
    _: &agentorg::Name,
    _: &TaskTree,
) -> anyhow::Result<bool> {
    Ok(true)
}

/// Which roles this process hosts, and whether it drives (hosts the
/// principal): all roles and driving without `--roles`.
fn hosted_roles(args: &Args, chart: &OrgChart) -> anyhow::Result<(Vec<String>, bool)> {
    let all: Vec<String> = chart.roles().map(|r| r.name().to_string()).collect();
    let Some(list) = &args.roles else {
        return Ok((all, true));
    };
    if args.nats.is_none() || args.firestore.is_none() {
        anyhow::bail!(
            "--roles runs only part of the org in this process, and the other roles in other \
             processes, which must share the messaging and the state: give both --nats URL and \
             --firestore HOST:PORT (and the same --project everywhere); the in-memory backends \
             live inside one process"
        );
    }
    let principal = chart.principal();
    let mut hosted = Vec::new();
    let mut drives = false;
    for role in list.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        if role == principal.as_str() {
            drives = true;
        } else if !all.iter().any(|r| r == role) {
            anyhow::bail!(
                "--roles: `{role}` is not in the chart (its roles: {}, and the principal `{principal}`)",
                all.join(", ")
            );
        } else if !hosted.iter().any(|r| r == role) {
            hosted.push(role.to_owned());
        }
    }
    if hosted.is_empty() && !drives {
        anyhow::bail!("--roles: name at least one role (or `{principal}`)");
    }
    Ok((hosted, drives))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let stop = shutdown_signal(args.stop_on_stdin_eof);
    tokio::pin!(stop);
    let chart = OrgChart::from_toml_str(CHART).context("loading the GenBrain chart")?;
    let (hosted, drives) = hosted_roles(&args, &chart)?;
    let (transport, store) = backends(&args, &chart).await?;
    let org_name = chart.org().clone();
    let knobs = Knobs {
        work: Duration::from_millis(args.work_ms),
        announce: args.roles.is_some(),
    };
    let mut config = RuntimeConfig::default();
    if let Some(secs) = args.lease_secs {
        let lease = Duration::from_secs(secs);
        config = config.with_lease(lease).with_ack_wait(lease);
    }
    // What this process is, for its messages.
    let me = match (&args.roles, drives) {
        (None, _) => String::new(),
        (Some(_), true) if hosted.is_empty() => chart.principal().to_string(),
        (Some(_), true) => format!("{} and {}", chart.principal(), hosted.join(", ")),
        (Some(_), false) => hosted.join(", "),
    };
    if args.roles.is_none() {
        eprintln!(
            "genbrain: {} roles under `{}` on {transport} + {store}",
            chart.len(),
            chart.principal()
        );
    } else {
        eprintln!(
            "genbrain: {me} (pid {}) of the {} roles under `{}`, on {transport} + {store}, project {}",
            std::process::id(),
            chart.len(),
            chart.principal(),
            args.project
        );
    }
    let mut builder = Org::builder(chart)
        .transport(transport)
        .store(store)
        .config(config);
    for role in &hosted {
        builder = builder.agent_with(role, agent_for(role, knobs)?, AgentOptions::default());
    }
    let mcp = match &args.mcp {
        Some(catalog) => Some(mcp_tools(catalog)?),
        None => None,
    };
    if let Some(mcp) = &mcp {
        builder = builder.tools(mcp.router());
    }
    let org = builder.start().await?;

    let result = if drives {
        tokio::select! {
            r = drive(&org, &args, &org_name) => r,
            () = &mut stop => {
                eprintln!("genbrain: stopping (signal): draining in-flight work");
                Ok(false)
            }
        }
    } else {
        eprintln!("genbrain: {me} serving; SIGTERM or Ctrl-C stops it gracefully");
        stop.await;
        eprintln!("genbrain: {me} stopping (signal): draining in-flight work");
        Ok(true)
    };
    org.shutdown().await;
    if let Some(mcp) = &mcp {
        mcp.shutdown().await; // every MCP server process exits
    }
    if !drives {
        eprintln!("genbrain: {me} stopped");
    }
    result
}

/// The founder's part: delegates the request, waits for the tree, prints it,
/// and checks it. `Ok(true)` iff every task completed, was counted exactly
/// once, Frontend handled Backend's contract change, and (with Firestore) the
/// tree reads back.
async fn drive(org: &Org, args: &Args, org_name: &Name) -> anyhow::Result<bool> {
    let founder = org.principal();
    let root = founder
        .delegate("ceo", TaskSpec::new("Ship user analytics dashboard"))
        .await?;
    eprintln!("genbrain: founder delegated {} to ceo", root.task_id);
    let done = root.wait(Duration::from_secs(args.timeout)).await?;
    let tree = founder.task_tree(&root.task_id).await?;
    println!("{}", serde_json::to_string_pretty(&tree)?);
    let ok = tree.all_completed();
    eprintln!(
        "genbrain: root {} — {} tasks, {}",
        done.status,
        tree.len(),
        if ok {
            "all completed"
        } else {
            "NOT all completed"
        }
    );
    let checked = ok
        && counted_once(&**org.store(), org_name, &tree).await?
        && contract_change_handled(&**org.store(), org_name, &tree, Duration::from_secs(20))
            .await?
        && deploy_receipts(org, org_name, &tree, Duration::from_secs(20)).await?;
    let stored = read_back_from_firestore(args, org_name, &tree).await?;
    Ok(ok && checked && stored)
}

/// Whether every task of `tree` was counted exactly once in its role's
/// [`WORK`]; says which tasks were committed by a later attempt.
async fn counted_once(store: &dyn StateStore, org: &Name, tree: &TaskTree) -> anyhow::Result<bool> {
    let mut once = 0;
    let mut retried = Vec::new();
    for task in tree.iter() {
        let key = role_collection(org, &task.assigned_to, WORK)?.doc(task.task_id.as_str())?;
        let doc = store.get(&key).await?;
        let count = doc.as_ref().and_then(|d| d.value["count"].as_u64());
        match count {
            Some(1) => once += 1,
            other => eprintln!(
                "genbrain: task {} of {} counted {} times",
                task.task_id,
                task.assigned_to,
                other.unwrap_or(0)
            ),
        }
        let attempt = doc.as_ref().and_then(|d| d.value["attempt"].as_u64());
        if let Some(a @ 2..) = attempt {
            retried.push(format!("{}'s on attempt {a}", task.assigned_to));
        }
    }
    eprintln!(
        "genbrain: exactly-once bookkeeping: {once} of {} tasks counted once{}",
        tree.len(),
        if retried.is_empty() {
            String::new()
        } else {
            format!(" (committed by a retry: {})", retried.join(", "))
        }
    );
    Ok(once == tree.len())
}

/// Waits up to `limit` for Frontend's receipt of the contract change that
/// Backend's task of `tree` sent; whether it came, once.
async fn contract_change_handled(
    store: &dyn StateStore,
    org: &Name,
    tree: &TaskTree,
    limit: Duration,
) -> anyhow::Result<bool> {
    let Some(backend) = tree.iter().find(|t| t.assigned_to == "backend") else {
        eprintln!("genbrain: the tree has no backend task");
        return Ok(false);
    };
    let collection = role_collection(org, &Name::new("frontend")?, PEER_MESSAGES)?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let receipts: Vec<_> = store
            .list_all(&collection)
            .await?
            .into_iter()
            .filter(|d| d.value["cause"].as_str() == Some(backend.task_id.as_str()))
            .collect();
        if let [receipt] = receipts.as_slice() {
            let count = receipt.value["count"].as_u64().unwrap_or(0);
            eprintln!(
                "genbrain: frontend handled backend's api_contract_change (message {}) {}",
                receipt.key.id(),
                if count == 1 {
                    "exactly once".to_owned()
                } else {
                    format!("{count} times")
                }
            );
            return Ok(count == 1);
        }
        if receipts.len() > 1 {
            eprintln!(
                "genbrain: backend's task sent {} api_contract_change messages, not one",
                receipts.len()
            );
            return Ok(false);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "genbrain: frontend did not handle backend's api_contract_change within {limit:?}"
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the receipts of DevOps' `deploy.complete` event (waiting up to
/// `limit` for every subscriber) as `{"receipts": …}` on stdout; whether
/// every subscriber processed it, and Marketing wrote its post once.
async fn deploy_receipts(
    org: &Org,
    org_name: &Name,
    tree: &TaskTree,
    limit: Duration,
) -> anyhow::Result<bool> {
    let devops = match tree.iter().find(|t| t.assigned_to == "devops") {
        Some(t) => org.principal().task(&t.task_id).await?,
        None => None,
    };
    let id = devops
        .as_ref()
        .and_then(|t| t.result.as_ref())
        .and_then(|r| r["deploy_event"].as_str())
        .map(str::parse::<MessageId>);
    let Some(Ok(id)) = id else {
        eprintln!("genbrain: devops' result names no deploy event");
        return Ok(false);
    };
    let receipts = org.principal().receipts(&id).wait(limit).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({ "receipts": receipts }))?
    );
    let processed: Vec<String> = receipts
        .receipts
        .iter()
        .filter(|r| r.status == ReceiptStatus::Processed)
        .map(|r| format!("{} in {} ms", r.subscriber, r.latency_ms))
        .collect();
    eprintln!(
        "genbrain: {} {id} processed by {}{}",
        receipts.name,
        if processed.is_empty() {
            "no one".to_owned()
        } else {
            processed.join(", ")
        },
        if receipts.all_processed() {
            String::new()
        } else {
            format!("; NOT by {:?}", receipts.not_processed)
        }
    );
    let key = role_collection(org_name, &Name::new("marketing")?, CHANGELOG)?.doc(id.as_str())?;
    let post = org.store().get(&key).await?;
    let once = post.as_ref().and_then(|d| d.value["count"].as_u64()) == Some(1);
    match &post {
        Some(doc) if once => eprintln!(
            "genbrain: marketing's changelog post, written once: {}",
            doc.value["post"]
        ),
        Some(doc) => eprintln!(
            "genbrain: marketing's changelog post counted {}",
            doc.value["count"]
        ),
        None => eprintln!("genbrain: marketing wrote no changelog post for {id}"),
    }
    Ok(receipts.all_processed() && once)
}

/// From now on, listens for Ctrl-C and SIGTERM (and with `stdin_eof`, the
/// end of stdin); the future ends at the first. Listening starts at once, so
/// a signal during start-up is not lost: it stops the process gracefully
/// once it is up.
fn shutdown_signal(stdin_eof: bool) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        [SignalKind::interrupt(), SignalKind::terminate()].map(|kind| signal(kind).ok())
    };
    let eof = stdin_eof.then(|| {
        // A blocking read on a thread of its own: the process exits without
        // waiting for it.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
        rx
    });
    async move {
        #[cfg(unix)]
        let signalled = async move {
            let [int, term] = signals;
            tokio::select! {
                () = next_signal(int) => {}
                () = next_signal(term) => {}
            }
        };
        #[cfg(not(unix))]
        let signalled = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let eof = async move {
            match eof {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signalled => {}
            () = eof => {}
        }
    }
}

/// The next delivery of `signal`; never, if it could not be listened for.
#[cfg(unix)]
async fn next_signal(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("genbrain: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
