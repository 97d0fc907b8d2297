//! The usage report: who burns the quota. One row per client id, read from the client
//! tables (counts are exact across workers), the top `usage_top_clients` by requests,
//! sorted by tokens the IdP issued. Served as JSON, or as a self-contained HTML page that
//! renders the same JSON.

use serde_json::{Value, json};

use crate::backoff::{IdpRecord, IdpState};
use crate::clients::{ClientRecord, ClientTable, Standing};
use crate::config::Config;
use crate::store::Store;

/// The usage page: static HTML and script, no external assets; it fetches the JSON from
/// its own address and refreshes itself.
pub const PAGE: &str = include_str!("usage_page.html");

const DAY_MS: u64 = 86_400_000;

/// The usage report as JSON.
pub fn report(config: &Config, store: &Store<'_>, key_prefix: &str, now_ms: u64) -> Value {
    let mut rows: Vec<(bool, ClientRecord)> = Vec::new();
    for standing in [Standing::Trusted, Standing::Guest] {
        let table = ClientTable::new(store, key_prefix, standing, config.cache.max_entries);
        // A table that cannot be read shows as empty rather than failing the report.
        let records = table.scan().unwrap_or_default();
        rows.extend(records.into_iter().map(|r| (standing == Standing::Trusted, r)));
    }
    let window_of =
        |id: &str| config.quota.as_ref().and_then(|q| q.for_client(id)).map_or(DAY_MS, |q| q.window_ms);
    let mut totals = [0u64; 10];
    for (_, r) in &rows {
        let u = &r.usage;
        let issued_window = u.issued_in_window(window_of(&r.client_id), now_ms);
        for (total, value) in totals.iter_mut().zip([
            u.requests,
            u.hits,
            u.misses,
            u.coalesced,
            u.stale,
            issued_window,
            u.issued_total,
            u.rate_limited,
            u.quota_rejected,
            u.backoff,
        ]) {
            *total = total.saturating_add(value);
        }
    }
    let client_count = rows.len();
    rows.sort_by_key(|(_, r)| std::cmp::Reverse(r.usage.requests));
    rows.truncate(config.usage_top_clients);
    rows.sort_by_key(|(_, r)| {
        let u = &r.usage;
        std::cmp::Reverse((u.issued_in_window(window_of(&r.client_id), now_ms), u.issued_total, u.requests))
    });
    let clients: Vec<Value> = rows
        .iter()
        .map(|(trusted, r)| {
            let u = &r.usage;
            let window_ms = window_of(&r.client_id);
            json!({
                "client_id": r.client_id,
                "trusted": trusted,
                "requests": u.requests,
                "hits": u.hits,
                "misses": u.misses,
                "coalesced": u.coalesced,
                "stale": u.stale,
                "negative": u.negative,
                "tokens_issued": u.issued_in_window(window_ms, now_ms),
                "tokens_issued_total": u.issued_total,
                "tokens_saved": u.tokens_saved(),
                "rate_limited": u.rate_limited,
                "quota_rejected": u.quota_rejected,
                "idp_backoff": u.backoff,
                "idp_backoff_until": (r.backoff_until_ms > now_ms).then_some(r.backoff_until_ms / 1000),
                "last_seen": r.last_seen_ms / 1000,
                "window_seconds": window_ms / 1000,
                "limits": limits_of(config, &r.client_id),
            })
        })
        .collect();
    json!({
        "generated_at": now_ms / 1000,
        "clients_seen": client_count,
        "totals": {
            "requests": totals[0],
            "hits": totals[1],
            "misses": totals[2],
            "coalesced": totals[3],
            "stale": totals[4],
            "tokens_issued": totals[5],
            "tokens_issued_total": totals[6],
            "tokens_saved": totals[1].saturating_add(totals[3]).saturating_add(totals[4]),
            "rate_limited": totals[7],
            "quota_rejected": totals[8],
            "idp_backoff": totals[9],
        },
        "idp": idp_of(&IdpState::new(store, key_prefix).read().unwrap_or_default(), now_ms),
        "clients": clients,
    })
}

/// The IdP's last rate-limit headers and any IdP-wide back-off.
fn idp_of(idp: &IdpRecord, now_ms: u64) -> Value {
    json!({
        "ratelimit_limit": idp.limit,
        "ratelimit_remaining": idp.remaining,
        "ratelimit_reset": idp.reset_s,
        "seen_at": (idp.seen_ms > 0).then_some(idp.seen_ms / 1000),
        "backoff_until": idp.backing_off(now_ms).map(|until| until / 1000),
    })
}

fn limits_of(config: &Config, client_id: &str) -> Value {
    let rate = config.rate_limit.as_ref().and_then(|l| l.for_client(client_id)).map(|r| {
        json!({
            "max_tokens": r.max_tokens,
            "tokens_per_fill": r.tokens_per_fill,
            "fill_interval_seconds": r.fill_interval_ms as f64 / 1000.0,
        })
    });
    let quota = config
        .quota
        .as_ref()
        .and_then(|l| l.for_client(client_id))
        .map(|q| json!({"tokens": q.tokens, "window_seconds": q.window_ms / 1000}));
    json!({"rate_limit": rate, "quota": quota})
}

/// Whether the client asked for the page rather than the JSON: `Accept: text/html`, unless
/// the query says `format=json`.
pub fn wants_html(accept: Option<&str>, path: &str) -> bool {
    let json_asked = path.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "format=json"));
    !json_asked && accept.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_only_when_asked_for() {
        let browser = Some("text/html,application/xhtml+xml,*/*;q=0.8");
        assert!(wants_html(browser, "/u"));
        assert!(!wants_html(browser, "/u?format=json"));
        assert!(!wants_html(Some("application/json"), "/u"));
        assert!(!wants_html(None, "/u"));
        assert!(!wants_html(Some("*/*"), "/u"));
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains("<table"));
        for external in ["src=\"http", "href=\"http", "@import", "cdn."] {
            assert!(!PAGE.contains(external), "{external}");
        }
    }
}
