//! # agentorg-firestore
//!
//! The agentorg [`StateStore`] over Google Cloud Firestore, or over its
//! emulator: [`FirestoreStore`]. It keeps the trait's whole contract — the
//! conformance suite of `agentorg-core` runs against the emulator — so an org
//! that runs on the in-memory store runs unchanged on Firestore, one process
//! or many.
//!
//! Use it through the facade (`agentorg = { features = ["firestore"] }`,
//! then `agentorg::firestore::FirestoreStore`) or directly.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), agentorg_core::store::StoreError> {
//! use agentorg_core::store::{DocKey, Precondition, StateStoreExt};
//! use agentorg_firestore::FirestoreStore;
//! use serde_json::json;
//!
//! let store = FirestoreStore::builder()
//!     .with_project_id("genbrain-demo")
//!     .with_emulator("127.0.0.1:8686") // or Google credentials: see FirestoreStoreBuilder
//!     .build()
//!     .await?;
//! let key = DocKey::new("agentorg/genbrain/tasks", "t1")?;
//! let v1 = store.create(&key, json!({"status": "pending"})).await?;
//! store.put(&key, json!({"status": "in_progress"}), Precondition::Version(v1)).await?;
//! // A writer still holding v1 loses, with the document named:
//! let stale = store.put(&key, json!({"status": "failed"}), Precondition::Version(v1)).await;
//! assert!(stale.unwrap_err().is_precondition_failure());
//! # Ok(()) }
//! ```
//!
//! An org keeps its state here with `Org::builder(chart).store(Arc::new(store))`.
//!
//! # Connecting
//!
//! [`FirestoreStoreBuilder`]: a project id, a database id (`(default)` unless
//! set), and either
//!
//! * an **emulator** endpoint ([`with_emulator`](FirestoreStoreBuilder::with_emulator)):
//!   plain HTTP/2, with the emulator's admin token `Bearer owner`, and no
//!   credentials looked up. Nothing is read from the environment unless you
//!   ask for it ([`from_env`](FirestoreStoreBuilder::from_env) reads
//!   `FIRESTORE_EMULATOR_HOST` and the like);
//! * or **Google Cloud** (`https://firestore.googleapis.com`, TLS with the
//!   system's root certificates), with the Application Default Credentials
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default
//!   login`, or the metadata server on Google Cloud) or a service account key
//!   file ([`with_service_account_key_file`](FirestoreStoreBuilder::with_service_account_key_file)).
//!   The identity needs the `roles/datastore.user` role. This crate compiles
//!   in rustls' `ring` provider and installs it as the process default when
//!   none is installed. (This path is not exercised by the tests, which run
//!   on the emulator.)
//!
//! For anything else — another endpoint, credentials of your own — build a
//! [`firestore::FirestoreDb`] and wrap it with [`FirestoreStore::from_db`].
//!
//! # Mapping
//!
//! **Paths.** A collection path and id are the Firestore path, segment for
//! segment: `agentorg/genbrain/tasks` + `t1` is the document
//! `projects/P/databases/D/documents/agentorg/genbrain/tasks/t1`, so nested
//! collections are Firestore subcollections and the data reads naturally in
//! the console. The core validates segments to Firestore's rules.
//!
//! **Values.** A document is a JSON object and its fields are Firestore
//! fields, one to one:
//!
//! | JSON | Firestore |
//! |---|---|
//! | `null` | `nullValue` |
//! | `true`, `false` | `booleanValue` |
//! | an integer (`42`, `-7`) within `i64` | `integerValue` |
//! | any other number (`1.5`, `2.0`, `1e-300`) | `doubleValue` — so `2.0` comes back as `2.0`, not `2` |
//! | a string | `stringValue` |
//! | an array (not directly inside another array) | `arrayValue` |
//! | an object | `mapValue` (keys with dots or spaces are plain keys: no field paths are involved) |
//!
//! A put writes the whole document (no field mask): fields absent from the
//! new value are gone. Values that only another Firestore client can have
//! written read as their proto3 JSON form: a timestamp as an RFC 3339
//! string, bytes as base64, a reference as its resource name, a geo point as
//! `{"latitude", "longitude"}`, NaN and infinities as `"NaN"`,
//! `"Infinity"`, `"-Infinity"`.
//!
//! **Limits.** What the contract's
//! [document limits](agentorg_core::store#document-limits) exclude —
//! over 1 MiB by Firestore's size rules, an array directly inside an array,
//! nesting deeper than 20, empty or `__x__` keys, integers past `i64`, a
//! value that is not an object — is refused with `InvalidInput` before any
//! request is made, and so is a commit with two writes to one document.
//!
//! # Versions
//!
//! A document's [`Version`](agentorg_core::store::Version) is its Firestore
//! `update_time` in nanoseconds since the Unix epoch: assigned by the server,
//! opaque, and growing with every change of the document (a re-created
//! document's too). Firestore's times are whole microseconds; a version that
//! is not one is no document's, and a precondition on it fails (`Conflict`,
//! or `NotFound` for a missing document) without a write being sent.
//!
//! One difference from the memory store: a put that does not change the
//! document (the same content again) leaves its `update_time`, so it returns
//! the version the document already had, and watchers see nothing.
//!
//! # Preconditions, commits and errors
//!
//! Every write of [`commit`](agentorg_core::store::StateStore::commit) becomes
//! a Firestore write with a precondition — `MustNotExist` → `exists: false`,
//! `MustExist` → `exists: true`, `Version(v)` → `update_time: v` — and they
//! all go in **one `Commit` request, without a transaction**: Firestore
//! applies the writes of a commit atomically, all or none, and checks the
//! preconditions without taking locks. (Transactions that read lock the
//! documents they read, and on the emulator a contending one waits 2 s and
//! aborts; optimistic concurrency needs none of that.) Puts and deletes of
//! [`StateStoreExt`](agentorg_core::store::StateStoreExt) are one-write
//! commits. The versions returned are the commit's `update_time`s.
//!
//! A precondition that fails comes back as `ALREADY_EXISTS`,
//! `FAILED_PRECONDITION` (a stale update time, or a missing document at a
//! version) or `NOT_FOUND` (a missing document that must exist), without
//! saying which write failed. The store then reads the conditioned
//! documents once and checks each precondition in order, so the error names
//! the document and says why:
//!
//! | precondition | document | error |
//! |---|---|---|
//! | `MustNotExist` | exists | `Conflict` ("document exists (at v)") |
//! | `Version(v)` | exists at another version | `Conflict` ("expected v, found w") |
//! | `Version(v)`, `MustExist` | missing | `NotFound` |
//!
//! (If the documents changed again before that read, the error is the
//! status's kind, naming every conditioned document of the commit.)
//!
//! Other failures: `INVALID_ARGUMENT` → `InvalidInput`; `PERMISSION_DENIED`,
//! `UNAUTHENTICATED` → `Forbidden`; `UNAVAILABLE`, `ABORTED`,
//! `RESOURCE_EXHAUSTED`, `CANCELLED` → `Unavailable` and `DEADLINE_EXCEEDED`
//! (or the request timeout, 30 s by default) → `Timeout`, both retryable;
//! the rest → `Other`, with the gRPC status as the source. (The emulator
//! sometimes fails a commit with `CANCELLED` — "call already cancelled" —
//! when another client's listener has just gone away; it may have applied
//! the commit.) Reads are sent again up to 3
//! times after a transient failure; a commit never is (it may have been
//! applied — its preconditions make the caller's retry safe).
//!
//! # Listing
//!
//! [`list`](agentorg_core::store::StateStore::list) is one `ListDocuments`
//! page of the collection's direct documents in id order: `page_size` (1 to
//! 1000) is the most a page holds — the server may send fewer (the emulator
//! stops at 150) — and the page token is the server's, present while there
//! may be more. So a large collection streams page by page, never held
//! whole, and documents that only hold subcollections are not listed.
//!
//! # Watching
//!
//! [`watch`](agentorg_core::store::StateStore::watch) listens with Firestore's
//! `Listen` stream — a document target, or a query for the collection's
//! direct documents — and keeps the trait's semantics: `watch` returns once
//! the initial state is in (within the request timeout, else `Timeout`;
//! after 10 s without it the stream is opened again, as the emulator now
//! and then never sends it),
//! which is yielded first; then each change, with
//! per-document versions strictly increasing and never repeated, and the
//! latest state always delivered. Changes are taken at the server's
//! consistent snapshots and de-duplicated by version (the emulator resends a
//! collection's whole result set after each write), deletes are
//! `Change::Deleted`. All the watches of a store share one `Listen` stream,
//! each a target on it (Firestore serves at most 100 streams on a
//! connection, which the store's other requests share). A dropped stream is
//! re-opened and each target's state diffed against what its watch has
//! yielded, so nothing is lost or repeated across a reconnection. A document
//! watch reads its document once more after the initial state, in the
//! background: the emulator can lose an update committed while a watch
//! starts. See the `watch` module source for the protocol.
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::future_not_send,
    clippy::clone_on_ref_ptr
)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod error;
mod path;
mod store;
mod value;
mod watch;

pub use builder::{ConfigKey, FirestoreStoreBuilder};
pub use store::FirestoreStore;

/// The `firestore` crate this store is built on, for
/// [`FirestoreStore::from_db`] and [`FirestoreStore::db`].
pub use firestore;

#[cfg(doc)]
use agentorg_core::store::StateStore;
