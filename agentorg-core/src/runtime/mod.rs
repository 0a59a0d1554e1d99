//! The runtime kernel: hosts roles, and keeps the org's delivery semantics
//! for every pattern alike. It names no pattern: the patterns register with
//! it ([`Pattern`], [`Registry`]) and it dispatches by what they registered.
//!
//! An [`Org`] hosts any subset of the chart's roles in this process; the
//! others are reached through the transport, possibly in other processes.
//! Each hosted role binds one durable consumer per key its patterns'
//! [`Handler`]s use (its inbox, `in-…`, and any a pattern adds), all within
//! one per-role concurrency limit. For every delivery the kernel:
//!
//! 1. refuses what must not be processed — undecodable input, a subject no
//!    handler takes, an envelope of another org or addressed to another
//!    role, one whose `from` differs from the sender its subject names, and
//!    whatever the handler's [`admit`](Handler::admit) refuses — by
//!    dead-lettering it with its reason;
//! 2. **claims** the message in the StateStore by a conditional write (owner,
//!    attempt, lease): a live claim held elsewhere means *nak with a delay*;
//!    a completion record means *acknowledge without running*. Attempts are
//!    counted in the claim, never taken from the broker's delivery count.
//!    Settled claims are kept for a retention (7 days by default) so that a
//!    replay is recognised, then swept;
//! 3. hands the claimed delivery to its handler ([`Claimed`]), which runs
//!    the application's code while the kernel extends the lease (in the
//!    store and with the transport);
//! 4. commits the outcome together with the completion record in one atomic
//!    commit — the pattern's records, the application's staged writes, and
//!    the messages to send (an outbox) — then publishes the messages and
//!    acknowledges. State changes exactly once; messages are at-least-once
//!    and deduplicated by id;
//! 5. on a transient failure, releases the claim and naks with backoff; when
//!    the attempts are spent (3 by default) it dead-letters: a *new* envelope
//!    on `<org>.deadletter`, one alert on `<org>.alerts`, a record to
//!    requeue or discard, and what the handler commits along, and the
//!    original is terminated.
//!
//! A transactional outbox covers a crash between a commit and its publish:
//! a sweep at start and periodically republishes what is left. **Durable
//! timers** ([`Kernel::arm_timer`], [`TimerHandler`]) are records in the
//! store, fired once by a process hosting their owner — the hierarchy's SLA
//! deadlines are one user. Each role's code reaches only its own namespace
//! of the store ([`Context::store`]); shared state goes through the
//! patterns, which check the chart.
//!
//! Failures of the org's own infrastructure (the store or transport briefly
//! unreachable, a commit that keeps conflicting, a record of a newer
//! version) release the claim *without* spending an attempt and put the
//! delivery back ([`Fault`]): an outage never dead-letters work. A handler
//! whose staged writes conflict with another's runs again on the same
//! attempt, since its outcome was computed from stale state.
//!
//! # Known limits (this version)
//!
//! * Only a process hosting a role republishes that role's outbox entries
//!   and fires its timers (and the principal's only the provisioning
//!   process): a role scaled to zero holds its unpublished messages until
//!   it runs again.
//! * Concurrency 1 keeps one sender's messages in order only until one is
//!   retried; retries and deliveries put back while busy come later.
//! * The principal's streams may hand over a message twice (after a crash,
//!   or an outbox republish outside the broker's dedupe window); envelope
//!   ids tell duplicates apart.
//! * Settled claims are kept for `claim_retention` and then swept, up to
//!   10,000 per sweep interval and process; a replay of a message older
//!   than the retention would run again.
//!
//! # Step events
//!
//! Each step of a durable message's way through the kernel (what goes
//! through the outbox: tasks, results, escalations, events, …; not the
//! ephemeral requests and replies of peer channels, nor the dead letter and
//! alert of a delivery the store refuses to claim, which go straight to the
//! transport) is a `TRACE` event on the target [`STEPS`]
//! (`agentorg::steps`), whose `step` field names it and whose `msg_id` is
//! the envelope's id (absent from a delivery that could not be decoded):
//!
//! | `step` | when | other fields |
//! |---|---|---|
//! | `publish` | a committed message is handed to the transport, by its committer or by the outbox's sweep (again, or first after a crash) | `subject` |
//! | `published` | the transport has stored it (on NATS its PubAck, a duplicate's too, after the transport's own retries); none if the publish failed or was cancelled | `subject` |
//! | `delivered` | a role starts on a delivery (the transport has decoded it), before admission and the claim | `role`, `subject` |
//! | `settled` | its ack, nak or term was handed to the transport (none if the role was killed or the handling panicked meanwhile) | `role`, `subject`, `ok` (false if that failed) |
//! | `received` | a principal's stream hands a message over (not one it refuses or one it already gave) | `subject` |
//!
//! A transport may add steps of its own on the same target. The NATS
//! transport (`agentorg-nats`) emits `pulled` when its binder takes a
//! message of a durable consumer from the connection, before decoding it
//! (every message, including one it then skips), with `consumer` and
//! `subject`; its `msg_id` is the message's `Nats-Msg-Id` (absent without
//! one), which the kernel's publishes set to the envelope's id.
//!
//! With a subscriber that keeps only this target (say
//! `EnvFilter::new("agentorg::steps=trace")`) and timestamps events, one
//! message can be followed step by step by its `msg_id`.
//! `benches/delegation.rs` times its round trips so with
//! `AGENTORG_BENCH_STEPS=1`, one at a time, matching the steps by their
//! order (see BENCHMARKS.md). Off, as `TRACE` usually is, an event costs a
//! comparison with the current maximum level.
//!
//! # Example
//!
//! An org with the default patterns (built by the agent layer's
//! `Org::builder`):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use agentorg_core::agent::{agent_fn, Outcome, TaskSpec};
//! use agentorg_core::chart::{OrgChart, RoleSpec};
//! use agentorg_core::hierarchy::TaskStatus;
//! use agentorg_core::runtime::Org;
//! use serde_json::json;
//!
//! let chart = OrgChart::builder("demo")
//!     .principal("founder")
//!     .role(RoleSpec::new("ceo").reports_to("founder"))
//!     .build()?;
//! let org = Org::builder(chart)
//!     .agent("ceo", agent_fn(|task| async move { Ok(Outcome::Complete(json!({"done": task.title}))) }))
//!     .start()
//!     .await?;
//! let founder = org.principal();
//! let task = founder.delegate("ceo", TaskSpec::new("Ship it")).await?;
//! let record = founder.wait_for(&task.task_id, Duration::from_secs(5)).await?;
//! assert_eq!(record.status, TaskStatus::Completed);
//! org.shutdown().await;
//! # Ok(()) }
//! ```

