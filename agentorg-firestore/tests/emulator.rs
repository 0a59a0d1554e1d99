//! What the store does on the real Firestore emulator beyond the suite:
//! atomic commits checked through the emulator's own REST API, the server's
//! precondition statuses and what they map to, value round trips, refusals
//! that send nothing, large lists, and watches under bursts and dropped
//! connections.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use agentorg_core::store::{
    Change, CollectionPath, DocKey, ListOptions, Precondition, StateStore, StateStoreExt,
    StoreError, Version, WatchTarget, Write, MAX_DOCUMENT_BYTES,
};
use agentorg_firestore::firestore::gcloud_sdk::google::firestore::v1 as fs;
use agentorg_firestore::firestore::gcloud_sdk::tonic::Code;
use agentorg_firestore::FirestoreStore;
use agentorg_testkit::{firestore_or_skip, FirestoreEmulator};
use common::proxy::Proxy;
use common::{next_change, quiet, rest_get, store_on, write_through};
use serde_json::{json, Value};

fn key(collection: &str, id: &str) -> DocKey {
    DocKey::new(collection, id).unwrap()
}

/// The `n` field of a document as the emulator's REST API shows it.
fn rest_n(emulator: &FirestoreEmulator, store: &FirestoreStore, k: &DocKey) -> Option<Value> {
    rest_get(emulator, store, k).map(|doc| doc["fields"]["n"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_last_precondition_fails_changes_nothing() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let keys: Vec<DocKey> = ["a", "b", "c"].iter().map(|id| key("docs", id)).collect();
    let mut versions = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        versions.push(store.create(k, json!({ "n": i })).await.unwrap());
    }
    let before: Vec<Value> = keys
        .iter()
        .map(|k| rest_get(&emulator, &store, k).expect("created"))
        .collect();
    let created = key("docs", "d");
    let result = store
        .commit(vec![
            Write::put(
                keys[0].clone(),
                json!({"n": 10}),
                Precondition::Version(versions[0]),
            ),
            Write::delete(keys[1].clone(), Precondition::Version(versions[1])),
            Write::put(
                created.clone(),
                json!({"n": 13}),
                Precondition::MustNotExist,
            ),
            // Stale: the version of another document.
            Write::put(
                keys[2].clone(),
                json!({"n": 12}),
                Precondition::Version(versions[0]),
            ),
        ])
        .await;
    match result {
        Err(StoreError::Conflict { key, message }) => {
            assert_eq!(key, keys[2].to_string(), "{message}");
            assert!(message.contains("expected"), "{message}");
        }
        other => panic!("expected a conflict on {}: {other:?}", keys[2]),
    }
    // Exactly as before, update times included, as Firestore itself says.
    for (k, was) in keys.iter().zip(&before) {
        assert_eq!(rest_get(&emulator, &store, k).as_ref(), Some(was), "{k}");
    }
    assert_eq!(rest_get(&emulator, &store, &created), None);

    // The same commit with every precondition holding applies every write.
    let out = store
        .commit(vec![
            Write::put(
                keys[0].clone(),
                json!({"n": 10}),
                Precondition::Version(versions[0]),
            ),
            Write::delete(keys[1].clone(), Precondition::Version(versions[1])),
            Write::put(
                created.clone(),
                json!({"n": 13}),
                Precondition::MustNotExist,
            ),
            Write::put(
                keys[2].clone(),
                json!({"n": 12}),
                Precondition::Version(versions[2]),
            ),
        ])
        .await
        .unwrap();
    assert!(out[0].is_some() && out[1].is_none() && out[2].is_some() && out[3].is_some());
    // One commit, one update time.
    assert_eq!(out[0], out[3]);
    assert_eq!(
        rest_n(&emulator, &store, &keys[0]),
        Some(json!({"integerValue": "10"}))
    );
    assert_eq!(rest_get(&emulator, &store, &keys[1]), None);
    assert_eq!(
        rest_n(&emulator, &store, &created),
        Some(json!({"integerValue": "13"}))
    );
    assert_eq!(
        rest_n(&emulator, &store, &keys[2]),
        Some(json!({"integerValue": "12"}))
    );
}

/// Sends one write straight through the gRPC client and returns the status
/// code the emulator answers with.
async fn raw_status(
    store: &FirestoreStore,
    k: &DocKey,
    condition: fs::precondition::ConditionType,
) -> Code {
    let write = fs::Write {
        current_document: Some(fs::Precondition {
            condition_type: Some(condition),
        }),
        operation: Some(fs::write::Operation::Update(fs::Document {
            name: store.document_name(k),
            ..Default::default()
        })),
        ..Default::default()
    };
    let request = fs::CommitRequest {
        database: store.database_path().to_owned(),
        writes: vec![write],
        ..Default::default()
    };
    match store.db().client().get().commit(request).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn timestamp(v: Version) -> agentorg_firestore::firestore::gcloud_sdk::prost_types::Timestamp {
    agentorg_firestore::firestore::gcloud_sdk::prost_types::Timestamp {
        seconds: (v.raw() / 1_000_000_000) as i64,
        nanos: (v.raw() % 1_000_000_000) as i32,
    }
}

/// `ALREADY_EXISTS` and `FAILED_PRECONDITION` are `Conflict`, `NOT_FOUND` is
/// `NotFound`, each naming the document — also when it is one write among
/// several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_precondition_statuses_map_to_conflict_and_not_found() {
    use fs::precondition::ConditionType::{Exists, UpdateTime};
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let k = key("docs", "here");
    let missing = key("docs", "missing");
    let v1 = store.create(&k, json!({"n": 1})).await.unwrap();
    let v2 = store
        .put(&k, json!({"n": 2}), Precondition::Version(v1))
        .await
        .unwrap();

    // What the emulator answers, write by write.
    assert_eq!(
        raw_status(&store, &k, Exists(false)).await,
        Code::AlreadyExists
    );
    assert_eq!(
        raw_status(&store, &k, UpdateTime(timestamp(v1))).await,
        Code::FailedPrecondition
    );
    assert_eq!(
        raw_status(&store, &missing, Exists(true)).await,
        Code::NotFound
    );
    // A version precondition on a missing document: FAILED_PRECONDITION too.
    assert_eq!(
        raw_status(&store, &missing, UpdateTime(timestamp(v1))).await,
        Code::FailedPrecondition
    );

    // What the store makes of them.
    let named = |e: &StoreError, k: &DocKey| match e {
        StoreError::Conflict { key, .. } | StoreError::NotFound { key } => key == &k.to_string(),
        _ => false,
    };
    let e = store.create(&k, json!({})).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { .. }) && named(&e, &k),
        "{e:?}"
    );
    let e = store
        .put(&k, json!({}), Precondition::Version(v1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::Conflict { .. }) && named(&e, &k),
        "{e:?}"
    );
    let e = store
        .put(&missing, json!({}), Precondition::MustExist)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }) && named(&e, &missing),
        "{e:?}"
    );
    let e = store
        .put(&missing, json!({}), Precondition::Version(v1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }) && named(&e, &missing),
        "{e:?}"
    );
    let e = store
        .delete(&missing, Precondition::Version(v1))
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }) && named(&e, &missing),
        "{e:?}"
    );
    assert!(e.is_precondition_failure());

    // In a commit of several writes, the one that failed is named.
    let other = key("docs", "other");
    let vo = store.create(&other, json!({})).await.unwrap();
    let e = store
        .commit(vec![
            Write::put(other.clone(), json!({"x": 1}), Precondition::Version(vo)),
            Write::put(k.clone(), json!({"x": 1}), Precondition::MustNotExist),
            Write::put(key("docs", "new"), json!({}), Precondition::MustNotExist),
        ])
        .await
        .unwrap_err();
    match &e {
        StoreError::Conflict { key, message } => {
            assert_eq!(key, &k.to_string());
            assert!(message.contains("exists"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let e = store
        .commit(vec![
            Write::delete(missing.clone(), Precondition::MustExist),
            Write::put(other.clone(), json!({"x": 1}), Precondition::Version(vo)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }) && named(&e, &missing),
        "{e:?}"
    );
    assert_eq!(store.get(&other).await.unwrap().unwrap().version, vo);
    assert_eq!(store.get(&k).await.unwrap().unwrap().version, v2);
}

/// A version that is no update time (not a whole microsecond, like a memory
/// store's counter) never matches: the precondition fails the contract's way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_version_fails_its_precondition() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let k = key("docs", "d");
    let v = store.create(&k, json!({"n": 1})).await.unwrap();
    let foreign = Version::from_raw(3);
    let e = store
        .put(&k, json!({"n": 2}), Precondition::Version(foreign))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Conflict { key, .. } if *key == k.to_string()),
        "{e:?}"
    );
    let e = store
        .delete(&key("docs", "none"), Precondition::Version(foreign))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert_eq!(store.get(&k).await.unwrap().unwrap().version, v);
}

