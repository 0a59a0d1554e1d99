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
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
pub mod chart;
pub mod clock;
pub mod codec;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
#[allow(clippy::panic)] // the suites assert by panicking, like any test
pub mod conformance;
pub mod envelope;
pub mod name;
pub mod runtime;
pub mod store;
pub mod subject;
pub mod tools;
pub mod transport;

pub use chart::{ChartError, OrgChart};
pub use name::{Name, NameError};
