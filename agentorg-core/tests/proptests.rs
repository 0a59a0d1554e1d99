//! Property tests: subject matching against a reference matcher, name
//! validation, the envelope codec, and the memory store against a model.

use std::collections::{BTreeMap, HashMap};

use agentorg_core::codec::{Codec, DecodeError, EncodeError};
use agentorg_core::envelope::{Envelope, Kind, MessageId, FORMAT_VERSION};
use agentorg_core::name::{NameErrorReason, MAX_NAME_LEN};
use agentorg_core::store::{
    validate_document, CollectionPath, DocKey, ListOptions, MemoryStore, Precondition, StateStore,
    StateStoreExt, StoreError, Version, Write,
};
use agentorg_core::subject::{self, Subject, SubjectPattern};
use agentorg_core::Name;
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::strategy::LazyJust;
use serde_json::{json, Map, Value};

/// `cases` cases; a failure is reported with its minimal input and not
/// written to a regressions file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Subject matching
// ---------------------------------------------------------------------------

/// A small alphabet, so that generated patterns and subjects often match.
const TOKENS: &[&str] = &["a", "b", "c", "ab"];

/// NATS matching by its definition: `*` is exactly one token, a final `>`
/// one or more.
fn reference_match(pattern: &[&str], subject: &[&str]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((&">", _)), Some(_)) => true,
        (Some((&"*", p)), Some((_, s))) => reference_match(p, s),
        (Some((p0, p)), Some((s0, s))) => p0 == s0 && reference_match(p, s),
        _ => false,
    }
}

fn token() -> impl Strategy<Value = String> {
    prop::sample::select(TOKENS).prop_map(str::to_owned)
}

fn subject_tokens() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(token(), 1..7)
}

/// What happens to one subject token on its way into a pattern.
#[derive(Debug, Clone)]
enum Edit {
    Keep,
    Star,
    Replace(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => Just(Edit::Keep),
        2 => Just(Edit::Star),
        1 => token().prop_map(Edit::Replace),
    ]
}

/// How a pattern's length departs from its subject's.
#[derive(Debug, Clone)]
enum Tail {
    Same,
    /// `>` from this position on (possibly past the end).
    Rest(usize),
    /// The last n tokens dropped.
    Shorter(usize),
    /// Tokens (or `*`) appended.
    Longer(Vec<String>),
}

fn tail() -> impl Strategy<Value = Tail> {
    prop_oneof![
        3 => Just(Tail::Same),
        2 => (0usize..8).prop_map(Tail::Rest),
        1 => (1usize..3).prop_map(Tail::Shorter),
        1 => prop::collection::vec(prop_oneof![token(), Just("*".to_owned())], 1..3)
            .prop_map(Tail::Longer),
    ]
}

fn edited(subject: &[String], edits: &[Edit]) -> Vec<String> {
    subject
        .iter()
        .zip(edits.iter().chain(std::iter::repeat(&Edit::Keep)))
        .map(|(t, e)| match e {
            Edit::Keep => t.clone(),
            Edit::Star => "*".to_owned(),
            Edit::Replace(r) => r.clone(),
        })
        .collect()
}

