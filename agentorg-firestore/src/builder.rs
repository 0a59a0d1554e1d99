//! Configuring and connecting a [`FirestoreStore`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use agentorg_core::store::StoreError;
use firestore::gcloud_sdk::google_cloud_auth::credentials::{
    CacheableResource, Credentials, CredentialsProvider, EntityTag,
};
use firestore::gcloud_sdk::google_cloud_auth::errors::CredentialsError;
use firestore::gcloud_sdk::tonic::codegen::http::{self, Extensions};
use firestore::gcloud_sdk::{GoogleAuthHeaders, HeaderMap, GCP_DEFAULT_SCOPES};
use firestore::{FirestoreDb, FirestoreDbOptions, FIREBASE_DEFAULT_DATABASE_ID};

use crate::error::BACKEND;
use crate::store::{FirestoreStore, StoreOptions};

/// Google's Firestore API endpoint.
const GOOGLE_API_URL: &str = "https://firestore.googleapis.com";

/// What a [`FirestoreStoreBuilder`] can be configured with by name, as in
/// [`FirestoreStoreBuilder::with_config`]. Parses from the names in each
/// variant's docs, case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigKey {
    /// The Google Cloud project id: `project_id`, `google_cloud_project`.
    ProjectId,
    /// The database id, `(default)` unless set: `database_id`,
    /// `firestore_database`.
    DatabaseId,
    /// The `HOST:PORT` of a Firestore emulator: `emulator_host`,
    /// `firestore_emulator_host`.
    EmulatorHost,
    /// A service account key file (JSON): `service_account_key_file`,
    /// `google_application_credentials`.
    ServiceAccountKeyFile,
    /// The longest one request may take, in milliseconds: `request_timeout_ms`.
    RequestTimeoutMs,
}

impl ConfigKey {
    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProjectId => "project_id",
            Self::DatabaseId => "database_id",
            Self::EmulatorHost => "emulator_host",
            Self::ServiceAccountKeyFile => "service_account_key_file",
            Self::RequestTimeoutMs => "request_timeout_ms",
        }
    }
}

impl fmt::Display for ConfigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigKey {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "project_id" | "google_cloud_project" => Ok(Self::ProjectId),
            "database_id" | "firestore_database" => Ok(Self::DatabaseId),
            "emulator_host" | "firestore_emulator_host" => Ok(Self::EmulatorHost),
            "service_account_key_file" | "google_application_credentials" => {
                Ok(Self::ServiceAccountKeyFile)
            }
            "request_timeout_ms" => Ok(Self::RequestTimeoutMs),
            _ => Err(StoreError::InvalidInput {
                key: None,
                message: format!("unknown Firestore configuration key {s:?}"),
            }),
        }
    }
}

/// Builds a [`FirestoreStore`]: a project, a database, and where to connect
/// as whom — a Firestore emulator, or Google Cloud with the Application
/// Default Credentials or a service account key.
///
/// ```no_run
/// # async fn f() -> Result<(), agentorg_core::store::StoreError> {
/// use agentorg_firestore::FirestoreStore;
///
/// // The emulator (`gcloud emulators firestore start`, or `scripts/servers`):
/// let local = FirestoreStore::builder()
///     .with_project_id("genbrain-demo")
///     .with_emulator("127.0.0.1:8686")
///     .build()
///     .await?;
///
/// // Google Cloud, with the Application Default Credentials
/// // (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's login, or the metadata server):
/// let cloud = FirestoreStore::builder()
///     .with_project_id("my-project")
///     .with_database_id("agents")
///     .build()
///     .await?;
/// # let _ = (local, cloud); Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct FirestoreStoreBuilder {
    project_id: Option<String>,
    database_id: Option<String>,
    emulator_host: Option<String>,
    service_account_key_file: Option<PathBuf>,
    request_timeout: Option<Duration>,
}

