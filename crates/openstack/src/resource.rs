//! One kind of REST resource (a Neutron `/v2.0/<path>` or Octavia `/v2/lbaas/<path>` collection)
//! and the create/get/list/update/delete calls every kind shares, so the service clients only
//! name their kinds and add what is specific to them.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Result;
use crate::query::Query;
use crate::session::{seg, Service, Session};
use crate::Method;

/// A resource collection: which service, its URL and its JSON keys.
pub(crate) struct Kind {
    service: Service,
    /// URL prefix of the service's API version, e.g. `/v2.0` or `/v2/lbaas`.
    prefix: &'static str,
    path: &'static str,
    /// JSON key of one object (`{"port": {…}}`).
    pub(crate) one: &'static str,
    /// JSON key of a list (`{"ports": […]}`).
    pub(crate) many: &'static str,
}

impl Kind {
    pub(crate) const fn new(
        service: Service,
        prefix: &'static str,
        path: &'static str,
        one: &'static str,
        many: &'static str,
    ) -> Kind {
        Kind {
            service,
            prefix,
            path,
            one,
            many,
        }
    }

    pub(crate) fn collection(&self) -> String {
        format!("{}/{}", self.prefix, self.path)
    }

    pub(crate) fn item(&self, id: &str) -> String {
        format!("{}/{}/{}", self.prefix, self.path, seg(id))
    }

    pub(crate) async fn create<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        s: &Session,
        body: &B,
    ) -> Result<T> {
        s.send_key(
            self.service,
            Method::POST,
            self.collection(),
            Some(self.one),
            body,
            Some(self.one),
        )
        .await
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, s: &Session, id: &str) -> Result<T> {
        s.get_key(self.service, self.item(id), None, self.one).await
    }

    pub(crate) async fn list<T: DeserializeOwned>(&self, s: &Session, q: &Query) -> Result<Vec<T>> {
        s.get_key(self.service, self.collection(), Some(q), self.many)
            .await
    }

    pub(crate) async fn update<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        s: &Session,
        id: &str,
        body: &B,
    ) -> Result<T> {
        s.send_key(
            self.service,
            Method::PUT,
            self.item(id),
            Some(self.one),
            body,
            Some(self.one),
        )
        .await
    }

    /// DELETE; a 404 counts as success (`Ok(false)`).
    pub(crate) async fn delete(&self, s: &Session, id: &str, q: Option<Query>) -> Result<bool> {
        s.delete(self.service, self.item(id), q).await
    }
}