/// A pattern derived from a subject: some tokens starred or replaced, and
/// its length changed by `tail`. Always a valid pattern.
fn derive_pattern(subject: &[String], edits: &[Edit], tail: &Tail) -> Vec<String> {
    let mut p = edited(subject, edits);
    match tail {
        Tail::Same => {}
        Tail::Rest(i) => {
            p.truncate(*i);
            p.push(">".to_owned());
        }
        Tail::Shorter(n) => p.truncate(p.len().saturating_sub(*n).max(1)),
        Tail::Longer(extra) => p.extend(extra.iter().cloned()),
    }
    p
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn subject_of(tokens: &[String]) -> Subject {
    Subject::parse(tokens.join(".")).unwrap()
}

fn pattern_of(tokens: &[String]) -> SubjectPattern {
    SubjectPattern::parse(tokens.join("."))
        .unwrap_or_else(|e| panic!("generated an invalid pattern: {e}"))
}

/// Independent random patterns: tokens and `*`, maybe a final `>`.
fn free_pattern() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(prop_oneof![3 => token(), 1 => Just("*".to_owned())], 0..6),
        any::<bool>(),
    )
        .prop_filter_map("a pattern has a token", |(mut p, rest)| {
            if rest {
                p.push(">".to_owned());
            }
            (!p.is_empty()).then_some(p)
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn derived_patterns_match_like_the_reference(
        s in subject_tokens(),
        edits in prop::collection::vec(edit(), 6),
        tail in tail(),
    ) {
        let p = derive_pattern(&s, &edits, &tail);
        let (pattern, subject) = (pattern_of(&p), subject_of(&s));
        let expected = reference_match(&strs(&p), &strs(&s));
        prop_assert_eq!(pattern.matches(&subject), expected, "{} vs {}", pattern, subject);
        prop_assert_eq!(subject::matches(pattern.as_str(), subject.as_str()), expected);
        prop_assert_eq!(pattern.is_literal(), !p.iter().any(|t| t == "*" || t == ">"));
    }

    #[test]
    fn free_patterns_match_like_the_reference(p in free_pattern(), s in subject_tokens()) {
        let (pattern, subject) = (pattern_of(&p), subject_of(&s));
        prop_assert_eq!(
            pattern.matches(&subject),
            reference_match(&strs(&p), &strs(&s)),
            "{} vs {}", pattern, subject
        );
    }

    #[test]
    fn a_subject_matches_itself(s in subject_tokens()) {
        let subject = subject_of(&s);
        let as_pattern = SubjectPattern::from(&subject);
        prop_assert!(as_pattern.matches(&subject));
        prop_assert!(as_pattern.is_literal());
        prop_assert!(SubjectPattern::parse(subject.as_str()).unwrap().matches(&subject));
    }

    /// `>` at position i matches iff the subject has more than i tokens and
    /// the first i match the pattern's prefix.
    #[test]
    fn rest_wildcard_at_i(
        s in subject_tokens(),
        edits in prop::collection::vec(edit(), 6),
        i in 0usize..8,
        filler in prop::collection::vec(token(), 8),
    ) {
        let mut prefix = edited(&s, &edits);
        prefix.truncate(i);
        prefix.extend(filler.into_iter().take(i.saturating_sub(prefix.len())));
        let mut p = prefix.clone();
        p.push(">".to_owned());
        let expected = s.len() > i && reference_match(&strs(&prefix), &strs(&s[..i]));
        prop_assert_eq!(pattern_of(&p).matches(&subject_of(&s)), expected, "{:?} vs {:?}", p, s);
    }

    /// Starring tokens keeps the token count: the starred pattern matches the
    /// subject, and no subject with one token more or less.
    #[test]
    fn stars_keep_the_token_count(
        s in subject_tokens(),
        stars in prop::collection::vec(any::<bool>(), 6),
        extra in token(),
    ) {
        let p: Vec<String> = s
            .iter()
            .zip(stars.iter().chain(std::iter::repeat(&false)))
            .map(|(t, star)| if *star { "*".to_owned() } else { t.clone() })
            .collect();
        let pattern = pattern_of(&p);
        prop_assert!(pattern.matches(&subject_of(&s)));
        let mut longer = s.clone();
        longer.push(extra);
        prop_assert!(!pattern.matches(&subject_of(&longer)));
        if s.len() > 1 {
            prop_assert!(!pattern.matches(&subject_of(&s[..s.len() - 1])));
        }
    }
}

// ---------------------------------------------------------------------------
// Name validation
// ---------------------------------------------------------------------------

fn allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// What the name rules say about `s`.
fn expected_name(s: &str) -> Result<(), NameErrorReason> {
    if s.is_empty() {
        Err(NameErrorReason::Empty)
    } else if s.len() > MAX_NAME_LEN {
        Err(NameErrorReason::TooLong { len: s.len() })
    } else if let Some(ch) = s.chars().find(|c| !allowed(*c)) {
        Err(NameErrorReason::InvalidChar { ch })
    } else {
        Ok(())
    }
}

fn check_refused(s: &str, reason: &NameErrorReason) -> Result<(), TestCaseError> {
    let e = Name::new(s).unwrap_err();
    prop_assert_eq!(&e.name, s, "the error carries the name");
    prop_assert_eq!(&e.reason, reason);
    let quoted = format!("{s:?}");
    prop_assert!(
        e.to_string().contains(&quoted),
        "{} does not name {}",
        e,
        quoted
    );
    prop_assert!(s.parse::<Name>().is_err());
    prop_assert!(serde_json::from_value::<Name>(json!(s)).is_err());
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn valid_names_are_accepted(s in "[a-z0-9_-]{1,64}") {
        let n = Name::new(&s).unwrap();
        prop_assert_eq!(n.as_str(), s.as_str());
        prop_assert_eq!(serde_json::from_value::<Name>(json!(s)).unwrap(), n);
    }

    #[test]
    fn a_foreign_char_is_refused(
        pre in "[a-z0-9_-]{0,30}",
        bad in any::<char>().prop_filter("outside the set", |c| !allowed(*c)),
        post in "[a-z0-9_-]{0,30}",
    ) {
        let s = format!("{pre}{bad}{post}");
        check_refused(&s, &NameErrorReason::InvalidChar { ch: bad })?;
    }

    #[test]
    fn long_names_are_refused(s in "[a-z0-9_-]{65,200}") {
        check_refused(&s, &NameErrorReason::TooLong { len: s.len() })?;
    }

    #[test]
    fn any_string_is_judged_by_the_rules(s in prop_oneof![
        any::<String>(),
        "[a-z0-9_.*> A-Z-]{0,70}",
        Just(String::new()),
    ]) {
        match expected_name(&s) {
            Ok(()) => {
                let n = Name::new(&s).unwrap();
                prop_assert_eq!(n.as_str(), s.as_str());
            }
            Err(reason) => check_refused(&s, &reason)?,
        }
    }
}

// ---------------------------------------------------------------------------
// Envelope codec
// ---------------------------------------------------------------------------

fn name() -> impl Strategy<Value = Name> {
    "[a-z0-9_-]{1,64}".prop_map(|s| Name::new(s).unwrap())
}

fn message_id() -> impl Strategy<Value = MessageId> {
    prop_oneof![
        LazyJust::new(MessageId::new),
        // Ids of the form `__x__` are reserved (Firestore) and refused.
        "[A-Za-z0-9_-]{1,128}".prop_filter_map("a reserved id", |s| MessageId::parse(s).ok()),
    ]
}

const KNOWN_KINDS: &[&str] = &[
    "task",
    "task_update",
    "result",
    "escalation",
    "event",
    "peer",
    "meeting",
    "dead_letter",
    "alert",
    "message",
];

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        prop::sample::select(KNOWN_KINDS).prop_map(Kind::from),
        // Kinds this build does not know are kept as they are. (An `Other`
        // spelled like a known kind, or empty, is not a wire kind.)
        any::<String>()
            .prop_filter("an unknown, non-empty kind", |s| {
                !s.is_empty() && !KNOWN_KINDS.contains(&s.as_str())
            })
            .prop_map(Kind::Other),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ]
}

