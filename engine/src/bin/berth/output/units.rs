//! Sizes, durations and times as docker prints them (Go's `go-units` and
//! `time.Time.String`), and parsing of the sizes and durations users type.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// `units.HumanSizeWithPrecision`: decimal units, `precision` significant
/// digits ("4.26MB", "1.2kB", "0B").
pub fn human_size_precision(size: f64, precision: usize) -> String {
    let (size, unit) = scale(size, 1000.0, &DECIMAL);
    format!("{}{unit}", go_g(size, precision))
}

/// `units.HumanSize`: four significant digits.
pub fn human_size(size: f64) -> String {
    human_size_precision(size, 4)
}

/// `units.BytesSize`: binary units ("1.5GiB").
pub fn bytes_size(size: f64) -> String {
    let (size, unit) = scale(size, 1024.0, &BINARY);
    format!("{}{unit}", go_g(size, 4))
}

fn scale(mut size: f64, base: f64, units: &'static [&'static str]) -> (f64, &'static str) {
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    (size, units[i])
}

/// Go's `%.{precision}g`: the shortest of fixed and exponent notation for
/// `precision` significant digits, trailing zeros removed.
pub fn go_g(value: f64, precision: usize) -> String {
    let precision = precision.max(1);
    if value == 0.0 {
        return "0".to_string();
    }
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (precision as i32 - 1 - exp).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// `units.HumanDuration`: "Less than a second", "2 minutes", "About an hour".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// Seconds since the epoch, now.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// "2 minutes ago" for a time in seconds since the epoch.
pub fn ago(unix: f64) -> String {
    let elapsed = (now_unix() - unix).max(0.0);
    format!("{} ago", human_duration(Duration::from_secs_f64(elapsed)))
}

/// Go's `time.Unix(secs, 0).String()` in UTC: "2024-05-01 10:00:00 +0000 UTC".
pub fn go_time_string(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000 UTC")
}

/// Go's `time.ANSIC` in UTC: "Thu May  7 21:09:36 2026".
pub fn ansic(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(unix);
    let weekday = DAYS[unix.div_euclid(86_400).rem_euclid(7) as usize];
    let month = MONTHS[(mo as usize).saturating_sub(1) % 12];
    format!("{weekday} {month} {d:>2} {h:02}:{mi:02}:{s:02} {y}")
}

/// RFC 3339 with nanoseconds, as Docker's API writes times.
pub fn rfc3339_nanos(unix: i64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{nanos:09}Z")
}

/// Year, month, day, hour, minute, second of a Unix time (UTC).
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let rem = unix.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Seconds since the epoch of an RFC 3339 time ("2024-05-01T10:00:00.123Z",
/// "+02:00" offsets too); `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..digits]).parse().unwrap_or(0.0);
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + s - offset) as f64 + frac)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `units.RAMInBytes`: "512m", "1g", "100000" (bytes), "1.5GB"; binary
/// multiples whatever the case or a trailing "b".
pub fn ram_in_bytes(text: &str) -> Option<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().ok()?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    if value < 0.0 {
        return None;
    }
    Some((value * mult) as i64)
}

/// A Go duration in seconds.
pub fn go_duration_secs(text: &str) -> Option<f64> {
    berth_engine::types::duration::parse_go_duration(text.trim()).map(|ns| ns as f64 / 1e9)
}

/// `--since`/`--until` as docker takes them: a Unix time ("1700000000",
/// "1700000000.5"), an RFC 3339 time, or a Go duration back from now
/// ("10m"); the value the API takes (seconds, possibly fractional).
pub fn api_time(text: &str, now: f64) -> Option<String> {
    if text.is_empty() {
        return Some(String::new());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Some(text.to_string());
    }
    if let Some(secs) = parse_rfc3339(text) {
        return Some(format!("{secs:.9}"));
    }
    if let Some(d) = go_duration_secs(text) {
        let t = now - d;
        return Some(format!("{t:.9}"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size_precision(0.0, 3), "0B");
        assert_eq!(human_size_precision(999.0, 3), "999B");
        assert_eq!(human_size_precision(1_234.0, 3), "1.23kB");
        assert_eq!(human_size_precision(4_261_000.0, 3), "4.26MB");
        assert_eq!(human_size_precision(1_200_000.0, 3), "1.2MB");
        assert_eq!(human_size_precision(12_345_678.0, 3), "12.3MB");
        assert_eq!(human_size_precision(4_000_000.0, 3), "4MB");
        assert_eq!(human_size(1_234_567.0), "1.235MB");
        assert_eq!(human_size_precision(999_900.0, 3), "1e+03kB");
        assert_eq!(bytes_size(1_610_612_736.0), "1.5GiB");
        assert_eq!(bytes_size(512.0), "512B");
    }

    #[test]
    fn durations_read_as_docker_prints_them() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(59)), "59 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(150)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86_400)), "3 days");
        assert_eq!(human_duration(s(21 * 86_400)), "3 weeks");
        assert_eq!(human_duration(s(90 * 86_400)), "3 months");
        assert_eq!(human_duration(s(800 * 86_400)), "2 years");
    }

    #[test]
    fn times_print_and_parse() {
        assert_eq!(go_time_string(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_time_string(1_700_000_000),
            "2023-11-14 22:13:20 +0000 UTC"
        );
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20Z"), Some(1_700_000_000.0));
        assert_eq!(
            parse_rfc3339("2023-11-15T00:13:20.5+02:00"),
            Some(1_700_000_000.5)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(ansic(1_700_000_000), "Tue Nov 14 22:13:20 2023");
        assert_eq!(
            rfc3339_nanos(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
    }

    #[test]
    fn memory_and_durations_parse() {
        assert_eq!(ram_in_bytes("512m"), Some(512 * 1024 * 1024));
        assert_eq!(ram_in_bytes("1g"), Some(1 << 30));
        assert_eq!(ram_in_bytes("1.5GB"), Some(3 << 29));
        assert_eq!(ram_in_bytes("100000"), Some(100_000));
        assert_eq!(ram_in_bytes("64k"), Some(65_536));
        assert_eq!(ram_in_bytes("lots"), None);
        assert_eq!(ram_in_bytes("12x"), None);
        assert_eq!(go_duration_secs("1m30s"), Some(90.0));
        assert_eq!(go_duration_secs(" 500ms "), Some(0.5));
        assert_eq!(go_duration_secs("1.5h"), Some(5400.0));
        assert_eq!(go_duration_secs("10"), None);
        assert_eq!(api_time("10m", 1000.0).as_deref(), Some("400.000000000"));
        assert_eq!(api_time("1700000000", 0.0).as_deref(), Some("1700000000"));
    }
}
