//! The Google Cloud Firestore emulator, run directly with `java`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::http::{self, HttpResponse};
use crate::process::{self, Supervised};
use crate::TestkitError;

/// Environment variable with the `HOST:PORT` of an emulator that is already
/// running (`scripts/test` starts one for the whole run and sets it). When it
/// is set, [`FirestoreEmulator::shared`] uses it and starts nothing.
pub const FIRESTORE_EMULATOR_ENV: &str = "AGENTORG_FIRESTORE_EMULATOR";

/// Environment variable with the path of `cloud-firestore-emulator.jar`;
/// without it the kit asks `gcloud info` where the Cloud SDK is.
pub const FIRESTORE_JAR_ENV: &str = "AGENTORG_FIRESTORE_EMULATOR_JAR";

const MAIN_CLASS: &str = "com.google.cloud.datastore.emulator.firestore.CloudFirestore";
const JAR_IN_SDK: &str = "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar";
const JAR_HINT: &str = "install the Cloud SDK's Firestore emulator (`gcloud components install \
    cloud-firestore-emulator`, or the google-cloud-cli-firestore-emulator package) or set \
    AGENTORG_FIRESTORE_EMULATOR_JAR to cloud-firestore-emulator.jar; scripts/test starts one \
    emulator and exports AGENTORG_FIRESTORE_EMULATOR";
const JAVA_HINT: &str = "install a Java runtime (apt-get install default-jre-headless) and put \
    `java` on PATH";
/// Where the Cloud SDK usually lives when `gcloud` is not on `PATH`.
const SDK_GUESSES: &[&str] = &[
    "/usr/lib/google-cloud-sdk",
    "/usr/share/google-cloud-sdk",
    "/opt/google-cloud-sdk",
];
const START_ATTEMPTS: usize = 3;
/// The emulator accepts this token as an admin; the REST calls send it.
const AUTHORIZATION: (&str, &str) = ("Authorization", "Bearer owner");

/// A handle to a running Firestore emulator.
///
/// Cheap to clone. Get the per-test-binary one with [`shared`](Self::shared)
/// and isolate each test with its own [`unique_project`](Self::unique_project);
/// or start a private one with [`start`](Self::start), which stops when its
/// last handle is dropped. Either way a watchdog kills the emulator's `java`
/// when the test binary exits, even by SIGKILL.
///
/// ```no_run
/// # fn main() -> Result<(), agentorg_testkit::TestkitError> {
/// let fs = agentorg_testkit::FirestoreEmulator::shared()?;
/// let project = fs.unique_project();
/// let endpoint = fs.endpoint(); // "http://127.0.0.1:PORT", for the client
/// // … run the test against `project` …
/// fs.reset(&project)?;
/// # let _ = endpoint; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FirestoreEmulator {
    host_port: String,
    /// `None` for an emulator from `AGENTORG_FIRESTORE_EMULATOR`.
    process: Option<Arc<EmulatorProcess>>,
}

/// A started emulator; dropping it (after the last handle) kills `java`
/// and then removes the directory.
#[derive(Debug)]
struct EmulatorProcess {
    _process: Supervised,
    _dir: TempDir,
    log: PathBuf,
}

/// Options for a private [`FirestoreEmulator`].
#[derive(Debug, Clone, Default)]
pub struct FirestoreEmulatorBuilder {
    jar: Option<PathBuf>,
    java: Option<PathBuf>,
    ready_timeout: Option<Duration>,
}

impl FirestoreEmulatorBuilder {
    /// A builder with the defaults: jar from `AGENTORG_FIRESTORE_EMULATOR_JAR`
    /// or the Cloud SDK, `java` from `PATH`, 60 s readiness timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this `cloud-firestore-emulator.jar`. A path that does not exist
    /// gives [`TestkitError::Missing`].
    pub fn jar(mut self, path: impl Into<PathBuf>) -> Self {
        self.jar = Some(path.into());
        self
    }

    /// Uses this `java` binary instead of the one on `PATH`.
    pub fn java(mut self, path: impl Into<PathBuf>) -> Self {
        self.java = Some(path.into());
        self
    }

