//! Serde helpers: nullable fields, `{key: value}` wrapping and single-key extraction.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `null` → `T::default()`.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Integer given as a number or a numeric string (Neutron subnetpool prefix lengths).
pub(crate) fn lenient_u32<'de, D>(d: D) -> Result<Option<u32>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u32),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(n)) => Ok(Some(n)),
        Some(NumOrStr::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(NumOrStr::Str(s)) => s.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Serializes as `{key: value}`.
pub(crate) struct Wrapped<'a, T: ?Sized>(pub &'a str, pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Wrapped<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, self.1)?;
        m.end()
    }
}

struct KeySeed<'a, T> {
    key: &'a str,
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for KeySeed<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for KeySeed<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with key {:?}", self.key)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if k == self.key && found.is_none() {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Decodes `body[key]` as `T`, skipping other keys without building them.
pub(crate) fn decode_key<T: DeserializeOwned>(body: &[u8], key: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = KeySeed::<T> {
        key,
        _t: PhantomData,
    };
    let v = seed.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    v.ok_or_else(|| format!("no {key:?} key in the response"))
}

/// Decodes the whole body as `T`.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct P {
        id: String,
    }

    #[test]
    fn key_extraction() {
        let body = br#"{"ports_links": [{"rel": "next", "href": "x"}], "ports": [{"id": "a"}, {"id": "b"}]}"#;
        let v: Vec<P> = decode_key(body, "ports").unwrap();
        assert_eq!(v, [P { id: "a".into() }, P { id: "b".into() }]);
        let e = decode_key::<Vec<P>>(body, "networks").unwrap_err();
        assert!(e.contains("no \"networks\" key"), "{e}");
        assert!(decode_key::<Vec<P>>(br#"{"ports": [{"id": 1}]}"#, "ports").is_err());
        assert!(decode_key::<Vec<P>>(br#"{"ports": []} trailing"#, "ports").is_err());
        assert!(decode_key::<Vec<P>>(b"[]", "ports").is_err());
        // Escaped key still matches.
        let v: Vec<P> = decode_key(br#"{"p\u006frts": []}"#, "ports").unwrap();
        assert!(v.is_empty());
    }

    #[test]
    fn wrapping() {
        let s = serde_json::to_string(&Wrapped("port", &serde_json::json!({"a": 1}))).unwrap();
        assert_eq!(s, r#"{"port":{"a":1}}"#);
    }

    #[test]
    fn lenient_numbers() {
        #[derive(Deserialize)]
        struct S {
            #[serde(default, deserialize_with = "lenient_u32")]
            n: Option<u32>,
        }
        for (src, want) in [
            (r#"{"n": 8}"#, Some(8)),
            (r#"{"n": "26"}"#, Some(26)),
            (r#"{"n": null}"#, None),
            ("{}", None),
        ] {
            let s: S = serde_json::from_str(src).unwrap();
            assert_eq!(s.n, want, "{src}");
        }
        assert!(serde_json::from_str::<S>(r#"{"n": "x"}"#).is_err());
    }
}
