//! The document limits of the StateStore contract (Firestore's).

use serde_json::Value;
use std::fmt::Write as _;

use super::{DocKey, StoreError};

/// The largest document, by Firestore's storage size rules: 1 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 1_048_576;

/// The deepest nesting of maps and arrays below a document's fields.
pub const MAX_DEPTH: usize = 20;

/// A document's size as Firestore counts it: the size of its name (each
/// collection and document id as a string, plus 16) plus its fields plus 32.
/// Strings count their UTF-8 bytes plus 1; numbers 8; booleans and null 1;
/// map keys as strings.
pub fn document_size(key: &DocKey, value: &Value) -> usize {
    name_size(key) + value_size(value) + 32
}

/// The size of a document's name: each collection and document id as a
/// string, plus 16.
fn name_size(key: &DocKey) -> usize {
    key.collection()
        .segments()
        .chain(std::iter::once(key.id()))
        .map(|s| s.len() + 1)
        .sum::<usize>()
        + 16
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 1,
        Value::Number(_) => 8,
        Value::String(s) => s.len() + 1,
        Value::Array(a) => a.iter().map(value_size).sum(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + 1 + value_size(v)).sum(),
    }
}

/// Checks a document against the contract's limits; see the [module
/// docs](super#document-limits).
///
/// ```
/// use agentorg_core::store::{validate_document, DocKey};
/// use serde_json::json;
///
/// let key = DocKey::new("tasks", "t1").unwrap();
/// assert!(validate_document(&key, &json!({"title": "Ship", "tags": ["a", "b"]})).is_ok());
/// assert!(validate_document(&key, &json!({"grid": [[1, 2], [3, 4]]})).is_err());
/// assert!(validate_document(&key, &json!({"": 1})).is_err());
/// assert!(validate_document(&key, &json!({"__name__": 1})).is_err());
/// assert!(validate_document(&key, &json!({"n": u64::MAX})).is_err());
/// assert!(validate_document(&key, &json!([1, 2])).is_err());
/// ```
pub fn validate_document(key: &DocKey, value: &Value) -> Result<(), StoreError> {
    let bad = |message: String| StoreError::invalid(Some(key), message);
    let Value::Object(fields) = value else {
        return Err(bad("a document must be a JSON object".to_owned()));
    };
    // One fast pass checks and measures, without paths; the message (with
    // the path) is made only for a document that fails it.
    let fields_size = fields.iter().try_fold(0usize, |size, (k, v)| {
        check_key(k).ok()?;
        Some(size + k.len() + 1 + measured(v, 0, false)?)
    });
    let Some(fields_size) = fields_size else {
        let mut path = String::new();
        for (k, v) in fields {
            check_key(k).map_err(bad)?;
            path.clear();
            path.push('/');
            path.push_str(k);
            check_value(v, 0, false, &mut path).map_err(bad)?;
        }
        return Err(bad("invalid document".to_owned()));
    };
    let size = name_size(key) + fields_size + 32;
    if size > MAX_DOCUMENT_BYTES {
        return Err(bad(format!(
            "document of {size} bytes exceeds the limit of {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_key(k: &str) -> Result<(), String> {
    if k.is_empty() {
        return Err("empty field name".to_owned());
    }
    if k.len() >= 4 && k.starts_with("__") && k.ends_with("__") {
        return Err(format!("field name {k:?} has the reserved form __x__"));
    }
    if k.len() > 1500 {
        return Err("field name longer than 1500 bytes".to_owned());
    }
    Ok(())
}

/// `v`'s size ([`value_size`]) if it passes [`check_value`] (the same
/// rules, without building the path a message needs).
fn measured(v: &Value, depth: usize, in_array: bool) -> Option<usize> {
    match v {
        Value::Null | Value::Bool(_) => Some(1),
        Value::Number(n) => (!(n.is_u64() && n.as_i64().is_none())).then_some(8),
        Value::String(s) => Some(s.len() + 1),
        Value::Array(items) => {
            if in_array || depth >= MAX_DEPTH {
                return None;
            }
            items
                .iter()
                .try_fold(0, |size, i| Some(size + measured(i, depth + 1, true)?))
        }
        Value::Object(fields) => {
            if depth >= MAX_DEPTH {
                return None;
            }
            fields.iter().try_fold(0, |size, (k, i)| {
                check_key(k).ok()?;
                Some(size + k.len() + 1 + measured(i, depth + 1, false)?)
            })
        }
    }
}

// `depth` counts the maps and arrays enclosing `v` below the document itself.
fn check_value(v: &Value, depth: usize, in_array: bool, path: &mut String) -> Result<(), String> {
    match v {
        Value::Number(n) if n.is_u64() && n.as_i64().is_none() => {
            Err(format!("integer {n} at {path} does not fit in i64"))
        }
        Value::Array(items) => {
            if in_array {
                return Err(format!("array directly inside an array at {path}"));
            }
            if depth + 1 > MAX_DEPTH {
                return Err(format!("nesting deeper than {MAX_DEPTH} at {path}"));
            }
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                // Only containers and numbers can fail: skip the path work
                // for the rest (strings, mostly).
                if !matches!(item, Value::Array(_) | Value::Object(_) | Value::Number(_)) {
                    continue;
                }
                path.truncate(len);
                // Writing into a String cannot fail.
                let _ = write!(path, "/{i}");
                check_value(item, depth + 1, true, path)?;
            }
            path.truncate(len);
            Ok(())
        }
        Value::Object(fields) => {
            if depth + 1 > MAX_DEPTH {
                return Err(format!("nesting deeper than {MAX_DEPTH} at {path}"));
            }
            let len = path.len();
            for (k, item) in fields {
                path.truncate(len);
                check_key(k).map_err(|m| format!("{m} at {path}"))?;
                path.push('/');
                path.push_str(k);
                check_value(item, depth + 1, false, path)?;
            }
            path.truncate(len);
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> DocKey {
        DocKey::new("c", "d").unwrap()
    }

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |acc, _| json!({ "x": acc }))
    }

    #[test]
    fn depth_limit_is_twenty_levels_below_fields() {
        assert!(validate_document(&key(), &json!({ "f": nested(20) })).is_ok());
        assert!(validate_document(&key(), &json!({ "f": nested(21) })).is_err());
    }

    #[test]
    fn size_limit_counts_like_firestore() {
        // name: "c" (2) + "d" (2) + 16 = 20; field "s" (2) + string (n + 1); + 32.
        let overhead = 20 + 2 + 1 + 32;
        let fits = "x".repeat(MAX_DOCUMENT_BYTES - overhead);
        let v = json!({ "s": fits });
        assert_eq!(document_size(&key(), &v), MAX_DOCUMENT_BYTES);
        assert!(validate_document(&key(), &v).is_ok());
        let over = json!({ "s": "x".repeat(MAX_DOCUMENT_BYTES - overhead + 1) });
        assert!(validate_document(&key(), &over).is_err());
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (i64::MAX as u64..=u64::MAX).prop_map(Value::from),
            "[a-z_]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(24, 256, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_fast_pass_agrees_with_the_checks(v in any_value(), in_array: bool) {
            let mut path = String::new();
            let checked = check_value(&v, 0, in_array, &mut path).is_ok();
            proptest::prop_assert_eq!(
                measured(&v, 0, in_array),
                checked.then(|| value_size(&v))
            );
        }
    }

    #[test]
    fn nested_keys_are_checked() {
        assert!(validate_document(&key(), &json!({ "a": { "": 1 } })).is_err());
        assert!(validate_document(&key(), &json!({ "a": [{ "__x__": 1 }] })).is_err());
        assert!(validate_document(&key(), &json!({ "a": [{ "b": [1] }] })).is_ok());
        assert!(validate_document(&key(), &json!({ "n": i64::MIN, "m": -1.5 })).is_ok());
    }
}
