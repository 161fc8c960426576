//! One policy's Neutron objects (`crate::policy::neutron`): find them (adoption after a crash),
//! converge them to the model's [`PolicyState`] in the order Neutron needs, tear them down; and
//! the shared base groups. No Kubernetes here: the reconcilers call these with what they know.
//!
//! Ownership marks (Neutron address groups carry no tags):
//! * policy security groups: name `kuryr-np/<uid>/<in|eg>[/<variant>]`, description
//!   [`resource_description`] `network policy security group` of the policy, the cluster tag;
//! * address groups: name `kuryr-np/<key>`, description `network policy address group` of the
//!   policy (an exact-match list filter);
//! * base groups: name `kuryr-np-base/<infra|ingress-open|egress-open>`, a description naming the
//!   cluster, the cluster tag.
//!
//! A group found with a uid other than the policy's (a policy deleted and re-created under the
//! same name while a teardown was interrupted) is not desired, so the diff deletes it.

use crate::policy::model::{
    base_rules, diff_address_groups, diff_rules, diff_security_groups, AgKey, BaseGroup, CurrentAg, ModelSettings, PolicyState, SgKey,
};
use crate::policy::settings::PolicySettings;
use crate::runtime::error::Error;
use kuryr_core::names::{cluster_tag, resource_description};
use kuryr_openstack::neutron::{AddressGroupCreate, SecurityGroupCreate, SecurityGroupRule, TagResource};
use kuryr_openstack::{Neutron, Query};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Name prefix of policy security groups and address groups.
pub const NAME_PREFIX: &str = "kuryr-np/";
/// Name prefix of the base groups.
pub const BASE_PREFIX: &str = "kuryr-np-base/";

/// Description of a policy's security groups.
pub fn sg_description(s: &PolicySettings, namespace: &str, name: &str) -> String {
    resource_description("network policy security group", &s.cluster_name, namespace, name)
}

/// Description of a policy's address groups.
pub fn ag_description(s: &PolicySettings, namespace: &str, name: &str) -> String {
    resource_description("network policy address group", &s.cluster_name, namespace, name)
}

/// Description of the base groups.
pub fn base_description(s: &PolicySettings) -> String {
    format!("kuryr-rs network policy base group: cluster {}", s.cluster_name)
}

pub fn base_name(g: BaseGroup) -> String {
    let n = match g {
        BaseGroup::Infra => "infra",
        BaseGroup::IngressOpen => "ingress-open",
        BaseGroup::EgressOpen => "egress-open",
    };
    format!("{BASE_PREFIX}{n}")
}

/// The key a policy security group's name holds.
pub fn parse_sg_name(name: &str) -> Option<SgKey> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let mut it = rest.splitn(3, '/');
    let uid = it.next().filter(|u| !u.is_empty())?;
    let direction = match it.next()? {
        "in" => crate::policy::model::Dir::Ingress,
        "eg" => crate::policy::model::Dir::Egress,
        _ => return None,
    };
    Some(SgKey { policy_uid: uid.to_string(), direction, variant: it.next().unwrap_or_default().to_string() })
}

/// A security group of the policy as last seen: id and rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownSg {
    pub id: String,
    pub rules: Vec<SecurityGroupRule>,
}

/// What Neutron holds for one policy (kept in memory between passes; rebuilt by [`discover`]
/// after a restart or a failed pass).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Known {
    pub sgs: BTreeMap<SgKey, KnownSg>,
    pub ags: BTreeMap<AgKey, CurrentAg>,
    /// Groups with our description whose name is no policy key (deleted by the next pass).
    pub stray_sgs: Vec<String>,
    pub stray_ags: Vec<String>,
    /// The cloud has no `address-group` extension (its list is a 404): peers become per-address
    /// rules ([`crate::policy::model::expand_address_groups`]).
    pub no_address_groups: bool,
}

impl Known {
    pub fn sg_ids(&self) -> BTreeMap<SgKey, String> {
        self.sgs.iter().map(|(k, v)| (k.clone(), v.id.clone())).collect()
    }
}

/// An address group's addresses in the model's spelling (`ipnet`'s: RFC 5952 for IPv6, as
/// [`crate::policy::model::host_cidr`] and the ipBlock CIDRs are written), so the diff never
/// re-adds an address Neutron spelt differently.
fn normalized(addresses: Vec<String>) -> std::collections::BTreeSet<String> {
    addresses.into_iter().map(|a| a.parse::<ipnet::IpNet>().map(|n| n.to_string()).unwrap_or(a)).collect()
}

