//! The state store conformance suite.
//!
//! Every function takes the store and works under a fresh root collection,
//! so the functions may share one store and run in any order.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use super::{fail, unique_name, EVENTUALLY};
use crate::store::{
    Change, ChangeStream, CollectionPath, DocKey, ListOptions, Precondition, StateStore,
    StateStoreExt, StoreError, Version, WatchTarget, Write, MAX_DOCUMENT_BYTES,
};

/// Runs every behaviour of the suite, one after the other.
pub async fn run_all(store: Arc<dyn StateStore>) {
    put_get_delete(Arc::clone(&store)).await;
    conditional_writes(Arc::clone(&store)).await;
    atomic_commit_all_or_nothing(Arc::clone(&store)).await;
    concurrent_increments(Arc::clone(&store)).await;
    list_pages(Arc::clone(&store)).await;
    values_round_trip(Arc::clone(&store)).await;
    document_limits(Arc::clone(&store)).await;
    watch_document(Arc::clone(&store)).await;
    watch_burst(Arc::clone(&store), 100).await;
    watch_collection(store).await;
}

fn root(b: &str) -> CollectionPath {
    let name = unique_name("s");
    CollectionPath::new(format!("conformance/{name}/docs"))
        .unwrap_or_else(|e| fail(b, format!("fixture path: {e}")))
}

fn key(b: &str, c: &CollectionPath, id: &str) -> DocKey {
    c.doc(id)
        .unwrap_or_else(|e| fail(b, format!("fixture key: {e}")))
}

async fn ok<T>(b: &str, what: &str, r: Result<T, StoreError>) -> T {
    r.unwrap_or_else(|e| fail(b, format!("{what} failed: {e}")))
}

async fn get_value(b: &str, store: &dyn StateStore, k: &DocKey) -> Option<(Value, Version)> {
    ok(b, "get", store.get(k).await)
        .await
        .map(|d| (d.value, d.version))
}

/// Create, read, replace and delete one document; versions grow.
pub async fn put_get_delete(store: Arc<dyn StateStore>) {
    const B: &str = "put_get_delete";
    let c = root(B);
    let k = key(B, &c, "a");
    if get_value(B, &*store, &k).await.is_some() {
        fail(B, "a fresh document exists");
    }
    let v1 = ok(B, "create", store.create(&k, json!({"n": 1})).await).await;
    match get_value(B, &*store, &k).await {
        Some((v, ver)) if v == json!({"n": 1}) && ver == v1 => {}
        other => fail(B, format!("get after create: {other:?}")),
    }
    let v2 = ok(
        B,
        "put",
        store.put(&k, json!({"n": 2}), Precondition::None).await,
    )
    .await;
    if v2 <= v1 {
        fail(B, format!("version did not grow: {v1} then {v2}"));
    }
    ok(
        B,
        "delete",
        store.delete(&k, Precondition::Version(v2)).await,
    )
    .await;
    if get_value(B, &*store, &k).await.is_some() {
        fail(B, "document still there after delete");
    }
    ok(
        B,
        "delete of a missing document without precondition",
        store.delete(&k, Precondition::None).await,
    )
    .await;
    let v3 = ok(B, "re-create", store.create(&k, json!({"n": 3})).await).await;
    if v3 <= v2 {
        fail(B, format!("re-created version {v3} not after {v2}"));
    }
}

fn expect_conflict(b: &str, what: &str, k: &DocKey, r: Result<impl std::fmt::Debug, StoreError>) {
    match r {
        Err(StoreError::Conflict { key, .. }) if key.contains(k.id()) => {}
        other => fail(
            b,
            format!("{what}: expected Conflict naming {k}, got {other:?}"),
        ),
    }
}

fn expect_not_found(b: &str, what: &str, k: &DocKey, r: Result<impl std::fmt::Debug, StoreError>) {
    match r {
        Err(StoreError::NotFound { key }) if key.contains(k.id()) => {}
        other => fail(
            b,
            format!("{what}: expected NotFound naming {k}, got {other:?}"),
        ),
    }
}

