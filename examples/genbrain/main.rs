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
//! cargo run --example genbrain -- --cicd
//! cargo run --example genbrain -- --cicd --fail-step smoke_test
//! cargo run --example genbrain -- --blackboard
//! cargo run --example genbrain -- --meeting
//! ```
//!
//! # The CI/CD saga (`--cicd`)
//!
//! Instead of the task tree, the founder publishes `pr.merged` (a webhook's
//! event); DevOps, which subscribes to it, starts the chart's saga `cicd`
//! (`cicd.rs`): DevOps deploys, DevOps runs the smoke test (which publishes
//! `deploy.complete`), and Marketing writes the changelog once every
//! subscriber of `deploy.complete` processed it (the step's gate). Each step
//! starts on the previous one's completion, not on the order events arrive.
//! The founder prints the run as `{"saga": {"id", "name", "status",
//! "steps": [{"name", "role", "status", "runs"}], "compensations",
//! "rollback_events"}}` and exits 0 if it completed. With `--fail-step
//! STEP` that step fails: the deploy is compensated (DevOps rolls it back,
//! which publishes `deploy.rollback`; Marketing, subscribed, takes note), and
//! the exit status is 0 if the saga ended compensated and every subscriber
//! processed the rollback event. `--hold-compensation-ms` makes the
//! rollback wait after it says it started (for the test that kills it
//! there). Over `--nats`/`--firestore`, and one process per role, too.
//!
//! # The blackboard (`--blackboard`)
//!
//! Instead of the task tree, the founder creates the project of GenBrain's
//! write-up, `proj-analytics-dashboard` (`board.rs`): api_spec (Backend),
//! ui_components (Frontend), security_review (CSO, blocked by api_spec)
//! and deployment_config (DevOps), and asks the CEO to run it, who hands it
//! to the CTO. The CTO
//! records its decision ("Use ClickHouse for analytics storage, not
//! BigQuery") and gives each engineer its artifact; each claims it, works
//! and completes it. Nobody messages the CSO: its review starts because
//! api_spec completed. The founder prints the project document as JSON in
//! GenBrain's shape (`project_id`, `status`, `artifacts` with `owner`,
//! `status`, `path`, `blocked_by`, `updated_at`, and `decisions`) and exits
//! 0 if every artifact is complete, the CSO completed its review without a
//! task, and the decision is in the log. Over `--nats`/`--firestore`, and
//! one process per role, too (a project id already taken in the Firestore
//! project gets a suffix, `-2`, …).
//!
//! # The architecture review (`--meeting`)
//!
//! Instead of the task tree, the founder asks the CEO for the write-up's
//! architecture review, who hands it to the CTO, who schedules it
//! (`meeting.rs`, the request of `meeting-request.json`): each of the CTO,
//! Backend, Frontend, DevOps and the CSO speaks on each of the three agenda
//! items in turn; the CTO proposes "Use ClickHouse with column-level
//! encryption for PII fields"; the CTO, Backend and DevOps approve, the CSO
//! approves on the condition of an encryption-at-rest audit, Frontend
//! abstains (sealed ballots); Backend, DevOps and the CSO take their action
//! items as tasks of their own and complete them. The founder prints the
//! stored record as JSON (the write-up's `meeting_id`, `decision`, `votes`,
//! `conditions`, `action_items`, plus the minutes, absences, rule and
//! tally) and exits 0 if it is as in the write-up and every action item
//! completed. Over `--nats`/`--firestore` too (a meeting id already taken
//! gets a suffix, `-2`, …).
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
//!
//! The agents are in `agents.rs`, the founder's checks in `checks.rs`, the
//! chart in `../genbrain.toml`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agentorg::prelude::*;
use agentorg::store::{MemoryStore, StateStore};
use agentorg::transport::{MemoryTransport, Transport};
use anyhow::Context as _;
use clap::Parser;

mod agents;
mod board;
mod checks;
mod cicd;
#[cfg(feature = "llm")]
mod llm;
mod meeting;

use agents::{agent_for, Knobs};
use checks::{contract_change_handled, counted_once, deploy_receipts, read_back_from_firestore};

/// GenBrain's chart: founder → ceo → cto, cso, marketing; cto → backend,
/// frontend, devops; four peer channels; one delegation shortcut.
const CHART: &str = include_str!("../genbrain.toml");