/// Integers are stored as `integerValue`, other numbers as `doubleValue`,
/// maps and arrays as such: what another Firestore client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_stored_as_their_firestore_types() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let k = key("docs", "typed");
    store
        .create(
            &k,
            json!({"i": 2, "f": 2.0, "s": "x", "b": true, "z": null, "a": [1, {"k": "v"}], "m": {"with.dot": 1}}),
        )
        .await
        .unwrap();
    let doc = rest_get(&emulator, &store, &k).unwrap();
    let f = &doc["fields"];
    assert_eq!(f["i"], json!({"integerValue": "2"}));
    assert_eq!(f["f"], json!({"doubleValue": 2.0}));
    assert_eq!(f["s"], json!({"stringValue": "x"}));
    assert_eq!(f["b"], json!({"booleanValue": true}));
    assert_eq!(f["z"], json!({"nullValue": null}));
    assert_eq!(
        f["a"],
        json!({"arrayValue": {"values": [{"integerValue": "1"}, {"mapValue": {"fields": {"k": {"stringValue": "v"}}}}]}})
    );
    assert_eq!(
        f["m"],
        json!({"mapValue": {"fields": {"with.dot": {"integerValue": "1"}}}})
    );
}

/// What the limits exclude is refused without a byte sent to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_send_nothing() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let proxy = Proxy::start(emulator.host_port()).await;
    let store = FirestoreStore::builder()
        .with_project_id(emulator.unique_project())
        .with_emulator(proxy.host_port())
        .build()
        .await
        .unwrap();
    let k = key("docs", "big");
    // Let the connection settle (settings frames and their acks).
    store.get(&k).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = proxy.bytes_to_server();
    let over = json!({"s": "x".repeat(MAX_DOCUMENT_BYTES)});
    let cases = [
        Write::put(k.clone(), over, Precondition::None),
        Write::put(k.clone(), json!({"a": [[1]]}), Precondition::MustNotExist),
        Write::put(k.clone(), json!({"n": u64::MAX}), Precondition::None),
        Write::put(k.clone(), json!({"__name__": 1}), Precondition::None),
    ];
    for w in cases {
        match store
            .commit(vec![
                Write::put(key("docs", "fine"), json!({}), Precondition::None),
                w,
            ])
            .await
        {
            Err(StoreError::InvalidInput { key: Some(key), .. }) => assert_eq!(key, k.to_string()),
            other => panic!("expected InvalidInput naming {k}: {other:?}"),
        }
    }
    match store
        .list(k.collection(), ListOptions::default().with_page_size(0))
        .await
    {
        Err(StoreError::InvalidInput { .. }) => {}
        other => panic!("page size 0: {other:?}"),
    }
    assert_eq!(
        proxy.bytes_to_server(),
        sent,
        "a refused request reached the server"
    );
    assert_eq!(rest_get(&emulator, &store, &k), None);
    assert_eq!(rest_get(&emulator, &store, &key("docs", "fine")), None);
}

