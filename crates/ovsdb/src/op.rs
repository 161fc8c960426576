//! Typed `transact` operations (RFC 7047 section 5.2) and their results.

use serde_json::{json, Map as JsonMap, Value as Json};

use crate::error::{Error, Result};
use crate::value::{Row, Uuid, Value};

/// Condition function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `includes`
    Includes,
    /// `excludes`
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Lt => "<",
            Function::Le => "<=",
            Function::Eq => "==",
            Function::Ne => "!=",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

/// One `where` clause: `[column, function, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Column name.
    pub column: String,
    /// Comparison.
    pub function: Function,
    /// Right-hand side.
    pub value: Value,
}

impl Condition {
    /// Generic condition.
    pub fn new(column: &str, function: Function, value: impl Into<Value>) -> Condition {
        Condition {
            column: column.to_owned(),
            function,
            value: value.into(),
        }
    }

    /// `column == value`
    pub fn eq(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Eq, value)
    }

    /// `column includes value`
    pub fn includes(column: &str, value: impl Into<Value>) -> Condition {
        Condition::new(column, Function::Includes, value)
    }

    /// Encode as JSON.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.function.as_str(), self.value.to_json()])
    }
}

/// Mutator of a `mutate` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
    /// `%=`
    Mod,
    /// Insert elements into a set or pairs into a map.
    Insert,
    /// Delete elements from a set, or keys/pairs from a map.
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

/// One mutation: `[column, mutator, value]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// Column name.
    pub column: String,
    /// Mutator.
    pub mutator: Mutator,
    /// Argument.
    pub value: Value,
}

impl Mutation {
    /// Generic mutation.
    pub fn new(column: &str, mutator: Mutator, value: impl Into<Value>) -> Mutation {
        Mutation {
            column: column.to_owned(),
            mutator,
            value: value.into(),
        }
    }

    /// Encode as JSON.
    pub fn to_json(&self) -> Json {
        json!([self.column, self.mutator.as_str(), self.value.to_json()])
    }
}

/// `until` of a `wait` operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// Wait until the selected rows equal `rows`.
    Eq,
    /// Wait until they differ.
    Ne,
}

/// One operation of a `transact` call.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `select`
    Select {
        /// Table.
        table: String,
        /// Conditions (all must hold).
        conditions: Vec<Condition>,
        /// Columns to return; `None` means all.
        columns: Option<Vec<String>>,
    },
    /// `insert`
    Insert {
        /// Table.
        table: String,
        /// New row.
        row: Row,
        /// Name usable as `["named-uuid", name]` later in the transaction.
        uuid_name: Option<String>,
    },
    /// `update`
    Update {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns to set.
        row: Row,
    },
    /// `mutate`
    Mutate {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Mutations, applied in order.
        mutations: Vec<Mutation>,
    },
    /// `delete`
    Delete {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
    },
    /// `wait`: abort the transaction unless the selection (eventually) matches.
    Wait {
        /// Table.
        table: String,
        /// Conditions.
        conditions: Vec<Condition>,
        /// Columns compared.
        columns: Vec<String>,
        /// Comparison.
        until: WaitUntil,
        /// Expected rows (restricted to `columns`).
        rows: Vec<Row>,
        /// Server-side wait in ms; `Some(0)` fails immediately on mismatch.
        timeout_ms: Option<u64>,
    },
    /// `comment` (shows up in the server log).
    Comment(String),
}

fn strings(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| (*c).to_owned()).collect()
}

impl Operation {
    /// `select` of `columns` (empty slice = all columns).
    pub fn select(table: &str, conditions: Vec<Condition>, columns: &[&str]) -> Operation {
        let columns = (!columns.is_empty()).then(|| strings(columns));
        Operation::Select {
            table: table.to_owned(),
            conditions,
            columns,
        }
    }

    /// `insert`, optionally naming the new row for later references.
    pub fn insert(table: &str, row: Row, uuid_name: Option<&str>) -> Operation {
        Operation::Insert {
            table: table.to_owned(),
            row,
            uuid_name: uuid_name.map(str::to_owned),
        }
    }

    /// `update`
    pub fn update(table: &str, conditions: Vec<Condition>, row: Row) -> Operation {
        Operation::Update {
            table: table.to_owned(),
            conditions,
            row,
        }
    }

    /// `mutate`
    pub fn mutate(table: &str, conditions: Vec<Condition>, mutations: Vec<Mutation>) -> Operation {
        Operation::Mutate {
            table: table.to_owned(),
            conditions,
            mutations,
        }
    }

    /// `delete`
    pub fn delete(table: &str, conditions: Vec<Condition>) -> Operation {
        Operation::Delete {
            table: table.to_owned(),
            conditions,
        }
    }

