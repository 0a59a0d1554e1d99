//! The application's handle on the principal: the person at the top.
//!
//! The kernel's part: the principal's streams (inbox, alerts, dead letters),
//! the dead-letter operations, the registry and liveness. Each pattern adds
//! its own operations (the hierarchy: delegate, cancel, answer, task trees).

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;

use super::consumers::principal_consumer;
use super::kernel::Kernel;
use super::ops::{self, OperationError, RoleLiveness};
use super::records::{from_doc, AgentRecord, DeadLetterRecord};
use super::seam::INBOX;
use crate::codec::DecodeFailure;
use crate::envelope::{Envelope, MessageId};
use crate::name::Name;
use crate::store::{StateStoreExt, StoreError};
use crate::subject::Route;
use crate::transport::{Acker, ConsumerConfig, TransportError};

/// An item of the principal's streams that is not a usable envelope. It has
/// been terminated on the transport (it would never become usable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The message could not be decoded.
    #[error("undecodable message: {0}")]
    Undecodable(DecodeFailure),
    /// The envelope's `from` differs from the sender its subject names.
    #[error("refused: envelope from `{from}` on subject {subject}")]
    SenderMismatch {
        /// The subject.
        subject: String,
        /// The `from` of the envelope.
        from: Name,
    },
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The principal's messages: each envelope is acknowledged when the next one
/// is asked for, so one the application had not finished with comes again
/// after a crash. A redelivery of one of the last 1,024 messages the stream
/// gave (its acknowledgement came after the transport's ack wait, when the
/// server had already queued it again) is acknowledged and passed over.
pub type PrincipalStream = BoxStream<'static, Result<Envelope, InboxError>>;

