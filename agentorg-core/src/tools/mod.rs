//! Tools: the [`ToolHost`] trait and its in-process hosts.

mod grant;

pub use grant::{ToolGrant, ToolGrantError};
