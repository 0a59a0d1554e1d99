//! Named models from a TOML catalog: each a provider's model, or a failover
//! over others.
//!
//! # The catalog file
//!
//! ```toml
//! # A hosted model: the key is read from the environment variable at each
//! # call, never written here.
//! [models.claude]
//! provider = "anthropic"                  # openai | anthropic | gemini
//! model = "claude-sonnet-4-5"             # the provider's model id
//! api_key_env = "ANTHROPIC_API_KEY"
//! price = { input_per_mtok = 3.0, output_per_mtok = 15.0 }  # optional, USD per million tokens
//!
//! [models.gpt]
//! provider = "openai"
//! model = "gpt-4.1-mini"
//! api_key_env = "OPENAI_API_KEY"
//! timeout_ms = 30000                      # optional, default 60000 (> 0)
//!
//! # Any OpenAI-compatible server (llama.cpp, vLLM, Ollama): give its base URL.
//! [models.local]
//! provider = "openai"
//! model = "smollm2"
//! base_url = "${AGENTORG_LLM_URL:-http://127.0.0.1:8080/v1}"
//!
//! # A failover: the first that answers, a breaker per model.
//! [models.smart]
//! failover = ["claude", "gpt", "local"]
//! breaker = { failures = 3, cool_down_ms = 30000 }   # optional
//! attempt_timeout_ms = 60000   # optional; default: the longest timeout_ms of its models
//! ```
//!
//! Strings may name environment variables as `${NAME}` (an error if unset)
//! or `${NAME:-default}`. Model names are letters, digits, `_`, `-` and `.`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::provider::{Provider, ProviderConfig, ProviderModel};
use crate::{BreakerPolicy, Failover, Model, Usage};

/// A catalog that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The file could not be read.
    #[error("model catalog {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The catalog is not valid.
    #[error("invalid model catalog: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The model could not be built.
    #[error("model `{name}`: {source}")]
    Build {
        /// The model.
        name: String,
        /// Why.
        #[source]
        source: crate::ModelError,
    },
    /// No model of that name.
    #[error("no model `{name}` in the catalog (it has: {known})")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The names it has.
        known: String,
    },
}

fn invalid(message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        message: message.into(),
    }
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Per million tokens in.
    pub input_per_mtok: f64,
    /// Per million tokens out.
    pub output_per_mtok: f64,
}

impl Price {
    /// `input` and `output` dollars per million tokens.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Self {
        Self {
            input_per_mtok,
            output_per_mtok,
        }
    }

    /// What `usage` cost, in dollars.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    models: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    provider: Option<String>,
    model: Option<String>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    timeout_ms: Option<u64>,
    price: Option<Price>,
    failover: Option<Vec<String>>,
    breaker: Option<BreakerEntry>,
    attempt_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakerEntry {
    failures: u32,
    cool_down_ms: u64,
}

/// One entry of a catalog.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CatalogModel {
    /// A provider's model.
    Provider {
        /// How to reach it.
        config: ProviderConfig,
        /// What it costs, if known.
        price: Option<Price>,
    },
    /// A failover over other models of the catalog, in order.
    Failover {
        /// Their names.
        models: Vec<String>,
        /// The breaker of each.
        breaker: BreakerPolicy,
        /// Each attempt's timeout.
        attempt_timeout: Option<Duration>,
    },
}

/// Named models, as configured ([module docs](self)).
/// [`model`](Self::model) builds one.
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    models: BTreeMap<String, CatalogModel>,
}

