//! Subjects: the one place that builds and parses every subject the org uses.
//!
//! ```text
//! <org>.agent.<role>.inbox.<from>   tasks, results and direct messages to a role, by sender
//! <org>.events.<name…>              choreography events
//! <org>.peer.<a>.<b>                declared peer channels
//! <org>.meeting.<id>.<…>            meeting turns and votes
//! <org>.rpc.<role>                  core request/reply (never captured by a stream)
//! <org>.deadletter                  messages that exhausted their attempts
//! <org>.alerts                      alerts to the principal
//! ```
//!
//! Every variable token is a [`Name`], so no role, org or event name can
//! smuggle in a `.`, `*` or `>`. The sender is part of the inbox subject so a
//! broker can enforce it, and the runtime refuses an envelope whose `from`
//! differs from the sender its subject names.
//!
//! ```
//! use agentorg_core::subject::{Route, Subjects};
//! use agentorg_core::Name;
//!
//! let n = |s: &str| Name::new(s).unwrap();
//! let s = Subjects::new(n("genbrain"));
//! let inbox = s.inbox(&n("backend"), &n("cto"));
//! assert_eq!(inbox.as_str(), "genbrain.agent.backend.inbox.cto");
//! assert!(s.inbox_any(&n("backend")).matches(&inbox));
//! assert_eq!(
//!     s.route(&inbox),
//!     Some(Route::Inbox { role: n("backend"), from: n("cto") })
//! );
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::Name;

/// The longest subject accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 512;

/// A subject or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subject {subject:?}: {reason}")]
pub struct SubjectError {
    /// The refused text.
    pub subject: String,
    /// Why.
    pub reason: &'static str,
}

