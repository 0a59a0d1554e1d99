//! agentorg-core (crate docs are written last).
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::future_not_send,
    clippy::clone_on_ref_ptr
)]
#![deny(rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod codec;
pub mod envelope;
pub mod name;
pub mod store;
pub mod subject;
pub mod tools;
pub mod transport;

pub use name::{Name, NameError};
