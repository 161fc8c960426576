//! A stateful Neutron double for security groups, their rules and address groups, with the
//! answers (and refusals) of the real API that callers depend on:
//!
//! * a new security group gets Neutron's two allow-all egress rules (IPv4, IPv6);
//! * a rule's port range 1-65535 is stored as no range;
//! * a rule names at most one remote; its remote group / address group must exist; a port range
//!   needs a port protocol and `min <= max`; a `remote_ip_prefix` must match the ethertype; an
//!   identical rule is a 409 `SecurityGroupRuleExists`; a bulk POST is all or nothing;
//! * address-group addresses are normalized to `network/prefixlen`; `add_addresses` of a present
//!   address is a 400, `remove_addresses` of an absent one a 404, both all or nothing; deleting
//!   a group a rule refers to is a 409; address groups have no tags API (404);
//! * deleting a security group deletes its rules and the rules that name it as remote group.
//!
//! Use [`SecuritySim::handle`] from a [`Fake`] handler (it answers `None` for
//! paths it does not own), or [`SecuritySim::start`] for a Keystone + this double.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};

use super::{Fake, Reply, Seen};
use crate::neutron::{AddressGroup, Direction, EtherType, SecurityGroup, SecurityGroupRule};

/// The state of the double (inspect it in assertions).
#[derive(Debug, Default)]
pub struct SecuritySim {
    pub groups: BTreeMap<String, SecurityGroup>,
    pub rules: BTreeMap<String, SecurityGroupRule>,
    pub address_groups: BTreeMap<String, AddressGroup>,
    pub project_id: String,
    /// Neutron's `security_group` quota: creates beyond it are refused (409 OverQuota).
    pub group_quota: Option<usize>,
    next: u64,
}

/// Port protocols (a port range needs one of these).
const PORT_PROTOCOLS: [&str; 8] = ["tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132"];

impl SecuritySim {
    pub fn new(project_id: &str) -> SecuritySim {
        SecuritySim {
            project_id: project_id.to_owned(),
            ..SecuritySim::default()
        }
    }

    /// A fake Keystone (token valid until 2099) plus this double; every other path is a 404.
    pub async fn start(project_id: &str) -> (Fake, Arc<Mutex<SecuritySim>>) {
        let sim = Arc::new(Mutex::new(SecuritySim::new(project_id)));
        let s = sim.clone();
        let fake = Fake::start(move |req, base| {
            if req.is_auth() {
                return Reply::token_with_dates(
                    base,
                    "tok",
                    "2025-01-01T00:00:00.000000Z",
                    "2099-01-01T00:00:00.000000Z",
                );
            }
            let mut state = s.lock().unwrap_or_else(|p| p.into_inner());
            state
                .handle(req)
                .unwrap_or_else(|| error(404, "HTTPNotFound", "The resource could not be found."))
        })
        .await;
        (fake, sim)
    }

    /// The rules of one group, by id.
    pub fn rules_of(&self, sg: &str) -> Vec<&SecurityGroupRule> {
        self.rules
            .values()
            .filter(|r| r.security_group_id == sg)
            .collect()
    }

