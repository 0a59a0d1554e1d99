//! Firestore's status codes as [`StoreError`]s.

use std::collections::HashMap;

use agentorg_core::store::{DocKey, Precondition, StoreError, Version};
use firestore::gcloud_sdk::tonic::{Code, Status};

pub(crate) const BACKEND: &str = "firestore";

/// Maps a failed request's status (other than a commit's precondition
/// failures, which [`precondition_failure`] explains).
pub(crate) fn from_status(
    status: Status,
    operation: &str,
    key: Option<&dyn std::fmt::Display>,
) -> StoreError {
    let message = format!("{operation}: {}", status.message());
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StoreError::InvalidInput {
            key: key.map(ToString::to_string),
            message,
        },
        Code::PermissionDenied | Code::Unauthenticated => StoreError::Forbidden {
            message,
            source: Some(Box::new(status)),
        },
        Code::DeadlineExceeded => StoreError::Timeout {
            operation: operation.to_owned(),
        },
        // CANCELLED from the server (not from us: we never cancel a call
        // we still wait for) — e.g. the emulator failing a commit while it
        // drops another client's listener — is transient like UNAVAILABLE.
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            StoreError::Unavailable {
                message,
                source: Some(Box::new(status)),
            }
        }
        _ => StoreError::Other {
            backend: BACKEND,
            source: Box::new(status),
        },
    }
}

/// Whether an idempotent request (a read, a listen) may be sent again after
/// this status: the codes Firestore's client libraries retry reads on.
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

/// Whether a commit failed on a precondition: `AlreadyExists` (must not
/// exist), `NotFound` (must exist) or `FailedPrecondition` (stale update time,
/// or a missing document at a version).
pub(crate) fn is_precondition_status(code: Code) -> bool {
    matches!(
        code,
        Code::AlreadyExists | Code::NotFound | Code::FailedPrecondition
    )
}

/// The first of `writes` whose precondition `current` (each document's
/// version, `None` if missing) does not meet, as the contract's error —
/// `Conflict` when the document exists but must not or is at another version,
/// `NotFound` when it must exist and does not.
pub(crate) fn first_unmet(
    writes: &[(DocKey, Precondition)],
    current: &HashMap<DocKey, Version>,
) -> Option<StoreError> {
    writes.iter().find_map(|(key, pre)| {
        let now = current.get(key);
        match (pre, now) {
            (Precondition::MustNotExist, Some(v)) => Some(StoreError::Conflict {
                key: key.to_string(),
                message: format!("document exists (at {v})"),
            }),
            (Precondition::MustExist | Precondition::Version(_), None) => {
                Some(StoreError::NotFound {
                    key: key.to_string(),
                })
            }
            (Precondition::Version(want), Some(v)) if want != v => Some(StoreError::Conflict {
                key: key.to_string(),
                message: format!("expected {want}, found {v}"),
            }),
            _ => None,
        }
    })
}

/// The error for a commit that failed with precondition status `status` when
/// a re-read finds every precondition met (the documents changed again in
/// between): by the status code, naming the document if one write had a
/// precondition, else all that had.
pub(crate) fn unexplained(writes: &[(DocKey, Precondition)], status: &Status) -> StoreError {
    let conditioned: Vec<String> = writes
        .iter()
        .filter(|(_, p)| *p != Precondition::None)
        .map(|(k, _)| k.to_string())
        .collect();
    let key = if conditioned.is_empty() {
        writes
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        conditioned.join(", ")
    };
    match status.code() {
        Code::NotFound => StoreError::NotFound { key },
        _ => StoreError::Conflict {
            key,
            message: format!(
                "a precondition failed ({:?}: {}); the documents have changed since",
                status.code(),
                status.message()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> DocKey {
        DocKey::new("c", id).unwrap()
    }

    #[test]
    fn the_first_unmet_precondition_names_its_document() {
        let v1 = Version::from_raw(1_000);
        let v2 = Version::from_raw(2_000);
        let current: HashMap<DocKey, Version> = [(k("a"), v1), (k("b"), v2)].into();
        let writes = vec![
            (k("a"), Precondition::Version(v1)),
            (k("x"), Precondition::MustNotExist),
            (k("b"), Precondition::Version(v1)),
        ];
        match first_unmet(&writes, &current) {
            Some(StoreError::Conflict { key, message }) => {
                assert_eq!(key, "c/b");
                assert!(message.contains("expected"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let writes = vec![(k("x"), Precondition::Version(v1))];
        assert!(matches!(
            first_unmet(&writes, &current),
            Some(StoreError::NotFound { key }) if key == "c/x"
        ));
        let writes = vec![(k("x"), Precondition::MustExist)];
        assert!(matches!(
            first_unmet(&writes, &current),
            Some(StoreError::NotFound { .. })
        ));
        let writes = vec![(k("a"), Precondition::MustNotExist)];
        assert!(matches!(
            first_unmet(&writes, &current),
            Some(StoreError::Conflict { key, .. }) if key == "c/a"
        ));
        let writes = vec![
            (k("a"), Precondition::MustExist),
            (k("x"), Precondition::None),
            (k("b"), Precondition::Version(v2)),
        ];
        assert!(first_unmet(&writes, &current).is_none());
    }

    #[test]
    fn unexplained_failures_name_the_conditioned_documents() {
        let writes = vec![
            (k("a"), Precondition::None),
            (k("b"), Precondition::MustExist),
        ];
        match unexplained(&writes, &Status::not_found("gone")) {
            StoreError::NotFound { key } => assert_eq!(key, "c/b"),
            other => panic!("{other:?}"),
        }
        let writes = vec![
            (k("a"), Precondition::MustNotExist),
            (k("b"), Precondition::MustExist),
        ];
        match unexplained(&writes, &Status::failed_precondition("stale")) {
            StoreError::Conflict { key, .. } => assert_eq!(key, "c/a, c/b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let e = from_status(Status::unavailable("down"), "get", None);
        assert!(e.is_retryable(), "{e:?}");
        let e = from_status(Status::deadline_exceeded("slow"), "get", None);
        assert!(matches!(e, StoreError::Timeout { .. }));
        let e = from_status(Status::permission_denied("no"), "get", None);
        assert!(matches!(e, StoreError::Forbidden { .. }));
        let e = from_status(Status::invalid_argument("bad"), "get", None);
        assert!(matches!(e, StoreError::InvalidInput { .. }));
        let e = from_status(Status::internal("bug"), "get", None);
        assert!(matches!(e, StoreError::Other { .. }));
    }
}
