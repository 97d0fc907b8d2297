//! Which field a serde error is about, as a dotted path (`upstream.timeout`,
//! `token_paths[1]`, `rate_limit.clients.c1.tokens_per_fill`).
//!
//! serde_json reports where in the document it stopped; this walks the JSON up to that
//! byte and names the key (or array index) it was in. `serde_path_to_error` did this by
//! wrapping every derived deserializer, which cost ~40 KB of .wasm for code that runs once
//! per configuration; the walk is a few hundred bytes. The document is known to be valid
//! JSON up to the error (serde_json read it that far), and the walk never fails: on
//! anything unexpected it names what it has.

enum Frame {
    /// The key last read in this object (raw, escapes kept), if any.
    Object(Option<String>),
    /// The element being read in this array.
    Array(usize),
}

/// The path of the field being read when serde_json stopped at `line` and `column`
/// (serde_json's position: 1-based line, bytes into it). A missing field is reported just
/// past the closing `}` of the object that lacks it, so the path names that object.
pub fn field_at(json: &[u8], line: usize, column: usize) -> String {
    let frames = walk(&json[..offset_of(json, line, column)]);
    let mut path = String::new();
    for frame in &frames {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => {}
            Frame::Array(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

/// Byte offset of serde_json's (line, column), clamped to the document.
fn offset_of(json: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match json[start..].iter().position(|b| *b == b'\n') {
            Some(newline) => start += newline + 1,
            None => return json.len(),
        }
    }
    start.saturating_add(column).min(json.len())
}

/// The open objects and arrays at the end of `json`, each with its current key or index.
fn walk(json: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    // In an object, a string is a key when it comes before the `:`.
    let mut expecting_key = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' => {
                frames.push(Frame::Object(None));
                expecting_key = true;
            }
            b'[' => {
                frames.push(Frame::Array(0));
                expecting_key = false;
            }
            b'}' | b']' => {
                frames.pop();
                expecting_key = false;
            }
            b':' => expecting_key = false,
            b',' => match frames.last_mut() {
                Some(Frame::Array(index)) => *index += 1,
                Some(Frame::Object(_)) => expecting_key = true,
                None => {}
            },
            b'"' => {
                let start = i + 1;
                i = start;
                // Escapes are skipped whole, so an escaped quote does not end the string.
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                if expecting_key && let Some(Frame::Object(key)) = frames.last_mut() {
                    let end = i.min(json.len());
                    *key = Some(String::from_utf8_lossy(&json[start..end]).into_owned());
                }
            }
            _ => {}
        }
        i += 1;
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(json: &str, marker: &str) -> String {
        let offset = json.find(marker).unwrap();
        let line = 1 + json[..offset].matches('\n').count();
        let column = offset - json[..offset].rfind('\n').map_or(0, |n| n + 1);
        field_at(json.as_bytes(), line, column)
    }

    #[test]
    fn names_nested_keys_and_array_indexes() {
        let json = "{\"a\": {\"b\": [1, {\"c\": 2}], \"d\": 3}}";
        assert_eq!(at(json, "2}"), "a.b[1].c");
        assert_eq!(at(json, "3}"), "a.d");
        assert_eq!(at(json, "1,"), "a.b[0]");
    }

    #[test]
    fn counts_lines_and_columns() {
        let json = "{\n  \"a\": {\n    \"b\": true\n  }\n}";
        assert_eq!(field_at(json.as_bytes(), 3, 13), "a.b");
    }

    #[test]
    fn past_a_closing_brace_names_the_object() {
        let json = r#"{"up": {"x": 1}, "z": 2}"#;
        assert_eq!(at(json, ", \"z"), "up");
        assert_eq!(field_at(json.as_bytes(), 1, json.len()), "");
    }

    #[test]
    fn quotes_braces_and_escapes_inside_strings_are_text() {
        let json = r#"{"a\"}": "x,]}", "b": 1}"#;
        assert_eq!(at(json, "1}"), "b");
        assert_eq!(at(json, "x,"), "a\\\"}");
    }

    #[test]
    fn positions_past_the_end_are_clamped() {
        assert_eq!(field_at(br#"{"a": 1"#, 9, 99), "a");
        assert_eq!(field_at(b"", 1, 5), "");
    }
}
