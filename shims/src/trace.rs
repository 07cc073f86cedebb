//! The shim's own diagnostics: a minimal `tracing` subscriber that writes
//! one line per event to stderr (the shim points stderr at `shim.log` in its
//! state directory), in the runtime's text format:
//! `time="…" level=info msg="container started" pid=42 container="c1"`.
//! Spans are not tracked; the container id is on every line. A full
//! `tracing-subscriber` would cost the shim more memory than all of this.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::time::format_rfc3339;

pub struct LineSubscriber {
    container: String,
    max_level: Level,
}

impl LineSubscriber {
    /// Events at `max_level` and more severe are written.
    pub fn new(container: &str, max_level: Level) -> Self {
        LineSubscriber {
            container: container.to_owned(),
            max_level,
        }
    }

    /// Installs the subscriber for the whole process.
    pub fn install(self) {
        // Fails only if a subscriber is installed already, which leaves
        // that one in place: nothing to do.
        let _ = tracing::subscriber::set_global_default(self);
    }
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for LineSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // More verbose levels compare greater.
        *metadata.level() <= self.max_level
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let line = format!(
            "time=\"{}\" level={level} msg={:?}{} container={:?}\n",
            format_rfc3339(SystemTime::now()),
            fields.message,
            fields.rest,
            self.container
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
