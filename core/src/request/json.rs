//! `application/json` token requests: one flat object whose values are strings (numbers
//! and booleans are read as their text, as Auth0 does). Nested values are refused while
//! reading, so deeply nested input costs no recursion; duplicate names are refused because
//! RFC 6749 §3.2 forbids repeated parameters and the cache key must not depend on which
//! copy wins.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::RequestError;

/// Decodes a JSON object into name/value pairs.
pub fn parse_json(body: &[u8]) -> Result<Vec<(String, String)>, RequestError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let pairs = deserializer
        // deserialize_any, not deserialize_map: the latter's refusal of another type formats
        // the value it found, floats included (~10 KB of float formatting in the .wasm).
        .deserialize_any(PairsVisitor)
        .and_then(|pairs| deserializer.end().map(|()| pairs))
        .map_err(|e| RequestError::bad(json_error_text(&e)))?;
    Ok(pairs)
}

fn json_error_text(e: &serde_json::Error) -> String {
    // serde_json's message for our own custom errors is already the description we want.
    match e.classify() {
        serde_json::error::Category::Data => format!("invalid JSON body: {e}"),
        _ => "the body is not valid JSON".to_owned(),
    }
}

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of token request parameters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            // `null` is an absent parameter: Auth0's own SDKs send `"organization": null`.
            if let Some(value) = map.next_value::<Option<ScalarText>>()? {
                pairs.push((name, value.0));
            }
        }
        Ok(pairs)
    }

    crate::json_object::objects_only!(NOT_AN_OBJECT);
}

const NOT_AN_OBJECT: &str = "the body must be a JSON object of token request parameters";

/// A parameter value: a string, or a number or boolean read as its JSON text.
struct ScalarText(String);

impl<'de> de::Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = ScalarText;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean parameter value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
        Ok(ScalarText(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarText, E> {
        Ok(ScalarText(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
        Ok(ScalarText(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
        Ok(ScalarText(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
        Ok(ScalarText(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
        // serde_json's own float printing (already in the module for serializing), not
        // `f64`'s `Display`, which would add ~20 KB of formatting code to the .wasm.
        serde_json::Number::from_f64(v)
            .map(|n| ScalarText(n.to_string()))
            .ok_or_else(|| E::custom("not a finite number"))
    }

    // Nested values: refused without serde's typed error (see `parse_json`).
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<ScalarText, A::Error> {
        Err(de::Error::custom(NOT_A_SCALAR))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<ScalarText, A::Error> {
        Err(de::Error::custom(NOT_A_SCALAR))
    }

    fn visit_unit<E: de::Error>(self) -> Result<ScalarText, E> {
        Err(E::custom(NOT_A_SCALAR))
    }
}

const NOT_A_SCALAR: &str = "a parameter value must be a string, number or boolean";

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        parse_json(body.as_bytes()).unwrap()
    }

    #[test]
    fn reads_strings_numbers_and_booleans() {
        assert_eq!(
            pairs(r#"{"client_id":"a","n":5,"f":1.5,"b":true}"#),
            vec![
                ("client_id".into(), "a".into()),
                ("n".into(), "5".into()),
                ("f".into(), "1.5".into()),
                ("b".into(), "true".into()),
            ]
        );
        assert_eq!(pairs("  {}  "), vec![]);
        assert_eq!(
            pairs(r#"{"client_id":"a","organization":null}"#),
            vec![("client_id".into(), "a".into())],
            "null is an absent parameter"
        );
        assert_eq!(pairs(r#"{"e":"\u00e9"}"#), vec![("e".into(), "é".into())]);
    }

    #[test]
    fn refuses_non_objects_and_nesting() {
        for body in [
            "[]",
            "\"x\"",
            "5",
            "null",
            r#"{"a":[1]}"#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":"b"} x"#,
            "{",
            "",
            "\u{feff}{}",
        ] {
            assert!(parse_json(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_json(deep.as_bytes()).is_err());
        let deep_objects = format!("{}{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
        assert!(parse_json(deep_objects.as_bytes()).is_err());
    }

    #[test]
    fn refuses_invalid_utf8() {
        assert!(parse_json(b"{\"a\":\"\xff\"}").is_err());
    }
}
