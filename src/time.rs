//! Timestamps and durations.
//!
//! Time never comes from a clock: every instant is read from a record (or given by the
//! caller). Instants are nanoseconds since the Unix epoch, UTC, in an `i64` (years 1678 to
//! 2261); durations are nanoseconds too.

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const NANOS_PER_MILLI: i64 = 1_000_000;
pub const NANOS_PER_SEC: i64 = 1_000_000_000;
pub const NANOS_PER_MIN: i64 = 60 * NANOS_PER_SEC;
pub const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MIN;
pub const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// Parses a timestamp as found in log records.
///
/// Accepted: RFC 3339 (`2023-07-10T11:46:18Z`, `...18.123456789+02:00`, any number of
/// fraction digits, digits past nanoseconds are truncated), the same with a space or a
/// lower-case `t` between date and time, and `YYYY-MM-DD HH:MM:SS[.fraction]` without an
/// offset, which is read as UTC. A leap second (`:60`) is read as `:59.999999999`.
pub fn parse_timestamp(text: &str) -> Option<Nanos> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    let mut second = digits(b, 17, 2)?;
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: i64 = 0;
    let mut leap = false;
    if second == 60 {
        second = 59;
        leap = true;
    }
    if let [b'.', frac @ ..] = rest {
        let count = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return None;
        }
        for (i, &c) in frac[..count].iter().enumerate() {
            if i < 9 {
                nanos = nanos * 10 + i64::from(c - b'0');
            }
        }
        for _ in count..9 {
            nanos *= 10;
        }
        rest = &frac[count..];
    }
    if leap {
        nanos = NANOS_PER_SEC - 1;
    }
    let offset_secs: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let h = digits(&[*h1, *h2], 0, 2)?;
            let m = digits(&[*m1, *m2], 0, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Interprets a JSON number as epoch milliseconds (Elasticsearch's `epoch_millis`).
pub fn from_epoch_millis(millis: f64) -> Option<Nanos> {
    let nanos = millis * NANOS_PER_MILLI as f64;
    if nanos.is_finite() && nanos.abs() < i64::MAX as f64 {
        Some(nanos as i64)
    } else {
        None
    }
}

/// Formats an instant as RFC 3339 UTC with millisecond precision (as Elasticsearch prints
/// dates), or nanosecond precision when the instant has sub-millisecond digits.
pub fn format_timestamp(t: Nanos) -> String {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let nanos = t.rem_euclid(NANOS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    if nanos % NANOS_PER_MILLI == 0 {
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
            nanos / NANOS_PER_MILLI
        )
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{nanos:09}Z")
    }
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m`, `h`, `d` or `w`
/// (`90s`, `1h`, `10d`). Zero is allowed; negative numbers are not.
/// A period with no end (`learning_period = "forever"`).
pub const FOREVER: Nanos = Nanos::MAX;

pub fn parse_duration(text: &str) -> Option<Nanos> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    if num.is_empty() || num.len() > 18 {
        return None;
    }
    let n: i64 = num.parse().ok()?;
    let unit_nanos = match unit {
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" | "H" => NANOS_PER_HOUR,
        "d" => NANOS_PER_DAY,
        "w" => 7 * NANOS_PER_DAY,
        _ => return None,
    };
    n.checked_mul(unit_nanos)
}

/// Formats a duration in the largest unit that divides it (`10d`, `90m`, `1500ms`).
pub fn format_duration(d: Nanos) -> String {
    const UNITS: [(i64, &str); 6] = [
        (7 * NANOS_PER_DAY, "w"),
        (NANOS_PER_DAY, "d"),
        (NANOS_PER_HOUR, "h"),
        (NANOS_PER_MIN, "m"),
        (NANOS_PER_SEC, "s"),
        (NANOS_PER_MILLI, "ms"),
    ];
    if d == 0 {
        return "0s".to_owned();
    }
    for (unit, name) in UNITS {
        if d % unit == 0 {
            return format!("{}{name}", d / unit);
        }
    }
    format!("{d}ns")
}

fn digits(b: &[u8], at: usize, len: usize) -> Option<i64> {
    let mut n = 0i64;
    for &c in b.get(at..at + len)? {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_forms() {
        let base = parse_timestamp("2023-07-10T11:46:18Z").unwrap();
        assert_eq!(base, 1_688_989_578 * NANOS_PER_SEC);
        assert_eq!(parse_timestamp("2023-07-10t11:46:18z"), Some(base));
        assert_eq!(parse_timestamp("2023-07-10 11:46:18"), Some(base));
        assert_eq!(
            parse_timestamp("2023-07-10T13:46:18+02:00"),
            Some(base),
            "offsets are applied"
        );
        assert_eq!(parse_timestamp("2023-07-10T08:46:18-0300"), Some(base));
        assert_eq!(
            parse_timestamp("2023-07-10T11:46:18.5Z"),
            Some(base + 500_000_000)
        );
        assert_eq!(
            parse_timestamp("2024-06-02 20:16:22.000000000"),
            Some(parse_timestamp("2024-06-02T20:16:22Z").unwrap())
        );
        assert_eq!(
            parse_timestamp("2023-07-10T11:46:18.1234567891234Z"),
            Some(base + 123_456_789),
            "digits past nanoseconds are truncated"
        );
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59Z"),
            Some(-NANOS_PER_SEC)
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2023-07-10",
            "2023-13-10T11:46:18Z",
            "2023-02-29T11:46:18Z",
            "2023-07-10T24:00:00Z",
            "2023-07-10T11:46:18.Z",
            "2023-07-10T11:46:18+2",
            "2023/07/10T11:46:18Z",
            "2023-07-10T11:46:18Zjunk",
            "99999-07-10T11:46:18Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
        assert!(parse_timestamp("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn format_round_trips() {
        for t in ["2023-07-10T11:46:18.000Z", "1999-12-31T23:59:59.123456789Z"] {
            assert_eq!(format_timestamp(parse_timestamp(t).unwrap()), t);
        }
        assert_eq!(format_timestamp(-NANOS_PER_SEC), "1969-12-31T23:59:59.000Z");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10d"), Some(10 * NANOS_PER_DAY));
        assert_eq!(parse_duration("1h"), Some(NANOS_PER_HOUR));
        assert_eq!(parse_duration("0s"), Some(0));
        assert_eq!(parse_duration("250ms"), Some(250 * NANOS_PER_MILLI));
        for bad in [
            "",
            "d",
            "-1h",
            "1.5h",
            "10 days",
            "1y",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(10 * NANOS_PER_DAY), "10d");
        assert_eq!(format_duration(90 * NANOS_PER_MIN), "90m");
        assert_eq!(format_duration(2 * 7 * NANOS_PER_DAY), "2w");
    }
}
