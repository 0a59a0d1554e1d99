//! Least privilege enforced by a real nats-server running the permissions
//! generated from the chart: every forbidden path is refused as `Forbidden`,
//! and an org whose roles each run with their own credentials works.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
use agentorg_core::chart::OrgChart;
use agentorg_core::conformance::unique_org;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::{Org, OrgConsumers, RuntimeConfig};
use agentorg_core::store::{MemoryStore, StateStore};
use agentorg_core::subject::{SubjectPattern, Subjects};
use agentorg_core::transport::{ConsumerConfig, PublishOptions, Transport, TransportError};
use agentorg_core::Name;
use agentorg_nats::auth::OrgAuth;
use agentorg_nats::{NatsTransport, StreamKind};
use agentorg_testkit::{nats_or_skip, NatsServer};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

/// GenBrain's chart under a fresh org name, with its deployment event:
/// devops publishes `deploy.complete`, marketing and the ceo subscribe.
fn genbrain(org: &Name) -> OrgChart {
    let toml = include_str!("../../examples/genbrain.toml")
        .replace("org = \"genbrain\"", &format!("org = \"{org}\""));
    OrgChart::from_toml_str(&toml).unwrap()
}

fn n(s: &str) -> Name {
    Name::new(s).unwrap()
}

struct Fixture {
    _nats: NatsServer,
    chart: OrgChart,
    auth: OrgAuth,
    admin: NatsTransport,
    url: String,
}

/// A server running the chart's generated permissions; the admin has
/// created the streams and every consumer.
async fn fixture() -> Option<Fixture> {
    let org = unique_org();
    let chart = genbrain(&org);
    let auth = OrgAuth::builder(&chart)
        .with_events("backend", ["deploy.>"])
        .build()
        .unwrap();
    let nats = nats_or_skip!(NatsServer::builder()
        .config_text(auth.server_config())
        .start())?;
    let url = nats.url();
    let admin = common::builder([url.clone()], &org)
        .with_credentials(auth.admin())
        .build()
        .await
        .unwrap();
    OrgConsumers::new(&chart, &RuntimeConfig::default())
        .provision(&admin)
        .await
        .unwrap();
    Some(Fixture {
        _nats: nats,
        chart,
        auth,
        admin,
        url,
    })
}

impl Fixture {
    async fn as_role(&self, role: &str) -> NatsTransport {
        common::builder([self.url.clone()], self.chart.org())
            .with_credentials(self.auth.credentials(role).unwrap())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{role}'s transport: {e}"))
    }
}

#[track_caller]
fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, TransportError>) {
    match r {
        Err(TransportError::Forbidden { .. }) => {}
        other => panic!("{what}: expected Forbidden, got {other:?}"),
    }
}

/// `backend` may do what the chart grants it: bind and settle its own
/// inbox, write to its manager and to the CEO (who has a shortcut to it),
/// on its peer channels, its granted events, dead letters and alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_may_do_what_the_chart_grants() {
    common::init_tracing();
    let Some(fx) = fixture().await else { return };
    let s = Subjects::new(fx.chart.org().clone());
    let backend = fx.as_role("backend").await;
    for subject in [
        s.inbox(&n("cto"), &n("backend")),
        s.inbox(&n("ceo"), &n("backend")),
        s.peer(&n("backend"), &n("frontend")),
        s.peer(&n("backend"), &n("devops")),
        s.event(&[n("deploy"), n("done")]),
        s.deadletter(),
        s.alerts(),
    ] {
        backend
            .publish(&subject, "ok".into(), PublishOptions::default())
            .await
            .unwrap_or_else(|e| panic!("backend publishing to {subject}: {e}"));
    }
    let consumers = OrgConsumers::new(&fx.chart, &RuntimeConfig::default());
    let mine = &consumers.inbox("backend").unwrap().name;
    let mut inbox = backend.consume(mine).await.unwrap();
    for i in 0..3 {
        fx.admin
            .publish(
                &s.inbox(&n("backend"), &n("cto")),
                format!("task {i}").into(),
                PublishOptions::default(),
            )
            .await
            .unwrap();
    }
    let d = inbox.next().await.unwrap().unwrap();
    d.progress().await.unwrap();
    d.nak(Some(Duration::from_millis(10))).await.unwrap();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), inbox.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        d.ack().await.unwrap();
    }
    // It serves its own requests.
    let mut rpc = backend
        .subscribe(&SubjectPattern::from(s.rpc(&n("backend"))))
        .await
        .unwrap();
    let server = backend.clone();
    tokio::spawn(async move {
        if let Some(Ok(m)) = rpc.next().await {
            use agentorg_core::transport::TransportExt;
            server.respond(&m, "pong".into()).await.unwrap();
        }
    });
    let cto = fx.as_role("cto").await;
    let reply = cto
        .request(&s.rpc(&n("backend")), "ping".into(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&reply[..], b"pong");
}