impl ModelCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the model `name`, unchecked:
    /// [`model`](Self::model) refuses a failover naming anything but a
    /// provider's model of the catalog.
    pub fn insert(mut self, name: impl Into<String>, model: CatalogModel) -> Self {
        self.models.insert(name.into(), model);
        self
    }

    /// The entries, by name.
    pub fn entries(&self) -> &BTreeMap<String, CatalogModel> {
        &self.models
    }

    /// Reads a catalog file.
    ///
    /// # Errors
    /// `Io`, or `Invalid` naming the problem.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// Parses a catalog's text, expanding `${NAME}` and `${NAME:-default}`
    /// from the environment.
    ///
    /// # Errors
    /// `Invalid` naming the problem.
    pub fn from_toml_str(text: &str) -> Result<Self, CatalogError> {
        Self::from_toml_str_with_env(text, |name| std::env::var(name).ok())
    }

    /// Like [`from_toml_str`](Self::from_toml_str), looking variables up
    /// with `env`.
    ///
    /// # Errors
    /// `Invalid` naming the problem.
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let mut models = BTreeMap::new();
        for (name, entry) in file.models {
            check_name(&name)?;
            let model = entry_model(&name, entry, &env)?;
            models.insert(name, model);
        }
        let catalog = Self { models };
        catalog.check_failovers()?;
        Ok(catalog)
    }

    fn check_failovers(&self) -> Result<(), CatalogError> {
        for (name, model) in &self.models {
            if let CatalogModel::Failover { models, .. } = model {
                for inner in models {
                    match self.models.get(inner) {
                        None => {
                            return Err(invalid(format!(
                                "model `{name}`: its failover names `{inner}`, which is not in the catalog"
                            )))
                        }
                        Some(CatalogModel::Failover { .. }) => {
                            return Err(invalid(format!(
                                "model `{name}`: its failover names `{inner}`, another failover (list providers' models)"
                            )))
                        }
                        Some(CatalogModel::Provider { .. }) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The price of the provider's model `name` (`None` for a failover,
    /// whose price is that of the model that answered: see
    /// [`price_of`](Self::price_of)).
    pub fn price(&self, name: &str) -> Option<Price> {
        match self.models.get(name) {
            Some(CatalogModel::Provider { price, .. }) => *price,
            _ => None,
        }
    }

    /// The price of the model that answered a call
    /// ([`ChatResponse::provider`](crate::ChatResponse::provider)).
    pub fn price_of(&self, provider: Option<&str>) -> Option<Price> {
        provider.and_then(|p| self.price(p))
    }

    /// Builds the model `name`: a [`ProviderModel`] (named `name`), or a
    /// [`Failover`] over its models.
    ///
    /// # Errors
    /// `Unknown` if the catalog has no such model, `Invalid` for a failover
    /// that names anything but a provider's model of the catalog (possible
    /// only through [`insert`](Self::insert)), `Build` if an HTTP client
    /// cannot be built.
    pub fn model(&self, name: &str) -> Result<Arc<dyn Model>, CatalogError> {
        let entry = self.models.get(name).ok_or_else(|| CatalogError::Unknown {
            name: name.to_owned(),
            known: self.models.keys().cloned().collect::<Vec<_>>().join(", "),
        })?;
        Ok(match entry {
            CatalogModel::Provider { config, .. } => {
                Arc::new(ProviderModel::new(name, config.clone()).map_err(|source| {
                    CatalogError::Build {
                        name: name.to_owned(),
                        source,
                    }
                })?)
            }
            CatalogModel::Failover {
                models,
                breaker,
                attempt_timeout,
            } => {
                let longest = self.longest_timeout(name, models)?;
                let inner = models
                    .iter()
                    .map(|m| self.model(m))
                    .collect::<Result<Vec<_>, _>>()?;
                // Each attempt: as configured, else as long as the slowest
                // model's own timeout allows.
                let failover = Failover::new(inner)
                    .named(name)
                    .breaker(*breaker)
                    .attempt_timeout(attempt_timeout.unwrap_or(longest));
                Arc::new(failover)
            }
        })
    }
}

/// A TOML error without the source line it quotes (a key pasted into the
/// file must not reach a log): its message and where.
fn toml_error(text: &str, e: &toml::de::Error) -> CatalogError {
    let at = e
        .span()
        .map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" (line {line}, column {column})")
        })
        .unwrap_or_default();
    invalid(format!("{}{at}", e.message().trim_end()))
}

impl ModelCatalog {
    /// The longest timeout of the failover `name`'s `models`, each a
    /// provider's model of the catalog (one level: never a failover, never
    /// itself, whatever [`insert`](Self::insert) was given).
    fn longest_timeout(&self, name: &str, models: &[String]) -> Result<Duration, CatalogError> {
        let mut longest = Duration::ZERO;
        for m in models {
            let Some(CatalogModel::Provider { config, .. }) = self.models.get(m) else {
                return Err(invalid(format!(
                    "model `{name}`: its failover names `{m}`, which is not a provider's model of the catalog"
                )));
            };
            longest = longest.max(config.timeout);
        }
        Ok(longest)
    }
}

fn check_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "model name `{name}`: use 1 to 64 letters, digits, `_`, `-` or `.`"
        )))
    }
}

