//! [`NatsTransportBuilder`]: servers, credentials, org, streams, timeouts.

use std::path::PathBuf;
use std::time::Duration;

use agentorg_core::transport::TransportError;
use agentorg_core::Name;
use async_nats::{ConnectOptions, Event, ServerAddr};

use crate::auth::RoleCredentials;
use crate::error::Error;
use crate::layout::{StreamKind, StreamLayout, StreamLimits};
use crate::transport::{NatsTransport, Options};
use crate::violations::Violations;

/// The longest timeout, pull expiry or heartbeat the builder takes.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How the transport authenticates.
#[derive(Clone, Default)]
enum Auth {
    #[default]
    None,
    UserPassword(String, String),
    Token(String),
    #[cfg(feature = "nkeys")]
    NKey(String),
    #[cfg(feature = "nkeys")]
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        let what = match self {
            Auth::None => "none".to_owned(),
            Auth::UserPassword(user, _) => format!("user {user:?}"),
            Auth::Token(_) => "token".to_owned(),
            #[cfg(feature = "nkeys")]
            Auth::NKey(_) => "nkey".to_owned(),
            #[cfg(feature = "nkeys")]
            Auth::CredentialsFile(p) => format!("credentials file {}", p.display()),
        };
        f.write_str(&what)
    }
}

/// Builds a [`NatsTransport`]: `new`, `with_*`, then the fallible, async
/// [`build`](Self::build), which connects and (unless told not to) creates
/// the org's streams.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use agentorg_nats::{NatsTransport, StreamKind, StreamLimits};
///
/// let t = NatsTransport::builder()
///     .with_servers(["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"])
///     .with_user_and_password("admin", "s3cret")
///     .with_org("genbrain")
///     .with_replicas(3)
///     .with_limits(StreamKind::Events, StreamLimits::new(4 << 30, 10_000_000).with_max_age(Duration::from_secs(86_400)))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsTransportBuilder {
    servers: Vec<String>,
    org: Option<String>,
    auth: Auth,
    inbox_prefix: Option<String>,
    name: Option<String>,
    require_tls: bool,
    root_certificates: Vec<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    replicas: usize,
    limits: [StreamLimits; 3],
    duplicate_window: Duration,
    provision: bool,
    batch: usize,
    pull_expiry: Duration,
    heartbeat: Duration,
    request_timeout: Duration,
    publish_timeout: Duration,
    connect_timeout: Duration,
    confirm_acks: bool,
    subscriber_buffer: usize,
    retry_on_initial_connect: bool,
}

impl Default for NatsTransportBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// Messages a binder asks for per pull request unless told otherwise
/// ([`NatsTransportBuilder::with_batch`]): 2, the least that keeps a pull
/// request waiting on the server while a message is handled.
pub const DEFAULT_BATCH: usize = 2;

impl NatsTransportBuilder {
    /// A builder with the defaults: no server (add one), no credentials,
    /// streams with 1 replica and [`StreamLimits::default_for`] each kind, a
    /// 2-minute duplicate window, streams created on build, pull batches of
    /// 2, 5 s request timeout, 15 s publish budget, fire-and-forget acks.
    pub fn new() -> Self {
        Self {
            servers: Vec::new(),
            org: None,
            auth: Auth::None,
            inbox_prefix: None,
            name: None,
            require_tls: false,
            root_certificates: Vec::new(),
            client_certificate: None,
            replicas: 1,
            limits: StreamKind::ALL.map(StreamLimits::default_for),
            duplicate_window: Duration::from_secs(120),
            provision: true,
            batch: DEFAULT_BATCH,
            pull_expiry: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            confirm_acks: false,
            subscriber_buffer: 1024,
            retry_on_initial_connect: false,
        }
    }

