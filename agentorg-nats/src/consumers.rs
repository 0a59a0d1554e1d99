//! Durable consumers on the org's streams: finding them, creating them with
//! their start position, and keeping an existing one's.

use std::sync::PoisonError;

use agentorg_core::codec::Codec;
use agentorg_core::transport::{ConsumerConfig, DeliverFrom, TransportError};
use agentorg_core::Name;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::{self, consumer};
use serde_json::json;

use crate::error::Error;
use crate::layout::StreamKind;
use crate::transport::{Inner, META_MAX_MESSAGE_BYTES};

impl Inner {
    /// Creates the durable consumer, or checks (and updates) an existing
    /// one of that name: see `Transport::ensure_consumer`.
    pub(crate) async fn ensure_consumer(
        &self,
        config: &ConsumerConfig,
    ) -> Result<(), TransportError> {
        config.validate()?;
        let kind = self.layout.stream_of_filters(&config.filters)?;
        let info = match self.consumer_info(kind, &config.name).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                match self
                    .create_consumer(kind, config, deliver_policy(config)?)
                    .await
                {
                    Ok(()) => {
                        self.remember(&config.name, kind);
                        return Ok(());
                    }
                    // Another process may have created it meanwhile, with
                    // another start position the server refuses to change:
                    // then it is an existing consumer like any other.
                    Err(e) => match self.consumer_info(kind, &config.name).await {
                        Ok(info) => info,
                        Err(_) => return Err(e.into()),
                    },
                }
            }
            Err(e) => return Err(e.into()),
        };
        let mut want: Vec<String> = config
            .filters
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        want.sort();
        // Other filters are updated in place (the server keeps the
        // consumer's position). The start position is not compared: it
        // applies at creation and the server cannot change it, so an
        // existing consumer keeps its own (and its delivered and
        // acknowledged state).
        let have = filters_of(&info.config);
        if have != want {
            tracing::info!(consumer = %config.name, old = ?have, new = ?want, "consumer filters changed");
        }
        let same = have == want
            && info.config.ack_wait == config.ack_wait
            && info.config.max_ack_pending
                == i64::try_from(config.max_ack_pending).unwrap_or(i64::MAX)
            && max_message_bytes(&info) == config.max_message_bytes;
        if !same {
            self.create_consumer(kind, config, info.config.deliver_policy)
                .await?;
        }
        self.remember(&config.name, kind);
        Ok(())
    }

    pub(crate) async fn consumer_info(
        &self,
        kind: StreamKind,
        name: &Name,
    ) -> Result<consumer::Info, Error> {
        let stream = self.stream_name(kind);
        self.api(
            || format!("consumer `{name}` on {stream}"),
            format!("CONSUMER.INFO.{stream}.{name}"),
            &json!({}),
        )
        .await
    }

    pub(crate) fn remember(&self, name: &Name, kind: StreamKind) {
        self.located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), kind);
    }

    pub(crate) fn forget(&self, name: &Name) {
        self.located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// Finds a consumer: on the stream it was last seen on, else on each
    /// stream in turn. A stream the user may not ask about counts as "not
    /// there"; if it is nowhere and some stream refused, the answer is
    /// `Forbidden`, else `NotFound`.
    pub(crate) async fn locate(&self, name: &Name) -> Result<(StreamKind, consumer::Info), Error> {
        let known = self
            .located
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied();
        let order = known
            .into_iter()
            .chain(StreamKind::ALL.into_iter().filter(|k| Some(*k) != known));
        let mut refused = None;
        for kind in order {
            match self.consumer_info(kind, name).await {
                Ok(info) => {
                    self.remember(name, kind);
                    return Ok((kind, info));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e @ Error::Forbidden { .. }) => refused = Some(e),
                Err(e) => return Err(e),
            }
        }
        self.forget(name);
        Err(refused.unwrap_or_else(|| Error::NotFound {
            what: format!("consumer `{name}`"),
        }))
    }

    /// The pull consumer for `config`, starting at `deliver_policy` (the
    /// wanted one for a new consumer, the existing one for an update: the
    /// server cannot change it).
    fn pull_config(&self, config: &ConsumerConfig, deliver_policy: DeliverPolicy) -> pull::Config {
        let filters: Vec<String> = config
            .filters
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        let (filter_subject, filter_subjects) = match filters.as_slice() {
            [one] => (one.clone(), Vec::new()),
            _ => (String::new(), filters),
        };
        pull::Config {
            durable_name: Some(config.name.to_string()),
            description: Some(format!("agentorg org `{}`", self.layout.org())),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // Unlimited: the runtime counts attempts in its claims and ends a
            // message itself (dead letter + term). `max_deliver` would only
            // stop redelivery and leave the message in the stream.
            max_deliver: -1,
            filter_subject,
            filter_subjects,
            replay_policy: ReplayPolicy::Instant,
            max_ack_pending: i64::try_from(config.max_ack_pending).unwrap_or(i64::MAX),
            metadata: [(
                META_MAX_MESSAGE_BYTES.to_owned(),
                config.max_message_bytes.to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    /// Creates the consumer, or updates an existing one of that name; an
    /// update must pass the existing `deliver_policy`.
    async fn create_consumer(
        &self,
        kind: StreamKind,
        config: &ConsumerConfig,
        deliver_policy: DeliverPolicy,
    ) -> Result<(), Error> {
        use async_nats::jetstream::consumer::IntoConsumerConfig as _;
        let stream = self.stream_name(kind);
        let cfg = self
            .pull_config(config, deliver_policy)
            .into_consumer_config();
        // With one filter, the filter is part of the subject, as async-nats
        // and the server's permission checks expect.
        let subject = if cfg.filter_subject.is_empty() {
            format!("CONSUMER.CREATE.{stream}.{}", config.name)
        } else {
            format!(
                "CONSUMER.CREATE.{stream}.{}.{}",
                config.name, cfg.filter_subject
            )
        };
        let _: consumer::Info = self
            .api(
                || format!("create consumer `{}` on {stream}", config.name),
                subject,
                &json!({ "stream_name": stream, "config": cfg }),
            )
            .await?;
        Ok(())
    }
}

/// JetStream's start position for a new consumer.
fn deliver_policy(config: &ConsumerConfig) -> Result<DeliverPolicy, Error> {
    match config.deliver {
        DeliverFrom::All => Ok(DeliverPolicy::All),
        DeliverFrom::New => Ok(DeliverPolicy::New),
        DeliverFrom::Since(t) => {
            // Through nanoseconds, so this holds whichever date type
            // async-nats is built with (`time`, or `chrono` by feature).
            let nanos =
                i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
            let start_time =
                async_nats::datetime::from_nanos(nanos).map_err(|e| Error::Invalid {
                    message: format!(
                        "consumer `{}`: start time {t} is out of range: {e}",
                        config.name
                    ),
                })?;
            Ok(DeliverPolicy::ByStartTime { start_time })
        }
        other => Err(Error::Invalid {
            message: format!(
                "consumer `{}`: start position {other:?} is not supported",
                config.name
            ),
        }),
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. })
        || e.jetstream_code().is_some_and(|c| {
            c == jetstream::ErrorCode::CONSUMER_NOT_FOUND
                || c == jetstream::ErrorCode::STREAM_NOT_FOUND
        })
}

/// The filters of an existing consumer.
fn filters_of(config: &consumer::Config) -> Vec<String> {
    let mut f = if config.filter_subjects.is_empty() {
        vec![config.filter_subject.clone()]
    } else {
        config.filter_subjects.clone()
    };
    f.retain(|s| !s.is_empty());
    f.sort();
    f
}

/// The decode limit a consumer was created with.
pub(crate) fn max_message_bytes(info: &consumer::Info) -> usize {
    info.config
        .metadata
        .get(META_MAX_MESSAGE_BYTES)
        .and_then(|v| v.parse().ok())
        .unwrap_or(Codec::DEFAULT_MAX_BYTES)
}
