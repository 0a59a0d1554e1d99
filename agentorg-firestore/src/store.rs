//! The [`StateStore`] over Firestore's gRPC API.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::store::{
    validate_writes, ChangeStream, CollectionPath, DocKey, Document, ListOptions, ListPage,
    Precondition, StateStore, StoreError, Version, WatchTarget, Write,
};
use async_trait::async_trait;
use firestore::gcloud_sdk::google::firestore::v1::{
    self as fs, batch_get_documents_response, firestore_client::FirestoreClient, precondition,
    write,
};
use firestore::gcloud_sdk::tonic::{Code, Response, Status};
use firestore::gcloud_sdk::GoogleAuthMiddleware;
use firestore::FirestoreDb;
use futures::StreamExt;

use crate::builder::FirestoreStoreBuilder;
use crate::error::{self, from_status, is_precondition_status, is_transient};
use crate::path::{self, Names};
use crate::value;
use crate::watch;

/// The gRPC client every request goes through.
pub(crate) type Client = FirestoreClient<GoogleAuthMiddleware>;

/// How many times a read is sent again after a transient failure.
const READ_RETRIES: u32 = 3;
/// The first pause before sending a read again; it doubles each time.
const READ_BACKOFF: Duration = Duration::from_millis(50);

/// Settings a [`FirestoreStoreBuilder`] passes on.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    pub(crate) request_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            request_timeout: FirestoreStoreBuilder::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A [`StateStore`] over Google Cloud Firestore (or its emulator).
///
/// Cheap to clone: clones share one connection. See the [crate docs](crate)
/// for how paths, values, versions, preconditions, commits, lists and
/// watches map to Firestore.
#[derive(Clone)]
pub struct FirestoreStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: FirestoreDb,
    /// A clone of the connection's client; each request clones it again
    /// (gRPC calls take `&mut self`), which shares the channel.
    client: Client,
    pub(crate) names: Names,
    options: StoreOptions,
    /// The `Listen` stream all watches share, started on demand.
    listener: watch::Listener,
}

impl FirestoreStore {
    /// A builder: project, database, and emulator or Google credentials.
    pub fn builder() -> FirestoreStoreBuilder {
        FirestoreStoreBuilder::new()
    }

    /// A store over a `firestore` client you configured yourself (any
    /// credentials, endpoint or database), with the default request timeout.
    pub fn from_db(db: FirestoreDb) -> Self {
        Self::with_options(db, StoreOptions::default())
    }

    pub(crate) fn with_options(db: FirestoreDb, options: StoreOptions) -> Self {
        let client = db.client().get();
        let names = Names::new(db.get_database_path().clone());
        Self {
            inner: Arc::new(Inner {
                db,
                client,
                names,
                options,
                listener: watch::Listener::default(),
            }),
        }
    }

    /// The `firestore` client underneath, for what the trait does not cover.
    pub fn db(&self) -> &FirestoreDb {
        &self.inner.db
    }

    /// The database's resource name, `projects/P/databases/D`.
    pub fn database_path(&self) -> &str {
        &self.inner.names.database
    }

    /// The Firestore resource name of a document,
    /// `projects/P/databases/D/documents/<collection>/<id>`.
    pub fn document_name(&self, key: &DocKey) -> String {
        self.inner.names.doc(key)
    }
}

impl fmt::Debug for FirestoreStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirestoreStore")
            .field("database", &self.inner.names.database)
            .field("api_url", &self.inner.db.get_options().firebase_api_url)
            .field("request_timeout", &self.inner.options.request_timeout)
            .finish()
    }
}

impl fmt::Display for FirestoreStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirestoreStore({})", self.inner.names.database)
    }
}

