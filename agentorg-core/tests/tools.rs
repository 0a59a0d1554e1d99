//! The in-process tool hosts: the conformance suite on each, and what only
//! they do (routing, scoping, failover, limits).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::conformance::tools::{self as suite, fixture_host, ECHO, FAIL};
use agentorg_core::tools::{
    CallOptions, FailoverToolHost, LocalToolHost, ScopedToolHost, ToolError, ToolHost, ToolHostExt,
    ToolOutput, ToolRouter, ToolSpec,
};
use agentorg_core::Name;
use async_trait::async_trait;
use serde_json::{json, Value};

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn router_over_fixture() -> ToolRouter {
    ToolRouter::new()
        .mount(name("fx"), Arc::new(fixture_host()))
        .unwrap()
}

fn names(specs: Vec<ToolSpec>) -> Vec<String> {
    specs.into_iter().map(|t| t.name).collect()
}

/// A host that registers `tool`, counting its calls.
fn counting_host(tool: &str) -> (LocalToolHost, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let host = LocalToolHost::new();
    let counter = Arc::clone(&calls);
    host.register(tool, "counts", json!({"type": "object"}), move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(ToolOutput::text_block("counted")) }
    })
    .unwrap();
    (host, calls)
}

// --- the conformance suite on every in-process host -------------------------

#[tokio::test]
async fn conformance_local() {
    suite::run_all(Arc::new(fixture_host()), ECHO, FAIL).await;
}

#[tokio::test]
async fn conformance_router() {
    suite::run_all(Arc::new(router_over_fixture()), "fx.echo", "fx.fail").await;
}

#[tokio::test]
async fn conformance_scoped() {
    let scoped = ScopedToolHost::new(
        Arc::new(router_over_fixture()),
        name("tester"),
        vec!["fx.*".parse().unwrap()],
    );
    suite::run_all(Arc::new(scoped), "fx.echo", "fx.fail").await;
}

#[tokio::test]
async fn conformance_failover() {
    let failover = FailoverToolHost::new(vec![
        Arc::new(Down::new("replica-a")),
        Arc::new(fixture_host()),
    ])
    .unwrap();
    suite::run_all(Arc::new(failover), ECHO, FAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_boxed_on_multi_thread() {
    let boxed: Box<dyn ToolHost> = Box::new(fixture_host());
    suite::run_all(Arc::new(boxed), ECHO, FAIL).await;
}

// --- LocalToolHost -------------------------------------------------------------

#[tokio::test]
async fn local_lists_in_name_order() {
    let host = LocalToolHost::new();
    for tool in ["zeta", "alpha", "mid.dle"] {
        host.register(tool, "t", json!({}), |_| async {
            Ok(ToolOutput::default())
        })
        .unwrap();
    }
    assert_eq!(
        names(host.list_tools().await.unwrap()),
        ["alpha", "mid.dle", "zeta"]
    );
}

#[test]
fn local_refuses_bad_registrations() {
    let host = fixture_host();
    let ok = |_: Value| async { Ok(ToolOutput::default()) };
    let bad_schema = host.register("typo", "t", json!({"type": "strnig"}), ok);
    assert!(matches!(bad_schema, Err(ToolError::InvalidInput { tool, .. }) if tool == "typo"));
    let duplicate = host.register(ECHO, "again", json!({}), ok);
    assert!(matches!(duplicate, Err(ToolError::InvalidInput { .. })));
    for bad in ["", "has space", "star*", "é", &"x".repeat(129)] {
        let r = host.register(bad, "t", json!({}), ok);
        assert!(matches!(r, Err(ToolError::InvalidInput { .. })), "{bad:?}");
    }
    host.register("x".repeat(128), "t", json!({}), ok).unwrap();
}

#[tokio::test]
async fn local_validates_before_running() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let host = LocalToolHost::new();
    host.register(
        "typed",
        "t",
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(ToolOutput::default()) }
        },
    )
    .unwrap();
    let err = host
        .call_tool("typed", json!({"n": "one"}))
        .await
        .unwrap_err();
    let ToolError::InvalidInput { message, .. } = err else {
        panic!("expected InvalidInput, got {err:?}");
    };
    assert!(
        message.contains("/n"),
        "the message names the path: {message}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    host.call_tool("typed", json!({"n": 1})).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn local_times_out_slow_tools() {
    let host = LocalToolHost::new();
    host.register("slow", "sleeps", json!({}), |_| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(ToolOutput::default())
    })
    .unwrap();

    let opts = CallOptions::with_timeout(Duration::from_secs(5));
    let err = host
        .call_tool_opts("slow", json!({}), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Timeout { after, .. } if after == Duration::from_secs(5)));
    assert!(err.is_retryable());

    // The host default applies when the call gives none; the call's own wins.
    let host = host.with_default_timeout(Duration::from_secs(1));
    let err = host.call_tool("slow", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::Timeout { after, .. } if after == Duration::from_secs(1)));
    let opts = CallOptions::with_timeout(Duration::from_secs(2));
    let err = host
        .call_tool_opts("slow", json!({}), opts)
        .await
        .unwrap_err();
    assert!(matches!(err, ToolError::Timeout { after, .. } if after == Duration::from_secs(2)));
}

