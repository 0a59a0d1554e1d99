//! Event names and subscription patterns of the chart: checking them,
//! matching a name against a pattern, and normalizing a role's patterns.
//!
//! An event name is one or more tokens joined by `.` (`deploy.complete`),
//! each token a [`Name`](crate::Name); a subscription pattern may also use
//! `*` for one token and, last, `>` for one or more.

/// Why `name` is not a valid event name, if it is not.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an event name is empty".to_owned());
    }
    for tok in name.split('.') {
        if tok == "*" || tok == ">" {
            return Err(format!(
                "event name `{name}` has a wildcard (only subscriptions may)"
            ));
        }
        crate::name::validate(tok)
            .map_err(|e| format!("event name `{name}`: token `{tok}`: {e}"))?;
    }
    Ok(())
}

/// Why `pattern` is not a valid subscription pattern, if it is not.
pub(crate) fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("a subscription pattern is empty".to_owned());
    }
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, tok) in tokens.iter().enumerate() {
        match *tok {
            "*" => {}
            ">" if i + 1 == tokens.len() => {}
            ">" => {
                return Err(format!(
                    "subscription `{pattern}`: `>` may only be the last token"
                ))
            }
            _ => crate::name::validate(tok)
                .map_err(|e| format!("subscription `{pattern}`: token `{tok}`: {e}"))?,
        }
    }
    Ok(())
}

/// Whether the event `name` matches the subscription `pattern`.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    covers(pattern, name)
}

/// Whether every name `b` matches also matches `a` (`b` may be a pattern or
/// a name).
pub(crate) fn covers(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `patterns` without duplicates and without any pattern another one
/// covers (`deploy.complete` goes when `deploy.*` is there), sorted: the
/// filters of one durable subscription, which NATS refuses to overlap.
pub(crate) fn normalize(patterns: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let covered = patterns.iter().enumerate().any(|(j, q)| {
            // Of two equal patterns, the first stays.
            j != i && covers(q, p) && (!covers(p, q) || j < i)
        });
        if !covered && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_patterns_are_checked() {
        assert!(check_name("deploy.complete").is_ok());
        assert!(check_name("deploy.*").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("deploy..complete").is_err());
        assert!(check_pattern("deploy.*").is_ok());
        assert!(check_pattern("ci.>").is_ok());
        assert!(check_pattern(">").is_ok());
        assert!(check_pattern("ci.>.x").is_err());
        assert!(check_pattern("ci .x").is_err());
    }

    #[test]
    fn matching() {
        assert!(matches("deploy.*", "deploy.complete"));
        assert!(!matches("deploy.*", "deploy.complete.eu"));
        assert!(matches("deploy.>", "deploy.complete.eu"));
        assert!(!matches("deploy.>", "deploy"));
        assert!(matches("deploy.complete", "deploy.complete"));
        assert!(!matches("deploy.complete", "deploy.rollback"));
    }

    #[test]
    fn normalizing_drops_what_another_pattern_covers() {
        let v = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            normalize(&v(&[
                "deploy.complete",
                "deploy.*",
                "ci.build.x",
                "ci.>",
                "deploy.*"
            ])),
            v(&["ci.>", "deploy.*"])
        );
        assert_eq!(normalize(&v(&["a.*.c", "a.b.*"])), v(&["a.*.c", "a.b.*"]));
        assert_eq!(normalize(&v(&["a.b", "a.b"])), v(&["a.b"]));
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![Just("a"), Just("b"), Just("*"), Just(">")].prop_map(str::to_owned)
    }

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(token(), 1..4).prop_filter_map("valid", |toks| {
            let p = toks.join(".");
            check_pattern(&p).is_ok().then_some(p)
        })
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 1..5).prop_map(|t| t.join("."))
    }

    proptest! {
        /// Normalizing keeps exactly the names the patterns matched, and
        /// leaves no pattern that another covers.
        #[test]
        fn normalized_patterns_match_the_same_names(
            ps in proptest::collection::vec(pattern(), 1..5),
            names in proptest::collection::vec(name(), 1..10),
        ) {
            let n = normalize(&ps);
            for name in &names {
                prop_assert_eq!(
                    ps.iter().any(|p| matches(p, name)),
                    n.iter().any(|p| matches(p, name))
                );
            }
            for (i, p) in n.iter().enumerate() {
                for (j, q) in n.iter().enumerate() {
                    prop_assert!(i == j || !covers(q, p), "{q} covers {p}");
                }
            }
        }
    }
}
