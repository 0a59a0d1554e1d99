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

/// A scoped view refuses what is outside its root before any call reaches
/// the store (gets, lists, commits and watches all counted); inside, it
/// forwards; the store suite passes through it on its own root.
#[tokio::test]
async fn a_scoped_store_refuses_outside_its_root_before_any_store_call() {
    use agentorg_core::conformance::faults::HookedStore;
    use agentorg_core::store::{CollectionPath, ListOptions, ScopedStore, StoreError, Write};

    let counted = HookedStore::new(Arc::new(MemoryStore::new()), "Counted");
    let calls = counted.calls();
    let scoped = ScopedStore::new(Arc::new(counted), "agentorg/o/roles/backend");
    let theirs = CollectionPath::new("agentorg/o/roles/cto/notes").unwrap();
    let prefix_only = CollectionPath::new("agentorg/o/roles/backend-x/notes").unwrap();
    let shared = CollectionPath::new("agentorg/o/tasks").unwrap();
    for c in [&theirs, &prefix_only, &shared] {
        let key = c.doc("a").unwrap();
        let forbidden = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Forbidden { .. }));
        assert!(forbidden(scoped.get(&key).await.map(drop)), "get {key}");
        assert!(
            forbidden(scoped.list(c, ListOptions::default()).await.map(drop)),
            "list {c}"
        );
        let write = Write::put(key.clone(), json!(1), Precondition::None);
        assert!(
            forbidden(scoped.commit(vec![write]).await.map(drop)),
            "commit {key}"
        );
        assert!(
            forbidden(
                scoped
                    .watch(WatchTarget::Document(key.clone()))
                    .await
                    .map(drop)
            ),
            "watch {key}"
        );
    }
    assert_eq!(calls.total(), 0, "no call reached the store");
    let mine = CollectionPath::new("agentorg/o/roles/backend/notes")
        .unwrap()
        .doc("a")
        .unwrap();
    scoped.create(&mine, json!({"n": 1})).await.unwrap();
    assert_eq!(scoped.get(&mine).await.unwrap().unwrap().value["n"], 1);
    assert_eq!(calls.commits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A commit with one write outside is refused whole.
    let mixed = vec![
        Write::put(mine.clone(), json!({"n": 2}), Precondition::None),
        Write::put(theirs.doc("b").unwrap(), json!(1), Precondition::None),
    ];
    assert!(matches!(
        scoped.commit(mixed).await,
        Err(StoreError::Forbidden { .. })
    ));
    assert_eq!(scoped.get(&mine).await.unwrap().unwrap().value["n"], 1);
}
