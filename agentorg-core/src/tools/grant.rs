//! Tool grants: which tools a role may see and call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::{Name, NameError};

/// A grant of tools to a role: `server.tool` (one tool) or `server.*` (every
/// tool of one server).
///
/// Tool names are the router's qualified names, `<server>.<tool>`; the server
/// part is a [`Name`], the tool part is whatever the server calls it (MCP tool
/// names may themselves contain dots, so only the first dot separates).
///
/// ```
/// use agentorg_core::tools::ToolGrant;
///
/// let all_git: ToolGrant = "git.*".parse().unwrap();
/// assert!(all_git.allows("git.commit"));
/// assert!(!all_git.allows("gmail.send"));
/// let one: ToolGrant = "time.get_current_time".parse().unwrap();
/// assert!(one.allows("time.get_current_time"));
/// assert!(!one.allows("time.convert_time"));
/// assert!("git".parse::<ToolGrant>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ToolGrant {
    server: Name,
    tool: Option<String>,
}

/// A tool grant could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolGrantError {
    /// The grant is not of the form `server.tool` or `server.*`.
    #[error("invalid tool grant {grant:?}: expected `server.tool` or `server.*`")]
    Syntax {
        /// The grant as given.
        grant: String,
    },
    /// The server part is not a valid name.
    #[error("invalid tool grant {grant:?}: {source}")]
    Server {
        /// The grant as given.
        grant: String,
        /// Why the server name was refused.
        #[source]
        source: NameError,
    },
}

impl ToolGrant {
    /// A grant of every tool of `server`.
    pub fn server(server: Name) -> Self {
        Self { server, tool: None }
    }

    /// A grant of one tool of `server`.
    pub fn tool(server: Name, tool: impl Into<String>) -> Self {
        Self {
            server,
            tool: Some(tool.into()),
        }
    }

    /// The server this grant is about.
    pub fn server_name(&self) -> &Name {
        &self.server
    }

    /// The one tool granted, or `None` when the grant covers the whole server.
    pub fn tool_name(&self) -> Option<&str> {
        self.tool.as_deref()
    }

    /// Whether this grant covers the qualified tool name `server.tool`.
    pub fn allows(&self, qualified: &str) -> bool {
        match qualified.split_once('.') {
            Some((server, tool)) if server == self.server.as_str() && !tool.is_empty() => {
                self.tool.as_deref().is_none_or(|t| t == tool)
            }
            _ => false,
        }
    }
}

impl FromStr for ToolGrant {
    type Err = ToolGrantError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ToolGrantError::Syntax {
            grant: s.to_owned(),
        };
        let (server, tool) = s.split_once('.').ok_or_else(syntax)?;
        if tool.is_empty() || tool.chars().any(char::is_whitespace) {
            return Err(syntax());
        }
        let server = Name::new(server).map_err(|source| ToolGrantError::Server {
            grant: s.to_owned(),
            source,
        })?;
        Ok(if tool == "*" {
            Self::server(server)
        } else {
            Self::tool(server, tool)
        })
    }
}

impl fmt::Display for ToolGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.server, self.tool.as_deref().unwrap_or("*"))
    }
}

impl fmt::Debug for ToolGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ToolGrant({self})")
    }
}

impl Serialize for ToolGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ToolGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
