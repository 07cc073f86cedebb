//! What every command group shares: how failures are reported (`rpc`,
//! `for_each`, `Reported`), tables and text on stdout, byte sizes and ages,
//! the progress bars of a pull or push, and the `--debug` log on stderr.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Result};
use berth_proto::images::v1::{Progress, ProgressState};
use indicatif::{
    HumanBytes, HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle,
};
use prost_types::Timestamp;
use tracing::debug;

/// An error already printed to stderr: exit 1 without another message.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors reported above")
    }
}

impl std::error::Error for Reported {}

/// The error a person reads for a failed call: the status message, or the
/// code's description when the message is empty.
pub fn rpc(status: tonic::Status) -> anyhow::Error {
    debug!(code = ?status.code(), message = status.message(), "call failed");
    if status.message().is_empty() {
        anyhow!("{}", status.code().description())
    } else {
        anyhow!("{}", status.message())
    }
}

/// Runs `f` on every item, printing each failure; fails after all were tried.
pub async fn for_each<F, Fut>(items: Vec<String>, mut f: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for item in items {
        match f(item.clone()).await {
            Ok(()) => println!("{item}"),
            Err(status) => {
                eprintln!("berth-ctr: {item}: {:#}", rpc(status));
                failed = true;
            }
        }
    }
    if failed {
        return Err(Reported.into());
    }
    Ok(())
}

/// Prints `rows` under `header` in columns, like Go's tabwriter in ctr.
pub fn print_table<I>(header: &[&str], rows: I)
where
    I: IntoIterator<Item = Vec<String>>,
{
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    table.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &table {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<width$}   ", width = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    emit(&out);
}

/// Prints text to stdout, quietly stopping if its reader went away.
pub fn emit(text: &str) {
    if let Err(e) = write_stdout(text.as_bytes()) {
        eprintln!("berth-ctr: {e:#}");
    }
}

pub fn size(bytes: i64) -> String {
    HumanBytes(bytes.max(0) as u64).to_string()
}

pub fn labels(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

fn to_system_time(ts: Option<&Timestamp>) -> Option<SystemTime> {
    SystemTime::try_from(*ts?).ok()
}

/// "3 hours ago", from a timestamp.
pub fn ago(ts: Option<&Timestamp>) -> String {
    let Some(time) = to_system_time(ts) else {
        return "-".to_string();
    };
    match SystemTime::now().duration_since(time) {
        Ok(d) if d >= Duration::from_secs(1) => format!("{} ago", HumanDuration(d)),
        _ => "just now".to_string(),
    }
}

/// "in 5 minutes", "expired" or "never".
pub fn expires(ts: Option<&Timestamp>) -> String {
    let Some(time) = to_system_time(ts) else {
        return "never".to_string();
    };
    match time.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {}", HumanDuration(d)),
        Err(_) => "expired".to_string(),
    }
}

/// Writes raw bytes to stdout; false when its reader went away (`| head`).
pub fn write_stdout(data: &[u8]) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("write stdout")),
    }
}

/// The progress of a pull or push: one bar per blob on stderr, like `ctr
/// pull`. Where bars cannot show (stderr is not a terminal), one line per
/// blob as it completes; with `--quiet`, nothing.
pub struct Transfer {
    multi: MultiProgress,
    style: ProgressStyle,
    blobs: Vec<Blob>,
    index: HashMap<String, usize>,
    lines: bool,
}

struct Blob {
    kind: String,
    digest: String,
    bar: ProgressBar,
    state: ProgressState,
    total: i64,
    reported: Option<ProgressState>,
}

impl Blob {
    fn line(&self) -> String {
        format!(
            "{:<8} {}  {:<11} {}",
            self.kind,
            short_digest(&self.digest),
            state_name(self.state),
            size(self.total)
        )
    }
}

