//! The GenBrain org as 8 OS processes on NATS + Firestore, one of them killed
//! with SIGKILL mid-task and started again: its task completes exactly once
//! and the tree completes.
//!
//! The processes are the `genbrain` example itself (`examples/genbrain/`),
//! one per role plus the founder's (`--roles <role>`), on a fresh nats-server
//! and a unique project of the Firestore emulator (both from
//! `agentorg-testkit`), with the lease and ack wait cut to 2 s
//! (`--lease-secs 2`) and each specialist working 3 s (`--work-ms 3000`).
//! While Backend's task is `in_progress` (polled in Firestore), the backend
//! process gets SIGKILL and is started again with the same arguments. Then:
//!
//! * the founder's process exits 0 with the whole tree completed (its stdout,
//!   and every task document in Firestore);
//! * every task was counted exactly once: the example's specialists stage an
//!   increment of a per-task counter with their outcome (exactly-once
//!   bookkeeping), and every counter in Firestore is 1;
//! * Backend's handler ran twice: its claim says 2 attempts, the counter was
//!   committed by attempt 2, the killed process's log shows attempt 1 started
//!   and never finished, the new one's shows attempt 2 finished;
//! * Frontend handled Backend's API contract change exactly once;
//! * DevOps' `deploy.complete` event was processed by Marketing and the CEO,
//!   each in its own process (the founder's receipts), and Marketing wrote
//!   its changelog post once;
//! * every role process, sent SIGTERM, drains and exits 0.
//!
//! A second scenario, the CI/CD saga killed mid-compensation: DevOps,
//! Marketing and the founder (`--cicd --fail-step smoke_test`) in processes
//! of their own on a fresh nats-server and project; the smoke test fails, DevOps starts
//! compensating the deploy and holds there (`--hold-compensation-ms`, after
//! saying so on stderr, before its commit). The test waits for that line
//! and for the saga document to say `compensating`, SIGKILLs DevOps and
//! starts it again (without the hold). Then the founder exits 0 with the
//! saga compensated, and in Firestore: the compensation ran once as far as
//! the store knows (`compensations == ["deploy"]`, one run of it, one
//! rollback event), DevOps' rollback counter is 1, committed by attempt 2,
//! and Marketing got `deploy.rollback` once.
//!
//! A third scenario, the blackboard (`--blackboard`): the CSO in a process
//! of its own, Backend in another, the founder with the CEO, CTO, Frontend
//! and DevOps in a third. Backend completes api_spec in its process; the
//! CSO, which no one messages (no task of it in Firestore), starts its
//! review in its process on the ready notice the completion's commit
//! carried; the founder exits 0 and prints the project with every artifact
//! complete, and the review's history says the CSO completed it after
//! api_spec completed.
//!
//! A fourth scenario (`genbrain_processes/meeting.rs`), the architecture
//! review (`--meeting`), each participant in a process of its own: the CTO
//! (facilitator) holds its ballot (`--hold-ballot-ms`); once the four
//! other ballots are in Firestore it gets SIGKILL and starts again. The
//! founder exits 0 with the record as written and the action items done;
//! five ballots, five voters and fifteen turns, each once.
//!
//! A fifth scenario (`genbrain_processes/llm.rs`, feature `llm`): the CTO
//! and Marketing think, on a scripted model the test serves over HTTP; the
//! CTO's process gets SIGKILL while its task waits for its subtasks, and the
//! new process resumes the conversation from Firestore and completes.
//!
//! A `harness = false` test (`[[test]]` in the root Cargo.toml, features
//! `nats` and `firestore`): one scenario, its own tokio runtime.
//!
//! **Finding the example binary.** The test runs `$CARGO build --example
//! genbrain` itself, with the features and the profile the test was built
//! with (read from `cfg!` and from the test binary's path,
//! `<target>/<profile>/deps/…`) and the environment it was run with
//! (`CARGO_TARGET_DIR` is inherited), and takes the binary's path from
//! cargo's JSON messages. So `cargo test` never runs a stale example, and
//! when the example is up to date the build is a no-op (no second full
//! build: the features match the test's, so every artifact is shared). A
//! test run with `--target-dir` on the command line (not in the environment)
//! builds the example in the default target directory instead: slower, still
//! correct.
//!
//! Servers: skipped, loudly, without `nats-server` or the emulator, unless
//! `AGENTORG_REQUIRE_SERVERS=1` (then it fails), like the test kit's
//! `nats_or_skip!`. Every process is killed when the test ends, also on
//! failure (a guard with `Drop`); and each reads a pipe from the test
//! (`--stop-on-stdin-eof`), so none outlives the test binary even if it is
//! killed. The processes' logs are kept under `CARGO_TARGET_TMPDIR`, and the
//! end of each is printed on failure.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agentorg::firestore::FirestoreStore;
use agentorg::store::{CollectionPath, DocKey, StateStore, StateStoreExt};
use agentorg_testkit::{firestore_or_skip, nats_or_skip, FirestoreEmulator, NatsServer};
use serde_json::Value;

