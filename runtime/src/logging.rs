//! The runtime's log: one line per event in the `--log` file (or stderr),
//! as runc writes it, `{"level":…,"msg":…,"time":…}` in json format, so
//! that shims can read the last error.
//!
//! A small tracing layer of our own: tracing-subscriber's json formatter
//! nests fields and names them differently from the runc contract.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

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
    max: Level,
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

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

impl<S: Subscriber> Layer<S> for RuncLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = crate::state::now_rfc3339();
        let line = match self.format {
            LogFormat::Json => {
                let mut obj = serde_json::Map::new();
                obj.insert("level".into(), level_name(&level).into());
                obj.insert("msg".into(), fields.msg.into());
                obj.insert("time".into(), time.into());
                for (k, v) in fields.extra {
                    obj.insert(k, v.into());
                }
                serde_json::Value::Object(obj).to_string()
            }
            LogFormat::Text => {
                let mut line = format!(
                    "time=\"{time}\" level={} msg={:?}",
                    level_name(&level),
                    fields.msg
                );
                for (k, v) in fields.extra {
                    let _ = write!(line, " {k}={v:?}");
                }
                line
            }
        };
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Installs the logger. Without a log file, messages go to stderr.
pub fn init(file: Option<File>, format: LogFormat, debug: bool) {
    let out: Box<dyn Write + Send> = match file {
        Some(f) => Box::new(f),
        None => Box::new(std::io::stderr()),
    };
    let layer = RuncLayer {
        out: Mutex::new(out),
        format,
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    tracing_subscriber::registry().with(layer).init();
}
