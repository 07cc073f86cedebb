//! Tracing one container start through every layer (`berth run --trace`).
//!
//! A traced request carries a flag down the layers: the HTTP header
//! [`TRACE_HEADER`] to berthd, the gRPC metadata [`TRACE_KEY`] to the
//! supervisor, a flag of the shim's protocol to the shim, and an
//! environment variable to the runtime. Each layer records its own phases
//! as [`Span`]s, stamped with `CLOCK_MONOTONIC` (one clock for every
//! process on the host, so spans from different processes line up), and
//! hands them back up with its answer: the supervisor in the response
//! metadata [`SPANS_KEY`], berthd in the response header [`TRACE_HEADER`].
//!
//! Within a process the spans of one traced request go to the [`Trace`] of
//! its task ([`scope`]); [`span`] and [`extend`] do nothing outside one, so
//! an untraced request pays one task-local lookup per phase.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tonic::metadata::{BinaryMetadataValue, MetadataMap, MetadataValue};

/// The HTTP request header that asks berthd for a trace (any value), and
/// the response header that carries its spans (JSON).
pub const TRACE_HEADER: &str = "x-berth-trace";
/// The gRPC request metadata that asks the supervisor for its spans.
pub const TRACE_KEY: &str = "berth-trace";
/// The gRPC response metadata carrying the supervisor's spans (JSON).
pub const SPANS_KEY: &str = "berth-trace-bin";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("malformed trace spans: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// The layer a span was recorded in, outermost first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Cli,
    Engine,
    Supervisor,
    Shim,
    Runtime,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Cli => "cli",
            Layer::Engine => "engine",
            Layer::Supervisor => "supervisor",
            Layer::Shim => "shim",
            Layer::Runtime => "runtime",
        }
    }
}

/// One phase: what ran, in which layer, from when to when
/// (`CLOCK_MONOTONIC`, nanoseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub layer: Layer,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Span {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }

    /// Whether `other` lies within this span.
    pub fn contains(&self, other: &Span) -> bool {
        self.start_ns <= other.start_ns && other.end_ns <= self.end_ns
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only misplace a span.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The spans of one traced request, shared by the tasks that record them.
#[derive(Clone, Debug, Default)]
pub struct Trace(Arc<Mutex<Vec<Span>>>);

impl Trace {
    pub fn push(&self, span: Span) {
        self.lock().push(span);
    }

    pub fn extend(&self, spans: impl IntoIterator<Item = Span>) {
        self.lock().extend(spans);
    }

    /// The spans recorded so far, leaving none.
    pub fn take(&self) -> Vec<Span> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Span>> {
        // A panic while pushing leaves a whole Vec: go on with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

tokio::task_local! {
    static CURRENT: Trace;
}

/// Runs `work` with `trace` as its task's trace (none: untraced).
pub async fn scope<F: Future>(trace: Option<Trace>, work: F) -> F::Output {
    match trace {
        Some(t) => CURRENT.scope(t, work).await,
        None => work.await,
    }
}

/// The trace of the current task, if it is traced.
pub fn current() -> Option<Trace> {
    CURRENT.try_with(Trace::clone).ok()
}

/// Whether the current task is traced.
pub fn active() -> bool {
    CURRENT.try_with(|_| ()).is_ok()
}

/// Adds spans recorded elsewhere (a lower layer's) to the current trace.
pub fn extend(spans: impl IntoIterator<Item = Span>) {
    let _ = CURRENT.try_with(|t| t.extend(spans));
}

/// Times a phase until the guard drops; nothing when untraced.
pub fn span(layer: Layer, name: &str) -> SpanGuard {
    SpanGuard(current().map(|trace| {
        (
            trace,
            Span {
                layer,
                name: name.to_string(),
                start_ns: now_ns(),
                end_ns: 0,
            },
        )
    }))
}

/// Records its span when dropped.
#[must_use = "the span ends when the guard drops"]
pub struct SpanGuard(Option<(Trace, Span)>);

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some((trace, mut span)) = self.0.take() {
            span.end_ns = now_ns();
            trace.push(span);
        }
    }
}

/// Spans as they travel: a JSON array.
pub fn encode(spans: &[Span]) -> String {
    // Spans are strings and numbers, which always serialize.
    serde_json::to_string(spans).unwrap_or_else(|_| "[]".into())
}

pub fn decode(text: &[u8]) -> Result<Vec<Span>, TraceError> {
    Ok(serde_json::from_slice(text)?)
}

/// `message` as a gRPC request, asking for the server's spans when the
/// current task is traced.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if active() {
        req.metadata_mut()
            .insert(TRACE_KEY, MetadataValue::from_static("1"));
    }
    req
}

/// Adds the spans a gRPC server sent back to the current trace.
pub fn absorb(metadata: &MetadataMap) {
    if !active() {
        return;
    }
    let Some(value) = metadata.get_bin(SPANS_KEY) else {
        return;
    };
    // A malformed answer loses the lower layer's spans, not the call.
    if let Some(spans) = value.to_bytes().ok().and_then(|b| decode(&b).ok()) {
        extend(spans);
    }
}

/// On the server: a trace for a request whose metadata asks for one.
pub fn from_metadata(metadata: &MetadataMap) -> Option<Trace> {
    metadata.contains_key(TRACE_KEY).then(Trace::default)
}