#[tokio::test]
async fn local_survives_panicking_tools() {
    let host = fixture_host();
    host.register(
        "boom",
        "panics in its future",
        json!({}),
        |args| async move {
            if args.is_object() {
                panic!("boom");
            }
            Ok(ToolOutput::default())
        },
    )
    .unwrap();
    host.register(
        "bang",
        "panics before its future",
        json!({}),
        |_| -> std::future::Ready<Result<ToolOutput, ToolError>> { panic!("bang") },
    )
    .unwrap();
    for tool in ["boom", "bang"] {
        let err = host.call_tool(tool, json!({})).await.unwrap_err();
        assert!(matches!(err, ToolError::Other { .. }), "{tool}: {err:?}");
    }
    let out = host
        .call_tool(ECHO, json!({"text": "still here"}))
        .await
        .unwrap();
    assert_eq!(out.into_json(), json!({"text": "still here"}));
}

#[tokio::test]
async fn local_refuses_oversized_results() {
    let host = LocalToolHost::new().with_max_result_bytes(64);
    host.register("big", "t", json!({}), |_| async {
        Ok(ToolOutput::text_block("x".repeat(100)))
    })
    .unwrap();
    host.register("small", "t", json!({}), |_| async {
        Ok(ToolOutput::text_block("x"))
    })
    .unwrap();
    let err = host.call_tool("big", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::TooLarge { size, limit: 64, .. } if size > 100));
    host.call_tool("small", json!({})).await.unwrap();
}

#[tokio::test]
async fn local_clones_share_tools() {
    let host = LocalToolHost::new();
    let clone = host.clone().with_max_result_bytes(10);
    clone
        .register("late", "t", json!({}), |_| async {
            Ok(ToolOutput::default())
        })
        .unwrap();
    assert_eq!(names(host.list_tools().await.unwrap()), ["late"]);
}

// --- ToolRouter ----------------------------------------------------------------

#[tokio::test]
async fn router_qualifies_names_and_splits_at_first_dot() {
    let files = LocalToolHost::new();
    files
        .register("read.lines", "t", json!({"type": "object"}), |_| async {
            Ok(ToolOutput::text_block("lines"))
        })
        .unwrap();
    let router = router_over_fixture()
        .mount(name("fs"), Arc::new(files))
        .unwrap();

    assert_eq!(
        names(router.list_tools().await.unwrap()),
        ["fs.read.lines", "fx.echo", "fx.fail"]
    );
    let out = router.call_tool("fs.read.lines", json!({})).await.unwrap();
    assert_eq!(out.text(), Some("lines"));
    assert_eq!(router.to_string(), "ToolRouter(fs, fx)");
}

