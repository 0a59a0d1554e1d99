//! Missing servers are `Missing` errors, which the macros turn into skips.

use agentorg_testkit::{ok_or_skip, FirestoreEmulator, NatsServer, TestkitError};

#[test]
fn missing_nats_binary_is_missing() {
    let err = NatsServer::builder()
        .binary("/nonexistent/agentorg/nats-server")
        .start()
        .expect_err("no such binary");
    assert!(err.is_missing(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/nonexistent/agentorg/nats-server"),
        "{message}"
    );
    assert!(
        message.contains("scripts/test"),
        "names the install step: {message}"
    );

    let err = NatsServer::builder()
        .binary("/nonexistent/nats-server")
        .start_cluster(3)
        .expect_err("no such binary");
    assert!(err.is_missing(), "{err:?}");
}

#[test]
fn too_old_nats_is_missing() {
    // A fake nats-server that reports Debian's version.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nats-server");
    std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .unwrap();
    let err = NatsServer::builder()
        .binary(&fake)
        .start()
        .expect_err("too old");
    assert!(err.is_missing(), "{err:?}");
    assert!(err.to_string().contains("2.9"), "{err}");
}

#[test]
fn missing_emulator_jar_or_java_is_missing() {
    let err = FirestoreEmulator::builder()
        .jar("/nonexistent/cloud-firestore-emulator.jar")
        .start()
        .expect_err("no such jar");
    assert!(err.is_missing(), "{err:?}");
    let err = FirestoreEmulator::builder()
        .java("/nonexistent/java")
        .start()
        .expect_err("no such java");
    assert!(err.is_missing(), "{err:?}");
}

#[test]
fn ok_or_skip_passes_servers_through() {
    assert_eq!(ok_or_skip::<u8>(Ok(7), "t"), Some(7));
}

#[test]
#[should_panic(expected = "did not start")]
fn ok_or_skip_panics_on_start_errors() {
    let err = TestkitError::Start {
        what: "x".into(),
        log: "/tmp/x.log".into(),
        reason: "boom".into(),
    };
    let _ = ok_or_skip::<()>(Err(err), "t");
}

#[test]
fn ok_or_skip_on_missing_depends_on_servers_required() {
    let missing = || TestkitError::Missing {
        what: "nats-server not found".into(),
        hint: "run scripts/test".into(),
    };
    if agentorg_testkit::servers_required() {
        let result = std::panic::catch_unwind(|| ok_or_skip::<()>(Err(missing()), "t"));
        assert!(
            result.is_err(),
            "a missing server must fail when servers are required"
        );
    } else {
        assert_eq!(ok_or_skip::<()>(Err(missing()), "t"), None);
    }
}
