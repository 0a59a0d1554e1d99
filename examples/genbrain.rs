//! The GenBrain org of the seeds, as one process on the in-memory backends.
//!
//! The founder asks the CEO to "Ship user analytics dashboard". The CEO
//! delegates the technical work to the CTO, a security review to the CSO and
//! the announcement to Marketing; the CTO splits its part between Backend,
//! Frontend and DevOps. Every result rolls up, and the finished task tree is
//! printed as JSON in the seed's shape. The exit status is 0 only if every
//! task completed.
//!
//! ```text
//! cargo run --example genbrain
//! RUST_LOG=agentorg_core=debug cargo run --example genbrain   # every delivery's span
//! cargo run --example genbrain --features nats -- --nats nats://127.0.0.1:4222
//! cargo run --example genbrain --features firestore -- --firestore 127.0.0.1:8686
//! cargo run --example genbrain --features nats,firestore -- --nats nats://127.0.0.1:4222 --firestore 127.0.0.1:8686
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
//! org runs entirely on the seeds' stack.
//!
//! Ctrl-C or SIGTERM stops it gracefully: intake stops, in-flight handlers
//! finish, then it exits.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use agentorg::prelude::*;
use agentorg::store::{MemoryStore, StateStore};
use agentorg::transport::{MemoryTransport, Transport};
use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

/// The seeds' chart: founder → ceo → cto, cso, marketing; cto → backend,
/// frontend, devops; four peer channels; one delegation shortcut.
const CHART: &str = include_str!("genbrain.toml");

#[derive(Debug, Parser)]
#[command(
    about = "Run the seeds' GenBrain org: one request delegated down the chart and rolled up"
)]
struct Args {
    /// NATS server URL for the transport (needs `--features nats`); the
    /// org's streams are created if missing.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Firestore emulator HOST:PORT for the state store (needs `--features firestore`).
    #[arg(long, value_name = "HOST:PORT")]
    firestore: Option<String>,
    /// The Firestore project the state goes to (with `--firestore`).
    #[arg(long, default_value = "genbrain-demo")]
    project: String,
    /// How long to wait for the whole tree, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

/// The CEO decomposes the founder's request across its reports.
struct Ceo;

#[async_trait]
impl Agent for Ceo {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
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
        Ok(Outcome::AwaitSubtasks)
    }
}

fn strip_user(product: &str) -> String {
    product.trim_start_matches("user ").to_owned()
}

/// The CTO splits the technical work between the engineers, with SLAs.
struct Cto;

#[async_trait]
impl Agent for Cto {
    async fn on_task(&self, cx: &Context, _task: Task) -> Result<Outcome, AgentError> {
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
        Ok(Outcome::AwaitSubtasks)
    }
}

/// A specialist that does its task itself (here: pretends to, briefly).
fn specialist(artifact: &'static str) -> impl Agent {
    agent_fn(move |task| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tracing::info!(role = %task.assigned_to, task = %task.title, "done");
        Ok(Outcome::Complete(json!({ artifact: task.title })))
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
    tree: &agentorg::runtime::TaskTree,
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
    _: &agentorg::runtime::TaskTree,
) -> anyhow::Result<bool> {
    Ok(true)
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let chart = OrgChart::from_toml_str(CHART).context("loading the seed chart")?;
    let (transport, store) = backends(&args, &chart).await?;
    let org_name = chart.org().clone();
    eprintln!(
        "genbrain: {} roles under `{}` on {transport} + {store}",
        chart.len(),
        chart.principal()
    );
    let org = Org::builder(chart)
        .transport(transport)
        .store(store)
        .agent("ceo", Ceo)
        .agent("cto", Cto)
        .agent("cso", specialist("review"))
        .agent("marketing", specialist("post"))
        .agent("backend", specialist("endpoint"))
        .agent("frontend", specialist("component"))
        .agent("devops", specialist("pipeline"))
        .start()
        .await?;

    let founder = org.principal();
    let outcome = async {
        let root = founder
            .delegate("ceo", TaskSpec::new("Ship user analytics dashboard"))
            .await?;
        eprintln!("genbrain: founder delegated {} to ceo", root.task_id);
        let done = founder
            .wait_for(&root.task_id, Duration::from_secs(args.timeout))
            .await?;
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
        let stored = read_back_from_firestore(&args, &org_name, &tree).await?;
        anyhow::Ok(ok && stored)
    };
    let result = tokio::select! {
        r = outcome => r,
        () = shutdown_signal() => {
            eprintln!("genbrain: stopping (signal): draining in-flight work");
            Ok(false)
        }
    };
    org.shutdown().await;
    result
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
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
