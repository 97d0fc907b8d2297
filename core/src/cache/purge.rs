//! Purging a client (`POST <usage_path>/purge`): its cached tokens and remembered refusals
//! are found by their client tag and emptied in shared data, and the purge count in
//! `<prefix>:purges` goes up. Every worker reads that count on its tick and, when it moved,
//! empties its own index of served tokens (`cache::local`): the index is only a copy of the
//! shared cache, refilled by each key's next request, and a purge is a rare operator act.

use crate::fingerprint::tagged;
use crate::host::StoreError;
use crate::store::{Change, Store};

/// The tag a cache entry carries for its client id (0: the request named none).
pub fn client_tag(client_id: Option<&str>) -> u64 {
    client_id.map_or(0, |id| tagged(b"tokengate client tag", id.as_bytes()).word(0).max(1))
}

/// How many purges there have been (0 when none, or the count cannot be read).
pub fn purges(store: &Store<'_>, key_prefix: &str) -> u64 {
    let value = store.get(&crate::keys::purges(key_prefix)).ok().flatten();
    value.and_then(|(bytes, _)| bytes.try_into().ok()).map_or(0, u64::from_le_bytes)
}

/// Counts one more purge.
pub fn count_purge(store: &Store<'_>, key_prefix: &str) -> Result<u64, StoreError> {
    store.update(&crate::keys::purges(key_prefix), &0u64.to_le_bytes(), |bytes| {
        let n = bytes.try_into().map_or(0, u64::from_le_bytes) + 1;
        Change::Write(n.to_le_bytes().to_vec(), n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn tags_differ_by_client_and_none_is_zero() {
        assert_eq!(client_tag(None), 0);
        assert_ne!(client_tag(Some("a")), client_tag(Some("b")));
        assert_ne!(client_tag(Some("a")), 0);
    }

    #[test]
    fn the_purge_count_goes_up() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        assert_eq!(purges(&store, "tg"), 0);
        assert_eq!(count_purge(&store, "tg"), Ok(1));
        assert_eq!(count_purge(&store, "tg"), Ok(2));
        assert_eq!(purges(&store, "tg"), 2);
    }
}