    /// Answers requests under `/v2.0/security-groups`, `/v2.0/security-group-rules` and
    /// `/v2.0/address-groups`; `None` for any other path.
    pub fn handle(&mut self, req: &Seen) -> Option<Reply> {
        let path = req.path().to_owned();
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let query = parse_query(&req.target);
        let m = req.method.as_str();
        Some(match (m, seg.as_slice()) {
            ("GET", ["v2.0", "security-groups"]) => {
                let all: Vec<SecurityGroup> =
                    self.groups.values().map(|g| self.with_rules(g)).collect();
                list("security_groups", &all, &query)
            }
            ("POST", ["v2.0", "security-groups"]) => self.create_group(&body["security_group"]),
            ("GET", ["v2.0", "security-groups", id]) => match self.groups.get(*id) {
                Some(g) => one("security_group", &self.with_rules(g)),
                None => sg_not_found(id),
            },
            ("PUT", ["v2.0", "security-groups", id, "tags"]) => match self.groups.get_mut(*id) {
                Some(g) => {
                    g.tags = strings(&body["tags"]);
                    g.revision_number = g.revision_number.map(|r| r + 1);
                    Reply::json(200, json!({"tags": g.tags}).to_string())
                }
                None => sg_not_found(id),
            },
            ("DELETE", ["v2.0", "security-groups", id]) => {
                if self.groups.remove(*id).is_none() {
                    return Some(sg_not_found(id));
                }
                self.rules.retain(|_, r| {
                    r.security_group_id != *id && r.remote_group_id.as_deref() != Some(*id)
                });
                Reply::json(204, "")
            }
            ("GET", ["v2.0", "security-group-rules"]) => {
                let all: Vec<&SecurityGroupRule> = self.rules.values().collect();
                list("security_group_rules", &all, &query)
            }
            ("POST", ["v2.0", "security-group-rules"]) => {
                if let Some(many) = body["security_group_rules"].as_array() {
                    self.create_rules(many)
                } else {
                    match self.create_rules(std::slice::from_ref(&body["security_group_rule"])) {
                        Reply::Json(201, b) => {
                            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
                            Reply::json(
                                201,
                                json!({"security_group_rule": v["security_group_rules"][0]})
                                    .to_string(),
                            )
                        }
                        other => other,
                    }
                }
            }
            ("GET", ["v2.0", "security-group-rules", id]) => match self.rules.get(*id) {
                Some(r) => one("security_group_rule", r),
                None => error(
                    404,
                    "SecurityGroupRuleNotFound",
                    &format!("Security group rule {id} does not exist"),
                ),
            },
            ("DELETE", ["v2.0", "security-group-rules", id]) => match self.rules.remove(*id) {
                Some(r) => {
                    self.bump_group(&r.security_group_id);
                    Reply::json(204, "")
                }
                None => error(
                    404,
                    "SecurityGroupRuleNotFound",
                    &format!("Security group rule {id} does not exist"),
                ),
            },
            ("GET", ["v2.0", "address-groups"]) => {
                let all: Vec<&AddressGroup> = self.address_groups.values().collect();
                list("address_groups", &all, &query)
            }
            ("POST", ["v2.0", "address-groups"]) => {
                self.create_address_group(&body["address_group"])
            }
            ("GET", ["v2.0", "address-groups", id]) => match self.address_groups.get(*id) {
                Some(g) => one("address_group", g),
                None => ag_not_found(id),
            },
            (
                "PUT",
                ["v2.0", "address-groups", id, action @ ("add_addresses" | "remove_addresses")],
            ) => self.change_addresses(id, *action == "add_addresses", &body["addresses"]),
            ("DELETE", ["v2.0", "address-groups", id]) => {
                if !self.address_groups.contains_key(*id) {
                    return Some(ag_not_found(id));
                }
                if self
                    .rules
                    .values()
                    .any(|r| r.remote_address_group_id.as_deref() == Some(*id))
                {
                    return Some(error(
                        409,
                        "AddressGroupInUse",
                        &format!(
                            "Address group {id} is in use on one or more security group rules."
                        ),
                    ));
                }
                self.address_groups.remove(*id);
                Reply::json(204, "")
            }
            _ => return None,
        })
    }

    fn id(&mut self, kind: &str) -> String {
        self.next += 1;
        format!("{kind}-{}", self.next)
    }

    fn with_rules(&self, g: &SecurityGroup) -> SecurityGroup {
        let mut g = g.clone();
        g.security_group_rules = self.rules_of(&g.id).into_iter().cloned().collect();
        g
    }

    fn bump_group(&mut self, id: &str) {
        if let Some(g) = self.groups.get_mut(id) {
            g.revision_number = g.revision_number.map(|r| r + 1);
        }
    }

