//! Reading a few fields of a JSON document without building its tree: the fields are borrowed
//! as raw JSON text and read in place, as `serde_json::Value`'s accessors would read them (a
//! field given twice counts with its last value; a value of another type reads as `None`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields `names` of the JSON object in `bytes`, as raw JSON text; `None` when `bytes` is
/// not a JSON object (or not JSON).
pub fn fields<'a, const N: usize>(bytes: &'a [u8], names: [&str; N]) -> Option<[Option<&'a RawValue>; N]> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out = Fields { names: &names }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

/// `Value::as_str`: a JSON string's text, borrowed when it has no escapes.
pub fn str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// `Value::as_u64`: only an integer in range (no sign, fraction or exponent).
pub fn u64(raw: &RawValue) -> Option<u64> {
    raw.get().parse().ok()
}

/// `Value::as_bool`.
pub fn bool(raw: &RawValue) -> Option<bool> {
    match raw.get() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Whether the value is an array with no element (`as_array().is_some_and(Vec::is_empty)`).
pub fn is_empty_array(raw: &RawValue) -> bool {
    raw.get()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .is_some_and(|inner| inner.trim_matches([' ', '\t', '\n', '\r']).is_empty())
}

struct Fields<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Fields<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = [None; N];
        while let Some(i) = map.next_key_seed(Index(self.names))? {
            match i {
                Some(i) => out[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A key's position among the names (escapes decoded), `None` for another key.
struct Index<'n>(&'n [&'n str]);

impl<'de> DeserializeSeed<'de> for Index<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Index<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| *n == s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn fields_read_as_a_tree_reads_them() {
        let text = br#" {"a":1,"b":"x\"y","a":[ 2 ],"c\u0064":null,"e":{"a":3}} "#;
        let [a, b, cd, z] = fields(text, ["a", "b", "cd", "z"]).unwrap();
        assert_eq!(a.unwrap().get(), "[ 2 ]", "the last of a repeated field");
        assert_eq!(str(b.unwrap()).as_deref(), Some("x\"y"));
        assert_eq!(cd.unwrap().get(), "null", "an escaped key is its name");
        assert!(z.is_none());
        for bad in [&b"[1]"[..], b"1", b"{", b"{} x", b""] {
            assert!(fields(bad, ["a"]).is_none());
        }
    }

    #[test]
    fn scalars_read_as_value_reads_them() {
        for text in [
            "0",
            "16",
            "-1",
            "-0",
            "1.0",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "\"7\"",
            "true",
            "false",
            "null",
            "\"s\"",
            "\"\\u00e9\"",
            "[]",
            "[ ]",
            "[\n]",
            "[1]",
            "{}",
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(u64(raw), v.as_u64(), "{text}");
            assert_eq!(bool(raw), v.as_bool(), "{text}");
            assert_eq!(str(raw).as_deref(), v.as_str(), "{text}");
            assert_eq!(is_empty_array(raw), v.as_array().is_some_and(Vec::is_empty), "{text}");
        }
    }
}
