//! Tags of any tagged resource.

use serde::Serialize;
use tracing::instrument;

use super::*;
use crate::error::Result;
use crate::session::seg;
use crate::Method;

// ---------------------------------------------------------------- tags

/// Resources that carry tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TagResource {
    Network,
    Subnet,
    SubnetPool,
    Port,
    Router,
    SecurityGroup,
    Trunk,
    FloatingIp,
}

impl TagResource {
    /// Collection path segment.
    pub fn collection(self) -> &'static str {
        match self {
            TagResource::Network => "networks",
            TagResource::Subnet => "subnets",
            TagResource::SubnetPool => "subnetpools",
            TagResource::Port => "ports",
            TagResource::Router => "routers",
            TagResource::SecurityGroup => "security-groups",
            TagResource::Trunk => "trunks",
            TagResource::FloatingIp => "floatingips",
        }
    }
}

#[derive(Serialize)]
pub(super) struct TagsBody<'a, S: AsRef<str>> {
    #[serde(serialize_with = "ser_strs")]
    pub(super) tags: &'a [S],
}

fn ser_strs<S: AsRef<str>, Ser: serde::Serializer>(
    v: &&[S],
    s: Ser,
) -> Result<Ser::Ok, Ser::Error> {
    s.collect_seq(v.iter().map(AsRef::as_ref))
}

impl Neutron {
    // tags

    /// Replaces all tags of a resource; returns the new tag list.
    #[instrument(level = "debug", name = "neutron.set_tags", skip(self, tags))]
    pub async fn set_tags<S: AsRef<str>>(
        &self,
        resource: TagResource,
        id: &str,
        tags: &[S],
    ) -> Result<Vec<String>> {
        let path = format!("/v2.0/{}/{}/tags", resource.collection(), seg(id));
        self.session
            .send_key(
                NET,
                Method::PUT,
                path,
                None,
                &TagsBody { tags },
                Some("tags"),
            )
            .await
    }

    /// Adds one tag (idempotent).
    #[instrument(level = "debug", name = "neutron.add_tag", skip(self))]
    pub async fn add_tag(&self, resource: TagResource, id: &str, tag: &str) -> Result<()> {
        let path = format!(
            "/v2.0/{}/{}/tags/{}",
            resource.collection(),
            seg(id),
            seg(tag)
        );
        self.session
            .request(crate::Request::new(NET, Method::PUT, path))
            .await
            .map(drop)
    }
}
