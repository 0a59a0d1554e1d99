//! Turns: the offers of the role's deliveries to the client, and the turn a
//! client holds, shared between the runtime's handler and the seat's server.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use agentorg_core::chart::OrgChart;
use agentorg_core::name::Name;
use agentorg_core::tools::ToolHost;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::seat::{SeatError, SeatOptions};

pub(crate) use agentorg_core::agent::actions::{End, TurnKind};

pub(crate) type Reply<T> = oneshot::Sender<Result<T, SeatError>>;

/// A command of the client on a turn it holds, served with the turn's
/// [`Context`](agentorg_core::agent::Context).
#[derive(Debug)]
pub(crate) enum Command {
    /// An org action ([`agentorg_core::agent::actions`]), run by the turn's
    /// action host.
    Action {
        name: String,
        args: Value,
        reply: Reply<Value>,
    },
    /// Any seat call: the client is alive, so the idle timer starts again.
    Touch,
}

/// Where an offer stands. It moves only by compare-and-swap
/// ([`Offer::advance`]): `Pending → Taken` (a client's `wait_for_event`
/// took it) or `Pending → Withdrawn` (the agent gave up on it: pickup
/// timeout, handler cancelled); a notice then `Taken → Acked` (the taking
/// session's next call) or `Taken → Withdrawn` (no such call in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OfferState {
    Pending,
    Taken,
    Acked,
    Withdrawn,
}

/// A delivery offered to the client: taken by `wait_for_event`.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) serial: u64,
    /// The turn's id (task, escalation or peer request id).
    pub(crate) id: String,
    pub(crate) kind: TurnKind,
    /// What `wait_for_event` returns.
    pub(crate) event: Value,
    /// Where the client's commands go; `None` for a notice (nothing to
    /// answer).
    pub(crate) commands: Option<mpsc::Sender<Command>>,
    pub(crate) state: watch::Sender<OfferState>,
}

impl Offer {
    pub(crate) fn state(&self) -> OfferState {
        *self.state.borrow()
    }

    /// Moves the offer from `from` to `to`, if it is still in `from`.
    pub(crate) fn advance(&self, from: OfferState, to: OfferState) -> bool {
        self.state.send_if_modified(|s| {
            if *s == from {
                *s = to;
                true
            } else {
                false
            }
        })
    }
}

/// A turn a client holds.
#[derive(Debug, Clone)]
pub(crate) struct ActiveTurn {
    pub(crate) serial: u64,
    pub(crate) kind: TurnKind,
    pub(crate) commands: mpsc::Sender<Command>,
    /// The MCP session that took it.
    pub(crate) session: u64,
}

/// A turn that is no longer held, kept a while so that later calls on it
/// are told why (`released`) rather than that nothing is held.
#[derive(Debug, Clone)]
pub(crate) struct ReleasedTurn {
    pub(crate) id: String,
    pub(crate) kind: TurnKind,
    /// The session that held it, if it was held when it ended.
    pub(crate) session: Option<u64>,
    pub(crate) reason: String,
    /// Whether a call naming no turn should still be told (the seat, not
    /// the client, ended it).
    pub(crate) unreported: bool,
}

/// How many released turns a seat remembers.
pub(crate) const RELEASED_KEPT: usize = 64;

/// State shared by a seat's agent and its MCP servers (one per MCP session).
pub(crate) struct Shared {
    pub(crate) role: Name,
    pub(crate) chart: OrgChart,
    pub(crate) tools: Arc<dyn ToolHost>,
    pub(crate) options: SeatOptions,
    /// Offers no client has taken yet, oldest first; at most
    /// `options.max_offers`. Withdrawn offers are removed by their agent.
    /// A std mutex: never held across an await.
    pub(crate) offers: Mutex<VecDeque<Arc<Offer>>>,
    /// Wakes the `wait_for_event`s when an offer comes in.
    pub(crate) offered: Notify,
    /// The turns clients hold, by id. A std mutex: held only to look up,
    /// insert or remove, never across an await.
    pub(crate) turns: Mutex<HashMap<String, ActiveTurn>>,
    pub(crate) released: Mutex<VecDeque<ReleasedTurn>>,
    pub(crate) serial: AtomicU64,
    pub(crate) sessions: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("role", &self.role)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(
        role: Name,
        chart: OrgChart,
        tools: Arc<dyn ToolHost>,
        options: SeatOptions,
    ) -> Self {
        Self {
            role,
            chart,
            tools,
            options,
            offers: Mutex::new(VecDeque::new()),
            offered: Notify::new(),
            turns: Mutex::new(HashMap::new()),
            released: Mutex::new(VecDeque::new()),
            serial: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
        }
    }

