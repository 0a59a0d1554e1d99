//! Child processes that cannot outlive the test binary.
//!
//! Every server the kit starts is a [`Supervised`] process: the server itself
//! plus a watchdog, a tiny `sh` whose stdin is a pipe held only by this
//! process. When the test binary exits in any way — normally, by panic, or by
//! `SIGKILL` — the kernel closes that pipe, the watchdog's `read` returns, and
//! it kills the server with `SIGKILL` and removes the server's directory. This
//! is what lets the shared Firestore emulator live in a never-dropped static.
//!
//! The watchdog ignores SIGINT/SIGTERM/SIGHUP so that a Ctrl-C sent to the
//! whole process group cannot take it down before it has done its job (the
//! servers themselves exit on those signals anyway).
//!
//! Ordering matters in every teardown: the watchdog is killed (with
//! `SIGKILL`, which skips its cleanup) *before* its pipe is closed and before
//! the server is reaped, so it never kills a reused pid nor removes a
//! directory we still want (a restart's store, or a failed test's log).

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The watchdog script: `$1` is the server's pid, `$2` a directory to remove
/// (or empty).
const WATCHDOG: &str = r#"trap '' INT TERM HUP
read _eof
kill -9 "$1" 2>/dev/null
if [ -n "$2" ]; then sleep 0.2; rm -rf "$2"; fi"#;

/// A running server and its watchdog. Dropping it kills both.
#[derive(Debug)]
pub(crate) struct Supervised {
    child: Child,
    watchdog: Option<Child>,
}

impl Supervised {
    /// Spawns `cmd` with stdout and stderr appended to `log`, then its
    /// watchdog, which removes `cleanup` (if any) after killing it.
    pub(crate) fn spawn(mut cmd: Command, log: &Path, cleanup: Option<&Path>) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(file, "--- agentorg-testkit: starting {cmd:?}")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        let mut me = Supervised {
            child,
            watchdog: None,
        };
        let cleanup = cleanup.map(Path::as_os_str).unwrap_or(OsStr::new(""));
        // If the watchdog cannot start, `me` is dropped and kills the child.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("agentorg-testkit-watchdog")
            .arg(me.child.id().to_string())
            .arg(cleanup)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        me.watchdog = Some(watchdog);
        Ok(me)
    }

    /// The server's pid.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the server has exited.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks the server to stop with SIGTERM, waits up to `grace`, then kills
    /// it. Consumes the process.
    pub(crate) fn terminate(mut self, grace: Duration) {
        self.disarm();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {} 2>/dev/null", self.child.id()))
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Drop kills and reaps.
    }

    /// Kills the watchdog without letting it act.
    fn disarm(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.disarm();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `name` in `PATH`, as the shell would.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `n` distinct free loopback ports. All listeners are held until every port
/// is chosen, so the ports differ from each other; another process may still
/// take one before the server binds it (callers retry on a bind failure).
pub(crate) fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("last log lines:\n{tail}")
}

/// `true` when the log mentions a port that was taken between our choosing it
/// and the server binding it.
pub(crate) fn log_says_port_taken(log: &Path) -> bool {
    let text = std::fs::read_to_string(log)
        .unwrap_or_default()
        .to_ascii_lowercase();
    text.contains("address already in use") || text.contains("bindexception")
}

/// Creates (or truncates) a log file so its path exists for error messages.
pub(crate) fn create_log(path: &Path) -> io::Result<()> {
    File::create(path).map(drop)
}

/// Starts a server on a free loopback port: `command(port)` is spawned with
/// its output in `log`, and it is ready once `ready(port)` holds (polled
/// until `timeout`; `waiting_for` says what, for the error). A port taken
/// between our choosing it and the server binding it is tried again with
/// another, up to three times.
///
/// # Errors
/// `Start` (with the log's tail) if the server exits or is not ready in
/// time; `Io` if it cannot be spawned.
pub(crate) fn start_on_free_port(
    what: &str,
    log: &Path,
    timeout: Duration,
    waiting_for: &str,
    command: impl Fn(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> Result<(Supervised, u16), crate::TestkitError> {
    let start_error = |reason: String| crate::TestkitError::Start {
        what: what.to_owned(),
        log: log.to_path_buf(),
        reason,
    };
    let mut last = None;
    for _ in 0..3 {
        let port = free_ports(1)?[0];
        let mut process = Supervised::spawn(command(port), log, None)?;
        let deadline = Instant::now() + timeout;
        let failed = loop {
            if ready(port) {
                return Ok((process, port));
            }
            if let Some(status) = process.exited() {
                break start_error(format!("exited with {status}; {}", log_tail(log, 20)));
            }
            if Instant::now() > deadline {
                break start_error(format!(
                    "no {waiting_for} on port {port} after {timeout:?}; {}",
                    log_tail(log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !log_says_port_taken(log) {
            return Err(failed);
        }
        last = Some(failed);
    }
    Err(last.unwrap_or_else(|| start_error("no free port".into())))
}