fn check_tokens(s: &str, pattern: bool) -> Result<(), SubjectError> {
    let err = |reason| {
        Err(SubjectError {
            subject: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return err("it is empty");
    }
    if s.len() > MAX_SUBJECT_LEN {
        return err("it is longer than 512 bytes");
    }
    let count = s.split('.').count();
    for (i, tok) in s.split('.').enumerate() {
        if tok.is_empty() {
            return err("it has an empty token");
        }
        if tok.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return err("it contains whitespace or control characters");
        }
        let wild = tok == "*" || tok == ">";
        if !pattern && (tok.contains('*') || tok.contains('>')) {
            return err("a subject may not contain wildcards");
        }
        if pattern && !wild && (tok.contains('*') || tok.contains('>')) {
            return err("a wildcard must be a whole token");
        }
        if pattern && tok == ">" && i + 1 != count {
            return err("'>' must be the last token");
        }
    }
    Ok(())
}

/// A concrete subject (no wildcards), e.g. `genbrain.agent.cto.inbox.ceo`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// Validates a subject: dot-separated non-empty tokens without whitespace
    /// or wildcards, at most [`MAX_SUBJECT_LEN`] bytes.
    pub fn parse(s: impl Into<String>) -> Result<Self, SubjectError> {
        let s = s.into();
        check_tokens(&s, false)?;
        Ok(Self(s))
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated tokens.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl TryFrom<String> for Subject {
    type Error = SubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> Self {
        s.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A subject pattern: tokens, `*` (exactly one token) and a final `>` (one or
/// more tokens), as NATS defines them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectPattern(String);

impl SubjectPattern {
    /// Validates a pattern: like [`Subject::parse`], but `*` may stand for any
    /// whole token and `>` for the whole tail.
    pub fn parse(s: impl Into<String>) -> Result<Self, SubjectError> {
        let s = s.into();
        check_tokens(&s, true)?;
        Ok(Self(s))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `subject` matches this pattern.
    pub fn matches(&self, subject: &Subject) -> bool {
        matches(&self.0, &subject.0)
    }

    /// Whether the pattern has no wildcard (it then matches exactly one subject).
    pub fn is_literal(&self) -> bool {
        !self.0.split('.').any(|t| t == "*" || t == ">")
    }
}

impl From<Subject> for SubjectPattern {
    fn from(s: Subject) -> Self {
        Self(s.0)
    }
}

impl From<&Subject> for SubjectPattern {
    fn from(s: &Subject) -> Self {
        Self(s.0.clone())
    }
}

impl TryFrom<String> for SubjectPattern {
    type Error = SubjectError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<SubjectPattern> for String {
    fn from(s: SubjectPattern) -> Self {
        s.0
    }
}

impl fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Token-wise NATS matching of an already validated pattern and subject.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        if p == ">" {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// What a subject of the org scheme addresses, as parsed by [`Subjects::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `<org>.agent.<role>.inbox.<from>`
    Inbox {
        /// The receiving role.
        role: Name,
        /// The sender named by the subject.
        from: Name,
    },
    /// `<org>.agent.<role>.<channel>.<from>`, a channel other than the
    /// inbox that a pattern keeps per role (the saga pattern's `saga`).
    Channel {
        /// The receiving role.
        role: Name,
        /// The channel's name.
        channel: Name,
        /// The sender named by the subject.
        from: Name,
    },
    /// `<org>.events.<name…>`
    Event {
        /// The event name's tokens.
        name: Vec<Name>,
    },
    /// `<org>.peer.<a>.<b>`
    Peer {
        /// The sender.
        from: Name,
        /// The receiver.
        to: Name,
    },
    /// `<org>.meeting.<id>.<…>`
    Meeting {
        /// The meeting id.
        id: Name,
        /// The remaining tokens.
        rest: Vec<Name>,
    },
    /// `<org>.rpc.<role>`
    Rpc {
        /// The role serving requests.
        role: Name,
    },
    /// `<org>.deadletter`
    DeadLetter,
    /// `<org>.alerts`
    Alerts,
}

impl Route {
    /// The role a subject of this route addresses, if it names one (an
    /// inbox, the receiving end of a peer channel, a request subject).
    pub fn receiver(&self) -> Option<&Name> {
        match self {
            Self::Inbox { role, .. } | Self::Channel { role, .. } | Self::Rpc { role } => {
                Some(role)
            }
            Self::Peer { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The sender a subject of this route names, if any (an inbox, a peer
    /// channel): a broker can enforce it, and the runtime refuses an
    /// envelope whose `from` differs.
    pub fn sender(&self) -> Option<&Name> {
        match self {
            Self::Inbox { from, .. } | Self::Channel { from, .. } | Self::Peer { from, .. } => {
                Some(from)
            }
            _ => None,
        }
    }
}

/// Builds every subject and subject pattern of one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    org: Name,
}

impl Subjects {
    /// The subject scheme of `org`.
    pub fn new(org: Name) -> Self {
        Self { org }
    }

    /// The org these subjects belong to.
    pub fn org(&self) -> &Name {
        &self.org
    }

    fn join(&self, parts: &[&str]) -> String {
        let mut s = String::with_capacity(
            self.org.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>(),
        );
        s.push_str(&self.org);
        for p in parts {
            s.push('.');
            s.push_str(p);
        }
        s
    }

    // All tokens are validated names or fixed words, so the result is valid by
    // construction.
    fn subject(&self, parts: &[&str]) -> Subject {
        Subject(self.join(parts))
    }

    fn pattern(&self, parts: &[&str]) -> SubjectPattern {
        SubjectPattern(self.join(parts))
    }

    /// `<org>.agent.<role>.inbox.<from>`: a message from `from` to `role`.
    pub fn inbox(&self, role: &Name, from: &Name) -> Subject {
        self.subject(&["agent", role, "inbox", from])
    }

    /// `<org>.agent.<role>.inbox.*`: everything sent to `role`.
    pub fn inbox_any(&self, role: &Name) -> SubjectPattern {
        self.pattern(&["agent", role, "inbox", "*"])
    }

    /// `<org>.agent.<role>.<channel>.<from>`: a message from `from` on
    /// `role`'s channel `channel` (not `inbox`), which a pattern keeps.
    pub fn channel(&self, role: &Name, channel: &Name, from: &Name) -> Subject {
        self.subject(&["agent", role, channel, from])
    }

    /// `<org>.agent.<role>.<channel>.*`: everything sent on `role`'s
    /// channel `channel`.
    pub fn channel_any(&self, role: &Name, channel: &Name) -> SubjectPattern {
        self.pattern(&["agent", role, channel, "*"])
    }

    /// `<org>.agent.>`: every inbox of the org.
    pub fn all_inboxes(&self) -> SubjectPattern {
        self.pattern(&["agent", ">"])
    }

    /// `<org>.events.<name…>`: a choreography event (e.g. `deploy.complete`).
    pub fn event(&self, name: &[Name]) -> Subject {
        let mut parts = vec!["events"];
        parts.extend(name.iter().map(Name::as_str));
        self.subject(&parts)
    }

    /// `<org>.events.<name>` for a dotted event name (`deploy.complete`).
    pub fn event_named(&self, name: &str) -> Result<Subject, SubjectError> {
        let full = format!("{}.events.{name}", self.org);
        if name.split('.').any(|t| crate::name::validate(t).is_err()) {
            return Err(SubjectError {
                subject: full,
                reason: "event tokens must be names",
            });
        }
        Subject::parse(full)
    }

    /// `<org>.events.>`: every event of the org.
    pub fn all_events(&self) -> SubjectPattern {
        self.pattern(&["events", ">"])
    }

    /// A pattern over events: each element is a name, `*` or (last) `>`.
    pub fn events_matching(&self, pattern: &str) -> Result<SubjectPattern, SubjectError> {
        let full = format!("{}.events.{pattern}", self.org);
        let parsed = SubjectPattern::parse(full)?;
        for tok in pattern.split('.') {
            if tok != "*" && tok != ">" && crate::name::validate(tok).is_err() {
                return Err(SubjectError {
                    subject: parsed.0,
                    reason: "event tokens must be names, '*' or '>'",
                });
            }
        }
        Ok(parsed)
    }

    /// `<org>.peer.<from>.<to>`: a message on a peer channel.
    pub fn peer(&self, from: &Name, to: &Name) -> Subject {
        self.subject(&["peer", from, to])
    }

    /// `<org>.peer.*.<to>`: everything peers send to `to`.
    pub fn peer_any(&self, to: &Name) -> SubjectPattern {
        self.pattern(&["peer", "*", to])
    }

    /// `<org>.meeting.<id>.<rest…>`: meeting turns and votes.
    pub fn meeting(&self, id: &Name, rest: &[Name]) -> Subject {
        let mut parts = vec!["meeting", id.as_str()];
        parts.extend(rest.iter().map(Name::as_str));
        self.subject(&parts)
    }

    /// `<org>.meeting.<id>.>`: everything of one meeting.
    pub fn meeting_any(&self, id: &Name) -> SubjectPattern {
        self.pattern(&["meeting", id, ">"])
    }

    /// `<org>.rpc.<role>`: core request/reply, never captured by a stream.
    pub fn rpc(&self, role: &Name) -> Subject {
        self.subject(&["rpc", role])
    }

    /// `<org>.deadletter`.
    pub fn deadletter(&self) -> Subject {
        self.subject(&["deadletter"])
    }

    /// `<org>.alerts`.
    pub fn alerts(&self) -> Subject {
        self.subject(&["alerts"])
    }

    /// `<org>.>`: everything of the org.
    pub fn all(&self) -> SubjectPattern {
        self.pattern(&[">"])
    }

    /// Patterns of the subjects that durable streams capture: everything but
    /// `<org>.rpc.>` (a core request to a captured subject would get the
    /// stream's acknowledgement as its reply).
    pub fn durable(&self) -> Vec<SubjectPattern> {
        vec![
            self.all_inboxes(),
            self.all_events(),
            self.pattern(&["peer", ">"]),
            self.pattern(&["meeting", ">"]),
            self.pattern(&["deadletter"]),
            self.pattern(&["alerts"]),
        ]
    }

    /// Parses a subject of this org's scheme; `None` for anything else
    /// (another org, an unknown shape, or a token that is not a [`Name`]).
    pub fn route(&self, subject: &Subject) -> Option<Route> {
        let mut t = subject.tokens();
        if t.next()? != self.org.as_str() {
            return None;
        }
        let names = |it: &mut dyn Iterator<Item = &str>| -> Option<Vec<Name>> {
            it.map(|s| Name::new(s).ok()).collect()
        };
        let route = match t.next()? {
            "agent" => {
                let role = Name::new(t.next()?).ok()?;
                let channel = t.next()?;
                let from = Name::new(t.next()?).ok()?;
                if channel == "inbox" {
                    Route::Inbox { role, from }
                } else {
                    Route::Channel {
                        role,
                        channel: Name::new(channel).ok()?,
                        from,
                    }
                }
            }
            "events" => {
                let name = names(&mut t)?;
                if name.is_empty() {
                    return None;
                }
                return Some(Route::Event { name });
            }
            "peer" => Route::Peer {
                from: Name::new(t.next()?).ok()?,
                to: Name::new(t.next()?).ok()?,
            },
            "meeting" => {
                let id = Name::new(t.next()?).ok()?;
                return Some(Route::Meeting {
                    id,
                    rest: names(&mut t)?,
                });
            }
            "rpc" => Route::Rpc {
                role: Name::new(t.next()?).ok()?,
            },
            "deadletter" => Route::DeadLetter,
            "alerts" => Route::Alerts,
            _ => return None,
        };
        if t.next().is_some() {
            return None;
        }
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn builds_and_routes_every_shape() {
        let s = Subjects::new(n("genbrain"));
        let cases = [
            (
                s.inbox(&n("cto"), &n("ceo")),
                Route::Inbox {
                    role: n("cto"),
                    from: n("ceo"),
                },
            ),
            (
                s.channel(&n("devops"), &n("saga"), &n("cto")),
                Route::Channel {
                    role: n("devops"),
                    channel: n("saga"),
                    from: n("cto"),
                },
            ),
            (
                s.event(&[n("deploy"), n("complete")]),
                Route::Event {
                    name: vec![n("deploy"), n("complete")],
                },
            ),
            (
                s.peer(&n("backend"), &n("frontend")),
                Route::Peer {
                    from: n("backend"),
                    to: n("frontend"),
                },
            ),
            (
                s.meeting(&n("m1"), &[n("turn")]),
                Route::Meeting {
                    id: n("m1"),
                    rest: vec![n("turn")],
                },
            ),
            (s.rpc(&n("cto")), Route::Rpc { role: n("cto") }),
            (s.deadletter(), Route::DeadLetter),
            (s.alerts(), Route::Alerts),
        ];
        for (subject, route) in cases {
            assert_eq!(s.route(&subject), Some(route), "{subject}");
            assert!(s.all().matches(&subject));
            let durable = s.durable().iter().any(|p| p.matches(&subject));
            assert_eq!(durable, !subject.as_str().contains(".rpc."), "{subject}");
        }
        let other = Subjects::new(n("other"));
        assert_eq!(other.route(&s.alerts()), None);
        assert_eq!(
            s.route(&Subject::parse("genbrain.agent.cto.inbox.ceo.extra").unwrap()),
            None
        );
        assert_eq!(
            s.route(&Subject::parse("genbrain.agent.CTO.inbox.ceo").unwrap()),
            None
        );
    }

    #[test]
    fn validates_subjects_and_patterns() {
        for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>"] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["a.>.b", "a.b*", "a.>x", ""] {
            assert!(SubjectPattern::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["a.*", "a.>", "*", ">", "a.*.c.>"] {
            assert!(SubjectPattern::parse(good).is_ok(), "{good:?}");
        }
        let s = Subjects::new(n("o"));
        assert!(s.events_matching("deploy.*").is_ok());
        assert!(s.events_matching("deploy.A").is_err());
    }

    #[test]
    fn wildcard_semantics() {
        let m = |p: &str, s: &str| matches(p, s);
        assert!(m("a.*.c", "a.b.c"));
        assert!(!m("a.*.c", "a.b.b.c"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(m(">", "x"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
    }
}
