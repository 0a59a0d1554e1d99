//! Conformance suites every backend runs (feature `conformance`).
//!
//! Each suite is a set of public async functions, one per behaviour, taking
//! the backend as a trait object and asserting with a message that names the
//! behaviour. A backend runs them from its own tests — the memory backends
//! from `agentorg-core/tests/`, NATS, Firestore and MCP from their crates,
//! against real servers. Backend differences are parameters, never copies of
//! the suite.
//!
//! Suites that may run against real servers use short real durations and
//! assert only "not before" bounds and eventual outcomes; on the memory
//! backends they also run on tokio's paused clock.
//!
//! A backend's driver names its backends once and gets one test per case
//! from [`conformance_tests!`](crate::conformance_tests), which reads each
//! suite's one list of cases; [`faults`] has the fault-injecting wrappers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::sync::Arc;
//! use agentorg_core::conformance;
//! use agentorg_core::store::MemoryStore;
//! use agentorg_core::transport::MemoryTransport;
//!
//! conformance::transport::run_all(Arc::new(MemoryTransport::new()), conformance::unique_org()).await;
//! conformance::store::run_all(Arc::new(MemoryStore::new())).await;
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::name::Name;
use crate::store::StateStore;
use crate::transport::Transport;

pub mod faults;
pub mod patterns;
pub mod runtime;
pub mod store;
pub mod tools;
pub mod transport;

/// What a case of the runtime or pattern suite runs on: a transport, a
/// store, and a fresh org name the transport captures.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Backends {
    /// The transport.
    pub transport: Arc<dyn Transport>,
    /// The state store.
    pub store: Arc<dyn StateStore>,
    /// The org's name.
    pub org: Name,
}

impl Backends {
    /// A case's backends.
    pub fn new(transport: Arc<dyn Transport>, store: Arc<dyn StateStore>, org: Name) -> Self {
        Self {
            transport,
            store,
            org,
        }
    }
}

/// A fresh org name (`t` + a lowercase ULID), so runs never share subjects,
/// consumers or documents.
pub fn unique_org() -> Name {
    unique_name("t")
}

/// A fresh name with a prefix (at most 37 characters long).
pub fn unique_name(prefix: &str) -> Name {
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let prefix: String = prefix.chars().take(10).collect();
    match Name::new(format!("{prefix}{id}")) {
        Ok(n) => n,
        Err(e) => panic!("conformance: bad name prefix {prefix:?}: {e}"),
    }
}

/// How long the suites wait for something that must happen (generous: real
/// servers on a loaded 2-core machine).
pub const EVENTUALLY: Duration = Duration::from_secs(15);

/// Fails the calling behaviour with its name and what was expected.
#[track_caller]
pub(crate) fn fail(behaviour: &str, what: impl std::fmt::Display) -> ! {
    panic!("conformance `{behaviour}`: {what}")
}

