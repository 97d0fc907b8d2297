//! A JSON object read as its members in document order, repeats included: for callers that
//! keep the pairs (per-client rules, a token response's members) and need no map for them.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

/// Every member of the object `deserializer` reads, each value as `T`. Fits
/// `#[serde(deserialize_with = ...)]`.
pub fn entries<'de, D, T>(deserializer: D) -> Result<Vec<(String, T)>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_map(Entries(std::marker::PhantomData))
}

struct Entries<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
    type Value = Vec<(String, T)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = map.next_entry()? {
            out.push(entry);
        }
        Ok(out)
    }
}