    /// A new MCP session's number.
    pub(crate) fn next_session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn turns(&self) -> MutexGuard<'_, HashMap<String, ActiveTurn>> {
        lock(&self.turns)
    }

    /// Queues an offer; `Err(n)` when `n` offers already wait (the cap).
    pub(crate) fn push_offer(&self, offer: Arc<Offer>) -> Result<(), usize> {
        {
            let mut offers = lock(&self.offers);
            if offers.len() >= self.options.max_offers {
                return Err(offers.len());
            }
            offers.push_back(offer);
        }
        self.offered.notify_waiters();
        Ok(())
    }

    /// The oldest offer still pending (dropping any withdrawn on the way).
    pub(crate) fn take_offer(&self) -> Option<Arc<Offer>> {
        let mut offers = lock(&self.offers);
        while let Some(o) = offers.pop_front() {
            if o.state() == OfferState::Pending {
                return Some(o);
            }
        }
        None
    }

    /// Puts back an offer a cancelled `wait_for_event` took from the queue
    /// but did not hand over: first in line again.
    pub(crate) fn put_back(&self, offer: Arc<Offer>) {
        if offer.state() == OfferState::Pending {
            lock(&self.offers).push_front(offer);
            self.offered.notify_waiters();
        }
    }

    /// Withdraws the offer numbered `serial` from the queue.
    pub(crate) fn unqueue(&self, serial: u64) {
        lock(&self.offers).retain(|o| o.serial != serial);
    }

    /// Holds turn `id` for a client, unless a newer turn of the same id is
    /// held (a retry of the same task reuses the id).
    pub(crate) fn hold(&self, id: &str, turn: ActiveTurn) -> bool {
        let mut turns = self.turns();
        if turns.get(id).is_some_and(|t| t.serial > turn.serial) {
            return false;
        }
        turns.insert(id.to_owned(), turn);
        drop(turns);
        lock(&self.released).retain(|r| r.id != id);
        true
    }

    /// Forgets turn `id` if it is still the one numbered `serial`.
    pub(crate) fn forget(&self, id: &str, serial: u64) -> Option<ActiveTurn> {
        let mut turns = self.turns();
        if turns.get(id).is_some_and(|t| t.serial == serial) {
            turns.remove(id)
        } else {
            None
        }
    }

    pub(crate) fn record_release(&self, r: ReleasedTurn) {
        if self.turns().contains_key(&r.id) {
            // Already held again (a retry): nothing to tell.
            return;
        }
        let mut released = lock(&self.released);
        released.retain(|x| x.id != r.id);
        released.push_back(r);
        while released.len() > RELEASED_KEPT {
            released.pop_front();
        }
    }

    /// Why turn `id` is no longer held, if the seat remembers it.
    pub(crate) fn released_named(&self, id: &str) -> Option<ReleasedTurn> {
        let mut released = lock(&self.released);
        let r = released.iter_mut().find(|r| r.id == id)?;
        r.unreported = false;
        Some(r.clone())
    }

    /// The latest turn of these kinds that `session` held and the seat
    /// released without its client being told yet; marks it told.
    pub(crate) fn released_unreported(
        &self,
        session: u64,
        kinds: &[TurnKind],
    ) -> Option<ReleasedTurn> {
        let mut released = lock(&self.released);
        let r = released
            .iter_mut()
            .rev()
            .find(|r| r.unreported && r.session == Some(session) && kinds.contains(&r.kind))?;
        r.unreported = false;
        Some(r.clone())
    }
}

/// Withdraws the offer when the handler returns, however it returns
/// (pickup timeout, the runtime dropping the handler, …): a client can no
/// longer take it, and it leaves the queue.
pub(crate) struct OfferGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) offer: Arc<Offer>,
}

impl Drop for OfferGuard<'_> {
    fn drop(&mut self) {
        self.offer
            .advance(OfferState::Pending, OfferState::Withdrawn);
        self.offer.advance(OfferState::Taken, OfferState::Withdrawn);
        self.shared.unqueue(self.offer.serial);
    }
}

/// Forgets the turn when the handler returns, however it returns, and
/// records why (before the command channel closes, so that a call that
/// finds it closed finds the reason too).
pub(crate) struct TurnGuard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) id: String,
    pub(crate) kind: TurnKind,
    pub(crate) serial: u64,
    /// Set before the handler returns; `None` if the runtime dropped it.
    pub(crate) end: Option<(String, bool)>,
    pub(crate) commands: mpsc::Receiver<Command>,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let held = self.shared.forget(&self.id, self.serial);
        let (reason, unreported) = self.end.take().unwrap_or_else(|| {
            (
                "the runtime stopped the turn's handler (its handler_timeout passed, or the org shut down); the delivery is retried".to_owned(),
                true,
            )
        });
        self.shared.record_release(ReleasedTurn {
            id: self.id.clone(),
            kind: self.kind,
            session: held.map(|t| t.session),
            reason,
            unreported,
        });
    }
}
