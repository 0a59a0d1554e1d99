//! A real 3-node nats-server cluster: an R3 stream keeps accepting publishes
//! with one node killed.

use std::time::{Duration, Instant};

use agentorg_testkit::{nats_or_skip, NatsCluster};
use async_nats::jetstream::{self, stream};

#[tokio::test]
async fn r3_stream_survives_one_node_killed() {
    let Some(mut cluster) = nats_or_skip!(NatsCluster::start(3)) else {
        return;
    };
    assert_eq!(cluster.len(), 3);
    let names: Vec<_> = (0..3).map(|i| cluster.node(i).name().to_string()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);

    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(cluster.urls())
        .await
        .expect("connect");
    // Generous request timeouts: on a loaded machine an R3 stream's creation
    // (a round of the meta group and one of the new stream's group) can take
    // longer than the default 5 s.
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .build(client.clone());
    // And a request whose answer was lost (a meta leader elected anew under
    // load, say) is asked again: creating the same stream twice is one
    // stream.
    let config = stream::Config {
        name: "r3".to_string(),
        subjects: vec!["r3.>".to_string()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stream = loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("creating the R3 stream: {e}; asking again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("create R3 stream: {e:?}"),
        }
    };
    // A stream just created may not answer yet on the node this client
    // is connected to (its PubAck says "stream not found" until the new
    // stream's group has a leader the node knows of): publish until it
    // answers, with a message id, so that a retry after a lost ack is
    // stored once (the stream's duplicate window).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let first = jetstream::message::PublishMessage::build()
            .payload("one".into())
            .message_id("r3-first");
        let attempt = async {
            js.send_publish("r3.a", first)
                .await?
                .await
                .map_err(Into::into)
        };
        let result: Result<_, Box<dyn std::error::Error + Send + Sync>> = attempt.await;
        match result {
            Ok(ack) => {
                assert_eq!(ack.sequence, 1, "the first message stored once");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("the new R3 stream does not answer yet: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new R3 stream never took a publish within 30 s: {e}"),
        }
    }

    let info = stream.info().await.expect("info").clone();
    let cluster_info = info.cluster.expect("cluster info");
    let leader = cluster_info.leader.expect("a stream leader");
    assert_eq!(
        cluster_info.replicas.len(),
        2,
        "leader + 2 replicas: {:?}",
        cluster_info.replicas
    );

    // Kill the stream's leader: the hardest case. The two others elect a new
    // one and, as a quorum of 2 of 3, keep storing. Meanwhile (about 5 s with
    // nats-server 2.15) a publish fails with "no stream found for given
    // subject" (no responders) or an ack timeout, so retry.
    let victim = cluster.index_of(&leader).expect("leader is a node");
    cluster.kill9(victim);
    assert!(!cluster.node_mut(victim).is_running());

    // Short ack timeouts while the new leader is elected (default: 5 s).
    let js_quick = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client);
    let deadline = Instant::now() + Duration::from_secs(20);
    let ack = loop {
        let attempt = async {
            js_quick
                .publish("r3.b", "two".into())
                .await?
                .await
                .map_err(Into::into)
        };
        let result: Result<_, Box<dyn std::error::Error + Send + Sync>> = attempt.await;
        match result {
            Ok(ack) => break ack,
            Err(e) if Instant::now() < deadline => {
                eprintln!("publish with {leader} down: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no publish within 20 s of killing {leader}: {e}"),
        }
    };
    assert_eq!(ack.sequence, 2);

    // The killed node comes back on its store and rejoins.
    cluster.restart(victim).expect("restart the killed node");
    let info = stream.info().await.expect("info after restart");
    assert_eq!(info.state.messages, 2);
}
