//! Events through a seat: a seated publisher's `publish_event` is held to
//! the chart (its `publishes`, the name's schema) and goes out with the
//! turn's end; a seated subscriber gets each event as an `org_event` of
//! `wait_for_event`, and its receipt says processed once the client has it.
//! Memory backends, an in-process pipe.

use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
use agentorg_core::chart::{OrgChart, RoleSpec};
use agentorg_core::events::ReceiptStatus;
use agentorg_core::hierarchy::TaskStatus;
use agentorg_core::runtime::Org;
use agentorg_mcp::seat::Seat;
use serde_json::{json, Value};

mod seat_support;
use seat_support::{client_of, next_event, ok, refused, test_seat, TestResult, DEADLINE};

/// founder → devops (publishes `deploy.complete`, whose payload needs a
/// string `version`), marketing (subscribes to `deploy.*`).
fn chart() -> OrgChart {
    let built = OrgChart::builder("seatev")
        .principal("founder")
        .role(
            RoleSpec::new("devops")
                .reports_to("founder")
                .publishes(["deploy.complete"]),
        )
        .role(
            RoleSpec::new("marketing")
                .reports_to("founder")
                .subscribes(["deploy.*"]),
        )
        .event_schema(
            "deploy.complete",
            json!({"type": "object", "required": ["version"],
                   "properties": {"version": {"type": "string"}}}),
        )
        .build();
    match built {
        Ok(c) => c,
        Err(e) => panic!("chart: {e}"),
    }
}

fn seat(role: &str) -> Seat {
    test_seat(chart(), role)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seated_publisher_is_held_to_the_chart_and_a_seated_subscriber_gets_the_event(
) -> TestResult {
    let devops = seat("devops");
    let marketing = seat("marketing");
    let org = Org::builder(chart())
        .agent("devops", devops.agent())
        .agent("marketing", marketing.agent())
        .start()
        .await?;
    let (publisher, publisher_server) = client_of(&devops).await;
    let (subscriber, subscriber_server) = client_of(&marketing).await;
    let info = ok(&publisher, "seat_info", json!({})).await;
    assert_eq!(info["publishes"], json!(["deploy.complete"]), "{info}");
    let info = ok(&subscriber, "seat_info", json!({})).await;
    assert_eq!(info["subscribes"], json!(["deploy.*"]), "{info}");

    let root = org
        .principal()
        .delegate("devops", TaskSpec::new("Deploy v2.3.1"))
        .await?;
    let task = next_event(&publisher).await;
    assert_eq!(task["event"], "task", "{task}");
    // An undeclared name, and a payload failing the chart's schema.
    let (kind, message) = refused(
        &publisher,
        "publish_event",
        json!({"name": "deploy.rollback", "payload": {}}),
    )
    .await;
    assert_eq!(kind, "not_allowed");
    assert!(message.contains("publishes"), "{message}");
    let (kind, message) = refused(
        &publisher,
        "publish_event",
        json!({"name": "deploy.complete", "payload": {"version": 2}}),
    )
    .await;
    assert_eq!(kind, "invalid_input");
    assert!(message.contains("schema"), "{message}");
    let published = ok(
        &publisher,
        "publish_event",
        json!({"name": "deploy.complete", "payload": {"version": "v2.3.1"}}),
    )
    .await;
    let event_id = published["event_id"]
        .as_str()
        .ok_or("the published event's id")?
        .to_owned();
    ok(
        &publisher,
        "complete_task",
        json!({"result": {"deployed": "v2.3.1"}}),
    )
    .await;
    assert_eq!(root.wait(DEADLINE).await?.status, TaskStatus::Completed);

    // Published with the turn's end: the subscriber's seat offers it.
    let event = next_event(&subscriber).await;
    assert_eq!(event["event"], "org_event", "{event}");
    assert_eq!(event["name"], "deploy.complete");
    assert_eq!(event["from"], "devops");
    assert_eq!(event["event_id"], event_id.as_str());
    assert_eq!(event["payload"]["version"], "v2.3.1");
    // Any further call acknowledges it: then the receipt says processed.
    ok(&subscriber, "seat_info", json!({})).await;
    let receipts = org
        .principal()
        .receipts(&event_id.parse()?)
        .wait(DEADLINE)
        .await?;
    assert!(receipts.all_processed(), "{receipts:?}");
    assert_eq!(receipts.receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts.receipts[0].status, ReceiptStatus::Processed);

    for c in [publisher, subscriber] {
        c.cancel().await?;
    }
    for s in [publisher_server, subscriber_server] {
        s.cancel().await?;
    }
    org.shutdown().await;
    Ok(())
}

/// A seat without turns cannot publish: the event goes out with a turn's
/// end, so a call outside one is refused `no_turn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_outside_a_turn_is_refused() -> TestResult {
    let devops = seat("devops");
    let org = Org::builder(chart())
        .agent("devops", devops.agent())
        .agent(
            "marketing",
            agent_fn(|_| async { Ok(Outcome::Complete(Value::Null)) }),
        )
        .start()
        .await?;
    let (client, server) = client_of(&devops).await;
    let (kind, _) = refused(
        &client,
        "publish_event",
        json!({"name": "deploy.complete", "payload": {"version": "v1"}}),
    )
    .await;
    assert_eq!(kind, "no_turn");
    client.cancel().await?;
    server.cancel().await?;
    org.shutdown().await;
    Ok(())
}
