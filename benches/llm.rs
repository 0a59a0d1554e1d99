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

use agentorg::llm::{ChatRequest, Model, Provider, ProviderConfig, ProviderModel};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

const SYSTEM: &str = "You are a helpful assistant. Answer briefly.";
const QUESTION: &str = "What is the capital of France?";
const MAX_TOKENS: u32 = 8;

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

    let (mut raws, mut models) = (Vec::new(), Vec::new());
    for i in 0..40 {
        rt.block_on(async {
            let time_raw = async {
                let t = Instant::now();
                raw(&client, &url).await;
                t.elapsed()
            };
            let time_model = async {
                let t = Instant::now();
                through_model(&model).await;
                t.elapsed()
            };
            if i % 2 == 0 {
                raws.push(time_raw.await);
                models.push(time_model.await);
            } else {
                models.push(time_model.await);
                raws.push(time_raw.await);
            }
        });
    }
    let (r, m) = (median(raws), median(models));
    println!(
        "llm_chat paired (40 each): raw_http median {r:?}, model median {m:?}, ratio {:.3}",
        m.as_secs_f64() / r.as_secs_f64()
    );
}

criterion_group!(benches, llm);
criterion_main!(benches);
