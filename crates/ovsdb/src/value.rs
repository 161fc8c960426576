//! OVSDB value encoding (RFC 7047 section 5.1): atoms, sets, maps and rows.

use std::collections::BTreeMap;

use serde_json::{json, Map as JsonMap, Value as Json};

use crate::error::{Error, Result};

/// A row UUID as printed by ovsdb (`xxxxxxxx-xxxx-...`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub String);

impl Uuid {
    /// The UUID string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scalar OVSDB value.
#[derive(Debug, Clone, PartialEq)]
pub enum Atom {
    /// `integer`
    Integer(i64),
    /// `real`
    Real(f64),
    /// `boolean`
    Boolean(bool),
    /// `string`
    String(String),
    /// `["uuid", "..."]`: reference to an existing row.
    Uuid(Uuid),
    /// `["named-uuid", "..."]`: reference to a row inserted in the same transaction.
    NamedUuid(String),
}

impl Atom {
    /// Encode as JSON.
    pub fn to_json(&self) -> Json {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => json!(r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(s),
            Atom::Uuid(u) => json!(["uuid", u.0]),
            Atom::NamedUuid(n) => json!(["named-uuid", n]),
        }
    }

    /// Decode from JSON.
    pub fn from_json(j: &Json) -> Result<Atom> {
        match j {
            Json::Bool(b) => Ok(Atom::Boolean(*b)),
            Json::String(s) => Ok(Atom::String(s.clone())),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Ok(Atom::Integer(i)),
                None => n
                    .as_f64()
                    .map(Atom::Real)
                    .ok_or_else(|| Error::Protocol(format!("bad number atom {n}"))),
            },
            Json::Array(a) => match (
                a.first().and_then(Json::as_str),
                a.get(1).and_then(Json::as_str),
                a.len(),
            ) {
                (Some("uuid"), Some(u), 2) => Ok(Atom::Uuid(Uuid(u.to_owned()))),
                (Some("named-uuid"), Some(n), 2) => Ok(Atom::NamedUuid(n.to_owned())),
                _ => Err(Error::Protocol(format!("bad atom {j}"))),
            },
            _ => Err(Error::Protocol(format!("bad atom {j}"))),
        }
    }

    /// The string, if this is a string atom.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an integer atom.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is a boolean atom.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The UUID, if this is a `uuid` atom.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        match self {
            Atom::Uuid(u) => Some(u),
            _ => None,
        }
    }
}

impl From<&str> for Atom {
    fn from(s: &str) -> Self {
        Atom::String(s.to_owned())
    }
}
impl From<String> for Atom {
    fn from(s: String) -> Self {
        Atom::String(s)
    }
}
impl From<i64> for Atom {
    fn from(i: i64) -> Self {
        Atom::Integer(i)
    }
}
impl From<bool> for Atom {
    fn from(b: bool) -> Self {
        Atom::Boolean(b)
    }
}
impl From<Uuid> for Atom {
    fn from(u: Uuid) -> Self {
        Atom::Uuid(u)
    }
}
impl From<&Uuid> for Atom {
    fn from(u: &Uuid) -> Self {
        Atom::Uuid(u.clone())
    }
}

/// A column value: an atom, a set or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A single atom (also the encoding of a one-element set).
    Atom(Atom),
    /// `["set", [...]]`
    Set(Vec<Atom>),
    /// `["map", [[k, v], ...]]`
    Map(Vec<(Atom, Atom)>),
}

impl Value {
    /// A set of atoms.
    pub fn set<I, A>(items: I) -> Value
    where
        I: IntoIterator<Item = A>,
        A: Into<Atom>,
    {
        Value::Set(items.into_iter().map(Into::into).collect())
    }

    /// The empty set (an unset optional column).
    pub fn empty_set() -> Value {
        Value::Set(Vec::new())
    }

    /// A map from key/value pairs.
    pub fn map<I, K, V>(pairs: I) -> Value
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// A string→string map (e.g. `external_ids`).
    pub fn string_map(m: &BTreeMap<String, String>) -> Value {
        Value::map(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Encode as JSON.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Atom(a) => a.to_json(),
            Value::Set(items) => {
                json!(["set", items.iter().map(Atom::to_json).collect::<Vec<_>>()])
            }
            Value::Map(pairs) => json!([
                "map",
                pairs
                    .iter()
                    .map(|(k, v)| json!([k.to_json(), v.to_json()]))
                    .collect::<Vec<_>>()
            ]),
        }
    }