    fn create_group(&mut self, b: &Value) -> Reply {
        if self.group_quota.is_some_and(|q| self.groups.len() >= q) {
            return error(
                409,
                "OverQuota",
                "Quota exceeded for resources: ['security_group'].",
            );
        }
        let id = self.id("sg");
        let g = SecurityGroup {
            id: id.clone(),
            name: str_of(&b["name"]),
            description: str_of(&b["description"]),
            stateful: Some(b["stateful"].as_bool().unwrap_or(true)),
            project_id: self.project(b),
            revision_number: Some(1),
            ..SecurityGroup::default()
        };
        self.groups.insert(id.clone(), g);
        for ethertype in [EtherType::IPv4, EtherType::IPv6] {
            let rid = self.id("rule");
            let r = SecurityGroupRule {
                id: rid.clone(),
                security_group_id: id.clone(),
                direction: Direction::Egress,
                ethertype,
                project_id: self.project_id.clone(),
                revision_number: Some(0),
                ..SecurityGroupRule::default()
            };
            self.rules.insert(rid, r);
        }
        let g = self.with_rules(&self.groups[&id]);
        Reply::json(201, json!({ "security_group": g }).to_string())
    }

    fn project(&self, b: &Value) -> String {
        match b["project_id"].as_str() {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => self.project_id.clone(),
        }
    }

    fn create_rules(&mut self, reqs: &[Value]) -> Reply {
        let mut made: Vec<SecurityGroupRule> = Vec::new();
        for b in reqs {
            match self.rule_from(b) {
                Ok(r) => {
                    let dup = self
                        .rules
                        .values()
                        .chain(made.iter())
                        .find(|o| same_rule(o, &r));
                    if let Some(o) = dup {
                        return error(
                            409,
                            "SecurityGroupRuleExists",
                            &format!("Security group rule already exists. Rule id is {}.", o.id),
                        );
                    }
                    made.push(r);
                }
                Err(reply) => return reply,
            }
        }
        for r in &mut made {
            r.id = self.id("rule");
            self.rules.insert(r.id.clone(), r.clone());
            let sg = r.security_group_id.clone();
            self.bump_group(&sg);
        }
        Reply::json(201, json!({ "security_group_rules": made }).to_string())
    }

    fn rule_from(&self, b: &Value) -> Result<SecurityGroupRule, Reply> {
        let bad = |m: &str| error(400, "BadRequest", m);
        let sg = str_of(&b["security_group_id"]);
        if !self.groups.contains_key(&sg) {
            return Err(sg_not_found(&sg));
        }
        let direction = match b["direction"].as_str() {
            Some("ingress") => Direction::Ingress,
            Some("egress") => Direction::Egress,
            other => return Err(bad(&format!("Invalid input for direction: {other:?}"))),
        };
        let ethertype = match b["ethertype"].as_str() {
            None | Some("IPv4") => EtherType::IPv4,
            Some("IPv6") => EtherType::IPv6,
            Some(o) => return Err(bad(&format!("Invalid input for ethertype: {o}"))),
        };
        let protocol = b["protocol"].as_str().map(str::to_owned);
        let port = |k: &str| -> Result<Option<u16>, Reply> {
            match &b[k] {
                Value::Null => Ok(None),
                v => v
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| bad(&format!("Invalid value for port {v}"))),
            }
        };
        let (min, max) = (port("port_range_min")?, port("port_range_max")?);
        // Neutron stores the whole range as no range.
        let (min, max) = if (min, max) == (Some(1), Some(65535)) {
            (None, None)
        } else {
            (min, max)
        };
        if min.is_some() || max.is_some() {
            match protocol.as_deref() {
                Some(p) if PORT_PROTOCOLS.contains(&p) => {}
                _ => return Err(bad("Must also specify protocol if port range is given.")),
            }
            if let (Some(a), Some(z)) = (min, max) {
                if a > z {
                    return Err(bad(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    ));
                }
            }
        }
        let opt = |k: &str| b[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let (prefix, rgroup, ragroup) = (
            opt("remote_ip_prefix"),
            opt("remote_group_id"),
            opt("remote_address_group_id"),
        );
        if [&prefix, &rgroup, &ragroup]
            .iter()
            .filter(|o| o.is_some())
            .count()
            > 1
        {
            return Err(bad("Only one of remote_ip_prefix, remote_group_id and remote_address_group_id may be given."));
        }
        if let Some(p) = &prefix {
            let Some((net, _)) = normalize(p) else {
                return Err(bad(&format!("'{p}' is not a valid IP subnet")));
            };
            let v6 = net.contains(':');
            if v6 != (ethertype == EtherType::IPv6) {
                return Err(bad(&format!(
                    "Conflicting value ethertype {ethertype:?} for CIDR {p}"
                )));
            }
        }
        if let Some(g) = &rgroup {
            if !self.groups.contains_key(g) {
                return Err(sg_not_found(g));
            }
        }
        if let Some(g) = &ragroup {
            if !self.address_groups.contains_key(g) {
                return Err(ag_not_found(g));
            }
        }
        Ok(SecurityGroupRule {
            id: String::new(),
            security_group_id: sg,
            direction,
            ethertype,
            protocol,
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: prefix,
            remote_group_id: rgroup,
            remote_address_group_id: ragroup,
            description: str_of(&b["description"]),
            project_id: self.project(b),
            revision_number: Some(0),
        })
    }

