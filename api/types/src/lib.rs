//! Wire types of the REST API (`/v1`), one module per route family. The server converts domain
//! objects into these; clients (the CLI, the node agent) deserialise them.
//! `doc/api/openapi.yaml` describes the same shapes (the e2e `openapi` tests keep them equal).
//! Ids are typed (`shared-ids`) and travel as bare UUIDs.

pub mod appplatform;
pub mod billing;
pub mod gpuaas;
pub mod limits;
pub mod platform;
pub mod tokenfactory;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` to get the next page; `null` once a page comes back short.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of up to `limit` items read in cursor order: a full page names its last item's
    /// cursor, a short one ends the listing.
    pub fn of<D>(
        items: Vec<D>,
        limit: i64,
        cursor: impl Fn(&D) -> String,
        wire: impl FnMut(D) -> T,
    ) -> Self {
        let next_cursor = (items.len() as i64 == limit)
            .then(|| items.last().map(&cursor))
            .flatten();
        Self {
            items: items.into_iter().map(wire).collect(),
            next_cursor,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// RFC 9457 problem details, with a stable machine `code` and the `request_id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    pub request_id: String,
}
