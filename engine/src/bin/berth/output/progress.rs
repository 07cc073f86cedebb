//! The JSON progress stream of pull, push, load and import, drawn as the
//! docker CLI's `jsonmessage` draws it: on a terminal one line per layer,
//! rewritten in place (ANSI cursor moves) with a progress bar; otherwise
//! the status lines alone, progress updates left out.

use std::collections::HashMap;
use std::io::Write;

use serde::Deserialize;

use super::units;

/// Splits the stream into its messages, one JSON object a line, as the
/// body's chunks come (a message may span chunks).
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// The whole messages that `data` completes.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Message>, serde_json::Error> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            let line = line.trim_ascii();
            if !line.is_empty() {
                out.push(serde_json::from_slice(line)?);
            }
        }
        Ok(out)
    }

    /// The last message, when the stream did not end with a newline.
    pub fn finish(self) -> Result<Option<Message>, serde_json::Error> {
        let rest = self.pending.trim_ascii();
        if rest.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(rest).map(Some)
    }
}

/// One line of the stream.
#[derive(Debug, Default, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub from: String,
    #[serde(default, rename = "progressDetail")]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, rename = "errorDetail")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(default)]
    pub aux: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub current: i64,
    #[serde(default)]
    pub total: i64,
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub units: String,
    #[serde(default, rename = "hidecounts")]
    pub hide_counts: bool,
}

impl Progress {
    /// The bar and counts, as `JSONProgress.String` renders them for a
    /// terminal `width` columns wide at time `now` (Unix seconds).
    pub fn render(&self, width: usize, now: i64) -> String {
        if self.current <= 0 && self.total <= 0 {
            return String::new();
        }
        if self.total <= 0 {
            return match self.units.as_str() {
                "" => format!("{:>8}", units::human_size(self.current as f64)),
                u => format!("{} {u}", self.current),
            };
        }
        let percentage = ((self.current as f64 / self.total as f64 * 100.0) as i64 / 2).min(50);
        let mut bar = String::new();
        if width > 110 {
            let spaces = (50 - percentage).max(0) as usize;
            bar = format!(
                "[{}>{}] ",
                "=".repeat(percentage.max(0) as usize),
                " ".repeat(spaces)
            );
        }
        let numbers = if self.hide_counts {
            String::new()
        } else if self.units.is_empty() {
            let current = units::human_size(self.current as f64);
            if self.current > self.total {
                format!("{current:>8}")
            } else {
                format!("{current:>8}/{}", units::human_size(self.total as f64))
            }
        } else if self.current > self.total {
            format!("{} {}", self.current, self.units)
        } else {
            format!("{}/{} {}", self.current, self.total, self.units)
        };
        let mut left = String::new();
        if self.current > 0 && self.start > 0 && percentage < 50 && width > 50 {
            let elapsed = (now - self.start).max(0) as f64;
            let secs = (elapsed / self.current as f64 * (self.total - self.current) as f64) as u64;
            left = format!(" {}", go_duration(secs));
        }
        format!("{bar}{numbers}{left}")
    }
}

/// Go's `time.Duration.String` for whole seconds: "0s", "45s", "1m5s", "2h0m1s".
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Draws a stream of messages: feed it lines with [`Renderer::message`].
pub struct Renderer<W: Write> {
    out: W,
    terminal: bool,
    width: usize,
    /// The line of each layer id, counted from the first.
    lines: HashMap<String, usize>,
}

/// A message carried an error: the stream's failure, as docker prints it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

impl<W: Write> Renderer<W> {
    pub fn new(out: W, terminal: bool, width: usize) -> Renderer<W> {
        Renderer {
            out,
            terminal,
            width,
            lines: HashMap::new(),
        }
    }

