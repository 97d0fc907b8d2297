//! The usage report: who burns the quota. One row per client id, read from the client
//! tables (counts are exact across workers), the top `usage_top_clients` by requests,
//! sorted by tokens the IdP issued. Served as JSON, or as a self-contained HTML page that
//! renders the same JSON.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::auth0_quota::{HOLD_SLOTS, Hold, Subject};
use crate::backoff::IdpState;
use crate::cache::SlotTable;
use crate::clients::{ClientRecord, ClientTable, Standing};
use crate::config::Config;
use crate::decision::DecisionCounts;
use crate::store::Store;

/// The usage page: static HTML and script, no external assets; it fetches the JSON from
/// its own address and refreshes itself. The module carries it gzip-compressed (2.3 KB
/// instead of 6.2 KB of .wasm): browsers all accept gzip.
#[cfg(test)]
pub const PAGE: &str = include_str!("usage_page.html");
/// `usage_page.html` as `cargo xtask usage-page` compresses it (a test checks it is).
pub const PAGE_GZIP: &[u8] = include_bytes!("usage_page.html.gz");

/// The page runs only its own inline script and style (by hash) and only talks to its own
/// origin; no site may frame it, no browser may sniff another type into it.
pub const SECURITY_HEADERS: [(&str, &str); 3] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'sha256-fuswAAisaXPy8nOJvcKRridKxuL3cK0Xd1sBa9NgIzY='; \
         style-src 'sha256-Qy34L+rUHF7jOctfHAEwakFdxATsWxL8xUz0x14RY0M='; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
];

const DAY_MS: u64 = 86_400_000;

/// Largest first; ties in the order given (the keys end with `Reverse(index)`). A heap sort:
/// this cold report does not need the standard sorts' fast paths, and each of their
/// instantiations costs ~10 KB of .wasm.
fn descending<K: Ord>(keys: impl Iterator<Item = K>) -> impl Iterator<Item = K> {
    keys.collect::<BinaryHeap<K>>().into_sorted_vec().into_iter().rev()
}

// The report's JSON, one struct per object: serde writes them straight out, with no
// intermediate `Value` tree (which cost ~10 KB more .wasm).

#[derive(Serialize)]
pub struct Report<'a> {
    generated_at: u64,
    clients_seen: usize,
    totals: Counts,
    idp: Idp,
    /// Clients and organizations whose Auth0 quota is spent (see `auth0_quota`).
    auth0_quota_holds: Vec<HoldRow>,
    clients: Vec<ClientRow<'a>>,
}

#[derive(Serialize)]
struct HoldRow {
    /// `client` or `organization`.
    kind: &'static str,
    /// The client id or the organization.
    name: String,
    /// Unix seconds: misses are answered `429` until then.
    until: u64,
}

/// What the report counts, for one client or in total.
#[derive(Default)]
struct Counts {
    requests: u64,
    /// One member per decision (`hits`, `misses`, ..., `rate_limited`): `crate::decision`.
    decisions: DecisionCounts,
    tokens_issued: u64,
    tokens_issued_total: u64,
    tokens_saved: u64,
}

impl Counts {
    fn write_members<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("requests", &self.requests)?;
        self.decisions.write_members(map)?;
        map.serialize_entry("tokens_issued", &self.tokens_issued)?;
        map.serialize_entry("tokens_issued_total", &self.tokens_issued_total)?;
        map.serialize_entry("tokens_saved", &self.tokens_saved)
    }
}

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.write_members(&mut map)?;
        map.end()
    }
}

/// The IdP's last rate-limit headers and any IdP-wide back-off.
#[derive(Serialize)]
struct Idp {
    ratelimit_limit: Option<u64>,
    ratelimit_remaining: Option<u64>,
    ratelimit_reset: Option<u64>,
    seen_at: Option<u64>,
    backoff_until: Option<u64>,
}

