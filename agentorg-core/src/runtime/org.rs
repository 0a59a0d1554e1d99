//! A running org, and its maintenance sweeps.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::health::{read_backlog, AgentHealth, AgentState, RoleStats};
use super::kernel::Kernel;
use super::principal::Principal;
use super::seam::Lifecycle;
use super::{outbox, registry};
use crate::chart::OrgChart;
use crate::name::Name;
use crate::store::StateStore;
use crate::subject::Subjects;
use crate::transport::Transport;

/// Every `sweep_interval` until `shutdown`: republishes what `senders` left
/// in the outbox, deletes expired claims, writes the heartbeat, folds the
/// registry counters, and has the timers read again.
pub(crate) async fn maintenance(
    shared: Arc<Kernel>,
    senders: HashSet<Name>,
    roles: Vec<(Name, Arc<RoleStats>)>,
    started_at: DateTime<Utc>,
    shutdown: CancellationToken,
) {
    let hosted: Vec<Name> = roles.iter().map(|(r, _)| r.clone()).collect();
    let mut claims_page = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(shared.config.sweep_interval) => {}
        }
        outbox::sweep(
            &shared,
            &senders,
            Some(shared.config.outbox_grace),
            &shutdown,
        )
        .await;
        claims_page = outbox::expire_claims_some(&shared, claims_page, &shutdown).await;
        if let Err(e) = registry::heartbeat(&shared, &hosted, started_at).await {
            tracing::warn!(error = %e, "writing this process's heartbeat failed; retried on the next sweep");
        }
        flush_registry(&shared, &roles).await;
        // Bounded per consumer; never holds up a shutdown.
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = read_backlog(&shared, &roles) => {}
        }
        shared.timers.wake();
    }
    // Shutting down: the last counters, and this process leaves the
    // liveness view.
    flush_registry(&shared, &roles).await;
    if let Err(e) = registry::farewell(&shared).await {
        tracing::debug!(error = %e, "removing this process's heartbeat failed");
    }
}

async fn flush_registry(shared: &Kernel, roles: &[(Name, Arc<RoleStats>)]) {
    for (role, stats) in roles {
        if let Err(e) = registry::flush(shared, role, stats).await {
            tracing::warn!(role = %role, error = %e, "updating the registry failed; retried on the next sweep");
        }
    }
}

/// A running org: the roles hosted in this process, and the principal's
/// handle. Cheap operations take `&self`; drop it only after
/// [`shutdown`](Org::shutdown) (dropping it without one stops nothing until
/// the tokio runtime ends).
pub struct Org {
    shared: Arc<Kernel>,
    roles: Vec<(Name, Arc<RoleStats>)>,
    // Who owns what: `shutdown` stops intake (role loops stop pulling) and the
    // sweeper; `kill` cancels in-flight handlers too (a crash, for tests and
    // a drain that timed out). Every task the org starts is spawned on
    // `tracker`, so shutdown can wait for all of them.
    shutdown: CancellationToken,
    kill: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for Org {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Org")
            .field("org", self.shared.org())
            .field(
                "hosted",
                &self.roles.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Org {
    pub(crate) fn new(
        shared: Arc<Kernel>,
        roles: Vec<(Name, Arc<RoleStats>)>,
        lifecycle: Lifecycle,
    ) -> Self {
        Self {
            shared,
            roles,
            shutdown: lifecycle.shutdown,
            kill: lifecycle.kill,
            tracker: lifecycle.tracker,
        }
    }

    /// The chart.
    pub fn chart(&self) -> &OrgChart {
        &self.shared.chart
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.shared.transport
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.shared.store
    }

    /// The subjects of this org.
    pub fn subjects(&self) -> &Subjects {
        &self.shared.subjects
    }

    /// The application's handle to act as the principal: delegate, read task
    /// trees, receive results, escalations and alerts.
    pub fn principal(&self) -> Principal {
        Principal::new(Arc::clone(&self.shared))
    }

    /// The hosted roles' states and counters, and their consumers' lag as
    /// the last maintenance sweep read it (see [`health_now`](Self::health_now)).
    pub fn health(&self) -> Vec<AgentHealth> {
        self.roles.iter().map(|(r, s)| s.snapshot(r)).collect()
    }

    /// Like [`health`](Self::health), after reading every hosted consumer's
    /// lag from the transport now (one request per consumer on NATS).
    pub async fn health_now(&self) -> Vec<AgentHealth> {
        read_backlog(&self.shared, &self.roles).await;
        self.health()
    }

    /// How many commits of this process met a conflict (another writer
    /// changed a record first) since it started; each was read again and
    /// retried, or settled otherwise. Contention shows here.
    pub fn conflicts(&self) -> u64 {
        self.shared.conflicts()
    }

    /// Whether every hosted role is taking deliveries.
    pub fn is_ready(&self) -> bool {
        self.health().iter().all(|h| h.state == AgentState::Ready)
    }

    /// Graceful shutdown: stops taking deliveries, lets in-flight handlers
    /// finish (up to the drain timeout, after which they are cancelled and
    /// their messages come back after their lease), and waits for every task
    /// of the org. Idempotent: a second call waits for the first to finish.
    pub async fn shutdown(&self) {
        if !self.shutdown.is_cancelled() {
            self.shutdown.cancel();
            self.tracker.close();
            if tokio::time::timeout(self.shared.config.drain_timeout, self.tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(org = %self.shared.org(), "drain timed out; cancelling in-flight handlers");
                self.kill.cancel();
            }
            self.finish().await;
            self.shared.cleanup.finish(&*self.shared.store).await;
        }
        self.finish().await;
    }

    /// Stops everything at once, as a crash would: no acknowledgement, no
    /// claim released. Messages in flight come back when their lease ends.
    /// For tests of crash recovery.
    pub async fn abort(&self) {
        self.kill.cancel();
        self.shutdown.cancel();
        self.tracker.close();
        self.finish().await;
    }

    /// Waits for every task of the org (the tracker is closed, so this ends
    /// once they have; a second caller waits as long as the first).
    async fn finish(&self) {
        self.tracker.wait().await;
    }
}
