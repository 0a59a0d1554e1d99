//! A real nats-server: JetStream file storage survives `kill -9` + restart.

use std::net::TcpStream;
use std::time::Duration;

use agentorg_testkit::{nats_or_skip, NatsServer};
use async_nats::jetstream::{self, stream};

fn file_stream(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}

#[tokio::test]
async fn jetstream_message_survives_kill9_and_restart() {
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    let store = nats.store_dir().to_path_buf();
    let port = nats.port();

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    js.create_stream(file_stream("crash", 1))
        .await
        .expect("create stream");
    let ack = js
        .publish("crash.one", "hello".into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
    assert_eq!(ack.stream, "crash");
    assert_eq!(ack.sequence, 1);
    drop(js);

    let varz = nats.monitor("/varz").expect("the server's counters");
    assert!(varz["in_msgs"].as_u64().is_some_and(|n| n >= 1), "{varz}");
    assert!(nats.monitor("/no-such-page").is_err());
    let pid = nats.pid().expect("a running server has a pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists() || !cfg!(target_os = "linux"));
    nats.kill9();
    assert!(!nats.is_running());
    assert_eq!(nats.pid(), None);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after kill9"
    );

    nats.restart().expect("restart on the same store");
    assert_eq!(nats.port(), port, "same port after restart");
    assert_eq!(nats.store_dir(), store, "same store after restart");
    assert!(nats.pid().is_some_and(|p| p != pid), "a new process");

    let client = async_nats::connect(nats.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let mut stream = js.get_stream("crash").await.expect("stream after restart");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 1, "the message survived kill -9");
    let message = stream.get_raw_message(1).await.expect("message 1");
    assert_eq!(message.subject.as_str(), "crash.one");
    assert_eq!(&message.payload[..], b"hello");
}

#[tokio::test]
async fn config_text_is_applied() {
    // A user/password from the configuration file: connecting without them
    // fails, with them succeeds.
    let Some(nats) = nats_or_skip!(NatsServer::builder()
        .config_text("authorization { user: alice, password: s3cret }\n")
        .start())
    else {
        return;
    };
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(nats.url())
        .await;
    assert!(anonymous.is_err(), "anonymous connect should be refused");
    let client =
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cret".into())
            .connect(nats.url())
            .await
            .expect("connect as alice");
    client.flush().await.expect("flush");
}

#[tokio::test]
async fn stop_then_restart() {
    let Some(mut nats) = nats_or_skip!() else {
        return;
    };
    nats.stop();
    assert!(!nats.is_running());
    nats.restart().expect("restart after stop");
    assert!(nats.is_running());
    // restart() of a running server stops it first.
    nats.restart().expect("restart while running");
    let client = async_nats::connect(nats.url()).await.expect("connect");
    client.flush().await.expect("flush");
}

#[tokio::test]
async fn accounts_config_with_jetstream() {
    let config = r#"
accounts {
  ORG: {
    jetstream: enabled
    users: [ { user: agent, password: pw } ]
  }
}
"#;
    let Some(nats) = nats_or_skip!(NatsServer::builder().config_text(config).start()) else {
        return;
    };
    let client = async_nats::ConnectOptions::with_user_and_password("agent".into(), "pw".into())
        .connect(nats.url())
        .await
        .expect("connect as agent");
    let js = jetstream::new(client);
    js.create_stream(file_stream("acct", 1))
        .await
        .expect("create stream in account ORG");
    js.publish("acct.x", "y".into())
        .await
        .expect("publish")
        .await
        .expect("PubAck");
}

#[test]
fn bad_config_is_a_start_error_with_its_log() {
    let result = NatsServer::builder()
        .config_text("jetstream { max_memory_store: not-a-size }\n")
        .start();
    let err = match result {
        Err(e) if e.is_missing() => {
            // Not installed: let the macro skip (or fail when required).
            let _ = nats_or_skip!(Err::<(), _>(e));
            return;
        }
        Err(e) => e,
        Ok(nats) => panic!("a bad config started: {nats:?}"),
    };
    let agentorg_testkit::TestkitError::Start { log, reason, .. } = &err else {
        panic!("expected a Start error, got {err:?}");
    };
    assert!(
        err.to_string().contains(&log.display().to_string()),
        "{err}"
    );
    assert!(log.exists(), "the log is kept: {}", log.display());
    assert!(reason.contains("exited early"), "{reason}");
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
}