    fn create_address_group(&mut self, b: &Value) -> Reply {
        let mut addresses = Vec::new();
        for a in strings(&b["addresses"]) {
            match normalize(&a) {
                Some((_, n)) => {
                    if !addresses.contains(&n) {
                        addresses.push(n)
                    }
                }
                None => {
                    return error(
                        400,
                        "BadRequest",
                        &format!("Invalid input for addresses: '{a}' is not a valid IP subnet."),
                    )
                }
            }
        }
        let id = self.id("ag");
        let g = AddressGroup {
            id: id.clone(),
            name: str_of(&b["name"]),
            description: str_of(&b["description"]),
            addresses,
            project_id: self.project(b),
            revision_number: Some(0),
        };
        self.address_groups.insert(id, g.clone());
        Reply::json(201, json!({ "address_group": g }).to_string())
    }

    fn change_addresses(&mut self, id: &str, add: bool, addrs: &Value) -> Reply {
        let Some(g) = self.address_groups.get_mut(id) else {
            return ag_not_found(id);
        };
        let mut norm = Vec::new();
        for a in strings(addrs) {
            match normalize(&a) {
                Some((_, n)) => {
                    if !norm.contains(&n) {
                        norm.push(n)
                    }
                }
                None => {
                    return error(
                        400,
                        "BadRequest",
                        &format!("'{a}' is not a valid IP subnet."),
                    )
                }
            }
        }
        let (present, absent): (Vec<String>, Vec<String>) =
            norm.into_iter().partition(|a| g.addresses.contains(a));
        if add {
            if !present.is_empty() {
                return error(
                    400,
                    "AddressesAlreadyExist",
                    &format!("Addresses {present:?} already exist in the address group {id}."),
                );
            }
            g.addresses.extend(absent);
        } else {
            if !absent.is_empty() {
                return error(
                    404,
                    "AddressesNotFound",
                    &format!("Addresses {absent:?} not found in the address group {id}."),
                );
            }
            g.addresses.retain(|a| !present.contains(a));
        }
        g.revision_number = g.revision_number.map(|r| r + 1);
        Reply::json(200, json!({ "address_group": g }).to_string())
    }
}

/// Two rules Neutron considers the same (it compares everything but id and description).
fn same_rule(a: &SecurityGroupRule, b: &SecurityGroupRule) -> bool {
    a.security_group_id == b.security_group_id
        && a.direction == b.direction
        && a.ethertype == b.ethertype
        && a.protocol == b.protocol
        && a.port_range_min == b.port_range_min
        && a.port_range_max == b.port_range_max
        && a.remote_ip_prefix
            .as_deref()
            .and_then(normalize)
            .map(|n| n.1)
            == b.remote_ip_prefix
                .as_deref()
                .and_then(normalize)
                .map(|n| n.1)
        && a.remote_group_id == b.remote_group_id
        && a.remote_address_group_id == b.remote_address_group_id
}