fn scoped(s: &PolicySettings, q: Query) -> Query {
    if s.project.is_empty() || s.multi_project {
        // Policies may live in several projects: found by description alone.
        q
    } else {
        q.eq("project_id", &s.project)
    }
}

/// Finds the policy's groups by description (tagged or not: a crash between create and tag
/// leaves an untagged one, tagged here), their rules (one list), and its address groups.
pub async fn discover(neutron: &Neutron, s: &PolicySettings, namespace: &str, name: &str) -> Result<Known, Error> {
    let mut known = Known::default();
    let sgs = neutron.list_security_groups(&scoped(s, Query::new().eq("description", sg_description(s, namespace, name)))).await?;
    for sg in &sgs {
        let missing: Vec<&String> = s.tags.iter().filter(|t| !sg.tags.contains(t)).collect();
        if !missing.is_empty() {
            let mut all = sg.tags.clone();
            all.extend(missing.into_iter().cloned());
            neutron.set_tags(TagResource::SecurityGroup, &sg.id, &all).await?;
        }
        match parse_sg_name(&sg.name) {
            Some(k) if !known.sgs.contains_key(&k) => {
                known.sgs.insert(k, KnownSg { id: sg.id.clone(), rules: Vec::new() });
            }
            _ => known.stray_sgs.push(sg.id.clone()),
        }
    }
    if !known.sgs.is_empty() {
        let q = Query::new().any_of("security_group_id", known.sgs.values().map(|g| g.id.as_str()));
        let rules = neutron.list_security_group_rules(&q).await?;
        let by_id: HashMap<String, SgKey> = known.sgs.iter().map(|(k, v)| (v.id.clone(), k.clone())).collect();
        for r in rules {
            if let Some(k) = by_id.get(r.security_group_id.as_str()) {
                if let Some(g) = known.sgs.get_mut(k) {
                    g.rules.push(r);
                }
            }
        }
    }
    let ags = match neutron.list_address_groups(&scoped(s, Query::new().eq("description", ag_description(s, namespace, name)))).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => {
            known.no_address_groups = true;
            Vec::new()
        }
        Err(e) => return Err(e.into()),
    };
    for ag in ags {
        match ag.name.strip_prefix(NAME_PREFIX).filter(|k| !k.is_empty()) {
            Some(k) if !known.ags.contains_key(&AgKey(k.to_string())) => {
                known.ags.insert(AgKey(k.to_string()), CurrentAg { id: ag.id, addresses: normalized(ag.addresses) });
            }
            _ => known.stray_ags.push(ag.id),
        }
    }
    Ok(known)
}

/// What to converge for `st` on a cloud without address groups: every address-group rule
/// expanded into one rule per address, no address groups (a note says so).
pub fn without_address_groups(st: &PolicyState) -> PolicyState {
    let mut eff = st.clone();
    for rules in eff.groups.values_mut() {
        *rules = crate::policy::model::expand_address_groups(rules, &st.address_groups);
    }
    eff.address_groups.clear();
    eff.notes.push(
        "the cloud has no Neutron address-group extension: peers are enforced by one rule per address (pod changes rewrite rules)"
            .to_string(),
    );
    eff
}

/// Neutron calls made by a pass (for logs and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub calls: usize,
}

