//! Third-party MCP servers: `mcp-server-time` (PyPI) and
//! `@modelcontextprotocol/server-everything` (npm), as `scripts/test`
//! installs them into `.tools/`.
//!
//! The stdio servers are spawned by the client under test (it owns their
//! lifetime), so the kit only finds their programs: [`mcp_time_command`] and
//! [`mcp_everything_command`]. `server-everything` over streamable HTTP is a
//! server the kit runs: [`EverythingHttp`], on a free loopback port, killed
//! on drop (and by the watchdog if the test binary dies).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{self, Supervised};
use crate::TestkitError;

/// Environment variable naming the `mcp-server-time` program.
pub const MCP_TIME_ENV: &str = "AGENTORG_MCP_TIME";
/// Environment variable naming the `mcp-server-everything` program.
pub const MCP_EVERYTHING_ENV: &str = "AGENTORG_MCP_EVERYTHING";

const MCP_HINT: &str = "run scripts/test (or `AGENTORG_TEST_ONLY_SETUP=1 scripts/test`), \
which installs mcp-server-time into .tools/venv and @modelcontextprotocol/server-everything \
into .tools/npm and exports AGENTORG_MCP_TIME and AGENTORG_MCP_EVERYTHING";

fn find(env: &str, program: &str) -> Result<PathBuf, TestkitError> {
    let (path, source) = match std::env::var_os(env) {
        Some(path) if !path.is_empty() => (PathBuf::from(path), env),
        _ => match process::find_on_path(program) {
            Some(path) => (path, "PATH"),
            None => {
                return Err(TestkitError::Missing {
                    what: format!("{program} not found ({env} unset, none on PATH)"),
                    hint: MCP_HINT.to_string(),
                })
            }
        },
    };
    if !path.is_file() {
        return Err(TestkitError::Missing {
            what: format!("{program} not found at {} ({source})", path.display()),
            hint: MCP_HINT.to_string(),
        });
    }
    Ok(path)
}

/// The `mcp-server-time` program (stdio): `$AGENTORG_MCP_TIME`, else
/// `mcp-server-time` on `PATH`; `Missing` otherwise.
pub fn mcp_time_command() -> Result<PathBuf, TestkitError> {
    find(MCP_TIME_ENV, "mcp-server-time")
}

/// The `mcp-server-everything` program (`stdio` by default, or
/// `streamableHttp` as its first argument): `$AGENTORG_MCP_EVERYTHING`,
/// else on `PATH`; `Missing` otherwise. It needs `node` on `PATH`.
pub fn mcp_everything_command() -> Result<PathBuf, TestkitError> {
    let path = find(MCP_EVERYTHING_ENV, "mcp-server-everything")?;
    if process::find_on_path("node").is_none() {
        return Err(TestkitError::Missing {
            what: "node not found on PATH (server-everything is a Node program)".into(),
            hint: "install Node.js (apt-get install nodejs npm)".into(),
        });
    }
    Ok(path)
}

/// `server-everything` serving MCP over streamable HTTP at
/// `http://127.0.0.1:PORT/mcp`. Killed on drop.
#[derive(Debug)]
pub struct EverythingHttp {
    process: Option<Supervised>,
    port: u16,
    dir: tempfile::TempDir,
}

impl EverythingHttp {
    /// Starts it on a free loopback port and waits (up to 20 s) until the
    /// port accepts connections.
    ///
    /// # Errors
    /// `Missing` if the program or `node` is not installed; `Start` if it
    /// does not come up (with its log).
    pub fn start() -> Result<Self, TestkitError> {
        let program = mcp_everything_command()?;
        let dir = tempfile::Builder::new()
            .prefix("agentorg-mcp-everything-")
            .tempdir()?;
        let log = dir.path().join("server-everything.log");
        process::create_log(&log)?;
        let (process, port) = process::start_on_free_port(
            "server-everything (streamableHttp)",
            &log,
            Duration::from_secs(20),
            "connection accepted",
            |port| {
                let mut cmd = Command::new(&program);
                cmd.arg("streamableHttp").env("PORT", port.to_string());
                cmd
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )?;
        Ok(Self {
            process: Some(process),
            port,
            dir,
        })
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server-everything.log")
    }

    /// Kills it (SIGKILL); [`url`](Self::url) then refuses connections.
    pub fn kill(&mut self) {
        self.process.take();
    }
}