/// Everything else `backend` tries is refused by the server: reading the
/// CSO's inbox four ways (binding its consumer, creating a consumer on it,
/// reading stored messages directly or through the stream API, a core
/// subscription), an undeclared peer channel, a spoofed sender, addressing a
/// role the chart does not let it address, ungranted events, another reply
/// prefix, and the admin's stream and consumer operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_is_refused_everything_else() {
    common::init_tracing();
    let Some(fx) = fixture().await else { return };
    let org = fx.chart.org().clone();
    let s = Subjects::new(org.clone());
    let inbox_stream = fx.admin.layout().stream_name(StreamKind::Inbox);
    // Something in the CSO's inbox to steal.
    let stored = fx
        .admin
        .publish(
            &s.inbox(&n("cso"), &n("ceo")),
            "secret".into(),
            PublishOptions::default(),
        )
        .await
        .unwrap();
    let consumers = OrgConsumers::new(&fx.chart, &RuntimeConfig::default());
    let cso_consumer = consumers.inbox("cso").unwrap().name.clone();
    let backend = fx.as_role("backend").await;

    // 1. Bind the CSO's consumer.
    forbidden(
        "bind cso's consumer",
        backend.consume(&cso_consumer).await.map(|_| ()),
    );
    // 2. Create a consumer on the CSO's inbox.
    forbidden(
        "create a consumer on cso's inbox",
        backend
            .ensure_consumer(&ConsumerConfig::new(n("spy"), s.inbox_any(&n("cso"))))
            .await,
    );
    let create = json!({
        "stream_name": inbox_stream,
        "config": { "durable_name": "spy", "filter_subject": s.inbox_any(&n("cso")).as_str(), "ack_policy": "explicit", "deliver_policy": "all" }
    });
    forbidden(
        "raw consumer create on cso's inbox",
        backend
            .jetstream_request(
                &format!(
                    "CONSUMER.CREATE.{inbox_stream}.spy.{}",
                    s.inbox_any(&n("cso"))
                ),
                Bytes::from(create.to_string()),
            )
            .await,
    );
    // 3. Read stored messages: stream API and direct get.
    forbidden(
        "stream message get",
        backend
            .stored_message(StreamKind::Inbox, stored.sequence)
            .await,
    );
    forbidden(
        "direct get",
        backend
            .jetstream_request(
                &format!("DIRECT.GET.{inbox_stream}"),
                Bytes::from(format!("{{\"seq\":{}}}", stored.sequence)),
            )
            .await,
    );
    // 4. A core subscription to the CSO's inbox.
    let mut sub = backend.subscribe(&s.inbox_any(&n("cso"))).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Err(TransportError::Forbidden { .. }))) => {}
        other => panic!("subscription to cso's inbox: {other:?}"),
    }
    assert!(sub.next().await.is_none(), "a refused subscription ends");
    // An undeclared peer channel (backend and cso are not peers).
    forbidden(
        "undeclared peer channel",
        backend
            .publish(
                &s.peer(&n("backend"), &n("cso")),
                "psst".into(),
                PublishOptions::default(),
            )
            .await,
    );
    // A spoofed sender: to its manager, in the CSO's name.
    forbidden(
        "spoofed sender",
        backend
            .publish(
                &s.inbox(&n("cto"), &n("cso")),
                "from cso".into(),
                PublishOptions::default(),
            )
            .await,
    );
    // A role it may not address (the CSO), and the CSO's requests.
    forbidden(
        "addressing cso",
        backend
            .publish(
                &s.inbox(&n("cso"), &n("backend")),
                "hi".into(),
                PublishOptions::default(),
            )
            .await,
    );
    forbidden(
        "request to cso",
        backend
            .request(&s.rpc(&n("cso")), "hi".into(), Duration::from_secs(5))
            .await,
    );
    // Events it was not granted.
    forbidden(
        "ungranted event",
        backend
            .publish(
                &s.event(&[n("launch")]),
                "x".into(),
                PublishOptions::default(),
            )
            .await,
    );
    // Another role's reply prefix.
    let mut replies = backend
        .subscribe(&SubjectPattern::parse(format!("_INBOX.{org}.cso.>")).unwrap())
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), replies.next()).await {
        Ok(Some(Err(TransportError::Forbidden { .. }))) => {}
        other => panic!("subscription to cso's replies: {other:?}"),
    }
    // The admin's operations.
    forbidden(
        "delete cso's consumer",
        backend.delete_consumer(&cso_consumer).await,
    );
    forbidden("stream info", backend.stream_info(StreamKind::Inbox).await);
    forbidden(
        "create streams",
        common::builder([fx.url.clone()], &org)
            .with_credentials(fx.auth.credentials("backend").unwrap())
            .with_provision(true)
            .build()
            .await
            .map(|_| ()),
    );
    // Its own consumer is still there and still the CSO's message unread.
    let info = fx.admin.stream_info(StreamKind::Inbox).await.unwrap();
    assert_eq!(info.state.messages, 1, "cso's message is still there");
}