/// `10.0.0.5` → (`10.0.0.5`, `10.0.0.5/32`); `10.0.0.7/24` → (`10.0.0.0`, `10.0.0.0/24`).
fn normalize(s: &str) -> Option<(String, String)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let (net, len) = match ip {
        IpAddr::V4(v4) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return None;
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            (
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(v4) & mask)),
                len,
            )
        }
        IpAddr::V6(v6) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return None;
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(v6) & mask)),
                len,
            )
        }
    };
    Some((net.to_string(), format!("{net}/{len}")))
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_query(target: &str) -> Vec<(String, String)> {
    match target.split_once('?') {
        Some((_, q)) => url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect(),
        None => Vec::new(),
    }
}

/// Applies Neutron's list filters: `tags`, `tags-any`, `not-tags`, `not-tags-any`, repeated
/// keys as OR, every other key an exact match on the field; `fields` is ignored (all fields).
fn list<T: Serialize>(key: &str, items: &[T], query: &[(String, String)]) -> Reply {
    let mut out = Vec::new();
    'items: for item in items {
        let v = serde_json::to_value(item).unwrap_or(Value::Null);
        let tags = strings(&v["tags"]);
        let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, val) in query {
            by_key.entry(k.as_str()).or_default().push(val.as_str());
        }
        for (k, vals) in by_key {
            let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
            let ok = match k {
                "fields" => true,
                "tags" => vals
                    .iter()
                    .all(|s| split(s).iter().all(|t| tags.contains(t))),
                "tags-any" => vals
                    .iter()
                    .any(|s| split(s).iter().any(|t| tags.contains(t))),
                "not-tags" => !vals
                    .iter()
                    .all(|s| split(s).iter().all(|t| tags.contains(t))),
                "not-tags-any" => !vals
                    .iter()
                    .any(|s| split(s).iter().any(|t| tags.contains(t))),
                _ => vals.iter().any(|want| match &v[k] {
                    Value::String(s) => s == want,
                    Value::Null => want.is_empty() || *want == "None",
                    other => *want == other.to_string().as_str(),
                }),
            };
            if !ok {
                continue 'items;
            }
        }
        out.push(v);
    }
    Reply::json(200, json!({ key: out }).to_string())
}

fn one<T: Serialize>(key: &str, item: &T) -> Reply {
    Reply::json(200, json!({ key: item }).to_string())
}

/// A Neutron error body.
pub fn error(status: u16, typ: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"NeutronError": {"type": typ, "message": message, "detail": ""}}).to_string(),
    )
}

fn sg_not_found(id: &str) -> Reply {
    error(
        404,
        "SecurityGroupNotFound",
        &format!("Security group {id} does not exist"),
    )
}

