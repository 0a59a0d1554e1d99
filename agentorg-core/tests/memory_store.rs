//! The state store conformance suite and the memory store's own behaviour.

use std::sync::Arc;

use agentorg_core::conformance::store as suite;
use agentorg_core::store::{
    Change, DocKey, MemoryStore, Precondition, StateStore, StateStoreExt, WatchTarget,
};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn conformance_suite() {
    suite::run_all(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn conformance_through_wrappers() {
    let boxed: Box<dyn StateStore> = Box::new(MemoryStore::new());
    suite::conditional_writes(Arc::new(boxed)).await;
    suite::atomic_commit_all_or_nothing(Arc::new(Arc::new(MemoryStore::new()))).await;
}

/// A watcher that falls far behind (more changes than the broadcast buffer)
/// still ends on the latest state, without repeats or going backwards.
#[tokio::test]
async fn a_lagging_watcher_catches_up_with_the_latest_state() {
    let store = MemoryStore::new();
    let key = DocKey::new("c", "d").unwrap();
    let other = DocKey::new("c", "gone").unwrap();
    store.create(&other, json!({})).await.unwrap();
    let mut w = store
        .watch(WatchTarget::Collection(key.collection().clone()))
        .await
        .unwrap();
    let mut last = None;
    for n in 0..5000 {
        last = Some(
            store
                .put(&key, json!({"n": n}), Precondition::None)
                .await
                .unwrap(),
        );
    }
    store.delete(&other, Precondition::None).await.unwrap();
    let last = last.unwrap();
    let mut versions = Vec::new();
    let mut saw_delete = false;
    while versions.last() != Some(&last) || !saw_delete {
        match w.next().await.unwrap().unwrap() {
            Change::Put(d) if d.key == key => {
                if let Some(prev) = versions.last() {
                    assert!(d.version > *prev, "versions go forward");
                }
                versions.push(d.version);
            }
            Change::Put(d) => assert_eq!(d.key, other, "initial state"),
            Change::Deleted { key: k } => {
                assert_eq!(k, other);
                assert!(!saw_delete, "one delete, once");
                saw_delete = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(versions.len() < 5000, "a lagging watcher coalesces");
}
