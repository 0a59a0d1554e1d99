//! The hub's bookkeeping, without a server.

use super::*;
use agentorg_core::store::{Document, Version};
use serde_json::json;

fn put(id: &str, v: u64) -> Change {
    Change::Put(Document::new(
        DocKey::new("c", id).unwrap(),
        json!({ "v": v }),
        Version::from_raw(v),
    ))
}

fn deleted(id: &str) -> Change {
    Change::Deleted {
        key: DocKey::new("c", id).unwrap(),
    }
}

fn drain(slot: &Slot) -> Vec<Change> {
    lock(&slot.state).queue.drain(..).collect()
}

#[test]
fn a_slot_keeps_the_newest_state_of_each_document_not_yet_taken() {
    let slot = Slot::default();
    slot.push(vec![put("a", 1), put("b", 2)]);
    slot.push(vec![put("a", 3)]);
    assert_eq!(drain(&slot), vec![put("a", 3), put("b", 2)]);
    // A delete in between is kept, and so is what follows it.
    slot.push(vec![put("a", 4), deleted("a"), put("b", 5)]);
    slot.push(vec![put("a", 6), put("b", 7)]);
    assert_eq!(
        drain(&slot),
        vec![put("a", 4), deleted("a"), put("b", 7), put("a", 6)]
    );
}

#[test]
fn the_first_push_is_the_initial_state_even_when_empty() {
    let slot = Slot::default();
    assert!(!lock(&slot.state).synced);
    slot.push(Vec::new());
    assert!(lock(&slot.state).synced);
    assert!(drain(&slot).is_empty());
}

#[test]
fn target_ids_are_positive_and_distinct() {
    let l = Listener::default();
    assert_eq!((l.target_id(), l.target_id(), l.target_id()), (1, 2, 3));
    l.next_id.store(i32::MAX - 1, Ordering::Relaxed);
    assert_eq!(l.target_id(), i32::MAX);
    assert_eq!(l.target_id(), 1);
    l.next_id.store(i32::MIN, Ordering::Relaxed);
    assert!(l.target_id() > 0);
}

const DATABASE: &str = "projects/p/databases/(default)";

/// A document `c/id` as the server sends it: `{"v": v}`, updated at `v` µs.
fn sent(id: &str, v: u64) -> fs::Document {
    let names = Names::new(DATABASE.to_owned());
    fs::Document {
        name: names.doc(&DocKey::new("c", id).unwrap()),
        fields: [(
            "v".to_owned(),
            fs::Value {
                value_type: Some(fs::value::ValueType::IntegerValue(v as i64)),
            },
        )]
        .into(),
        create_time: None,
        update_time: path::timestamp(Version::from_raw(v * 1_000)),
    }
}

/// What the watch yields for `sent(id, v)`.
fn state(id: &str, v: u64) -> Change {
    Change::Put(Document::new(
        DocKey::new("c", id).unwrap(),
        json!({ "v": v }),
        Version::from_raw(v * 1_000),
    ))
}

fn target_on(id: &str) -> (TargetState, Arc<Slot>) {
    let slot = Arc::new(Slot::default());
    let key = DocKey::new("c", id).unwrap();
    let state = TargetState::new(WatchTarget::Document(key), Arc::clone(&slot));
    (state, slot)
}

fn hear(t: &mut TargetState, doc: fs::Document) {
    let at = doc.update_time.as_ref().and_then(path::version);
    t.heard(doc.name.clone(), Some(doc), at);
}

#[test]
fn an_older_state_heard_later_does_not_hide_the_newer_one() {
    // What the emulator sent for a target added while the document changed:
    // the change (v2) first, then the state it read at the add (v1), then
    // CURRENT and the snapshot.
    let names = Names::new(DATABASE.to_owned());
    let (mut t, slot) = target_on("a");
    hear(&mut t, sent("a", 2));
    hear(&mut t, sent("a", 1));
    t.current = true;
    t.flush(&names, None);
    assert_eq!(drain(&slot), vec![state("a", 2)]);
    // In order, the newer state replaces the older one as before.
    hear(&mut t, sent("a", 3));
    hear(&mut t, sent("a", 4));
    t.flush(&names, None);
    assert_eq!(drain(&slot), vec![state("a", 4)]);
}

