//! Every way kuryr-rs reads an OpenStack answer, from one byte string: for the property tests
//! and the cargo-fuzz target `openstack_response` (`fuzz/` at the workspace root). Not used by
//! the clients. The invariant is that none of it panics, whatever Keystone, Neutron or Octavia
//! (or something in between) sends back.

use crate::config::{CloudsFile, Interface};
use crate::neutron::{
    AddressGroup, FloatingIp, Network, Port, Router, RouterInterfaceInfo, SecurityGroup,
    SecurityGroupRule, Subnet, SubnetPool, Trunk,
};
use crate::octavia::{HealthMonitor, Listener, LoadBalancer, Member, Pool, Provider, StatusTree};
use crate::serde_util::{decode, decode_key};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

fn both<T: DeserializeOwned>(body: &[u8], one: &str, many: &str) {
    let _ = decode_key::<T>(body, one);
    let _ = decode_key::<Vec<T>>(body, many);
}

/// Decodes `body` as every response kuryr-rs reads: each Neutron and Octavia resource, one
/// and a list of them, Keystone's token (with `X-Subject-Token` set and not), and the
/// error message of a failed call at a few statuses.
pub fn response_body(body: &[u8]) {
    both::<Port>(body, "port", "ports");
    both::<Network>(body, "network", "networks");
    both::<Subnet>(body, "subnet", "subnets");
    both::<SubnetPool>(body, "subnetpool", "subnetpools");
    both::<Router>(body, "router", "routers");
    let _ = decode::<RouterInterfaceInfo>(body);
    both::<SecurityGroup>(body, "security_group", "security_groups");
    both::<SecurityGroupRule>(body, "security_group_rule", "security_group_rules");
    both::<AddressGroup>(body, "address_group", "address_groups");
    both::<FloatingIp>(body, "floatingip", "floatingips");
    both::<Trunk>(body, "trunk", "trunks");
    both::<LoadBalancer>(body, "loadbalancer", "loadbalancers");
    both::<Listener>(body, "listener", "listeners");
    both::<Pool>(body, "pool", "pools");
    both::<Member>(body, "member", "members");
    both::<HealthMonitor>(body, "healthmonitor", "healthmonitors");
    let _ = decode_key::<Vec<Provider>>(body, "providers");
    let _ = decode_key::<StatusTree>(body, "loadbalancer");
    let _ = decode_key::<Vec<String>>(body, "tags");
    for subject in [None, Some("gAAAAAB-token".to_owned())] {
        if let Ok(t) = crate::keystone::token_from_response(
            "/v3/auth/tokens",
            StatusCode::CREATED,
            subject,
            body,
        ) {
            let _ = (t.needs_refresh(), t.is_expired(), t.remaining());
            for itf in [Interface::Public, Interface::Internal, Interface::Admin] {
                let _ = t.catalog.url_for("network", itf, Some("RegionOne"));
                let _ = t.catalog.url_for("load-balancer", itf, None);
            }
        }
    }
    for status in [400u16, 404, 409, 500, 503] {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let _ = crate::error::error_message(body, status);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = crate::keystone::parse_timestamp(text);
    }
}

/// Parses clouds.yaml text and picks each of its clouds (and one that is not there).
pub fn clouds_yaml(text: &str) {
    if let Ok(f) = CloudsFile::parse(text) {
        let names: Vec<String> = f.names().map(str::to_owned).collect();
        for name in names.iter().map(String::as_str).chain(["no-such-cloud"]) {
            if let Ok(c) = f.cloud(name) {
                let _ = (c.resolved_auth_type(), c.effective_timeout());
                // Not with a CA file: reading an arbitrary path (a FIFO, /dev/zero) is the
                // admin's choice, not input to survive.
                if c.cacert.is_none() {
                    let _ = crate::session::Session::builder(&c).build();
                }
            }
        }
    }
}
