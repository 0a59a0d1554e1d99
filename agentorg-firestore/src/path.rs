//! Document names and versions.
//!
//! A [`DocKey`] `tasks/t1` (or nested, `orgs/o/tasks/t1`) is the Firestore
//! document `projects/P/databases/D/documents/tasks/t1`: the contract's paths
//! are Firestore's, segment for segment (the core validates them to
//! Firestore's rules). A [`Version`] is the document's `update_time` in
//! nanoseconds since the Unix epoch; Firestore's update times are whole
//! microseconds, so a version that is not is no document's.

use agentorg_core::store::{CollectionPath, DocKey, Version};
use firestore::gcloud_sdk::prost_types::Timestamp;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The resource names of one database.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// `projects/P/databases/D`.
    pub(crate) database: String,
    /// `projects/P/databases/D/documents`.
    pub(crate) documents: String,
}

impl Names {
    pub(crate) fn new(database: String) -> Self {
        let documents = format!("{database}/documents");
        Self {
            database,
            documents,
        }
    }

    /// The resource name of a document.
    pub(crate) fn doc(&self, key: &DocKey) -> String {
        format!("{}/{key}", self.documents)
    }

    /// The parent resource and collection id that `ListDocuments` and
    /// queries take for a collection.
    pub(crate) fn parent_and_id(&self, collection: &CollectionPath) -> (String, String) {
        match collection.as_str().rsplit_once('/') {
            Some((parent_doc, id)) => (format!("{}/{parent_doc}", self.documents), id.to_owned()),
            None => (self.documents.clone(), collection.as_str().to_owned()),
        }
    }

    /// The key of a document resource name of this database.
    pub(crate) fn key(&self, name: &str) -> Option<DocKey> {
        let path = name
            .strip_prefix(self.documents.as_str())?
            .strip_prefix('/')?;
        DocKey::parse(path).ok()
    }
}

/// The version of a document last updated at `ts`.
pub(crate) fn version(ts: &Timestamp) -> Option<Version> {
    let seconds = u64::try_from(ts.seconds).ok()?;
    let nanos = u64::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < NANOS_PER_SECOND)?;
    seconds
        .checked_mul(NANOS_PER_SECOND)?
        .checked_add(nanos)
        .map(Version::from_raw)
}

/// The update time a version stands for; `None` if no Firestore document can
/// be at it (not a whole number of microseconds).
pub(crate) fn timestamp(v: Version) -> Option<Timestamp> {
    let raw = v.raw();
    if !raw.is_multiple_of(1_000) {
        return None;
    }
    Some(Timestamp {
        seconds: i64::try_from(raw / NANOS_PER_SECOND).ok()?,
        nanos: i32::try_from(raw % NANOS_PER_SECOND).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_top_level_and_nested_documents() {
        let n = Names::new("projects/p/databases/(default)".to_owned());
        let k = DocKey::new("tasks", "t1").unwrap();
        assert_eq!(
            n.doc(&k),
            "projects/p/databases/(default)/documents/tasks/t1"
        );
        assert_eq!(n.key(&n.doc(&k)), Some(k.clone()));
        let nested = DocKey::new("agentorg/o/tasks", "t1").unwrap();
        assert_eq!(n.key(&n.doc(&nested)), Some(nested.clone()));
        assert_eq!(
            n.parent_and_id(nested.collection()),
            (
                "projects/p/databases/(default)/documents/agentorg/o".to_owned(),
                "tasks".to_owned()
            )
        );
        assert_eq!(
            n.parent_and_id(k.collection()),
            (
                "projects/p/databases/(default)/documents".to_owned(),
                "tasks".to_owned()
            )
        );
        assert_eq!(
            n.key("projects/q/databases/(default)/documents/tasks/t1"),
            None
        );
    }

    #[test]
    fn versions_are_update_times_in_nanoseconds() {
        let ts = Timestamp {
            seconds: 1_795_326_254,
            nanos: 80_716_000,
        };
        let v = version(&ts).unwrap();
        assert_eq!(v.raw(), 1_795_326_254_080_716_000);
        assert_eq!(timestamp(v), Some(ts));
        let later = version(&Timestamp {
            seconds: 1_795_326_254,
            nanos: 80_717_000,
        })
        .unwrap();
        assert!(later > v);
        assert_eq!(timestamp(Version::from_raw(3)), None);
        assert_eq!(
            version(&Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
    }
}
