//! Redaction of secret values from everything an attempt hands back to the host: its result,
//! its failure message, its log lines, its state writes and the record of its outbound
//! requests. A value is replaced wherever it appears as is, JSON-escaped (inside a JSON
//! string) or percent-encoded (inside a URL path), by `[REDACTED:<name>]`.
//!
//! This stops accidental echoes. It is not a defence against a plugin that means to leak a
//! secret it was given (encoding it another way, or sending it over HTTP): docs/secrets.md,
//! "Threat model".

use std::borrow::Cow;

use serde_json::Value;

/// The secret values of one attempt and what replaces them.
#[derive(Clone, Default)]
pub struct Redactor {
    /// (form of a value, replacement), longest form first so that a value containing another
    /// is replaced whole.
    needles: Vec<(String, String)>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.needles.len())
    }
}

impl Redactor {
    /// A redactor of `(name, value)` pairs. Empty values are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut needles = Vec::new();
        for (name, value) in secrets {
            if value.is_empty() {
                continue;
            }
            let replacement = format!("[REDACTED:{name}]");
            let json = serde_json::to_string(value).expect("a string serializes");
            let forms = [value.to_owned(), json[1..json.len() - 1].to_owned(), percent_encoded(value)];
            for form in forms {
                if !needles.iter().any(|(f, _)| *f == form) {
                    needles.push((form, replacement.clone()));
                }
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        Self { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Whether `text` holds any secret value in any form.
    pub fn finds(&self, text: &str) -> bool {
        self.needles.iter().any(|(n, _)| text.contains(n.as_str()))
    }

    /// `text` with every secret value replaced.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if !self.finds(text) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_owned();
        for (needle, replacement) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), replacement);
            }
        }
        Cow::Owned(out)
    }

    /// `json` (JSON text) with every secret value replaced inside its strings, object keys and
    /// numbers (a number holding one becomes a string); text that is untouched stays byte for
    /// byte as it was. Text that is not JSON is redacted as plain text.
    pub fn json(&self, json: String) -> String {
        if !self.finds(&json) {
            return json;
        }
        match serde_json::from_str::<Value>(&json) {
            Ok(mut value) => {
                self.value(&mut value);
                value.to_string()
            }
            Err(_) => self.text(&json).into_owned(),
        }
    }

    /// Bytes with every secret value replaced where it appears (as UTF-8).
    pub fn bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        match String::from_utf8(bytes) {
            Ok(text) => self.text(&text).into_owned().into_bytes(),
            Err(e) => {
                let mut out = e.into_bytes();
                for (needle, replacement) in &self.needles {
                    out = replace_bytes(&out, needle.as_bytes(), replacement.as_bytes());
                }
                out
            }
        }
    }

    fn value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.text(s) {
                    *s = r;
                }
            }
            Value::Number(n) => {
                if let Cow::Owned(r) = self.text(&n.to_string()) {
                    *value = Value::String(r);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.value(&mut v);
                    map.insert(self.text(&k).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }
}

/// `value` as it appears in a URL path: every byte outside the unreserved set as `%XX`.
fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new([("key", "sk_live_\"quoted\" /path"), ("pin", "12345678")])
    }

    #[test]
    fn plain_text_loses_every_form_of_a_value() {
        let r = r();
        assert_eq!(r.text("nothing here"), Cow::Borrowed("nothing here"));
        assert_eq!(r.text("key=sk_live_\"quoted\" /path."), "key=[REDACTED:key].");
        assert_eq!(r.text(r#"{"k":"sk_live_\"quoted\" /path"}"#), r#"{"k":"[REDACTED:key]"}"#);
        assert_eq!(r.text("/v1/sk_live_%22quoted%22%20%2Fpath/x"), "/v1/[REDACTED:key]/x");
        assert_eq!(r.text("pin 12345678 twice 12345678"), "pin [REDACTED:pin] twice [REDACTED:pin]");
    }

    #[test]
    fn json_is_redacted_in_strings_keys_and_numbers_and_stays_json() {
        let r = r();
        let out = r.json(r#"{"echo":"a sk_live_\"quoted\" /path b","12345678":[12345678, 1]}"#.into());
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["echo"], "a [REDACTED:key] b");
        assert_eq!(v["[REDACTED:pin]"], serde_json::json!(["[REDACTED:pin]", 1]));
        let untouched = "{ \"n\" : 1.50 }".to_string();
        assert_eq!(r.json(untouched.clone()), untouched, "byte for byte when nothing is found");
        assert_eq!(r.json("not json 12345678".into()), "not json [REDACTED:pin]");
    }

    #[test]
    fn bytes_and_overlapping_values() {
        let r = Redactor::new([("short", "abcdefgh"), ("long", "abcdefgh-ijkl")]);
        assert_eq!(r.text("abcdefgh-ijkl abcdefgh"), "[REDACTED:long] [REDACTED:short]");
        assert_eq!(r.bytes(b"\xffabcdefgh\xff".to_vec()), b"\xff[REDACTED:short]\xff".to_vec());
        assert!(Redactor::new([("e", "")]).is_empty());
        assert_eq!(format!("{:?}", r), "Redactor(2 forms)");
    }
}