/// Any JSON value, at most 4 levels deep and about 64 nodes.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn created_at() -> impl Strategy<Value = DateTime<Utc>> {
    // Years 1970 to 9999, to the nanosecond.
    (0i64..253_402_300_800, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).unwrap())
}

prop_compose! {
    fn envelope()(
        org in name(),
        from in name(),
        kind in kind(),
        payload in json_value(),
        id in prop::option::weighted(0.7, message_id()),
        to in prop::option::of(name()),
        correlation in prop::option::of(message_id()),
        causation in prop::option::of(message_id()),
        at in prop::option::of(created_at()),
        clear_headers in prop::bool::weighted(0.2),
        headers in prop::collection::btree_map(any::<String>(), any::<String>(), 0..4),
    ) -> Envelope {
        let mut env = Envelope::new(org, from, kind, payload);
        if let Some(id) = id {
            env = env.with_id(id);
        }
        if let Some(to) = to {
            env = env.with_to(to);
        }
        if let Some(c) = correlation {
            env = env.with_correlation(c);
        }
        if let Some(c) = causation {
            env = env.with_causation(c);
        }
        if let Some(at) = at {
            env = env.with_created_at(at);
        }
        if clear_headers {
            env.headers.clear();
        }
        for (k, v) in headers {
            env = env.with_header(k, v);
        }
        env
    }
}

/// What the codec must say about a JSON object of random fields (never a
/// whole envelope): a future version when `v` is an integer above ours, with
/// the id when it is a valid one; otherwise malformed.
///
/// The `id` may be of any JSON type: a later format may change it, and the
/// codec still reports a future version (without an id).
fn expected_for_object(obj: &Map<String, Value>) -> Option<DecodeError> {
    match obj.get("v").and_then(Value::as_u64) {
        Some(v) if v > u64::from(FORMAT_VERSION) => Some(DecodeError::FutureVersion {
            version: v,
            supported: FORMAT_VERSION,
            id: obj
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| MessageId::parse(id).ok()),
        }),
        _ => None,
    }
}

