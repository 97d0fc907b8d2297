//! Auth0's quota headers (see `crate::auth0_quota`): read off every IdP answer, and the
//! local `429` for a client or organization whose quota Auth0 says is spent.

use super::*;
use crate::auth0_quota::{CLIENT_HEADER, HOLD_SLOTS, Hold, ORGANIZATION_HEADER, Subject, spent_until_ms};
use crate::cache::SlotTable;
use crate::config::Auth0Quota;

impl Gate<'_> {
    fn holds(&self) -> SlotTable<'_, Hold> {
        SlotTable::new(self.host, self.key_prefix, HOLD_SLOTS)
    }

    fn obeys_auth0_quota(&self) -> bool {
        self.config.upstream.auth0_quota == Auth0Quota::Obey
    }

    /// Reads Auth0's quota headers off an IdP answer: a spent bucket in a `200` (a token
    /// issued) or a `429` holds the client, or the organization the request named, until it
    /// resets. Only those: a refusal of wrong credentials must never hold the real client.
    /// A value that cannot be read is counted and ignored.
    pub(super) fn observe_auth0_quota(
        &self,
        status: u16,
        headers: &[(String, String)],
        client_id: Option<&str>,
        organization: Option<&str>,
        now: u64,
    ) {
        if !self.obeys_auth0_quota() || !matches!(status, 200 | 429) {
            return;
        }
        for (name, value) in headers {
            let (subject, held) = match name.as_str() {
                CLIENT_HEADER => (Subject::Client, client_id),
                ORGANIZATION_HEADER => (Subject::Organization, organization),
                _ => continue,
            };
            let Ok(until) = spent_until_ms(value, now) else {
                self.host.add(Metric::Auth0QuotaMalformed, 1);
                continue;
            };
            if let (Some(until), Some(held)) = (until, held) {
                self.stored(self.holds().put(&Hold::new(subject, held, value, now, until), now));
            }
        }
    }

    /// The hold in force for a request of this client naming this organization, if any.
    pub(super) fn auth0_hold(
        &self,
        client_id: Option<&str>,
        organization: Option<&str>,
        now: u64,
    ) -> Option<Hold> {
        if !self.obeys_auth0_quota() {
            return None;
        }
        [(Subject::Client, client_id), (Subject::Organization, organization)].into_iter().find_map(
            |(subject, name)| {
                let name = name?;
                let hold = self.holds().get(&subject.fingerprint(name)).ok().flatten()?;
                (hold.until_ms > now && hold.subject == subject && hold.name == name).then_some(hold)
            },
        )
    }

    /// The local `429` while Auth0's quota is spent: `retry-after` until the bucket resets,
    /// and Auth0's header passed on, its `t`s counted down (it replaces tokengate's own
    /// quota header).
    pub(super) fn auth0_quota_refusal(
        &self,
        client_id: Option<&str>,
        hold: &Hold,
        limit_headers: &[Header],
        now: u64,
    ) -> Response {
        let description = match hold.subject {
            Subject::Client => "Auth0's token quota for this client is spent; retry after the time given",
            Subject::Organization => {
                "Auth0's token quota for this organization is spent; retry after the time given"
            }
        };
        let mut r = Response::oauth_error(429, ErrorCode::TooManyRequests, description, Decision::Bypass);
        r.push_header("retry-after", seconds_left(hold.until_ms, now).to_string());
        let r = with_headers(r, limit_headers);
        let r = with_headers(r, &[(hold.subject.header().into(), hold.header_at(now).into())]);
        self.conclude(client_id, Decision::Auth0Quota, r, Tally::CountNow)
    }
}
