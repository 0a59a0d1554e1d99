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
        Context::new(self, envelope, task, attempt, trace)
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
        let mut deliveries = futures::stream::select_all(
            self.consumers
                .iter()
                .map(|c| Arc::clone(&self).deliveries(c.name.clone(), lc.shutdown.clone())),
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