/// A snapshot at `at` µs: `t` hands its watch what changed.
fn snapshot(t: &mut TargetState, names: &Names, at: u64) {
    t.flush(names, Some(Version::from_raw(at * 1_000)));
}

/// `c/a` deleted, as the stream says, at `at` µs.
fn gone(t: &mut TargetState, at: u64) {
    t.heard(sent("a", 0).name, None, Some(Version::from_raw(at * 1_000)));
}

/// A watch of `c/a` whose initial state, at snapshot `v`, was
/// `sent("a", v)` (taken already).
fn following(v: u64) -> (Names, TargetState, Arc<Slot>) {
    let names = Names::new(DATABASE.to_owned());
    let (mut t, slot) = target_on("a");
    hear(&mut t, sent("a", v));
    t.current = true;
    snapshot(&mut t, &names, v);
    assert_eq!(drain(&slot), vec![state("a", v)]);
    (names, t, slot)
}

#[test]
fn a_state_heard_after_a_deletion_though_older_does_not_bring_the_document_back() {
    let (names, mut t, slot) = following(2);
    gone(&mut t, 5);
    hear(&mut t, sent("a", 4));
    t.flush(&names, None);
    assert_eq!(drain(&slot), vec![deleted("a")]);
    // Created again after the deletion: it exists.
    gone(&mut t, 6);
    hear(&mut t, sent("a", 7));
    t.flush(&names, None);
    assert_eq!(drain(&slot), vec![state("a", 7)]);
}

#[test]
fn a_read_after_the_initial_state_yields_what_the_stream_lost() {
    let (names, mut t, slot) = following(1);
    // The change at 2 never came; the read has it.
    t.read(&names, sent("a", 2));
    assert_eq!(drain(&slot), vec![state("a", 2)]);
    // Were its news to come after all, they are not repeated; nor is an
    // older read.
    hear(&mut t, sent("a", 2));
    snapshot(&mut t, &names, 5);
    t.read(&names, sent("a", 1));
    assert!(drain(&slot).is_empty());
}

#[test]
fn a_read_from_before_a_deletion_yielded_since_is_ignored() {
    let (names, mut t, slot) = following(1);
    hear(&mut t, sent("a", 2));
    snapshot(&mut t, &names, 2);
    gone(&mut t, 5);
    snapshot(&mut t, &names, 5);
    assert_eq!(drain(&slot), vec![state("a", 2), deleted("a")]);
    // Read before the deletion: neither repeated nor brought back.
    t.read(&names, sent("a", 2));
    t.read(&names, sent("a", 4));
    assert!(drain(&slot).is_empty());
    // Created again after it: the read yields it.
    t.read(&names, sent("a", 6));
    assert_eq!(drain(&slot), vec![state("a", 6)]);
}

#[test]
fn a_read_drops_the_noted_changes_it_holds() {
    let (names, mut t, slot) = following(1);
    // Deleted at 2 (noted, not flushed yet), created again at 3 (read).
    gone(&mut t, 2);
    t.read(&names, sent("a", 3));
    snapshot(&mut t, &names, 4);
    assert_eq!(drain(&slot), vec![state("a", 3)]);
    // A read older than a change noted since is ignored; the change is
    // yielded at its snapshot.
    gone(&mut t, 6);
    t.read(&names, sent("a", 5));
    snapshot(&mut t, &names, 6);
    assert_eq!(drain(&slot), vec![deleted("a")]);
}

#[test]
fn a_read_is_ignored_while_the_target_is_sent_again() {
    let (names, mut t, slot) = following(1);
    t.restart();
    t.read(&names, sent("a", 2));
    assert!(drain(&slot).is_empty());
}