/// A collection larger than a page streams page by page, in id order, and
/// nested collections are separate (their documents are not listed, their
/// paths are Firestore's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_collections_list_page_by_page() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let c = CollectionPath::new("agentorg/o/items").unwrap();
    let ids: Vec<String> = (0..1200).map(|i| format!("i{i:04}")).collect();
    for chunk in ids.chunks(400) {
        let writes = chunk
            .iter()
            .map(|id| {
                Write::put(
                    c.doc(id).unwrap(),
                    json!({ "id": id }),
                    Precondition::MustNotExist,
                )
            })
            .collect();
        store.commit(writes).await.unwrap();
    }
    let nested = c.doc("i0000").unwrap().subcollection("notes").unwrap();
    store
        .create(&nested.doc("n").unwrap(), json!({}))
        .await
        .unwrap();
    // Page by page with the server's tokens. A page holds at most the size
    // asked for, and may hold fewer (the emulator stops at 150).
    let mut listed = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = store
            .list(
                &c,
                ListOptions::default()
                    .with_page_size(ListOptions::MAX_PAGE_SIZE)
                    .with_page_token(token),
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.documents.len() <= ListOptions::MAX_PAGE_SIZE);
        listed.extend(page.documents.into_iter().map(|d| d.key.id().to_owned()));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert!(pages >= 2, "1200 documents in {pages} page(s)");
    assert_eq!(listed, ids);
    assert_eq!(store.list_all(&c).await.unwrap().len(), 1200);
    assert_eq!(store.list_all(&nested).await.unwrap().len(), 1);
    // Where Firestore keeps them: the path, segment for segment.
    let doc = rest_get(&emulator, &store, &nested.doc("n").unwrap()).unwrap();
    assert!(
        doc["name"]
            .as_str()
            .unwrap()
            .ends_with("/documents/agentorg/o/items/i0000/notes/n"),
        "{doc}"
    );
}

