//! One vocabulary for what tokengate decided about a token request. The access log's
//! `x-tokengate-decision`, the `x-tokengate-cache` header, the stats and the usage report's
//! per-client counts are all read off [`Decision`], never spelled out again.

use serde::ser::SerializeMap;

use crate::host::Metric;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Served from the cache.
    Hit,
    /// This request called the IdP.
    Miss,
    /// Waited for another request's IdP call.
    Coalesced,
    /// The IdP failed; a still-valid cached token was served.
    Stale,
    /// A remembered IdP refusal.
    Negative,
    /// Neither served from nor stored in the cache (other grants, DPoP, relayed failures).
    Bypass,
    RateLimited,
    QuotaRejected,
    /// Refused locally: the IdP asked for a back-off (its `429`).
    Backoff,
    BadRequest,
    /// The IdP refused this request's own call (`401`/`403`: a wrong secret, say).
    Rejected,
    /// Refused locally: the client id's bucket of IdP calls for credentials the IdP has
    /// not accepted yet (`rate_limit.unproven`) is empty.
    Unproven,
    /// Refused locally: Auth0 said the client's or the organization's token quota is spent.
    Auth0Quota,
}

impl Decision {
    /// Every decision, in `index` order. New ones go last: a client record of the
    /// previous format holds the counts of the ones before them.
    pub const ALL: [Decision; 13] = [
        Decision::Hit,
        Decision::Miss,
        Decision::Coalesced,
        Decision::Stale,
        Decision::Negative,
        Decision::Bypass,
        Decision::RateLimited,
        Decision::QuotaRejected,
        Decision::Backoff,
        Decision::BadRequest,
        Decision::Rejected,
        Decision::Unproven,
        Decision::Auth0Quota,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// `x-tokengate-decision`: the access log's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Hit => "hit",
            Decision::Miss => "miss",
            Decision::Coalesced => "coalesced",
            Decision::Stale => "stale",
            Decision::Negative => "negative",
            Decision::Bypass => "bypass",
            Decision::Rejected => "rejected",
            Decision::RateLimited => "rate_limited",
            Decision::Unproven => "unproven",
            Decision::Auth0Quota => "auth0_quota",
            Decision::QuotaRejected => "quota_rejected",
            Decision::Backoff => "idp_backoff",
            Decision::BadRequest => "bad_request",
        }
    }

    /// `x-tokengate-cache`: how the cache took part (`bypass` for every local refusal;
    /// `miss` for the IdP's refusal of this request's own call).
    pub fn cache_header(self) -> &'static str {
        match self {
            Decision::Hit | Decision::Miss | Decision::Coalesced | Decision::Stale | Decision::Negative => {
                self.as_str()
            }
            Decision::Rejected => Decision::Miss.as_str(),
            _ => Decision::Bypass.as_str(),
        }
    }

    /// The stat it is counted in.
    pub fn metric(self) -> Metric {
        match self {
            Decision::Hit => Metric::Hits,
            Decision::Miss => Metric::Misses,
            Decision::Coalesced => Metric::Coalesced,
            Decision::Stale => Metric::Stale,
            Decision::Negative => Metric::Negative,
            Decision::Bypass => Metric::Bypass,
            Decision::Rejected => Metric::Rejected,
            Decision::RateLimited => Metric::RateLimited,
            Decision::Unproven => Metric::Unproven,
            Decision::Auth0Quota => Metric::Auth0QuotaRefusals,
            Decision::QuotaRejected => Metric::QuotaRejected,
            Decision::Backoff => Metric::IdpBackoffRejected,
            Decision::BadRequest => Metric::BadRequests,
        }
    }

    /// Its count's name in the usage report.
    pub fn usage_field(self) -> &'static str {
        match self {
            Decision::Hit => "hits",
            Decision::Miss => "misses",
            Decision::BadRequest => "bad_requests",
            other => other.as_str(),
        }
    }
}

/// A count per decision (a client's, or the totals of the usage report).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionCounts(pub [u64; Decision::ALL.len()]);

impl DecisionCounts {
    pub fn count(&mut self, decision: Decision, n: u64) {
        let slot = &mut self.0[decision.index()];
        *slot = slot.saturating_add(n);
    }

    pub fn get(&self, decision: Decision) -> u64 {
        self.0[decision.index()]
    }

    pub fn add(&mut self, other: &DecisionCounts) {
        for decision in Decision::ALL {
            self.count(decision, other.get(decision));
        }
    }
}

impl DecisionCounts {
    /// One member per decision, named by [`Decision::usage_field`], into a JSON object
    /// being written (the usage report's rows and totals).
    pub fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        for decision in Decision::ALL {
            map.serialize_entry(decision.usage_field(), &self.get(decision))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_every_name_is_distinct() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
        }
        for names in [
            Decision::ALL.map(Decision::as_str),
            Decision::ALL.map(Decision::usage_field),
            Decision::ALL.map(|d| d.metric().name()),
        ] {
            let mut sorted = names.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
        }
    }

    #[test]
    fn refusals_are_bypass_to_the_cache_and_the_idps_refusal_a_miss() {
        assert_eq!(Decision::RateLimited.cache_header(), "bypass");
        assert_eq!(Decision::Unproven.cache_header(), "bypass");
        assert_eq!(Decision::Rejected.cache_header(), "miss");
    }

    struct Members(DecisionCounts);

    impl serde::Serialize for Members {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(None)?;
            self.0.write_members(&mut map)?;
            map.end()
        }
    }

    #[test]
    fn counts_are_written_by_their_usage_names() {
        let mut counts = DecisionCounts::default();
        counts.count(Decision::Hit, 3);
        counts.count(Decision::Backoff, 1);
        let json = serde_json::to_value(Members(counts)).unwrap();
        assert_eq!(json["hits"], 3);
        assert_eq!(json["idp_backoff"], 1);
        assert_eq!(json["rate_limited"], 0);
        assert_eq!(json.as_object().unwrap().len(), Decision::ALL.len());
    }
}
