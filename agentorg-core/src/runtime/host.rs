//! A role hosted in this process: its consumers, and the loop that takes
//! their deliveries.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::FutureExt as _;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::config::AgentOptions;
use super::context::Context;
use super::extensions::Extensions;
use super::health::{AgentState, RoleStats};
use super::kernel::Kernel;
use super::seam::{Handler, Lifecycle};
use crate::envelope::{Envelope, MessageId, TraceContext};
use crate::name::Name;
use crate::store::StateStore;
use crate::subject::{Subject, SubjectPattern};
use crate::tools::ToolHost;
use crate::transport::{ConsumerConfig, Delivery, DeliveryStream};

/// The items of all `streams`, merged; ends when they all have.
///
/// Each poll polls the streams in turn, starting after the one that gave
/// the last item (so a busy one does not starve the others), and returns
/// `Pending` having registered the task with each. One stream is returned
/// as it is.
///
/// Not `futures::stream::select_all`: its `FuturesUnordered` wakes its own
/// task whenever one poll has polled every stream without an item. With
/// one stream — most roles have one consumer — that is every poll right
/// after an item (the stream it came from is polled again, empty), and on
/// a multi-thread runtime that wake made every delivery a yield of the
/// role's task: to the back of the run queue, with another worker thread
/// woken to steal it (BENCHMARKS.md, the delegation round trip's
/// "Timings"). With several it happens less often (only the streams that
/// woke are polled again), but it still can; here it never does.
fn merged<T: Send + 'static>(mut streams: Vec<BoxStream<'static, T>>) -> BoxStream<'static, T> {
    if streams.len() == 1 {
        if let Some(one) = streams.pop() {
            return one;
        }
    }
    let mut next = 0;
    futures::stream::poll_fn(move |cx| {
        let mut tried = 0;
        while tried < streams.len() {
            let i = (next + tried) % streams.len();
            match streams[i].poll_next_unpin(cx) {
                std::task::Poll::Ready(Some(item)) => {
                    next = i + 1;
                    return std::task::Poll::Ready(Some(item));
                }
                std::task::Poll::Ready(None) => {
                    // Indices moved: poll the rest again from the start, so
                    // none is left without the task registered with it.
                    drop(streams.swap_remove(i));
                    next = i;
                    tried = 0;
                }
                std::task::Poll::Pending => tried += 1,
            }
        }
        if streams.is_empty() {
            std::task::Poll::Ready(None)
        } else {
            std::task::Poll::Pending
        }
    })
    .boxed()
}

/// Which handler takes a hosted role's deliveries on which subjects.
pub(crate) struct Route {
    pub(crate) patterns: Vec<SubjectPattern>,
    pub(crate) handler: Arc<dyn Handler>,
}

/// A role hosted in this process, as the kernel runs it and hands it to the
/// patterns: its name and options, the application's objects for it, its
/// tools (only its grants) and its slice of the store (only its own
/// namespace).
pub struct HostedRole {
    pub(crate) kernel: Arc<Kernel>,
    pub(crate) role: Name,
    pub(crate) options: AgentOptions,
    pub(crate) app: Extensions,
    /// The role's view of the org's tools: its grants only.
    pub(crate) tools: Arc<dyn ToolHost>,
    /// The role's view of the store: its own namespace only.
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) stats: Arc<RoleStats>,
    pub(crate) routes: Vec<Route>,
    pub(crate) consumers: Vec<ConsumerConfig>,
}

