//! Durable timers: records in the store, fired once by a process that hosts
//! their owner.
//!
//! A timer is armed by committing its record (`Kernel::arm_timer`) with
//! whatever it is about, and cancelled by deleting it. Each owner's timers
//! are a collection whose ids start with the due time, so a process finds
//! the due ones by reading each owner's collection from the start until the
//! first timer not yet due — never by scanning every timer. A timer that
//! cannot fire (no handler here, a failing handler) is logged and passed
//! over, never holding up the others. It reads again when the earliest timer it saw is
//! due, when it armed one itself, and on every sweep (for timers armed by
//! other processes). Firing commits the handler's effects together with the
//! deletion of the timer's record, conditionally: whichever process sees a
//! timer first fires it, once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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

/// How many pages of due timers one pass reads per owner at the most (the
/// rest waits for the next pass, which comes at once if this one fired
/// something).
const PAGES_PER_PASS: usize = 10;

/// The shortest wait between passes that failed, whatever the
/// configuration says (no busy loop on a broken store).
const MIN_RETRY: Duration = Duration::from_millis(10);

/// Fires the due timers of the owners this process hosts until `shutdown`.
pub(crate) async fn run(kernel: Arc<Kernel>, shutdown: CancellationToken) {
    if kernel.timers.owners.is_empty() {
        return;
    }
    loop {
        let pass = due_pass(&kernel, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
        let mut wait = match pass.next {
            Some(next) => (next - kernel.now()).to_std().unwrap_or_default(),
            None => kernel.config.sweep_interval,
        };
        wait = wait.min(kernel.config.sweep_interval);
        if pass.failed {
            wait = wait.min(kernel.config.retry_delay).max(MIN_RETRY);
        }
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

/// What a pass over the due timers came to.
#[derive(Debug, Default)]
struct Pass {
    /// When the next pass is due: the earliest timer not yet due, or now
    /// if there may be more due timers behind those read.
    next: Option<DateTime<Utc>>,
    /// Whether reading or firing a timer failed (tried again soon).
    failed: bool,
}

impl Pass {
    fn due_at(&mut self, t: DateTime<Utc>) {
        self.next = Some(self.next.map_or(t, |n| n.min(t)));
    }
}

/// Fires the due timers of each owner, reading its collection from the
/// earliest until the first timer not yet due (at most
/// [`PAGES_PER_PASS`] pages). A timer that cannot fire — no handler here,
/// unreadable, its handler or commit failing — is logged and passed over:
/// it never holds up the others.
async fn due_pass(kernel: &Kernel, shutdown: &CancellationToken) -> Pass {
    let mut pass = Pass::default();
    for owner in &kernel.timers.owners {
        let collection = match kernel.layout.timers(owner) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(owner = %owner, error = %e, "no timers collection for this owner");
                continue;
            }
        };
        let mut token = None;
        let mut fired = 0;
        for _ in 0..PAGES_PER_PASS {
            let options = ListOptions::default()
                .with_page_size(PAGE)
                .with_page_token(token.take());
            let page = match kernel.store.list(&collection, options).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(owner = %owner, error = %e, "reading timers failed; retrying soon");
                    pass.failed = true;
                    break;
                }
            };
            let mut all_due = true;
            for doc in page.documents {
                if shutdown.is_cancelled() {
                    return pass;
                }
                let timer = match from_doc::<TimerRecord>(&doc) {
                    Ok((t, _)) => t,
                    Err(e) => {
                        tracing::error!(timer = %doc.key, error = %e, "unreadable timer left in place");
                        continue;
                    }
                };
                if timer.due > kernel.now() {
                    pass.due_at(timer.due);
                    all_due = false;
                    break;
                }
                match fire(kernel, doc, &timer).await {
                    Ok(Fired::Committed) => fired += 1,
                    Ok(Fired::NoHandler) => {}
                    Ok(Fired::KeptConflicting) => pass.failed = true,
                    Err(e) => {
                        tracing::warn!(timer = %timer.key, kind = %timer.kind, error = %e, "firing a timer failed; retrying soon");
                        pass.failed = true;
                    }
                }
            }
            match page.next_page_token {
                Some(next) if all_due => token = Some(next),
                _ => break,
            }
        }
        if token.is_some() && fired > 0 {
            // More may be due behind the pages read.
            pass.due_at(kernel.now());
        }
    }
    pass
}

/// What firing a due timer came to.
enum Fired {
    /// Its effects and its removal are committed (here or elsewhere).
    Committed,
    /// No handler of its kind is registered in this process: left in place.
    NoHandler,
    /// Its commit kept conflicting: tried again on a later pass.
    KeptConflicting,
}

/// Fires one due timer: its handler's effects and the deletion of its
/// record, in one conditional commit.
async fn fire(kernel: &Kernel, doc: Document, timer: &TimerRecord) -> Result<Fired, Fault> {
    let Some(handler) = kernel.timer_handlers.get(&timer.kind) else {
        tracing::error!(timer = %doc.key, kind = %timer.kind, "no handler registered for this timer kind; left in place");
        return Ok(Fired::NoHandler);
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
    match fired {
        Some(()) => Ok(Fired::Committed),
        None => {
            tracing::warn!(timer = %key, "a timer kept conflicting; it is tried again later");
            Ok(Fired::KeptConflicting)
        }
    }
}
