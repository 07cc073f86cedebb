//! The runtime's log, written as runc writes it (runc logs with logrus), so
//! that tools made for runc read it: one line per event in the `--log` file,
//! or on stderr without one.
//!
//! - json: `{"level":"error","msg":"…","time":"…"}`;
//! - text, to a file or a pipe: `time="…" level=error msg="…"`, a value
//!   quoted (Go's `%q`) only when it holds more than letters, digits and
//!   `-._/@^+`;
//! - text, to a terminal: logrus's coloured `ERRO[0000] …` form.
//!
//! `time` is RFC 3339 to the second, as logrus's default. Extra fields come
//! after `msg`, sorted by name.
//!
//! A small tracing layer of our own: tracing-subscriber's formatters nest
//! fields and name them differently from the runc contract.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

struct RuncLayer {
    out: Mutex<Box<dyn Write + Send>>,
    format: LogFormat,
    /// Text on a terminal: logrus's coloured form.
    colored: bool,
    max: Level,
    started: Instant,
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else {
            self.extra
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

/// logrus's level names.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Whether logrus's text formatter quotes `text`.
fn needs_quoting(text: &str) -> bool {
    !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'))
}

/// `text` quoted as Go's `strconv.Quote` (`%q`) does.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A value as logrus's text formatter writes it.
fn text_value(text: &str) -> String {
    if needs_quoting(text) {
        go_quote(text)
    } else {
        text.to_owned()
    }
}

/// One event in logrus's text form: `time="…" level=… msg=… key=value`.
fn text_line(time: &str, level: &Level, msg: &str, extra: &[(String, String)]) -> String {
    let mut line = format!(
        "time={} level={}",
        text_value(time),
        text_value(level_name(level))
    );
    if !msg.is_empty() {
        let _ = write!(line, " msg={}", text_value(msg));
    }
    for (k, v) in extra {
        let _ = write!(line, " {k}={}", text_value(v));
    }
    line
}

/// One event in logrus's coloured terminal form: `ERRO[0003] msg  key=value`.
fn colored_line(secs: u64, level: &Level, msg: &str, extra: &[(String, String)]) -> String {
    let color = match *level {
        Level::ERROR => 31,
        Level::WARN => 33,
        Level::INFO => 36,
        Level::DEBUG | Level::TRACE => 37,
    };
    let name = level_name(level).to_ascii_uppercase();
    let short = name.get(..4).unwrap_or(&name);
    let msg = msg.strip_suffix('\n').unwrap_or(msg);
    let pad = 44usize.saturating_sub(msg.chars().count());
    let mut line = format!("\x1b[{color}m{short}\x1b[0m[{secs:04}] {msg}{:pad$} ", "");
    for (k, v) in extra {
        let _ = write!(line, " \x1b[{color}m{k}\x1b[0m={}", text_value(v));
    }
    line
}

fn json_line(time: &str, level: &Level, msg: &str, extra: Vec<(String, String)>) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("level".into(), level_name(level).into());
    obj.insert("msg".into(), msg.into());
    obj.insert("time".into(), time.into());
    for (k, v) in extra {
        obj.insert(k, v.into());
    }
    serde_json::Value::Object(obj).to_string()
}

/// Now, RFC 3339 to the second (logrus's default timestamp).
fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.extra.sort_by(|a, b| a.0.cmp(&b.0));
        let line = match self.format {
            LogFormat::Json => json_line(&now(), &level, &fields.msg, fields.extra),
            LogFormat::Text if self.colored => colored_line(
                self.started.elapsed().as_secs(),
                &level,
                &fields.msg,
                &fields.extra,
            ),
            LogFormat::Text => text_line(&now(), &level, &fields.msg, &fields.extra),
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Installs the logger. Without a log file, messages go to stderr.
pub fn init(file: Option<File>, format: LogFormat, debug: bool) {
    let (out, terminal): (Box<dyn Write + Send>, bool) = match file {
        Some(f) => {
            let terminal = f.is_terminal();
            (Box::new(f), terminal)
        }
        None => (Box::new(std::io::stderr()), std::io::stderr().is_terminal()),
    };
    let layer = RuncLayer {
        out: Mutex::new(out),
        format,
        colored: terminal && format == LogFormat::Text,
        max: if debug { Level::DEBUG } else { Level::WARN },
        started: Instant::now(),
    };
    tracing_subscriber::registry().with(layer).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_quote_as_logrus() {
        assert_eq!(
            text_line(
                "2026-12-01T00:00:00Z",
                &Level::ERROR,
                "container does not exist",
                &[]
            ),
            r#"time="2026-12-01T00:00:00Z" level=error msg="container does not exist""#
        );
        assert_eq!(
            text_line("t", &Level::WARN, "plain-word_1.2/x@y^z+", &[]),
            "time=t level=warning msg=plain-word_1.2/x@y^z+"
        );
        assert_eq!(
            text_line(
                "t",
                &Level::ERROR,
                "say \"hi\"\n\tback\\slash\u{1}\u{85}é",
                &[("a".into(), "".into()), ("b".into(), "x y".into())]
            ),
            r#"time=t level=error msg="say \"hi\"\n\tback\\slash\x01\u0085é" a= b="x y""#
        );
        // logrus leaves an empty message out.
        assert_eq!(text_line("t", &Level::INFO, "", &[]), "time=t level=info");
    }

    #[test]
    fn colored_lines_as_logrus_on_a_terminal() {
        assert_eq!(
            colored_line(3, &Level::ERROR, "oops\n", &[("k".into(), "v w".into())]),
            format!(
                "\x1b[31mERRO\x1b[0m[0003] oops{} \x1b[31mk\x1b[0m=\"v w\"",
                " ".repeat(40) + " "
            )
        );
        assert!(colored_line(0, &Level::WARN, "w", &[]).starts_with("\x1b[33mWARN\x1b[0m[0000] w"));
    }

    #[test]
    fn json_lines_have_runc_keys() {
        let line = json_line(
            "t",
            &Level::ERROR,
            "m",
            vec![("container".into(), "c1".into())],
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"level": "error", "msg": "m", "time": "t", "container": "c1"})
        );
    }

    #[test]
    fn timestamps_to_the_second() {
        let t = now();
        assert_eq!(t.len(), "2026-12-01T00:00:00Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }
}
