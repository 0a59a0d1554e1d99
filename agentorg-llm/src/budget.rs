//! [`Budget`]: how much an [`LlmAgent`](crate::LlmAgent) may spend, per
//! task and per role, and what happens when it is spent: the work
//! escalates to the role's manager with what was spent, instead of running
//! on.

use std::fmt;

use agentorg_core::agent::{AgentError, Context};
use agentorg_core::runtime::Spent;
use serde_json::json;

/// A spending limit: tokens (in and out), cost in US dollars (counted only
/// for calls whose model has a price), or both — spent when either is
/// reached.
///
/// ```
/// use agentorg_core::runtime::Spent;
/// use agentorg_llm::Budget;
///
/// let budget = Budget::tokens(50_000).and_cost_usd(0.25);
/// assert!(!budget.is_spent_by(&Spent::new(49_999, 0.10)));
/// assert!(budget.is_spent_by(&Spent::new(1_000, 0.25)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    tokens: Option<u64>,
    cost_usd: Option<f64>,
}

impl Budget {
    /// At most `tokens` tokens.
    pub fn tokens(tokens: u64) -> Self {
        Self {
            tokens: Some(tokens),
            cost_usd: None,
        }
    }

    /// At most `usd` US dollars.
    pub fn cost_usd(usd: f64) -> Self {
        Self {
            tokens: None,
            cost_usd: Some(usd),
        }
    }

    /// This budget, and at most `tokens` tokens.
    pub fn and_tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// This budget, and at most `usd` US dollars.
    pub fn and_cost_usd(mut self, usd: f64) -> Self {
        self.cost_usd = Some(usd);
        self
    }

    /// Whether `spent` has reached it.
    pub fn is_spent_by(&self, spent: &Spent) -> bool {
        self.tokens.is_some_and(|t| spent.tokens >= t)
            || self.cost_usd.is_some_and(|c| spent.cost_usd >= c)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.tokens, self.cost_usd) {
            (Some(t), Some(c)) => write!(f, "{t} tokens or ${c}"),
            (Some(t), None) => write!(f, "{t} tokens"),
            (None, Some(c)) => write!(f, "${c}"),
            (None, None) => f.write_str("unlimited"),
        }
    }
}

/// Whose budget was spent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// The task's (its calls, resumes included).
    Task,
    /// The role's (every call of the role, in every process).
    Role,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Role => "role",
        }
    }
}

/// The error that ends work whose `scope` budget is spent; for a task
/// (`escalate`), after staging an escalation to the role's manager with
/// what was spent (the task's failure still sends it; without a manager
/// there is none).
pub(crate) fn spent(
    cx: &Context,
    scope: Scope,
    budget: &Budget,
    spent: &Spent,
    model_calls: usize,
    escalate: bool,
) -> AgentError {
    let what = format!(
        "the {} budget of `{}` is spent: {} tokens, ${:.6}, of {budget}",
        scope.as_str(),
        cx.role(),
        spent.tokens,
        spent.cost_usd
    );
    let details = json!({
        "scope": scope.as_str(),
        "spent": spent,
        "budget": {"tokens": budget.tokens, "cost_usd": budget.cost_usd},
        "model_calls": model_calls,
    });
    if !escalate {
        return AgentError::permanent(what);
    }
    match cx.escalate("budget_spent", details) {
        Ok(()) => {
            let manager = cx
                .chart()
                .manager_of(cx.role())
                .map_or_else(String::new, |m| m.to_string());
            AgentError::permanent(format!("{what} (escalated to `{manager}`)"))
        }
        Err(e) => {
            tracing::warn!(role = %cx.role(), error = %e, "budget spent; not escalated");
            AgentError::permanent(what)
        }
    }
}
