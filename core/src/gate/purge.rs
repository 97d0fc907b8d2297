//! `POST <usage_path>/purge`: an operator drops a client's cached tokens and remembered
//! refusals (a rotated secret, a revoked grant, a deleted application), so its next
//! request is a miss (see `cache::purge`).

use super::*;
use crate::cache::purge::{client_tag, count_purge};

impl Gate<'_> {
    /// Empties the client's token and negative slots in shared data and counts the purge,
    /// which empties every worker's index of served tokens (this one's now, the others' on
    /// their tick). Returns how many shared entries went.
    pub fn purge(&self, client_id: &str) -> Result<u64, StoreError> {
        // Counted first: if emptying the slots then fails half-way, every worker has still
        // dropped its copies (and the operator is told to try again).
        count_purge(&self.store, self.key_prefix)?;
        if let Some(index) = self.local {
            index.borrow_mut().clear();
        }
        let tag = client_tag(Some(client_id));
        let tokens = self.tokens().remove_where(&|e: &CacheEntry| e.client_tag == tag)?;
        let negatives = self.negatives().remove_where(&|e: &NegativeEntry| e.client_tag == tag)?;
        let purged = tokens + negatives;
        self.host.add(Metric::CacheEntries, -(tokens as i64));
        self.host.add(Metric::Purged, purged as i64);
        log::info!("purged {purged} cached entries of one client");
        Ok(purged)
    }

    /// The answer to a purge done: `200 {"purged": <entries>}`.
    pub fn purged(&self, entries: u64) -> Response {
        let body = format!("{{\"purged\":{entries}}}").into_bytes();
        Response::json(200, body, Decision::Bypass)
    }

    /// A purge without a form body naming a client.
    pub fn purge_refused(&self) -> Response {
        let description = "a purge takes a form body client_id=<client id>";
        Response::oauth_error(400, ErrorCode::InvalidRequest, description, Decision::Bypass)
    }

    /// Another method than `POST` on the purge path.
    pub fn purge_wrong_method(&self) -> Response {
        let description = "a purge uses POST with a form body client_id=<client id>";
        let mut r = Response::oauth_error(405, ErrorCode::InvalidRequest, description, Decision::Bypass);
        r.push_header("allow", "POST".to_owned());
        r
    }

    /// Shared data could not be read or written: nothing is known to be purged.
    pub fn purge_failed(&self) -> Response {
        let description = "the purge could not be completed; try again";
        Response::oauth_error(503, ErrorCode::TemporarilyUnavailable, description, Decision::Bypass)
    }
}
