//! A role hosted in this process: its consumers, and the loop that takes
//! their deliveries.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;

use super::config::AgentOptions;
use super::consumers::role_consumers;
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
use crate::transport::ConsumerConfig;

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
        let consumers = role_consumers(
            &kernel.chart,
            &kernel.subjects,
            &kernel.config,
            &kernel.handlers,
            &role,
        );
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

    /// Runs the role until `lifecycle.shutdown`: every consumer's loop (all
    /// sharing the role's concurrency), then a drain of what is in flight.
    pub(crate) async fn run(self: Arc<Self>, lifecycle: Lifecycle) {
        self.stats.set_state(AgentState::Starting);
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        if self.consumers.is_empty() {
            self.stats.set_state(AgentState::Ready);
        }
        // The loops run together on this task; each ends at shutdown.
        futures::future::join_all(self.consumers.iter().map(|c| {
            Arc::clone(&self).consume(c.name.clone(), Arc::clone(&permits), lifecycle.clone())
        }))
        .await;
        self.stats.set_state(AgentState::Draining);
        let all = u32::try_from(self.options.concurrency).unwrap_or(u32::MAX);
        tokio::select! {
            () = lifecycle.kill.cancelled() => {}
            _ = permits.acquire_many(all) => {}
        }
        self.stats.set_state(AgentState::Stopped);
    }

    /// Takes deliveries from `consumer` until shutdown, each on its own task
    /// (tracked, cancelled by `kill`), within the role's concurrency.
    async fn consume(self: Arc<Self>, consumer: Name, permits: Arc<Semaphore>, lc: Lifecycle) {
        let mut stream = None;
        let mut pause = Duration::from_millis(100);
        loop {
            let deliveries = match stream.as_mut() {
                Some(s) => s,
                None => {
                    let bound = tokio::select! {
                        () = lc.shutdown.cancelled() => break,
                        r = self.kernel.transport.consume(&consumer) => r,
                    };
                    match bound {
                        Ok(s) => {
                            pause = Duration::from_millis(100);
                            self.stats.consumer_bound(true);
                            stream.insert(s)
                        }
                        Err(e) => {
                            tracing::warn!(role = %self.role, consumer = %consumer, error = %e, "cannot bind the consumer; retrying");
                            tokio::select! {
                                () = lc.shutdown.cancelled() => break,
                                () = tokio::time::sleep(pause) => {}
                            }
                            pause = (pause * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
            };
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
            match next {
                Some(Ok(d)) => {
                    let host = Arc::clone(&self);
                    let kill = lc.kill.clone();
                    lc.tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = kill.cancelled() => {}
                            () = host.process(d) => {}
                        }
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(role = %self.role, consumer = %consumer, error = %e, "consumer failed; rebinding");
                    stream = None;
                    self.stats.consumer_bound(false);
                }
                None => {
                    tracing::warn!(role = %self.role, consumer = %consumer, "consumer ended; rebinding");
                    stream = None;
                    self.stats.consumer_bound(false);
                }
            }
        }
    }
}