/// The exactly-once counters of a role's tasks, one document per task, in
/// the role's own namespace.
const WORK: &str = "work";
/// Marketing's changelog posts, one document per `deploy.complete` event, in
/// its own namespace.
const CHANGELOG: &str = "changelog";
/// The event DevOps publishes when its pipeline is done.
const DEPLOY_COMPLETE: &str = "deploy.complete";
/// DevOps' rollbacks, one document per saga, in its namespace.
const ROLLBACKS: &str = "rollbacks";
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
    /// Run the CI/CD choreography instead of the task tree: the founder
    /// publishes `pr.merged`, DevOps' saga deploys, runs the smoke test and
    /// has Marketing write the changelog; the saga is printed as JSON.
    #[arg(long)]
    cicd: bool,
    /// With `--cicd`: make this step of the saga fail (`deploy`,
    /// `smoke_test` or `changelog`), so the deploy is rolled back and
    /// `deploy.rollback` published.
    #[arg(long, value_name = "STEP", requires = "cicd", value_parser = clap::builder::PossibleValuesParser::new(cicd::STEPS))]
    fail_step: Option<String>,
    /// Run the analytics-dashboard blackboard instead of the task tree: the
    /// founder creates the project, the CEO hands it to the CTO, who records its decision and gives
    /// its engineers their artifacts, the CSO's review starts when api_spec
    /// completes; the project is printed as JSON.
    #[arg(long, conflicts_with = "cicd")]
    blackboard: bool,
    /// Run the architecture review meeting instead of the task tree: the
    /// CTO schedules it, each participant speaks on each agenda item, the
    /// CTO proposes, all vote (sealed), the action items run as tasks; the
    /// stored record is printed as JSON.
    #[arg(long, conflicts_with_all = ["cicd", "blackboard"])]
    meeting: bool,
    /// How long DevOps' rollback takes, in milliseconds, after it says on
    /// stderr that it started (for a test that kills it there).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    hold_compensation_ms: u64,
    /// With `--meeting`: how long the CTO holds its ballot, in
    /// milliseconds, after it says on stderr that it does (for a test that
    /// kills it there).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    hold_ballot_ms: u64,
    /// An MCP catalog (TOML) whose servers are the org's tools (needs
    /// `--features mcp`), e.g. `examples/tools.toml`.
    #[arg(long, value_name = "CATALOG")]
    mcp: Option<std::path::PathBuf>,
    /// A model catalog (TOML, e.g. `examples/models.toml`; needs
    /// `--features llm`): the roles of `--llm-roles` think, through
    /// `--llm-model` of it.
    #[arg(long, value_name = "MODEL_CATALOG", conflicts_with_all = ["cicd", "blackboard", "meeting"])]
    llm: Option<std::path::PathBuf>,
    /// With `--llm`: the model of the catalog the thinking roles use.
    #[arg(long, value_name = "NAME", default_value = "local", requires = "llm")]
    llm_model: String,
    /// With `--llm`: the roles that think (`LlmAgent`s); the others stay
    /// scripted.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ROLE,…",
        default_value = "cto,marketing",
        requires = "llm"
    )]
    llm_roles: Vec<String>,
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

/// The thinking agents of `--llm-roles` among `hosted` (none without
/// `--llm`).
#[cfg(feature = "llm")]
fn thinking_agents(
    args: &Args,
    hosted: &[String],
    knobs: Knobs,
) -> anyhow::Result<Vec<(String, Arc<dyn Agent>)>> {
    let Some(path) = &args.llm else {
        return Ok(Vec::new());
    };
    let catalog = agentorg::llm::ModelCatalog::load(path)
        .with_context(|| format!("loading the model catalog {}", path.display()))?;
    let mut out = Vec::new();
    for role in args.llm_roles.iter().map(|r| r.trim()) {
        llm::can_think(role)?;
        if hosted.iter().any(|h| h == role) {
            out.push((
                role.to_owned(),
                llm::agent(role, &catalog, &args.llm_model, knobs)?,
            ));
        }
    }
    Ok(out)
}

#[cfg(not(feature = "llm"))]
fn thinking_agents(
    args: &Args,
    _hosted: &[String],
    _knobs: Knobs,
) -> anyhow::Result<Vec<(String, Arc<dyn Agent>)>> {
    if args.llm.is_some() {
        anyhow::bail!("--llm needs the models: rebuild with `cargo run --example genbrain --features llm -- --llm examples/models.toml --llm-roles cto,marketing`");
    }
    Ok(Vec::new())
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
        hold_compensation: Duration::from_millis(args.hold_compensation_ms),
        hold_ballot: Duration::from_millis(args.hold_ballot_ms),
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
    let thinking = thinking_agents(&args, &hosted, knobs)?;
    for role in &hosted {
        let agent = match thinking.iter().find(|(r, _)| r == role) {
            Some((_, agent)) => Arc::clone(agent),
            None => agent_for(role, knobs)?,
        };
        builder = builder.agent_with(role, agent, AgentOptions::default());
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
            r = async {
                if args.cicd {
                    cicd::drive(&org, args.fail_step.as_deref(), Duration::from_secs(args.timeout)).await
                } else if args.blackboard {
                    board::drive(&org, Duration::from_secs(args.timeout)).await
                } else if args.meeting {
                    meeting::drive(&org, Duration::from_secs(args.timeout)).await
                } else {
                    drive(&org, &args, &org_name).await
                }
            } => r,
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