impl Inner {
    /// One request, bounded by the request timeout (a lapse is
    /// `DEADLINE_EXCEEDED`).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, Status>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, f(self.client.clone())).await {
            Ok(r) => r.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
        }
    }

    /// A read: [`call`](Self::call), sent again (a bounded number of times,
    /// with backoff) after a transient failure such as a dropped connection.
    async fn read<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut pause = READ_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.call(&mut f).await {
                Err(s) if attempt < READ_RETRIES && is_transient(s.code()) => {
                    tracing::debug!(code = ?s.code(), message = s.message(), "firestore: read failed, retrying");
                    attempt += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                r => return r,
            }
        }
    }

    pub(crate) fn client(&self) -> Client {
        self.client.clone()
    }

    /// One document as the server sends it (`None`: missing).
    pub(crate) async fn get_raw(&self, key: &DocKey) -> Result<Option<fs::Document>, Status> {
        let name = self.names.doc(key);
        let result = self
            .read(|mut c| {
                let request = fs::GetDocumentRequest {
                    name: name.clone(),
                    ..Default::default()
                };
                async move { c.get_document(request).await }
            })
            .await;
        match result {
            Ok(doc) => Ok(Some(doc)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    /// Each document's current version (absent: missing), read together.
    async fn versions(&self, keys: &[&DocKey]) -> Result<HashMap<DocKey, Version>, Status> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let request = fs::BatchGetDocumentsRequest {
            database: self.names.database.clone(),
            documents: keys.iter().map(|k| self.names.doc(k)).collect(),
            ..Default::default()
        };
        let responses: Vec<fs::BatchGetDocumentsResponse> = self
            .read(|mut c| {
                let request = request.clone();
                async move {
                    let response = c.batch_get_documents(request).await?;
                    let (meta, stream, ext) = response.into_parts();
                    let all: Vec<_> = stream.collect().await;
                    let all = all.into_iter().collect::<Result<Vec<_>, Status>>()?;
                    Ok(Response::from_parts(meta, all, ext))
                }
            })
            .await?;
        let mut current = HashMap::new();
        for r in responses {
            if let Some(batch_get_documents_response::Result::Found(doc)) = r.result {
                if let (Some(key), Some(v)) = (
                    self.names.key(&doc.name),
                    doc.update_time.as_ref().and_then(path::version),
                ) {
                    current.insert(key, v);
                }
            }
        }
        Ok(current)
    }

    /// Why a commit's preconditions failed, named by document: re-reads the
    /// conditioned documents and checks each precondition in order. `status`
    /// is the commit's failure (`None`: refused before sending, for a version
    /// no document can have).
    async fn explain(
        &self,
        writes: &[(DocKey, Precondition)],
        status: Option<Status>,
    ) -> StoreError {
        let keys: Vec<&DocKey> = writes
            .iter()
            .filter(|(_, p)| *p != Precondition::None)
            .map(|(k, _)| k)
            .collect();
        match (self.versions(&keys).await, status) {
            (Ok(current), status) => match (error::first_unmet(writes, &current), status) {
                (Some(e), _) => e,
                (None, Some(status)) => error::unexplained(writes, &status),
                // Unreachable: a version no document has is never met.
                (None, None) => error::unexplained(
                    writes,
                    &Status::failed_precondition("a version that is not an update time"),
                ),
            },
            (Err(_), Some(status)) => error::unexplained(writes, &status),
            (Err(read), None) => from_status(read, "commit", None),
        }
    }

    pub(crate) fn listener(&self) -> &watch::Listener {
        &self.listener
    }
}

/// A Firestore document as the contract's.
pub(crate) fn document(key: DocKey, doc: fs::Document) -> Result<Document, StoreError> {
    let version = doc
        .update_time
        .as_ref()
        .and_then(path::version)
        .ok_or_else(|| StoreError::Other {
            backend: error::BACKEND,
            source: format!("document {key} came without a valid update time").into(),
        })?;
    Ok(Document::new(
        key,
        value::fields_to_json(doc.fields),
        version,
    ))
}

#[async_trait]
impl StateStore for FirestoreStore {
    async fn get(&self, key: &DocKey) -> Result<Option<Document>, StoreError> {
        match self.inner.get_raw(key).await {
            Ok(Some(doc)) => document(key.clone(), doc).map(Some),
            Ok(None) => Ok(None),
            Err(s) => Err(from_status(s, "get", Some(key))),
        }
    }

    async fn list(
        &self,
        collection: &CollectionPath,
        options: ListOptions,
    ) -> Result<ListPage, StoreError> {
        if options.page_size == 0 || options.page_size > ListOptions::MAX_PAGE_SIZE {
            return Err(StoreError::InvalidInput {
                key: Some(collection.to_string()),
                message: format!(
                    "page size {} is outside 1..={}",
                    options.page_size,
                    ListOptions::MAX_PAGE_SIZE
                ),
            });
        }
        let inner = &*self.inner;
        let (parent, collection_id) = inner.names.parent_and_id(collection);
        let request = fs::ListDocumentsRequest {
            parent,
            collection_id,
            // At most MAX_PAGE_SIZE, checked above.
            page_size: i32::try_from(options.page_size).unwrap_or(i32::MAX),
            page_token: options.page_token.unwrap_or_default(),
            // Ids in order (Firestore's default, `__name__`), and no
            // "missing" documents that only hold nested collections.
            show_missing: false,
            ..Default::default()
        };
        let response = inner
            .read(|mut c| {
                let request = request.clone();
                async move { c.list_documents(request).await }
            })
            .await
            .map_err(|s| from_status(s, "list", Some(collection)))?;
        let documents = response
            .documents
            .into_iter()
            .map(|doc| {
                let key = inner
                    .names
                    .key(&doc.name)
                    .ok_or_else(|| StoreError::Other {
                        backend: error::BACKEND,
                        source: format!("list of {collection} returned {:?}", doc.name).into(),
                    })?;
                document(key, doc)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = Some(response.next_page_token).filter(|t| !t.is_empty());
        Ok(ListPage::new(documents, next))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Option<Version>>, StoreError> {
        validate_writes(&writes)?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        // Kept for naming the document whose precondition failed.
        let conditions: Vec<(DocKey, Precondition)> = writes
            .iter()
            .map(|w| (w.key().clone(), w.precondition()))
            .collect();
        let mut unmeetable = false;
        let mut is_put = Vec::with_capacity(writes.len());
        let mut request_writes = Vec::with_capacity(writes.len());
        for w in writes {
            let condition = match w.precondition() {
                Precondition::None => None,
                Precondition::MustNotExist => Some(precondition::ConditionType::Exists(false)),
                Precondition::MustExist => Some(precondition::ConditionType::Exists(true)),
                Precondition::Version(v) => match path::timestamp(v) {
                    Some(ts) => Some(precondition::ConditionType::UpdateTime(ts)),
                    None => {
                        unmeetable = true;
                        None
                    }
                },
                // `Precondition` is non-exhaustive: a new kind needs a
                // mapping here.
                other => {
                    return Err(StoreError::InvalidInput {
                        key: Some(w.key().to_string()),
                        message: format!(
                            "precondition {other:?} is not supported by the Firestore store"
                        ),
                    })
                }
            };
            let operation = match w {
                Write::Put { key, value, .. } => {
                    let serde_json::Value::Object(object) = value else {
                        // validate_writes admits only objects.
                        return Err(StoreError::InvalidInput {
                            key: Some(key.to_string()),
                            message: "a document must be a JSON object".to_owned(),
                        });
                    };
                    let fields = value::fields_from_json(object).map_err(|message| {
                        StoreError::InvalidInput {
                            key: Some(key.to_string()),
                            message,
                        }
                    })?;
                    is_put.push(true);
                    write::Operation::Update(fs::Document {
                        name: inner.names.doc(&key),
                        fields,
                        create_time: None,
                        update_time: None,
                    })
                }
                Write::Delete { key, .. } => {
                    is_put.push(false);
                    write::Operation::Delete(inner.names.doc(&key))
                }
                // `Write` is non-exhaustive; a new kind needs a mapping here.
                other => {
                    return Err(StoreError::InvalidInput {
                        key: Some(other.key().to_string()),
                        message: "this kind of write is not supported by the Firestore store"
                            .to_owned(),
                    })
                }
            };
            request_writes.push(fs::Write {
                // No mask: a put replaces the whole document.
                update_mask: None,
                update_transforms: Vec::new(),
                current_document: condition.map(|c| fs::Precondition {
                    condition_type: Some(c),
                }),
                operation: Some(operation),
            });
        }
        if unmeetable {
            // A version that is not a whole microsecond is no Firestore
            // document's: the commit cannot succeed, and a re-read says how
            // it fails.
            return Err(inner.explain(&conditions, None).await);
        }
        let request = fs::CommitRequest {
            database: inner.names.database.clone(),
            writes: request_writes,
            // No transaction: one Commit of preconditioned writes is atomic
            // and takes no locks.
            transaction: Vec::new(),
            request_options: None,
        };
        // Never sent twice: a commit that failed in transit may have been
        // applied, and only the caller can decide what a retry means.
        match inner
            .call(|mut c| async move { c.commit(request).await })
            .await
        {
            Ok(response) => {
                let mut results = response.write_results.into_iter();
                is_put
                    .into_iter()
                    .zip(conditions.iter())
                    .map(|(put, (key, _))| {
                        let result = results.next();
                        if !put {
                            return Ok(None);
                        }
                        result
                            .and_then(|r| r.update_time)
                            .as_ref()
                            .and_then(path::version)
                            .map(Some)
                            .ok_or_else(|| StoreError::Other {
                                backend: error::BACKEND,
                                source: format!("commit returned no update time for {key}").into(),
                            })
                    })
                    .collect()
            }
            Err(s) if is_precondition_status(s.code()) => {
                Err(inner.explain(&conditions, Some(s)).await)
            }
            Err(s) => {
                let single = conditions
                    .first()
                    .filter(|_| conditions.len() == 1)
                    .map(|(k, _)| k);
                Err(from_status(
                    s,
                    "commit",
                    single.map(|k| k as &dyn fmt::Display),
                ))
            }
        }
    }

    async fn watch(&self, target: WatchTarget) -> Result<ChangeStream, StoreError> {
        watch::start(&self.inner, target).await
    }
}

impl Inner {
    pub(crate) fn request_timeout(&self) -> Duration {
        self.options.request_timeout
    }
}