/// Each precondition fails the way the contract says, naming the document,
/// and a failed write changes nothing.
pub async fn conditional_writes(store: Arc<dyn StateStore>) {
    const B: &str = "conditional_writes";
    let c = root(B);
    let k = key(B, &c, "doc");
    let missing = key(B, &c, "missing");
    let v1 = ok(B, "create", store.create(&k, json!({"n": 1})).await).await;
    let v2 = ok(
        B,
        "put at version",
        store
            .put(&k, json!({"n": 2}), Precondition::Version(v1))
            .await,
    )
    .await;
    expect_conflict(
        B,
        "create of an existing document",
        &k,
        store.create(&k, json!({"n": 9})).await,
    );
    expect_conflict(
        B,
        "put at a stale version",
        &k,
        store
            .put(&k, json!({"n": 9}), Precondition::Version(v1))
            .await,
    );
    expect_conflict(
        B,
        "delete at a stale version",
        &k,
        store.delete(&k, Precondition::Version(v1)).await,
    );
    expect_not_found(
        B,
        "put at a version of a missing document",
        &missing,
        store
            .put(&missing, json!({}), Precondition::Version(v1))
            .await,
    );
    expect_not_found(
        B,
        "put requiring a missing document to exist",
        &missing,
        store
            .put(&missing, json!({}), Precondition::MustExist)
            .await,
    );
    expect_not_found(
        B,
        "delete at a version of a missing document",
        &missing,
        store.delete(&missing, Precondition::Version(v1)).await,
    );
    match get_value(B, &*store, &k).await {
        Some((v, ver)) if v == json!({"n": 2}) && ver == v2 => {}
        other => fail(B, format!("failed writes changed the document: {other:?}")),
    }
    if get_value(B, &*store, &missing).await.is_some() {
        fail(B, "a failed write created a document");
    }
    ok(
        B,
        "put requiring an existing document",
        store
            .put(&k, json!({"n": 3}), Precondition::MustExist)
            .await,
    )
    .await;
}

/// A commit whose last precondition fails leaves every document as it was;
/// one whose preconditions hold applies every write.
pub async fn atomic_commit_all_or_nothing(store: Arc<dyn StateStore>) {
    const B: &str = "atomic_commit_all_or_nothing";
    let c = root(B);
    let keys: Vec<DocKey> = ["a", "b", "c"].iter().map(|id| key(B, &c, id)).collect();
    let mut versions = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        versions.push(ok(B, "create", store.create(k, json!({"n": i})).await).await);
    }
    let stale = versions[0];
    let bad = vec![
        Write::put(
            keys[0].clone(),
            json!({"n": 10}),
            Precondition::Version(versions[0]),
        ),
        Write::delete(keys[1].clone(), Precondition::Version(versions[1])),
        Write::put(
            keys[2].clone(),
            json!({"n": 12}),
            Precondition::Version(stale),
        ),
    ];
    expect_conflict(
        B,
        "commit with a stale last precondition",
        &keys[2],
        store.commit(bad).await,
    );
    for (i, k) in keys.iter().enumerate() {
        match get_value(B, &*store, k).await {
            Some((v, ver)) if v == json!({"n": i}) && ver == versions[i] => {}
            other => fail(B, format!("{k} changed by a failed commit: {other:?}")),
        }
    }
    let created = key(B, &c, "d");
    let good = vec![
        Write::put(
            keys[0].clone(),
            json!({"n": 10}),
            Precondition::Version(versions[0]),
        ),
        Write::delete(keys[1].clone(), Precondition::Version(versions[1])),
        Write::put(
            keys[2].clone(),
            json!({"n": 12}),
            Precondition::Version(versions[2]),
        ),
        Write::put(
            created.clone(),
            json!({"n": 13}),
            Precondition::MustNotExist,
        ),
    ];
    let out = ok(B, "commit", store.commit(good).await).await;
    if out.len() != 4
        || out[1].is_some()
        || out.iter().enumerate().any(|(i, v)| i != 1 && v.is_none())
    {
        fail(B, format!("commit returned versions {out:?}"));
    }
    let expect = [(0, Some(10)), (1, None), (2, Some(12))];
    for (i, n) in expect {
        let got = get_value(B, &*store, &keys[i]).await.map(|(v, _)| v);
        if got != n.map(|n| json!({"n": n})) {
            fail(B, format!("{} after commit: {got:?}", keys[i]));
        }
    }
    if get_value(B, &*store, &created).await.map(|(v, _)| v) != Some(json!({"n": 13})) {
        fail(B, "commit did not create the new document");
    }
    let twice = vec![
        Write::put(created.clone(), json!({}), Precondition::None),
        Write::delete(created.clone(), Precondition::None),
    ];
    match store.commit(twice).await {
        Err(StoreError::InvalidInput { .. }) => {}
        other => fail(B, format!("two writes to one document: {other:?}")),
    }
}

