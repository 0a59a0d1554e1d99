//! The envelope every message travels in, its ids and its trace context.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::name::Name;

/// The envelope format this build writes and fully understands.
pub const FORMAT_VERSION: u32 = 1;

/// The longest message id accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A message id: unique, and the dedupe key of the message.
///
/// Ids made here are [ULIDs](https://github.com/ulid/spec): 26 characters that
/// sort by creation time. Ids from the wire are accepted when they are 1 to
/// 128 characters of ASCII letters, digits, `-` and `_` (so they are valid as
/// document ids and broker dedupe keys alike). A task's id is the id of the
/// envelope that carries it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(String);

/// The id of a task: the id of the envelope that delegated it.
pub type TaskId = MessageId;

/// A message id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid message id {id:?}: expected 1 to 128 ASCII letters, digits, '-' or '_', not of the form __x__")]
pub struct MessageIdError {
    /// The refused id.
    pub id: String,
}

impl MessageId {
    /// A new ULID, unique and sortable by creation time.
    #[allow(clippy::new_without_default)] // a default id would be a surprise
    pub fn new() -> Self {
        Self(ulid::Ulid::new().to_string())
    }

    /// Validates an id from elsewhere.
    pub fn parse(id: impl Into<String>) -> Result<Self, MessageIdError> {
        let id = id.into();
        // `__x__` is reserved for document ids in Firestore.
        let reserved = id.len() >= 4 && id.starts_with("__") && id.ends_with("__");
        let ok = !id.is_empty()
            && !reserved
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(id))
        } else {
            Err(MessageIdError { id })
        }
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for MessageId {
    type Err = MessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(s).map_err(serde::de::Error::custom)
    }
}

/// What a message is. Unknown kinds from newer peers are kept as
/// [`Kind::Other`] rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A task delegated to the receiver.
    Task,
    /// Progress on a task, sent to its delegator.
    TaskUpdate,
    /// The outcome of a task, sent to its delegator.
    Result,
    /// An escalation up the chain of command.
    Escalation,
    /// A decision on an escalation, flowing back down the chain.
    Decision,
    /// A choreography event.
    Event,
    /// A message on a declared peer channel.
    Peer,
    /// A meeting turn, proposal or vote.
    Meeting,
    /// A message that exhausted its attempts, on `<org>.deadletter`.
    DeadLetter,
    /// An alert to the principal, on `<org>.alerts`.
    Alert,
    /// A direct message that fits none of the above.
    Message,
    /// A kind this build does not know.
    Other(String),
}

impl Kind {
    /// The wire name of the kind.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Task => "task",
            Self::TaskUpdate => "task_update",
            Self::Result => "result",
            Self::Escalation => "escalation",
            Self::Decision => "decision",
            Self::Event => "event",
            Self::Peer => "peer",
            Self::Meeting => "meeting",
            Self::DeadLetter => "dead_letter",
            Self::Alert => "alert",
            Self::Message => "message",
            Self::Other(s) => s,
        }
    }
}

impl From<&str> for Kind {
    fn from(s: &str) -> Self {
        match s {
            "task" => Self::Task,
            "task_update" => Self::TaskUpdate,
            "result" => Self::Result,
            "escalation" => Self::Escalation,
            "decision" => Self::Decision,
            "event" => Self::Event,
            "peer" => Self::Peer,
            "meeting" => Self::Meeting,
            "dead_letter" => Self::DeadLetter,
            "alert" => Self::Alert,
            "message" => Self::Message,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.as_str().is_empty() {
            return Err(serde::ser::Error::custom("empty kind"));
        }
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom("empty kind"));
        }
        Ok(Kind::from(&*s))
    }
}

/// The envelope of every message: JSON on the wire, versioned by `v`.
///
/// Build one with [`Envelope::new`] and the `with_*` setters:
///
/// ```
/// use agentorg_core::envelope::{Envelope, Kind};
/// use agentorg_core::Name;
/// use serde_json::json;
///
/// let n = |s: &str| Name::new(s).unwrap();
/// let env = Envelope::new(n("genbrain"), n("backend"), Kind::Peer, json!({"type": "api_contract_change"}))
///     .with_to(n("frontend"));
/// assert_eq!(env.v, 1);
/// assert_eq!(env.to.as_ref().unwrap(), "frontend");
/// assert!(env.trace().is_some(), "a new envelope starts a trace");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// Format version ([`FORMAT_VERSION`] when made here).
    pub v: u32,
    /// Unique, sortable id; also the dedupe key.
    pub id: MessageId,
    /// The org the message belongs to.
    pub org: Name,
    /// The sending role.
    pub from: Name,
    /// The receiving role, if the message has one (events and dead letters
    /// have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Name>,
    /// What the message is.
    pub kind: Kind,
    /// The conversation or task this message belongs to (a result carries the
    /// id of its task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<MessageId>,
    /// The message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<MessageId>,
    /// When the envelope was made.
    #[serde(serialize_with = "crate::timefmt::serialize")]
    pub created_at: DateTime<Utc>,
    /// Headers, including the W3C trace context (`traceparent`, `tracestate`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The payload.
    #[serde(default)]
    pub payload: Value,
}