impl FirestoreStoreBuilder {
    /// The longest one request may take unless configured.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// An empty builder: set at least the project id.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the environment variables Google's tools use:
    /// `GOOGLE_CLOUD_PROJECT`, `FIRESTORE_DATABASE`, `FIRESTORE_EMULATOR_HOST`
    /// and `GOOGLE_APPLICATION_CREDENTIALS` (see [`ConfigKey`]). Later
    /// `with_*` calls override them.
    pub fn from_env() -> Self {
        let mut builder = Self::new();
        for (var, key) in [
            ("GOOGLE_CLOUD_PROJECT", ConfigKey::ProjectId),
            ("FIRESTORE_DATABASE", ConfigKey::DatabaseId),
            ("FIRESTORE_EMULATOR_HOST", ConfigKey::EmulatorHost),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                ConfigKey::ServiceAccountKeyFile,
            ),
        ] {
            if let Ok(value) = std::env::var(var) {
                if !value.trim().is_empty() {
                    builder = builder.with_config(key, value.trim());
                }
            }
        }
        builder
    }

    /// The Google Cloud project id (with the emulator, any id: each is its
    /// own empty database).
    pub fn with_project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }

    /// The database id; `(default)` unless set.
    pub fn with_database_id(mut self, database_id: impl Into<String>) -> Self {
        self.database_id = Some(database_id.into());
        self
    }

    /// Connects to the Firestore emulator at `HOST:PORT` (or
    /// `http://HOST:PORT`) instead of Google Cloud, sending the emulator's
    /// admin token (`Bearer owner`) and looking up no credentials.
    pub fn with_emulator(mut self, host_port: impl Into<String>) -> Self {
        self.emulator_host = Some(host_port.into());
        self
    }

    /// Authenticates to Google Cloud with this service account key file
    /// instead of the Application Default Credentials.
    pub fn with_service_account_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.service_account_key_file = Some(path.into());
        self
    }

    /// The longest one request may take before it fails with
    /// [`StoreError::Timeout`] (default 30 s). A commit that timed out may
    /// have been applied: its preconditions make a retry safe.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets a value by [`ConfigKey`]. A value that does not parse is
    /// reported by [`build`](Self::build).
    pub fn with_config(mut self, key: ConfigKey, value: impl Into<String>) -> Self {
        let value = value.into();
        match key {
            ConfigKey::ProjectId => self.project_id = Some(value),
            ConfigKey::DatabaseId => self.database_id = Some(value),
            ConfigKey::EmulatorHost => self.emulator_host = Some(value),
            ConfigKey::ServiceAccountKeyFile => {
                self.service_account_key_file = Some(PathBuf::from(value));
            }
            ConfigKey::RequestTimeoutMs => {
                // Zero is not a usable timeout: `build` reports it.
                self.request_timeout =
                    Some(Duration::from_millis(value.trim().parse().unwrap_or(0)));
            }
        }
        self
    }

    /// The value set for `key`, if any.
    pub fn get_config_value(&self, key: ConfigKey) -> Option<String> {
        match key {
            ConfigKey::ProjectId => self.project_id.clone(),
            ConfigKey::DatabaseId => self.database_id.clone(),
            ConfigKey::EmulatorHost => self.emulator_host.clone(),
            ConfigKey::ServiceAccountKeyFile => self
                .service_account_key_file
                .as_ref()
                .map(|p| p.display().to_string()),
            ConfigKey::RequestTimeoutMs => self.request_timeout.map(|d| d.as_millis().to_string()),
        }
    }

    /// Connects. Fails with `InvalidInput` for a missing or bad setting, and
    /// `Unavailable` when the endpoint cannot be reached or no credentials
    /// are found.
    pub async fn build(self) -> Result<FirestoreStore, StoreError> {
        let invalid = |message: String| StoreError::InvalidInput { key: None, message };
        let project_id = self
            .project_id
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| invalid("a Firestore store needs a project id".to_owned()))?;
        let database_id = self
            .database_id
            .unwrap_or_else(|| FIREBASE_DEFAULT_DATABASE_ID.to_owned());
        let request_timeout = self
            .request_timeout
            .unwrap_or(Self::DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(invalid("the request timeout must be positive".to_owned()));
        }
        let options = FirestoreDbOptions::new(project_id).with_database_id(database_id);
        let connected = match (self.emulator_host, self.service_account_key_file) {
            (Some(host), _) => {
                let url = if host.contains("://") {
                    host
                } else {
                    format!("http://{host}")
                };
                let auth = GoogleAuthHeaders::from(Credentials::from(EmulatorToken::new()));
                FirestoreDb::with_options_auth(options.with_firebase_api_url(url), auth).await
            }
            (None, Some(key_file)) => {
                ensure_crypto_provider();
                FirestoreDb::with_options_service_account_key_file(
                    options.with_firebase_api_url(GOOGLE_API_URL.to_owned()),
                    key_file,
                )
                .await
            }
            (None, None) => {
                ensure_crypto_provider();
                let auth = GoogleAuthHeaders::from_adc_with_scopes(GCP_DEFAULT_SCOPES.clone())
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        message: "no Google Application Default Credentials".to_owned(),
                        source: Some(Box::new(e)),
                    })?;
                FirestoreDb::with_options_auth(
                    options.with_firebase_api_url(GOOGLE_API_URL.to_owned()),
                    auth,
                )
                .await
            }
        };
        let db = connected.map_err(|e| StoreError::Unavailable {
            message: format!("{BACKEND}: cannot connect"),
            source: Some(Box::new(e)),
        })?;
        Ok(FirestoreStore::with_options(
            db,
            StoreOptions { request_timeout },
        ))
    }
}