/// A collection watch under a burst of 100 writes to one document while the
/// emulator resends the whole collection after each: every document's
/// versions strictly increase, the others are never repeated, and the last
/// write's version comes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_watch_under_a_burst_dedupes_resent_result_sets() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let c = CollectionPath::new("burst").unwrap();
    for i in 0..5 {
        store
            .create(&c.doc(format!("other{i}")).unwrap(), json!({ "i": i }))
            .await
            .unwrap();
    }
    let hot = c.doc("hot").unwrap();
    let mut w = store
        .watch(WatchTarget::Collection(c.clone()))
        .await
        .unwrap();
    let mut last = None;
    for n in 1..=100 {
        last = Some(
            store
                .put(&hot, json!({ "n": n }), Precondition::None)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    let mut seen: HashMap<DocKey, Vec<Version>> = HashMap::new();
    loop {
        match next_change(&mut w).await {
            Change::Put(d) => {
                let versions = seen.entry(d.key.clone()).or_default();
                if let Some(prev) = versions.last() {
                    assert!(d.version > *prev, "{}: {} after {prev}", d.key, d.version);
                }
                versions.push(d.version);
                if d.key == hot && d.version == last {
                    assert_eq!(d.value, json!({"n": 100}));
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    for i in 0..5 {
        assert_eq!(
            seen[&c.doc(format!("other{i}")).unwrap()].len(),
            1,
            "other{i} repeated"
        );
    }
    quiet(&mut w).await;
}

/// A watch whose connection drops picks up where it was: the changes made
/// while it was cut off arrive (updates, deletes, creations), nothing it had
/// already yielded comes again, and later changes keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_its_connection_drops() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let proxy = Proxy::start(emulator.host_port()).await;
    let project = emulator.unique_project();
    let direct = FirestoreStore::builder()
        .with_project_id(&project)
        .with_emulator(emulator.host_port())
        .build()
        .await
        .unwrap();
    let watched = FirestoreStore::builder()
        .with_project_id(&project)
        .with_emulator(proxy.host_port())
        .build()
        .await
        .unwrap();
    let c = CollectionPath::new("resume").unwrap();
    let (a, b, d) = (
        c.doc("a").unwrap(),
        c.doc("b").unwrap(),
        c.doc("d").unwrap(),
    );
    let va1 = direct.create(&a, json!({"n": 1})).await.unwrap();
    let vb1 = direct.create(&b, json!({"n": 1})).await.unwrap();
    let mut w = watched
        .watch(WatchTarget::Collection(c.clone()))
        .await
        .unwrap();
    let mut doc_w = watched
        .watch(WatchTarget::Document(a.clone()))
        .await
        .unwrap();
    match (next_change(&mut w).await, next_change(&mut w).await) {
        (Change::Put(x), Change::Put(y)) => {
            assert_eq!(
                (x.key, x.version, y.key, y.version),
                (a.clone(), va1, b.clone(), vb1)
            );
        }
        other => panic!("initial state: {other:?}"),
    }
    assert!(matches!(next_change(&mut doc_w).await, Change::Put(x) if x.version == va1));

    proxy.cut();
    let va2 = write_through(
        &direct,
        Write::put(a.clone(), json!({"n": 2}), Precondition::Version(va1)),
    )
    .await
    .unwrap();
    write_through(
        &direct,
        Write::delete(b.clone(), Precondition::Version(vb1)),
    )
    .await;
    let vd1 = write_through(
        &direct,
        Write::put(d.clone(), json!({"n": 1}), Precondition::MustNotExist),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(match next_change(&mut w).await {
            Change::Put(x) => (x.key.id().to_owned(), Some(x.version)),
            Change::Deleted { key } => (key.id().to_owned(), None),
            other => panic!("{other:?}"),
        });
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".to_owned(), Some(va2)),
            ("b".to_owned(), None),
            ("d".to_owned(), Some(vd1))
        ]
    );
    assert!(matches!(next_change(&mut doc_w).await, Change::Put(x) if x.version == va2));
    quiet(&mut w).await;

    let vd2 = direct
        .put(&d, json!({"n": 2}), Precondition::Version(vd1))
        .await
        .unwrap();
    assert!(matches!(next_change(&mut w).await, Change::Put(x) if x.key == d && x.version == vd2));
    quiet(&mut w).await;
    quiet(&mut doc_w).await;
}

mod round_trips {
    //! Every JSON value the mapping accepts comes back from the emulator as
    //! it was written (a modest number of cases: each is a write and a read).

    use super::*;
    use proptest::prelude::*;

    fn key_name() -> impl Strategy<Value = String> {
        // Any non-empty name but the reserved `__x__` form: dots, spaces,
        // unicode and all.
        "[a-zA-Z0-9 ._\\-ü✓]{1,10}".prop_filter("not __x__", |k| {
            !(k.len() >= 4 && k.starts_with("__") && k.ends_with("__"))
        })
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,16}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(
                    inner
                        .clone()
                        .prop_filter("no array in array", |v| !v.is_array()),
                    0..4
                )
                .prop_map(Value::Array),
                prop::collection::btree_map(key_name(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn document() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(key_name(), json_value(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    #[test]
    fn json_documents_round_trip_through_the_emulator() {
        let Some(emulator) = firestore_or_skip!() else {
            return;
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(store_on(&emulator));
        let n = std::sync::atomic::AtomicU32::new(0);
        let config = ProptestConfig {
            cases: 48,
            ..ProptestConfig::default()
        };
        proptest!(config, |(doc in document())| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let k = key("values", &format!("v{i}"));
            let read = rt.block_on(async {
                store.put(&k, doc.clone(), Precondition::None).await.unwrap();
                store.get(&k).await.unwrap().unwrap()
            });
            prop_assert_eq!(read.value, doc);
        });
    }
}

/// Ids are path segments as they are — spaces, unicode, `%`, punctuation —
/// for every operation, watches included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_ids_work_everywhere() {
    let Some(emulator) = firestore_or_skip!() else {
        return;
    };
    let store = store_on(&emulator).await;
    let c = CollectionPath::new("odd ids/ü ✓/things").unwrap();
    let ids = ["a b", "ünï✓", "x%20y", "-._~!$&'()*+,;=:@", "#?[]"];
    let mut w = store
        .watch(WatchTarget::Collection(c.clone()))
        .await
        .unwrap();
    for id in ids {
        let k = c.doc(id).unwrap();
        let v = store.create(&k, json!({ "id": id })).await.unwrap();
        let doc = store.get(&k).await.unwrap().unwrap();
        assert_eq!((doc.value, doc.version), (json!({ "id": id }), v));
        match next_change(&mut w).await {
            Change::Put(d) => assert_eq!((d.key, d.version), (k, v)),
            other => panic!("{other:?}"),
        }
    }
    let listed: Vec<String> = store
        .list_all(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key.id().to_owned())
        .collect();
    let mut expected: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(listed, expected, "listed in id order");
    let k = c.doc("a b").unwrap();
    store.delete(&k, Precondition::MustExist).await.unwrap();
    assert!(matches!(next_change(&mut w).await, Change::Deleted { key } if key == k));
}
