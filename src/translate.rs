//! The host layer's translations as functions over plain data, so they are tested natively
//! like the core (the rest of the crate calls the host and builds for wasm only): header
//! bytes to text, a call's headers and body to a core `HttpReply`, a core `Step` to the
//! action Envoy takes.

use proxy_wasm::types::Action;
use tokengate_core::{HttpReply, Step};

/// Header pairs as text: bytes that are not UTF-8 become U+FFFD (the SDK's own reader
/// panics on them, and a client or an IdP may send them).
pub fn header_pairs(raw: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    raw.into_iter().map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned())).collect()
}

/// A call's answer from its headers and body: `None` (a failed call) without a readable
/// `:status`. Names lowercase.
pub fn http_reply(headers: Vec<(String, String)>, body: Vec<u8>) -> Option<HttpReply> {
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, value)| value.parse::<u16>().ok())?;
    let headers = headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
    Some(HttpReply { status, headers, body })
}

/// What Envoy does with the stream after a step: it goes on (`Continue`, `Pass`), or stays
/// held (`Pause`; a local reply, which ends it).
pub fn action_of(step: &Step) -> Action {
    match step {
        Step::Continue | Step::Pass(_) => Action::Continue,
        Step::Pause | Step::Respond(_) => Action::Pause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokengate_core::response::Response;

    #[test]
    fn header_values_that_are_not_utf8_are_read_lossily_never_a_panic() {
        let raw = vec![("x-a".to_owned(), b"ok".to_vec()), ("x-b".to_owned(), vec![b'a', 0xff, b'b'])];
        assert_eq!(header_pairs(raw), [("x-a".into(), "ok".into()), ("x-b".into(), "a\u{fffd}b".into())]);
    }

    #[test]
    fn a_reply_needs_a_status_and_gets_lowercase_names() {
        let headers =
            vec![(":status".to_owned(), "429".to_owned()), ("Retry-After".to_owned(), "3".to_owned())];
        let reply = http_reply(headers, b"{}".to_vec()).unwrap();
        assert_eq!((reply.status, reply.header("retry-after")), (429, Some("3")));
        assert_eq!(http_reply(vec![("x".into(), "y".into())], Vec::new()), None, "no :status: a failed call");
        assert_eq!(http_reply(vec![(":status".into(), "abc".into())], Vec::new()), None);
    }

    #[test]
    fn a_step_is_the_action_envoy_takes() {
        assert_eq!(action_of(&Step::Continue), Action::Continue);
        assert_eq!(action_of(&Step::Pass(vec![("x".into(), None)])), Action::Continue);
        assert_eq!(action_of(&Step::Pause), Action::Pause);
        assert_eq!(action_of(&Step::Respond(Response::unconfigured())), Action::Pause);
    }

    #[test]
    fn a_filter_without_a_configuration_refuses_in_the_oauth_shape() {
        let r = Response::unconfigured();
        assert_eq!(r.status, 503);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
}
