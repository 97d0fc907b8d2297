//! A client's record in shared data: its buckets, quota window, IdP back-off and usage,
//! in the record codec every table uses.

use crate::codec::{Reader, Writer};
use crate::decision::{Decision, DecisionCounts};
use crate::limits::{Bucket, QuotaWindow};

/// Bumped when the layout changes: a record of another layout reads as an empty slot,
/// except the previous one, which lacks only the counts of the decisions added last.
const FORMAT_VERSION: u8 = 8;
const PREVIOUS_VERSION: u8 = 7;
const PREVIOUS_DECISIONS: usize = 12;

/// What one client did, counted exactly across workers (the usage report's row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub requests: u64,
    /// Requests by what was decided for them.
    pub decisions: DecisionCounts,
    /// Tokens the IdP issued for this client, ever and in the current window.
    pub issued_total: u64,
    pub issued_window_start_ms: u64,
    pub issued_window: u64,
}

impl Usage {
    const FIELDS: usize = 4 + Decision::ALL.len();

    pub(super) fn count(&mut self, decision: Decision) {
        self.decisions.count(decision, 1);
    }

    fn fields(&self) -> [u64; Usage::FIELDS] {
        let mut fields = [0; Usage::FIELDS];
        fields[..4].copy_from_slice(&[
            self.requests,
            self.issued_total,
            self.issued_window_start_ms,
            self.issued_window,
        ]);
        fields[4..].copy_from_slice(&self.decisions.0);
        fields
    }

    fn from_fields(f: [u64; Usage::FIELDS]) -> Usage {
        let mut decisions = DecisionCounts::default();
        decisions.0.copy_from_slice(&f[4..]);
        Usage {
            requests: f[0],
            issued_total: f[1],
            issued_window_start_ms: f[2],
            issued_window: f[3],
            decisions,
        }
    }

    /// Tokens issued in the window `now_ms` falls in (windows aligned to the epoch).
    pub fn issued_in_window(&self, window_ms: u64, now_ms: u64) -> u64 {
        if self.issued_window_start_ms == window_start_of(window_ms, now_ms) { self.issued_window } else { 0 }
    }

    /// Requests answered with a token the IdP did not have to issue again.
    pub fn tokens_saved(&self) -> u64 {
        [Decision::Hit, Decision::Coalesced, Decision::Stale]
            .iter()
            .fold(0u64, |sum, d| sum.saturating_add(self.decisions.get(*d)))
    }
}

pub(super) fn window_start_of(window_ms: u64, now_ms: u64) -> u64 {
    now_ms - now_ms % window_ms.max(1)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    pub last_seen_ms: u64,
    pub bucket: Option<Bucket>,
    /// IdP calls caused by credentials not yet proven (`rate_limit.unproven`).
    pub unproven: Option<Bucket>,
    pub quota: Option<QuotaWindow>,
    /// No IdP call for this client before this (0 = none): the IdP answered it `429`.
    pub backoff_until_ms: u64,
    pub usage: Usage,
}

impl ClientRecord {
    pub(super) fn new(client_id: &str, now_ms: u64) -> ClientRecord {
        ClientRecord {
            client_id: client_id.to_owned(),
            last_seen_ms: now_ms,
            bucket: None,
            unproven: None,
            quota: None,
            backoff_until_ms: 0,
            usage: Usage::default(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.bucket.is_some())
            | u8::from(self.quota.is_some()) << 1
            | u8::from(self.unproven.is_some()) << 2;
        let mut out = Writer::new(FORMAT_VERSION, 4 + self.client_id.len() + 8 * (4 + 6 + Usage::FIELDS) + 1);
        out.bytes(self.client_id.as_bytes()).u64(self.last_seen_ms).u8(flags);
        for b in [self.bucket, self.unproven].into_iter().flatten() {
            out.u64(b.tokens).u64(b.last_fill_ms);
        }
        if let Some(q) = self.quota {
            out.u64(q.start_ms).u64(q.used);
        }
        out.u64(self.backoff_until_ms);
        for field in self.usage.fields() {
            out.u64(field);
        }
        out.finish()
    }

    /// `None` for an empty slot or bytes of another format.
    pub fn decode(bytes: &[u8]) -> Option<ClientRecord> {
        let (mut r, decisions) = match Reader::open(bytes, FORMAT_VERSION) {
            Some(r) => (r, Decision::ALL.len()),
            None => (Reader::open(bytes, PREVIOUS_VERSION)?, PREVIOUS_DECISIONS),
        };
        let client_id = r.string()?;
        let last_seen_ms = r.u64()?;
        let flags = r.u8()?;
        let bucket =
            if flags & 1 != 0 { Some(Bucket { tokens: r.u64()?, last_fill_ms: r.u64()? }) } else { None };
        let unproven =
            if flags & 4 != 0 { Some(Bucket { tokens: r.u64()?, last_fill_ms: r.u64()? }) } else { None };
        let quota =
            if flags & 2 != 0 { Some(QuotaWindow { start_ms: r.u64()?, used: r.u64()? }) } else { None };
        let backoff_until_ms = r.u64()?;
        let mut fields = [0u64; Usage::FIELDS];
        for field in fields.iter_mut().take(4 + decisions) {
            *field = r.u64()?;
        }
        Some(ClientRecord {
            client_id,
            last_seen_ms,
            bucket,
            unproven,
            quota,
            backoff_until_ms,
            usage: Usage::from_fields(fields),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_the_previous_format_reads_without_the_counts_added_since() {
        let mut record = ClientRecord::new("c1", 5);
        record.bucket = Some(Bucket { tokens: 3, last_fill_ms: 4 });
        record.usage.requests = 9;
        record.usage.count(Decision::Hit);
        record.usage.count(Decision::BadRequest);
        let current = record.encode();
        assert_eq!(ClientRecord::decode(&current), Some(record.clone()));
        // The previous format: its version, and no count for the decision added last.
        let mut previous = current[..current.len() - 8].to_vec();
        previous[0] = PREVIOUS_VERSION;
        assert_eq!(ClientRecord::decode(&previous), Some(record));
        previous[0] = PREVIOUS_VERSION - 1;
        assert_eq!(ClientRecord::decode(&previous), None);
    }
}