#[tokio::test]
async fn router_not_found_names_the_full_name() {
    let router = router_over_fixture();
    for missing in ["nope.echo", "echo", "fx.nope", "fx.", ".echo", "fx.echo.x"] {
        match router.call_tool(missing, json!({"text": "x"})).await {
            Err(ToolError::NotFound { tool }) => assert_eq!(tool, missing),
            other => panic!("{missing}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn router_qualifies_inner_errors() {
    let router = router_over_fixture();
    let err = router.call_tool("fx.echo", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::InvalidInput { tool, .. } if tool == "fx.echo"));
    // Nested routers qualify once per level.
    let outer = ToolRouter::new()
        .mount(name("org"), Arc::new(router))
        .unwrap();
    let err = outer.call_tool("org.fx.fail", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::Failed { tool, .. } if tool == "org.fx.fail"));
}

#[tokio::test]
async fn router_refuses_duplicate_servers() {
    let err = router_over_fixture()
        .mount(name("fx"), Arc::new(LocalToolHost::new()))
        .unwrap_err();
    assert!(matches!(err, ToolError::InvalidInput { .. }));
}

#[tokio::test]
async fn router_listing_fails_with_a_failing_host() {
    let router = router_over_fixture()
        .mount(name("down"), Arc::new(Down::new("down")))
        .unwrap();
    let err = router.list_tools().await.unwrap_err();
    assert!(matches!(err, ToolError::Unavailable { .. }));
    // Calls to the healthy server still work.
    router
        .call_tool("fx.echo", json!({"text": "hi"}))
        .await
        .unwrap();
}

// --- ScopedToolHost ------------------------------------------------------------

#[tokio::test]
async fn scoped_hides_and_refuses_without_calling_inner() {
    let (secret, calls) = counting_host("launch");
    let router = router_over_fixture()
        .mount(name("ops"), Arc::new(secret))
        .unwrap();
    let scoped = ScopedToolHost::new(
        Arc::new(router),
        name("intern"),
        vec!["fx.echo".parse().unwrap()],
    );

    assert_eq!(names(scoped.list_tools().await.unwrap()), ["fx.echo"]);
    scoped
        .call_tool("fx.echo", json!({"text": "ok"}))
        .await
        .unwrap();
    for refused in ["ops.launch", "fx.fail", "ops.no_such_tool", "nonsense"] {
        match scoped.call_tool(refused, json!({})).await {
            Err(ToolError::Forbidden { tool, role }) => {
                assert_eq!((tool.as_str(), role.as_str()), (refused, "intern"));
            }
            other => panic!("{refused}: {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the inner host was called");
    assert!(matches!(
        scoped.tool_spec("ops.launch").await,
        Err(ToolError::NotFound { .. })
    ));
}

// --- FailoverToolHost ------------------------------------------------------------

/// A host that is down: every request is `Unavailable`, counted.
#[derive(Debug)]
struct Down {
    server: &'static str,
    calls: AtomicUsize,
}

impl Down {
    fn new(server: &'static str) -> Self {
        Self {
            server,
            calls: AtomicUsize::new(0),
        }
    }

    fn err(&self) -> ToolError {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ToolError::Unavailable {
            server: self.server.into(),
            message: "connection refused".into(),
            source: None,
        }
    }
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Down({})", self.server)
    }
}

#[async_trait]
impl ToolHost for Down {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        Err(self.err())
    }
    async fn call_tool_opts(
        &self,
        _: &str,
        _: Value,
        _: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        Err(self.err())
    }
}

#[test]
fn failover_needs_a_host() {
    assert!(matches!(
        FailoverToolHost::new(vec![]),
        Err(ToolError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn failover_moves_on_when_unavailable_and_sticks() {
    let down = Arc::new(Down::new("a"));
    let (up, up_calls) = counting_host("ping");
    let host = FailoverToolHost::new(vec![Arc::clone(&down) as _, Arc::new(up)]).unwrap();
    let calls = || {
        (
            down.calls.load(Ordering::SeqCst),
            up_calls.load(Ordering::SeqCst),
        )
    };

    host.call_tool("ping", json!({})).await.unwrap();
    assert_eq!(calls(), (1, 1));
    // Sticky: the next requests go straight to the host that answered.
    host.call_tool("ping", json!({})).await.unwrap();
    host.list_tools().await.unwrap();
    assert_eq!(calls(), (1, 2));
}

/// A host with tool `who` answering `me`, or timing out while `down` is set.
fn switchable(me: &'static str) -> (LocalToolHost, Arc<AtomicBool>) {
    let down = Arc::new(AtomicBool::new(false));
    let host = LocalToolHost::new();
    let is_down = Arc::clone(&down);
    host.register("who", "t", json!({}), move |_| {
        let down = is_down.load(Ordering::SeqCst);
        async move {
            if down {
                Err(ToolError::Timeout {
                    tool: "who".into(),
                    after: Duration::from_secs(1),
                })
            } else {
                Ok(ToolOutput::text_block(me))
            }
        }
    })
    .unwrap();
    (host, down)
}

#[tokio::test]
async fn failover_wraps_around_from_the_sticky_host() {
    let (a, a_down) = switchable("a");
    let (b, b_down) = switchable("b");
    let (c, c_down) = switchable("c");
    let host = FailoverToolHost::new(vec![Arc::new(a), Arc::new(b), Arc::new(c)]).unwrap();
    let who = || async {
        host.call_tool("who", json!({}))
            .await
            .unwrap()
            .text()
            .unwrap()
            .to_owned()
    };

    a_down.store(true, Ordering::SeqCst);
    assert_eq!(who().await, "b");
    a_down.store(false, Ordering::SeqCst);
    assert_eq!(who().await, "b", "sticks to b although a is back");
    b_down.store(true, Ordering::SeqCst);
    assert_eq!(who().await, "c");
    c_down.store(true, Ordering::SeqCst);
    assert_eq!(who().await, "a", "wraps around past the end");
}

#[tokio::test]
async fn failover_does_not_fail_over_answers() {
    let (second, second_calls) = counting_host("fail");
    let host = FailoverToolHost::new(vec![Arc::new(fixture_host()), Arc::new(second)]).unwrap();
    let err = host.call_tool(FAIL, json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::Failed { .. }));
    let err = host.call_tool(ECHO, json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::InvalidInput { .. }));
    let err = host.call_tool("missing", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::NotFound { .. }));
    assert_eq!(second_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failover_all_down_returns_the_last_error() {
    let host =
        FailoverToolHost::new(vec![Arc::new(Down::new("a")), Arc::new(Down::new("b"))]).unwrap();
    let err = host.call_tool("ping", json!({})).await.unwrap_err();
    assert!(matches!(err, ToolError::Unavailable { server, .. } if server == "b"));
    let err = host.list_tools().await.unwrap_err();
    assert!(matches!(err, ToolError::Unavailable { server, .. } if server == "b"));
}