impl Transfer {
    pub fn new(quiet: bool) -> Transfer {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let multi = MultiProgress::with_draw_target(target);
        let lines = !quiet && multi.is_hidden();
        // The template is a constant that parses; the fallback is never used.
        let style = ProgressStyle::with_template(
            "{prefix} {msg:<11} [{wide_bar}] {bytes:>10}/{total_bytes:<10}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        Transfer {
            multi,
            style,
            blobs: Vec::new(),
            index: HashMap::new(),
            lines,
        }
    }

    pub fn update(&mut self, progress: &[Progress]) {
        for p in progress {
            let i = match self.index.get(&p.digest) {
                Some(&i) => i,
                None => {
                    let bar = self.multi.add(ProgressBar::no_length());
                    bar.set_style(self.style.clone());
                    let kind = if p.kind.is_empty() { "blob" } else { &p.kind };
                    bar.set_prefix(format!("{kind:<8} {}", short_digest(&p.digest)));
                    self.blobs.push(Blob {
                        kind: kind.to_string(),
                        digest: p.digest.clone(),
                        bar,
                        state: ProgressState::Waiting,
                        total: 0,
                        reported: None,
                    });
                    self.index.insert(p.digest.clone(), self.blobs.len() - 1);
                    self.blobs.len() - 1
                }
            };
            let blob = &mut self.blobs[i];
            blob.state = p.state();
            if p.total > 0 {
                blob.total = p.total;
                blob.bar.set_length(p.total as u64);
            }
            let done = matches!(blob.state, ProgressState::Done | ProgressState::Exists);
            let offset = if done { blob.total } else { p.offset.max(0) };
            blob.bar.set_position(offset as u64);
            blob.bar.set_message(state_name(blob.state));
            if done && self.lines && blob.reported != Some(blob.state) {
                eprintln!("{}", blob.line());
                blob.reported = Some(blob.state);
            }
        }
    }

    /// Leaves the bars as they are, and reports what no line reported yet.
    pub fn finish(&mut self) {
        for blob in &mut self.blobs {
            blob.bar.abandon();
            if self.lines && blob.reported != Some(blob.state) {
                eprintln!("{}", blob.line());
                blob.reported = Some(blob.state);
            }
        }
    }
}

fn state_name(state: ProgressState) -> String {
    state.as_str_name().to_ascii_lowercase()
}

/// "sha256:" and the first 12 hex digits, as docker shows ids.
pub fn short_digest(digest: &str) -> &str {
    match digest.split_once(':') {
        Some((algorithm, hex)) if hex.len() > 12 => &digest[..algorithm.len() + 1 + 12],
        _ => digest,
    }
}

/// `--debug`: tracing events on stderr, berth's from debug level, the
/// libraries' (tonic, h2, hyper) from info.
pub mod debug_log {
    use std::fmt::Write as _;

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::{Event, Level, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::prelude::*;

    struct Stderr;

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }

        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    fn wanted(metadata: &Metadata<'_>) -> bool {
        let max = if metadata.target().starts_with("berth") {
            Level::DEBUG
        } else {
            Level::INFO
        };
        *metadata.level() <= max
    }

    impl<S: Subscriber> Layer<S> for Stderr {
        fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
            wanted(metadata)
        }

        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::DEBUG)
        }

        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let metadata = event.metadata();
            if !wanted(metadata) {
                return;
            }
            let mut line = Line(format!("{} {}:", metadata.level(), metadata.target()));
            event.record(&mut line);
            eprintln!("{}", line.0);
        }
    }

    pub fn init() {
        tracing_subscriber::registry().with(Stderr).init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digests() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("nodigest"), "nodigest");
    }

    #[test]
    fn status_message_not_debug_dump() {
        assert_eq!(
            rpc(tonic::Status::not_found("image \"x\": not found")).to_string(),
            "image \"x\": not found"
        );
        assert_eq!(
            rpc(tonic::Status::not_found("")).to_string(),
            "Some requested entity was not found"
        );
    }
}
