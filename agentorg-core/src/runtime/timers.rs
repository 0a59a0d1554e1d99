//! Durable timers: records in the store, fired once by a process that hosts
//! their owner.
//!
//! A timer is armed by committing its record (`Kernel::arm_timer`) with
//! whatever it is about, and cancelled by deleting it. Each owner's timers
//! are a collection whose ids start with the due time, so a process finds
//! the due ones by reading the first page of each owner it hosts — never by
//! scanning every timer. It reads again when the earliest timer it saw is
//! due, when it armed one itself, and on every sweep (for timers armed by
//! other processes). Firing commits the handler's effects together with the
//! deletion of the timer's record, conditionally: whichever process sees a
//! timer first fires it, once.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::Fault;
use super::kernel::Kernel;
use super::records::{from_doc, TimerRecord};
use super::retry::optimistic;
use crate::name::Name;
use crate::store::{Document, ListOptions, Precondition, StoreError, Write};

/// How many due timers one read of an owner's collection looks at.
const PAGE: usize = 100;

/// The timers of one process: whose it fires, and how it is woken.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// The owners whose timers this process fires.
    owners: Vec<Name>,
    /// The collections of their timers (to recognise a commit that arms
    /// one).
    collections: HashSet<String>,
    wake: Notify,
}

impl Timers {
    pub(crate) fn new(kernel_org: &Name, owners: Vec<Name>) -> Result<Self, StoreError> {
        let layout = super::records::Layout::new(kernel_org)?;
        let collections = owners
            .iter()
            .map(|o| layout.timers(o).map(|c| c.as_str().to_owned()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            owners,
            collections,
            wake: Notify::new(),
        })
    }

    /// Whether `writes` arm a timer this process fires.
    pub(crate) fn arms_any(&self, writes: &[Write]) -> bool {
        writes.iter().any(|w| {
            matches!(w, Write::Put { .. })
                && self.collections.contains(w.key().collection().as_str())
        })
    }

    /// Makes the loop read the timers again now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Fires the due timers of the owners this process hosts until `shutdown`.
pub(crate) async fn run(kernel: Arc<Kernel>, shutdown: CancellationToken) {
    if kernel.timers.owners.is_empty() {
        return;
    }
    loop {
        let wait = match due_pass(&kernel, &shutdown).await {
            Ok(Some(next)) => (next - kernel.now())
                .to_std()
                .unwrap_or_default()
                .min(kernel.config.sweep_interval),
            Ok(None) => kernel.config.sweep_interval,
            Err(e) => {
                tracing::warn!(error = %e, "reading or firing timers failed; retrying");
                kernel.config.retry_delay
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = kernel.timers.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Fires every due timer on the first page of each owner's collection;
/// returns when the next one not yet fired is due (now, if a page was all
/// due).
async fn due_pass(
    kernel: &Kernel,
    shutdown: &CancellationToken,
) -> Result<Option<DateTime<Utc>>, Fault> {
    let mut next: Option<DateTime<Utc>> = None;
    let mut soonest = |t: DateTime<Utc>| next = Some(next.map_or(t, |n| n.min(t)));
    for owner in &kernel.timers.owners {
        let page = kernel
            .store
            .list(
                &kernel.layout.timers(owner)?,
                ListOptions::default().with_page_size(PAGE),
            )
            .await?;
        let full = page.documents.len() >= PAGE;
        let mut all_due = true;
        let mut fired = 0;
        for doc in page.documents {
            if shutdown.is_cancelled() {
                return Ok(None);
            }
            let timer = match from_doc::<TimerRecord>(&doc) {
                Ok((t, _)) => t,
                Err(e) => {
                    tracing::error!(timer = %doc.key, error = %e, "unreadable timer left in place");
                    continue;
                }
            };
            if timer.due > kernel.now() {
                soonest(timer.due);
                all_due = false;
                break;
            }
            if fire(kernel, doc, &timer).await? {
                fired += 1;
            }
        }
        if full && all_due && fired > 0 {
            // More may be due behind this page.
            soonest(kernel.now());
        }
    }
    Ok(next)
}

/// Fires one due timer: its handler's effects and the deletion of its
/// record, in one conditional commit. `false` if it has no handler here.
async fn fire(kernel: &Kernel, doc: Document, timer: &TimerRecord) -> Result<bool, Fault> {
    let Some(handler) = kernel.timer_handlers.get(&timer.kind) else {
        tracing::error!(timer = %doc.key, kind = %timer.kind, "no handler registered for this timer kind; left in place");
        return Ok(false);
    };
    let key = doc.key.clone();
    let fired = optimistic(|| async {
        let Some(current) = kernel.store.get(&key).await? else {
            return Ok(Some(())); // Cancelled, or fired elsewhere.
        };
        let mut effects = handler.fire(kernel, timer).await?;
        effects.write(Write::delete(
            key.clone(),
            Precondition::Version(current.version),
        ));
        match kernel.commit(effects).await {
            Ok(()) => {
                tracing::debug!(timer = %key, "timer fired");
                Ok(Some(()))
            }
            Err(e) if e.is_precondition_failure() => Ok(None),
            Err(e) => Err(Fault::from(e)),
        }
    })
    .await?;
    if fired.is_none() {
        tracing::warn!(timer = %key, "a timer kept conflicting; it is tried again later");
    }
    Ok(true)
}