fn ag_not_found(id: &str) -> Reply {
    error(
        404,
        "AddressGroupNotFound",
        &format!("Address group {id} could not be found."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neutron::{
        AddressGroupCreate, Neutron, SecurityGroupCreate, SecurityGroupRuleCreate,
    };
    use crate::{Query, Session};

    async fn neutron() -> (Fake, Arc<Mutex<SecuritySim>>, Neutron) {
        let (fake, sim) = SecuritySim::start("proj").await;
        let n = Neutron::new(Session::new(&fake.cloud()).unwrap());
        (fake, sim, n)
    }

    fn rule(sg: &str) -> SecurityGroupRuleCreate {
        SecurityGroupRuleCreate {
            security_group_id: sg.into(),
            ..Default::default()
        }
    }

    #[test]
    fn normalizes_like_neutron() {
        assert_eq!(normalize("10.0.0.5").unwrap().1, "10.0.0.5/32");
        assert_eq!(normalize("10.0.0.7/24").unwrap().1, "10.0.0.0/24");
        assert_eq!(normalize("FD00::5").unwrap().1, "fd00::5/128");
        assert_eq!(normalize("fd00::1:5/64").unwrap().1, "fd00::/64");
        assert_eq!(normalize("0.0.0.0/0").unwrap().1, "0.0.0.0/0");
        assert!(normalize("10.0.0.5/33").is_none());
        assert!(normalize("pod-a").is_none());
    }

    #[tokio::test]
    async fn security_groups_tags_and_default_rules() {
        let (fake, sim, n) = neutron().await;
        let tags = ["kuryr-rs", "kuryr-rs.cluster=c1"];
        let sg = n
            .create_tagged_security_group(
                &SecurityGroupCreate {
                    name: "np/ns/web".into(),
                    ..Default::default()
                },
                &tags,
            )
            .await
            .unwrap();
        assert_eq!(sg.tags, tags);
        assert_eq!(sg.project_id, "proj");
        let other = n
            .create_security_group(&SecurityGroupCreate {
                name: "untagged".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // The create body carries no tags; they come in a second call.
        let seen = fake.seen();
        let create = seen
            .iter()
            .find(|s| s.method == "POST" && s.path() == "/v2.0/security-groups")
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&create.body).unwrap(),
            json!({"security_group": {"name": "np/ns/web"}})
        );
        assert!(seen
            .iter()
            .any(|s| s.method == "PUT"
                && s.path() == format!("/v2.0/security-groups/{}/tags", sg.id)));

        let found = n
            .list_security_groups_tagged(&tags, Query::new())
            .await
            .unwrap();
        assert_eq!(
            found.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            [sg.id.as_str()]
        );
        assert!(seen_target(&fake)
            .iter()
            .any(|t| t == "/v2.0/security-groups?tags=kuryr-rs%2Ckuryr-rs.cluster%3Dc1"));
        assert_eq!(
            n.list_security_groups_tagged(&["nope"], Query::new())
                .await
                .unwrap(),
            []
        );

        // Neutron's two default egress rules.
        let rules = n.list_security_group_rules_of(&sg.id).await.unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r.direction == Direction::Egress
            && r.remote_ip_prefix.is_none()
            && r.protocol.is_none()));
        assert_eq!(
            n.list_security_group_rules_of(&other.id)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(sim.lock().unwrap().rules.len(), 4);

        assert!(n.delete_security_group(&sg.id).await.unwrap());
        assert!(!n.delete_security_group(&sg.id).await.unwrap());
        assert_eq!(
            sim.lock().unwrap().rules.len(),
            2,
            "the group's rules went with it"
        );
        assert!(n
            .get_security_group(&sg.id)
            .await
            .unwrap_err()
            .is_not_found());
    }

    fn seen_target(fake: &Fake) -> Vec<String> {
        fake.seen().iter().map(|s| s.target.clone()).collect()
    }

    #[tokio::test]
    async fn rules_single_bulk_remotes_and_refusals() {
        let (fake, _sim, n) = neutron().await;
        let sg = n
            .create_security_group(&SecurityGroupCreate {
                name: "g".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let peer = n
            .create_security_group(&SecurityGroupCreate {
                name: "peer".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let ag = n
            .create_address_group(&AddressGroupCreate {
                name: "ag".into(),
                addresses: vec!["10.0.0.5".into(), "fd00::5".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ag.addresses, ["10.0.0.5/32", "fd00::5/128"]);

        let single = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                protocol: Some("sctp".into()),
                port_range_min: Some(9000),
                port_range_max: Some(9100),
                remote_address_group_id: Some(ag.id.clone()),
                ..rule(&sg.id)
            })
            .await
            .unwrap();
        assert_eq!(
            single.remote_address_group_id.as_deref(),
            Some(ag.id.as_str())
        );
        assert_eq!(
            (single.port_range_min, single.port_range_max),
            (Some(9000), Some(9100))
        );
        let post = fake
            .seen()
            .into_iter()
            .rfind(|s| s.path() == "/v2.0/security-group-rules")
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&post.body).unwrap(),
            json!({"security_group_rule": {"security_group_id": sg.id, "direction": "ingress", "ethertype": "IPv4",
                "protocol": "sctp", "port_range_min": 9000, "port_range_max": 9100, "remote_address_group_id": ag.id}})
        );

        let bulk = n
            .create_security_group_rules(&[
                SecurityGroupRuleCreate {
                    ethertype: EtherType::IPv6,
                    protocol: Some("udp".into()),
                    port_range_min: Some(53),
                    port_range_max: Some(53),
                    remote_ip_prefix: Some("fd00::/64".into()),
                    ..rule(&sg.id)
                },
                SecurityGroupRuleCreate {
                    remote_group_id: Some(peer.id.clone()),
                    ..rule(&sg.id)
                },
                SecurityGroupRuleCreate {
                    direction: Direction::Egress,
                    protocol: Some("tcp".into()),
                    port_range_min: Some(1),
                    port_range_max: Some(65535),
                    ..rule(&sg.id)
                },
            ])
            .await
            .unwrap();
        assert_eq!(bulk.len(), 3);
        assert_eq!(bulk[1].remote_group_id.as_deref(), Some(peer.id.as_str()));
        assert_eq!(
            (bulk[2].port_range_min, bulk[2].port_range_max),
            (None, None),
            "1-65535 is stored as no range"
        );
        let posts = fake
            .seen()
            .into_iter()
            .filter(|s| s.path() == "/v2.0/security-group-rules" && s.method == "POST")
            .count();
        assert_eq!(posts, 2, "the bulk create is one POST");
        assert_eq!(
            n.list_security_group_rules_of(&sg.id).await.unwrap().len(),
            2 + 4
        );
        assert_eq!(n.create_security_group_rules(&[]).await.unwrap(), []);

        // Refusals: identical rule, two remotes, ports without protocol, min > max, wrong family,
        // unknown address group; a failing bulk creates nothing.
        let e = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                remote_group_id: Some(peer.id.clone()),
                ..rule(&sg.id)
            })
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("Rule id is {}", bulk[1].id)),
            "{e}"
        );
        let refused = [
            SecurityGroupRuleCreate {
                remote_ip_prefix: Some("10.0.0.0/8".into()),
                remote_address_group_id: Some(ag.id.clone()),
                ..rule(&sg.id)
            },
            SecurityGroupRuleCreate {
                port_range_min: Some(80),
                port_range_max: Some(80),
                ..rule(&sg.id)
            },
            SecurityGroupRuleCreate {
                protocol: Some("tcp".into()),
                port_range_min: Some(81),
                port_range_max: Some(80),
                ..rule(&sg.id)
            },
            SecurityGroupRuleCreate {
                ethertype: EtherType::IPv6,
                remote_ip_prefix: Some("10.0.0.0/8".into()),
                ..rule(&sg.id)
            },
        ];
        for r in &refused {
            let e = n.create_security_group_rule(r).await.unwrap_err();
            assert_eq!(
                e.status(),
                Some(crate::StatusCode::BAD_REQUEST),
                "{r:?}: {e}"
            );
        }
        let e = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                remote_address_group_id: Some("nope".into()),
                ..rule(&sg.id)
            })
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = n
            .create_security_group_rules(&[
                SecurityGroupRuleCreate {
                    protocol: Some("udp".into()),
                    ..rule(&sg.id)
                },
                SecurityGroupRuleCreate {
                    protocol: Some("udp".into()),
                    ..rule(&sg.id)
                },
            ])
            .await
            .unwrap_err();
        assert!(e.is_conflict(), "{e}");
        assert_eq!(
            n.list_security_group_rules_of(&sg.id).await.unwrap().len(),
            6,
            "all or nothing"
        );

        assert!(n.delete_security_group_rule(&single.id).await.unwrap());
        assert!(!n.delete_security_group_rule(&single.id).await.unwrap());
        // Deleting the peer group takes the rule that names it as remote.
        n.delete_security_group(&peer.id).await.unwrap();
        let left = n
            .list_security_group_rules(&Query::new().eq("security_group_id", &sg.id))
            .await
            .unwrap();
        assert_eq!(left.len(), 4);
        assert!(left.iter().all(|r| r.remote_group_id.is_none()));
    }

    #[tokio::test]
    async fn address_groups_add_remove_list_delete() {
        let (fake, sim, n) = neutron().await;
        let ag = n
            .create_address_group(&AddressGroupCreate {
                name: "kuryr-rs/c1/ag/abc".into(),
                description: "kuryr-rs.cluster=c1".into(),
                addresses: vec![],
                project_id: String::new(),
            })
            .await
            .unwrap();
        assert!(ag.addresses.is_empty());
        let create = fake
            .seen()
            .into_iter()
            .find(|s| s.path() == "/v2.0/address-groups")
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&create.body).unwrap(),
            json!({"address_group": {"name": "kuryr-rs/c1/ag/abc", "description": "kuryr-rs.cluster=c1", "addresses": []}})
        );
        n.create_address_group(&AddressGroupCreate {
            name: "someone-else".into(),
            ..Default::default()
        })
        .await
        .unwrap();

        let g = n
            .add_addresses(&ag.id, &["10.0.0.5/32", "10.0.0.6"])
            .await
            .unwrap();
        assert_eq!(g.addresses, ["10.0.0.5/32", "10.0.0.6/32"]);
        let put = fake
            .seen()
            .into_iter()
            .rfind(|s| s.method == "PUT")
            .unwrap();
        assert_eq!(
            put.path(),
            format!("/v2.0/address-groups/{}/add_addresses", ag.id)
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&put.body).unwrap(),
            json!({"addresses": ["10.0.0.5/32", "10.0.0.6"]})
        );

        // Not idempotent, all or nothing.
        let e = n
            .add_addresses(&ag.id, &["10.0.0.7/32", "10.0.0.5/32"])
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(crate::StatusCode::BAD_REQUEST), "{e}");
        let e = n
            .remove_addresses(&ag.id, &["10.0.0.6/32", "10.0.0.9/32"])
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(
            n.get_address_group(&ag.id).await.unwrap().addresses,
            ["10.0.0.5/32", "10.0.0.6/32"]
        );

        let g = n.remove_addresses(&ag.id, &["10.0.0.5/32"]).await.unwrap();
        assert_eq!(g.addresses, ["10.0.0.6/32"]);
        // Empty changes make no PUT.
        let puts = fake.seen().iter().filter(|s| s.method == "PUT").count();
        n.add_addresses::<&str>(&ag.id, &[]).await.unwrap();
        n.remove_addresses::<&str>(&ag.id, &[]).await.unwrap();
        assert_eq!(
            fake.seen().iter().filter(|s| s.method == "PUT").count(),
            puts
        );

        let mine = n
            .list_address_groups(&Query::new().eq("description", "kuryr-rs.cluster=c1"))
            .await
            .unwrap();
        assert_eq!(
            mine.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            [ag.id.as_str()]
        );
        assert_eq!(n.list_address_groups(&Query::new()).await.unwrap().len(), 2);

        // No tags API for address groups (as on a real Neutron).
        let path = format!("/v2.0/address-groups/{}/tags", ag.id);
        let e = n
            .session()
            .request(crate::Request::new(
                crate::Service::Network,
                crate::Method::PUT,
                path,
            ))
            .await
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");

        // In use by a rule: 409; after the rule goes, deleted; then a 404 is Ok(false).
        let sg = n
            .create_security_group(&SecurityGroupCreate {
                name: "g".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let r = n
            .create_security_group_rule(&SecurityGroupRuleCreate {
                remote_address_group_id: Some(ag.id.clone()),
                ..rule(&sg.id)
            })
            .await
            .unwrap();
        assert!(n
            .delete_address_group(&ag.id)
            .await
            .unwrap_err()
            .is_conflict());
        n.delete_security_group_rule(&r.id).await.unwrap();
        assert!(n.delete_address_group(&ag.id).await.unwrap());
        assert!(!n.delete_address_group(&ag.id).await.unwrap());
        assert!(n
            .get_address_group(&ag.id)
            .await
            .unwrap_err()
            .is_not_found());
        assert!(n
            .add_addresses(&ag.id, &["10.0.0.1"])
            .await
            .unwrap_err()
            .is_not_found());
        assert_eq!(sim.lock().unwrap().address_groups.len(), 1);
    }
}