    /// Decode from JSON.
    pub fn from_json(j: &Json) -> Result<Value> {
        if let Json::Array(a) = j {
            match (a.first().and_then(Json::as_str), a.get(1), a.len()) {
                (Some("set"), Some(Json::Array(items)), 2) => {
                    return items
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<_>>()
                        .map(Value::Set);
                }
                (Some("map"), Some(Json::Array(pairs)), 2) => {
                    return pairs
                        .iter()
                        .map(|p| match p {
                            Json::Array(kv) if kv.len() == 2 => {
                                Ok((Atom::from_json(&kv[0])?, Atom::from_json(&kv[1])?))
                            }
                            _ => Err(Error::Protocol(format!("bad map pair {p}"))),
                        })
                        .collect::<Result<_>>()
                        .map(Value::Map);
                }
                _ => {}
            }
        }
        Atom::from_json(j).map(Value::Atom)
    }

    /// Elements, treating an atom as a one-element set; `None` for maps.
    pub fn as_set(&self) -> Option<&[Atom]> {
        match self {
            Value::Atom(a) => Some(std::slice::from_ref(a)),
            Value::Set(s) => Some(s),
            Value::Map(_) => None,
        }
    }

    /// The single atom of an atom or a one-element set.
    pub fn as_single(&self) -> Option<&Atom> {
        match self.as_set()? {
            [a] => Some(a),
            _ => None,
        }
    }

    /// String of an atom or optional (0/1 element) string column.
    pub fn as_str(&self) -> Option<&str> {
        self.as_single().and_then(Atom::as_str)
    }

    /// Integer of an atom or optional integer column.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_single().and_then(Atom::as_i64)
    }

    /// UUID of an atom or optional reference column.
    pub fn as_uuid(&self) -> Option<&Uuid> {
        self.as_single().and_then(Atom::as_uuid)
    }

    /// All UUIDs of a reference set column.
    pub fn uuids(&self) -> Vec<Uuid> {
        self.as_set()
            .map(|s| s.iter().filter_map(Atom::as_uuid).cloned().collect())
            .unwrap_or_default()
    }

    /// A string→string map; an empty set also decodes as an empty map.
    pub fn as_string_map(&self) -> Option<BTreeMap<String, String>> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect(),
            Value::Set(s) if s.is_empty() => Some(BTreeMap::new()),
            _ => None,
        }
    }
}

impl<T: Into<Atom>> From<T> for Value {
    fn from(a: T) -> Self {
        Value::Atom(a.into())
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Set(v.map(Atom::Integer).into_iter().collect())
    }
}

