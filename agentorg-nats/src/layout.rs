//! The streams of one org: names, subjects, retention and limits.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use agentorg_core::subject::{Subject, SubjectPattern, Subjects};
use agentorg_core::Name;
use async_nats::jetstream::stream;

use crate::error::Error;

/// One of the three streams of an org. See the [crate docs](crate#stream-layout)
/// for what each holds and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StreamKind {
    /// `<org>.agent.>` and `<org>.peer.>`: work-queue retention.
    Inbox,
    /// `<org>.events.>` and `<org>.meeting.>`: limits retention.
    Events,
    /// `<org>.deadletter` and `<org>.alerts`: limits retention, bounded.
    DeadLetter,
}

impl StreamKind {
    /// All three, in the order consumers are looked up.
    pub const ALL: [StreamKind; 3] = [
        StreamKind::Inbox,
        StreamKind::Events,
        StreamKind::DeadLetter,
    ];

    fn suffix(self) -> &'static str {
        match self {
            StreamKind::Inbox => "INBOX",
            StreamKind::Events => "EVENTS",
            StreamKind::DeadLetter => "DEADLETTER",
        }
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Size and age limits of one stream. A full stream refuses new messages
/// (`discard: new`; the publish fails with the retryable
/// [`TransportError::Full`](agentorg_core::transport::TransportError::Full))
/// rather than forgetting old ones; `max_age` (zero: none) does drop messages
/// older than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamLimits {
    /// The most bytes stored.
    pub max_bytes: u64,
    /// The most messages stored.
    pub max_messages: u64,
    /// How long a message is kept; zero keeps it until it is consumed (work
    /// queue) or a size limit needs room (never, with `discard: new`).
    pub max_age: Duration,
}

impl StreamLimits {
    /// Limits of `max_bytes` and `max_messages`, no age limit.
    pub fn new(max_bytes: u64, max_messages: u64) -> Self {
        Self {
            max_bytes,
            max_messages,
            max_age: Duration::ZERO,
        }
    }

    /// Sets the age limit.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The defaults of a stream kind: inboxes 1 GiB / 1,000,000 messages with
    /// no age limit (an unread task never expires); events 1 GiB /
    /// 1,000,000 messages for 7 days; dead letters and alerts 256 MiB /
    /// 100,000 messages for 30 days.
    pub fn default_for(kind: StreamKind) -> Self {
        const GIB: u64 = 1 << 30;
        match kind {
            StreamKind::Inbox => Self::new(GIB, 1_000_000),
            StreamKind::Events => {
                Self::new(GIB, 1_000_000).with_max_age(Duration::from_secs(7 * 24 * 3600))
            }
            StreamKind::DeadLetter => {
                Self::new(GIB / 4, 100_000).with_max_age(Duration::from_secs(30 * 24 * 3600))
            }
        }
    }
}

/// The streams of one org, as this transport creates and uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamLayout {
    org: Name,
    replicas: usize,
    duplicate_window: Duration,
    limits: [StreamLimits; 3],
    /// The subjects of each stream, in `StreamKind::ALL` order.
    subjects: [Vec<SubjectPattern>; 3],
}

impl StreamLayout {
    pub(crate) fn new(
        org: Name,
        replicas: usize,
        duplicate_window: Duration,
        limits: [StreamLimits; 3],
    ) -> Self {
        let s = Subjects::new(org.clone());
        let p = |text: String| SubjectPattern::parse(text).ok();
        // Built from validated names and fixed words, so they parse.
        let subjects = [
            vec![Some(s.all_inboxes()), p(format!("{org}.peer.>"))],
            vec![Some(s.all_events()), p(format!("{org}.meeting.>"))],
            vec![
                Some(SubjectPattern::from(s.deadletter())),
                Some(SubjectPattern::from(s.alerts())),
            ],
        ]
        .map(|v| v.into_iter().flatten().collect());
        Self {
            org,
            replicas,
            duplicate_window,
            limits,
            subjects,
        }
    }

