//! Go's `time.ParseDuration`: the syntax Docker's clients and Dockerfiles
//! take durations in (`1m30s`, `500ms`, `1.5h`, `-2s`, `0`). One parser for
//! the engine (HEALTHCHECK options in builds) and the `berth` CLI (its
//! `--health-*`, `--since` and `--until` flags).

/// The duration in nanoseconds; `None` for what Go refuses (a number without
/// a unit, an unknown unit, nothing at all) and for what does not fit.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    let ns = total.round() as i64;
    Some(if negative { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration as d;

    #[test]
    fn go_durations() {
        assert_eq!(d("0"), Some(0));
        assert_eq!(d("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(d("1m30s"), Some(90_000_000_000));
        assert_eq!(d("1.5s"), Some(1_500_000_000));
        assert_eq!(d("250us"), Some(250_000));
        assert_eq!(d("-2s"), Some(-2_000_000_000));
        assert_eq!(d("+500ms"), Some(500_000_000));
        for bad in ["", "-", "10", "s", "1x", "1.5", "99999999999h"] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }
}