struct ClientRow<'a> {
    client_id: &'a str,
    trusted: bool,
    counts: Counts,
    idp_backoff_until: Option<u64>,
    last_seen: u64,
    window_seconds: u64,
    limits: LimitsRow,
}

/// One flat object: the client, its counts, its limits.
impl Serialize for ClientRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("client_id", self.client_id)?;
        map.serialize_entry("trusted", &self.trusted)?;
        self.counts.write_members(&mut map)?;
        map.serialize_entry("idp_backoff_until", &self.idp_backoff_until)?;
        map.serialize_entry("last_seen", &self.last_seen)?;
        map.serialize_entry("window_seconds", &self.window_seconds)?;
        map.serialize_entry("limits", &self.limits)?;
        map.end()
    }
}

#[derive(Serialize)]
struct LimitsRow {
    rate_limit: Option<RateRow>,
    quota: Option<QuotaRow>,
}

#[derive(Serialize)]
struct RateRow {
    max_tokens: u64,
    tokens_per_fill: u64,
    /// Milliseconds: an integer, so the module carries no float formatting.
    fill_interval_ms: u64,
}

#[derive(Serialize)]
struct QuotaRow {
    tokens: u64,
    window_seconds: u64,
}

/// The usage report as JSON.
pub fn report(config: &Config, store: &Store<'_>, key_prefix: &str, now_ms: u64) -> Vec<u8> {
    let mut rows: Vec<(bool, ClientRecord)> = Vec::new();
    for standing in [Standing::Trusted, Standing::Guest] {
        let table = ClientTable::new(store, key_prefix, standing, config.cache.max_entries);
        // A table that cannot be read shows as empty rather than failing the report.
        let records = table.scan().unwrap_or_default();
        rows.extend(records.into_iter().map(|r| (standing == Standing::Trusted, r)));
    }
    let window_of =
        |id: &str| config.quota.as_ref().and_then(|q| q.for_client(id)).map_or(DAY_MS, |q| q.window_ms);
    let issued_window = |r: &ClientRecord| r.usage.issued_in_window(window_of(&r.client_id), now_ms);
    let mut totals = Counts::default();
    for (_, r) in &rows {
        let u = &r.usage;
        totals.requests = totals.requests.saturating_add(u.requests);
        totals.decisions.add(&u.decisions);
        totals.tokens_issued = totals.tokens_issued.saturating_add(issued_window(r));
        totals.tokens_issued_total = totals.tokens_issued_total.saturating_add(u.issued_total);
        totals.tokens_saved = totals.tokens_saved.saturating_add(u.tokens_saved());
    }
    let busiest = descending(rows.iter().enumerate().map(|(i, (_, r))| (r.usage.requests, 0, 0, Reverse(i))));
    let ordered = descending(busiest.take(config.usage_top_clients).map(|(.., Reverse(i))| {
        let r = &rows[i].1;
        (issued_window(r), r.usage.issued_total, r.usage.requests, Reverse(i))
    }));
    let clients = ordered
        .filter_map(|(.., Reverse(i))| rows.get(i))
        .map(|(trusted, r)| {
            let u = &r.usage;
            let window_ms = window_of(&r.client_id);
            ClientRow {
                client_id: &r.client_id,
                trusted: *trusted,
                counts: Counts {
                    requests: u.requests,
                    decisions: u.decisions,
                    tokens_issued: u.issued_in_window(window_ms, now_ms),
                    tokens_issued_total: u.issued_total,
                    tokens_saved: u.tokens_saved(),
                },
                idp_backoff_until: (r.backoff_until_ms > now_ms).then_some(r.backoff_until_ms / 1000),
                last_seen: r.last_seen_ms / 1000,
                window_seconds: window_ms / 1000,
                limits: limits_of(config, &r.client_id),
            }
        })
        .collect();
    let idp = IdpState::new(store, key_prefix).read().unwrap_or_default();
    let report = Report {
        generated_at: now_ms / 1000,
        clients_seen: rows.len(),
        totals,
        idp: Idp {
            ratelimit_limit: idp.limit,
            ratelimit_remaining: idp.remaining,
            ratelimit_reset: idp.reset_s,
            seen_at: (idp.seen_ms > 0).then_some(idp.seen_ms / 1000),
            backoff_until: idp.backing_off(now_ms).map(|until| until / 1000),
        },
        auth0_quota_holds: holds(store, key_prefix, now_ms),
        clients,
    };
    // Serializing plain structs and integers into a `Vec` cannot fail.
    serde_json::to_vec(&report).unwrap_or_default()
}

