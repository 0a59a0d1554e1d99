//! One chat call through a model of a catalog (agentorg-llm): the answer,
//! the model that gave it, the tokens it used and, when the catalog has the
//! model's price, what it cost.
//!
//! ```text
//! # a local OpenAI-compatible server (llama.cpp, Ollama, vLLM) on :8080
//! cargo run --example chat --features llm -- --models examples/models.toml --model local "What is the capital of France?"
//! # a hosted model, its key in the environment
//! ANTHROPIC_API_KEY=... cargo run --example chat --features llm -- --model claude "Hello"
//! # the failover: Claude, then GPT, then Gemini, then the local model
//! cargo run --example chat --features llm -- --model smart "Hello"
//! ```
//!
//! Exit status 0 on an answer, 1 if no model answered, 2 on a bad catalog.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentorg::llm::{ChatRequest, ModelCatalog};
use clap::Parser;

/// One chat call through a model of a catalog.
#[derive(Debug, Parser)]
struct Args {
    /// The catalog (TOML).
    #[arg(long, default_value = "examples/models.toml")]
    models: PathBuf,
    /// The model's name in the catalog.
    #[arg(long, default_value = "local")]
    model: String,
    /// The longest answer, in tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// How long the call may take, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// The question.
    prompt: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let catalog = match ModelCatalog::load(&args.models) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let model = match catalog.model(&args.model) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let request = ChatRequest::new()
        .system("You are a helpful assistant. Answer briefly.")
        .user(args.prompt)
        .max_tokens(args.max_tokens)
        .timeout(Duration::from_secs(args.timeout_secs));
    match model.chat(&request).await {
        Ok(answer) => {
            println!("{}", answer.text.as_deref().unwrap_or_default());
            let by = answer.provider.as_deref().unwrap_or(model.name());
            let cost = catalog
                .price(by)
                .map(|p| format!(", ${:.6}", p.cost(answer.usage)))
                .unwrap_or_default();
            eprintln!(
                "-- {by}: {} tokens in, {} out{cost} ({:?})",
                answer.usage.input_tokens, answer.usage.output_tokens, answer.finish_reason
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
