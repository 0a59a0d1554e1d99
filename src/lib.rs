//! placeholder
pub use agentorg_core::*;
