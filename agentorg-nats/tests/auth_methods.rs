//! The ways a transport authenticates, against real nats-servers that
//! require them.

mod common;

use agentorg_core::conformance::unique_org;
use agentorg_core::subject::Subjects;
use agentorg_core::transport::{PublishOptions, Transport, TransportError};
use agentorg_testkit::{nats_or_skip, NatsServer};

/// Token auth works; a wrong token or password is `Forbidden` at build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_password() {
    let Some(nats) = nats_or_skip!(NatsServer::builder()
        .config_text("authorization { token: \"s3cret\" }")
        .start())
    else {
        return;
    };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_token("s3cret")
        .build()
        .await
        .unwrap();
    t.publish(
        &Subjects::new(org.clone()).alerts(),
        "x".into(),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    match common::builder([nats.url()], &org)
        .with_token("wrong")
        .build()
        .await
    {
        Err(TransportError::Forbidden { .. }) => {}
        other => panic!("wrong token: {:?}", other.map(|_| ())),
    }
    let Some(users) = nats_or_skip!(NatsServer::builder()
        .config_text("authorization { users = [ { user: \"a\", password: \"b\" } ] }")
        .start())
    else {
        return;
    };
    common::builder([users.url()], &org)
        .with_user_and_password("a", "b")
        .build()
        .await
        .unwrap();
    match common::builder([users.url()], &org)
        .with_user_and_password("a", "c")
        .build()
        .await
    {
        Err(TransportError::Forbidden { .. }) => {}
        other => panic!("wrong password: {:?}", other.map(|_| ())),
    }
}

/// NKey auth (feature `nkeys`): the server knows the user's public key, the
/// transport signs with its seed.
#[cfg(feature = "nkeys")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey() {
    let user = nkeys::KeyPair::new_user();
    let Some(nats) = nats_or_skip!(NatsServer::builder()
        .config_text(format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ))
        .start())
    else {
        return;
    };
    let org = unique_org();
    let t = common::builder([nats.url()], &org)
        .with_nkey(user.seed().unwrap())
        .build()
        .await
        .unwrap();
    t.publish(
        &Subjects::new(org.clone()).alerts(),
        "x".into(),
        PublishOptions::default(),
    )
    .await
    .unwrap();
    let other = nkeys::KeyPair::new_user();
    match common::builder([nats.url()], &org)
        .with_nkey(other.seed().unwrap())
        .build()
        .await
    {
        Err(TransportError::Forbidden { .. }) => {}
        r => panic!("unknown nkey: {:?}", r.map(|_| ())),
    }
}