const NAME: &str = "genbrain_processes";
/// The roles, each in a process of its own (the founder's is the eighth).
const ROLES: [&str; 7] = [
    "ceo",
    "cto",
    "cso",
    "marketing",
    "backend",
    "frontend",
    "devops",
];
/// The role whose process is killed mid-task.
const VICTIM: &str = "backend";
const LEASE_SECS: &str = "2";
const WORK_MS: &str = "3000";
/// How long the founder waits for the tree (its `--timeout`), and a little
/// less than what the test waits for the founder.
const FOUNDER_TIMEOUT: Duration = Duration::from_secs(45);
const TASKS: &str = "agentorg/genbrain/tasks";
const CLAIMS: &str = "agentorg/genbrain/claims";
const SAGAS: &str = "agentorg/genbrain/sagas";
/// The example's exactly-once bookkeeping (see `examples/genbrain/agents.rs`): the
/// counters of tasks, `work` in each role's namespace…
const WORK: &str = "work";
/// …and Frontend's receipts of contract changes, in its namespace.
const PEER_MESSAGES: &str = "peer_messages";

#[cfg(feature = "llm")]
#[path = "genbrain_processes/llm.rs"]
mod llm;
#[path = "genbrain_processes/meeting.rs"]
mod meeting;
#[path = "genbrain_processes/processes.rs"]
mod processes;

use processes::Processes;

