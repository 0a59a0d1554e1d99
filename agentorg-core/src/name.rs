//! Validated name tokens: org, role, consumer and event-segment names.
//!
//! Every name that ends up inside a subject is a [`Name`]: 1 to 64 characters
//! from lowercase ASCII letters, digits, `-` and `_`. A role called `a.b`,
//! `*` or `>` would let someone subscribe across agents by naming alone, so
//! such names are refused at the edge, with an error that names them.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest name accepted, in bytes (all accepted characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameErrorReason {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[a-z0-9_-]`.
    InvalidChar {
        /// The first offending character.
        ch: char,
    },
}

impl fmt::Display for NameErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong { len } => write!(f, "it is {len} bytes long (at most {MAX_NAME_LEN})"),
            Self::InvalidChar { ch } => write!(
                f,
                "it contains {ch:?} (allowed: lowercase letters, digits, '-' and '_')"
            ),
        }
    }
}

/// A name was refused; the error names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason}")]
pub struct NameError {
    /// The refused name, as given.
    pub name: String,
    /// Why it was refused.
    pub reason: NameErrorReason,
}

/// A validated name token (`[a-z0-9_-]{1,64}`), cheap to clone.
///
/// ```
/// use agentorg_core::Name;
///
/// let cto: Name = "cto".parse().unwrap();
/// assert_eq!(cto.as_str(), "cto");
/// for bad in ["a.b", "*", ">", "", "CTO"] {
///     assert!(Name::new(bad).is_err(), "{bad} must be refused");
/// }
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

impl Name {
    /// Validates `name` and wraps it.
    pub fn new(name: impl AsRef<str>) -> Result<Self, NameError> {
        let name = name.as_ref();
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `name` against the token rules without allocating.
pub fn validate(name: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(err(NameErrorReason::Empty));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err(NameErrorReason::TooLong { len: name.len() }));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(err(NameErrorReason::InvalidChar { ch }));
    }
    Ok(())
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&String> for Name {
    type Error = NameError;
    fn try_from(s: &String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<&Name> for Name {
    fn from(n: &Name) -> Self {
        n.clone()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Name::new(&*s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_tokens() {
        for ok in ["a", "cto", "back-end", "role_2", &"x".repeat(64)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_and_names() {
        let e = Name::new("a.b").unwrap_err();
        assert_eq!(e.name, "a.b");
        assert_eq!(e.reason, NameErrorReason::InvalidChar { ch: '.' });
        assert!(e.to_string().contains("\"a.b\""));
        assert_eq!(Name::new("").unwrap_err().reason, NameErrorReason::Empty);
        assert_eq!(
            Name::new("x".repeat(65)).unwrap_err().reason,
            NameErrorReason::TooLong { len: 65 }
        );
        for bad in ["*", ">", "A", "a b", "é"] {
            assert!(Name::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_validates() {
        let n: Name = serde_json::from_str("\"cso\"").unwrap();
        assert_eq!(n, "cso");
        assert!(serde_json::from_str::<Name>("\"a.b\"").is_err());
    }
}