    /// How long the emulator may take to answer `GET /` (default 60 s; it
    /// usually takes about 1.5 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Starts a private emulator on a free loopback port and waits until it
    /// answers. Blocks the calling thread meanwhile.
    pub fn start(self) -> Result<FirestoreEmulator, TestkitError> {
        let jar = find_jar(self.jar)?;
        let java = match self.java {
            Some(java) if java.is_file() => java,
            Some(java) => {
                return Err(TestkitError::Missing {
                    what: format!("java not found at {}", java.display()),
                    hint: JAVA_HINT.to_string(),
                })
            }
            None => find_java()?,
        };
        let timeout = self.ready_timeout.unwrap_or(Duration::from_secs(60));
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match start_once(&java, &jar, timeout) {
                Ok(emulator) => return Ok(emulator),
                Err((e, true)) => last = Some(e),
                Err((e, false)) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// One start on a fresh port. The error's flag says whether the port was
/// taken (worth another try).
fn start_once(
    java: &Path,
    jar: &Path,
    timeout: Duration,
) -> Result<FirestoreEmulator, (TestkitError, bool)> {
    let io = |e: std::io::Error| (TestkitError::Io(e), false);
    let port = process::free_ports(1).map_err(io)?[0];
    let dir = tempfile::Builder::new()
        .prefix("agentorg-firestore-")
        .tempdir()
        .map_err(io)?;
    let log = dir.path().join("firestore-emulator.log");
    process::create_log(&log).map_err(io)?;
    let mut cmd = Command::new(java);
    cmd.arg("-cp")
        .arg(jar)
        .arg(MAIN_CLASS)
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        // The emulator writes nothing we need; keep java's own files here.
        .current_dir(dir.path());
    let mut child = Supervised::spawn(cmd, &log, Some(dir.path())).map_err(io)?;
    let host_port = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + timeout;
    let failure = loop {
        if let Some(status) = child.exited() {
            break format!("exited early with {status}");
        }
        if answers(&host_port) {
            let process = EmulatorProcess {
                _process: child,
                _dir: dir,
                log,
            };
            return Ok(FirestoreEmulator {
                host_port,
                process: Some(Arc::new(process)),
            });
        }
        if Instant::now() > deadline {
            break format!("GET / did not answer within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let taken = process::log_says_port_taken(&log);
    let _ = dir.keep(); // keep the log named in the error
    let err = TestkitError::Start {
        what: format!(
            "Firestore emulator (java -cp {} {MAIN_CLASS} --port={port})",
            jar.display()
        ),
        reason: format!("{failure}; {}", process::log_tail(&log, 20)),
        log,
    };
    Err((err, taken))
}

/// `true` when `GET /` answers 200 (the emulator says `Ok`).
fn answers(host_port: &str) -> bool {
    http::request(host_port, "GET", "/", &[], None, Duration::from_secs(2))
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

impl FirestoreEmulator {
    /// The emulator for this test binary: the one at
    /// `AGENTORG_FIRESTORE_EMULATOR` if set (checked to answer), else one
    /// started on first use and kept until the process exits (a watchdog kills
    /// it then). Tests share it and stay apart by using
    /// [`unique_project`](Self::unique_project).
    ///
    /// The first call blocks while the emulator starts (about 1.5 s); the
    /// result, success or failure, is cached for the whole process.
    pub fn shared() -> Result<FirestoreEmulator, TestkitError> {
        // A std Mutex: held across the (blocking) start so that concurrent
        // tests wait for the one emulator instead of starting their own.
        static SHARED: Mutex<Option<Result<FirestoreEmulator, TestkitError>>> = Mutex::new(None);
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = shared.get_or_insert_with(|| match std::env::var(FIRESTORE_EMULATOR_ENV) {
            Ok(addr) if !addr.trim().is_empty() => Self::connect(addr.trim()),
            _ => Self::start(),
        });
        match result {
            Ok(emulator) => Ok(emulator.clone()),
            Err(e) => Err(e.duplicate()),
        }
    }

    /// A handle to an emulator that is already running at `host_port`
    /// (`127.0.0.1:8686`), after checking that it answers within 10 s.
    pub fn connect(host_port: &str) -> Result<FirestoreEmulator, TestkitError> {
        let host_port = host_port
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(host_port) {
            if Instant::now() > deadline {
                return Err(TestkitError::Request {
                    what: format!("GET http://{host_port}/ ({FIRESTORE_EMULATOR_ENV})"),
                    reason: "the Firestore emulator there does not answer".to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(FirestoreEmulator {
            host_port: host_port.to_string(),
            process: None,
        })
    }

    /// Starts a private emulator with the default options; it stops when the
    /// last handle is dropped. See [`FirestoreEmulatorBuilder::start`].
    pub fn start() -> Result<FirestoreEmulator, TestkitError> {
        FirestoreEmulatorBuilder::new().start()
    }

    /// A builder for a private emulator with another jar or `java`.
    pub fn builder() -> FirestoreEmulatorBuilder {
        FirestoreEmulatorBuilder::new()
    }

    /// `127.0.0.1:PORT`, the form of `FIRESTORE_EMULATOR_HOST`.
    pub fn host_port(&self) -> String {
        self.host_port.clone()
    }

    /// `http://127.0.0.1:PORT`, the endpoint to give a Firestore client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host_port)
    }

    /// The emulator's log file, if the kit started it.
    pub fn log_path(&self) -> Option<&Path> {
        self.process.as_ref().map(|p| p.log.as_path())
    }

    /// A project id no other call in any process returns: starts with a
    /// letter, lowercase letters, digits and hyphens, at most 30 characters
    /// (e.g. `t1k2j-3f9x0a1b-7`). Each project is a separate, empty database
    /// in the emulator.
    pub fn unique_project(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PROCESS_TAG: OnceLock<String> = OnceLock::new();
        let tag = PROCESS_TAG.get_or_init(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            // pid plus start time: unique even if a pid is reused later.
            let nanos = (nanos % 36u128.pow(8)) as u64;
            format!(
                "{}-{}",
                base36(u64::from(std::process::id())),
                base36(nanos)
            )
        });
        format!("t{tag}-{}", base36(COUNTER.fetch_add(1, Ordering::Relaxed)))
    }

    /// Deletes every document of `project`
    /// (`DELETE /emulator/v1/projects/{project}/databases/(default)/documents`).
    pub fn reset(&self, project: &str) -> Result<(), TestkitError> {
        let path = format!("/emulator/v1/projects/{project}/databases/(default)/documents");
        let response = self.request("DELETE", &path, None)?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(TestkitError::Request {
                what: format!("DELETE {path}"),
                reason: format!("status {}: {}", response.status, response.body),
            })
        }
    }

    /// A raw REST call to the emulator, as its admin (`Authorization: Bearer
    /// owner`), with a JSON `body` if given; e.g. `GET
    /// /v1/projects/{p}/databases/(default)/documents/{collection}/{id}`. A
    /// loopback-only test helper for checking what a store really wrote.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<HttpResponse, TestkitError> {
        let mut headers = vec![AUTHORIZATION];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http::request(
            &self.host_port,
            method,
            path,
            &headers,
            body,
            Duration::from_secs(30),
        )
        .map_err(|e| TestkitError::Request {
            what: format!("{method} {}{path}", self.endpoint()),
            reason: e.to_string(),
        })
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// The jar: `explicit`, else `AGENTORG_FIRESTORE_EMULATOR_JAR`, else in the
/// Cloud SDK found by `gcloud info` (or at a usual install location).
fn find_jar(explicit: Option<PathBuf>) -> Result<PathBuf, TestkitError> {
    let missing = |what: String| TestkitError::Missing {
        what,
        hint: JAR_HINT.to_string(),
    };
    let explicit = explicit.or_else(|| {
        std::env::var_os(FIRESTORE_JAR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(jar) = explicit {
        return if jar.is_file() {
            Ok(jar)
        } else {
            Err(missing(format!(
                "Firestore emulator jar not found at {}",
                jar.display()
            )))
        };
    }
    let mut roots = Vec::new();
    if let Some(gcloud) = process::find_on_path("gcloud") {
        let output = Command::new(gcloud)
            .args(["info", "--format=value(installation.sdk_root)"])
            .stdin(std::process::Stdio::null())
            .output()?;
        let root = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !root.is_empty() {
            roots.push(PathBuf::from(root));
        }
    }
    roots.extend(SDK_GUESSES.iter().map(PathBuf::from));
    roots.iter().map(|root| root.join(JAR_IN_SDK)).find(|jar| jar.is_file()).ok_or_else(|| {
        missing(format!(
            "Firestore emulator jar not found ({FIRESTORE_JAR_ENV} unset, no {JAR_IN_SDK} under {})",
            roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn find_java() -> Result<PathBuf, TestkitError> {
    process::find_on_path("java")
        .or_else(|| {
            let home = PathBuf::from(std::env::var_os("JAVA_HOME")?);
            Some(home.join("bin/java")).filter(|java| java.is_file())
        })
        .ok_or_else(|| TestkitError::Missing {
            what: "java not found on PATH (nor in JAVA_HOME)".to_string(),
            hint: JAVA_HINT.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::base36;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u64::MAX).len(), 13);
    }
}
