//! `${NAME}` and `${NAME:-default}` in configuration files: the MCP
//! catalog and the model catalog read their strings through [`expand`].
//!
//! ```
//! use agentorg_core::env::expand;
//!
//! let env = |name: &str| (name == "PORT").then(|| "8080".to_owned());
//! assert_eq!(expand("http://127.0.0.1:${PORT}/v1", env).unwrap(), "http://127.0.0.1:8080/v1");
//! assert_eq!(expand("${HOST:-localhost}", env).unwrap(), "localhost");
//! assert!(expand("${KEY}", env).is_err());
//! ```

/// A string whose variables could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandError {
    /// A `${` with no `}`.
    #[error("unclosed `${{` in {text:?}")]
    Unclosed {
        /// The string.
        text: String,
    },
    /// `${NAME}` (no default) with `NAME` unset or empty.
    #[error("environment variable {name} is not set (used in {text:?})")]
    Unset {
        /// The variable.
        name: String,
        /// The string.
        text: String,
    },
}

/// Expands `${NAME}` (an error if unset or empty) and `${NAME:-default}`
/// in `text`, looking variables up with `env` (say
/// `|n| std::env::var(n).ok()`).
///
/// # Errors
/// [`ExpandError`] naming the variable or the unclosed `${`.
pub fn expand(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ExpandError::Unclosed { text: text.into() });
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ExpandError::Unset {
                    name: name.into(),
                    text: text.into(),
                })
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "BIN" => Some("/opt/bin/time".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_with_defaults() {
        assert_eq!(expand("${BIN}", env).unwrap(), "/opt/bin/time");
        assert_eq!(expand("x${NOPE:-y}z", env).unwrap(), "xyz");
        assert_eq!(expand("${EMPTY:-d}", env).unwrap(), "d");
        assert_eq!(expand("no vars", env).unwrap(), "no vars");
        assert!(matches!(
            expand("${NOPE}", env),
            Err(ExpandError::Unset { name, .. }) if name == "NOPE"
        ));
        assert!(matches!(
            expand("${EMPTY}", env),
            Err(ExpandError::Unset { .. })
        ));
        assert!(matches!(
            expand("${BIN", env),
            Err(ExpandError::Unclosed { .. })
        ));
    }
}