/// The org runs with each role in its own transport (own credentials, own
/// reply prefix, `provision(false)`): the founder's request goes down
/// ceo → cto → backend and its results come back up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_runs_with_a_transport_per_role() {
    common::init_tracing();
    let Some(fx) = fixture().await else { return };
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let config = RuntimeConfig::default()
        .with_provision(false)
        .with_lease(Duration::from_secs(2))
        .with_ack_wait(Duration::from_secs(2));
    // ceo delegates to cto, cto to backend; backend completes.
    struct Delegating(&'static str);
    #[async_trait::async_trait]
    impl agentorg_core::agent::Agent for Delegating {
        async fn on_task(
            &self,
            cx: &agentorg_core::agent::Context,
            task: agentorg_core::agent::Task,
        ) -> Result<Outcome, agentorg_core::agent::AgentError> {
            cx.delegate(
                self.0,
                TaskSpec::new(format!("{} / {}", task.title, self.0)),
            )
            .await?;
            Ok(Outcome::AwaitSubtasks)
        }
    }
    let mut orgs = Vec::new();
    for (role, agent) in [
        (
            "ceo",
            Arc::new(Delegating("cto")) as Arc<dyn agentorg_core::agent::Agent>,
        ),
        ("cto", Arc::new(Delegating("backend"))),
        (
            "backend",
            Arc::new(agent_fn(|t| async move {
                Ok(Outcome::Complete(json!({"built": t.title})))
            })),
        ),
    ] {
        let t: Arc<dyn Transport> = Arc::new(fx.as_role(role).await);
        orgs.push(
            Org::builder(fx.chart.clone())
                .transport(t)
                .store(Arc::clone(&store))
                .config(config.clone())
                .agent_with(role, agent, Default::default())
                .start()
                .await
                .unwrap_or_else(|e| panic!("{role}'s process: {e}")),
        );
    }
    let founder_t: Arc<dyn Transport> = Arc::new(fx.as_role("founder").await);
    let founder = Org::builder(fx.chart.clone())
        .transport(founder_t)
        .store(Arc::clone(&store))
        .config(config.clone())
        .start()
        .await
        .unwrap();
    let mut results = founder.principal().inbox().await.unwrap();
    let root = founder
        .principal()
        .delegate("ceo", TaskSpec::new("Ship it"))
        .await
        .unwrap()
        .task_id;
    let rec = founder
        .principal()
        .wait_for(&root, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(rec.status, TaskStatus::Completed, "{rec:?}");
    let tree = founder.principal().task_tree(&root).await.unwrap();
    assert_eq!(tree.len(), 3);
    assert!(tree.all_completed());
    let result = tokio::time::timeout(Duration::from_secs(10), results.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(result.correlation_id.as_ref(), Some(&root));
    for o in &orgs {
        o.shutdown().await;
    }
    founder.shutdown().await;
}

/// A user who may read a consumer's info but not pull from it gets
/// `Forbidden` from the delivery stream (which then ends), not a silent wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_without_the_right_to_pull_is_forbidden() {
    common::init_tracing();
    let org = unique_org();
    let stream = format!("AGENTORG_{}_EVENTS", org.as_str().to_ascii_uppercase());
    let config = format!(
        r#"authorization {{ users = [
            {{ user: "admin", password: "a" }}
            {{ user: "half", password: "h", permissions: {{
                publish: {{ allow: ["$JS.API.CONSUMER.INFO.{stream}.c"] }}
                subscribe: {{ allow: ["_INBOX.>"] }}
            }} }}
        ] }}"#
    );
    let Some(nats) = nats_or_skip!(NatsServer::builder().config_text(config).start()) else {
        return;
    };
    let admin = common::builder([nats.url()], &org)
        .with_user_and_password("admin", "a")
        .build()
        .await
        .unwrap();
    let c = ConsumerConfig::new(
        n("c"),
        SubjectPattern::parse(format!("{org}.events.>")).unwrap(),
    );
    admin.ensure_consumer(&c).await.unwrap();
    let half = common::builder([nats.url()], &org)
        .with_user_and_password("half", "h")
        .with_provision(false)
        .build()
        .await
        .unwrap();
    let mut deliveries = half.consume(&c.name).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), deliveries.next()).await {
        Ok(Some(Err(TransportError::Forbidden { .. }))) => {}
        other => panic!("pulling without the right: {other:?}"),
    }
    assert!(deliveries.next().await.is_none());
}