fn main() {
    let Some(nats) = nats_or_skip!() else { return };
    let Some(firestore) = firestore_or_skip!() else {
        return;
    };
    let started = Instant::now();
    let exe = build_example();
    eprintln!(
        "{NAME}: example {} ready after {:.1} s",
        exe.display(),
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(scenario(&exe, &nats, &firestore));
    drop(nats);
    // A fresh server: nothing of the first scenario's streams.
    let Some(nats) = nats_or_skip!() else { return };
    runtime.block_on(saga_scenario(&exe, &nats, &firestore));
    drop(nats);
    let Some(nats) = nats_or_skip!() else { return };
    runtime.block_on(board_scenario(&exe, &nats, &firestore));
    drop(nats);
    let Some(nats) = nats_or_skip!() else { return };
    runtime.block_on(meeting::meeting_scenario(&exe, &nats, &firestore));
    #[cfg(feature = "llm")]
    {
        drop(nats);
        let Some(nats) = nats_or_skip!() else { return };
        runtime.block_on(llm::llm_scenario(&exe, &nats, &firestore));
    }
    eprintln!(
        "test {NAME} ... ok ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    );
}

/// Builds the genbrain example with this test's features and profile, and
/// returns the executable's path (from cargo's JSON messages).
fn build_example() -> PathBuf {
    let me = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile dir>/deps/<this test>
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = match profile_dir {
        "debug" => "dev",
        other => other,
    };
    let mut features = vec!["nats", "firestore"];
    if cfg!(feature = "mcp") {
        features.push("mcp");
    }
    if cfg!(feature = "llm") {
        features.push("llm");
    }
    let mut cargo = Command::new(env!("CARGO"));
    // What cargo set for running this test (CARGO_MANIFEST_DIR, CARGO_PKG_*,
    // …) must not reach the build: build scripts that watch such variables
    // (ring's watches CARGO_MANIFEST_DIR) would see a change and rebuild, here
    // and again in the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            )
        {
            cargo.env_remove(name);
        }
    }
    let output = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", "genbrain", "--profile", profile])
        .args(["--features", &features.join(",")])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build --example genbrain");
    assert!(
        output.status.success(),
        "cargo build --example genbrain --features {} failed: {}",
        features.join(","),
        output.status
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "genbrain"
                && m["target"]["kind"][0] == "example"
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no executable for the genbrain example")
}

async fn scenario(exe: &Path, nats: &NatsServer, firestore: &FirestoreEmulator) {
    let t0 = Instant::now();
    let (mut org, store) = processes(exe, nats, firestore, WORK_MS).await;
    for role in ROLES {
        org.start(role);
    }
    org.start("founder");

    // Backend's task in progress: SIGKILL its process, start it again.
    let task = until(
        "backend's task to be in_progress",
        Duration::from_secs(30),
        || async {
            tasks(&store)
                .await
                .into_iter()
                .find(|t| t["assigned_to"] == VICTIM && t["status"] == "in_progress")
        },
    )
    .await;
    let task_id = task["task_id"].as_str().expect("a task id").to_owned();
    // The task is in_progress once the claim commits, a moment before the
    // handler logs that it started: wait for the log (real readiness), so
    // the kill lands mid-task on a loaded machine too.
    let started = format!("{VICTIM} started task {task_id}");
    until(
        "backend to log that it started its task",
        Duration::from_secs(30),
        || async {
            org.read(&format!("{VICTIM}.1.log"))
                .contains(&started)
                .then_some(())
        },
    )
    .await;
    org.kill9(VICTIM);
    eprintln!(
        "{NAME}: {:.1} s: {VICTIM}'s task {task_id} in_progress: SIGKILLed its process",
        t0.elapsed().as_secs_f64()
    );
    org.start(VICTIM);

    // The founder ends, happily.
    let status = org
        .wait_founder(FOUNDER_TIMEOUT + Duration::from_secs(10))
        .await;
    eprintln!(
        "{NAME}: {:.1} s: the founder's process exited: {status}",
        t0.elapsed().as_secs_f64()
    );
    assert!(status.success(), "the founder's process failed: {status}");
    // Two JSON documents: the tree, then the deploy event's receipts.
    let stdout = org.read("founder.stdout");
    let documents: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("the founder printed JSON documents");
    let [printed, deploy] = documents.as_slice() else {
        panic!("the founder printed the tree and the receipts, not: {stdout}");
    };
    let mut processed: Vec<&str> = deploy["receipts"]["receipts"]
        .as_array()
        .expect("a receipts list")
        .iter()
        .filter(|r| r["status"] == "processed")
        .filter_map(|r| r["subscriber"].as_str())
        .collect();
    processed.sort_unstable();
    assert_eq!(
        processed,
        ["ceo", "marketing"],
        "deploy.complete processed by both subscribers, each in its own process: {deploy:#}"
    );
    let printed: Vec<&Value> = flatten(printed);
    assert_eq!(printed.len(), 7, "the printed tree has 7 tasks");
    assert!(
        printed.iter().all(|t| t["status"] == "completed"),
        "the printed tree is all completed"
    );

    // The tree in Firestore: 7 tasks, all completed.
    let stored = tasks(&store).await;
    assert_eq!(stored.len(), 7, "7 task documents: {stored:#?}");
    for t in &stored {
        assert_eq!(t["status"], "completed", "task {t:#}");
    }

    // Exactly once: every task counted once; backend's by its attempt 2.
    let mut counters = Vec::new();
    for role in ROLES {
        counters.extend(docs(&store, &format!("agentorg/genbrain/roles/{role}/{WORK}")).await);
    }
    assert_eq!(counters.len(), 7, "one counter per task: {counters:#?}");
    for c in &counters {
        assert_eq!(c["count"], 1, "counted once: {c:#}");
    }
    let counter = counters
        .iter()
        .find(|c| c["task_id"] == task_id.as_str())
        .expect("backend's counter");
    assert_eq!(counter["attempt"], 2, "committed by attempt 2: {counter:#}");
    let claim = get(&store, CLAIMS, &format!("{VICTIM}.{task_id}"))
        .await
        .expect("backend's claim on its task");
    assert_eq!(claim["attempts"], 2, "two runs of the handler: {claim:#}");
    assert_eq!(claim["state"], "done", "claim {claim:#}");
    let first = org.read(&format!("{VICTIM}.1.log"));
    let second = org.read(&format!("{VICTIM}.2.log"));
    assert!(
        first.contains(&format!("{VICTIM} started task {task_id}"))
            && first.contains("(attempt 1,")
            && !first.contains("finished task"),
        "the killed process started attempt 1 and never finished it:\n{first}"
    );
    assert!(
        second.contains("(attempt 2,") && second.contains(&format!("finished task {task_id}")),
        "the restarted process ran attempt 2 to its end:\n{second}"
    );

    // Frontend handled backend's contract change, once.
    let receipts = docs(
        &store,
        &format!("agentorg/genbrain/roles/frontend/{PEER_MESSAGES}"),
    )
    .await;
    assert_eq!(receipts.len(), 1, "one contract change: {receipts:#?}");
    let receipt = &receipts[0];
    assert_eq!(receipt["count"], 1, "{receipt:#}");
    assert_eq!(receipt["from"], VICTIM, "{receipt:#}");
    assert_eq!(receipt["to"], "frontend", "{receipt:#}");
    assert_eq!(receipt["cause"], task_id.as_str(), "{receipt:#}");
    assert_eq!(receipt["endpoint"], "/api/v2/analytics", "{receipt:#}");

    // Marketing wrote one changelog post, for the event the founder saw.
    let posts = docs(&store, "agentorg/genbrain/roles/marketing/changelog").await;
    assert_eq!(posts.len(), 1, "one changelog post: {posts:#?}");
    assert_eq!(posts[0]["count"], 1, "{:#}", posts[0]);
    assert_eq!(
        posts[0]["event_id"], deploy["receipts"]["event"],
        "the post is about the event: {:#}",
        posts[0]
    );

    // SIGTERM stops each role process gracefully.
    let stopped = org.terminate_all(Duration::from_secs(30)).await;
    for (name, status) in &stopped {
        assert!(
            status.success(),
            "{name} exited {status} after SIGTERM:\n{}",
            org.read(&format!("{name}.log"))
        );
    }
    eprintln!(
        "{NAME}: {:.1} s: {} role processes stopped by SIGTERM, all with status 0",
        t0.elapsed().as_secs_f64(),
        stopped.len()
    );
}

/// The CI/CD saga, its DevOps process killed mid-compensation (see the
/// module's docs).
async fn saga_scenario(exe: &Path, nats: &NatsServer, firestore: &FirestoreEmulator) {
    let t0 = Instant::now();
    let (mut org, store) = processes(exe, nats, firestore, "100").await;
    // Held far longer than the test waits: only the kill ends attempt 1.
    org.start_with("devops", &["--hold-compensation-ms", "600000"]);
    org.start("marketing");
    org.start_with("founder", &["--cicd", "--fail-step", "smoke_test"]);

    // DevOps says it is compensating, and the saga document agrees: kill it.
    until(
        "devops to start compensating",
        Duration::from_secs(30),
        || async {
            org.read("devops.1.log")
                .contains("devops compensating deploy")
                .then_some(())
        },
    )
    .await;
    let saga = until(
        "the saga to be compensating",
        Duration::from_secs(10),
        || async {
            docs(&store, SAGAS).await.into_iter().find(|r| {
                r["status"] == "compensating" && r["steps"][0]["status"] == "compensating"
            })
        },
    )
    .await;
    let saga_id = saga["saga_id"].as_str().expect("a saga id").to_owned();
    org.kill9("devops");
    eprintln!(
        "{NAME}: {:.1} s: saga {saga_id} compensating deploy: SIGKILLed devops",
        t0.elapsed().as_secs_f64()
    );
    org.start("devops");

    let status = org
        .wait_founder(FOUNDER_TIMEOUT + Duration::from_secs(10))
        .await;
    assert!(status.success(), "the founder's process failed: {status}");
    let printed: Value =
        serde_json::from_str(&org.read("founder.stdout")).expect("the founder printed the saga");
    assert_eq!(printed["saga"]["status"], "compensated", "{printed:#}");
    assert_eq!(
        printed["saga"]["compensations"],
        serde_json::json!(["deploy"])
    );

    // Once, in the store: one compensation, one run of it, one rollback
    // event, one rollback counted — by the second attempt.
    let saga = get(&store, SAGAS, &saga_id)
        .await
        .expect("the saga document");
    assert_eq!(saga["status"], "compensated", "{saga:#}");
    assert_eq!(
        saga["compensations"],
        serde_json::json!(["deploy"]),
        "{saga:#}"
    );
    assert_eq!(saga["steps"][0]["compensation_runs"], 1, "{saga:#}");
    assert_eq!(saga["steps"][1]["status"], "failed", "{saga:#}");
    assert_eq!(saga["rollback_events"].as_array().map(Vec::len), Some(1));
    let rollback = get(&store, "agentorg/genbrain/roles/devops/rollbacks", &saga_id)
        .await
        .expect("devops' rollback counter");
    assert_eq!(rollback["count"], 1, "rolled back once: {rollback:#}");
    assert_eq!(rollback["attempt"], 2, "by attempt 2: {rollback:#}");
    let killed = org.read("devops.1.log");
    assert!(
        killed.contains("compensating deploy of saga") && !killed.contains("rolled back deploy"),
        "the killed process started the compensation and never finished it:\n{killed}"
    );
    assert!(
        org.read("devops.2.log")
            .contains("rolled back deploy of saga")
            && org.read("devops.2.log").contains("(attempt 2)"),
        "the new devops process finished it, as attempt 2"
    );
    let marketing = org.read("marketing.1.log");
    assert_eq!(
        marketing.matches("marketing got deploy.rollback").count(),
        1,
        "marketing got deploy.rollback once:\n{marketing}"
    );
    for (name, status) in org.terminate_all(Duration::from_secs(30)).await {
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }
    eprintln!(
        "{NAME}: {:.1} s: saga scenario done",
        t0.elapsed().as_secs_f64()
    );
}

async fn board_scenario(exe: &Path, nats: &NatsServer, firestore: &FirestoreEmulator) {
    let t0 = Instant::now();
    let (mut org, store) = processes(exe, nats, firestore, "200").await;
    org.start("cso");
    org.start("backend");
    org.start_with(
        "founder",
        &["--blackboard", "--roles", "ceo,cto,frontend,devops"],
    );
    let status = org
        .wait_founder(FOUNDER_TIMEOUT + Duration::from_secs(10))
        .await;
    assert!(status.success(), "the founder's process failed: {status}");
    let printed: Value =
        serde_json::from_str(&org.read("founder.stdout")).expect("the founder printed the project");
    assert_eq!(printed["status"], "complete", "{printed:#}");
    let id = printed["project_id"].as_str().expect("a project id");
    for (name, a) in printed["artifacts"].as_object().expect("artifacts") {
        assert_eq!(a["status"], "complete", "{name}: {printed:#}");
    }
    assert_eq!(
        printed["artifacts"]["security_review"]["blocked_by"],
        "api_spec"
    );
    assert_eq!(printed["decisions"][0]["agent"], "cto", "{printed:#}");
    // Each in its own process: Backend completed the spec, the CSO heard.
    assert!(
        org.read("backend.1.log")
            .contains("backend completed api_spec"),
        "backend's process completed api_spec"
    );
    let cso = org.read("cso.1.log");
    assert!(
        cso.contains("cso starts security_review") && cso.contains("api_spec"),
        "the CSO's process started the review on api_spec's completion:\n{cso}"
    );
    assert!(
        !tasks(&store)
            .await
            .iter()
            .any(|t| t["assigned_to"] == "cso"),
        "nobody gave the CSO a task"
    );
    let artifacts = format!("agentorg/genbrain/projects/{id}/artifacts");
    let history = |name: &str| format!("{artifacts}/{name}/history");
    let review = docs(&store, &history("security_review")).await;
    let spec = docs(&store, &history("api_spec")).await;
    let completed_at = |changes: &[Value]| {
        changes
            .iter()
            .find(|c| c["to"] == "complete")
            .and_then(|c| c["at"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    };
    assert_eq!(review.len(), 1, "the review changed once: {review:#?}");
    assert_eq!(review[0]["by"], "cso");
    let (spec_done, review_done) = (completed_at(&spec), completed_at(&review));
    assert!(
        spec_done.is_some() && review_done >= spec_done,
        "the review completed after the spec: {spec_done:?} {review_done:?}"
    );
    for (name, status) in org.terminate_all(Duration::from_secs(30)).await {
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }
    eprintln!(
        "{NAME}: {:.1} s: blackboard scenario done",
        t0.elapsed().as_secs_f64()
    );
}

/// The processes of an org on `nats` and a fresh project of `firestore`
/// (none started yet; each specialist works `work_ms`), and a store on
/// that project.
async fn processes(
    exe: &Path,
    nats: &NatsServer,
    firestore: &FirestoreEmulator,
    work_ms: &str,
) -> (Processes, FirestoreStore) {
    let project = firestore.unique_project();
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(NAME)
        .join(&project);
    std::fs::create_dir_all(&logs).expect("a directory for the processes' logs");
    eprintln!(
        "{NAME}: project {project} on {}, nats {}; logs in {}",
        firestore.host_port(),
        nats.url(),
        logs.display()
    );
    let args: Vec<String> = [
        "--nats",
        &nats.url(),
        "--firestore",
        &firestore.host_port(),
        "--project",
        &project,
        "--lease-secs",
        LEASE_SECS,
        "--work-ms",
        work_ms,
        "--timeout",
        &FOUNDER_TIMEOUT.as_secs().to_string(),
        "--stop-on-stdin-eof",
    ]
    .map(String::from)
    .to_vec();
    let store = FirestoreStore::builder()
        .with_project_id(&project)
        .with_emulator(firestore.host_port())
        .build()
        .await
        .expect("a Firestore store on the emulator");
    (Processes::new(exe, args, logs), store)
}

/// Polls `check` every 50 ms until it yields, for up to `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every task of a tree as printed, depth first.
fn flatten(tree: &Value) -> Vec<&Value> {
    let mut out = vec![tree];
    if let Some(children) = tree["children"].as_array() {
        for c in children {
            out.extend(flatten(c));
        }
    }
    out
}

async fn docs(store: &FirestoreStore, collection: &str) -> Vec<Value> {
    let collection = CollectionPath::new(collection).expect("a collection path");
    store
        .list_all(&collection)
        .await
        .unwrap_or_else(|e| panic!("listing {collection}: {e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

async fn tasks(store: &FirestoreStore) -> Vec<Value> {
    docs(store, TASKS).await
}

async fn get(store: &FirestoreStore, collection: &str, id: &str) -> Option<Value> {
    let key = DocKey::new(collection, id).expect("a document key");
    store
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
        .map(|d| d.value)
}
