//! One live MCP session: its client, its listing, and cancelling a call
//! whose caller went away.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentorg_core::tools::ToolError;
use agentorg_core::Name;
use process_wrap::tokio::CommandWrap;
#[cfg(unix)]
use process_wrap::tokio::ProcessGroup;
use rmcp::model::{CancelledNotification, CancelledNotificationParam, RequestId};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};

use super::*;
use crate::config::{redact_url, scrub_url_secrets, McpEndpoint};

/// One MCP session: the rmcp client and what was listed on it.
pub(super) struct Session {
    pub(super) peer: Peer<RoleClient>,
    /// The rmcp service task; taken by `close`. Dropping it cancels the
    /// service loop, which drops the transport (and kills the child).
    pub(super) service: tokio::sync::Mutex<Option<RunningService<RoleClient, Handler>>>,
    /// The stdio server's pid, also its process group id.
    pub(super) pid: Option<u32>,
    /// Set once the process group has been killed.
    pub(super) group_killed: AtomicBool,
    /// Counts the server's `notifications/tools/list_changed`.
    pub(super) changes: Arc<AtomicU64>,
    /// The cached listing (std lock: never held across an `.await`).
    pub(super) index: RwLock<Option<Arc<ToolIndex>>>,
}

/// The client side of a session: notes that the tool list changed.
pub(super) struct Handler {
    pub(super) changes: Arc<AtomicU64>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

/// Sends `notifications/cancelled` for a request when dropped armed: when
/// the call's future is dropped (its timeout, or the caller's) before the
/// answer arrives.
pub(super) struct CancelOnDrop {
    pub(super) peer: Peer<RoleClient>,
    pub(super) id: Option<RequestId>,
    pub(super) reason: &'static str,
}

impl CancelOnDrop {
    pub(super) fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let peer = self.peer.clone();
        let notification = CancelledNotification::new(CancelledNotificationParam::new(
            Some(id),
            Some(self.reason.to_owned()),
        ));
        runtime.spawn(async move {
            // Best effort: the session may be gone.
            let _ = peer.send_notification(notification.into()).await;
        });
    }
}

impl Session {
    pub(super) async fn open(name: &Name, endpoint: &McpEndpoint) -> Result<Self, ToolError> {
        match endpoint {
            McpEndpoint::Stdio {
                command,
                args,
                env,
                cwd,
            } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                if let Some(cwd) = cwd {
                    cmd.current_dir(cwd);
                }
                // Its own process group: SIGTERM and SIGKILL (on shutdown
                // and on drop) reach the server's children too.
                let mut cmd = CommandWrap::from(cmd);
                #[cfg(unix)]
                cmd.wrap(ProcessGroup::leader());
                let (transport, _stderr) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| ToolError::Unavailable {
                        server: name.to_string(),
                        message: format!("cannot spawn `{command}`: {e}"),
                        source: Some(Box::new(e)),
                    })?;
                let pid = transport.id();
                Self::start(name, transport, pid).await
            }
            McpEndpoint::Http { url, bearer_token } => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                if let Some(token) = bearer_token {
                    config = config.auth_header(token.as_str());
                }
                let started = Self::start(
                    name,
                    StreamableHttpClientTransport::from_config(config),
                    None,
                )
                .await;
                // The HTTP client's errors quote the URL, which may hold
                // credentials: redacted, and the source dropped.
                if redact_url(url) == *url {
                    return started;
                }
                started.map_err(|e| match e {
                    ToolError::Unavailable {
                        server, message, ..
                    } => ToolError::Unavailable {
                        server,
                        message: scrub_url_secrets(&message, url),
                        source: None,
                    },
                    other => other,
                })
            }
        }
    }

    pub(super) async fn start<T, E, A>(
        name: &Name,
        transport: T,
        pid: Option<u32>,
    ) -> Result<Self, ToolError>
    where
        T: IntoTransport<RoleClient, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let changes = Arc::new(AtomicU64::new(0));
        let handler = Handler {
            changes: Arc::clone(&changes),
        };
        let service = handler
            .serve(transport)
            .await
            .map_err(|e| ToolError::Unavailable {
                server: name.to_string(),
                message: format!("MCP handshake failed: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            peer: service.peer().clone(),
            service: tokio::sync::Mutex::new(Some(service)),
            pid,
            group_killed: AtomicBool::new(false),
            changes,
            index: RwLock::new(None),
        })
    }

    pub(super) fn is_alive(&self) -> bool {
        !self.peer.is_transport_closed()
    }

    pub(super) async fn close(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut service) = service {
            // Closes the transport: stdin closed, then SIGTERM, then SIGKILL
            // for a child process (rmcp's graceful shutdown, bounded).
            if let Err(e) = service.close_with_timeout(Duration::from_secs(10)).await {
                tracing::warn!(error = %e, "MCP session task failed while closing");
            }
            // The leader may have exited on its own, leaving children of
            // its own (launchers' servers, helpers) in its process group.
            self.kill_group();
        }
    }

    /// Kills the stdio server's process group (once).
    pub(super) fn kill_group(&self) {
        if self.group_killed.swap(true, Ordering::AcqRel) {
            return;
        }
        #[cfg(unix)]
        if let Some(pgid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{killpg, Signal};
            match killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    tracing::warn!(pgid, error = %e, "could not kill the MCP server's process group");
                }
            }
        }
    }
}

impl Drop for Session {
    /// Dropping the host kills the stdio server with its process group (the
    /// service loop, dropped too, would only close the server's stdin).
    fn drop(&mut self) {
        self.kill_group();
    }
}