/// Creates the missing security groups and address groups, moves addresses, then converges
/// each group's rules (one bulk create, deletes of the extras). Groups and address groups no
/// longer wanted stay until [`prune`] (after the ports left them).
pub async fn converge(
    neutron: &Neutron,
    s: &PolicySettings,
    known: &mut Known,
    st: &PolicyState,
    applied: &mut Applied,
) -> Result<(), Error> {
    let (create, _) = diff_security_groups(st.groups.keys(), &known.sg_ids());
    for key in create {
        let req = SecurityGroupCreate {
            name: format!("{NAME_PREFIX}{}", key.as_string()),
            description: sg_description(s, &st.namespace, &st.name),
            stateful: None,
            project_id: s.project.clone(),
        };
        // Recorded only once tagged: if tagging fails, the pass fails and discovery (by
        // description) finds and tags the group.
        let sg = neutron.create_tagged_security_group(&req, &s.tags).await?;
        applied.calls += 2;
        tracing::info!(sg = %sg.id, key = %key.as_string(), "created a network policy security group");
        known.sgs.insert(key, KnownSg { id: sg.id, rules: sg.security_group_rules });
    }
    let d = diff_address_groups(&st.address_groups, &known.ags);
    for (key, addresses) in d.create {
        let req = AddressGroupCreate {
            name: format!("{NAME_PREFIX}{key}"),
            description: ag_description(s, &st.namespace, &st.name),
            addresses,
            project_id: s.project.clone(),
        };
        let ag = neutron.create_address_group(&req).await?;
        applied.calls += 1;
        known.ags.insert(key, CurrentAg { id: ag.id, addresses: normalized(ag.addresses) });
    }
    for (id, addrs) in d.add {
        let r = neutron.add_addresses(&id, &addrs).await;
        applied.calls += 1;
        record_addresses(neutron, known, &id, r).await?;
    }
    for (id, addrs) in d.remove {
        let r = neutron.remove_addresses(&id, &addrs).await;
        applied.calls += 1;
        record_addresses(neutron, known, &id, r).await?;
    }
    let ag_keys: HashMap<String, AgKey> = known.ags.iter().map(|(k, v)| (v.id.clone(), k.clone())).collect();
    let ag_ids: HashMap<AgKey, String> = known.ags.iter().map(|(k, v)| (k.clone(), v.id.clone())).collect();
    for (key, want) in &st.groups {
        let Some(g) = known.sgs.get_mut(key) else { continue };
        converge_rules(neutron, g, want, &ag_keys, &ag_ids, applied).await?;
    }
    Ok(())
}

/// Records an address group's addresses after add/remove; on a 400/404 (the group changed
/// under us, or is gone) re-reads it so the next pass diffs against the truth, and fails.
async fn record_addresses(
    neutron: &Neutron,
    known: &mut Known,
    id: &str,
    r: Result<kuryr_openstack::neutron::AddressGroup, kuryr_openstack::Error>,
) -> Result<(), Error> {
    let key = known.ags.iter().find(|(_, v)| v.id == id).map(|(k, _)| k.clone());
    match r {
        Ok(ag) => {
            if let Some(k) = key {
                known.ags.insert(k, CurrentAg { id: ag.id, addresses: normalized(ag.addresses) });
            }
            Ok(())
        }
        Err(e) => {
            match neutron.get_address_group(id).await {
                Ok(ag) => {
                    if let Some(k) = key {
                        known.ags.insert(k, CurrentAg { id: ag.id, addresses: normalized(ag.addresses) });
                    }
                }
                Err(g) if g.is_not_found() => {
                    if let Some(k) = key {
                        known.ags.remove(&k);
                    }
                }
                Err(_) => {}
            }
            Err(e.into())
        }
    }
}

async fn converge_rules(
    neutron: &Neutron,
    g: &mut KnownSg,
    want: &BTreeSet<crate::policy::model::RuleSpec>,
    ag_keys: &HashMap<String, AgKey>,
    ag_ids: &HashMap<AgKey, String>,
    applied: &mut Applied,
) -> Result<(), Error> {
    let d = diff_rules(want, &g.rules, ag_keys);
    let reqs: Vec<_> = d.create.iter().filter_map(|r| r.to_create(&g.id, ag_ids)).collect();
    if !reqs.is_empty() {
        let made = neutron.create_security_group_rules(&reqs).await?;
        applied.calls += 1;
        g.rules.extend(made);
    }
    for id in d.delete {
        neutron.delete_security_group_rule(&id).await?;
        applied.calls += 1;
        g.rules.retain(|r| r.id != id);
    }
    Ok(())
}

/// Deletes the groups, then the address groups, the state no longer wants (after the ports
/// left them: a group in use is a 409, retried).
pub async fn prune(neutron: &Neutron, known: &mut Known, st: &PolicyState, applied: &mut Applied) -> Result<(), Error> {
    let (_, delete) = diff_security_groups(st.groups.keys(), &known.sg_ids());
    for id in delete.into_iter().chain(std::mem::take(&mut known.stray_sgs)) {
        neutron.delete_security_group(&id).await?;
        applied.calls += 1;
        known.sgs.retain(|_, g| g.id != id);
    }
    let gone: Vec<(AgKey, String)> =
        known.ags.iter().filter(|(k, _)| !st.address_groups.contains_key(*k)).map(|(k, v)| (k.clone(), v.id.clone())).collect();
    for (k, id) in gone {
        neutron.delete_address_group(&id).await?;
        applied.calls += 1;
        known.ags.remove(&k);
    }
    for id in std::mem::take(&mut known.stray_ags) {
        neutron.delete_address_group(&id).await?;
        applied.calls += 1;
    }
    Ok(())
}

