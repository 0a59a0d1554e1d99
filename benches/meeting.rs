//! One meeting end to end beside a delegation round trip, in the same run:
//! 5 participants × 3 agenda items, every answer instant, on the memory
//! backends and (with `--features nats`) on NATS JetStream with the memory
//! store.
//!
//! * `meeting_<transport>/delegation_round_trip`: `Principal::delegate` →
//!   a worker completes at once → the result in the principal's inbox.
//! * `meeting_<transport>/meeting_5x3`: `Principal::schedule_meeting` → 15
//!   turns (each a message to the participant and its answer back, each
//!   committed with the meeting's document) → the proposal → 5 sealed
//!   ballots and their "voted" notices → the tally and the record, up to
//!   the close's message taking the action item to its agent (watched on
//!   the transport, so no polling is timed).
//!
//! After each transport's two benches it prints the per-turn overhead to
//! read, paired (30 rounds of one meeting and 21 delegations, back to
//! back): the meeting's time ÷ its 21 exchanges (15 turns, the proposal, 5
//! ballots), and that ÷ the delegation round trip.
//!
//! ```text
//! cargo bench --bench meeting -- --warm-up-time 1 --measurement-time 5
//! cargo bench --bench meeting --features nats -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! The NATS part starts a nats-server (agentorg-testkit); without one it says
//! so and measures only memory. Results: `BENCHMARKS.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentorg::codec::Codec;
use agentorg::meeting::{MeetingBallot, MeetingRecord, MeetingSpec, MeetingTurn, Proposal, Vote};
use agentorg::prelude::*;
use agentorg::runtime::PrincipalStream;
use agentorg::store::MemoryStore;
use agentorg::subject::SubjectPattern;
use agentorg::transport::{MemoryTransport, Subscription, Transport};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

/// The exchanges of one meeting: 15 turns, the proposal, 5 ballots.
const EXCHANGES: u32 = 21;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// founder → cto → backend, frontend, devops, cso, worker; the cto meets
/// the four.
fn chart(org: &str) -> OrgChart {
    let mut c = OrgChart::builder(org).principal("founder").role(
        RoleSpec::new("cto")
            .reports_to("founder")
            .meets(["backend", "frontend", "devops", "cso"]),
    );
    for r in ["backend", "frontend", "devops", "cso"] {
        c = c.role(RoleSpec::new(r).reports_to("cto"));
    }
    c.role(RoleSpec::new("worker").reports_to("founder"))
        .build()
        .expect("a valid chart")
}

/// Answers everything at once.
struct Quick;

#[async_trait]
impl Agent for Quick {
    async fn on_task(&self, _cx: &Context, task: Task) -> Result<Outcome, AgentError> {
        Ok(Outcome::Complete(json!({ "done": task.title })))
    }
    async fn on_meeting_turn(&self, _cx: &Context, _t: MeetingTurn) -> Result<String, AgentError> {
        Ok("agreed".to_owned())
    }
    async fn on_meeting_proposal(
        &self,
        _cx: &Context,
        _m: MeetingRecord,
    ) -> Result<Option<Proposal>, AgentError> {
        let backend = "backend"
            .parse()
            .map_err(|_| AgentError::permanent("a name"))?;
        Ok(Some(Proposal::new("go").action_item(backend, "do it")))
    }
    async fn on_meeting_ballot(
        &self,
        _cx: &Context,
        _b: MeetingBallot,
    ) -> Result<Vote, AgentError> {
        Ok(Vote::Approve)
    }
}

struct Bench {
    org: Org,
    inbox: Mutex<PrincipalStream>,
    /// Backend's meeting channel: the close's action-item message.
    closes: Mutex<Subscription>,
}

