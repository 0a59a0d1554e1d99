//! One chat call to the local model through `Model` beside a raw HTTP call
//! to the same server, in the same run: SmolLM2-135M-Instruct behind
//! llama-cpp-python's OpenAI-compatible server (agentorg-testkit starts it).
//!
//! * `llm_chat/raw_http`: the baseline, the fastest raw way — one reused
//!   `reqwest` client posts the same JSON body to `/v1/chat/completions`
//!   and parses the answer.
//! * `llm_chat/model`: `ProviderModel::chat` (the `genai` crate under it):
//!   our request mapped, tool names mapped, the answer and usage mapped,
//!   under a timeout.
//!
//! * `llm_turn/agent_turn`: one `LlmAgent` turn — a task delegated to a
//!   thinking role in memory, its prompt and the turn's tools built, one
//!   model call (`max_turns(1)`, `tool_choice: none`), the outcome
//!   committed — beside `llm_turn/raw_http`, a raw post of the agent's
//!   call's request rebuilt as OpenAI JSON (recorded once; each post names a
//!   fresh task id, as each turn's prompt does, so llama.cpp's prompt
//!   cache serves both paths alike).
//!
//! Both ask the same question at temperature 0 for at most 8 tokens, so
//! the server does the same work; the model's time dominates and the ratio
//! shows what the layer adds. After the two benches a paired pass (the two
//! calls back to back, alternating which goes first) prints both medians
//! and their ratio.
//!
//! ```text
//! cargo bench --bench llm --features llm -- --warm-up-time 2 --measurement-time 10
//! ```
//!
//! Needs `AGENTORG_LLAMA_PYTHON` and `AGENTORG_LLM_MODEL` (scripts/test
//! installs both into .tools/venv); without them it says so and measures
//! nothing. Results: `BENCHMARKS.md`.

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use agentorg::envelope::MessageId;
use agentorg::llm::{
    ChatRequest, ChatResponse, LlmAgent, Message, Model, ModelError, Provider, ProviderConfig,
    ProviderModel, ToolChoice,
};
use agentorg::prelude::{Org, OrgChart, RoleSpec, RuntimeConfig, TaskSpec};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";
const QUESTION: &str = "What is the capital of France?";
const MAX_TOKENS: u32 = 8;
/// The longest answer of the turn bench's call.
const TURN_TOKENS: u32 = 16;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn raw(client: &reqwest::Client, url: &str) -> String {
    let body = json!({
        "model": "smollm2",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
    });
    let answer: Value = client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer");
    answer["choices"][0]["message"]["content"]
        .as_str()
        .expect("a text answer")
        .to_owned()
}

async fn through_model(model: &ProviderModel) -> String {
    let request = ChatRequest::new()
        .system(SYSTEM)
        .user(QUESTION)
        .max_tokens(MAX_TOKENS)
        .temperature(0.0);
    model
        .chat(&request)
        .await
        .expect("the model answers")
        .text
        .expect("a text answer")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `rounds` paired rounds: `a` then `b`, or `b` then `a` (alternating),
/// back to back; prints both medians and `b`'s ÷ `a`'s.
fn paired<A, B, FA, FB>(
    rt: &tokio::runtime::Runtime,
    group: &str,
    rounds: usize,
    (a_name, mut a): (&str, A),
    (b_name, mut b): (&str, B),
) where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    FA: std::future::Future<Output = ()>,
    FB: std::future::Future<Output = ()>,
{
    let (mut a_times, mut b_times) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        rt.block_on(async {
            let mut time_a = async || {
                let t = Instant::now();
                a().await;
                a_times.push(t.elapsed());
            };
            let mut time_b = async || {
                let t = Instant::now();
                b().await;
                b_times.push(t.elapsed());
            };
            if i % 2 == 0 {
                time_a().await;
                time_b().await;
            } else {
                time_b().await;
                time_a().await;
            }
        });
    }
    let (ma, mb) = (median(a_times), median(b_times));
    println!(
        "{group} paired ({rounds} each): {a_name} median {ma:?}, {b_name} median {mb:?}, ratio {:.3}",
        mb.as_secs_f64() / ma.as_secs_f64()
    );
}

fn llm(c: &mut Criterion) {
    let server = match agentorg_testkit::LlamaServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("llm bench: no local model ({e}); nothing measured");
            return;
        }
    };
    let rt = runtime();
    let url = format!("{}/chat/completions", server.base_url());
    let client = reqwest::Client::new();
    let model = ProviderModel::new(
        "local",
        ProviderConfig::new(Provider::Openai, "smollm2").base_url(server.base_url()),
    )
    .expect("an HTTP client");
    // Same work: the same answer both ways.
    let (a, b) = rt.block_on(async { (raw(&client, &url).await, through_model(&model).await) });
    // (genai trims the text; the raw path keeps it as sent.)
    assert_eq!(
        a.trim(),
        b.trim(),
        "both paths get the same answer at temperature 0"
    );

    let mut group = c.benchmark_group("llm_chat");
    group.sample_size(20);
    group.bench_function("raw_http", |bench| {
        bench.iter(|| rt.block_on(raw(&client, &url)))
    });
    group.bench_function("model", |bench| {
        bench.iter(|| rt.block_on(through_model(&model)))
    });
    group.finish();

    let (client, url, model) = (&client, url.as_str(), &model);
    paired(
        &rt,
        "llm_chat",
        40,
        ("raw_http", || async move {
            raw(client, url).await;
        }),
        ("model", || async move {
            through_model(model).await;
        }),
    );
}

