//! # agentorg-nats
//!
//! The [`Transport`](agentorg_core::transport::Transport) of agentorg over
//! NATS JetStream ([async-nats]), and broker permissions derived from the org
//! chart ([`auth`]). The facade re-exports it as `agentorg::nats` behind the
//! feature `nats`.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::runtime::Org;
//! use agentorg_nats::NatsTransport;
//!
//! let chart = OrgChart::builder("genbrain")
//!     .principal("founder")
//!     .role(RoleSpec::new("ceo").reports_to("founder"))
//!     .build()?;
//! let transport = NatsTransport::builder()
//!     .with_server("nats://127.0.0.1:4222")
//!     .with_org(chart.org().as_str())
//!     .build()
//!     .await?; // connects; creates the org's three streams if missing
//! let org = Org::builder(chart)
//!     .transport(Arc::new(transport))
//!     // .agent("ceo", …)
//!     .start()
//!     .await?;
//! # org.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The whole transport conformance suite and the runtime suite of
//! `agentorg-core` run against a real nats-server 2.15 in this crate's tests,
//! together with a `kill -9` of the server, a 3-node cluster losing its
//! stream leader, and the generated permissions refusing a role everything
//! the chart does not grant it.
//!
//! # Stream layout
//!
//! Each org gets three streams, named after it (`AGENTORG_<ORG>_<KIND>`, the
//! org upper-cased), all with file storage, `discard: new`, a 2-minute
//! duplicate window and the configured replicas:
//!
//! | stream | subjects | retention | default limits |
//! |---|---|---|---|
//! | `…_INBOX` | `<org>.agent.>`, `<org>.peer.>` | work queue | 1 GiB, 1,000,000 messages, no age limit |
//! | `…_EVENTS` | `<org>.events.>`, `<org>.meeting.>` | limits | 1 GiB, 1,000,000 messages, 7 days |
//! | `…_DEADLETTER` | `<org>.deadletter`, `<org>.alerts` | limits | 256 MiB, 100,000 messages, 30 days |
//!
//! Why:
//!
//! * **Inboxes are work queues.** Each inbox has exactly one reader, its
//!   role's durable consumer (shared by the role's replicas), so a message
//!   can leave the stream as soon as that consumer acknowledges it: the
//!   stream holds only work not yet done, and its size measures the backlog.
//!   A message published before its role's consumer exists waits for it (a
//!   role that starts late finds its inbox). JetStream enforces that work-
//!   queue consumers do not overlap, which the per-role filters
//!   (`<org>.agent.<role>.inbox.*`) guarantee. Peer channels are the same
//!   kind of traffic (one reader per `<org>.peer.*.<role>`).
//! * **Events are kept by limits.** An event has any number of readers, each
//!   with its own durable consumer (a subscriber that was down catches up),
//!   so it cannot leave when one of them acknowledges; it ages out instead.
//! * **Dead letters and alerts are bounded and separate**, so that a flood of
//!   failures cannot fill the inboxes, and an operator can keep them longer
//!   than events.
//! * **`discard: new` everywhere**: a full stream refuses the publish (a
//!   retryable [`TransportError::Full`](agentorg_core::transport::TransportError::Full))
//!   instead of silently deleting the oldest messages. Nothing is dropped
//!   without someone being told.
//! * **Message ids deduplicate.** A publish carries `Nats-Msg-Id` = the
//!   envelope id ([`TransportExt::publish_envelope`](agentorg_core::transport::TransportExt::publish_envelope)),
//!   so a publish retried after a lost acknowledgement is stored once within
//!   the window.
//! * **`<org>.rpc.>` is never captured**: a core request to a captured
//!   subject would get the stream's acknowledgement as its reply.
//!
//! The admin creates the streams (the builder does, unless
//! [`with_provision(false)`](NatsTransportBuilder::with_provision)) and the
//! consumers ([`Transport::ensure_consumer`](agentorg_core::transport::Transport::ensure_consumer),
//! or [`OrgConsumers::provision`](agentorg_core::runtime::OrgConsumers::provision)
//! for all of an org's). Both are idempotent. A consumer lives on the one
//! stream whose subjects contain all its filters (filters spanning streams
//! are refused); changing an existing consumer's filters is a `Conflict`;
//! its ack wait and pending limit are updated in place.
//!
//! # Delivery
//!
//! Consumers are pull consumers with explicit acks, `deliver: all`, unlimited
//! deliveries (the runtime counts attempts in its claims and ends a message
//! itself: a dead letter, then `term`), and the decode limit
//! ([`ConsumerConfig::max_message_bytes`](agentorg_core::transport::ConsumerConfig::max_message_bytes))
//! kept in the consumer's metadata so every process binding it decodes the
//! same way. A binder asks for [`batch`](NatsTransportBuilder::with_batch)
//! messages at a time (default 2, so a pull request is already waiting on
//! the server while a message is handled; 1 suits slow handlers, at a pull
//! round trip per message): a message received but not yet handed to the
//! caller has its ack timer running, so large batches suit only quick
//! handlers. The delivery attempt is JetStream's delivered count. Several
//! binders of one consumer (a role's replicas) share its messages.
//!
//! A binder sends its pull requests itself, on one inbox, and counts what
//! they may still deliver in the same task that reads the answers: a
//! request's batch when it is sent, less each message and what a request
//! ended early left (`408`, or a `409` with `Nats-Pending-Messages`; a
//! leadership change or a server shutting down ends every request of the
//! inbox). Where what the server holds cannot be known (after a
//! reconnection, or a request overdue without its `408`) it asks again on a
//! new inbox, still reading the old one until its last request has surely
//! expired. async-nats's `messages()` stream learns of its requests from
//! another task, and one answered before that news came left it counting
//! messages that never came: it stopped asking until its heartbeat check, a
//! 10 s stall (every ~10 s of sequential load with batches of 1, seen also
//! with 2). A request the server drops without a word still leaves the
//! binder waiting until its heartbeat check (2 × the heartbeat).
//!
//! Each message a binder takes from the connection (including one it then
//! skips) is a `TRACE` step event `pulled` on the kernel's target
//! [`agentorg::steps`](agentorg_core::runtime::STEPS), before it is decoded,
//! with the consumer, the subject and the message's `Nats-Msg-Id` as
//! `msg_id` (absent without one; the envelope's id, for what the kernel
//! publishes). Timed beside the kernel's `publish` and `delivered`, it
//! separates the way through the broker and the connection from the decode.
//!
//! Acks, naks (with delay), terms and progress are **fire-and-forget**
//! publishes to the message's reply subject, as DESIGN.md requires: the
//! runtime's claims make a lost ack harmless (the message comes again and
//! its claim says it is done), and a confirmed ack would cost a round trip
//! per message. [`with_confirmed_acks`](NatsTransportBuilder::with_confirmed_acks)
//! makes `ack` and `term` wait for the server. A *late* ack or term (three
//! quarters of the ack wait or more since the delivery or its last progress
//! report) is always confirmed: JetStream handles acks and pull requests on
//! separate queues, so a fire-and-forget ack of a message already due for
//! redelivery could be overtaken by the binder's next pull, which would get
//! the message again (found by the runtime suite, and tested); and since a
//! binder's next pull request may already be waiting (batches of 2 or more), a
//! redelivery the server queued into it before the late ack arrived is
//! recognised by its stream sequence, acknowledged again and not handed out.
//!
//! # Failures and restarts
//!
//! The connection reconnects forever. A durable publish returns only once the
//! stream acknowledged it; during an outage it is retried while that is safe
//! (the stream did not answer, so nothing was stored; or the ack was lost and
//! the message id makes a second copy a duplicate) for up to the
//! [publish timeout](NatsTransportBuilder::with_publish_timeout), then fails
//! with a retryable `Unavailable` or `Timeout` — never silently. A bound
//! consumer survives a server restart or a cluster failover without the
//! caller re-subscribing: after a reconnection it asks again at once (the
//! server may have lost its requests); when its pull fails (no word for two
//! idle heartbeats, a failed or refused request, a subscription that ended)
//! it binds again, pausing 100 ms doubling to 5 s after a failed request or
//! bind until the server answers a pull again. It ends with
//! `NotFound` when the consumer was deleted, `Forbidden` when the user may
//! not read it or pull from it, and `Invalid` when the consumer is not a
//! pull consumer or its limits refuse the binder's requests.
//!
//! After a `kill -9`, JetStream may deliver messages that were already
//! acknowledged again, with a delivery count of 1 (its ack floor was not yet
//! synced); the runtime's claims, not delivery counts, keep them from running
//! twice (tested). JetStream acknowledges a publish before it is on disk
//! (`sync_interval` defaults to 2 minutes): to survive power loss, run
//! nats-server with `jetstream { sync_interval: always }` (every write is
//! fsynced; publish latency rises by the disk's fsync time) or R3 streams on
//! three machines (a publish is acknowledged once a majority has it; one
//! machine may lose power), or both.
//!
//! # Errors
//!
//! Every async-nats error is mapped in one place to a
//! [`TransportError`](agentorg_core::transport::TransportError) kind:
//!
//! | from the server or client | kind |
//! |---|---|
//! | a permissions violation on the operation's subject | `Forbidden` |
//! | authentication / authorization failure at connect | `Forbidden` |
//! | payload above the server's `max_payload` | `TooLarge` |
//! | a full stream (`maximum messages/bytes exceeded`, storage exhausted) | `Full` (retryable) |
//! | no stream answered a publish (leader election, missing stream) | `Unavailable` (retryable) |
//! | no acknowledgement or reply in time | `Timeout` (retryable) |
//! | no subscriber for a request | `NoResponders` (retryable) |
//! | connection lost or JetStream not answering | `Unavailable` (retryable) |
//! | consumer or stream missing | `NotFound` |
//! | overlapping work-queue consumer, changed filters, a stream of another shape | `Conflict` |
//!
//! The server reports a permissions violation asynchronously (an `-ERR` that
//! async-nats hands to the connection's event callback), so the transport
//! watches those events and fails the waiting operation at once. A
//! subscription the server refuses yields `Forbidden` as its first item and
//! ends. An ephemeral publish the server refuses is dropped like any
//! at-most-once message (and logged).
//!
//! # One difference from the memory transport
//!
//! A [`publish_ephemeral`](agentorg_core::transport::Transport::publish_ephemeral)
//! to a subject one of the org's streams captures is stored by that stream
//! (JetStream captures every message on its subjects) and reaches its
//! durable consumers too. Use subjects outside the durable scheme for
//! ephemeral traffic.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | (none) | user/password and token auth, TLS (rustls with `ring`) when asked |
//! | `nkeys` | NKey seeds and `.creds` files (`NatsTransportBuilder::with_nkey`, `with_credentials_file`) |
//!
//! [async-nats]: https://docs.rs/async-nats
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

pub mod auth;
mod builder;
mod consumers;
mod deliveries;
mod error;
mod layout;
mod subscription;
mod transport;
mod violations;

pub use builder::{NatsTransportBuilder, DEFAULT_BATCH};
pub use layout::{StreamKind, StreamLayout, StreamLimits};
pub use transport::{NatsTransport, StoredMessage};

/// The async-nats version this crate is built on, re-exported for
/// [`NatsTransport::client`] and [`NatsTransport::stream_info`].
pub use async_nats;
