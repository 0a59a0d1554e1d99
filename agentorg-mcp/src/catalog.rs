//! The org's MCP servers from a TOML catalog, mounted in one router and
//! scoped per role by the chart's tool grants.
//!
//! # The catalog file
//!
//! ```toml
//! # A stdio server: `command` is a path or a name looked up on PATH.
//! [servers.time]
//! command = "${AGENTORG_MCP_TIME:-mcp-server-time}"
//! args = ["--local-timezone", "UTC"]
//! env = { LOG_LEVEL = "warn" }   # optional, added to the inherited environment
//! cwd = "/tmp"                   # optional
//! call_timeout_ms = 10000        # optional, default 30000 (> 0)
//! connect_timeout_ms = 5000      # optional, default 10000 (> 0): one connection attempt
//! max_result_bytes = 262144      # optional, default 1 MiB
//! respawn_attempts = 3           # optional, default 3
//!
//! # A streamable HTTP server, with a bearer token from the environment.
//! [servers.search]
//! url = "https://mcp.example.com/mcp"
//! bearer_token = "${SEARCH_TOKEN}"
//!
//! # An equivalent of `time`: mounted under `time` behind it, used when
//! # `time` is unavailable (failover).
//! [servers.time-backup]
//! command = "mcp-server-time"
//! equivalent = "time"
//! ```
//!
//! Strings may name environment variables as `${NAME}` (an error if unset)
//! or `${NAME:-default}`. Server names are agentorg names (`[a-z0-9_-]`); a
//! role granted `time.*` or `time.get_current_time` in the chart sees those
//! tools of `time` (and of its equivalents).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentorg_core::chart::OrgChart;
use agentorg_core::store::{CollectionPath, StateStore};
use agentorg_core::tools::{
    CallOptions, FailoverToolHost, ScopedToolHost, ToolError, ToolHost, ToolOutput, ToolRouter,
    ToolSpec,
};
use agentorg_core::Name;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use crate::audit::AuditedToolHost;
use crate::config::{McpEndpoint, McpServerConfig, RespawnPolicy};
use crate::host::McpToolHost;
use crate::pin::{AlertSink, Alerted, Pins, ToolLock};

/// A catalog that could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be read.
    #[error("catalog {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog is not valid.
    #[error("invalid MCP catalog: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// Building the router failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
}

fn invalid(message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    servers: BTreeMap<String, ServerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerEntry {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    bearer_token: Option<String>,
    equivalent: Option<String>,
    call_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    max_result_bytes: Option<usize>,
    respawn_attempts: Option<usize>,
}

/// One server of a catalog: its configuration and the server it stands in
/// for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CatalogServer {
    /// How to reach it.
    pub config: McpServerConfig,
    /// The server it is equivalent to (it is mounted under that name, after
    /// it, for failover).
    pub equivalent: Option<Name>,
}

/// The org's MCP servers, as configured. [`start`](Self::start) makes them
/// tool hosts.
#[derive(Debug, Clone, Default)]
pub struct McpCatalog {
    servers: Vec<CatalogServer>,
}

