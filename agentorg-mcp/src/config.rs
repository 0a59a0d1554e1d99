//! How to reach one MCP server and how to treat its calls.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use agentorg_core::Name;

/// Where an MCP server is: a command spawned over stdio, or a streamable HTTP
/// URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum McpEndpoint {
    /// A child process speaking MCP on its stdin/stdout.
    Stdio {
        /// The program (a path, or a name looked up on `PATH`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables (the rest is inherited).
        env: BTreeMap<String, String>,
        /// Its working directory (the caller's if `None`).
        cwd: Option<PathBuf>,
    },
    /// A server reached over MCP's streamable HTTP transport.
    Http {
        /// The endpoint URL, e.g. `http://127.0.0.1:3001/mcp`.
        url: String,
        /// A bearer token sent as `Authorization: Bearer …`.
        bearer_token: Option<String>,
    },
}

impl fmt::Debug for McpEndpoint {
    // Secrets may sit in the token, in the URL (userinfo, query), in the
    // arguments and in the environment: only the command, the redacted URL
    // and counts are printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio {
                command,
                args,
                env,
                cwd,
            } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", &format_args!("[{} redacted]", args.len()))
                .field("env", &format_args!("[{} redacted]", env.len()))
                .field("cwd", cwd)
                .finish(),
            Self::Http { url, bearer_token } => f
                .debug_struct("Http")
                .field("url", &redact_url(url))
                .field("bearer_token", &bearer_token.as_ref().map(|_| "…"))
                .finish(),
        }
    }
}

impl fmt::Display for McpEndpoint {
    /// `stdio:<command>`, or the URL without its userinfo, query and
    /// fragment (they may hold secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio { command, .. } => write!(f, "stdio:{command}"),
            Self::Http { url, .. } => f.write_str(&redact_url(url)),
        }
    }
}

/// `url` with its userinfo, query and fragment replaced by `…` (they may
/// hold credentials: `https://user:pass@host/mcp?token=…`).
pub(crate) fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, _)) => (b, true),
        None => (url, false),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, _)) => (b, true),
        None => (before_fragment, false),
    };
    let mut out = String::with_capacity(base.len() + 8);
    let (scheme, rest) = match base.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, base),
    };
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => {
            out.push_str("…@");
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if query {
        out.push_str("?…");
    }
    if fragment {
        out.push_str("#…");
    }
    out
}

/// How a crashed stdio server (or a dropped HTTP session) is reconnected: on
/// the next call, up to `max_attempts` connection attempts with exponential
/// backoff from `min_delay` to `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RespawnPolicy {
    /// Connection attempts per call that finds the session gone (≥ 1).
    pub max_attempts: usize,
    /// The first backoff delay.
    pub min_delay: Duration,
    /// The largest backoff delay.
    pub max_delay: Duration,
}

impl Default for RespawnPolicy {
    /// 3 attempts, 50 ms doubling up to 1 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RespawnPolicy {
    /// A policy of `max_attempts` attempts (at least one) with the default
    /// delays.
    pub fn with_max_attempts(max_attempts: usize) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// The same policy with other backoff delays.
    pub fn with_delays(mut self, min_delay: Duration, max_delay: Duration) -> Self {
        self.min_delay = min_delay;
        self.max_delay = max_delay.max(min_delay);
        self
    }
}

/// One MCP server of the org: its name (the `server` of `server.tool`
/// grants), where it is, and the limits applied to its calls.
///
/// ```
/// use std::time::Duration;
/// use agentorg_mcp::McpServerConfig;
///
/// let time = McpServerConfig::stdio("time".parse()?, "mcp-server-time")
///     .arg("--local-timezone=UTC")
///     .with_call_timeout(Duration::from_secs(5));
/// let remote = McpServerConfig::http("search".parse()?, "https://mcp.example.com/mcp")
///     .bearer_token("secret")
///     .with_max_result_bytes(256 * 1024);
/// # let _ = (time, remote);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpServerConfig {
    /// The server's name in grants and in the router.
    pub name: Name,
    /// Where it is.
    pub endpoint: McpEndpoint,
    /// The timeout of a call that gives none ([`CallOptions`]): it bounds
    /// the listing the call needs and the request; the request is cancelled
    /// on the server when it expires.
    ///
    /// [`CallOptions`]: agentorg_core::tools::CallOptions
    pub call_timeout: Duration,
    /// The bound of one connection attempt (spawning or reaching the server
    /// and the MCP handshake); an attempt that takes longer is abandoned and
    /// counts as failed (`Unavailable`, retryable). Reconnection makes at
    /// most [`RespawnPolicy::max_attempts`] attempts, so a server that
    /// accepts connections but never answers holds a call for at most about
    /// `max_attempts × connect_timeout` (plus backoff).
    pub connect_timeout: Duration,
    /// Results larger than this (serialized JSON bytes of the structured and
    /// text content) are refused with `TooLarge`.
    pub max_result_bytes: usize,
    /// How a lost session is re-established.
    pub respawn: RespawnPolicy,
}