/// TLS to Google and signing with a service account key need a rustls crypto
/// provider; this crate compiles in `ring` and installs it unless the
/// application installed one already.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The emulator's admin token: the emulator authenticates nothing, and this
/// token lets requests past its security rules.
#[derive(Debug)]
struct EmulatorToken {
    tag: EntityTag,
}

impl EmulatorToken {
    fn new() -> Self {
        Self {
            tag: EntityTag::new(),
        }
    }
}

impl CredentialsProvider for EmulatorToken {
    async fn headers(
        &self,
        extensions: Extensions,
    ) -> Result<CacheableResource<HeaderMap>, CredentialsError> {
        // The same header forever: tell the cache it has not changed.
        if extensions.get::<EntityTag>() == Some(&self.tag) {
            return Ok(CacheableResource::NotModified);
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer owner"),
        );
        Ok(CacheableResource::New {
            entity_tag: self.tag.clone(),
            data: headers,
        })
    }

    async fn universe_domain(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_parse_by_any_of_their_names() {
        assert_eq!(
            "GOOGLE_CLOUD_PROJECT".parse::<ConfigKey>().unwrap(),
            ConfigKey::ProjectId
        );
        assert_eq!(
            "firestore_emulator_host".parse::<ConfigKey>().unwrap(),
            ConfigKey::EmulatorHost
        );
        assert!("nope".parse::<ConfigKey>().is_err());
        let b = FirestoreStoreBuilder::new()
            .with_config(ConfigKey::ProjectId, "p")
            .with_config(ConfigKey::RequestTimeoutMs, "1500");
        assert_eq!(
            b.get_config_value(ConfigKey::ProjectId).as_deref(),
            Some("p")
        );
        assert_eq!(b.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(b.get_config_value(ConfigKey::DatabaseId), None);
    }

    #[tokio::test]
    async fn a_project_id_is_required() {
        let e = FirestoreStoreBuilder::new()
            .with_emulator("127.0.0.1:1")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");
        let e = FirestoreStoreBuilder::new()
            .with_project_id("p")
            .with_emulator("127.0.0.1:1")
            .with_config(ConfigKey::RequestTimeoutMs, "soon")
            .build()
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput { .. }), "{e:?}");
    }
}