/// 8 tasks each add 1 to one counter 100 times by read / conditional write /
/// retry on conflict: the counter ends at exactly 800.
pub async fn concurrent_increments(store: Arc<dyn StateStore>) {
    const B: &str = "concurrent_increments";
    const TASKS: u64 = 8;
    const EACH: u64 = 100;
    let c = root(B);
    let k = key(B, &c, "counter");
    ok(B, "create", store.create(&k, json!({"count": 0})).await).await;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        let k = k.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let doc = match store.get(&k).await {
                        Ok(Some(d)) => d,
                        other => fail(B, format!("get: {other:?}")),
                    };
                    let n = doc.value["count"].as_u64().unwrap_or(u64::MAX);
                    let next = json!({"count": n + 1});
                    match store
                        .put(&k, next, Precondition::Version(doc.version))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => fail(B, format!("conditional put: {e}")),
                    }
                }
            }
            conflicts
        }));
    }
    for h in handles {
        if let Err(e) = h.await {
            fail(B, format!("an incrementing task panicked: {e}"));
        }
    }
    match get_value(B, &*store, &k).await {
        Some((v, _)) if v == json!({"count": TASKS * EACH}) => {}
        other => fail(B, format!("expected count {}, got {other:?}", TASKS * EACH)),
    }
}

/// Listing pages through a collection in id order, without nested
/// collections' documents.
pub async fn list_pages(store: Arc<dyn StateStore>) {
    const B: &str = "list_pages";
    let c = root(B);
    let ids: Vec<String> = (0..25).map(|i| format!("d{i:02}")).collect();
    for id in &ids {
        ok(
            B,
            "create",
            store.create(&key(B, &c, id), json!({"id": id})).await,
        )
        .await;
    }
    let nested = key(B, &c, "d00")
        .subcollection("sub")
        .unwrap_or_else(|e| fail(B, e));
    ok(
        B,
        "create nested",
        store.create(&key(B, &nested, "x"), json!({})).await,
    )
    .await;
    let mut got = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = ok(
            B,
            "list",
            store
                .list(
                    &c,
                    ListOptions::default()
                        .with_page_size(10)
                        .with_page_token(token),
                )
                .await,
        )
        .await;
        pages += 1;
        if page.documents.len() > 10 {
            fail(
                B,
                format!("page of {} documents, asked for 10", page.documents.len()),
            );
        }
        got.extend(page.documents.into_iter().map(|d| d.key.id().to_owned()));
        match page.next_page_token {
            Some(t) if pages < 10 => token = Some(t),
            Some(_) => fail(B, "paging does not end"),
            None => break,
        }
    }
    if got != ids {
        fail(B, format!("listed {got:?}"));
    }
    if pages < 3 {
        fail(B, format!("25 documents in {pages} pages of 10"));
    }
    let empty = root(B);
    let page = ok(
        B,
        "list empty",
        store.list(&empty, ListOptions::default()).await,
    )
    .await;
    if !page.documents.is_empty() || page.next_page_token.is_some() {
        fail(B, "an empty collection listed documents");
    }
    let all = ok(B, "list_all", store.list_all(&c).await).await;
    if all.len() != 25 {
        fail(B, format!("list_all found {}", all.len()));
    }
}