/// The header that carries the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// The header that carries the W3C trace state.
pub const TRACESTATE: &str = "tracestate";

impl Envelope {
    /// A new envelope with a fresh id, the current time and a new trace.
    pub fn new(org: Name, from: Name, kind: Kind, payload: Value) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert(TRACEPARENT.to_owned(), TraceContext::new_root().to_string());
        Self {
            v: FORMAT_VERSION,
            id: MessageId::new(),
            org,
            from,
            to: None,
            kind,
            correlation_id: None,
            causation_id: None,
            created_at: Utc::now(),
            headers,
            payload,
        }
    }

    /// Sets the receiving role.
    pub fn with_to(mut self, to: Name) -> Self {
        self.to = Some(to);
        self
    }

    /// Sets the id (e.g. a task id chosen before the envelope is made).
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation(mut self, id: MessageId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation(mut self, id: MessageId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the creation time.
    pub fn with_created_at(mut self, at: DateTime<Utc>) -> Self {
        self.created_at = at;
        self
    }

    /// Sets a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Continues `parent`'s trace: this envelope's `traceparent` becomes a
    /// child of it (same trace id, new span id), and `tracestate` is copied.
    pub fn with_trace_parent(mut self, parent: &TraceContext, state: Option<&str>) -> Self {
        self.headers
            .insert(TRACEPARENT.to_owned(), parent.child().to_string());
        match state {
            Some(s) => self.headers.insert(TRACESTATE.to_owned(), s.to_owned()),
            None => self.headers.remove(TRACESTATE),
        };
        self
    }

    /// The trace context carried in the `traceparent` header, if valid.
    pub fn trace(&self) -> Option<TraceContext> {
        self.headers.get(TRACEPARENT)?.parse().ok()
    }
}

/// A W3C trace context (`traceparent` version 00).
///
/// ```
/// use agentorg_core::envelope::TraceContext;
///
/// let root = TraceContext::new_root();
/// let child = root.child();
/// assert_eq!(child.trace_id, root.trace_id);
/// assert_ne!(child.span_id, root.span_id);
/// let text = child.to_string();
/// assert_eq!(text.parse::<TraceContext>().unwrap(), child);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The 16-byte trace id (never all zero).
    pub trace_id: u128,
    /// The 8-byte id of the span that sent this context (never zero).
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// A `traceparent` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {0:?}")]
pub struct TraceContextError(pub String);

fn random_u128() -> u128 {
    // 80 random bits in a ULID's low part, plus the time; enough for trace ids
    // and avoids another dependency.
    let hi = u128::from(ulid::Ulid::new()) & ((1u128 << 80) - 1);
    let lo = u128::from(ulid::Ulid::new()) & ((1u128 << 80) - 1);
    ((hi << 48) ^ lo) | 1
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_u128(),
            span_id: Self::new_span_id(),
            flags: 1,
        }
    }

    /// A new random, non-zero span id.
    pub fn new_span_id() -> u64 {
        (random_u128() as u64) | 1
    }

    /// The context of a new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: Self::new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// Writes `v`'s low `out.len()` hex digits into `out`, lowercase.
fn hex_into(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

impl fmt::Display for TraceContext {
    /// `00-<trace id>-<span id>-<flags>`, written into a buffer (this
    /// header is made for every message sent) rather than through `fmt`'s
    /// padding per field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = *b"00-________________________________-________________-__";
        hex_into(&mut buf[3..35], self.trace_id);
        hex_into(&mut buf[36..52], u128::from(self.span_id));
        hex_into(&mut buf[53..55], u128::from(self.flags));
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for TraceContext {
    type Err = TraceContextError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TraceContextError(s.to_owned());
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return Err(err());
        };
        let hex = |t: &str, len: usize| {
            t.len() == len
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2)
            || *version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return Err(err());
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| err())?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| err())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| err())?;
        if trace_id == 0 || span_id == 0 {
            return Err(err());
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let a = MessageId::new();
        let b = MessageId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 26);
        assert!(MessageId::parse("task-2026-0423-CEO-001").is_ok());
        for bad in ["", "a/b", "a.b", "a b", "__x__", &"x".repeat(129)] {
            assert!(MessageId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn traceparent_rejects_garbage() {
        for bad in [
            "",
            "00-0000-00-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        ] {
            assert!(bad.parse::<TraceContext>().is_err(), "{bad}");
        }
        let ok: TraceContext = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap();
        assert_eq!(ok.trace_id_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(ok.span_id_hex(), "b7ad6b7169203331");
    }

    #[test]
    fn traceparent_writes_every_digit() {
        for (trace_id, span_id, flags) in [
            (1, 1, 0),
            (u128::MAX, u64::MAX, 0xff),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, 1),
        ] {
            let t = TraceContext {
                trace_id,
                span_id,
                flags,
            };
            let text = t.to_string();
            assert_eq!(
                text,
                format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}")
            );
            assert_eq!(text.parse::<TraceContext>().unwrap(), t);
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in ["task", "result", "escalation", "dead_letter", "vote"] {
            let kind = Kind::from(k);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
            assert_eq!(kind.as_str(), k);
        }
    }
}
