//! The hierarchy's cases.

mod batches;
mod escalation;
mod recovery;
mod tree;

pub use batches::*;
pub use escalation::*;
pub use recovery::*;
pub use tree::*;
