//! JSON ↔ Firestore values.
//!
//! Writing: a document (a JSON object the contract's limits admit, checked by
//! `validate_document` before this runs) becomes Firestore fields one to one —
//! null, booleans, integers (`i64`), doubles, strings, arrays and maps. A JSON
//! number that is an integer becomes an `integerValue`, any other a
//! `doubleValue`, so `2` and `2.0` stay apart.
//!
//! Reading: the same types come back as they went. Types JSON has no place
//! for, which only another Firestore client can have written, follow the
//! proto3 JSON mapping (timestamps as RFC 3339 strings, bytes as base64, …);
//! see the crate docs.

use std::collections::HashMap;

use base64::Engine as _;
use firestore::gcloud_sdk::google::firestore::v1::{
    value::ValueType, ArrayValue, MapValue, Value as FsValue,
};
use serde_json::{Map, Number, Value};

/// The Firestore fields of a document's JSON object, consuming it.
///
/// Total over what `validate_document` admits. An integer past `i64`, which
/// it refuses, is the only value without a Firestore form: `Err` names it.
pub(crate) fn fields_from_json(
    object: Map<String, Value>,
) -> Result<HashMap<String, FsValue>, String> {
    object
        .into_iter()
        .map(|(k, v)| Ok((k, to_firestore(v)?)))
        .collect()
}

/// One JSON value as a Firestore value.
pub(crate) fn to_firestore(v: Value) -> Result<FsValue, String> {
    let t = match v {
        Value::Null => ValueType::NullValue(0),
        Value::Bool(b) => ValueType::BooleanValue(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ValueType::IntegerValue(i),
            None if n.is_f64() => ValueType::DoubleValue(n.as_f64().unwrap_or_default()),
            None => return Err(format!("integer {n} does not fit in i64")),
        },
        Value::String(s) => ValueType::StringValue(s),
        Value::Array(items) => ValueType::ArrayValue(ArrayValue {
            values: items
                .into_iter()
                .map(to_firestore)
                .collect::<Result<_, _>>()?,
        }),
        Value::Object(fields) => ValueType::MapValue(MapValue {
            fields: fields_from_json(fields)?,
        }),
    };
    Ok(FsValue {
        value_type: Some(t),
    })
}

/// A document's fields as a JSON object, consuming them.
pub(crate) fn fields_to_json(fields: HashMap<String, FsValue>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

/// One Firestore value as JSON.
pub(crate) fn to_json(v: FsValue) -> Value {
    let Some(t) = v.value_type else {
        return Value::Null;
    };
    match t {
        ValueType::NullValue(_) => Value::Null,
        ValueType::BooleanValue(b) => Value::Bool(b),
        ValueType::IntegerValue(i) => Value::Number(i.into()),
        ValueType::DoubleValue(d) => match Number::from_f64(d) {
            Some(n) => Value::Number(n),
            // Only another client can store these; proto3 JSON spells them so.
            None if d.is_nan() => Value::String("NaN".to_owned()),
            None if d > 0.0 => Value::String("Infinity".to_owned()),
            None => Value::String("-Infinity".to_owned()),
        },
        ValueType::StringValue(s) => Value::String(s),
        ValueType::ArrayValue(a) => Value::Array(a.values.into_iter().map(to_json).collect()),
        ValueType::MapValue(m) => fields_to_json(m.fields),
        ValueType::TimestampValue(ts) => Value::String(ts.to_string()),
        ValueType::BytesValue(b) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        ValueType::ReferenceValue(r) => Value::String(r),
        ValueType::GeoPointValue(p) => {
            let mut m = Map::new();
            m.insert("latitude".to_owned(), json_f64(p.latitude));
            m.insert("longitude".to_owned(), json_f64(p.longitude));
            Value::Object(m)
        }
        // Query and pipeline expressions, never stored in a document.
        ValueType::FieldReferenceValue(_)
        | ValueType::VariableReferenceValue(_)
        | ValueType::FunctionValue(_)
        | ValueType::PipelineValue(_) => Value::Null,
    }
}

fn json_f64(d: f64) -> Value {
    Number::from_f64(d).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firestore::gcloud_sdk::google::r#type::LatLng;
    use firestore::gcloud_sdk::prost_types::Timestamp;
    use proptest::prelude::*;
    use serde_json::json;

    fn round_trip(v: Value) -> Value {
        to_json(to_firestore(v).expect("maps"))
    }

    #[test]
    fn integers_and_floats_stay_apart() {
        let v = to_firestore(json!(2)).unwrap();
        assert_eq!(v.value_type, Some(ValueType::IntegerValue(2)));
        let v = to_firestore(json!(2.0)).unwrap();
        assert_eq!(v.value_type, Some(ValueType::DoubleValue(2.0)));
        assert_eq!(round_trip(json!(2.0)), json!(2.0));
        assert_ne!(round_trip(json!(2.0)), json!(2));
        assert_eq!(round_trip(json!(i64::MIN)), json!(i64::MIN));
        assert_eq!(round_trip(json!(i64::MAX)), json!(i64::MAX));
    }

    #[test]
    fn integers_past_i64_have_no_firestore_form() {
        assert!(to_firestore(json!({"n": u64::MAX})).is_err());
        assert!(to_firestore(json!(i64::MAX as u64)).is_ok());
    }

    #[test]
    fn nested_values_round_trip() {
        let v = json!({
            "a": [1, "two", 3.5, null, {"k": [true, false]}],
            "m": {"with.dot": {"deeper": {}}, "with space": []},
        });
        assert_eq!(round_trip(v.clone()), v);
    }

    #[test]
    fn foreign_types_follow_proto3_json() {
        let ts = FsValue {
            value_type: Some(ValueType::TimestampValue(Timestamp {
                seconds: 0,
                nanos: 1_000,
            })),
        };
        assert_eq!(to_json(ts), json!("1970-01-01T00:00:00.000001Z"));
        let b = FsValue {
            value_type: Some(ValueType::BytesValue(vec![0, 1, 2])),
        };
        assert_eq!(to_json(b), json!("AAEC"));
        let g = FsValue {
            value_type: Some(ValueType::GeoPointValue(LatLng {
                latitude: 1.5,
                longitude: -2.0,
            })),
        };
        assert_eq!(to_json(g), json!({"latitude": 1.5, "longitude": -2.0}));
        let nan = FsValue {
            value_type: Some(ValueType::DoubleValue(f64::NAN)),
        };
        assert_eq!(to_json(nan), json!("NaN"));
        let inf = FsValue {
            value_type: Some(ValueType::DoubleValue(f64::NEG_INFINITY)),
        };
        assert_eq!(to_json(inf), json!("-Infinity"));
        assert_eq!(to_json(FsValue { value_type: None }), Value::Null);
    }

    /// JSON values without arrays directly inside arrays (the limits refuse
    /// those before mapping).
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(
                    inner
                        .clone()
                        .prop_filter("no array in array", |v| !v.is_array()),
                    0..5
                )
                .prop_map(Value::Array),
                prop::collection::btree_map(".{1,8}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_admitted_value_round_trips(v in json_value()) {
            prop_assert_eq!(round_trip(v.clone()), v);
        }
    }
}