    /// `wait`
    pub fn wait(
        table: &str,
        conditions: Vec<Condition>,
        columns: &[&str],
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    ) -> Operation {
        Operation::Wait {
            table: table.to_owned(),
            conditions,
            columns: strings(columns),
            until,
            rows,
            timeout_ms,
        }
    }

    /// `comment`
    pub fn comment(text: &str) -> Operation {
        Operation::Comment(text.to_owned())
    }

    /// The `op` name.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Select { .. } => "select",
            Operation::Insert { .. } => "insert",
            Operation::Update { .. } => "update",
            Operation::Mutate { .. } => "mutate",
            Operation::Delete { .. } => "delete",
            Operation::Wait { .. } => "wait",
            Operation::Comment(_) => "comment",
        }
    }

    /// Encode as JSON.
    pub fn to_json(&self) -> Json {
        fn conds(c: &[Condition]) -> Json {
            Json::Array(c.iter().map(Condition::to_json).collect())
        }
        let mut o = JsonMap::new();
        o.insert("op".into(), json!(self.name()));
        match self {
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                if let Some(cols) = columns {
                    o.insert("columns".into(), json!(cols));
                }
            }
            Operation::Insert {
                table,
                row,
                uuid_name,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("row".into(), row.to_json());
                if let Some(n) = uuid_name {
                    o.insert("uuid-name".into(), json!(n));
                }
            }
            Operation::Update {
                table,
                conditions,
                row,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert("row".into(), row.to_json());
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert(
                    "mutations".into(),
                    Json::Array(mutations.iter().map(Mutation::to_json).collect()),
                );
            }
            Operation::Delete { table, conditions } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                o.insert("table".into(), json!(table));
                o.insert("where".into(), conds(conditions));
                o.insert("columns".into(), json!(columns));
                o.insert(
                    "until".into(),
                    json!(if *until == WaitUntil::Eq { "==" } else { "!=" }),
                );
                o.insert(
                    "rows".into(),
                    Json::Array(rows.iter().map(Row::to_json).collect()),
                );
                if let Some(t) = timeout_ms {
                    o.insert("timeout".into(), json!(t));
                }
            }
            Operation::Comment(text) => {
                o.insert("comment".into(), json!(text));
            }
        }
        Json::Object(o)
    }
}

/// Result of one successful operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpResult {
    /// `uuid` of an `insert`.
    pub uuid: Option<Uuid>,
    /// `count` of an `update`, `mutate` or `delete`.
    pub count: Option<u64>,
    /// `rows` of a `select`.
    pub rows: Option<Vec<Row>>,
}

impl OpResult {
    /// Rows of a select (empty if none).
    pub fn rows(&self) -> &[Row] {
        self.rows.as_deref().unwrap_or_default()
    }

    /// Affected row count (0 if absent).
    pub fn count(&self) -> u64 {
        self.count.unwrap_or(0)
    }
}