/// Events as the chart declares them: devops (and the principal) may
/// publish `deploy.complete`, the cso may not; marketing binds its own
/// event subscription, the backend may not bind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_only_as_the_chart_declares() {
    common::init_tracing();
    let Some(fx) = fixture().await else { return };
    let s = Subjects::new(fx.chart.org().clone());
    let complete = s.event(&[n("deploy"), n("complete")]);
    for role in ["devops", "founder"] {
        fx.as_role(role)
            .await
            .publish(&complete, "ok".into(), PublishOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{role} publishing deploy.complete: {e}"));
    }
    forbidden(
        "cso publishing deploy.complete",
        fx.as_role("cso")
            .await
            .publish(&complete, "x".into(), PublishOptions::default())
            .await,
    );
    let consumers = OrgConsumers::new(&fx.chart, &RuntimeConfig::default());
    let subscription = consumers
        .of_role("marketing")
        .iter()
        .find(|c| c.name.starts_with("ev-"))
        .expect("marketing's event subscription")
        .name
        .clone();
    fx.as_role("marketing")
        .await
        .consume(&subscription)
        .await
        .map(|_| ())
        .unwrap_or_else(|e| panic!("marketing binding its subscription: {e}"));
    forbidden(
        "backend binding marketing's subscription",
        fx.as_role("backend")
            .await
            .consume(&subscription)
            .await
            .map(|_| ()),
    );
}

/// Meeting channels follow the chart's `meets`: the cto (which meets
/// backend, frontend, devops and cso) sends on each one's meeting channel
/// and its own; backend answers on the cto's, and takes tasks of its own in
/// its own inbox; the founder starts meetings on the cto's; but backend
/// may not send on another participant's
/// meeting channel (no role reaches another's ballot), nor marketing (which
/// nobody meets) on the cto's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_channels_follow_meets() {
    common::init_tracing();
    let Some(fx) = fixture().await else { return };
    let s = Subjects::new(fx.chart.org().clone());
    let meeting = n(agentorg_core::meeting::CHANNEL);
    let cto = fx.as_role("cto").await;
    for to in ["cto", "backend", "frontend", "devops", "cso"] {
        let subject = s.channel(&n(to), &meeting, &n("cto"));
        cto.publish(&subject, "turn".into(), PublishOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cto publishing to {subject}: {e}"));
    }
    let backend = fx.as_role("backend").await;
    for subject in [
        s.channel(&n("cto"), &meeting, &n("backend")),
        s.inbox(&n("backend"), &n("backend")),
    ] {
        backend
            .publish(&subject, "ok".into(), PublishOptions::default())
            .await
            .unwrap_or_else(|e| panic!("backend publishing to {subject}: {e}"));
    }
    forbidden(
        "backend on the cso's meeting channel",
        backend
            .publish(
                &s.channel(&n("cso"), &meeting, &n("backend")),
                "x".into(),
                PublishOptions::default(),
            )
            .await,
    );
    forbidden(
        "backend on the cto's meeting channel as the cso",
        backend
            .publish(
                &s.channel(&n("cto"), &meeting, &n("cso")),
                "x".into(),
                PublishOptions::default(),
            )
            .await,
    );
    // The principal starts the meetings it schedules, as itself, on each
    // facilitator's meeting channel only.
    let founder = fx.as_role("founder").await;
    founder
        .publish(
            &s.channel(&n("cto"), &meeting, &n("founder")),
            "start".into(),
            PublishOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("founder on the cto's meeting channel: {e}"));
    forbidden(
        "founder on backend's meeting channel",
        founder
            .publish(
                &s.channel(&n("backend"), &meeting, &n("founder")),
                "x".into(),
                PublishOptions::default(),
            )
            .await,
    );
    let marketing = fx.as_role("marketing").await;
    forbidden(
        "marketing on the cto's meeting channel",
        marketing
            .publish(
                &s.channel(&n("cto"), &meeting, &n("marketing")),
                "x".into(),
                PublishOptions::default(),
            )
            .await,
    );
}