/// A JSON object with random fields and a chosen `v` and `id`.
fn object_with(
    v: impl Strategy<Value = Option<Value>>,
    id: impl Strategy<Value = Option<Value>>,
) -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5),
        v,
        id,
    )
        .prop_map(|(fields, v, id)| {
            let mut m: Map<String, Value> = fields.into_iter().collect();
            m.remove("v");
            m.remove("id");
            if let Some(v) = v {
                m.insert("v".to_owned(), v);
            }
            if let Some(id) = id {
                m.insert("id".to_owned(), id);
            }
            m
        })
}

fn any_v() -> impl Strategy<Value = Option<Value>> {
    prop::option::weighted(
        0.8,
        prop_oneof![
            Just(json!(0)),
            Just(json!(1)),
            (2..=u64::MAX).prop_map(Value::from),
            (2u64..10).prop_map(Value::from),
            json_leaf(),
        ],
    )
}

fn string_or_null_id() -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop_oneof![
        Just(Value::Null),
        message_id().prop_map(|id| json!(id)),
        any::<String>().prop_map(Value::String),
        json_value(),
    ])
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn envelopes_round_trip(env in envelope()) {
        let codec = Codec::default();
        let bytes = codec.encode(&env).unwrap();
        prop_assert_eq!(&codec.decode(&bytes).unwrap(), &env);
        prop_assert_eq!(&codec.decode_bytes(bytes.clone()).unwrap(), &env);
        // The limit is inclusive, on both sides.
        let exact = Codec::with_max_bytes(bytes.len());
        prop_assert_eq!(&exact.decode(&bytes).unwrap(), &env);
        prop_assert!(exact.encode(&env).is_ok());
        let short = Codec::with_max_bytes(bytes.len() - 1);
        let refused = matches!(
            short.encode(&env),
            Err(EncodeError::Oversized { size, limit }) if size == bytes.len() && limit == bytes.len() - 1
        );
        prop_assert!(refused);
        prop_assert_eq!(
            short.decode(&bytes),
            Err(DecodeError::Oversized { size: bytes.len(), limit: bytes.len() - 1 })
        );
    }

    /// A future version is recognised from the envelope's own JSON with `v`
    /// raised, whatever else changed about its shape.
    #[test]
    fn a_raised_version_is_a_future_version(
        env in envelope(),
        v in prop_oneof![2..=u64::from(u32::MAX), (u64::from(u32::MAX) + 1)..=u64::MAX],
        extra in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3),
        drop_fields in prop::collection::vec(
            prop::sample::select(&["org", "from", "kind", "created_at", "payload"][..]), 0..3),
    ) {
        let mut obj = match serde_json::to_value(&env).unwrap() {
            Value::Object(m) => m,
            other => panic!("an envelope encodes as an object, not {other}"),
        };
        obj.insert("v".to_owned(), json!(v));
        for (k, x) in extra {
            if k != "v" && k != "id" {
                obj.insert(k, x);
            }
        }
        for f in drop_fields {
            obj.remove(f);
        }
        let bytes = serde_json::to_vec(&obj).unwrap();
        prop_assert_eq!(
            Codec::default().decode(&bytes),
            Err(DecodeError::FutureVersion { version: v, supported: FORMAT_VERSION, id: Some(env.id.clone()) })
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        limit in 0usize..400,
    ) {
        let out = Codec::with_max_bytes(limit).decode(&bytes);
        if bytes.len() > limit {
            prop_assert_eq!(out, Err(DecodeError::Oversized { size: bytes.len(), limit }));
        } else if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(matches!(out, Err(DecodeError::Malformed { .. })), "{:?}", out);
        }
    }

    /// JSON objects of any shape: a future version, or malformed.
    #[test]
    fn json_objects_decode_as_their_version_says(
        obj in object_with(any_v(), string_or_null_id()),
    ) {
        let bytes = serde_json::to_vec(&obj).unwrap();
        let out = Codec::default().decode(&bytes);
        match expected_for_object(&obj) {
            Some(e) => prop_assert_eq!(out, Err(e)),
            None => prop_assert!(matches!(out, Err(DecodeError::Malformed { .. })), "{:?}", out),
        }
    }

    #[test]
    fn over_the_limit_is_oversized_whatever_the_content(
        content in prop_oneof![
            prop::collection::vec(any::<u8>(), 1..300),
            envelope().prop_map(|e| Codec::default().encode(&e).unwrap().to_vec()),
            object_with(any_v(), string_or_null_id())
                .prop_map(|o| serde_json::to_vec(&o).unwrap()),
        ],
        under in 1usize..300,
    ) {
        let limit = content.len().saturating_sub(under);
        prop_assert_eq!(
            Codec::with_max_bytes(limit).decode(&content),
            Err(DecodeError::Oversized { size: content.len(), limit })
        );
    }
}