impl fmt::Debug for HostedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostedRole")
            .field("role", &self.role)
            .field("options", &self.options)
            .field(
                "consumers",
                &self.consumers.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl HostedRole {
    pub(crate) fn new(
        kernel: Arc<Kernel>,
        role: Name,
        options: AgentOptions,
        app: Extensions,
        tools: Arc<dyn ToolHost>,
        store: Arc<dyn StateStore>,
        stats: Arc<RoleStats>,
    ) -> Self {
        let routes: Vec<Route> = kernel
            .handlers
            .iter()
            .filter_map(|handler| {
                let patterns = handler.subjects(&kernel.subjects, &kernel.chart, &role);
                (!patterns.is_empty()).then(|| Route {
                    patterns,
                    handler: Arc::clone(handler),
                })
            })
            .collect();
        let consumers = kernel.role_consumers(&role);
        stats.consumers.store(consumers.len(), Ordering::SeqCst);
        Self {
            kernel,
            role,
            options,
            app,
            tools,
            store,
            stats,
            routes,
            consumers,
        }
    }

    /// The kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The role.
    pub fn role(&self) -> &Name {
        &self.role
    }

    /// How it runs.
    pub fn options(&self) -> &AgentOptions {
        &self.options
    }

    /// The application's object of type `T` for this role, as hosted (the
    /// layer that hosts application code puts one per pattern it calls
    /// into).
    pub fn app<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.app.get::<T>()
    }

    /// A context for a handler call about `envelope`: the role's identity,
    /// tools and namespace, and effects to commit with the outcome. `task`
    /// is the work item the call is about; `attempt` is 0 outside a claim
    /// (a request answered at most once).
    pub fn context(
        &self,
        envelope: Envelope,
        task: Option<MessageId>,
        attempt: u32,
        trace: TraceContext,
    ) -> Context {
        Context::new(self, Arc::new(envelope), task, attempt, trace)
    }

    /// The handler of this role's deliveries on `subject`.
    pub(crate) fn route(&self, subject: &Subject) -> Option<&Arc<dyn Handler>> {
        self.routes
            .iter()
            .find(|r| r.patterns.iter().any(|p| p.matches(subject)))
            .map(|r| &r.handler)
    }

    /// Runs the role until `lifecycle.shutdown`: takes the deliveries of all
    /// its consumers, merged, each on its own task (tracked, cancelled by
    /// `kill`), at most `concurrency` at once; then drains what is in flight.
    ///
    /// A permit is taken before the next delivery is asked for, so no more
    /// than `concurrency` deliveries are held at once; the merged stream
    /// wakes on whichever consumer has one.
    pub(crate) async fn run(self: Arc<Self>, lc: Lifecycle) {
        self.stats.set_state(AgentState::Starting);
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let inline = self.options.concurrency == 1;
        if self.consumers.is_empty() {
            self.stats.set_state(AgentState::Ready);
        }
        let mut deliveries = merged(
            self.consumers
                .iter()
                .map(|c| Arc::clone(&self).deliveries(c.name.clone(), lc.shutdown.clone()))
                .collect(),
        );
        loop {
            let permit = tokio::select! {
                () = lc.shutdown.cancelled() => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let next = tokio::select! {
                biased;
                () = lc.shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            let Some(d) = next else { break };
            let host = Arc::clone(&self);
            let kill = lc.kill.clone();
            let work = async move {
                let _permit = permit;
                tokio::select! {
                    () = kill.cancelled() => {}
                    () = host.process(d) => {}
                }
            };
            if inline {
                // One at a time: the next delivery waits for this one
                // anyway, so it runs here, without a task switch. A panic
                // outside the application's code (which `Claimed::run`
                // catches) ends this delivery only, as it would a task of
                // its own; the delivery comes back after its ack wait.
                if let Err(panic) = AssertUnwindSafe(work).catch_unwind().await {
                    let what = super::error::panic_message(&*panic);
                    tracing::error!(role = %self.role, panic = %what, "handling a delivery panicked");
                }
            } else {
                lc.tracker.spawn(work);
            }
        }
        self.stats.set_state(AgentState::Draining);
        let all = u32::try_from(self.options.concurrency).unwrap_or(u32::MAX);
        tokio::select! {
            () = lc.kill.cancelled() => {}
            _ = permits.acquire_many(all) => {}
        }
        self.stats.set_state(AgentState::Stopped);
    }

    /// The deliveries of `consumer` until `shutdown`: binds it, and binds it
    /// again (with a growing pause) whenever it fails or ends.
    fn deliveries(
        self: Arc<Self>,
        consumer: Name,
        shutdown: CancellationToken,
    ) -> BoxStream<'static, Delivery> {
        let start = (self, consumer, None::<DeliveryStream>, shutdown);
        futures::stream::unfold(start, |(host, consumer, mut stream, shutdown)| async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let Some(deliveries) = stream.as_mut() else {
                    let bound = tokio::select! {
                        () = shutdown.cancelled() => return None,
                        r = host.kernel.transport.consume(&consumer) => r,
                    };
                    match bound {
                        Ok(s) => {
                            pause = Duration::from_millis(100);
                            host.stats.consumer_bound(true);
                            stream = Some(s);
                        }
                        Err(e) => {
                            tracing::warn!(role = %host.role, consumer = %consumer, error = %e, "cannot bind the consumer; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return None,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_secs(5));
                        }
                    }
                    continue;
                };
                match deliveries.next().await {
                    Some(Ok(d)) => return Some((d, (host, consumer, stream, shutdown))),
                    Some(Err(e)) => {
                        tracing::warn!(role = %host.role, consumer = %consumer, error = %e, "consumer failed; rebinding");
                    }
                    None => {
                        tracing::warn!(role = %host.role, consumer = %consumer, "consumer ended; rebinding");
                    }
                }
                stream = None;
                host.stats.consumer_bound(false);
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures::stream::{self, BoxStream, StreamExt};
    use futures::task::ArcWake;

    use super::merged;

    /// A waker counting its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn merged_takes_turns_and_ends_when_every_stream_has() {
        let a: BoxStream<'static, &str> = stream::iter(["a1", "a2", "a3"]).boxed();
        let b: BoxStream<'static, &str> = stream::iter(["b1"]).boxed();
        let c: BoxStream<'static, &str> = stream::iter(["c1", "c2"]).boxed();
        let all: Vec<&str> = merged(vec![a, b, c]).collect().await;
        assert_eq!(all, ["a1", "b1", "c1", "a2", "c2", "a3"]);
    }

    #[tokio::test]
    async fn merged_of_none_ends_and_of_one_is_that_one() {
        assert_eq!(merged::<u8>(Vec::new()).next().await, None);
        let one: Vec<u8> = merged(vec![stream::iter([1, 2]).boxed()]).collect().await;
        assert_eq!(one, [1, 2]);
    }

    #[test]
    fn an_empty_poll_registers_with_every_stream_and_does_not_wake_itself() {
        let (tx_a, rx_a) = futures::channel::mpsc::unbounded::<u8>();
        let (tx_b, rx_b) = futures::channel::mpsc::unbounded::<u8>();
        let mut m = merged(vec![rx_a.boxed(), rx_b.boxed()]);
        let wakes = Arc::new(Wakes::default());
        let waker = futures::task::waker(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let count = || wakes.0.load(Ordering::SeqCst);

        tx_a.unbounded_send(1).expect("sent");
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Ready(Some(1)));
        // Polled again with nothing there: pending, without a wake of its
        // own (futures' select_all wakes the task here).
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(count(), 0);
        // Either stream wakes the task.
        tx_b.unbounded_send(2).expect("sent");
        assert_eq!(count(), 1);
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Pending);
        tx_a.unbounded_send(3).expect("sent");
        assert_eq!(count(), 2);
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Ready(Some(3)));
        // One ends: the other still wakes the task, and then it ends too.
        drop(tx_a);
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Pending);
        let before = count();
        tx_b.unbounded_send(4).expect("sent");
        assert_eq!(count(), before + 1);
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Ready(Some(4)));
        drop(tx_b);
        assert_eq!(m.poll_next_unpin(&mut cx), Poll::Ready(None));
    }
}
