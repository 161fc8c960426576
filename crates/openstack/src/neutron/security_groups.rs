//! Security groups and their rules.
//!
//! A rule's remote is at most one of `remote_ip_prefix`, `remote_group_id` and
//! `remote_address_group_id` (none = any address of the rule's ethertype). Neutron gives a new
//! group two allow-all egress rules (IPv4 and IPv6); callers that own a group's rules list them
//! with [`Neutron::list_security_group_rules_of`] and delete what they do not want. An identical
//! rule is a 409 (`SecurityGroupRuleExists`).

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;
use crate::Method;

// ---------------------------------------------------------------- security groups

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EtherType {
    #[default]
    IPv4,
    IPv6,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroupRule {
    pub id: String,
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: EtherType,
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub remote_address_group_id: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct SecurityGroupRuleCreate {
    pub security_group_id: String,
    pub direction: Direction,
    pub ethertype: EtherType,
    /// `tcp`, `udp`, `sctp`, `icmp`, a number, or `None` for any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
    /// Needs the `address-group` extension (ML2/OVN: an OVN address set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_address_group_id: Option<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub security_group_rules: Vec<SecurityGroupRule>,
    pub stateful: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecurityGroupCreate {
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

impl Neutron {
    // security groups

    #[instrument(level = "debug", name = "neutron.create_security_group", skip_all, fields(name = %req.name))]
    pub async fn create_security_group(&self, req: &SecurityGroupCreate) -> Result<SecurityGroup> {
        SECURITY_GROUPS.create(&self.session, req).await
    }

    /// Creates a security group and sets its tags (`PUT …/tags`; the create body takes none).
    /// Without tags this is [`Neutron::create_security_group`]. If tagging fails the group
    /// exists untagged: the error is returned and the caller finds the group by name to retry.
    #[instrument(level = "debug", name = "neutron.create_tagged_security_group", skip_all, fields(name = %req.name))]
    pub async fn create_tagged_security_group<S: AsRef<str>>(
        &self,
        req: &SecurityGroupCreate,
        tags: &[S],
    ) -> Result<SecurityGroup> {
        let mut sg = self.create_security_group(req).await?;
        if !tags.is_empty() {
            sg.tags = self
                .set_tags(TagResource::SecurityGroup, &sg.id, tags)
                .await?;
        }
        Ok(sg)
    }

    /// Security groups having all of `tags` (plus the other filters in `query`).
    #[instrument(
        level = "debug",
        name = "neutron.list_security_groups_tagged",
        skip_all
    )]
    pub async fn list_security_groups_tagged<S: AsRef<str>>(
        &self,
        tags: &[S],
        query: Query,
    ) -> Result<Vec<SecurityGroup>> {
        let q = query.tags(tags.iter().map(AsRef::as_ref));
        SECURITY_GROUPS.list(&self.session, &q).await
    }

    #[instrument(level = "debug", name = "neutron.get_security_group", skip(self))]
    pub async fn get_security_group(&self, id: &str) -> Result<SecurityGroup> {
        SECURITY_GROUPS.get(&self.session, id).await
    }

    #[instrument(level = "debug", name = "neutron.list_security_groups", skip(self))]
    pub async fn list_security_groups(&self, query: &Query) -> Result<Vec<SecurityGroup>> {
        SECURITY_GROUPS.list(&self.session, query).await
    }

    #[instrument(level = "debug", name = "neutron.delete_security_group", skip(self))]
    pub async fn delete_security_group(&self, id: &str) -> Result<bool> {
        SECURITY_GROUPS.delete(&self.session, id, None).await
    }

    #[instrument(level = "debug", name = "neutron.create_security_group_rule", skip_all, fields(sg = %req.security_group_id))]
    pub async fn create_security_group_rule(
        &self,
        req: &SecurityGroupRuleCreate,
    ) -> Result<SecurityGroupRule> {
        SG_RULES.create(&self.session, req).await
    }

    /// Creates several rules in one bulk POST.
    #[instrument(level = "debug", name = "neutron.create_security_group_rules", skip_all, fields(count = reqs.len()))]
    pub async fn create_security_group_rules(
        &self,
        reqs: &[SecurityGroupRuleCreate],
    ) -> Result<Vec<SecurityGroupRule>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        self.session
            .send_key(
                NET,
                Method::POST,
                SG_RULES.collection(),
                Some(SG_RULES.many),
                reqs,
                Some(SG_RULES.many),
            )
            .await
    }

    #[instrument(
        level = "debug",
        name = "neutron.list_security_group_rules",
        skip(self)
    )]
    pub async fn list_security_group_rules(&self, query: &Query) -> Result<Vec<SecurityGroupRule>> {
        SG_RULES.list(&self.session, query).await
    }

    /// The rules of one security group (`security_group_id=` filter).
    #[instrument(
        level = "debug",
        name = "neutron.list_security_group_rules_of",
        skip(self)
    )]
    pub async fn list_security_group_rules_of(
        &self,
        security_group_id: &str,
    ) -> Result<Vec<SecurityGroupRule>> {
        let q = Query::new().eq("security_group_id", security_group_id);
        SG_RULES.list(&self.session, &q).await
    }

    #[instrument(
        level = "debug",
        name = "neutron.delete_security_group_rule",
        skip(self)
    )]
    pub async fn delete_security_group_rule(&self, id: &str) -> Result<bool> {
        SG_RULES.delete(&self.session, id, None).await
    }
}