impl McpServerConfig {
    /// The default call timeout: 30 s.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// The default connection timeout: 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default result limit: 1 MiB.
    pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;

    /// A server spawned as `command` over stdio.
    pub fn stdio(name: Name, command: impl Into<String>) -> Self {
        Self::new(
            name,
            McpEndpoint::Stdio {
                command: command.into(),
                args: Vec::new(),
                env: BTreeMap::new(),
                cwd: None,
            },
        )
    }

    /// A server reached over streamable HTTP at `url`.
    pub fn http(name: Name, url: impl Into<String>) -> Self {
        Self::new(
            name,
            McpEndpoint::Http {
                url: url.into(),
                bearer_token: None,
            },
        )
    }

    /// A server at `endpoint` with the default limits.
    pub fn new(name: Name, endpoint: McpEndpoint) -> Self {
        Self {
            name,
            endpoint,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_result_bytes: Self::DEFAULT_MAX_RESULT_BYTES,
            respawn: RespawnPolicy::default(),
        }
    }

    /// Adds an argument (stdio only; ignored for HTTP).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        if let McpEndpoint::Stdio { args, .. } = &mut self.endpoint {
            args.push(arg.into());
        }
        self
    }

    /// Adds arguments (stdio only).
    pub fn args(mut self, more: impl IntoIterator<Item = impl Into<String>>) -> Self {
        if let McpEndpoint::Stdio { args, .. } = &mut self.endpoint {
            args.extend(more.into_iter().map(Into::into));
        }
        self
    }

    /// Sets an environment variable of the child (stdio only).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let McpEndpoint::Stdio { env, .. } = &mut self.endpoint {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Sets the child's working directory (stdio only).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        if let McpEndpoint::Stdio { cwd, .. } = &mut self.endpoint {
            *cwd = Some(dir.into());
        }
        self
    }

    /// Sets the bearer token (HTTP only).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        if let McpEndpoint::Http { bearer_token, .. } = &mut self.endpoint {
            *bearer_token = Some(token.into());
        }
        self
    }

    /// Sets the default call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets the bound of one connection attempt.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the result size limit.
    pub fn with_max_result_bytes(mut self, limit: usize) -> Self {
        self.max_result_bytes = limit;
        self
    }

    /// Sets the respawn policy.
    pub fn with_respawn(mut self, respawn: RespawnPolicy) -> Self {
        self.respawn = respawn;
        self
    }
}

/// `text` (an error message about `url`) with the secret parts of `url` —
/// userinfo, query, fragment — replaced by `…`, wherever they appear (an
/// HTTP client may quote the URL rewritten, e.g. without its userinfo).
pub(crate) fn scrub_url_secrets(text: &str, url: &str) -> String {
    let mut secrets = Vec::new();
    let (before_fragment, fragment) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        secrets.push(userinfo);
    }
    secrets.extend([query, fragment]);
    let mut out = text.replace(url, &redact_url(url));
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:pw@mcp.example.com:8443/mcp?token=s3cret#x"),
            "https://…@mcp.example.com:8443/mcp?…#…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:3001/mcp"),
            "http://127.0.0.1:3001/mcp"
        );
    }

    #[test]
    fn error_texts_lose_url_secrets() {
        let url = "http://u:pw@h:1/mcp?token=s3cret";
        let text = "error sending request for url (http://h:1/mcp?token=s3cret) as u:pw";
        let scrubbed = scrub_url_secrets(text, url);
        assert!(
            !scrubbed.contains("s3cret") && !scrubbed.contains("u:pw"),
            "{scrubbed}"
        );
    }

    #[test]
    fn debug_and_display_never_show_secrets() {
        let http = McpServerConfig::http(
            "search".parse().unwrap(),
            "https://alice:pa55@mcp.example.com/mcp?token=qu3ry-s3cret",
        )
        .bearer_token("b3arer-s3cret");
        let stdio = McpServerConfig::stdio("time".parse().unwrap(), "mcp-server-time")
            .arg("--api-key=arg-s3cret")
            .env("API_KEY", "env-s3cret");
        for shown in [
            format!("{http:?}"),
            format!("{}", http.endpoint),
            format!("{stdio:?}"),
            format!("{}", stdio.endpoint),
        ] {
            for secret in [
                "pa55",
                "qu3ry-s3cret",
                "b3arer-s3cret",
                "arg-s3cret",
                "env-s3cret",
            ] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
        }
        assert!(format!("{http:?}").contains("mcp.example.com/mcp"));
    }
}