#[test]
fn version_zero_and_junk_versions_are_malformed() {
    let env = Envelope::new(
        Name::new("o").unwrap(),
        Name::new("f").unwrap(),
        Kind::Task,
        json!({}),
    );
    let codec = Codec::default();
    for v in [json!(0), json!(-1), json!(2.5), json!("2"), json!(null)] {
        let mut obj = serde_json::to_value(&env).unwrap();
        obj["v"] = v.clone();
        let out = codec.decode(&serde_json::to_vec(&obj).unwrap());
        assert!(
            matches!(out, Err(DecodeError::Malformed { .. })),
            "v = {v}: {out:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The state store against a model
// ---------------------------------------------------------------------------

const COLLECTIONS: &[&str] = &["c1", "c2", "c1/a/sub"];
const IDS: &[&str] = &["a", "b", "c", "d"];

type Doc = (usize, usize);

fn doc_key((c, i): Doc) -> DocKey {
    DocKey::new(COLLECTIONS[c], IDS[i]).unwrap()
}

fn doc() -> impl Strategy<Value = Doc> {
    (0..COLLECTIONS.len(), 0..IDS.len())
}

/// A precondition, resolved against the model when the operation runs.
#[derive(Debug, Clone)]
enum Pre {
    None,
    MustNotExist,
    MustExist,
    /// The document's current version (a version it had, if missing).
    Current,
    /// A version it had before (the current one, if none).
    Stale,
    /// Any small version, probably of another document.
    Raw(u64),
    /// Whichever of `MustNotExist` and `Current` holds.
    Holds,
}

fn pre() -> impl Strategy<Value = Pre> {
    prop_oneof![
        3 => Just(Pre::None),
        6 => Just(Pre::Holds),
        1 => Just(Pre::MustNotExist),
        1 => Just(Pre::MustExist),
        2 => Just(Pre::Current),
        1 => Just(Pre::Stale),
        1 => (0u64..40).prop_map(Pre::Raw),
    ]
}

#[derive(Debug, Clone)]
enum WriteSpec {
    Put(Doc, Value, Pre),
    Delete(Doc, Pre),
}

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<WriteSpec>),
    Get(Doc),
    List(usize, usize),
}

fn field_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z]{1,3}",
        1 => Just(String::new()),
        1 => prop::sample::select(&["__x__", "____", "__name__", "__", "___", "_a_", "__a", "a__"][..])
            .prop_map(str::to_owned),
    ]
}

fn field_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Past i64::MAX: refused.
        ((i64::MAX as u64 + 1)..=u64::MAX).prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z ]{0,6}".prop_map(Value::String),
    ]
}