#[test]
fn a_read_from_before_a_deletion_never_yielded_is_ignored() {
    // The watch starts on a missing document; the read finds it created
    // (v2), and the stream then tells of v2 and of its deletion at 3.
    let names = Names::new(DATABASE.to_owned());
    let (mut t, slot) = target_on("a");
    t.current = true;
    snapshot(&mut t, &names, 1);
    hear(&mut t, sent("a", 2));
    gone(&mut t, 3);
    snapshot(&mut t, &names, 3);
    assert!(drain(&slot).is_empty());
    t.read(&names, sent("a", 2));
    assert!(drain(&slot).is_empty());
}

#[test]
fn a_collection_target_takes_no_read() {
    let names = Names::new(DATABASE.to_owned());
    let slot = Arc::new(Slot::default());
    let c = agentorg_core::store::CollectionPath::new("c").unwrap();
    let mut t = TargetState::new(WatchTarget::Collection(c), Arc::clone(&slot));
    t.current = true;
    snapshot(&mut t, &names, 1);
    t.read(&names, sent("a", 2));
    assert!(drain(&slot).is_empty());
}

/// A watch over `slot`, its commands read by the test as the hub's.
fn watch_on(slot: &Arc<Slot>) -> (Watch, mpsc::UnboundedReceiver<Command>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let watch = Watch {
        id: 7,
        slot: Arc::clone(slot),
        commands: tx,
        ended: false,
    };
    (watch, rx)
}

/// The hub's side of a lost first add: waits for the watch's resync, then
/// brings the initial state (as the stream opened again would); returns
/// how long after the call the resync came.
fn answer_resync(
    mut hub: mpsc::UnboundedReceiver<Command>,
    slot: Arc<Slot>,
) -> tokio::task::JoinHandle<Duration> {
    let started = Instant::now();
    tokio::spawn(async move {
        match hub.recv().await {
            Some(Command::Resync { id: 7 }) => {}
            _ => panic!("expected a resync of target 7"),
        }
        let asked = started.elapsed();
        slot.push(Vec::new());
        asked
    })
}

#[tokio::test(start_paused = true)]
async fn a_start_without_its_initial_state_asks_the_hub_to_listen_again() {
    let slot = Arc::new(Slot::default());
    let (watch, hub) = watch_on(&slot);
    let answer = answer_resync(hub, slot);
    initial_state(&watch, Duration::from_secs(30))
        .await
        .expect("the initial state");
    let asked = answer.await.expect("the hub's side");
    assert_eq!(asked, RESYNC);
}

#[tokio::test(start_paused = true)]
async fn a_start_asks_again_every_resync_then_times_out() {
    let slot = Arc::new(Slot::default());
    let (watch, mut hub) = watch_on(&slot);
    let started = Instant::now();
    let err = initial_state(&watch, Duration::from_secs(25))
        .await
        .expect_err("no initial state ever");
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(25));
    let mut asked = 0;
    while let Ok(c) = hub.try_recv() {
        assert!(matches!(c, Command::Resync { id: 7 }));
        asked += 1;
    }
    // At 10 s and 20 s; the deadline at 25 s ends it.
    assert_eq!(asked, 2);
}

#[tokio::test(start_paused = true)]
async fn a_start_with_its_initial_state_asks_nothing() {
    let slot = Arc::new(Slot::default());
    let (watch, mut hub) = watch_on(&slot);
    slot.push(vec![put("a", 1)]);
    initial_state(&watch, Duration::from_secs(30))
        .await
        .expect("the initial state");
    assert!(hub.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_start_with_a_timeout_too_far_to_represent_waits_without_one() {
    let slot = Arc::new(Slot::default());
    let (watch, hub) = watch_on(&slot);
    let answer = answer_resync(hub, slot);
    initial_state(&watch, Duration::MAX)
        .await
        .expect("the initial state");
    assert_eq!(answer.await.expect("the hub's side"), RESYNC);
}
