//! Auth0's own M2M token quotas. Auth0 answers token calls with `auth0-client-quota-limit`
//! and `auth0-organization-quota-limit`: comma-separated buckets
//! `b=per_hour|per_day;q=<quota>;r=<remaining>;t=<seconds to reset>`. A bucket with `r=0`
//! means Auth0 refuses that client's (or organization's) next token calls until `t`; with
//! `upstream.auth0_quota: "obey"` tokengate answers them itself meanwhile (a hold), so the
//! refused calls never count against the tenant's shared Authentication API limit.
//!
//! Holds live in a small slot table of their own, shared by every worker; a flood of
//! requests cannot add one (only an IdP answer does), and a full table drops the hold that
//! ends first (one more call to Auth0 takes it again).

use crate::cache::SlotEntry;
use crate::codec::{Reader, Writer};
use crate::fingerprint::{Fingerprint, tagged};

pub const CLIENT_HEADER: &str = "auth0-client-quota-limit";
pub const ORGANIZATION_HEADER: &str = "auth0-organization-quota-limit";
/// Slots of the hold table (`<prefix>:auth0-hold:<n>`): holds are rare and short-lived.
pub const HOLD_SLOTS: u32 = 256;
/// Auth0's longest bucket is a day: a `t` beyond it is cut to a day.
const MAX_RESET_S: u64 = 86_400;
const FORMAT_VERSION: u8 = 1;

/// When a spent bucket of a quota header value resets: the latest `t` among the buckets
/// with `r=0` (`Ok(None)`: nothing is spent, or it resets now). `Err` when any bucket lacks
/// `b`, `q`, `r` or `t`, or one of them is not a number: the whole value is then ignored
/// (and counted).
pub fn spent_until_ms(value: &str, now_ms: u64) -> Result<Option<u64>, Malformed> {
    let mut reset_s = None;
    for bucket in value.split(',') {
        let (mut per, mut quota, mut remaining, mut t) = (false, None, None, None);
        for pair in bucket.split(';') {
            let (name, v) = pair.split_once('=').ok_or(Malformed)?;
            let v = v.trim();
            let number = || v.parse::<u64>().map_err(|_| Malformed);
            match name.trim() {
                "b" => per = !v.is_empty(),
                "q" => quota = Some(number()?),
                "r" => remaining = Some(number()?),
                "t" => t = Some(number()?),
                _ => {}
            }
        }
        let (true, Some(_), Some(remaining), Some(t)) = (per, quota, remaining, t) else {
            return Err(Malformed);
        };
        if remaining == 0 {
            reset_s = reset_s.max(Some(t.min(MAX_RESET_S)));
        }
    }
    Ok(reset_s.filter(|s| *s > 0).map(|s| now_ms.saturating_add(s * 1000)))
}

/// A quota header value that could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// What a hold is for: a client id, or an organization as requests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Client,
    Organization,
}

impl Subject {
    /// The header Auth0 describes this subject's quota in.
    pub fn header(self) -> &'static str {
        match self {
            Subject::Client => CLIENT_HEADER,
            Subject::Organization => ORGANIZATION_HEADER,
        }
    }

    /// Its key in the hold table.
    pub fn fingerprint(self, name: &str) -> Fingerprint {
        let mut input = Vec::with_capacity(1 + name.len());
        input.push(self as u8);
        input.extend_from_slice(name.as_bytes());
        tagged(b"tokengate auth0 quota hold", &input)
    }
}

/// Auth0 said this client's or organization's quota is spent until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub fingerprint: Fingerprint,
    pub subject: Subject,
    pub name: String,
    pub until_ms: u64,
    /// When Auth0 sent `header_value`.
    pub seen_ms: u64,
    /// Auth0's header as it came.
    pub header_value: String,
}

impl Hold {
    pub fn new(subject: Subject, name: &str, header_value: &str, seen_ms: u64, until_ms: u64) -> Hold {
        Hold {
            fingerprint: subject.fingerprint(name),
            subject,
            name: name.to_owned(),
            until_ms,
            seen_ms,
            header_value: header_value.to_owned(),
        }
    }

    /// Auth0's header passed on at `now_ms`: each bucket's `t` counts down from when Auth0
    /// sent it, the rest as Auth0 wrote it (a proxy in front that reads it, an edge of a
    /// fleet say, then holds no longer than Auth0 does).
    pub fn header_at(&self, now_ms: u64) -> String {
        let elapsed_s = now_ms.saturating_sub(self.seen_ms) / 1000;
        let mut out = String::with_capacity(self.header_value.len());
        for part in self.header_value.split_inclusive([';', ',']) {
            let (pair, end) = part.split_at(part.len() - usize::from(part.ends_with([';', ','])));
            let value = pair.trim_start();
            match value.strip_prefix("t=").and_then(|t| t.trim().parse::<u64>().ok()) {
                Some(t) => {
                    out.push_str(&pair[..pair.len() - value.len()]);
                    out.push_str("t=");
                    out.push_str(&t.saturating_sub(elapsed_s).to_string());
                    out.push_str(end);
                }
                None => out.push_str(part),
            }
        }
        out
    }
}