/// Every JSON value the limits admit is read back exactly as written.
pub async fn values_round_trip(store: Arc<dyn StateStore>) {
    const B: &str = "values_round_trip";
    let c = root(B);
    let value = json!({
        "int": 42, "neg": -7, "big": i64::MAX, "small": i64::MIN,
        "float": 1.5, "whole_float": 2.0, "tiny": 1e-300,
        "string": "ünïcödé ✓", "empty": "", "t": true, "f": false, "null": null,
        "list": [1, "two", 3.5, null, {"k": [true]}], "empty_list": [],
        "map": {"nested": {"deeper": {"x": 1}}, "with.dot": 1, "with space": 2},
        "empty_map": {}
    });
    let k = key(B, &c, "v");
    ok(B, "create", store.create(&k, value.clone()).await).await;
    match get_value(B, &*store, &k).await {
        Some((v, _)) if v == value => {}
        other => fail(B, format!("read back {other:?}")),
    }
}

/// What the document limits exclude is refused with InvalidInput before
/// anything is written.
pub async fn document_limits(store: Arc<dyn StateStore>) {
    const B: &str = "document_limits";
    let c = root(B);
    let k = key(B, &c, "x");
    let deep = (0..21).fold(json!(1), |acc, _| json!({ "d": acc }));
    let cases = [
        ("over 1 MiB", json!({"s": "x".repeat(MAX_DOCUMENT_BYTES)})),
        ("array in array", json!({"a": [[1]]})),
        ("nesting 21 deep", json!({"f": deep})),
        ("reserved key", json!({"__x__": 1})),
        ("empty key", json!({"m": {"": 1}})),
        ("integer past i64", json!({"n": u64::MAX})),
        ("not an object", json!([1, 2])),
    ];
    for (what, value) in cases {
        match store.put(&k, value, Precondition::None).await {
            Err(StoreError::InvalidInput { .. }) => {}
            other => fail(B, format!("{what}: expected InvalidInput, got {other:?}")),
        }
    }
    match store
        .commit(vec![
            Write::put(key(B, &c, "ok"), json!({}), Precondition::None),
            Write::put(k.clone(), json!({"a": [[1]]}), Precondition::None),
        ])
        .await
    {
        Err(StoreError::InvalidInput { .. }) => {}
        other => fail(B, format!("commit with one bad document: {other:?}")),
    }
    if get_value(B, &*store, &key(B, &c, "ok")).await.is_some()
        || get_value(B, &*store, &k).await.is_some()
    {
        fail(B, "a refused write left a document behind");
    }
    let near = json!({"s": "x".repeat(MAX_DOCUMENT_BYTES - 4096)});
    ok(
        B,
        "a document just under the limit",
        store.put(&k, near, Precondition::None).await,
    )
    .await;
}

async fn next_change(b: &str, w: &mut ChangeStream) -> Change {
    match tokio::time::timeout(EVENTUALLY, w.next()).await {
        Ok(Some(Ok(c))) => c,
        Ok(Some(Err(e))) => fail(b, format!("watch failed: {e}")),
        Ok(None) => fail(b, "watch ended"),
        Err(_) => fail(b, format!("no change within {EVENTUALLY:?}")),
    }
}

async fn watch(b: &str, store: &dyn StateStore, target: WatchTarget) -> ChangeStream {
    ok(b, "watch", store.watch(target).await).await
}