    /// A builder from the environment, as the `nats` CLI reads it: `NATS_URL`
    /// (comma-separated servers), `NATS_USER` + `NATS_PASSWORD`, or
    /// `NATS_TOKEN`, or (feature `nkeys`) `NATS_CREDS` (a `.creds` file).
    /// The org is still set with [`with_org`](Self::with_org).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut b = Self::new();
        if let Some(urls) = var("NATS_URL") {
            b = b.with_servers(urls.split(',').map(str::trim));
        }
        if let (Some(user), Some(password)) = (var("NATS_USER"), var("NATS_PASSWORD")) {
            b = b.with_user_and_password(user, password);
        } else if let Some(token) = var("NATS_TOKEN") {
            b = b.with_token(token);
        }
        #[cfg(feature = "nkeys")]
        if let Some(creds) = var("NATS_CREDS") {
            b = b.with_credentials_file(creds);
        }
        b
    }

    /// Adds a server URL (`nats://host:4222`, `tls://host:4222`). Give every
    /// server of a cluster, each with its own call or with
    /// [`with_servers`](Self::with_servers): one `"a,b"` string is one address.
    pub fn with_server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Adds several server URLs.
    pub fn with_servers(mut self, urls: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// The org whose subjects and streams this transport carries (required).
    pub fn with_org(mut self, org: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self
    }

    /// Authenticates with a user and password.
    pub fn with_user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.auth = Auth::UserPassword(user.into(), password.into());
        self
    }

    /// Authenticates with a token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Authenticates with an NKey seed (`SU…`).
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn with_nkey(mut self, seed: impl Into<String>) -> Self {
        self.auth = Auth::NKey(seed.into());
        self
    }

    /// Authenticates with a `.creds` file (JWT and NKey seed).
    #[cfg(feature = "nkeys")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nkeys")))]
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.auth = Auth::CredentialsFile(path.into());
        self
    }

    /// Runs as one role (or the admin) of an [`OrgAuth`](crate::auth::OrgAuth):
    /// its user, password and reply-inbox prefix. A role may not create
    /// streams, so this also turns [stream provisioning](Self::with_provision)
    /// off unless the credentials are the admin's; turn it back on after
    /// this call if you must.
    pub fn with_credentials(mut self, credentials: &RoleCredentials) -> Self {
        self.auth = Auth::UserPassword(credentials.user.clone(), credentials.password.clone());
        self.inbox_prefix = Some(credentials.inbox_prefix.clone());
        self.provision = credentials.is_admin();
        self
    }

    /// The prefix of this connection's reply subjects (default `_INBOX`). A
    /// role's permissions allow only its own prefix;
    /// [`with_credentials`](Self::with_credentials) sets it.
    pub fn with_inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// The connection's name, as the server's monitoring shows it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Requires TLS (also implied by `tls://` URLs).
    pub fn with_require_tls(mut self, required: bool) -> Self {
        self.require_tls = required;
        self
    }

    /// Trusts the CA certificates in this PEM file.
    pub fn with_root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificates.push(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files).
    pub fn with_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Replicas of each stream: 1 on a single server, 3 on a cluster (a
    /// stream then survives the loss of one node). 1 to 5.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The size and age limits of one stream.
    pub fn with_limits(mut self, kind: StreamKind, limits: StreamLimits) -> Self {
        self.limits[match kind {
            StreamKind::Inbox => 0,
            StreamKind::Events => 1,
            StreamKind::DeadLetter => 2,
        }] = limits;
        self
    }

    /// How long the streams remember message ids for deduplication
    /// (default 2 minutes).
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Whether [`build`](Self::build) creates (or updates) the org's streams
    /// (default true). Off for processes whose credentials may not: an admin
    /// provisions streams and consumers.
    pub fn with_provision(mut self, provision: bool) -> Self {
        self.provision = provision;
        self
    }

    /// Messages asked for per pull request (default [`DEFAULT_BATCH`], at
    /// least 1). The binder asks for the next batch when half of one or less
    /// is still to come, so with 2 a request is already waiting when a
    /// message is handed out; with 1 the next request goes out only when
    /// the next message is asked for (a server round trip per message), and
    /// no message waits in the process while a slow handler runs. Messages
    /// a binder has received but not yet handed out run their ack timers
    /// too; keep it at or below the handler concurrency unless handlers are
    /// quick.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// How long a pull request waits on the server (default 30 s) and the
    /// idle heartbeat that proves the server is alive meanwhile (default
    /// 5 s; a binder that misses two binds again). The heartbeat is at most
    /// half the expiry; like every timeout here, each is positive and at most
    /// a day ([`build`](Self::build) refuses others).
    pub fn with_pull_expiry(mut self, expiry: Duration, heartbeat: Duration) -> Self {
        self.pull_expiry = expiry;
        self.heartbeat = heartbeat;
        self
    }

    /// Timeout of each JetStream API request and of each publish
    /// acknowledgement (default 5 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one durable publish may take, retries included (default
    /// 15 s). A publish that no stream answered is retried (it was not
    /// stored), and one whose acknowledgement was lost is retried when it has
    /// a message id (a second copy is a duplicate); past the budget it fails
    /// with a retryable `Unavailable` or `Timeout`.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// How long the first connection may take (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Whether `ack` and `term` wait for the server to confirm (a round trip
    /// each; default false). The runtime does not need it: a lost ack makes
    /// the message come again, and its claim says it is done.
    pub fn with_confirmed_acks(mut self, confirm: bool) -> Self {
        self.confirm_acks = confirm;
        self
    }

    /// Each ephemeral subscription's buffer (default 1024 messages).
    pub fn with_subscriber_buffer(mut self, n: usize) -> Self {
        self.subscriber_buffer = n;
        self
    }

    /// Whether `build` returns before the first connection succeeds and keeps
    /// trying in the background (default false: `build` fails with
    /// `Unavailable`). Stream provisioning, if on, still needs the server.
    pub fn with_retry_on_initial_connect(mut self, retry: bool) -> Self {
        self.retry_on_initial_connect = retry;
        self
    }

    fn invalid(message: impl Into<String>) -> TransportError {
        TransportError::InvalidInput {
            message: message.into(),
        }
    }

    /// Connects, and creates or checks the org's streams (unless
    /// provisioning is off).
    ///
    /// The connection reconnects on its own, forever, to any of the servers;
    /// consumers bound on it resume after a reconnect without the caller
    /// doing anything.
    pub async fn build(self) -> Result<NatsTransport, TransportError> {
        let org = self
            .org
            .as_deref()
            .ok_or_else(|| Self::invalid("NatsTransportBuilder: with_org is required"))?;
        let org = Name::new(org).map_err(|e| Self::invalid(format!("org: {e}")))?;
        if self.servers.is_empty() {
            return Err(Self::invalid(
                "NatsTransportBuilder: give at least one server (with_server)",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Self::invalid("replicas must be between 1 and 5"));
        }
        if self.batch == 0 {
            return Err(Self::invalid("batch must be at least 1"));
        }
        if self.subscriber_buffer == 0 {
            return Err(Self::invalid("subscriber_buffer must be positive"));
        }
        for d in [
            self.pull_expiry,
            self.heartbeat,
            self.request_timeout,
            self.publish_timeout,
            self.connect_timeout,
        ] {
            if d.is_zero() {
                return Err(Self::invalid("timeouts must be positive"));
            }
            // Deadlines are instants from now: a longer one could overflow.
            if d > MAX_TIMEOUT {
                return Err(Self::invalid("timeouts must be at most a day"));
            }
        }
        if self.heartbeat * 2 > self.pull_expiry {
            return Err(Self::invalid(
                "the pull heartbeat must be at most half the pull expiry",
            ));
        }
        let addrs = self
            .servers
            .iter()
            .map(|s| {
                s.parse::<ServerAddr>()
                    .map_err(|e| Self::invalid(format!("server {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let servers = self.servers.join(",");
        let violations = Violations::new();
        let (connects, _) = tokio::sync::watch::channel(0);
        let options = self.connect_options(&violations, &connects).await?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|source| Error::Connect {
                servers: servers.clone(),
                source,
            })?;
        let layout = StreamLayout::new(org, self.replicas, self.duplicate_window, self.limits);
        let t = NatsTransport::from_parts(
            layout,
            client,
            violations,
            connects,
            Options {
                batch: self.batch,
                pull_expiry: self.pull_expiry,
                heartbeat: self.heartbeat,
                request_timeout: self.request_timeout,
                publish_timeout: self.publish_timeout,
                confirm_acks: self.confirm_acks,
                subscriber_buffer: self.subscriber_buffer,
            },
            servers,
        );
        if self.provision {
            t.provision_streams().await?;
        }
        Ok(t)
    }

    async fn connect_options(
        &self,
        violations: &Violations,
        connects: &tokio::sync::watch::Sender<u64>,
    ) -> Result<ConnectOptions, TransportError> {
        let mut o = match &self.auth {
            Auth::None => ConnectOptions::new(),
            Auth::UserPassword(u, p) => {
                ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            Auth::Token(t) => ConnectOptions::with_token(t.clone()),
            #[cfg(feature = "nkeys")]
            Auth::NKey(seed) => ConnectOptions::with_nkey(seed.clone()),
            #[cfg(feature = "nkeys")]
            Auth::CredentialsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| Self::invalid(format!("credentials file {}: {e}", path.display())))?,
        };
        o = o
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            // Reconnect forever: a transport outlives server restarts.
            .max_reconnects(None);
        if let Some(prefix) = &self.inbox_prefix {
            o = o.custom_inbox_prefix(prefix);
        }
        if let Some(name) = &self.name {
            o = o.name(name);
        }
        if self.require_tls {
            o = o.require_tls(true);
        }
        for ca in &self.root_certificates {
            o = o.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            o = o.add_client_certificate(cert.clone(), key.clone());
        }
        if self.retry_on_initial_connect {
            o = o.retry_on_initial_connect();
        }
        let v = violations.clone();
        let c = connects.clone();
        o = o.event_callback(move |event| {
            let (v, c) = (v.clone(), c.clone());
            async move { on_event(&v, &c, event) }
        });
        Ok(o)
    }
}

/// The connection's events: permission violations go to the operations
/// waiting on them, (re)connections to the binders; everything is logged.
fn on_event(violations: &Violations, connects: &tokio::sync::watch::Sender<u64>, event: Event) {
    match event {
        Event::ServerError(async_nats::ServerError::Other(text)) => {
            match violations.report(&text) {
                Some(v) => tracing::warn!(subject = %v.subject, "nats: {}", v.text),
                None => tracing::warn!("nats server error: {text}"),
            }
        }
        Event::Connected => {
            tracing::info!("nats: connected");
            // Binders hear of reconnections only: the first connection
            // comes before any binder (and, as an event, maybe after one).
            connects.send_if_modified(|n| {
                *n += 1;
                *n > 1
            });
        }
        Event::Closed => tracing::debug!("nats: connection closed"),
        Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                sid,
                "nats: a subscription is a slow consumer; messages were dropped"
            )
        }
        other => tracing::warn!("nats: {other}"),
    }
}
