//! Every shared-data key and shared-queue name tokengate uses, in one place. Each starts
//! with the plugin's name (`key_prefix`), so two plugins in one Envoy never share data.
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `<prefix>:token:<slot>` | sealed token responses | `cache::TokenTable` |
//! | `<prefix>:negative:<slot>` | remembered IdP `401`/`403` | `cache::NegativeTable` |
//! | `<prefix>:proven:<slot>` | credentials the IdP issued a token to | `cache::ProvenEntry` in a `SlotTable` |
//! | `<prefix>:flight:<slot>` | in-flight markers and call outcomes | `flight::FlightTable` |
//! | `<prefix>:client:<slot>` | trusted clients' limits and usage | `clients::ClientTable` |
//! | `<prefix>:guest:<slot>` | every other client id's | `clients::ClientTable` |
//! | `<prefix>:auth0-hold:<slot>` | clients and organizations whose Auth0 quota is spent | `auth0_quota::Hold` in a `SlotTable` |
//! | `<prefix>:purges` | the last purges, for every worker's index of served tokens | `cache::purge` |
//! | `<prefix>:idp` | the IdP's back-off and last rate-limit headers | `backoff::IdpState` |
//! | `<prefix>:unknown-clients` | the bucket of IdP calls for never-issued client ids | `gate::proof` |
//! | `<prefix>:create-lock` | serializes the creation of records | `store::Store` |
//! | `<prefix>:workers` | counts workers, to name their wake-up queues | the host's root context |
//! | queue `<prefix>:wake:<n>` | wakes worker `n`'s waiters | the host's root context |

/// The table names of slot tables (`<prefix>:<table>:<slot>`).
pub const TOKEN: &str = "token";
pub const NEGATIVE: &str = "negative";
pub const PROVEN: &str = "proven";
pub const FLIGHT: &str = "flight";
pub const CLIENT: &str = "client";
pub const GUEST: &str = "guest";
pub const AUTH0_HOLD: &str = "auth0-hold";

/// A slot of a table.
pub fn slot(prefix: &str, table: &str, slot: u64) -> String {
    format!("{prefix}:{table}:{slot}")
}

pub fn idp(prefix: &str) -> String {
    format!("{prefix}:idp")
}

pub fn purges(prefix: &str) -> String {
    format!("{prefix}:purges")
}

pub fn unknown_clients(prefix: &str) -> String {
    format!("{prefix}:unknown-clients")
}

pub fn create_lock(prefix: &str) -> String {
    format!("{prefix}:create-lock")
}

pub fn workers(prefix: &str) -> String {
    format!("{prefix}:workers")
}

/// The wake-up queue of worker `index`.
pub fn wake_queue(prefix: &str, index: u64) -> String {
    format!("{prefix}:wake:{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_starts_with_the_prefix_and_tables_do_not_collide() {
        let tables = [TOKEN, NEGATIVE, PROVEN, FLIGHT, CLIENT, GUEST, AUTH0_HOLD];
        let mut keys: Vec<String> = tables.iter().map(|t| slot("p", t, 0)).collect();
        keys.extend([
            purges("p"),
            idp("p"),
            unknown_clients("p"),
            create_lock("p"),
            workers("p"),
            wake_queue("p", 0),
        ]);
        assert!(keys.iter().all(|k| k.starts_with("p:")));
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
    }
}
