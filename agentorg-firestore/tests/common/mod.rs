//! Stores on the test binary's Firestore emulator, one fresh project each.
#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::sync::Arc;
use std::time::Duration;

use agentorg_core::store::{Change, ChangeStream, StateStore, Version, Write};
use agentorg_firestore::FirestoreStore;
use agentorg_testkit::FirestoreEmulator;
use futures::StreamExt;

/// A store on a fresh project of `emulator`.
pub async fn store_on(emulator: &FirestoreEmulator) -> FirestoreStore {
    FirestoreStore::builder()
        .with_project_id(emulator.unique_project())
        .with_emulator(emulator.host_port())
        .build()
        .await
        .expect("connect to the Firestore emulator")
}

/// The emulator's REST view of a document the store wrote (`GET
/// /v1/projects/P/databases/D/documents/<key>`): `None` if it does not exist,
/// else the document's JSON (`fields`, `updateTime`, …). An independent check
/// of what reached Firestore.
pub fn rest_get(
    emulator: &FirestoreEmulator,
    store: &FirestoreStore,
    key: &agentorg_core::store::DocKey,
) -> Option<serde_json::Value> {
    let path = format!("/v1/{}", store.document_name(key));
    let response = emulator.request("GET", &path, None).expect("REST GET");
    match response.status {
        404 => None,
        200 => Some(serde_json::from_str(&response.body).expect("REST JSON")),
        other => panic!("GET {path}: {other} {}", response.body),
    }
}

/// A store on a fresh project of the shared emulator, as a trait object, or
/// `None` when the emulator is not installed (the test is skipped, loudly;
/// `AGENTORG_REQUIRE_SERVERS=1` makes it fail instead).
#[macro_export]
macro_rules! fresh_store {
    () => {
        match agentorg_testkit::firestore_or_skip!() {
            Some(emulator) => Some(common::dyn_store(&emulator).await),
            None => None,
        }
    };
}

/// [`store_on`] as `Arc<dyn StateStore>`, what the suites take.
pub async fn dyn_store(emulator: &FirestoreEmulator) -> Arc<dyn StateStore> {
    Arc::new(store_on(emulator).await)
}

/// How long a test waits for what must eventually happen.
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// The watch's next change, within [`EVENTUALLY`].
pub async fn next_change(w: &mut ChangeStream) -> Change {
    match tokio::time::timeout(EVENTUALLY, w.next()).await {
        Ok(Some(Ok(c))) => c,
        other => panic!("no change: {other:?}"),
    }
}

/// Fails if the watch yields anything within 700 ms.
pub async fn quiet(w: &mut ChangeStream) {
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(700), w.next()).await {
        panic!("unexpected change: {extra:?}");
    }
}

/// One write that gets through. The emulator now and then fails a write
/// with CANCELLED ("call already cancelled", a grpc-java error from
/// notifying a listener that is gone, as when another client's is cut off),
/// whether or not it applied it: on a retryable error, read back whether it
/// did, and send it again if not.
pub async fn write_through(store: &FirestoreStore, w: Write) -> Option<Version> {
    loop {
        match store.commit(vec![w.clone()]).await {
            Ok(versions) => return versions[0],
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match (&w, store.get(w.key()).await.unwrap()) {
                    (Write::Put { value, .. }, Some(now)) if now.value == *value => {
                        return Some(now.version)
                    }
                    (Write::Delete { .. }, None) => return None,
                    _ => {}
                }
            }
            Err(e) => panic!("{w:?}: {e:?}"),
        }
    }
}