/// A table row: column name → value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub BTreeMap<String, Value>);

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Builder-style column setter.
    pub fn with(mut self, column: &str, value: impl Into<Value>) -> Row {
        self.0.insert(column.to_owned(), value.into());
        self
    }

    /// Set a column.
    pub fn set(&mut self, column: &str, value: impl Into<Value>) {
        self.0.insert(column.to_owned(), value.into());
    }

    /// A column value.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }

    /// The `_uuid` column.
    pub fn uuid(&self) -> Option<&Uuid> {
        self.get("_uuid").and_then(Value::as_uuid)
    }

    /// A string (or optional string) column.
    pub fn get_str(&self, column: &str) -> Option<&str> {
        self.get(column).and_then(Value::as_str)
    }

    /// An integer (or optional integer) column.
    pub fn get_i64(&self, column: &str) -> Option<i64> {
        self.get(column).and_then(Value::as_i64)
    }

    /// A string→string map column; missing or malformed gives an empty map.
    pub fn get_string_map(&self, column: &str) -> BTreeMap<String, String> {
        self.get(column)
            .and_then(Value::as_string_map)
            .unwrap_or_default()
    }

    /// UUIDs of a reference-set column.
    pub fn get_uuids(&self, column: &str) -> Vec<Uuid> {
        self.get(column).map(Value::uuids).unwrap_or_default()
    }

    /// Encode as a JSON object.
    pub fn to_json(&self) -> Json {
        Json::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<JsonMap<_, _>>(),
        )
    }

    /// Decode from a JSON object.
    pub fn from_json(j: &Json) -> Result<Row> {
        let obj = j
            .as_object()
            .ok_or_else(|| Error::Protocol(format!("row is not an object: {j}")))?;
        obj.iter()
            .map(|(k, v)| Ok((k.clone(), Value::from_json(v)?)))
            .collect::<Result<_>>()
            .map(Row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_roundtrip() {
        let cases = [
            (Atom::Integer(-3), json!(-3)),
            (Atom::Real(1.5), json!(1.5)),
            (Atom::Boolean(true), json!(true)),
            (Atom::from("br-int"), json!("br-int")),
            (
                Atom::Uuid(Uuid("36bd4a87-2c3f-4bb0-a4e8-ad1d4a7c9b38".into())),
                json!(["uuid", "36bd4a87-2c3f-4bb0-a4e8-ad1d4a7c9b38"]),
            ),
            (
                Atom::NamedUuid("row1".into()),
                json!(["named-uuid", "row1"]),
            ),
        ];
        for (atom, j) in cases {
            assert_eq!(atom.to_json(), j);
            assert_eq!(Atom::from_json(&j).expect("decode"), atom);
        }
    }

    #[test]
    fn set_and_map_encoding() {
        let s = Value::set(["a", "b"]);
        assert_eq!(s.to_json(), json!(["set", ["a", "b"]]));
        assert_eq!(Value::from_json(&s.to_json()).expect("decode"), s);
        assert_eq!(Value::empty_set().to_json(), json!(["set", []]));
        assert_eq!(Value::from(None::<i64>).to_json(), json!(["set", []]));
        assert_eq!(Value::from(Some(7)).to_json(), json!(["set", [7]]));

        let mut m = BTreeMap::new();
        m.insert("iface-id".to_owned(), "abc".to_owned());
        m.insert("attached-mac".to_owned(), "fa:16:3e:00:00:01".to_owned());
        let v = Value::string_map(&m);
        assert_eq!(
            v.to_json(),
            json!([
                "map",
                [["attached-mac", "fa:16:3e:00:00:01"], ["iface-id", "abc"]]
            ])
        );
        assert_eq!(
            Value::from_json(&v.to_json())
                .expect("decode")
                .as_string_map(),
            Some(m)
        );

        let refs = Value::set([Atom::NamedUuid("p".into()), Atom::Uuid(Uuid("u1".into()))]);
        assert_eq!(
            refs.to_json(),
            json!(["set", [["named-uuid", "p"], ["uuid", "u1"]]])
        );
    }

    #[test]
    fn optional_columns_decode() {
        // ofport unset, ofport set, single ref encoded as atom, empty map as set.
        assert_eq!(
            Value::from_json(&json!(["set", []])).expect("d").as_i64(),
            None
        );
        assert_eq!(Value::from_json(&json!(5)).expect("d").as_i64(), Some(5));
        assert_eq!(
            Value::from_json(&json!(["set", [5]])).expect("d").as_i64(),
            Some(5)
        );
        let one = Value::from_json(&json!(["uuid", "u1"])).expect("d");
        assert_eq!(one.uuids(), vec![Uuid("u1".into())]);
        assert_eq!(
            Value::from_json(&json!(["set", []]))
                .expect("d")
                .as_string_map(),
            Some(BTreeMap::new())
        );
        assert_eq!(
            Value::from_json(&json!(["map", []]))
                .expect("d")
                .as_string_map(),
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            json!(null),
            json!({}),
            json!(["uuid"]),
            json!(["bogus", "x"]),
            json!(["map", [[1]]]),
            json!(["set", [null]]),
        ] {
            assert!(Value::from_json(&bad).is_err(), "{bad} should not decode");
        }
        assert!(Row::from_json(&json!([1])).is_err());
    }

    #[test]
    fn row_roundtrip_and_getters() {
        let j = json!({"_uuid": ["uuid", "u9"], "name": "tap0", "ofport": ["set", []],
                        "external_ids": ["map", [["iface-id", "p1"]]], "ports": ["set", [["uuid", "a"], ["uuid", "b"]]]});
        let row = Row::from_json(&j).expect("row");
        assert_eq!(row.uuid(), Some(&Uuid("u9".into())));
        assert_eq!(row.get_str("name"), Some("tap0"));
        assert_eq!(row.get_i64("ofport"), None);
        assert_eq!(
            row.get_string_map("external_ids")
                .get("iface-id")
                .map(String::as_str),
            Some("p1")
        );
        assert_eq!(row.get_uuids("ports").len(), 2);
        assert_eq!(row.to_json(), j);
        let built = Row::new()
            .with("name", "x")
            .with("ofport_request", Some(10));
        assert_eq!(
            built.to_json(),
            json!({"name": "x", "ofport_request": ["set", [10]]})
        );
    }
}