impl SlotEntry for Hold {
    const KIND: &'static str = crate::keys::AUTH0_HOLD;

    fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    fn expires_at_ms(&self) -> u64 {
        self.until_ms
    }

    fn encode(&self) -> Vec<u8> {
        let capacity = 32 + 8 + 8 + 1 + 8 + self.name.len() + self.header_value.len();
        Writer::new(FORMAT_VERSION, capacity)
            .raw(&self.fingerprint.0)
            .u64(self.until_ms)
            .u64(self.seen_ms)
            .u8(self.subject as u8)
            .bytes(self.name.as_bytes())
            .bytes(self.header_value.as_bytes())
            .finish()
    }

    fn decode(bytes: &[u8]) -> Option<Hold> {
        let mut r = Reader::open(bytes, FORMAT_VERSION)?;
        Some(Hold {
            fingerprint: Fingerprint(r.array()?),
            until_ms: r.u64()?,
            seen_ms: r.u64()?,
            subject: match r.u8()? {
                0 => Subject::Client,
                _ => Subject::Organization,
            },
            name: r.string()?,
            header_value: r.string()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_passed_on_counts_down_each_bucket() {
        let value = "b=per_hour;q=5;r=0;t=30, b=per_day;q=9;r=4; t=100";
        let hold = Hold::new(Subject::Client, "c1", value, 10_000, 40_000);
        assert_eq!(hold.header_at(10_900), value, "within the first second, as Auth0 sent it");
        assert_eq!(hold.header_at(22_000), "b=per_hour;q=5;r=0;t=18, b=per_day;q=9;r=4; t=88");
        assert_eq!(hold.header_at(500_000), "b=per_hour;q=5;r=0;t=0, b=per_day;q=9;r=4; t=0");
    }

    #[test]
    fn one_bucket() {
        assert_eq!(spent_until_ms("b=per_hour;q=5;r=0;t=30", 1_000), Ok(Some(31_000)));
        assert_eq!(spent_until_ms("b=per_hour;q=5;r=1;t=30", 1_000), Ok(None));
    }

    #[test]
    fn two_buckets_the_spent_one_decides() {
        let value = "b=per_hour;q=100;r=99;t=3000, b=per_day;q=1000;r=0;t=80000";
        assert_eq!(spent_until_ms(value, 0), Ok(Some(80_000_000)));
        // Nothing spent: no hold.
        assert_eq!(spent_until_ms("b=per_hour;q=100;r=1;t=3000,b=per_day;q=1000;r=999;t=80000", 0), Ok(None));
        // Both spent: the later reset.
        assert_eq!(spent_until_ms("b=per_hour;q=1;r=0;t=10,b=per_day;q=1;r=0;t=20", 0), Ok(Some(20_000)));
    }

    #[test]
    fn a_reset_now_or_beyond_a_day() {
        assert_eq!(spent_until_ms("b=per_hour;q=5;r=0;t=0", 7), Ok(None));
        let far = format!("b=per_day;q=5;r=0;t={}", u64::MAX);
        assert_eq!(spent_until_ms(&far, 0), Ok(Some(86_400_000)));
    }

    #[test]
    fn malformed_values_are_refused_whole() {
        for bad in [
            "",
            "garbage",
            "b=per_hour;q=5;r=0",
            "b=per_hour;q=5;r=-1;t=30",
            "b=per_hour;q=five;r=0;t=30",
            "b=per_hour;q=5;r=0;t=30,",
            "b=per_hour;q=5;r=0;t=30,b=per_day;q=x;r=0;t=1",
            "b=;q=5;r=0;t=30",
            "b=per_hour;q=5;r=0;t=3.5",
            "b=per_hour;q=5;r;t=30",
        ] {
            assert_eq!(spent_until_ms(bad, 0), Err(Malformed), "{bad:?}");
        }
        // Unknown keys and spaces are tolerated.
        assert_eq!(spent_until_ms(" b=per_day ; q=1 ; r=0 ; t=5 ; x=y ", 0), Ok(Some(5_000)));
    }

    #[test]
    fn holds_round_trip_and_a_client_and_an_organization_of_one_name_differ() {
        let hold = Hold::new(Subject::Client, "c1", "b=per_hour;q=5;r=0;t=30", 10_000, 40_000);
        assert_eq!(Hold::decode(&hold.encode()), Some(hold.clone()));
        let org = Hold::new(Subject::Organization, "c1", "x", 0, 1);
        assert_ne!(org.fingerprint, hold.fingerprint);
        assert_eq!(Hold::decode(&org.encode()), Some(org));
    }
}