mod builder;
mod claim;
mod claimed;
mod config;
mod consumers;
mod context;
mod dead_letter;
mod delivery;
mod error;
mod extensions;
mod health;
mod host;
mod kernel;
mod ops;
mod org;
mod outbox;
mod principal;
mod records;
mod registry;
mod retry;
mod seam;
mod timers;

/// The target of the kernel's step events (see the module docs).
pub const STEPS: &str = "agentorg::steps";

pub use builder::OrgBuilder;
pub use claimed::{Claimed, Committed};
pub use config::{AgentOptions, OrgError, RuntimeConfig};
pub use consumers::OrgConsumers;
pub use context::Context;
#[cfg(test)]
pub(crate) use dead_letter::DEAD_LETTER_EVENT;
pub(crate) use error::agent_error_from;
pub use error::{describe, AgentError, BoxError, ErrorKind, Fault};
pub use extensions::Extensions;
pub use health::{AgentHealth, AgentState, ConsumerBacklog};
pub use host::HostedRole;
pub use kernel::{Effects, Kernel};
pub use ops::{OperationError, RoleLiveness};
pub use org::Org;
pub use principal::{InboxError, Principal, PrincipalStream};
pub(crate) use records::from_json;
pub use records::{
    clip, from_doc, org_collection, role_collection, to_value, AgentRecord, DeadLetterRecord,
    DeadLetterStatus, ModelUsage, ProcessRecord, Spent, TimerRecord, MAX_ERROR_LEN,
};
pub use retry::{optimistic, CONFLICT_RETRIES};
pub use seam::{
    Handler, KernelAccess, Lifecycle, Pattern, Prepared, Reason, Registry, Service, Settle,
    TimerHandler, INBOX,
};