async fn bench(transport: Arc<dyn Transport>, org: &str) -> Bench {
    let mut b = Org::builder(chart(org))
        .transport(Arc::clone(&transport))
        .store(Arc::new(MemoryStore::new()));
    for r in ["cto", "backend", "frontend", "devops", "cso", "worker"] {
        b = b.agent(r, Quick);
    }
    let org_ = b.start().await.expect("the org starts");
    let inbox = org_.principal().inbox().await.expect("the inbox");
    let closes = transport
        .subscribe(
            &SubjectPattern::parse(format!("{org}.agent.backend.meeting.cto")).expect("a pattern"),
        )
        .await
        .expect("a subscription");
    Bench {
        org: org_,
        inbox: Mutex::new(inbox),
        closes: Mutex::new(closes),
    }
}

async fn delegation(b: &Bench) {
    let task = b
        .org
        .principal()
        .delegate("worker", TaskSpec::new("ping"))
        .await
        .expect("delegated");
    let mut inbox = b.inbox.lock().await;
    loop {
        let env = inbox.next().await.expect("goes on").expect("a result");
        if env.correlation_id.as_ref() == Some(&task.task_id) {
            return;
        }
    }
}

async fn meeting(b: &Bench) {
    let spec = MeetingSpec::new("bench")
        .participants(["cto", "backend", "frontend", "devops", "cso"])
        .agenda(["one", "two", "three"]);
    let id = b
        .org
        .principal()
        .schedule_meeting("cto", &spec)
        .await
        .expect("scheduled");
    let mut closes = b.closes.lock().await;
    loop {
        let m = closes.next().await.expect("goes on").expect("a message");
        let env = Codec::default().decode(&m.payload).expect("an envelope");
        let p: &Value = &env.payload;
        if p["meeting"] == id.as_str() && p["op"] == "actions" {
            return;
        }
    }
}

fn group(c: &mut Criterion, rt: &Runtime, name: &str, b: Arc<Bench>) {
    let mut g = c.benchmark_group(name);
    for (i, path) in ["delegation_round_trip", "meeting_5x3"]
        .into_iter()
        .enumerate()
    {
        let b = Arc::clone(&b);
        g.bench_function(path, |bencher| {
            bencher.to_async(rt).iter_custom(|iters| {
                let b = Arc::clone(&b);
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if i == 0 {
                            delegation(&b).await;
                        } else {
                            meeting(&b).await;
                        }
                    }
                    start.elapsed()
                }
            });
        });
    }
    g.finish();
    // Paired: rounds of one meeting and as many delegations as it has
    // exchanges, back to back, so both see the same load.
    let rounds = 30u32;
    let (delegations, meetings) = rt.block_on(async {
        let (mut d, mut m) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            let start = Instant::now();
            meeting(&b).await;
            m += start.elapsed();
            let start = Instant::now();
            for _ in 0..EXCHANGES {
                delegation(&b).await;
            }
            d += start.elapsed();
        }
        (d, m)
    });
    let per_delegation = delegations / (rounds * EXCHANGES);
    let per_exchange = meetings / (rounds * EXCHANGES);
    println!(
        "{name} paired over {rounds} rounds: delegation round trip {per_delegation:?}, meeting 5x3 {:?}; \
         per exchange {per_exchange:?} = {:.2} delegation round trips",
        meetings / rounds,
        per_exchange.as_secs_f64() / per_delegation.as_secs_f64()
    );
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let b = rt.block_on(bench(Arc::new(MemoryTransport::new()), "bench"));
    group(c, &rt, "meeting_memory", Arc::new(b));
}

#[cfg(feature = "nats")]
fn nats(c: &mut Criterion) {
    use agentorg::nats::NatsTransportBuilder;
    let rt = runtime();
    let Some(server) = agentorg_testkit::nats_or_skip!() else {
        return;
    };
    let b = rt.block_on(async {
        let t: Arc<dyn Transport> = Arc::new(
            NatsTransportBuilder::new()
                .with_server(server.url())
                .with_org("bench")
                .build()
                .await
                .expect("a NATS transport"),
        );
        bench(t, "bench").await
    });
    group(c, &rt, "meeting_nats", Arc::new(b));
}

#[cfg(not(feature = "nats"))]
fn nats(_c: &mut Criterion) {
    println!("meeting_nats: not measured (rebuild with --features nats)");
}

criterion_group!(benches, memory, nats);
criterion_main!(benches);