    /// Draws one message; its error, if it carries one, is returned.
    pub fn message(&mut self, m: &Message) -> Result<(), StreamError> {
        if m.aux.is_some() {
            return Ok(());
        }
        let mut diff = 0;
        let progressing = m.progress.is_some();
        if !m.id.is_empty() && progressing {
            let count = self.lines.len();
            let line = *self.lines.entry(m.id.clone()).or_insert_with(|| {
                if self.terminal {
                    let _ = writeln!(self.out);
                }
                count
            });
            diff = self.lines.len() - line;
            if self.terminal && diff > 0 {
                let _ = write!(self.out, "\x1b[{diff}A");
            }
        } else {
            self.lines.clear();
        }
        let result = self.display(m);
        if !m.id.is_empty() && self.terminal && diff > 0 {
            let _ = write!(self.out, "\x1b[{diff}B");
        }
        let _ = self.out.flush();
        result
    }

    fn display(&mut self, m: &Message) -> Result<(), StreamError> {
        if let Some(e) = &m.error_detail {
            if !e.message.is_empty() {
                return Err(StreamError(e.message.clone()));
            }
        }
        if let Some(e) = &m.error {
            return Err(StreamError(e.clone()));
        }
        let now = units::now_unix() as i64;
        let bar = m
            .progress
            .as_ref()
            .map(|p| p.render(self.width, now))
            .unwrap_or_default();
        let mut endl = "";
        if self.terminal && m.stream.is_empty() && m.progress.is_some() {
            let _ = write!(self.out, "\x1b[2K\r");
            endl = "\r";
        } else if !bar.is_empty() {
            return Ok(());
        }
        if !m.id.is_empty() {
            let _ = write!(self.out, "{}: ", m.id);
        }
        if !m.from.is_empty() {
            let _ = write!(self.out, "(from {}) ", m.from);
        }
        let _ = if m.progress.is_some() && self.terminal {
            write!(self.out, "{} {bar}{endl}", m.status)
        } else if !m.stream.is_empty() {
            write!(self.out, "{}{endl}", m.stream)
        } else {
            writeln!(self.out, "{}{endl}", m.status)
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str) -> Message {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn a_bar_as_docker_draws_it() {
        let p = Progress {
            current: 1_000_000,
            total: 4_000_000,
            ..Progress::default()
        };
        assert_eq!(
            p.render(200, 0),
            format!("[============>{}]      1MB/4MB", " ".repeat(38))
        );
        assert_eq!(p.render(80, 0), "     1MB/4MB");
        assert_eq!(go_duration(65), "1m5s");
    }

    #[test]
    fn plain_output_leaves_progress_updates_out() {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, false, 200);
        for line in [
            r#"{"status":"Pulling from x/busybox","id":"latest"}"#,
            r#"{"status":"Pulling fs layer","progressDetail":{},"id":"abc"}"#,
            r#"{"status":"Downloading","progressDetail":{"current":5,"total":10},"id":"abc"}"#,
            r#"{"status":"Pull complete","progressDetail":{},"id":"abc"}"#,
            r#"{"status":"Digest: sha256:1"}"#,
        ] {
            r.message(&msg(line)).unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "latest: Pulling from x/busybox\nabc: Pulling fs layer\nabc: Pull complete\nDigest: sha256:1\n"
        );
    }

    #[test]
    fn a_terminal_rewrites_each_layer_line_in_place() {
        let mut out = Vec::new();
        let mut r = Renderer::new(&mut out, true, 80);
        r.message(&msg(r#"{"status":"Waiting","progressDetail":{},"id":"a"}"#))
            .unwrap();
        r.message(&msg(r#"{"status":"Waiting","progressDetail":{},"id":"b"}"#))
            .unwrap();
        r.message(&msg(r#"{"status":"Done","progressDetail":{},"id":"a"}"#))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("\x1b[2A\x1b[2K\ra: Done \r\x1b[2B"),
            "{text:?}"
        );
    }

    #[test]
    fn an_error_line_fails_the_stream() {
        let mut r = Renderer::new(Vec::new(), false, 80);
        let e = r
            .message(&msg(
                r#"{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}"#,
            ))
            .unwrap_err();
        assert_eq!(e.to_string(), "manifest unknown");
    }
}
