//! Durations as the retention flags take them: a whole number and a unit (`500ms`, `90s`,
//! `30m`, `12h`, `7d`), or `forever` where nothing need ever be removed; and points in time as
//! export takes them (unix milliseconds, or RFC 3339).

use std::time::Duration;

const UNITS: [(&str, u64); 5] = [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

/// Parses `text` (`7d`, `90s`, …).
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: a whole number and a unit (ms, s, m, h, d), e.g. 7d or 90s");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let (_, ms) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?;
    n.checked_mul(*ms).map(Duration::from_millis).ok_or_else(bad)
}

/// Parses `text`, or `forever` as `None`.
pub fn parse_or_forever(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "forever" { Ok(None) } else { parse(text).map(Some) }
}

/// `d` in the largest unit that shows it whole (`604800s` → `7d`).
pub fn show(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    let (unit, per) = UNITS.iter().rev().find(|(_, per)| ms.is_multiple_of(*per) && ms > 0).unwrap_or(&UNITS[0]);
    format!("{}{unit}", ms / per)
}

/// A point in time, in unix ms: digits (unix ms), or RFC 3339 in UTC or with an offset
/// (`2026-11-22T10:00:00Z`, `2026-11-22T11:00:00.250+01:00`).
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a time: unix milliseconds, or RFC 3339 such as 2026-11-22T10:00:00Z");
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if b.len() < 20 || !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4).ok_or_else(bad)?, num(5..7).ok_or_else(bad)?, num(8..10).ok_or_else(bad)?);
    let (h, mi, s) = (num(11..13).ok_or_else(bad)?, num(14..16).ok_or_else(bad)?, num(17..19).ok_or_else(bad)?);
    let mut rest = &t[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let first3 = format!("{:0<3}", &frac[..digits.min(3)]);
        ms = first3.parse::<i64>().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && o.is_ascii() && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let digits = |r: std::ops::Range<usize>| o[r].parse::<u8>().ok().filter(|_| o.is_ascii());
            let (oh, om) = (i64::from(digits(1..3).ok_or_else(bad)?), i64::from(digits(4..6).ok_or_else(bad)?));
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            if o.starts_with('-') { -(oh * 60 + om) } else { oh * 60 + om }
        }
        _ => return Err(bad()),
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > days_in[(mo - 1) as usize] || h > 23 || mi > 59 || s > 60 {
        return Err(bad());
    }
    let unix_s = days_from_civil(y, mo, d) * 86_400 + h * 3_600 + mi * 60 + s - offset_min * 60;
    u64::try_from(unix_s * 1_000 + ms).map_err(|_| format!("{text:?} is before 1970"))
}

/// Days from 1970-01-01 to the date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_unix_ms_or_rfc_3339() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-11-22T10:00:00Z"), Ok(1_795_341_600_000));
        assert_eq!(parse_time("2026-11-22T11:00:00.25+01:00"), Ok(1_795_341_600_250));
        assert_eq!(parse_time("2026-11-22t05:30:00-04:30"), Ok(1_795_341_600_000));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "yesterday",
            "2026-11-22",
            "2026-11-22T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:00:00.Z",
            "2026-11-22T10:00:00+0100",
            "1969-12-31T23:59:59Z",
            "2026-11-22T10:00:00Zjunk",
            "٢٠٢٦-11-22T10:00:00Z",
            "99999999999999999999999",
            "2026-11-22T10:00:00+é:00",
            "2026-11-22T10:00:00+-1:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_parse_in_every_unit_and_show_back() {
        for (text, ms) in [("500ms", 500), ("90s", 90_000), ("2m", 120_000), ("12h", 43_200_000), ("7d", 604_800_000)] {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
            assert_eq!(show(Duration::from_millis(ms)), text);
        }
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(parse_or_forever("forever"), Ok(None));
        assert_eq!(parse_or_forever("1d"), Ok(Some(Duration::from_secs(86_400))));
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["", "7", "d", "7 d", "7days", "-1s", "1.5h", "99999999999999999999d", "18446744073709551615d"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
