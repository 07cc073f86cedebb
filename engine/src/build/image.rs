//! What each Dockerfile instruction does to the image being built, as
//! Docker's legacy builder records it: the image config document (its
//! `config`, the "run config" the next steps and containers start from,
//! `author`, `history`, `rootfs`), and the `created_by` line each step
//! leaves in the history (`/bin/sh -c #(nop)  ENV A=1` for a metadata
//! step, `/bin/sh -c #(nop) COPY file:<hash> in /dst ` for a copy,
//! `/bin/sh -c echo hi` for a RUN), which is also the heart of the cache
//! key ([`cache_key`]).

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::dockerfile::instructions::{Command, Healthcheck, Instruction};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageConfigError {
    #[error("Invalid signal: {0}")]
    InvalidSignal(String),
    #[error("invalid containerPort: {0}")]
    InvalidPort(String),
    #[error("invalid proto: {0}")]
    InvalidProto(String),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("{0} is not a metadata instruction")]
    NotMetadata(&'static str),
}

/// The default shell of a Linux image.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

/// An image config document being built: its top level (`author`,
/// `history`, `rootfs`, ...) and its `config` (the run config) apart, so
/// both are always objects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageDoc {
    pub top: Map<String, Value>,
    pub config: Map<String, Value>,
}

impl ImageDoc {
    /// A parent image's config document; anything that is not an object
    /// counts as empty.
    pub fn from_value(value: Value) -> ImageDoc {
        let mut top = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let config = match top.remove("config") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        ImageDoc { top, config }
    }

    /// The whole document, `config` in its place.
    pub fn to_value(&self) -> Value {
        let mut top = self.top.clone();
        top.insert("config".into(), Value::Object(self.config.clone()));
        Value::Object(top)
    }

    /// The SHELL a step's shell form runs through.
    pub fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(strings)
            .unwrap_or_else(default_shell)
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.config.get(key).and_then(strings).unwrap_or_default()
    }

    fn object(&mut self, key: &str) -> &mut Map<String, Value> {
        let slot = self.config.entry(key).or_insert_with(|| json!({}));
        if !slot.is_object() {
            *slot = json!({});
        }
        match slot {
            Value::Object(map) => map,
            // Replaced by an object just above.
            _ => unreachable!("an object was put in its place"),
        }
    }
}

/// A JSON list of strings; `None` when empty or not a list.
pub fn strings(value: &Value) -> Option<Vec<String>> {
    let list = value.as_array()?;
    let out: Vec<String> = list
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    (!out.is_empty()).then_some(out)
}

/// `created_by` of a step that changes only the config:
/// `<shell> #(nop)  <comment>` (Docker joins `#(nop) ` and the comment as
/// two words, hence the two spaces).
pub fn nop_created_by(shell: &[String], comment: &str) -> String {
    format!("{} #(nop)  {comment}", shell.join(" "))
}

/// `created_by` of COPY, ADD and WORKDIR: `<shell> #(nop) <comment>`.
pub fn nop_string_created_by(shell: &[String], comment: &str) -> String {
    format!("{} #(nop) {comment}", shell.join(" "))
}

/// Go's `%q` of a string.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%q` of a string slice: `["a" "b"]`.
pub fn go_quote_list(list: &[String]) -> String {
    let quoted: Vec<String> = list.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`.
pub fn go_list(list: &[String]) -> String {
    format!("[{}]", list.join(" "))
}

/// Go's `time.Duration` text: `1m30s`, `500ms`, `0s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos as f64 / 1e3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos as f64 / 1e6));
    }
    let mut out = String::new();
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let seconds = (nanos % 60_000_000_000) as f64 / 1e9;
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_fraction(seconds)));
    out
}

fn trim_fraction(value: f64) -> String {
    let text = format!("{value:.9}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// The exec form of a command: the shell form run through `shell`.
pub fn command_line(command: &Command, shell: &[String]) -> Vec<String> {
    match command {
        Command::Exec(list) => list.clone(),
        Command::Shell(text) => {
            let mut line = shell.to_vec();
            line.push(text.clone());
            line
        }
    }
}

/// Docker's `EXPOSE` port specs: `80` → `80/tcp`, ranges expanded.
pub fn port_specs(spec: &str) -> Result<Vec<String>, ImageConfigError> {
    let (ports, proto) = match spec.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ImageConfigError::InvalidProto(proto));
    }
    let bad = || ImageConfigError::InvalidPort(ports.to_string());
    let parse = |p: &str| p.parse::<u16>().map_err(|_| bad());
    let (low, high) = match ports.split_once('-') {
        Some((low, high)) => (parse(low)?, parse(high)?),
        None => {
            let port = parse(ports)?;
            (port, port)
        }
    };
    if high < low {
        return Err(bad());
    }
    Ok((low..=high).map(|port| format!("{port}/{proto}")).collect())
}

