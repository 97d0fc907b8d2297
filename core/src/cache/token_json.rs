//! A token response's top-level members, each value kept exactly as the IdP wrote it.
//! Enough to check `access_token`, read `expires_in` and write the object back without it,
//! with no `serde_json::Value` tree (whose map and printer cost ~25 KB of .wasm).

use serde_json::value::RawValue;

use crate::json_object::{Json, entries};

/// The members of a JSON object, in document order; `None` for anything else, and for an
/// object that names a member twice (which of the two would the client read?).
pub fn members(body: &[u8]) -> Option<Vec<(String, &RawValue)>> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let members: Vec<(String, &RawValue)> = entries(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    let repeated =
        members.iter().enumerate().any(|(i, (name, _))| members[..i].iter().any(|(n, _)| n == name));
    (!repeated).then_some(members)
}

/// The member `name`, when it is a JSON string.
pub fn string_member(members: &[(String, &RawValue)], name: &str) -> Option<String> {
    let (_, raw) = members.iter().find(|(n, _)| n == name)?;
    match Json::parse(raw.get().as_bytes())? {
        Json::String(s) => Some(s),
        _ => None,
    }
}

/// `{"name":value,...}` of every member but `without`, values as written.
pub fn object_without(members: &[(String, &RawValue)], without: &str) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(members.iter().map(|(n, v)| n.len() + v.get().len() + 4).sum::<usize>() + 2);
    out.push(b'{');
    for (name, raw) in members.iter().filter(|(n, _)| n != without) {
        if out.len() > 1 {
            out.push(b',');
        }
        // A string always serializes; the name is escaped as JSON wants.
        let _ = serde_json::to_writer(&mut out, name);
        out.push(b':');
        out.extend_from_slice(raw.get().as_bytes());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_members_and_writes_the_object_back_without_one() {
        let body =
            br#" {"access_token" : "a\"b", "expires_in": 3600, "scope":["x", 1], "n\u00e9":{"k":null}} "#;
        let m = members(body).unwrap();
        assert_eq!(string_member(&m, "access_token").as_deref(), Some("a\"b"));
        assert_eq!(string_member(&m, "expires_in"), None);
        let rest = object_without(&m, "expires_in");
        let reparsed: serde_json::Value = serde_json::from_slice(&rest).unwrap();
        assert_eq!(
            reparsed,
            serde_json::json!({"access_token": "a\"b", "scope": ["x", 1], "né": {"k": null}})
        );
        assert_eq!(object_without(&m[..0], "x"), b"{}");
    }

    #[test]
    fn refuses_what_is_not_one_object_with_distinct_names() {
        for bad in [&b"[1]"[..], b"\"s\"", b"{\"a\":1} {}", b"{\"a\":1,\"a\":2}", b"{", b""] {
            assert!(members(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