    /// The org.
    pub fn org(&self) -> &Name {
        &self.org
    }

    /// The stream's name: `AGENTORG_<ORG>_<KIND>`, the org upper-cased
    /// (org names are lower-case, so this is one-to-one).
    pub fn stream_name(&self, kind: StreamKind) -> String {
        format!(
            "AGENTORG_{}_{}",
            self.org.as_str().to_ascii_uppercase(),
            kind.suffix()
        )
    }

    /// The subjects a stream captures.
    pub fn subjects(&self, kind: StreamKind) -> &[SubjectPattern] {
        &self.subjects[index(kind)]
    }

    /// The limits of a stream.
    pub fn limits(&self, kind: StreamKind) -> StreamLimits {
        self.limits[index(kind)]
    }

    /// The replicas of every stream (1, or 3 for a cluster).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The stream that captures `subject`, if any (`<org>.rpc.>` and other
    /// orgs' subjects are captured by none).
    pub fn stream_of(&self, subject: &Subject) -> Option<StreamKind> {
        StreamKind::ALL
            .into_iter()
            .find(|k| self.subjects(*k).iter().any(|p| p.matches(subject)))
    }

    /// The one stream whose subjects contain every filter.
    pub(crate) fn stream_of_filters(
        &self,
        filters: &[SubjectPattern],
    ) -> Result<StreamKind, Error> {
        let mut kinds = BTreeSet::new();
        for f in filters {
            let Some(kind) = StreamKind::ALL.into_iter().find(|k| {
                self.subjects(*k)
                    .iter()
                    .any(|p| within(f.as_str(), p.as_str()))
            }) else {
                return Err(Error::Invalid {
                    message: format!(
                        "filter {f} is not within the durable subjects of org `{}`",
                        self.org
                    ),
                });
            };
            kinds.insert(kind);
        }
        match (kinds.len(), kinds.first()) {
            (1, Some(kind)) => Ok(*kind),
            _ => Err(Error::Invalid {
                message: format!(
                    "filters {filters:?} span streams {kinds:?}: one consumer reads one stream"
                ),
            }),
        }
    }

    /// The configuration this transport gives a stream.
    pub(crate) fn stream_config(&self, kind: StreamKind) -> stream::Config {
        let limits = self.limits(kind);
        let retention = match kind {
            StreamKind::Inbox => stream::RetentionPolicy::WorkQueue,
            StreamKind::Events | StreamKind::DeadLetter => stream::RetentionPolicy::Limits,
        };
        stream::Config {
            name: self.stream_name(kind),
            description: Some(format!("agentorg org `{}`: {}", self.org, describe(kind))),
            subjects: self
                .subjects(kind)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            retention,
            discard: stream::DiscardPolicy::New,
            max_bytes: i64::try_from(limits.max_bytes).unwrap_or(i64::MAX),
            max_messages: i64::try_from(limits.max_messages).unwrap_or(i64::MAX),
            max_age: limits.max_age,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            ..Default::default()
        }
    }

    /// What differs between the stream as it is and as this transport wants
    /// it, ignoring what the server fills in.
    pub(crate) fn differences(&self, kind: StreamKind, have: &stream::Config) -> Vec<&'static str> {
        let want = self.stream_config(kind);
        let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        let mut diff = Vec::new();
        if set(&have.subjects) != set(&want.subjects) {
            diff.push("subjects");
        }
        if have.retention != want.retention {
            diff.push("retention");
        }
        if have.discard != want.discard {
            diff.push("discard");
        }
        if have.max_bytes != want.max_bytes {
            diff.push("max_bytes");
        }
        if have.max_messages != want.max_messages {
            diff.push("max_messages");
        }
        if have.max_age != want.max_age {
            diff.push("max_age");
        }
        if have.num_replicas.max(1) != want.num_replicas.max(1) {
            diff.push("num_replicas");
        }
        if have.duplicate_window != want.duplicate_window {
            diff.push("duplicate_window");
        }
        diff
    }
}