/// On the server: puts the spans of `trace` in the response's metadata.
pub fn answer<T>(response: &mut tonic::Response<T>, trace: &Trace) {
    let spans = trace.take();
    response.metadata_mut().insert_bin(
        SPANS_KEY,
        BinaryMetadataValue::from_bytes(encode(&spans).as_bytes()),
    );
}

/// One line of a rendered trace: a span and how deep it nests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub depth: usize,
    pub span: Span,
}

/// The spans as a tree, in order: each after the innermost span that
/// contains it (a tie goes to the outer layer as the parent).
pub fn tree(mut spans: Vec<Span>) -> Vec<Row> {
    spans.sort_by(|a, b| {
        a.start_ns
            .cmp(&b.start_ns)
            .then(b.end_ns.cmp(&a.end_ns))
            .then(a.layer.cmp(&b.layer))
    });
    let mut rows = Vec::with_capacity(spans.len());
    let mut open: Vec<Span> = Vec::new();
    for span in spans {
        while open.last().is_some_and(|p| !p.contains(&span)) {
            open.pop();
        }
        rows.push(Row {
            depth: open.len(),
            span: span.clone(),
        });
        open.push(span);
    }
    rows
}

/// The trace as a table: offset from the first span's start and duration
/// (milliseconds), layer, and the phase indented by its depth.
pub fn render(spans: Vec<Span>) -> String {
    let rows = tree(spans);
    let origin = rows.first().map_or(0, |r| r.span.start_ns);
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10}  {:>10}  {:<10}  PHASE",
        "OFFSET ms", "TIME ms", "LAYER"
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "{:>10.3}  {:>10.3}  {:<10}  {}{}",
            ms(row.span.start_ns.saturating_sub(origin)),
            ms(row.span.duration_ns()),
            row.span.layer.name(),
            "  ".repeat(row.depth),
            row.span.name
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(layer: Layer, name: &str, start_ns: u64, end_ns: u64) -> Span {
        Span {
            layer,
            name: name.into(),
            start_ns,
            end_ns,
        }
    }

    #[test]
    fn spans_travel_as_json_and_back() {
        let spans = vec![s(Layer::Runtime, "pivot_root", 5, 9)];
        let text = encode(&spans);
        assert_eq!(
            text,
            r#"[{"layer":"runtime","name":"pivot_root","start_ns":5,"end_ns":9}]"#
        );
        assert_eq!(decode(text.as_bytes()).unwrap(), spans);
        assert!(decode(b"[{\"layer\":\"kernel\"}]").is_err());
    }

    #[test]
    fn the_tree_nests_by_containment_across_layers() {
        let rows = tree(vec![
            s(Layer::Runtime, "exec", 60, 70),
            s(Layer::Engine, "start", 10, 90),
            s(Layer::Cli, "run", 0, 100),
            s(Layer::Supervisor, "Tasks/Start", 50, 80),
            s(Layer::Supervisor, "Tasks/Create", 20, 45),
            // The same interval in two layers: the outer layer is the parent.
            s(Layer::Shim, "runtime start", 50, 80),
        ]);
        let got: Vec<(usize, &str)> = rows
            .iter()
            .map(|r| (r.depth, r.span.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "run"),
                (1, "start"),
                (2, "Tasks/Create"),
                (2, "Tasks/Start"),
                (3, "runtime start"),
                (4, "exec"),
            ]
        );
    }

    #[test]
    fn render_shows_offsets_and_durations_in_milliseconds() {
        let text = render(vec![
            s(Layer::Cli, "berth run", 1_000_000, 3_500_000),
            s(
                Layer::Engine,
                "POST /containers/create",
                1_500_000,
                2_000_000,
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("0.000") && lines[1].contains("2.500"));
        assert!(lines[2].contains("0.500") && lines[2].ends_with("  POST /containers/create"));
    }

    #[tokio::test]
    async fn spans_are_recorded_only_in_a_traced_task() {
        drop(span(Layer::Engine, "untraced"));
        assert!(!active());
        let trace = Trace::default();
        scope(Some(trace.clone()), async {
            let _g = span(Layer::Engine, "outer");
            extend([s(Layer::Supervisor, "lower", 1, 2)]);
            assert!(request(()).metadata().contains_key(TRACE_KEY));
        })
        .await;
        assert!(!request(()).metadata().contains_key(TRACE_KEY));
        let spans = trace.take();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "lower");
        assert!(spans[1].start_ns <= spans[1].end_ns && spans[1].start_ns > 0);
    }

    #[test]
    fn a_server_answers_its_spans_in_metadata() {
        let mut md = MetadataMap::new();
        assert!(from_metadata(&md).is_none());
        md.insert(TRACE_KEY, MetadataValue::from_static("1"));
        let trace = from_metadata(&md).unwrap();
        trace.push(s(Layer::Supervisor, "Tasks/Create", 3, 4));
        let mut resp = tonic::Response::new(());
        answer(&mut resp, &trace);
        let got = resp
            .metadata()
            .get_bin(SPANS_KEY)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(decode(&got).unwrap()[0].name, "Tasks/Create");
    }
}
