//! Everything `berth` prints: docker's tables ([`table`]), `--format`
//! templates ([`template`]), `docker inspect`'s JSON ([`json`]), pull and
//! push progress ([`progress`]), sizes and times ([`units`]), and the
//! looks of a table on a terminal ([`style`]).

pub mod build_progress;
pub mod json;
pub mod progress;
pub mod style;
pub mod table;
pub mod template;
pub mod units;

/// The width of the terminal on stdout, or 200 (docker's default) when it
/// is not one.
pub fn terminal_width() -> usize {
    crate::terminal::size(libc::STDOUT_FILENO).map_or(200, |(_, cols)| usize::from(cols))
}

/// A container or image id shortened as docker shows it (12 hex digits,
/// "sha256:" dropped).
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

/// Docker's `Ellipsis`: at most `max` characters, the last one "…" when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote` for the printable text docker quotes.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_quotes_and_ellipses() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(
            ellipsis("sh -c 'echo hello; sleep 100'", 20),
            "sh -c 'echo hello; …"
        );
        assert_eq!(ellipsis("true", 20), "true");
        assert_eq!(go_quote("a \"b\"\n"), "\"a \\\"b\\\"\\n\"");
    }
}
