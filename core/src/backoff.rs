//! IdP back-pressure. Auth0 tells API callers its limits in `x-ratelimit-limit`,
//! `x-ratelimit-remaining` and `x-ratelimit-reset` (Unix seconds), and after a `429` expects
//! them to wait. tokengate reads these headers on every IdP answer, keeps the last ones in
//! shared data (the usage report shows them), and on a `429` records a deadline — in the
//! client's record, or for the whole IdP — before which no request calls the IdP again.

use crate::codec::{Reader, Writer};
use crate::host::StoreError;
use crate::store::{Change, Store};

/// What the IdP last said about its rate limit, and the IdP-wide back-off deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdpRecord {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Unix seconds.
    pub reset_s: Option<u64>,
    /// When these headers were seen (0 = never).
    pub seen_ms: u64,
    /// No IdP call before this (0 = none), with `backoff_scope: "upstream"`.
    pub upstream_until_ms: u64,
}

/// The rate-limit headers of one IdP answer (names lowercase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_s: Option<u64>,
    pub retry_after_s: Option<u64>,
    /// `retry-after` given as an HTTP-date, in Unix seconds.
    pub retry_at_s: Option<u64>,
}

impl RateLimitHeaders {
    pub fn parse<'h>(headers: impl IntoIterator<Item = (&'h str, &'h str)>) -> RateLimitHeaders {
        let mut out = RateLimitHeaders::default();
        for (name, value) in headers {
            let number = value.trim().parse::<u64>().ok();
            match name {
                "x-ratelimit-limit" => out.limit = number,
                "x-ratelimit-remaining" => out.remaining = number,
                "x-ratelimit-reset" => out.reset_s = number,
                "retry-after" => {
                    out.retry_after_s = number;
                    out.retry_at_s = number.is_none().then(|| http_date_s(value)).flatten();
                }
                _ => {}
            }
        }
        out
    }

    fn any(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some() || self.reset_s.is_some()
    }
}

/// When a `429` answered at `now_ms` lets the IdP be called again: at `x-ratelimit-reset`,
/// else after `retry-after` seconds, else after 1 s. A reset that is not ahead of now is
/// ignored (the next source is used), and the wait is at least 1 s and at most
/// `max_backoff_ms` (a reset hours away is clamped).
pub fn deadline_ms(headers: &RateLimitHeaders, now_ms: u64, max_backoff_ms: u64) -> u64 {
    let from_reset = headers.reset_s.map(|s| s.saturating_mul(1000)).filter(|at| *at > now_ms);
    let from_retry = headers
        .retry_after_s
        .map(|s| now_ms.saturating_add(s.saturating_mul(1000)))
        .or(headers.retry_at_s.map(|s| s.saturating_mul(1000)));
    let at = from_reset.or(from_retry).unwrap_or(now_ms + 1000);
    let wait = at.saturating_sub(now_ms).clamp(1000, max_backoff_ms.max(1000));
    now_ms + wait
}

/// An HTTP-date (RFC 9110 §5.6.7) in Unix seconds, in the IMF-fixdate form every sender
/// must use: `Sun, 06 Nov 1994 08:49:37 GMT` (fixed positions).
pub fn http_date_s(text: &str) -> Option<u64> {
    let b = text.trim().as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        b[range].iter().try_fold(0u64, |n, d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
    };
    let (day, year) = (number(5..7)?, number(12..16)?);
    let (h, m, sec) = (number(17..19)?, number(20..22)?, number(23..25)?);
    let month = b"JanFebMarAprMayJunJulAugSepOctNovDec".chunks(3).position(|m| m == &b[8..11])? as u64 + 1;
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), years starting in March.
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Whole seconds until `until_ms`, at least 1 (a `retry-after` value).
pub fn seconds_left(until_ms: u64, now_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

const FORMAT_VERSION: u8 = 1;
const ABSENT: u64 = u64::MAX;

impl IdpRecord {
    /// A back-off for the whole IdP in force at `now_ms`.
    pub fn backing_off(&self, now_ms: u64) -> Option<u64> {
        (self.upstream_until_ms > now_ms).then_some(self.upstream_until_ms)
    }

    /// The IdP's last word says at most `reserve` calls are left before its reset.
    pub fn in_reserve(&self, reserve: u64, now_ms: u64) -> bool {
        reserve > 0
            && self.remaining.is_some_and(|r| r <= reserve)
            && self.reset_s.is_some_and(|s| s.saturating_mul(1000) > now_ms)
    }

    pub fn encode(&self) -> Vec<u8> {
        Writer::new(FORMAT_VERSION, 40)
            .u64(self.limit.unwrap_or(ABSENT))
            .u64(self.remaining.unwrap_or(ABSENT))
            .u64(self.reset_s.unwrap_or(ABSENT))
            .u64(self.seen_ms)
            .u64(self.upstream_until_ms)
            .finish()
    }

    /// `None` for an empty value or another format.
    pub fn decode(bytes: &[u8]) -> Option<IdpRecord> {
        let mut r = Reader::open(bytes, FORMAT_VERSION)?;
        let optional = |v: u64| (v != ABSENT).then_some(v);
        let record = IdpRecord {
            limit: optional(r.u64()?),
            remaining: optional(r.u64()?),
            reset_s: optional(r.u64()?),
            seen_ms: r.u64()?,
            upstream_until_ms: r.u64()?,
        };
        r.is_done().then_some(record)
    }
}

/// The IdP record in shared data: one key, `<prefix>:idp`.
pub struct IdpState<'a> {
    store: &'a Store<'a>,
    key: String,
}

