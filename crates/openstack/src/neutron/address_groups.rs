//! Address groups (`address-group` extension): named sets of CIDRs that security group rules
//! refer to with `remote_address_group_id` (ML2/OVN turns each into one OVN address set, so a
//! member joining or leaving is one set update, not a rule rewrite).
//!
//! Neutron semantics worth knowing (as in the stack's Neutron 29 source):
//! * addresses are normalized to `network/prefixlen` (`10.0.0.5` is stored as `10.0.0.5/32`);
//! * `add_addresses` is not idempotent: an address already present fails the whole call with
//!   400 (`AddressesAlreadyExist`); `remove_addresses` of an absent address fails the whole call
//!   with 404 (`AddressesNotFound`), the same status as a missing group. Callers diff against
//!   the group's current addresses and re-read it after such an answer;
//! * address groups carry no tags (the model has no `tag_support`, so `/address-groups/{id}/tags`
//!   is a 404): ownership is marked in `name` and `description`, both exact-match list filters;
//! * deleting a group a rule still refers to is a 409 (`AddressGroupInUse`).

use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::query::Query;
use crate::serde_util::nullable;
use crate::Method;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddressGroup {
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    /// Normalized CIDRs (`10.0.0.5/32`, `fd00::5/128`).
    #[serde(deserialize_with = "nullable")]
    pub addresses: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub project_id: String,
    pub revision_number: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AddressGroupCreate {
    pub name: String,
    #[serde(skip_serializing_if = "is_empty")]
    pub description: String,
    /// CIDRs or bare addresses; may be empty.
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "is_empty")]
    pub project_id: String,
}

/// Body of `add_addresses` / `remove_addresses`.
#[derive(Serialize)]
pub(super) struct AddressesBody<'a, S: AsRef<str>> {
    #[serde(serialize_with = "ser_strs")]
    pub(super) addresses: &'a [S],
}

fn ser_strs<S: AsRef<str>, Ser: serde::Serializer>(
    v: &&[S],
    s: Ser,
) -> std::result::Result<Ser::Ok, Ser::Error> {
    s.collect_seq(v.iter().map(AsRef::as_ref))
}

impl Neutron {
    // address groups

    #[instrument(level = "debug", name = "neutron.create_address_group", skip_all, fields(name = %req.name, count = req.addresses.len()))]
    pub async fn create_address_group(&self, req: &AddressGroupCreate) -> Result<AddressGroup> {
        ADDRESS_GROUPS.create(&self.session, req).await
    }

    #[instrument(level = "debug", name = "neutron.get_address_group", skip(self))]
    pub async fn get_address_group(&self, id: &str) -> Result<AddressGroup> {
        ADDRESS_GROUPS.get(&self.session, id).await
    }

    /// Lists address groups; useful filters are `name`, `description` and `project_id`
    /// (exact match). There is no tag filter: see the module doc.
    #[instrument(level = "debug", name = "neutron.list_address_groups", skip(self))]
    pub async fn list_address_groups(&self, query: &Query) -> Result<Vec<AddressGroup>> {
        ADDRESS_GROUPS.list(&self.session, query).await
    }

    /// Adds addresses (atomically, all or none); returns the updated group. No call is made
    /// for an empty list (the group is then fetched instead).
    #[instrument(level = "debug", name = "neutron.add_addresses", skip(self, addresses), fields(count = addresses.len()))]
    pub async fn add_addresses<S: AsRef<str>>(
        &self,
        id: &str,
        addresses: &[S],
    ) -> Result<AddressGroup> {
        self.address_group_action(id, "add_addresses", addresses)
            .await
    }

    /// Removes addresses (atomically, all or none); returns the updated group. No call is made
    /// for an empty list (the group is then fetched instead).
    #[instrument(level = "debug", name = "neutron.remove_addresses", skip(self, addresses), fields(count = addresses.len()))]
    pub async fn remove_addresses<S: AsRef<str>>(
        &self,
        id: &str,
        addresses: &[S],
    ) -> Result<AddressGroup> {
        self.address_group_action(id, "remove_addresses", addresses)
            .await
    }

    async fn address_group_action<S: AsRef<str>>(
        &self,
        id: &str,
        action: &str,
        addresses: &[S],
    ) -> Result<AddressGroup> {
        if addresses.is_empty() {
            return self.get_address_group(id).await;
        }
        let path = format!("{}/{action}", ADDRESS_GROUPS.item(id));
        self.session
            .send_key(
                NET,
                Method::PUT,
                path,
                None,
                &AddressesBody { addresses },
                Some(ADDRESS_GROUPS.one),
            )
            .await
    }

    /// Deletes an address group; a 404 is success (`Ok(false)`), a 409 means a rule still
    /// refers to it.
    #[instrument(level = "debug", name = "neutron.delete_address_group", skip(self))]
    pub async fn delete_address_group(&self, id: &str) -> Result<bool> {
        ADDRESS_GROUPS.delete(&self.session, id, None).await
    }
}