/// Generates one `async fn` test per case of a runtime or pattern suite, on
/// the backends a block makes for each case.
///
/// ```text
/// conformance_tests!(SUITE, #[test attributes], |org| { … Some((transport, store, guard)) });
/// ```
///
/// `SUITE` is `runtime` (every case of [`runtime::CASES`]), `patterns`
/// ([`patterns::CASES`]) or `patterns_paused_only`
/// ([`patterns::PAUSED_ONLY`]: memory backends on tokio's paused clock).
/// For each case, the block gets a fresh org name `org` and gives the
/// transport and store to run it on (anything that coerces to
/// `Arc<dyn Transport>` and `Arc<dyn StateStore>`) and a guard kept until
/// the case ends (a server, say; `()` for none) — or `None` to skip (a
/// missing server). The list of cases is the suite's own, so a driver never
/// retypes it.
///
/// ```
/// use std::sync::Arc;
/// use agentorg_core::store::MemoryStore;
/// use agentorg_core::transport::MemoryTransport;
///
/// agentorg_core::conformance_tests!(runtime, #[tokio::test(start_paused = true)], |org| {
///     let _ = &org;
///     Some((Arc::new(MemoryTransport::new()), Arc::new(MemoryStore::new()), ()))
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (runtime, $(#[$attr:meta])*, |$org:ident| $setup:block) => {
        $crate::__agentorg_runtime_cases!(__agentorg_tests { ($(#[$attr])*) $org $setup });
    };
    (patterns, $(#[$attr:meta])*, |$org:ident| $setup:block) => {
        $crate::__agentorg_pattern_cases!(__agentorg_tests { ($(#[$attr])*) $org $setup });
    };
    (patterns_paused_only, $(#[$attr:meta])*, |$org:ident| $setup:block) => {
        $crate::__agentorg_paused_pattern_cases!(__agentorg_tests { ($(#[$attr])*) $org $setup });
    };
}

/// The tests of one suite's cases (see [`conformance_tests!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_tests {
    ({ $attrs:tt $org:ident $setup:block } $suite:ident $list:ident: $($case:ident),* $(,)?) => {
        $(
            $crate::__agentorg_one_test! { $attrs $org $setup $suite $case }
        )*
    };
}

/// One test of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_one_test {
    (($(#[$attr:meta])*) $org:ident $setup:block $suite:ident $case:ident) => {
        $(#[$attr])*
        async fn $case() {
            let $org = $crate::conformance::unique_org();
            let Some((transport, store, _guard)) = async { $setup }.await else {
                return;
            };
            $crate::conformance::$suite::$case(transport, store, $org).await;
        }
    };
}

/// The table of one suite's cases by name, in order.
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_case_table {
    ({} $suite:ident $list:ident: $($case:ident),* $(,)?) => {
        /// The cases of this list by name, in the order [`run_all`] runs
        /// them (for drivers that run them one by one; see
        /// [`conformance_tests!`](crate::conformance_tests)).
        pub const $list: &[(&str, Case)] = &[
            $((stringify!($case), |on| Box::pin($case(on.transport, on.store, on.org)))),*
        ];
    };
}

/// The runtime suite's cases: the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_runtime_cases {
    ($callback:ident $args:tt) => {
        $crate::$callback! { $args runtime CASES:
            delegation_rolls_up,
            roles_split_across_processes,
            outbox_survives_a_failed_publish,
            published_outbox_entries_are_deleted,
            processed_once_under_redelivery,
            replay_after_completion_not_rerun,
            lease_expiry_redelivers,
            long_handler_keeps_its_lease,
            lost_lease_cancels_the_handler,
            backoff_between_attempts,
            dead_letter_after_max_attempts,
            permanent_failure_fails_at_once,
            breaker_opens_reroutes_and_half_opens,
            probe_slot_taken_only_with_the_probe,
            conflicting_staged_writes_rerun_without_spending_attempts,
            a_failed_commit_does_not_spend_an_attempt,
            sender_mismatch_refused,
            principal_inbox_refuses_forged_and_undecodable,
            undecodable_input_dead_lettered,
            future_version_retried_then_dead_lettered,
            drain_on_shutdown,
            a_registered_pattern_is_claimed_retried_and_dead_lettered,
            a_role_reaches_only_its_own_namespace,
        }
    };
}

/// The pattern suite's cases that run on every backend: the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_pattern_cases {
    ($callback:ident $args:tt) => {
        $crate::$callback! { $args patterns CASES:
            genbrain_tree_built_by_delegation,
            delegation_up_or_sideways_refused,
            shortcut_honoured_for_its_task_type,
            escalation_reaches_the_principal_and_decisions_come_back,
            a_failing_task_still_escalates,
            breaker_reroutes_to_the_alternate_and_half_opens,
            genbrain_tree_once_under_redelivery,
            poison_task_dead_lettered_requeued_or_discarded,
            peer_messages_only_on_declared_channels,
            thousand_concurrent_delegations_each_once,
            batch_of_ten_gathered_three_in_flight,
            cancel_ends_the_open_subtree,
            idempotency_key_creates_one_task,
            registry_and_liveness,
            events_reach_subscribers_durably,
            events_refused_when_undeclared_spoofed_or_invalid,
            events_once_per_key_and_requeued_after_dead_letter,
            event_receipts_name_who_did_not_process,
            org_events_reach_subscribers,
            subscription_lag_in_health,
            a_changed_subscription_takes_effect_on_restart,
            chain_runs_in_order_whatever_order_events_arrive,
            cicd_saga_compensates_in_reverse,
            in_doubt_step_escalates_and_a_decision_resolves_it,
            failing_compensation_dead_letters_and_escalates,
            gated_step_takes_its_timeout_branch,
            irreversible_step_blocks_compensation_and_escalates,
            concurrent_artifact_updates_lose_nothing,
            non_owner_update_refused,
            completing_a_blocker_notifies_the_owner,
            bad_dependencies_refused,
            decision_superseded_log_intact,
            rework_marking,
            two_replicas_claim_one_artifact,
            architecture_review_with_a_silent_participant,
            each_voting_rule,
            max_duration_closes_with_what_it_has,
        }
    };
}

/// The pattern suite's cases that wait minutes of virtual time (memory
/// backends on tokio's paused clock only): the one list.
#[doc(hidden)]
#[macro_export]
macro_rules! __agentorg_paused_pattern_cases {
    ($callback:ident $args:tt) => {
        $crate::$callback! { $args patterns PAUSED_ONLY:
            sla_breach_escalates_once,
            event_receipts_expire_after_retention,
            meeting_moves_on_exactly_at_the_turn_timeout,
        }
    };
}