fn valid_signal(signal: &str) -> bool {
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(number) = signal.parse::<u32>() {
        return (1..=64).contains(&number);
    }
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR",
    ];
    NAMES.contains(&name)
        || name == "SYS"
        || name == "POLL"
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|rest| rest.is_empty() || rest.parse::<i32>().is_ok())
}

fn healthcheck_json(check: &Healthcheck) -> Value {
    let mut out = Map::new();
    out.insert("Test".into(), json!(check.test));
    let nanos = |d: Option<std::time::Duration>| d.map_or(0, |d| d.as_nanos() as u64);
    for (key, value) in [
        ("Interval", check.interval),
        ("Timeout", check.timeout),
        ("StartPeriod", check.start_period),
        ("StartInterval", check.start_interval),
    ] {
        if nanos(value) != 0 {
            out.insert(key.into(), json!(nanos(value)));
        }
    }
    if let Some(retries) = check.retries {
        out.insert("Retries".into(), json!(retries));
    }
    Value::Object(out)
}

/// Go's `%q` of Docker's `*HealthConfig`, as the legacy builder writes
/// a HEALTHCHECK step into the history.
fn healthcheck_comment(check: &Healthcheck) -> String {
    let d = |value: Option<std::time::Duration>| go_quote(&go_duration(value.unwrap_or_default()));
    let retries = check.retries.unwrap_or(0);
    let retries = match char::from_u32(retries) {
        Some(c) if (' '..='~').contains(&c) && c != '\'' && c != '\\' => format!("'{c}'"),
        _ => format!("'\\x{retries:02x}'"),
    };
    format!(
        "HEALTHCHECK &{{{} {} {} {} {retries}}}",
        go_quote_list(&check.test),
        d(check.interval),
        d(check.timeout),
        d(check.start_period),
    )
}

/// What a metadata step left: the `created_by` of its history entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub created_by: String,
}

