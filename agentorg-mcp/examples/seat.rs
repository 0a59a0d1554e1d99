//! A seat in the GenBrain org (of GenBrain's write-ups) for a real LLM client.
//!
//! The org runs in this process on the memory backends. One role (default
//! `cto`) is a seat served over MCP; the others are ordinary agents: the CEO
//! delegates the founder's task to the CTO, the CTO (when not seated) splits
//! it between backend and frontend, and the specialists complete what they
//! get. The founder delegates one task at start; when it ends, its tree is
//! printed on stderr and the example exits.
//!
//! Over stdio (configure it as an MCP server command of your LLM client):
//!
//! ```text
//! cargo run -q -p agentorg-mcp --example seat -- --role cto --task "Build analytics dashboard"
//! ```
//!
//! Over streamable HTTP on loopback, behind a bearer token (the client sends
//! `Authorization: Bearer $AGENTORG_SEAT_TOKEN` to `http://127.0.0.1:8848/mcp`):
//!
//! ```text
//! AGENTORG_SEAT_TOKEN=$(openssl rand -hex 16) \
//!   cargo run -p agentorg-mcp --example seat -- --role cto --http 127.0.0.1:8848
//! ```
//!
//! Logs go to stderr (stdout is the MCP channel over stdio).

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::agent::{agent_fn, Agent, AgentError, Context, Outcome, Task, TaskSpec};
use agentorg_core::chart::OrgChart;
use agentorg_core::runtime::Org;
use agentorg_core::tools::{LocalToolHost, ToolHost, ToolOutput, ToolRouter};
use agentorg_mcp::seat::{Seat, SeatToken};
use serde_json::json;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// An ordinary manager: splits its task between `to` and rolls the results up.
struct Manager(&'static [&'static str]);

#[agentorg_core::async_trait]
impl Agent for Manager {
    async fn on_task(&self, cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        for to in self.0 {
            cx.delegate(to, TaskSpec::new(format!("{} ({to} part)", task.title)))
                .await?;
        }
        Ok(Outcome::AwaitSubtasks)
    }
}

/// `time.now` and `git.log`, stand-ins for the org's MCP tools.
fn tools() -> Result<Arc<dyn ToolHost>, Error> {
    let time = LocalToolHost::new();
    time.register(
        "now",
        "The current time (UTC)",
        json!({"type": "object"}),
        |_| async { Ok(ToolOutput::structured(json!({"utc": unix_secs()}))) },
    )?;
    let git = LocalToolHost::new();
    git.register(
        "log",
        "Recent commits of the repository",
        json!({"type": "object"}),
        |_| async {
            Ok(ToolOutput::structured(
                json!({"commits": ["3f2a1c0 analytics: schema", "9b8e7d6 init"]}),
            ))
        },
    )?;
    Ok(Arc::new(
        ToolRouter::new()
            .mount("time".parse()?, Arc::new(time))?
            .mount("git".parse()?, Arc::new(git))?,
    ))
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Args {
    role: String,
    task: String,
    http: Option<String>,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        role: "cto".to_owned(),
        task: "Build analytics dashboard".to_owned(),
        http: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--role" => a.role = value()?,
            "--task" => a.task = value()?,
            "--http" => a.http = Some(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: seat [--role R] [--task T] [--http ADDR]"
                )
                .into())
            }
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let chart = OrgChart::from_toml_str(include_str!("../../examples/genbrain.toml"))?;
    let tools = tools()?;
    let seat = Seat::builder(chart.clone(), &args.role)
        .tools(Arc::clone(&tools))
        .build()?;

    let mut builder = Org::builder(chart).tools(tools);
    for role in [
        "ceo",
        "cto",
        "cso",
        "marketing",
        "backend",
        "frontend",
        "devops",
    ] {
        let agent: Arc<dyn Agent> = match role {
            _ if role == args.role => Arc::new(seat.agent()),
            "ceo" => Arc::new(Manager(&["cto"])),
            "cto" => Arc::new(Manager(&["backend", "frontend"])),
            _ => Arc::new(agent_fn(move |task| async move {
                Ok(Outcome::Complete(json!({"by": role, "done": task.title})))
            })),
        };
        builder = builder.agent_with(role, agent, Default::default());
    }
    let org = builder.start().await?;

    let shutdown = CancellationToken::new();
    let serving = {
        let seat = seat.clone();
        let shutdown = shutdown.clone();
        let http = args.http.clone();
        tokio::spawn(async move {
            match http {
                None => seat.serve_stdio(shutdown).await,
                Some(addr) => {
                    let token = std::env::var("AGENTORG_SEAT_TOKEN").unwrap_or_default();
                    let token = SeatToken::new(token)?;
                    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
                        agentorg_mcp::seat::SeatError::Unavailable {
                            message: format!("bind {addr}: {e}"),
                        }
                    })?;
                    eprintln!("seat `{}` at http://{addr}/mcp", seat.role());
                    seat.http(token).serve(listener, shutdown).await
                }
            }
        })
    };

    let founder = org.principal();
    let root = founder.delegate("ceo", TaskSpec::new(&args.task)).await?;
    eprintln!(
        "founder delegated {:?} ({}); seat `{}` waits for its client",
        args.task,
        root.task_id,
        seat.role()
    );
    tokio::select! {
        done = root.wait(Duration::from_secs(3600)) => {
            let done = done?;
            eprintln!("task {} ended {}", done.task_id, done.status);
            let tree = founder.task_tree(&root.task_id).await?;
            eprintln!("{}", serde_json::to_string_pretty(&tree)?);
        }
        served = serving => {
            eprintln!("the MCP session ended: {served:?}");
        }
    }
    shutdown.cancel();
    org.shutdown().await;
    Ok(())
}