fn valid_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[a-z ]{0,6}".prop_map(Value::String),
        prop::collection::vec(any::<bool>().prop_map(Value::Bool), 0..3).prop_map(Value::Array),
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    field_leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            // Arrays, sometimes of arrays (refused).
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(field_key(), inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn doc_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Anything the generator reaches, valid or not.
        8 => prop::collection::btree_map(field_key(), field_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        // Most of the time: small, valid documents.
        24 => prop::collection::btree_map("[a-z]{1,3}", valid_leaf(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => Just(json!([1, 2])),
        1 => Just(json!("text")),
        1 => Just(Value::Null),
    ]
}

fn write_spec() -> impl Strategy<Value = WriteSpec> {
    prop_oneof![
        3 => (doc(), doc_value(), pre()).prop_map(|(d, v, p)| WriteSpec::Put(d, v, p)),
        1 => (doc(), pre()).prop_map(|(d, p)| WriteSpec::Delete(d, p)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => write_spec().prop_map(|w| Op::Commit(vec![w])),
        3 => prop::collection::vec(write_spec(), 2..5).prop_map(Op::Commit),
        1 => Just(Op::Commit(Vec::new())),
        1 => doc().prop_map(Op::Get),
        1 => (0..COLLECTIONS.len(), prop_oneof![6 => 1usize..6, 1 => Just(0usize), 1 => Just(1001usize)])
            .prop_map(|(c, n)| Op::List(c, n)),
    ]
}

// The model's own reading of the document limits the generator reaches
// (not the depth or size limits, which it never comes near).
fn model_key_ok(k: &str) -> bool {
    let reserved = k.len() >= 4 && k.starts_with("__") && k.ends_with("__");
    !k.is_empty() && !reserved
}

fn model_field_ok(v: &Value, in_array: bool) -> bool {
    match v {
        Value::Number(n) => n.as_i64().is_some() || n.is_f64(),
        Value::Array(items) => !in_array && items.iter().all(|x| model_field_ok(x, true)),
        Value::Object(m) => m
            .iter()
            .all(|(k, x)| model_key_ok(k) && model_field_ok(x, false)),
        _ => true,
    }
}

fn model_valid(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .all(|(k, x)| model_key_ok(k) && model_field_ok(x, false)),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Conflict,
    NotFound,
    InvalidInput,
}

fn outcome_of<T>(r: &Result<T, StoreError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(StoreError::Conflict { .. }) => Outcome::Conflict,
        Err(StoreError::NotFound { .. }) => Outcome::NotFound,
        Err(StoreError::InvalidInput { .. }) => Outcome::InvalidInput,
        Err(e) => panic!("unexpected store error {e}"),
    }
}

/// The model: current documents, and every version each document ever had.
#[derive(Debug, Default)]
struct Model {
    docs: BTreeMap<Doc, (Value, Version)>,
    history: HashMap<Doc, Vec<Version>>,
}

impl Model {
    fn resolve(&self, d: Doc, p: &Pre) -> Precondition {
        let current = self.docs.get(&d).map(|(_, v)| *v);
        let history = self.history.get(&d).map(Vec::as_slice).unwrap_or_default();
        let earlier = history.iter().rev().find(|v| Some(**v) != current).copied();
        match p {
            Pre::None => Precondition::None,
            Pre::MustNotExist => Precondition::MustNotExist,
            Pre::MustExist => Precondition::MustExist,
            Pre::Current => {
                Precondition::Version(current.or(earlier).unwrap_or(Version::from_raw(1)))
            }
            Pre::Stale => {
                Precondition::Version(earlier.or(current).unwrap_or(Version::from_raw(0)))
            }
            Pre::Raw(n) => Precondition::Version(Version::from_raw(*n)),
            Pre::Holds => current.map_or(Precondition::MustNotExist, Precondition::Version),
        }
    }

    /// The error a precondition gets here, if it fails.
    fn check(&self, d: Doc, p: Precondition) -> Option<Outcome> {
        let current = self.docs.get(&d).map(|(_, v)| *v);
        match (p, current) {
            (Precondition::MustNotExist, Some(_)) => Some(Outcome::Conflict),
            (Precondition::MustExist | Precondition::Version(_), None) => Some(Outcome::NotFound),
            (Precondition::Version(v), Some(c)) if v != c => Some(Outcome::Conflict),
            _ => None,
        }
    }
}

async fn assert_same_state(store: &MemoryStore, model: &Model) -> Result<(), TestCaseError> {
    for (c, collection) in COLLECTIONS.iter().enumerate() {
        for i in 0..IDS.len() {
            let got = store.get(&doc_key((c, i))).await.unwrap();
            let got = got.map(|d| (d.value, d.version));
            prop_assert_eq!(got.as_ref(), model.docs.get(&(c, i)), "{}", doc_key((c, i)));
        }
        let listed = store
            .list_all(&CollectionPath::new(collection).unwrap())
            .await
            .unwrap();
        let listed: Vec<_> = listed
            .into_iter()
            .map(|d| (d.key.to_string(), d.value, d.version))
            .collect();
        let expected: Vec<_> = model
            .docs
            .range((c, 0)..(c + 1, 0))
            .map(|(d, (v, ver))| (doc_key(*d).to_string(), v.clone(), *ver))
            .collect();
        prop_assert_eq!(listed, expected);
    }
    Ok(())
}

async fn apply(store: &MemoryStore, model: &mut Model, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Get(d) => {
            let got = store
                .get(&doc_key(d))
                .await
                .unwrap()
                .map(|d| (d.value, d.version));
            prop_assert_eq!(got.as_ref(), model.docs.get(&d));
        }
        Op::List(c, page_size) => {
            let collection = CollectionPath::new(COLLECTIONS[c]).unwrap();
            let options = ListOptions::default().with_page_size(page_size);
            if page_size == 0 || page_size > ListOptions::MAX_PAGE_SIZE {
                let r = store.list(&collection, options).await;
                prop_assert_eq!(outcome_of(&r), Outcome::InvalidInput);
                return Ok(());
            }
            let mut got = Vec::new();
            let mut token = None;
            for _ in 0..=IDS.len() + 1 {
                let page = store
                    .list(&collection, options.clone().with_page_token(token))
                    .await
                    .unwrap();
                prop_assert!(page.documents.len() <= page_size);
                got.extend(
                    page.documents
                        .into_iter()
                        .map(|d| (d.key.id().to_owned(), d.value, d.version)),
                );
                token = page.next_page_token;
                if token.is_none() {
                    break;
                }
            }
            prop_assert!(token.is_none(), "paging does not end");
            let expected: Vec<_> = model
                .docs
                .range((c, 0)..(c + 1, 0))
                .map(|((_, i), (v, ver))| (IDS[*i].to_owned(), v.clone(), *ver))
                .collect();
            prop_assert_eq!(got, expected);
        }
        Op::Commit(specs) => {
            // Resolve preconditions against the model, then judge the commit
            // as the contract does: invalid input first, then preconditions.
            let mut writes = Vec::new();
            let mut invalid = false;
            let mut failures = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for spec in &specs {
                let (d, p) = match spec {
                    WriteSpec::Put(d, _, p) | WriteSpec::Delete(d, p) => (*d, p),
                };
                let precondition = model.resolve(d, p);
                invalid |= !seen.insert(d);
                if let Some(e) = model.check(d, precondition) {
                    failures.push((e, doc_key(d).to_string()));
                }
                match spec {
                    WriteSpec::Put(_, value, _) => {
                        let valid = model_valid(value);
                        prop_assert_eq!(
                            validate_document(&doc_key(d), value).is_ok(),
                            valid,
                            "validate_document of {}",
                            value
                        );
                        invalid |= !valid;
                        writes.push(Write::put(doc_key(d), value.clone(), precondition));
                    }
                    WriteSpec::Delete(..) => writes.push(Write::delete(doc_key(d), precondition)),
                }
            }
            let result = store.commit(writes).await;
            if invalid {
                prop_assert_eq!(outcome_of(&result), Outcome::InvalidInput, "{:?}", result);
            } else if !failures.is_empty() {
                let got = match &result {
                    Err(StoreError::Conflict { key, .. }) => (Outcome::Conflict, key.clone()),
                    Err(StoreError::NotFound { key }) => (Outcome::NotFound, key.clone()),
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "expected one of {failures:?}, got {other:?}"
                        )))
                    }
                };
                prop_assert!(
                    failures.contains(&got),
                    "expected one of {:?}, got {:?}",
                    failures,
                    got
                );
            } else {
                let versions = match result {
                    Ok(v) => v,
                    Err(e) => return Err(TestCaseError::fail(format!("expected Ok, got {e}"))),
                };
                prop_assert_eq!(versions.len(), specs.len());
                for (spec, version) in specs.into_iter().zip(versions) {
                    match spec {
                        WriteSpec::Put(d, value, _) => {
                            let Some(version) = version else {
                                return Err(TestCaseError::fail("a put without a version"));
                            };
                            let history = model.history.entry(d).or_default();
                            if let Some(last) = history.last() {
                                prop_assert!(version > *last, "{} after {}", version, last);
                            }
                            history.push(version);
                            model.docs.insert(d, (value, version));
                        }
                        WriteSpec::Delete(d, _) => {
                            prop_assert_eq!(version, None);
                            model.docs.remove(&d);
                        }
                    }
                }
            }
        }
    }
    // Everything agrees after every operation (so a failed commit changed
    // nothing, and a good one changed exactly its documents).
    assert_same_state(store, model).await
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn memory_store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let store = MemoryStore::new();
            let mut model = Model::default();
            for op in ops {
                apply(&store, &mut model, op).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
