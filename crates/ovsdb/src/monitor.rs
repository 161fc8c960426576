//! `monitor` subscriptions (RFC 7047 section 4.1.5).

use std::collections::BTreeMap;

use serde_json::{json, Map as JsonMap, Value as Json};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::value::{Row, Uuid};

/// Which columns of a table to monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorRequest {
    /// Table name.
    pub table: String,
    /// Columns (empty = all).
    pub columns: Vec<String>,
}

impl MonitorRequest {
    /// Monitor `columns` of `table` (initial, insert, delete and modify).
    pub fn new(table: &str, columns: &[&str]) -> MonitorRequest {
        MonitorRequest {
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    pub(crate) fn requests_json(reqs: &[MonitorRequest]) -> Json {
        let mut o = JsonMap::new();
        for r in reqs {
            let mut m = JsonMap::new();
            if !r.columns.is_empty() {
                m.insert("columns".into(), json!(r.columns));
            }
            o.insert(r.table.clone(), Json::Object(m));
        }
        Json::Object(o)
    }
}

/// Change of one row; `new` carries all monitored columns, `old` only those that changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowUpdate {
    /// Previous values (absent for initial/insert).
    pub old: Option<Row>,
    /// New values (absent for delete).
    pub new: Option<Row>,
}

/// table → row uuid → change.
pub type TableUpdates = BTreeMap<String, BTreeMap<Uuid, RowUpdate>>;

/// Decode a `<table-updates>` object.
pub fn parse_table_updates(j: &Json) -> Result<TableUpdates> {
    let tables = j
        .as_object()
        .ok_or_else(|| Error::Protocol(format!("table-updates is not an object: {j}")))?;
    let mut out = TableUpdates::new();
    for (table, rows) in tables {
        let rows = rows
            .as_object()
            .ok_or_else(|| Error::Protocol(format!("table-update is not an object: {rows}")))?;
        let mut t = BTreeMap::new();
        for (uuid, upd) in rows {
            let old = upd.get("old").map(Row::from_json).transpose()?;
            let new = upd.get("new").map(Row::from_json).transpose()?;
            t.insert(Uuid(uuid.clone()), RowUpdate { old, new });
        }
        out.insert(table.clone(), t);
    }
    Ok(out)
}

/// A live monitor; cancelled on the server when dropped.
#[derive(Debug)]
pub struct Monitor {
    pub(crate) client: Client,
    pub(crate) id: String,
    pub(crate) initial: TableUpdates,
    pub(crate) rx: mpsc::UnboundedReceiver<Json>,
}

impl Monitor {
    /// The monitor id used on the wire.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Rows present when the monitor was created.
    pub fn initial(&self) -> &TableUpdates {
        &self.initial
    }

    /// Next `update` notification; [`Error::Disconnected`] when the connection closes.
    pub async fn next(&mut self) -> Result<TableUpdates> {
        let j = self.rx.recv().await.ok_or(Error::Disconnected)?;
        parse_table_updates(&j)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.client.cancel_monitor(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_updates() {
        let u = parse_table_updates(&json!({"Interface": {
            "u1": {"new": {"name": "tap0", "ofport": ["set", []]}},
            "u2": {"old": {"ofport": ["set", []]}, "new": {"name": "tap1", "ofport": 3}},
            "u3": {"old": {"name": "gone"}}
        }}))
        .expect("decode");
        let t = &u["Interface"];
        assert!(t[&Uuid("u1".into())].old.is_none());
        assert_eq!(
            t[&Uuid("u2".into())]
                .new
                .as_ref()
                .and_then(|r| r.get_i64("ofport")),
            Some(3)
        );
        assert!(t[&Uuid("u3".into())].new.is_none());
        assert!(parse_table_updates(&json!([])).is_err());
        assert_eq!(
            MonitorRequest::requests_json(&[
                MonitorRequest::new("Interface", &["name", "ofport"]),
                MonitorRequest::new("Bridge", &[])
            ]),
            json!({"Interface": {"columns": ["name", "ofport"]}, "Bridge": {}})
        );
    }
}