fn entry_model(
    name: &str,
    entry: Entry,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<CatalogModel, CatalogError> {
    let expand = |s: &str| {
        agentorg_core::env::expand(s, env).map_err(|e| invalid(format!("model `{name}`: {e}")))
    };
    let millis = |field: &str, ms: Option<u64>| match ms {
        Some(0) => Err(invalid(format!("model `{name}`: {field} must be > 0"))),
        ms => Ok(ms.map(Duration::from_millis)),
    };
    if let Some(models) = entry.failover {
        if entry.provider.is_some()
            || entry.model.is_some()
            || entry.base_url.is_some()
            || entry.api_key_env.is_some()
            || entry.timeout_ms.is_some()
            || entry.price.is_some()
        {
            return Err(invalid(format!(
                "model `{name}`: a failover takes `failover`, `breaker` and `attempt_timeout_ms` only (the models it names have the rest)"
            )));
        }
        if models.is_empty() {
            return Err(invalid(format!("model `{name}`: an empty failover")));
        }
        for (i, m) in models.iter().enumerate() {
            if models[..i].contains(m) {
                return Err(invalid(format!(
                    "model `{name}`: its failover lists `{m}` twice"
                )));
            }
        }
        let mut breaker = BreakerPolicy::default();
        if let Some(b) = entry.breaker {
            if b.failures == 0 {
                return Err(invalid(format!(
                    "model `{name}`: breaker.failures must be > 0"
                )));
            }
            breaker = BreakerPolicy::new(b.failures, Duration::from_millis(b.cool_down_ms));
        }
        return Ok(CatalogModel::Failover {
            models,
            breaker,
            attempt_timeout: millis("attempt_timeout_ms", entry.attempt_timeout_ms)?,
        });
    }
    if entry.breaker.is_some() || entry.attempt_timeout_ms.is_some() {
        return Err(invalid(format!(
            "model `{name}`: breaker and attempt_timeout_ms are for a failover"
        )));
    }
    let (Some(provider), Some(model)) = (entry.provider, entry.model) else {
        return Err(invalid(format!(
            "model `{name}`: give `provider` and `model` (or `failover`)"
        )));
    };
    let provider: Provider = expand(&provider)?
        .parse()
        .map_err(|e| invalid(format!("model `{name}`: {e}")))?;
    let model = expand(&model)?;
    if model.trim().is_empty() {
        return Err(invalid(format!("model `{name}`: an empty model id")));
    }
    let mut config = ProviderConfig::new(provider, model);
    if let Some(url) = entry.base_url {
        let url = expand(&url)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(format!(
                "model `{name}`: base_url `{url}` is not an http(s) URL"
            )));
        }
        config = config.base_url(url);
    }
    // Not expanded, and not printed if wrong: it names the variable, and a
    // key pasted here must not reach a log.
    if let Some(var) = entry.api_key_env {
        if !crate::provider::is_env_name(&var) {
            return Err(invalid(format!(
                "model `{name}`: api_key_env is not a variable name ([A-Za-z_][A-Za-z0-9_]*): it names the variable holding the key, never the key"
            )));
        }
        config = config.api_key_env(var);
    }
    if let Some(t) = millis("timeout_ms", entry.timeout_ms)? {
        config = config.timeout(t);
    }
    if let Some(p) = entry.price {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !ok(p.input_per_mtok) || !ok(p.output_per_mtok) {
            return Err(invalid(format!(
                "model `{name}`: a price is a number ≥ 0 (dollars per million tokens)"
            )));
        }
    }
    Ok(CatalogModel::Provider {
        config,
        price: entry.price,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::ApiKey;

    const CATALOG: &str = r#"
        [models.claude]
        provider = "anthropic"
        model = "claude-sonnet-4-5"
        api_key_env = "ANTHROPIC_API_KEY"
        price = { input_per_mtok = 3.0, output_per_mtok = 15.0 }

        [models.local]
        provider = "openai"
        model = "smollm2"
        base_url = "${LLM_URL:-http://127.0.0.1:8080/v1}"
        timeout_ms = 5000

        [models.smart]
        failover = ["claude", "local"]
        breaker = { failures = 2, cool_down_ms = 1000 }
    "#;

    fn env(name: &str) -> Option<String> {
        (name == "LLM_URL").then(|| "http://127.0.0.1:9999/v1".into())
    }

    #[test]
    fn reads_providers_prices_and_failovers() {
        let catalog = ModelCatalog::from_toml_str_with_env(CATALOG, env).unwrap();
        let Some(CatalogModel::Provider { config, price }) = catalog.entries().get("local") else {
            panic!("no local");
        };
        assert_eq!(config.provider, Provider::Openai);
        assert_eq!(
            config.base_url.as_deref(),
            Some("http://127.0.0.1:9999/v1/")
        );
        assert_eq!(config.api_key, ApiKey::None);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(*price, None);
        let claude = catalog.price("claude").unwrap();
        assert!((claude.cost(Usage::new(1_000_000, 100_000)) - 4.5).abs() < 1e-9);
        assert_eq!(catalog.price_of(Some("claude")), Some(claude));
        assert_eq!(catalog.price("smart"), None);
        assert_eq!(catalog.model("smart").unwrap().name(), "smart");
        assert_eq!(catalog.model("local").unwrap().name(), "local");
        let err = catalog.model("gpt").err().unwrap();
        assert!(err.to_string().contains("claude, local, smart"), "{err}");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let bad = |text: &str, says: &str| {
            let err = ModelCatalog::from_toml_str_with_env(text, env).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        };
        bad(
            "[models.a]\nprovider = \"mistral\"\nmodel = \"m\"",
            "unknown provider",
        );
        bad(
            "[models.a]\nprovider = \"openai\"",
            "give `provider` and `model`",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"ftp://x\"",
            "not an http",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\nbase_url = \"${NOPE}\"",
            "NOPE",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"sk-1 2\"",
            "not a variable name",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\ntimeout_ms = 0",
            "must be > 0",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key = \"sk\"",
            "unknown field",
        );
        bad("[models.a]\nprovider = \"openai\"\nmodel = \"m\"\nprice = { input_per_mtok = -1.0, output_per_mtok = 1.0 }", "price");
        bad("[models.a]\nprovider = \"openai\"\nmodel = \"m\"\nbreaker = { failures = 1, cool_down_ms = 1 }", "for a failover");
        bad("[models.a]\nfailover = [\"b\"]", "not in the catalog");
        bad("[models.a]\nfailover = []", "empty failover");
        bad("[models.b]\nprovider = \"openai\"\nmodel = \"m\"\n[models.a]\nfailover = [\"b\", \"b\"]", "twice");
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \" \"",
            "empty model id",
        );
        bad(
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"${OPENAI_API_KEY}\"",
            "not a variable name",
        );
        bad(
            "[models.a]\nfailover = [\"b\"]\nmodel = \"m\"",
            "failover takes",
        );
        bad("[models.b]\nprovider = \"openai\"\nmodel = \"m\"\n[models.a]\nfailover = [\"b\"]\n[models.c]\nfailover = [\"a\"]", "another failover");
        bad(
            "[models.\"a b\"]\nprovider = \"openai\"\nmodel = \"m\"",
            "model name",
        );
    }

    #[test]
    fn a_key_pasted_into_the_file_is_never_printed() {
        for text in [
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key = \"sk-live-123\"",
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"sk-live-123\"",
            "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = sk-live-123",
        ] {
            let err = ModelCatalog::from_toml_str_with_env(text, env).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("sk-live-123"), "{shown}");
            // A TOML error says where instead of quoting the line.
            assert!(
                shown.contains("line") || shown.contains("api_key_env"),
                "{shown}"
            );
        }
    }

    #[test]
    fn a_failover_inserted_naming_itself_is_refused_not_recursed() {
        let catalog = ModelCatalog::new().insert(
            "loop",
            CatalogModel::Failover {
                models: vec!["loop".into()],
                breaker: BreakerPolicy::default(),
                attempt_timeout: None,
            },
        );
        let err = catalog.model("loop").err().unwrap();
        assert!(err.to_string().contains("not a provider's model"), "{err}");
    }

    #[test]
    fn a_failover_waits_as_long_as_its_slowest_model() {
        let catalog = ModelCatalog::from_toml_str_with_env(CATALOG, env).unwrap();
        let CatalogModel::Failover {
            attempt_timeout, ..
        } = &catalog.entries()["smart"]
        else {
            panic!("not a failover");
        };
        assert_eq!(*attempt_timeout, None);
        // claude's default 60 s beats local's 5 s.
        let models = ["claude".to_owned(), "local".to_owned()];
        assert_eq!(
            catalog.longest_timeout("smart", &models).unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            catalog.longest_timeout("x", &models[1..]).unwrap(),
            Duration::from_secs(5)
        );
    }
}
