//! What JSON the host accepts (docs/api.md, "JSON the host accepts"): whatever it accepts, it
//! must be able to read back forever, from its own events, views and step inputs, which wrap a
//! value in a few more levels. So nesting is bounded well below the decoder's own limit (128),
//! and numbers are refused rather than changed: an integer must fit in 64 bits (signed or
//! unsigned), any other number must be a finite IEEE-754 double.
//!
//! The check reads the raw text once, before (or instead of) decoding it, so that a refusal can
//! name the problem and a value that decodes is already known to be storable.

/// Deepest nesting of arrays and objects accepted in an input, a definition, a step result or
/// any other JSON a client or a plugin hands the host. The host wraps such a value in at most
/// 6 more levels (event, step input, execution view), far from the decoder's limit of 128.
pub const MAX_DEPTH: usize = 64;

/// Why a JSON text is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonRefused {
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels (arrays and objects)")]
    TooDeep,
    /// An integer outside the 64-bit range: it would be stored as a rounded float.
    #[error("the number {0} does not fit in 64 bits: send it as a string to keep every digit")]
    IntegerTooLarge(String),
    /// A number beyond the range of a double.
    #[error("the number {0} is out of range")]
    NumberOutOfRange(String),
}

/// Checks nesting and numbers of a JSON text (its syntax is left to the decoder).
pub fn check(text: &[u8]) -> Result<(), JsonRefused> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonRefused::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < text.len() && matches!(text[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                check_number(&text[start..=i])?;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn check_number(token: &[u8]) -> Result<(), JsonRefused> {
    // Tokens are ASCII by construction.
    let text = std::str::from_utf8(token).unwrap_or_default();
    let shown = || if text.len() > 40 { format!("{}…", &text[..40]) } else { text.to_owned() };
    if token.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return match text.parse::<f64>() {
            Ok(f) if !f.is_finite() => Err(JsonRefused::NumberOutOfRange(shown())),
            // Malformed numbers are the decoder's to report.
            _ => Ok(()),
        };
    }
    match text.parse::<i128>() {
        Ok(n) if n < i128::from(i64::MIN) || n > i128::from(u64::MAX) => Err(JsonRefused::IntegerTooLarge(shown())),
        Err(_) if text.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) && text.len() > 2 => {
            Err(JsonRefused::IntegerTooLarge(shown()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn nesting_is_bounded_and_strings_do_not_count() {
        assert_eq!(check(nested(MAX_DEPTH).as_bytes()), Ok(()));
        assert_eq!(check(nested(MAX_DEPTH + 1).as_bytes()), Err(JsonRefused::TooDeep));
        assert_eq!(check(nested(127).as_bytes()), Err(JsonRefused::TooDeep));
        let in_string = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(500), "{".repeat(500));
        assert_eq!(check(in_string.as_bytes()), Ok(()));
    }

    #[test]
    fn numbers_are_kept_exactly_or_refused() {
        for ok in ["0", "-1", "18446744073709551615", "-9223372036854775808", "1.5", "1e308", "-0.0", "12.5e-3"] {
            assert_eq!(check(format!("{{\"n\": {ok}}}").as_bytes()), Ok(()), "{ok}");
        }
        for big in ["12345678901234567890123", "18446744073709551616", "-9223372036854775809"] {
            assert!(matches!(check(format!("[{big}]").as_bytes()), Err(JsonRefused::IntegerTooLarge(_))), "{big}");
        }
        let huge = format!("[1{}]", "0".repeat(400));
        assert!(matches!(check(huge.as_bytes()), Err(JsonRefused::IntegerTooLarge(_))));
        assert!(matches!(check(b"[1e999]"), Err(JsonRefused::NumberOutOfRange(_))));
        // Digits inside strings are text.
        assert_eq!(check(b"{\"id\": \"12345678901234567890123\"}"), Ok(()));
    }
}