/// A document watch sees creation, updates, deletion and re-creation in
/// order, with growing versions and the latest state last.
pub async fn watch_document(store: Arc<dyn StateStore>) {
    const B: &str = "watch_document";
    let c = root(B);
    let k = key(B, &c, "w");
    let mut w = watch(B, &*store, WatchTarget::Document(k.clone())).await;
    let v1 = ok(B, "create", store.create(&k, json!({"n": 1})).await).await;
    match next_change(B, &mut w).await {
        Change::Put(d) if d.version == v1 && d.value == json!({"n": 1}) => {}
        other => fail(B, format!("after create: {other:?}")),
    }
    ok(B, "delete", store.delete(&k, Precondition::None).await).await;
    match next_change(B, &mut w).await {
        Change::Deleted { key } if key == k => {}
        other => fail(B, format!("after delete: {other:?}")),
    }
    let v3 = ok(B, "re-create", store.create(&k, json!({"n": 3})).await).await;
    match next_change(B, &mut w).await {
        Change::Put(d) if d.version == v3 && d.value == json!({"n": 3}) => {}
        other => fail(B, format!("after re-create: {other:?}")),
    }
    // A second watch starts with the current state.
    let mut w2 = watch(B, &*store, WatchTarget::Document(k.clone())).await;
    match next_change(B, &mut w2).await {
        Change::Put(d) if d.version == v3 => {}
        other => fail(B, format!("a new watch's first change: {other:?}")),
    }
}

/// Under a burst of `writes` puts, a watcher's versions strictly increase,
/// never repeat, and end at the last write's version.
pub async fn watch_burst(store: Arc<dyn StateStore>, writes: u64) {
    const B: &str = "watch_burst";
    let c = root(B);
    let k = key(B, &c, "burst");
    let mut w = watch(B, &*store, WatchTarget::Document(k.clone())).await;
    let mut last = None;
    for n in 1..=writes {
        last = Some(
            ok(
                B,
                "put",
                store.put(&k, json!({"n": n}), Precondition::None).await,
            )
            .await,
        );
    }
    let Some(last) = last else { return };
    let mut seen: Vec<Version> = Vec::new();
    loop {
        match next_change(B, &mut w).await {
            Change::Put(d) => {
                if let Some(prev) = seen.last() {
                    if d.version <= *prev {
                        fail(B, format!("version {} after {prev}", d.version));
                    }
                }
                seen.push(d.version);
                if d.version == last {
                    if d.value != json!({"n": writes}) {
                        fail(B, format!("last version carries {}", d.value));
                    }
                    break;
                }
                if d.version > last {
                    fail(B, "a version after the last write");
                }
            }
            other => fail(B, format!("unexpected {other:?}")),
        }
    }
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), w.next()).await {
        fail(
            B,
            format!("a change after the last write's version: {extra:?}"),
        );
    }
}

/// A collection watch starts with the documents present, then follows each
/// document of that collection (and no other).
pub async fn watch_collection(store: Arc<dyn StateStore>) {
    const B: &str = "watch_collection";
    let c = root(B);
    let other = root(B);
    let a = key(B, &c, "a");
    let b = key(B, &c, "b");
    let va = ok(B, "create", store.create(&a, json!({"n": 1})).await).await;
    let mut w = watch(B, &*store, WatchTarget::Collection(c.clone())).await;
    match next_change(B, &mut w).await {
        Change::Put(d) if d.key == a && d.version == va => {}
        other => fail(B, format!("initial state: {other:?}")),
    }
    ok(
        B,
        "create elsewhere",
        store.create(&key(B, &other, "z"), json!({})).await,
    )
    .await;
    let vb = ok(B, "create", store.create(&b, json!({"n": 2})).await).await;
    match next_change(B, &mut w).await {
        Change::Put(d) if d.key == b && d.version == vb => {}
        other => fail(B, format!("after creating b: {other:?}")),
    }
    let va2 = ok(
        B,
        "put",
        store
            .put(&a, json!({"n": 3}), Precondition::Version(va))
            .await,
    )
    .await;
    match next_change(B, &mut w).await {
        Change::Put(d) if d.key == a && d.version == va2 && d.value == json!({"n": 3}) => {}
        other => fail(B, format!("after updating a: {other:?}")),
    }
    ok(B, "delete", store.delete(&b, Precondition::None).await).await;
    match next_change(B, &mut w).await {
        Change::Deleted { key } if key == b => {}
        other => fail(B, format!("after deleting b: {other:?}")),
    }
}