/// Deletes everything of the policy (found again by description: nothing a crash left stays):
/// security groups (their rules go with them), then address groups.
pub async fn teardown(neutron: &Neutron, s: &PolicySettings, namespace: &str, name: &str, applied: &mut Applied) -> Result<(), Error> {
    let mut known = discover(neutron, s, namespace, name).await?;
    prune(neutron, &mut known, &PolicyState::default(), applied).await
}

/// Finds or creates the three base groups and converges their rules; `base` keeps their ids.
pub async fn ensure_base(
    neutron: &Neutron,
    s: &PolicySettings,
    model: &ModelSettings,
    base: &mut BTreeMap<BaseGroup, String>,
) -> Result<(), Error> {
    let all = [BaseGroup::Infra, BaseGroup::IngressOpen, BaseGroup::EgressOpen];
    if all.iter().all(|g| base.contains_key(g)) {
        return Ok(());
    }
    let q = scoped(s, Query::new().eq("description", base_description(s)));
    let found = neutron.list_security_groups_tagged(&[cluster_tag(&s.cluster_name)], q).await?;
    let mut groups: BTreeMap<BaseGroup, KnownSg> = BTreeMap::new();
    for g in all {
        if let Some(sg) = found.iter().filter(|f| f.name == base_name(g)).min_by_key(|f| f.id.clone()) {
            groups.insert(g, KnownSg { id: sg.id.clone(), rules: Vec::new() });
        }
    }
    if !groups.is_empty() {
        let q = Query::new().any_of("security_group_id", groups.values().map(|g| g.id.as_str()));
        for r in neutron.list_security_group_rules(&q).await? {
            if let Some(g) = groups.values_mut().find(|g| g.id == r.security_group_id) {
                g.rules.push(r);
            }
        }
    }
    let mut applied = Applied::default();
    for g in all {
        if let std::collections::btree_map::Entry::Vacant(slot) = groups.entry(g) {
            let req =
                SecurityGroupCreate { name: base_name(g), description: base_description(s), stateful: None, project_id: s.project.clone() };
            let sg = neutron.create_tagged_security_group(&req, &s.tags).await?;
            slot.insert(KnownSg { id: sg.id, rules: sg.security_group_rules });
        }
        if let Some(known) = groups.get_mut(&g) {
            converge_rules(neutron, known, &base_rules(g, model), &HashMap::new(), &HashMap::new(), &mut applied).await?;
        }
    }
    *base = groups.into_iter().map(|(k, v)| (k, v.id)).collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::Dir;

    #[test]
    fn group_names_hold_their_keys() {
        let k = SgKey { policy_uid: "u-1".into(), direction: Dir::Ingress, variant: String::new() };
        assert_eq!(parse_sg_name(&format!("{NAME_PREFIX}{}", k.as_string())), Some(k));
        let v = SgKey { policy_uid: "u-1".into(), direction: Dir::Egress, variant: "00ff".into() };
        assert_eq!(parse_sg_name(&format!("{NAME_PREFIX}{}", v.as_string())), Some(v));
        assert_eq!(parse_sg_name("kuryr-np/u-1/sideways"), None);
        assert_eq!(parse_sg_name("kuryr-np//in"), None);
        assert_eq!(parse_sg_name("sg/ns-np"), None, "upstream's names are not ours");
        assert_eq!(parse_sg_name(&base_name(BaseGroup::Infra)), None, "base groups are no policy's");
    }

    #[test]
    fn address_group_addresses_are_compared_in_the_models_spelling() {
        let got = normalized(vec!["FD00:0:0:0:0:0:0:7/128".into(), "fd00:10:244:0:8000:0:0:0/65".into(), "10.0.0.1/32".into()]);
        let want: std::collections::BTreeSet<String> =
            ["fd00::7/128", "fd00:10:244:0:8000::/65", "10.0.0.1/32"].iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want);
        assert_eq!(crate::policy::model::host_cidr("fd00::7".parse().expect("ip")), "fd00::7/128");
    }
}