impl McpCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a server (`equivalent`: the server it stands in for).
    pub fn server(mut self, config: McpServerConfig, equivalent: Option<Name>) -> Self {
        self.servers.push(CatalogServer { config, equivalent });
        self
    }

    /// The servers, in file order (by name).
    pub fn servers(&self) -> &[CatalogServer] {
        &self.servers
    }

    /// Reads a catalog file (see the [module docs](self)).
    ///
    /// # Errors
    /// `Io`, or `Invalid` naming the problem.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses a catalog's text, expanding `${NAME}` and `${NAME:-default}`
    /// from the environment.
    ///
    /// # Errors
    /// `Invalid` naming the problem.
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        Self::from_toml_str_with_env(text, |name| std::env::var(name).ok())
    }

    /// Like [`from_toml_str`](Self::from_toml_str), looking variables up
    /// with `env` instead of the process environment.
    ///
    /// # Errors
    /// `Invalid` naming the problem.
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut servers = Vec::with_capacity(file.servers.len());
        for (name, entry) in file.servers {
            let expand =
                |s: &str| expand_env(s, &env).map_err(|e| invalid(format!("server `{name}`: {e}")));
            let server: Name = name
                .parse()
                .map_err(|e| invalid(format!("server name `{name}`: {e}")))?;
            let endpoint = match (&entry.command, &entry.url) {
                (Some(command), None) => McpEndpoint::Stdio {
                    command: expand(command)?,
                    args: entry.args.iter().map(|a| expand(a)).collect::<Result<_, _>>()?,
                    env: entry
                        .env
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), expand(v)?)))
                        .collect::<Result<_, CatalogError>>()?,
                    cwd: entry.cwd.as_deref().map(expand).transpose()?.map(PathBuf::from),
                },
                (None, Some(url)) => {
                    if !entry.args.is_empty() || !entry.env.is_empty() || entry.cwd.is_some() {
                        return Err(invalid(format!(
                            "server `{name}`: args, env and cwd are for stdio servers (`command`)"
                        )));
                    }
                    McpEndpoint::Http {
                        url: expand(url)?,
                        bearer_token: entry.bearer_token.as_deref().map(expand).transpose()?,
                    }
                }
                _ => {
                    return Err(invalid(format!(
                        "server `{name}`: give exactly one of `command` (stdio) or `url` (streamable HTTP)"
                    )))
                }
            };
            if entry.bearer_token.is_some() && entry.command.is_some() {
                return Err(invalid(format!(
                    "server `{name}`: bearer_token is for `url` servers"
                )));
            }
            let mut config = McpServerConfig::new(server, endpoint);
            if entry.call_timeout_ms == Some(0) || entry.connect_timeout_ms == Some(0) {
                return Err(invalid(format!(
                    "server `{name}`: call_timeout_ms and connect_timeout_ms must be > 0"
                )));
            }
            if let Some(ms) = entry.call_timeout_ms {
                config = config.with_call_timeout(Duration::from_millis(ms));
            }
            if let Some(ms) = entry.connect_timeout_ms {
                config = config.with_connect_timeout(Duration::from_millis(ms));
            }
            if let Some(limit) = entry.max_result_bytes {
                config = config.with_max_result_bytes(limit);
            }
            if let Some(n) = entry.respawn_attempts {
                config = config.with_respawn(RespawnPolicy::with_max_attempts(n));
            }
            let equivalent = entry
                .equivalent
                .map(|e| {
                    e.parse::<Name>()
                        .map_err(|err| invalid(format!("server `{name}`: equivalent `{e}`: {err}")))
                })
                .transpose()?;
            servers.push(CatalogServer { config, equivalent });
        }
        let catalog = Self { servers };
        catalog.check()?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), CatalogError> {
        for s in &self.servers {
            if let Some(eq) = &s.equivalent {
                let target = self.servers.iter().find(|t| &t.config.name == eq);
                match target {
                    None => {
                        return Err(invalid(format!(
                            "server `{}` is equivalent to `{eq}`, which is not in the catalog",
                            s.config.name
                        )))
                    }
                    Some(t) if t.equivalent.is_some() => {
                        return Err(invalid(format!(
                            "server `{}` is equivalent to `{eq}`, itself an equivalent: name the primary",
                            s.config.name
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Makes every server a tool host (connecting lazily, on first use, so a
    /// server that is down stops only its own tools), pins them to `lock`
    /// if given (inside each host, against the definition each call is sent
    /// with), and mounts them in one router: the primaries under their
    /// names, each with its equivalents behind it in a
    /// [`FailoverToolHost`].
    ///
    /// # Errors
    /// `Tool` if the router refuses a mount.
    pub fn start(&self, options: StartOptions) -> Result<McpTools, CatalogError> {
        let alerted = Arc::new(Alerted::default());
        let lock = options.lock.map(Arc::new);
        let mut hosts = Vec::new();
        let mut mounts = BTreeMap::new();
        let mut router = ToolRouter::new();
        let primaries = self.servers.iter().filter(|s| s.equivalent.is_none());
        for primary in primaries {
            let mount = primary.config.name.clone();
            let group: Vec<&CatalogServer> = std::iter::once(primary)
                .chain(
                    self.servers
                        .iter()
                        .filter(|s| s.equivalent.as_ref() == Some(&mount)),
                )
                .collect();
            let pins = lock.as_ref().map(|lock| {
                Arc::new(Pins::new(
                    mount.clone(),
                    Arc::clone(lock),
                    options.alerts.clone(),
                    Arc::clone(&alerted),
                ))
            });
            let mut members: Vec<Arc<dyn ToolHost>> = Vec::with_capacity(group.len());
            let mut group_hosts = Vec::with_capacity(group.len());
            for server in group {
                let host = McpToolHost::lazy_pinned(server.config.clone(), pins.clone());
                hosts.push(host.clone());
                group_hosts.push(host.clone());
                members.push(Arc::new(host));
            }
            let mounted: Arc<dyn ToolHost> = if members.len() == 1 {
                members.remove(0)
            } else {
                Arc::new(FailoverToolHost::new(members)?)
            };
            let mounted: Arc<dyn ToolHost> = Arc::new(TolerantListing {
                server: mount.clone(),
                inner: mounted,
            });
            router = router.mount(mount.clone(), Arc::clone(&mounted))?;
            mounts.insert(mount, (mounted, group_hosts));
        }
        Ok(McpTools {
            router: Arc::new(router),
            mounts,
            hosts,
            audit_store: options.audit_store,
        })
    }
}

/// A mounted server group whose listing leaves it out, with a warning, when
/// it is unavailable or does not answer in time (retryable errors): one
/// server down must not stop every role from listing its other tools. Its
/// calls still fail with the error.
#[derive(Debug)]
struct TolerantListing {
    server: Name,
    inner: Arc<dyn ToolHost>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ToolHost for TolerantListing {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>, ToolError> {
        match self.inner.list_tools().await {
            Err(e) if e.is_retryable() => {
                tracing::warn!(server = %self.server, error = %e,
                    "MCP server left out of the tool listing: it did not answer");
                Ok(Vec::new())
            }
            other => other,
        }
    }

    async fn call_tool_opts(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
    ) -> Result<ToolOutput, ToolError> {
        self.inner.call_tool_opts(name, arguments, options).await
    }
}

impl fmt::Display for TolerantListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Options of [`McpCatalog::start`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// Pinned tool definitions; none are checked if `None`.
    pub lock: Option<ToolLock>,
    /// Where pin alerts go.
    pub alerts: Option<Arc<dyn AlertSink>>,
    /// Where [`McpTools::for_role`] writes audit documents.
    pub audit_store: Option<(Arc<dyn StateStore>, CollectionPath)>,
}

impl StartOptions {
    /// Pins tools to `lock`.
    pub fn with_lock(mut self, lock: ToolLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Sends pin alerts to `alerts`.
    pub fn with_alerts(mut self, alerts: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Writes an audit document per role-scoped call into `collection`.
    pub fn with_audit_store(
        mut self,
        store: Arc<dyn StateStore>,
        collection: CollectionPath,
    ) -> Self {
        self.audit_store = Some((store, collection));
        self
    }
}

/// The started catalog: one router over every server, and each role's view.
#[derive(Debug, Clone)]
pub struct McpTools {
    router: Arc<ToolRouter>,
    /// Each mounted server group, and its hosts (primary first).
    mounts: BTreeMap<Name, (Arc<dyn ToolHost>, Vec<McpToolHost>)>,
    hosts: Vec<McpToolHost>,
    audit_store: Option<(Arc<dyn StateStore>, CollectionPath)>,
}

impl McpTools {
    /// The org-wide host, `server.tool` names: give it to
    /// `Org::builder(chart).tools(…)`, and the runtime scopes it per role by
    /// the chart's grants.
    ///
    /// Its listing leaves out, with a warning, a server that is unavailable
    /// or does not answer in time, so that one server down does not stop
    /// every role from listing the others' tools; calls to that server fail
    /// `Unavailable` (or `Timeout`).
    pub fn router(&self) -> Arc<dyn ToolHost> {
        Arc::clone(&self.router) as Arc<dyn ToolHost>
    }

    /// Every server's host (primaries and equivalents).
    pub fn hosts(&self) -> &[McpToolHost] {
        &self.hosts
    }

    /// The host of server `name`.
    pub fn host(&self, name: &str) -> Option<&McpToolHost> {
        self.hosts.iter().find(|h| h.name().as_str() == name)
    }

    /// What `role` may use: a router of only the servers the role's grants
    /// name, scoped by those grants (anything else is invisible and
    /// `Forbidden`), with every call audited ([`AuditedToolHost`]). Servers
    /// of other roles are never asked, and a granted server that is down is
    /// left out of the listing (see [`router`](Self::router)).
    ///
    /// # Errors
    /// `Invalid` if the chart has no such role.
    pub fn for_role(&self, chart: &OrgChart, role: &str) -> Result<AuditedToolHost, CatalogError> {
        let Some(spec) = chart.role(role) else {
            return Err(invalid(format!("the chart has no role `{role}`")));
        };
        let mut router = ToolRouter::new();
        for (server, (mounted, _)) in &self.mounts {
            if spec.tools().iter().any(|g| g.server_name() == server) {
                router = router.mount(server.clone(), Arc::clone(mounted))?;
            }
        }
        let scoped =
            ScopedToolHost::new(Arc::new(router), spec.name().clone(), spec.tools().to_vec());
        let audited = AuditedToolHost::new(Arc::new(scoped), spec.name().clone());
        Ok(match &self.audit_store {
            Some((store, collection)) => audited.with_store(Arc::clone(store), collection.clone()),
            None => audited,
        })
    }

    /// A lock of the tools granted to any role of `chart`, as the servers
    /// define them now (what the `mcp-lock` example writes). Tools of
    /// equivalent servers are pinned under the primary's name; they must
    /// match it.
    ///
    /// The definitions are the servers' own, whatever lock the catalog was
    /// started with; each group is listed from its first server that
    /// answers.
    ///
    /// # Errors
    /// A granted server none of whose group can be listed.
    pub async fn lock(&self, chart: &OrgChart) -> Result<ToolLock, ToolError> {
        let grants: Vec<_> = chart
            .roles()
            .flat_map(|r| r.tools().iter().cloned())
            .collect();
        let mut lock = ToolLock::new();
        for (server, (_, group)) in &self.mounts {
            if !grants.iter().any(|g| g.server_name() == server) {
                continue;
            }
            let mut listed = None;
            let mut last = None;
            for host in group {
                match host.list_unpinned().await {
                    Ok(specs) => {
                        listed = Some(specs);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let specs = match (listed, last) {
                (Some(specs), _) => specs,
                (None, Some(e)) => return Err(e),
                (None, None) => Vec::new(),
            };
            for spec in specs {
                let qualified = format!("{server}.{}", spec.name);
                if grants.iter().any(|g| g.allows(&qualified)) {
                    lock.pin(qualified, &spec);
                }
            }
        }
        Ok(lock)
    }

    /// Closes every session and waits for every server process to exit.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.hosts.iter().map(McpToolHost::shutdown)).await;
    }
}

impl fmt::Display for McpTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "McpTools({})", self.router)
    }
}

/// Expands `${NAME}` and `${NAME:-default}`.
fn expand_env(s: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    agentorg_core::env::expand(s, env).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BIN" => Some("/opt/bin/time".into()),
            "TOKEN" => Some("s3cret".into()),
            _ => None,
        }
    }

    #[test]
    fn parses_stdio_http_and_equivalents() {
        let catalog = McpCatalog::from_toml_str_with_env(
            r#"
            [servers.time]
            command = "${BIN:-mcp-server-time}"
            args = ["--local-timezone", "UTC"]
            call_timeout_ms = 1500
            [servers.time-backup]
            command = "mcp-server-time"
            equivalent = "time"
            [servers.search]
            url = "http://127.0.0.1:1/mcp"
            bearer_token = "${TOKEN}"
            max_result_bytes = 100
            "#,
            env,
        )
        .unwrap();
        let names: Vec<_> = catalog
            .servers()
            .iter()
            .map(|s| s.config.name.as_str())
            .collect();
        assert_eq!(names, ["search", "time", "time-backup"]);
        let time = &catalog.servers()[1].config;
        assert_eq!(time.call_timeout, Duration::from_millis(1500));
        assert!(
            matches!(&time.endpoint, McpEndpoint::Stdio { command, args, .. }
            if command == "/opt/bin/time" && args.len() == 2)
        );
        assert!(matches!(&catalog.servers()[0].config.endpoint,
            McpEndpoint::Http { bearer_token: Some(t), .. } if t == "s3cret"));
        assert_eq!(
            catalog.servers()[2].equivalent.as_ref().map(Name::as_str),
            Some("time")
        );
    }

    #[test]
    fn refuses_bad_catalogs() {
        for bad in [
            "[servers.a]\n",
            "[servers.a]\ncommand = \"x\"\nurl = \"http://h\"\n",
            "[servers.a]\ncommand = \"x\"\nequivalent = \"b\"\n",
            "[servers.A]\ncommand = \"x\"\n",
            "[servers.a]\ncommand = \"x\"\nbogus = 1\n",
            "[servers.a]\nurl = \"http://h\"\nargs = [\"x\"]\n",
            "[servers.a]\ncommand = \"x\"\ncall_timeout_ms = 0\n",
            "[servers.a]\ncommand = \"x\"\nconnect_timeout_ms = 0\n",
        ] {
            assert!(
                matches!(
                    McpCatalog::from_toml_str_with_env(bad, env),
                    Err(CatalogError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }
}
