//! Purging a client (`POST <usage_path>/purge`): its cached tokens and remembered refusals
//! are found by their client tag and emptied in shared data, and the purge is logged in
//! `<prefix>:purges`, which every worker reads on its tick to drop the client's tokens from
//! its own index of served tokens (`cache::local`).

use sha2::{Digest, Sha256};

use crate::host::StoreError;
use crate::record::{Reader, Writer};
use crate::store::{Change, Store};

/// Purges remembered in the log; a worker that missed more clears its whole index.
const LOGGED: usize = 16;
const FORMAT_VERSION: u8 = 1;

/// The tag a cache entry carries for its client id (0: the request named none).
pub fn client_tag(client_id: Option<&str>) -> u64 {
    let Some(id) = client_id else {
        return 0;
    };
    let digest = Sha256::new().chain_update(b"tokengate client tag\0").chain_update(id.as_bytes()).finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(word).max(1)
}

/// The last purges: each with its generation (counting from 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeLog {
    pub generation: u64,
    /// The newest last, at most [`LOGGED`].
    pub recent: Vec<(u64, String)>,
}

/// What a worker that has applied purges up to some generation must still drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed<'a> {
    Nothing,
    Clients(Vec<&'a str>),
    /// More purges than the log keeps: everything.
    Everything,
}

impl PurgeLog {
    pub fn since(&self, seen: u64) -> Missed<'_> {
        if self.generation <= seen {
            return Missed::Nothing;
        }
        let oldest = self.recent.first().map_or(u64::MAX, |(g, _)| *g);
        if oldest > seen + 1 {
            return Missed::Everything;
        }
        Missed::Clients(self.recent.iter().filter(|(g, _)| *g > seen).map(|(_, id)| id.as_str()).collect())
    }

    fn encode(&self) -> Vec<u8> {
        let mut out =
            Writer::new(FORMAT_VERSION, 16 + self.recent.iter().map(|(_, id)| 12 + id.len()).sum::<usize>());
        out.u64(self.generation);
        for (generation, id) in &self.recent {
            out.u64(*generation).bytes(id.as_bytes());
        }
        out.finish()
    }

    fn decode(bytes: &[u8]) -> Option<PurgeLog> {
        let mut r = Reader::open(bytes, FORMAT_VERSION)?;
        let mut log = PurgeLog { generation: r.u64()?, recent: Vec::new() };
        while !r.is_done() {
            log.recent.push((r.u64()?, r.string()?));
        }
        Some(log)
    }

    /// The log in shared data; an empty log when there is none or it cannot be read.
    pub fn read(store: &Store<'_>, key_prefix: &str) -> PurgeLog {
        let value = store.get(&crate::keys::purges(key_prefix)).ok().flatten();
        value.and_then(|(bytes, _)| PurgeLog::decode(&bytes)).unwrap_or_default()
    }

    /// Logs a purge of `client_id`; returns its generation.
    pub fn append(store: &Store<'_>, key_prefix: &str, client_id: &str) -> Result<u64, StoreError> {
        let key = crate::keys::purges(key_prefix);
        store.update(&key, &PurgeLog::default().encode(), |bytes| {
            let mut log = PurgeLog::decode(bytes).unwrap_or_default();
            log.generation += 1;
            log.recent.push((log.generation, client_id.to_owned()));
            if log.recent.len() > LOGGED {
                log.recent.remove(0);
            }
            Change::Write(log.encode(), log.generation)
        })
    }
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
    fn a_worker_drops_what_it_missed_or_everything_past_the_log() {
        let host = FakeHost::new(0);
        let store = Store::new(&host, &host, "tg");
        assert_eq!(PurgeLog::read(&store, "tg").since(0), Missed::Nothing);
        assert_eq!(PurgeLog::append(&store, "tg", "c1"), Ok(1));
        assert_eq!(PurgeLog::append(&store, "tg", "c2"), Ok(2));
        let log = PurgeLog::read(&store, "tg");
        assert_eq!(log.since(0), Missed::Clients(vec!["c1", "c2"]));
        assert_eq!(log.since(1), Missed::Clients(vec!["c2"]));
        assert_eq!(log.since(2), Missed::Nothing);
        for n in 0..LOGGED {
            PurgeLog::append(&store, "tg", &format!("x{n}")).unwrap();
        }
        let log = PurgeLog::read(&store, "tg");
        assert_eq!(log.recent.len(), LOGGED);
        assert_eq!(log.since(1), Missed::Everything, "c2 fell out of the log");
        assert!(matches!(log.since(2), Missed::Clients(ids) if ids.len() == LOGGED));
    }
}
