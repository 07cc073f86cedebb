//! `berth build` on a terminal: the step being run on a line of its own
//! with a spinner and its elapsed time, the last lines of its output under
//! it, and each step collapsed to one "✔ [2/4] RUN ..." line when it ends.
//! A failing step stays open, its whole output shown. The stream is the
//! legacy builder's (`Step N/M : ...`, ` ---> ...` lines); `--progress
//! plain` and pipes print it as it comes, as docker does.

use std::io::Write;
use std::time::{Duration, Instant};

use super::progress::Message;

/// Spinner frames, one per tick.
const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
/// Output lines shown under the running step.
const TAIL: usize = 6;
/// How often the spinner turns.
pub const TICK: Duration = Duration::from_millis(100);

struct Step {
    label: String,
    started: Instant,
    output: Vec<String>,
    cached: bool,
}

/// Draws the build stream on a terminal `width` columns wide.
pub struct BuildRenderer<W: Write> {
    out: W,
    width: usize,
    step: Option<Step>,
    /// Lines of the live region drawn last, to move back over.
    drawn: usize,
    frame: usize,
    /// A stream line not yet ended by its newline.
    partial: String,
}

/// Seconds as the step lines show them.
fn elapsed(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl<W: Write> BuildRenderer<W> {
    pub fn new(out: W, width: usize) -> BuildRenderer<W> {
        BuildRenderer {
            out,
            width: width.max(20),
            step: None,
            drawn: 0,
            frame: 0,
            partial: String::new(),
        }
    }

    fn fit(&self, line: &str, room: usize) -> String {
        super::ellipsis(line, room.min(self.width))
    }

    /// Erases the live region.
    fn erase(&mut self) {
        if self.drawn > 0 {
            let _ = write!(self.out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Draws the running step and the tail of its output.
    fn draw(&mut self) {
        self.erase();
        let Some(step) = &self.step else {
            let _ = self.out.flush();
            return;
        };
        let time = elapsed(step.started.elapsed());
        let head = format!("{} {}", SPINNER[self.frame % SPINNER.len()], step.label);
        let room = self.width.saturating_sub(time.len() + 2);
        let head = self.fit(&head, room);
        let pad = self
            .width
            .saturating_sub(head.chars().count() + time.len() + 1)
            .min(8);
        let mut lines = vec![format!(
            "\x1b[1m{head}\x1b[0m{}\x1b[2m{time}\x1b[0m",
            " ".repeat(pad + 1)
        )];
        let from = step.output.len().saturating_sub(TAIL);
        for line in &step.output[from..] {
            let shown = self.fit(line, self.width.saturating_sub(4));
            lines.push(format!("\x1b[2m │ {shown}\x1b[0m"));
        }
        for line in &lines {
            let _ = writeln!(self.out, "{line}");
        }
        self.drawn = lines.len();
        let _ = self.out.flush();
    }

    /// Ends the running step: one line, its output dropped.
    fn finish_step(&mut self) {
        self.erase();
        if let Some(step) = self.step.take() {
            let time = if step.cached {
                "CACHED".to_string()
            } else {
                elapsed(step.started.elapsed())
            };
            let head = self.fit(
                &format!("✔ {}", step.label),
                self.width.saturating_sub(time.len() + 2),
            );
            let _ = writeln!(self.out, "\x1b[32m{head}\x1b[0m \x1b[2m{time}\x1b[0m");
        }
        let _ = self.out.flush();
    }

    /// The spinner's turn.
    pub fn tick(&mut self) {
        self.frame += 1;
        if self.step.is_some() {
            self.draw();
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("Step ") {
            self.finish_step();
            let label = match rest.split_once(" : ") {
                Some((n, instr)) => format!("[{n}] {instr}"),
                None => rest.to_string(),
            };
            self.step = Some(Step {
                label,
                started: Instant::now(),
                output: Vec::new(),
                cached: false,
            });
            self.draw();
            return;
        }
        let trimmed = line.trim();
        if trimmed == "---> Using cache" {
            if let Some(step) = &mut self.step {
                step.cached = true;
            }
            return;
        }
        if trimmed.starts_with("--->") || trimmed.starts_with("Removing intermediate container") {
            return;
        }
        if trimmed.starts_with("Successfully built") || trimmed.starts_with("Successfully tagged") {
            self.finish_step();
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
            return;
        }
        match &mut self.step {
            Some(step) => {
                step.output.push(line.to_string());
                self.draw();
            }
            None => {
                let _ = writeln!(self.out, "{line}");
            }
        }
    }

    /// Draws one message; its error, if it carries one, is returned (the
    /// failing step left open with all its output).
    pub fn message(&mut self, m: &Message) -> Result<(), String> {
        let error = m
            .error_detail
            .as_ref()
            .map(|e| e.message.clone())
            .filter(|e| !e.is_empty())
            .or_else(|| m.error.clone());
        if let Some(error) = error {
            self.fail();
            return Err(error);
        }
        if !m.stream.is_empty() {
            self.partial.push_str(&m.stream);
            while let Some(nl) = self.partial.find('\n') {
                let line: String = self.partial.drain(..=nl).collect();
                self.line(line.trim_end_matches(['\n', '\r']));
            }
        } else if !m.status.is_empty() && m.progress.is_none() {
            let line = if m.id.is_empty() {
                m.status.clone()
            } else {
                format!("{}: {}", m.id, m.status)
            };
            self.line(&line);
        }
        Ok(())
    }

    /// The build failed: the running step with its whole output.
    fn fail(&mut self) {
        self.erase();
        if let Some(step) = self.step.take() {
            let _ = writeln!(
                self.out,
                "\x1b[31m✘ {}\x1b[0m \x1b[2m{}\x1b[0m",
                step.label,
                elapsed(step.started.elapsed())
            );
            for line in &step.output {
                let _ = writeln!(self.out, " │ {line}");
            }
        }
        let _ = self.out.flush();
    }

    /// The stream ended.
    pub fn end(&mut self) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        self.finish_step();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(text: &str) -> Message {
        Message {
            stream: text.to_string(),
            ..Message::default()
        }
    }

    #[test]
    fn steps_collapse_and_a_failure_keeps_its_output() {
        let mut out = Vec::new();
        let mut r = BuildRenderer::new(&mut out, 80);
        for s in [
            "Step 1/2 : FROM busybox\n",
            " ---> 0123\n",
            "Step 2/2 : RUN echo hi\n",
            " ---> Running in abc\n",
            "hi\n",
            " ---> 4567\n",
            "Successfully built 4567\n",
        ] {
            r.message(&stream(s)).unwrap();
        }
        r.end();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("✔ [1/2] FROM busybox"), "{text}");
        assert!(text.contains("✔ [2/2] RUN echo hi"), "{text}");
        assert!(text.contains(" │ hi"), "{text}");
        assert!(text.ends_with("Successfully built 4567\n"), "{text:?}");
        assert!(!text.contains("Running in"), "{text}");

        let mut out = Vec::new();
        let mut r = BuildRenderer::new(&mut out, 80);
        r.message(&stream("Step 1/1 : RUN false\nbroken\n"))
            .unwrap();
        let err = r
            .message(&Message {
                error: Some("The command '/bin/sh -c false' returned a non-zero code: 1".into()),
                ..Message::default()
            })
            .unwrap_err();
        assert!(err.contains("non-zero code"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("✘ [1/1] RUN false"), "{text}");
        assert!(text.ends_with(" │ broken\n"), "{text:?}");
    }
}