/// Keeps the last request it forwards (the agent's, to replay raw).
struct Recorder {
    inner: ProviderModel,
    last: Mutex<Option<ChatRequest>>,
}

#[agentorg::llm::async_trait]
impl Model for Recorder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        if let Ok(mut last) = self.last.lock() {
            *last = Some(request.clone());
        }
        self.inner.chat(request).await
    }
}

/// The OpenAI body of `request` (system and user messages, tools,
/// `tool_choice: none`), as the raw baseline posts it.
fn openai_body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| match m {
            Message::System { content } => json!({"role": "system", "content": content}),
            Message::User { content } => json!({"role": "user", "content": content}),
            other => panic!("the first call of a turn has no {other:?}"),
        })
        .collect();
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect();
    json!({
        "model": "smollm2",
        "messages": messages,
        "tools": tools,
        "tool_choice": "none",
        "max_tokens": TURN_TOKENS,
        "temperature": 0.0,
    })
}

/// Posts `body` with `task_id` (the recorded turn's) replaced by a fresh
/// one, as each agent turn's prompt names its own task: the server's
/// prompt cache then reuses the same prefix for both paths.
async fn raw_body(client: &reqwest::Client, url: &str, body: &str, task_id: &str) {
    let body = body.replace(task_id, MessageId::new().as_str());
    let answer: Value = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer");
    assert!(answer["choices"][0]["message"].is_object(), "{answer}");
}

/// One task to the thinking role, to its end (one model call: the turn
/// ends at `max_turns`).
async fn agent_turn(org: &Org) -> String {
    let task = org
        .principal()
        .delegate("writer", TaskSpec::new("Write a one-line greeting"))
        .await
        .expect("a delegation");
    let done = org
        .principal()
        .wait_for(&task.task_id, Duration::from_secs(120))
        .await
        .expect("the task ends");
    assert!(done.status.is_terminal());
    task.task_id.to_string()
}

/// One `LlmAgent` turn (a task delegated in memory, the role's prompt and
/// the turn's tools built, one model call, the outcome committed) beside
/// a raw post of the same request body.
fn llm_turn(c: &mut Criterion) {
    let server = match agentorg_testkit::LlamaServer::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("llm bench: no local model ({e}); nothing measured");
            return;
        }
    };
    let rt = runtime();
    let url = format!("{}/chat/completions", server.base_url());
    let client = reqwest::Client::new();
    let recorder = Arc::new(Recorder {
        inner: ProviderModel::new(
            "local",
            ProviderConfig::new(Provider::Openai, "smollm2").base_url(server.base_url()),
        )
        .expect("an HTTP client"),
        last: Mutex::new(None),
    });
    let chart = OrgChart::builder("bench")
        .principal("founder")
        .role(RoleSpec::new("writer").reports_to("founder"))
        .build()
        .expect("a chart");
    let writer = LlmAgent::new(recorder.clone())
        .max_turns(1)
        .max_tokens(TURN_TOKENS)
        .temperature(0.0)
        .tool_choice(ToolChoice::None);
    // Every turn ends failed (max_turns 1 and no tool called): no breaker,
    // or it would open after three.
    let config = RuntimeConfig::default().with_breaker(u32::MAX, Duration::from_secs(1));
    let org = rt
        .block_on(
            Org::builder(chart)
                .config(config)
                .agent("writer", writer)
                .start(),
        )
        .expect("an org");
    let recorded = rt.block_on(agent_turn(&org));
    let body = openai_body(
        &recorder
            .last
            .lock()
            .expect("the recorder")
            .clone()
            .expect("the agent called the model"),
    )
    .to_string();
    assert!(body.contains(&recorded), "the prompt names its task");

    let mut group = c.benchmark_group("llm_turn");
    group.sample_size(10);
    group.bench_function("raw_http", |bench| {
        bench.iter(|| rt.block_on(raw_body(&client, &url, &body, &recorded)))
    });
    group.bench_function("agent_turn", |bench| {
        bench.iter(|| rt.block_on(agent_turn(&org)).len())
    });
    group.finish();

    {
        let (client, url, body, recorded, org) = (
            &client,
            url.as_str(),
            body.as_str(),
            recorded.as_str(),
            &org,
        );
        paired(
            &rt,
            "llm_turn",
            20,
            ("raw_http", || async move {
                raw_body(client, url, body, recorded).await;
            }),
            ("agent_turn", || async move {
                agent_turn(org).await;
            }),
        );
    }
    rt.block_on(org.shutdown());
}

criterion_group!(benches, llm, llm_turn);
criterion_main!(benches);