/// Applies a metadata instruction (its variables expanded) to the image
/// config document. `cmd_set`: whether this stage gave a CMD already (an
/// ENTRYPOINT clears an inherited CMD, not one given in the stage).
pub fn apply_metadata(
    doc: &mut ImageDoc,
    instruction: &Instruction,
    cmd_set: bool,
) -> Result<Applied, ImageConfigError> {
    let shell = doc.shell();
    let comment = match instruction {
        Instruction::Env(pairs) => {
            let mut env = doc.list("Env");
            let mut comment = String::from("ENV");
            for (key, value) in pairs {
                let entry = format!("{key}={value}");
                comment.push(' ');
                comment.push_str(&entry);
                match env
                    .iter_mut()
                    .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
                {
                    Some(slot) => *slot = entry,
                    None => env.push(entry),
                }
            }
            doc.config.insert("Env".into(), json!(env));
            comment
        }
        Instruction::Label(pairs) => {
            let labels = doc.object("Labels");
            let mut comment = String::from("LABEL");
            for (key, value) in pairs {
                comment.push_str(&format!(" {key}={value}"));
                labels.insert(key.clone(), json!(value));
            }
            comment
        }
        Instruction::Maintainer(name) => {
            doc.top.insert("author".into(), json!(name));
            format!("MAINTAINER {name}")
        }
        Instruction::Expose(ports) => {
            let mut specs = Vec::new();
            for port in ports {
                specs.extend(port_specs(port)?);
            }
            let exposed = doc.object("ExposedPorts");
            for spec in specs {
                exposed.insert(spec, json!({}));
            }
            format!("EXPOSE {}", ports.join(" "))
        }
        Instruction::User(user) => {
            doc.config.insert("User".into(), json!(user));
            format!("USER {user}")
        }
        Instruction::Volume(volumes) => {
            if volumes.iter().any(|v| v.trim().is_empty()) {
                return Err(ImageConfigError::EmptyVolume);
            }
            let map = doc.object("Volumes");
            for volume in volumes {
                map.insert(volume.clone(), json!({}));
            }
            format!("VOLUME {}", go_list(volumes))
        }
        Instruction::StopSignal(signal) => {
            if !valid_signal(signal) {
                return Err(ImageConfigError::InvalidSignal(signal.clone()));
            }
            doc.config.insert("StopSignal".into(), json!(signal));
            format!("STOPSIGNAL {signal}")
        }
        Instruction::Cmd(command) => {
            let line = command_line(command, &shell);
            doc.config.insert("Cmd".into(), json!(line));
            format!("CMD {}", go_quote_list(&line))
        }
        Instruction::Entrypoint(command) => {
            let line = command_line(command, &shell);
            doc.config.insert("Entrypoint".into(), json!(line));
            if !cmd_set {
                doc.config.insert("Cmd".into(), Value::Null);
            }
            format!("ENTRYPOINT {}", go_quote_list(&line))
        }
        Instruction::Shell(list) => {
            doc.config.insert("Shell".into(), json!(list));
            format!("SHELL {}", go_list(list))
        }
        Instruction::Healthcheck(check) => {
            doc.config
                .insert("Healthcheck".into(), healthcheck_json(check));
            healthcheck_comment(check)
        }
        Instruction::Onbuild(trigger) => {
            let mut triggers = doc.list("OnBuild");
            triggers.push(trigger.clone());
            doc.config.insert("OnBuild".into(), json!(triggers));
            format!("ONBUILD {trigger}")
        }
        Instruction::Arg(args) => {
            let words: Vec<String> = args
                .iter()
                .map(|(name, value)| match value {
                    Some(value) => format!("{name}={value}"),
                    None => name.clone(),
                })
                .collect();
            format!("ARG {}", words.join(" "))
        }
        Instruction::From(_) => return Err(ImageConfigError::NotMetadata("FROM")),
        Instruction::Run(_) => return Err(ImageConfigError::NotMetadata("RUN")),
        Instruction::Copy(_) => return Err(ImageConfigError::NotMetadata("COPY")),
        Instruction::Add(_) => return Err(ImageConfigError::NotMetadata("ADD")),
        Instruction::Workdir(_) => return Err(ImageConfigError::NotMetadata("WORKDIR")),
    };
    // The shell of the history line is the one before the step (SHELL's
    // own line names the shell it replaced).
    Ok(Applied {
        created_by: nop_created_by(&shell, &comment),
    })
}

/// Docker's WORKDIR: relative to the current one, cleaned.
pub fn resolve_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{base}/{path}")
    };
    super::dockerignore::clean(&joined)
}

/// Adds a history entry (and, for a step with a layer, its diff id).
pub fn push_history(doc: &mut ImageDoc, created: &str, created_by: &str, diff_id: Option<&str>) {
    let mut entry = Map::new();
    entry.insert("created".into(), json!(created));
    if let Some(author) = doc.top.get("author").and_then(Value::as_str) {
        entry.insert("author".into(), json!(author));
    }
    entry.insert("created_by".into(), json!(created_by));
    if diff_id.is_none() {
        entry.insert("empty_layer".into(), json!(true));
    }
    let history = doc.top.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    if let Value::Array(list) = history {
        list.push(Value::Object(entry));
    }
    if let Some(diff_id) = diff_id {
        let rootfs = doc
            .top
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        if !rootfs["diff_ids"].is_array() {
            *rootfs = json!({"type": "layers", "diff_ids": []});
        }
        if let Some(ids) = rootfs["diff_ids"].as_array_mut() {
            ids.push(json!(diff_id));
        }
    }
    doc.top.insert("created".into(), json!(created));
}

/// The key a step is cached under: its parent image and what the step
/// does: the run config it would commit (the history line in its `Cmd`,
/// which holds the instruction with its variables' values and, for COPY
/// and ADD, the hash of the sources), as Docker's legacy cache compares.
pub fn cache_key(parent: &str, run_config: &Value, created_by: &str) -> String {
    let canonical = serde_json::to_string(&json!({
        "parent": parent,
        "config": run_config,
        "step": created_by,
    }))
    .unwrap_or_default();
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
