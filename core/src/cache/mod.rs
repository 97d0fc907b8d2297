//! The shared token cache: entries in Envoy's shared data, in a fixed table of
//! `cache.max_entries` slots (Envoy never evicts a shared-data key, so the key space itself
//! must be bounded).

mod entry;
mod local;
mod negative;
mod proven;
pub mod purge;
mod table;
mod token_json;

pub use entry::{CacheEntry, MAX_CACHED_BODY_BYTES, in_refresh_window, render_token};
pub use local::{LocalHit, LocalIndex, RequestDigest};
pub use negative::{NegativeEntry, NegativeTable};
pub use proven::ProvenEntry;
pub use table::{SlotEntry, SlotTable, Slots, TokenTable};
pub use token_json::{members, object_without, string_member};