fn describe(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Inbox => "inboxes and peer channels (work queue)",
        StreamKind::Events => "events and meetings",
        StreamKind::DeadLetter => "dead letters and alerts",
    }
}

fn index(kind: StreamKind) -> usize {
    match kind {
        StreamKind::Inbox => 0,
        StreamKind::Events => 1,
        StreamKind::DeadLetter => 2,
    }
}

/// Whether every subject `pattern` matches is matched by `by` (both valid
/// NATS patterns).
pub(crate) fn within(pattern: &str, by: &str) -> bool {
    let a: Vec<&str> = pattern.split('.').collect();
    let b: Vec<&str> = by.split('.').collect();
    for (i, bt) in b.iter().enumerate() {
        if *bt == ">" {
            // `>` takes one or more tokens; `pattern` must have at least one
            // here (a `*` or `>` of its own also takes at least one).
            return a.len() > i;
        }
        let Some(at) = a.get(i) else {
            return false;
        };
        if *at == ">" {
            return false;
        }
        if *bt == "*" {
            continue;
        }
        if *at == "*" || at != bt {
            return false;
        }
    }
    a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> StreamLayout {
        StreamLayout::new(
            Name::new("gen-brain").unwrap(),
            1,
            Duration::from_secs(120),
            StreamKind::ALL.map(StreamLimits::default_for),
        )
    }

    #[test]
    fn containment() {
        assert!(within("o.events.x.>", "o.events.>"));
        assert!(within("o.events.*.done", "o.events.>"));
        assert!(within("o.agent.a.inbox.*", "o.agent.>"));
        assert!(within("o.alerts", "o.alerts"));
        assert!(within("o.a.b", "o.*.b"));
        assert!(!within("o.*.b", "o.a.b"));
        assert!(!within("o.>", "o.events.>"));
        assert!(!within("o.events", "o.events.>"));
        assert!(!within("o.alerts.x", "o.alerts"));
        assert!(!within("o.a", "o.a.b"));
        assert!(within("o.>", "o.>"));
        assert!(within("o.*", "o.>"));
    }

    #[test]
    fn streams_cover_exactly_the_durable_subjects() {
        let l = layout();
        let s = Subjects::new(l.org().clone());
        let mut ours: Vec<String> = StreamKind::ALL
            .iter()
            .flat_map(|k| l.subjects(*k).iter().map(|p| p.to_string()))
            .collect();
        let mut durable: Vec<String> = s.durable().iter().map(|p| p.to_string()).collect();
        ours.sort();
        durable.sort();
        assert_eq!(ours, durable);
        assert_eq!(l.stream_name(StreamKind::Inbox), "AGENTORG_GEN-BRAIN_INBOX");
        let n = |v: &str| Name::new(v).unwrap();
        assert_eq!(l.stream_of(&s.rpc(&n("cto"))), None);
        assert_eq!(l.stream_of(&s.alerts()), Some(StreamKind::DeadLetter));
        assert_eq!(
            l.stream_of(&s.inbox(&n("cto"), &n("ceo"))),
            Some(StreamKind::Inbox)
        );
    }

    #[test]
    fn filters_pick_one_stream() {
        let l = layout();
        let p = |v: &str| SubjectPattern::parse(v).unwrap();
        assert_eq!(
            l.stream_of_filters(&[p("gen-brain.events.x.>"), p("gen-brain.meeting.m.>")])
                .unwrap(),
            StreamKind::Events
        );
        assert!(l
            .stream_of_filters(&[p("gen-brain.events.>"), p("gen-brain.alerts")])
            .is_err());
        assert!(l.stream_of_filters(&[p("gen-brain.rpc.x")]).is_err());
        assert!(l.stream_of_filters(&[p("gen-brain.>")]).is_err());
        assert!(l.stream_of_filters(&[p("other.events.>")]).is_err());
    }
}
