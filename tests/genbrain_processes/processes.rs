//! The org's processes for `genbrain_processes`: started, killed with
//! SIGKILL, stopped with SIGTERM; every one still running is killed on drop.

use super::*;

/// One process of the org.
pub(crate) struct Process {
    /// `founder` or a role, with the run number for a restarted one.
    name: String,
    role: String,
    child: Child,
    /// The write end of its stdin: when the test ends, however it ends, the
    /// process reads end of file and stops (`--stop-on-stdin-eof`).
    _stdin: Option<ChildStdin>,
    status: Option<ExitStatus>,
}

/// The org's processes: started, killed, stopped; every one still running
/// is killed on drop.
pub(crate) struct Processes {
    exe: PathBuf,
    args: Vec<String>,
    pub(crate) logs: PathBuf,
    procs: Vec<Process>,
}

impl Processes {
    pub(crate) fn new(exe: &Path, args: Vec<String>, logs: PathBuf) -> Self {
        Self {
            exe: exe.to_owned(),
            args,
            logs,
            procs: Vec::new(),
        }
    }

    /// Starts the process of `role` (`founder` drives): stderr (and for the
    /// roles stdout) to `<role>.<run>.log`, the founder's stdout to
    /// `founder.stdout`.
    pub(crate) fn start(&mut self, role: &str) {
        self.start_with(role, &[]);
    }

    /// [`start`](Self::start), with `extra` arguments.
    pub(crate) fn start_with(&mut self, role: &str, extra: &[&str]) {
        let run = 1 + self.procs.iter().filter(|p| p.role == role).count();
        let log = File::create(self.logs.join(format!("{role}.{run}.log"))).expect("a log file");
        let stdout = if role == "founder" {
            File::create(self.logs.join("founder.stdout")).expect("a stdout file")
        } else {
            log.try_clone().expect("the log file again")
        };
        let mut child = Command::new(&self.exe)
            .args(&self.args)
            .args(["--roles", role])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.exe.display()));
        let stdin = child.stdin.take();
        self.procs.push(Process {
            name: format!("{role}.{run}"),
            role: role.to_owned(),
            child,
            _stdin: stdin,
            status: None,
        });
    }

    fn running(&mut self, role: &str) -> &mut Process {
        self.procs
            .iter_mut()
            .rfind(|p| p.role == role && p.status.is_none())
            .unwrap_or_else(|| panic!("no running process of {role}"))
    }

    /// SIGKILL, as a crash.
    pub(crate) fn kill9(&mut self, role: &str) {
        let p = self.running(role);
        p.child.kill().expect("SIGKILL");
        p.status = Some(p.child.wait().expect("reaping the killed process"));
    }

    /// Waits up to `limit` for the founder's process to exit, and returns
    /// its status; panics if a role process exits meanwhile (they serve until
    /// told to stop).
    pub(crate) async fn wait_founder(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            for p in self.procs.iter_mut().filter(|p| p.status.is_none()) {
                if let Some(status) = p.child.try_wait().expect("waiting for a process") {
                    p.status = Some(status);
                    assert_eq!(p.role, "founder", "{} exited on its own: {status}", p.name);
                    return status;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the founder's process still running after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to every process still running; their exit statuses, each
    /// within `limit`.
    pub(crate) async fn terminate_all(&mut self, limit: Duration) -> Vec<(String, ExitStatus)> {
        let running: Vec<usize> = (0..self.procs.len())
            .filter(|&i| self.procs[i].status.is_none())
            .collect();
        for &i in &running {
            let pid = self.procs[i].child.id().to_string();
            let sent = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("running kill -TERM");
            assert!(sent.success(), "kill -TERM {pid} failed");
        }
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        for i in running {
            let p = &mut self.procs[i];
            let status = loop {
                if let Some(s) = p.child.try_wait().expect("waiting for a process") {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} still running {limit:?} after SIGTERM",
                    p.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            p.status = Some(status);
            out.push((p.name.clone(), status));
        }
        out
    }

    /// A file of the logs directory (e.g. `backend.1.log`), as text.
    pub(crate) fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.logs.join(file)).unwrap_or_default()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.status.is_none() {
                let _ = p.child.kill();
                p.status = p.child.wait().ok();
            }
        }
        if std::thread::panicking() {
            let mut err = std::io::stderr().lock();
            for p in &self.procs {
                let log = self.read(&format!("{}.log", p.name));
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                let _ = writeln!(err, "---- {NAME}: {}.log (last lines) ----", p.name);
                for line in tail.iter().rev() {
                    let _ = writeln!(err, "{line}");
                }
            }
            let _ = writeln!(
                err,
                "---- {NAME}: logs kept in {} ----",
                self.logs.display()
            );
        }
    }
}