/// Decode the `result` of `transact`, turning the first op error into [`Error::Transaction`].
pub fn parse_transact_result(ops: &[Operation], result: &Json) -> Result<Vec<OpResult>> {
    let items = result
        .as_array()
        .ok_or_else(|| Error::Protocol(format!("transact result is not an array: {result}")))?;
    for (index, item) in items.iter().enumerate() {
        if let Some(err) = item.get("error") {
            let error = err
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| err.to_string());
            let details = item
                .get("details")
                .and_then(Json::as_str)
                .map(str::to_owned);
            let op = ops
                .get(index)
                .map(Operation::name)
                .unwrap_or("commit")
                .to_owned();
            return Err(Error::Transaction {
                index,
                op,
                error,
                details,
            });
        }
    }
    if items.len() < ops.len() {
        return Err(Error::Protocol(format!(
            "transact returned {} results for {} operations",
            items.len(),
            ops.len()
        )));
    }
    items
        .iter()
        .take(ops.len())
        .map(|item| {
            if item.is_null() {
                return Ok(OpResult::default());
            }
            let uuid = match item.get("uuid") {
                Some(u) => Some(
                    Value::from_json(u)?
                        .as_uuid()
                        .cloned()
                        .ok_or_else(|| Error::Protocol(format!("bad insert uuid {u}")))?,
                ),
                None => None,
            };
            let count = item.get("count").and_then(Json::as_u64);
            let rows = match item.get("rows") {
                Some(Json::Array(rows)) => Some(
                    rows.iter()
                        .map(Row::from_json)
                        .collect::<Result<Vec<_>>>()?,
                ),
                Some(other) => return Err(Error::Protocol(format!("bad rows {other}"))),
                None => None,
            };
            Ok(OpResult { uuid, count, rows })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Atom;

    #[test]
    fn operations_encode_per_rfc() {
        let ins = Operation::insert(
            "Port",
            Row::new()
                .with("name", "p")
                .with("interfaces", Atom::NamedUuid("i".into())),
            Some("port"),
        );
        assert_eq!(
            ins.to_json(),
            json!({"op":"insert","table":"Port","row":{"interfaces":["named-uuid","i"],"name":"p"},"uuid-name":"port"})
        );
        let sel = Operation::select(
            "Bridge",
            vec![Condition::eq("name", "br-int")],
            &["_uuid", "datapath_type"],
        );
        assert_eq!(
            sel.to_json(),
            json!({"op":"select","table":"Bridge","where":[["name","==","br-int"]],"columns":["_uuid","datapath_type"]})
        );
        assert!(Operation::select("Bridge", vec![], &[])
            .to_json()
            .get("columns")
            .is_none());
        let m = Operation::mutate(
            "Bridge",
            vec![Condition::eq("_uuid", Uuid("u".into()))],
            vec![Mutation::new(
                "ports",
                Mutator::Insert,
                Value::set([Atom::NamedUuid("port".into())]),
            )],
        );
        assert_eq!(
            m.to_json(),
            json!({"op":"mutate","table":"Bridge","where":[["_uuid","==",["uuid","u"]]],
                   "mutations":[["ports","insert",["set",[["named-uuid","port"]]]]]})
        );
        let w = Operation::wait(
            "Bridge",
            vec![Condition::includes("ports", Uuid("p".into()))],
            &["name"],
            WaitUntil::Eq,
            vec![Row::new().with("name", "b")],
            Some(0),
        );
        assert_eq!(
            w.to_json(),
            json!({"op":"wait","table":"Bridge","where":[["ports","includes",["uuid","p"]]],"columns":["name"],
                   "until":"==","rows":[{"name":"b"}],"timeout":0})
        );
        assert_eq!(
            Operation::update(
                "Interface",
                vec![Condition::eq("name", "t")],
                Row::new().with("type", "internal")
            )
            .to_json(),
            json!({"op":"update","table":"Interface","where":[["name","==","t"]],"row":{"type":"internal"}})
        );
        assert_eq!(
            Operation::delete("Port", vec![]).to_json(),
            json!({"op":"delete","table":"Port","where":[]})
        );
        assert_eq!(
            Operation::comment("hi").to_json(),
            json!({"op":"comment","comment":"hi"})
        );
        assert_eq!(
            Mutation::new("next_cfg", Mutator::Add, 1).to_json(),
            json!(["next_cfg", "+=", 1])
        );
    }

    #[test]
    fn transact_result_decoding() {
        let ops = vec![
            Operation::insert("Interface", Row::new(), Some("i")),
            Operation::mutate("Open_vSwitch", vec![], vec![]),
            Operation::select("Open_vSwitch", vec![], &["next_cfg"]),
        ];
        let r = parse_transact_result(
            &ops,
            &json!([{"uuid":["uuid","u1"]},{"count":1},{"rows":[{"next_cfg":3}]}]),
        )
        .expect("ok");
        assert_eq!(r[0].uuid, Some(Uuid("u1".into())));
        assert_eq!(r[1].count(), 1);
        assert_eq!(r[2].rows()[0].get_i64("next_cfg"), Some(3));
    }

    #[test]
    fn transact_errors_name_the_op() {
        let ops = vec![
            Operation::select("A", vec![], &[]),
            Operation::insert("B", Row::new(), None),
        ];
        let err = parse_transact_result(
            &ops,
            &json!([{"rows":[]},{"error":"constraint violation","details":"dup"}]),
        )
        .expect_err("must fail");
        match &err {
            Error::Transaction {
                index,
                op,
                error,
                details,
            } => {
                assert_eq!(
                    (*index, op.as_str(), error.as_str(), details.as_deref()),
                    (1, "insert", "constraint violation", Some("dup"))
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_retryable_conflict());
        assert!(err
            .to_string()
            .contains("operation 1 (insert): constraint violation: dup"));
        // Commit-time error appended after the per-op results.
        let err = parse_transact_result(
            &ops,
            &json!([{"rows":[]},{"uuid":["uuid","x"]},{"error":"referential integrity violation"}]),
        )
        .expect_err("must fail");
        assert!(matches!(err, Error::Transaction { index: 2, ref op, .. } if op == "commit"));
        assert!(parse_transact_result(&ops, &json!([{"rows":[]}])).is_err());
        assert!(parse_transact_result(&ops, &json!({})).is_err());
    }
}