impl<'a> IdpState<'a> {
    pub fn new(store: &'a Store<'a>, key_prefix: &str) -> IdpState<'a> {
        IdpState { store, key: crate::keys::idp(key_prefix) }
    }

    pub fn read(&self) -> Result<IdpRecord, StoreError> {
        Ok(self
            .store
            .get(&self.key)
            .map_err(StoreError::Host)?
            .and_then(|(bytes, _)| IdpRecord::decode(&bytes))
            .unwrap_or_default())
    }

    /// Records an IdP answer's headers (when it has any) and, with `upstream_until_ms`, an
    /// IdP-wide back-off (a later deadline never shortens).
    pub fn observe(
        &self,
        headers: &RateLimitHeaders,
        now_ms: u64,
        upstream_until_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        if !headers.any() && upstream_until_ms.is_none() {
            return Ok(());
        }
        self.store.update(&self.key, &IdpRecord::default().encode(), |bytes| {
            let mut record = IdpRecord::decode(bytes).unwrap_or_default();
            if headers.any() && now_ms >= record.seen_ms {
                record.limit = headers.limit;
                record.remaining = headers.remaining;
                record.reset_s = headers.reset_s;
                record.seen_ms = now_ms;
            }
            if let Some(until) = upstream_until_ms {
                record.upstream_until_ms = record.upstream_until_ms.max(until);
            }
            Change::Write(record.encode(), ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const NOW: u64 = 1_700_000_000_500;
    const MAX: u64 = 60_000;

    fn headers(pairs: &[(&str, &str)]) -> RateLimitHeaders {
        RateLimitHeaders::parse(pairs.iter().copied())
    }

    #[test]
    fn the_reset_comes_first() {
        let h = headers(&[("x-ratelimit-reset", "1700000003"), ("retry-after", "30")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), 1_700_000_003_000);
        assert_eq!(seconds_left(1_700_000_003_000, NOW), 3);
    }

    #[test]
    fn retry_after_as_an_http_date() {
        assert_eq!(http_date_s("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(http_date_s("Tue, 14 Nov 2023 22:13:20 GMT"), Some(1_700_000_000));
        assert_eq!(http_date_s("Thu, 29 Feb 2024 00:00:00 GMT"), Some(1_709_164_800));
        for bad in [
            "",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 19x4 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(http_date_s(bad), None, "{bad}");
        }
        // NOW is 1_700_000_000_500 ms: a date 20 s later backs off until then.
        let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:40 GMT")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), 1_700_000_020_000);
    }

    #[test]
    fn retry_after_without_a_reset() {
        assert_eq!(deadline_ms(&headers(&[("retry-after", "7")]), NOW, MAX), NOW + 7_000);
    }

    #[test]
    fn one_second_when_the_headers_are_absent() {
        assert_eq!(deadline_ms(&headers(&[]), NOW, MAX), NOW + 1_000);
    }

    #[test]
    fn malformed_values_are_skipped() {
        let h = headers(&[("x-ratelimit-reset", "soon"), ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + 1_000);
        let h = headers(&[("x-ratelimit-reset", "-5"), ("retry-after", "4")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + 4_000);
    }

    #[test]
    fn a_reset_in_the_past_falls_back_and_never_means_no_wait() {
        let h = headers(&[("x-ratelimit-reset", "1600000000"), ("retry-after", "2")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + 2_000);
        let h = headers(&[("x-ratelimit-reset", "1600000000")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + 1_000);
        // A reset within the current second is still at least a second's wait.
        let h = headers(&[("x-ratelimit-reset", "1700000001")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + 1_000);
    }

    #[test]
    fn a_far_future_reset_is_clamped_to_max_backoff() {
        let h = headers(&[("x-ratelimit-reset", "1700086400")]);
        assert_eq!(deadline_ms(&h, NOW, MAX), NOW + MAX);
        assert_eq!(deadline_ms(&headers(&[("retry-after", "99999999999999")]), NOW, MAX), NOW + MAX);
        assert_eq!(
            deadline_ms(&headers(&[("x-ratelimit-reset", &u64::MAX.to_string())]), NOW, MAX),
            NOW + MAX
        );
    }

    #[test]
    fn the_record_keeps_the_last_headers_and_the_longest_deadline() {
        let host = FakeHost::new(NOW);
        let store = Store::new(&host, &host, "tg");
        let idp = IdpState::new(&store, "tg");
        assert_eq!(idp.read().unwrap(), IdpRecord::default());
        let h = headers(&[
            ("x-ratelimit-limit", "30"),
            ("x-ratelimit-remaining", "2"),
            ("x-ratelimit-reset", "1700000060"),
        ]);
        idp.observe(&h, NOW, Some(NOW + 5_000)).unwrap();
        idp.observe(&RateLimitHeaders::default(), NOW + 1, Some(NOW + 2_000)).unwrap();
        let record = idp.read().unwrap();
        assert_eq!(
            (record.limit, record.remaining, record.reset_s),
            (Some(30), Some(2), Some(1_700_000_060))
        );
        assert_eq!(record.backing_off(NOW), Some(NOW + 5_000));
        assert_eq!(record.backing_off(NOW + 5_000), None);
        assert!(record.in_reserve(2, NOW) && !record.in_reserve(1, NOW) && !record.in_reserve(0, NOW));
        assert!(!record.in_reserve(2, 1_700_000_060_000), "not after the reset");
        assert_eq!(IdpRecord::decode(&record.encode()), Some(record));
        assert_eq!(IdpRecord::decode(b"x"), None);
    }
}