fn holds(store: &Store<'_>, key_prefix: &str, now_ms: u64) -> Vec<HoldRow> {
    let table = SlotTable::<Hold>::new(store.shared(), key_prefix, HOLD_SLOTS);
    let live = table.entries().into_iter().filter(|h| h.until_ms > now_ms);
    live.map(|h| HoldRow {
        kind: match h.subject {
            Subject::Client => "client",
            Subject::Organization => "organization",
        },
        until: h.until_ms.div_ceil(1000),
        name: h.name,
    })
    .collect()
}

fn limits_of(config: &Config, client_id: &str) -> LimitsRow {
    let rate = config.rate_limit.as_ref().and_then(|l| l.for_client(client_id)).map(|r| RateRow {
        max_tokens: r.max_tokens,
        tokens_per_fill: r.tokens_per_fill,
        fill_interval_ms: r.fill_interval_ms,
    });
    let quota = config
        .quota
        .as_ref()
        .and_then(|l| l.for_client(client_id))
        .map(|q| QuotaRow { tokens: q.tokens, window_seconds: q.window_ms / 1000 });
    LimitsRow { rate_limit: rate, quota }
}

/// Whether the client asked for the page rather than the JSON: `Accept: text/html`, unless
/// the query says `format=json`.
/// A browser asking for the page (HTML, and gzip accepted); anyone else gets the JSON.
pub fn wants_html(accept: Option<&str>, accept_encoding: Option<&str>, path: &str) -> bool {
    let json_asked = path.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == "format=json"));
    let gzip = accept_encoding.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("gzip")));
    !json_asked && gzip && accept.is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/html")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_only_when_asked_for() {
        let browser = Some("text/html,application/xhtml+xml,*/*;q=0.8");
        let gzip = Some("gzip, deflate, br");
        assert!(wants_html(browser, gzip, "/u"));
        assert!(!wants_html(browser, None, "/u"), "the page is only sent compressed");
        assert!(!wants_html(browser, gzip, "/u?format=json"));
        assert!(!wants_html(Some("application/json"), gzip, "/u"));
        assert!(!wants_html(None, gzip, "/u"));
        assert!(!wants_html(Some("*/*"), Some("gzip"), "/u"));
    }

    /// The policy's hashes are those of the page's one script and one style: editing the
    /// page without updating them would leave it blank in every browser.
    #[test]
    fn the_content_security_policy_allows_exactly_the_pages_script_and_style() {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let policy = SECURITY_HEADERS[0].1;
        for tag in ["script", "style"] {
            let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
            assert_eq!(PAGE.matches(&open).count(), 1, "one inline {tag}");
            let start = PAGE.find(&open).unwrap() + open.len();
            let end = PAGE[start..].find(&close).unwrap() + start;
            let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&PAGE[start..end]));
            assert!(policy.contains(&format!("{tag}-src 'sha256-{hash}'")), "{tag}: {hash}");
        }
    }

    #[test]
    fn the_module_carries_the_page_as_it_is_gzip_compressed() {
        use std::io::Read;
        let mut page = String::new();
        flate2::read::GzDecoder::new(PAGE_GZIP).read_to_string(&mut page).unwrap();
        assert!(page == PAGE, "usage_page.html changed: run `cargo xtask usage-page`");
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.contains("<table"));
        for external in ["src=\"http", "href=\"http", "@import", "cdn."] {
            assert!(!PAGE.contains(external), "{external}");
        }
    }
}
