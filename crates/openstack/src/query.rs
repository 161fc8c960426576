//! Query-string filters for list calls.

/// Ordered `key=value` pairs; keys may repeat (`id=a&id=b`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub fn eq(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// Adds `key=v` once per value (Neutron/Octavia treat repeats as OR).
    pub fn any_of<I>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        for v in values {
            self.0.push((key.to_owned(), v.to_string()));
        }
        self
    }

    /// Repeated `id=` filter.
    pub fn ids<I>(self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        self.any_of("id", ids)
    }

    /// Repeated `fields=`: only these attributes come back (others decode as defaults).
    pub fn fields<I>(self, fields: I) -> Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        self.any_of("fields", fields)
    }

    /// `tags=a,b`: resources having all of the tags.
    pub fn tags<I>(self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        let joined = tags
            .into_iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.eq("tags", joined)
    }

    /// `tags-any=a,b`: resources having any of the tags.
    pub fn tags_any<I>(self, tags: I) -> Self
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        let joined = tags
            .into_iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.eq("tags-any", joined)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_pairs() {
        let q = Query::new()
            .eq("network_id", "n1")
            .ids(["a", "b"])
            .fields(["id", "status"])
            .tags(["x", "y"])
            .tags_any(["z"]);
        let p: Vec<(&str, &str)> = q
            .pairs()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            p,
            [
                ("network_id", "n1"),
                ("id", "a"),
                ("id", "b"),
                ("fields", "id"),
                ("fields", "status"),
                ("tags", "x,y"),
                ("tags-any", "z")
            ]
        );
        assert!(Query::new().is_empty());
    }
}