/// The application acting as the org's principal (the person at the top of
/// the chart): it receives results, escalations, alerts and dead letters,
/// operates on dead letters, and — through the patterns' operations —
/// delegates to its direct reports and reads task trees.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Principal {
    pub(crate) kernel: Arc<Kernel>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", self.name())
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub(crate) fn new(kernel: Arc<Kernel>) -> Self {
        Self { kernel }
    }

    /// The principal's name in the chart.
    pub fn name(&self) -> &Name {
        self.kernel.chart.principal()
    }

    /// The dead letters kept in the store, oldest first (open ones and those
    /// already requeued or discarded).
    pub async fn dead_letter_records(&self) -> Result<Vec<DeadLetterRecord>, StoreError> {
        let mut out = Vec::new();
        for doc in self
            .kernel
            .store
            .list_all(self.kernel.layout.deadletters())
            .await?
        {
            out.push(from_doc::<DeadLetterRecord>(&doc)?.0);
        }
        out.sort_by_key(|r| r.created_at);
        Ok(out)
    }

    /// Publishes a dead letter's original again as a new envelope on its
    /// original subject (its work item, if any, is resumed by its pattern: a
    /// task becomes `pending`); returns the new envelope's id. Needs the
    /// right to publish as the original sender (under per-role broker
    /// permissions: the admin).
    pub async fn requeue(&self, dead_letter: &MessageId) -> Result<MessageId, OperationError> {
        ops::requeue(&self.kernel, dead_letter).await
    }

    /// Gives a dead letter up: its work item, if any, is ended by its
    /// pattern (a task fails, and its delegator is told).
    pub async fn discard(&self, dead_letter: &MessageId) -> Result<(), OperationError> {
        ops::discard(&self.kernel, dead_letter).await
    }

    /// Which roles are up, from the heartbeats of the processes hosting
    /// them.
    pub async fn liveness(&self) -> Result<Vec<RoleLiveness>, StoreError> {
        ops::liveness(&self.kernel).await
    }

    /// A role's registry entry (tasks completed, last active, capabilities,
    /// execution time, reported usage), as last flushed by its processes.
    pub async fn agent_record(&self, role: &str) -> Result<Option<AgentRecord>, StoreError> {
        let role = Name::new(role).map_err(|e| StoreError::InvalidInput {
            key: None,
            message: e.to_string(),
        })?;
        match self
            .kernel
            .store
            .get(&self.kernel.layout.agent(&role)?)
            .await?
        {
            Some(doc) => Ok(Some(from_doc::<AgentRecord>(&doc)?.0)),
            None => Ok(None),
        }
    }

    /// Results, escalations and other messages sent to the principal.
    pub async fn inbox(&self) -> Result<PrincipalStream, TransportError> {
        let consumer = self.inbox_consumer();
        self.stream(consumer, true).await
    }

    /// Alerts to the principal (`<org>.alerts`): dead letters, breakers.
    pub async fn alerts(&self) -> Result<PrincipalStream, TransportError> {
        let k = &self.kernel;
        let consumer =
            principal_consumer(&k.chart, &k.config, "alerts", k.subjects.alerts().into());
        self.stream(consumer, false).await
    }

    /// Dead letters (`<org>.deadletter`): each a new envelope whose payload
    /// has the reason, the attempts and the original message.
    pub async fn dead_letters(&self) -> Result<PrincipalStream, TransportError> {
        let k = &self.kernel;
        let consumer =
            principal_consumer(&k.chart, &k.config, "dead", k.subjects.deadletter().into());
        self.stream(consumer, false).await
    }

    async fn stream(
        &self,
        consumer: ConsumerConfig,
        check_sender: bool,
    ) -> Result<PrincipalStream, TransportError> {
        let shared = Arc::clone(&self.kernel);
        if shared.config.provision {
            shared.transport.ensure_consumer(&consumer).await?;
        }
        let deliveries = shared.transport.consume(&consumer.name).await?;
        let state = (
            deliveries,
            None::<Box<dyn Acker>>,
            shared,
            Recent::default(),
        );
        let stream = futures::stream::unfold(
            state,
            move |(mut deliveries, prev, shared, mut recent)| async move {
                if let Some(prev) = prev {
                    if let Err(e) = prev.ack().await {
                        tracing::warn!(error = %e, "acknowledging a principal message failed; it may come again");
                    }
                }
                loop {
                    let d = match deliveries.next().await? {
                        Ok(d) => d,
                        Err(e) => {
                            let item = Err(InboxError::Transport(e));
                            return Some((item, (deliveries, None, shared, recent)));
                        }
                    };
                    // The envelope is moved out of the delivery, not
                    // copied; the acker settles it afterwards.
                    let (subject, message, acker) = d.into_parts();
                    let item = match message {
                        Err(failure) => Err(InboxError::Undecodable(failure)),
                        Ok(env) => match shared.subjects.route(&subject) {
                            Some(Route::Inbox { from, .. }) if check_sender && from != env.from => {
                                Err(InboxError::SenderMismatch {
                                    subject: subject.to_string(),
                                    from: env.from,
                                })
                            }
                            _ => Ok(env),
                        },
                    };
                    match item {
                        // A redelivery of what this stream already gave
                        // (its acknowledgement came late, after the server
                        // had put it in a waiting pull): acknowledged, not
                        // given again.
                        Ok(env) if recent.contains(&env.id) => {
                            if let Err(e) = acker.ack().await {
                                tracing::debug!(error = %e, "acknowledging a redelivered principal message failed");
                            }
                        }
                        Ok(env) => {
                            recent.insert(env.id.clone());
                            tracing::trace!(target: super::STEPS, step = "received", msg_id = %env.id, subject = %subject);
                            return Some((Ok(env), (deliveries, Some(acker), shared, recent)));
                        }
                        Err(refused) => {
                            if let Err(e) = acker.term().await {
                                tracing::warn!(error = %e, "terminating a refused principal message failed");
                            }
                            return Some((Err(refused), (deliveries, None, shared, recent)));
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    /// The principal's inbox consumer: what the patterns' handlers route to
    /// it (results, escalations, …).
    fn inbox_consumer(&self) -> ConsumerConfig {
        let k = &self.kernel;
        let mut all = k.role_consumers(self.name());
        let inbox = super::consumers::consumer_name(INBOX, k.org(), self.name());
        match all.iter().position(|c| c.name == inbox) {
            Some(i) => all.swap_remove(i),
            None => ConsumerConfig::new(inbox, k.subjects.inbox_any(self.name())),
        }
    }
}

/// The ids of the last [`Recent::CAPACITY`] messages a principal stream
/// gave, to pass over their redeliveries.
#[derive(Debug, Default)]
struct Recent {
    order: std::collections::VecDeque<MessageId>,
    ids: std::collections::HashSet<MessageId>,
}

impl Recent {
    const CAPACITY: usize = 1024;

    fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: MessageId) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }
}
