//! The client tables' slot mechanics: where a client's record lives (two candidate slots of
//! a fixed table in shared data), reading it, and changing it with compare-and-swap, one copy
//! of the loop for every kind of change. The rules that change it are in `clients`.

use std::hash::{DefaultHasher, Hash, Hasher};

use super::ClientRecord;
use crate::cache::Slots;
use crate::host::StoreError;
use crate::store::{CAS_ATTEMPTS, Change, Store};

/// Which client table: clients that proved their credentials (`Trusted`: configured in
/// `rate_limit.clients` / `quota.clients`, or given a token by the IdP) and everyone else
/// (`Guest`). Guests only ever replace guests, so a flood of made-up client ids churns the
/// guest table and never evicts — never resets — a real client's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Trusted,
    Guest,
}

impl Standing {
    fn table(self) -> &'static str {
        match self {
            Standing::Trusted => crate::keys::CLIENT,
            Standing::Guest => crate::keys::GUEST,
        }
    }
}

/// How [`ClientTable::modify`] treats a client without a record.
pub(super) enum Missing {
    /// Leave the table alone and report `None`.
    Skip,
    /// Create a record: this one, or a fresh one.
    Create(Option<Box<ClientRecord>>),
}

impl Missing {
    /// A fresh record when `create`, else leave the table alone.
    pub(super) fn fresh_if(create: bool) -> Missing {
        if create { Missing::Create(None) } else { Missing::Skip }
    }
}

pub struct ClientTable<'a> {
    store: &'a Store<'a>,
    slots: Slots<'a>,
}

impl<'a> ClientTable<'a> {
    pub fn new(store: &'a Store<'a>, key_prefix: &'a str, standing: Standing, slots: u32) -> ClientTable<'a> {
        ClientTable { store, slots: Slots::new(key_prefix, standing.table(), slots) }
    }

    pub(super) fn slot_keys(&self, client_id: &str) -> [String; 2] {
        let mut hasher = DefaultHasher::new();
        client_id.hash(&mut hasher);
        let hash = hasher.finish();
        self.slots.candidates(hash, hash >> 32 ^ hash.rotate_left(17))
    }

    /// Every record in the table (reads every slot: for the usage report, not requests).
    pub fn scan(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let mut records = Vec::new();
        for key in self.slots.every() {
            if let Some((bytes, _)) = self.store.get(&key).map_err(StoreError::Host)?
                && let Some(record) = ClientRecord::decode(&bytes)
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Takes in `record` (a guest's, on promotion) unless the client already has one here.
    pub fn adopt(&self, record: ClientRecord, now_ms: u64) -> Result<(), StoreError> {
        let id = record.client_id.clone();
        self.modify(&id, now_ms, Missing::Create(Some(Box::new(record))), |_| ()).map(|_| ())
    }

    /// Empties the client's slot.
    pub fn remove(&self, client_id: &str) -> Result<(), StoreError> {
        for key in self.slot_keys(client_id) {
            self.store.update(&key, &[], |bytes| match ClientRecord::decode(bytes) {
                Some(r) if r.client_id == client_id => Change::Write(Vec::new(), ()),
                _ => Change::Keep(()),
            })?;
        }
        Ok(())
    }

    /// The client's record, if it has one.
    pub fn get(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        for key in self.slot_keys(client_id) {
            if let Some((bytes, _)) = self.store.get(&key).map_err(StoreError::Host)?
                && let Some(record) = ClientRecord::decode(&bytes).filter(|r| r.client_id == client_id)
            {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Read-modify-write of the client's record with CAS. The record lives in one of its
    /// two slots; a new one takes an empty slot, else the one seen least recently. Every
    /// worker picks the same slot from the same reads, so racing creations collide on CAS
    /// instead of splitting a client in two.
    pub(super) fn modify<T>(
        &self,
        client_id: &str,
        now_ms: u64,
        missing: Missing,
        mut change: impl FnMut(&mut ClientRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        // One copy of the CAS loop in the .wasm for every kind of change.
        let mut out = None;
        let written =
            self.modify_record(client_id, now_ms, &missing, &mut |record| out = Some(change(record)))?;
        Ok(if written { out } else { None })
    }

    /// [`ClientTable::modify`]; `false` when the client has no record and none is made.
    fn modify_record(
        &self,
        client_id: &str,
        now_ms: u64,
        missing: &Missing,
        change: &mut dyn FnMut(&mut ClientRecord),
    ) -> Result<bool, StoreError> {
        let keys = self.slot_keys(client_id);
        for _ in 0..CAS_ATTEMPTS {
            // Where the record lives: a single read when it is in its first slot.
            let mut found = None;
            for key in &keys {
                if let Some((bytes, cas)) = self.store.get(key).map_err(StoreError::Host)?
                    && let Some(record) = ClientRecord::decode(&bytes).filter(|r| r.client_id == client_id)
                {
                    found = Some((key, cas, record));
                    break;
                }
            }
            let (key, cas, mut record) = match (found, missing) {
                (Some(found), _) => found,
                (None, Missing::Skip) => return Ok(false),
                (None, Missing::Create(seed)) => {
                    let mut slots = Vec::with_capacity(2);
                    for key in &keys {
                        let (bytes, cas) = self.store.read_or_create(key, &[])?;
                        slots.push((key, cas, ClientRecord::decode(&bytes)));
                    }
                    if slots.iter().any(|(_, _, r)| r.as_ref().is_some_and(|r| r.client_id == client_id)) {
                        // Another worker created it meanwhile: update that one.
                        continue;
                    }
                    let (key, cas, _) = slots
                        .into_iter()
                        .min_by_key(|(_, _, r)| r.as_ref().map_or(0, |r| r.last_seen_ms.saturating_add(1)))
                        .ok_or(StoreError::CasMismatch)?;
                    let record =
                        seed.as_deref().cloned().unwrap_or_else(|| ClientRecord::new(client_id, now_ms));
                    (key, cas, record)
                }
            };
            record.last_seen_ms = record.last_seen_ms.max(now_ms);
            change(&mut record);
            match self.store.write(key, &record.encode(), cas) {
                Ok(()) => return Ok(true),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::CasMismatch)
    }
}
