//! `--format`: Go templates (the `gtmpl` crate) with the docker CLI's
//! functions (`json`, `split`, `join`, `title`, `lower`, `upper`, `pad`,
//! `truncate`), the `table` prefix, and what gtmpl does otherwise than Go
//! put right by rewriting the template before parsing it: values printed
//! as Go prints them (`[a b]`, `map[k:v]`, `<nil>`; every printing action
//! goes through `gofmt`), `range` over a map in key order, and `json`
//! keeping the daemon's key order, and the `{{- -}}` trim markers.

use std::cell::RefCell;
use std::collections::HashMap;

use gtmpl::{Context, Func, FuncError, Template, Value};

use super::table;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template parsing error: {0}")]
    Parse(String),
    #[error("template: {0}")]
    Execute(String),
}

/// A `--format` value, parsed once and run per row.
pub struct Format {
    template: Template,
    /// `table ...`: a header row, then the rows aligned as columns.
    table: bool,
}

/// What `--format` asks for, before its template is known.
pub enum FormatKind<'a> {
    /// No format, or "table": the command's default table.
    DefaultTable,
    /// "json": one JSON object per line (docker 24+).
    Json,
    /// A template, with or without the `table` prefix.
    Template(&'a str),
}

/// Reads `--format` as docker does.
pub fn kind(format: Option<&str>) -> FormatKind<'_> {
    match format.map(str::trim) {
        None | Some("") | Some("table") => FormatKind::DefaultTable,
        Some("json") => FormatKind::Json,
        Some(other) => FormatKind::Template(other),
    }
}

impl Format {
    /// Parses a template, `table ` prefix and `\t`/`\n` escapes included.
    pub fn parse(text: &str) -> Result<Format, TemplateError> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest),
            _ => (false, text),
        };
        let body = if table { body.trim_matches(' ') } else { body };
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        Ok(Format {
            template: compile(&body)?,
            table,
        })
    }

    /// Renders one value (a JSON document), no newline added.
    pub fn render(&self, value: &serde_json::Value) -> Result<String, TemplateError> {
        self.render_value(to_gtmpl(value))
    }

    fn render_value(&self, value: Value) -> Result<String, TemplateError> {
        self.template
            .render(&Context::from(value))
            .map_err(|e| TemplateError::Execute(e.to_string()))
    }

    /// Renders every row, each followed by a newline; a table gets the
    /// header row (each field's name from `headers`, "" for others) and
    /// docker's column alignment.
    pub fn render_rows(
        &self,
        rows: &[serde_json::Value],
        headers: &[(&str, &str)],
    ) -> Result<String, TemplateError> {
        let mut out = self.render_unaligned(rows, headers)?;
        if self.table {
            out = table::docker_align(&out);
        }
        Ok(out)
    }

    /// [`Format::render_rows`] before the columns are aligned: cells still
    /// end at tabs.
    pub fn render_unaligned(
        &self,
        rows: &[serde_json::Value],
        headers: &[(&str, &str)],
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        if self.table {
            let header: HashMap<String, Value> = headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
                .collect();
            out.push_str(&self.render_value(Value::Map(header))?);
            out.push('\n');
        }
        for row in rows {
            out.push_str(&self.render(row)?);
            out.push('\n');
        }
        Ok(out)
    }
}

/// Parses `text` with docker's functions, every printing action passed
/// through `gofmt` so values print as Go's `fmt` prints them.
fn compile(text: &str) -> Result<Template, TemplateError> {
    let mut template = Template::default();
    let funcs: [(&str, Func); 12] = [
        ("sortedpairs", sortedpairs),
        ("sortedvalues", sortedvalues),
        ("json", json),
        ("split", split),
        ("join", join),
        ("title", title),
        ("lower", lower),
        ("upper", upper),
        ("pad", pad),
        ("truncate", truncate),
        ("gofmt", gofmt),
        ("println", println),
    ];
    template.add_funcs(&funcs);
    template
        .parse(wrap_printing_actions(text))
        .map_err(|e| TemplateError::Parse(e.to_string()))?;
    Ok(template)
}

/// Appends `| gofmt` to each action that prints its pipeline: every one but
/// control actions (`if`, `range`, `end`, ...), comments and assignments.
fn wrap_printing_actions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(len) = action_len(after) else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &after[..len];
        // Trim markers, which gtmpl lacks, are applied here: `{{- ` eats
        // the space before the action, ` -}}` the space after it.
        let (lead, body, trail) = split_trim_markers(inner);
        if !lead.is_empty() {
            out.truncate(out.trim_end().len());
        }
        out.push_str("{{");
        match sorted_range(body) {
            Some((range, prelude)) => {
                out.push_str(&range);
                out.push_str("}}");
                out.push_str(&prelude);
            }
            None => {
                out.push_str(body);
                if prints(body) {
                    out.push_str(" | gofmt ");
                }
                out.push_str("}}");
            }
        }
        rest = &after[len + 2..];
        if !trail.is_empty() {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    out
}

/// `range` as Go runs it over a map, in sorted key order (gtmpl's maps
/// have none): `range $k, $v := X` walks `sortedpairs X` and sets `$k`
/// and `$v` first thing in the body; `range X` and `range $v := X` walk
/// `sortedvalues X`. The new action, and what starts its body.
fn sorted_range(body: &str) -> Option<(String, String)> {
    let t = body.trim();
    let rest = t.strip_prefix("range")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    if let Some((vars, pipe)) = rest.split_once(":=") {
        let vars: Vec<&str> = vars.split(',').map(str::trim).collect();
        let pipe = pipe.trim();
        return match vars.as_slice() {
            [k, v] => Some((
                format!("range $__i, $__p := sortedpairs ({pipe})"),
                format!("{{{{{k} := $__p.Key}}}}{{{{{v} := $__p.Value}}}}"),
            )),
            [v] => Some((format!("range {v} := sortedvalues ({pipe})"), String::new())),
            _ => None,
        };
    }
    Some((format!("range sortedvalues ({rest})"), String::new()))
}

/// The length of an action's text up to its closing `}}`, skipping quoted
/// strings.
fn action_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Go's trim markers: `-` then a space (tab, newline) after `{{`, and a
/// space then `-` before `}}`.
fn split_trim_markers(inner: &str) -> (&str, &str, &str) {
    let b = inner.as_bytes();
    let lead = if b.len() >= 2 && b[0] == b'-' && b[1].is_ascii_whitespace() {
        &inner[..2]
    } else {
        ""
    };
    let inner = &inner[lead.len()..];
    let b = inner.as_bytes();
    let n = b.len();
    let trail = if n >= 2 && b[n - 1] == b'-' && b[n - 2].is_ascii_whitespace() {
        &inner[n - 2..]
    } else {
        ""
    };
    (lead, &inner[..n - trail.len()], trail)
}

fn prints(body: &str) -> bool {
    let t = body.trim();
    if t.is_empty() || t.starts_with("/*") {
        return false;
    }
    let first = t.split_whitespace().next().unwrap_or("");
    const CONTROL: [&str; 11] = [
        "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
        "nil",
    ];
    if CONTROL.contains(&first) {
        return false;
    }
    // `$x := ...` and `$x = ...` print nothing.
    let words: Vec<&str> = t.split_whitespace().take(3).collect();
    !(first.starts_with('$') && matches!(words.get(1), Some(&":=") | Some(&"=")))
}

/// A JSON document as a template value; objects become maps (a missing
/// key is `<no value>`, as for Go's `map[string]interface{}`).
pub fn to_gtmpl(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| {
                    let v = if v.is_null() {
                        typed_null(k)
                    } else {
                        to_gtmpl(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
    }
}

/// What a `null` field is in Docker's Go types, which the docker CLI's
/// templates print: most are slices ("[]"), some maps ("map[]"), some
/// pointers ("<nil>").
fn typed_null(key: &str) -> Value {
    const MAPS: [&str; 10] = [
        "Labels",
        "Volumes",
        "ExposedPorts",
        "Tmpfs",
        "StorageOpt",
        "Sysctls",
        "Config",
        "Options",
        "DriverOpts",
        "Annotations",
    ];
    const POINTERS: [&str; 12] = [
        "Health",
        "OomKillDisable",
        "PidsLimit",
        "MemorySwappiness",
        "Healthcheck",
        "Init",
        "IPAMConfig",
        "Platform",
        "NetworkingConfig",
        "StopTimeout",
        "Error",
        "ArgsEscaped",
    ];
    if MAPS.contains(&key) {
        Value::Map(HashMap::new())
    } else if POINTERS.contains(&key) {
        Value::Nil
    } else {
        Value::Array(Vec::new())
    }
}

/// A template value as JSON (maps with sorted keys, as Go's encoder).
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                u.into()
            } else if let Some(i) = n.as_i64() {
                i.into()
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
                    .map_or(serde_json::Value::Null, serde_json::Value::Number)
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(m) | Value::Map(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// A value as Go's `fmt.Print` shows it.
pub fn go_print(value: &Value) -> String {
    match value {
        Value::NoValue => "<no value>".into(),
        Value::Nil => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(i)) => i.to_string(),
            _ => super::units::go_g(n.as_f64().unwrap_or(0.0), 17)
                .trim_end_matches(".0")
                .to_string(),
        },
        Value::Function(_) => "<func>".into(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(go_print).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(m) | Value::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&m[*k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
    }
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::Generic(format!("{name}: missing argument")))
}

fn string_arg(args: &[Value], i: usize, name: &str) -> Result<String, FuncError> {
    match arg(args, i, name)? {
        Value::String(s) => Ok(s.clone()),
        other => Ok(go_print(other)),
    }
}

fn int_arg(args: &[Value], i: usize, name: &str) -> Result<usize, FuncError> {
    match arg(args, i, name)? {
        Value::Number(n) => Ok(n.as_u64().unwrap_or(0) as usize),
        Value::String(s) => s
            .parse()
            .map_err(|_| FuncError::Generic(format!("{name}: {s:?} is not a number"))),
        _ => Err(FuncError::Generic(format!("{name}: expected a number"))),
    }
}

fn sorted_entries(value: &Value) -> Option<Vec<(String, Value)>> {
    match value {
        Value::Map(m) | Value::Object(m) => {
            let mut entries: Vec<(String, Value)> =
                m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Some(entries)
        }
        _ => None,
    }
}

/// A map as a list of `{Key, Value}` in key order; a list as index pairs.
fn sortedpairs(args: &[Value]) -> Result<Value, FuncError> {
    let value = arg(args, 0, "range")?;
    let pair = |k: Value, v: Value| {
        Value::Map(HashMap::from([
            ("Key".to_string(), k),
            ("Value".to_string(), v),
        ]))
    };
    Ok(match (sorted_entries(value), value) {
        (Some(entries), _) => Value::Array(
            entries
                .into_iter()
                .map(|(k, v)| pair(Value::String(k), v))
                .collect(),
        ),
        (None, Value::Array(items)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| pair(Value::from(i as u64), v.clone()))
                .collect(),
        ),
        (None, other) => other.clone(),
    })
}

/// A map's values in key order; anything else as it is.
fn sortedvalues(args: &[Value]) -> Result<Value, FuncError> {
    let value = arg(args, 0, "range")?;
    Ok(match sorted_entries(value) {
        Some(entries) => Value::Array(entries.into_iter().map(|(_, v)| v).collect()),
        None => value.clone(),
    })
}

fn gofmt(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(go_print(arg(args, 0, "gofmt")?)))
}

thread_local! {
    /// Objects of the documents being rendered, by their sorted-key JSON:
    /// their text as the daemon wrote it, keys in its order.
    static KEY_ORDER: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
}

/// Remembers the key order of every object in `raw`, a daemon's JSON
/// document, so `json` writes them in that order, as docker's typed
/// structs do, rather than sorted.
pub fn remember_key_order(raw: &str) {
    KEY_ORDER.with(|m| {
        let mut m = m.borrow_mut();
        for span in object_spans(raw) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(span) {
                m.insert(to_json(&to_gtmpl(&v)).to_string(), compact(span));
            }
        }
    });
}

/// Every `{...}` in JSON text, inner ones too.
fn object_spans(raw: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut starts = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in raw.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => starts.push(i),
            b'}' => {
                if let Some(start) = starts.pop() {
                    spans.push(&raw[start..=i]);
                }
            }
            _ => {}
        }
    }
    spans
}

/// JSON text without the whitespace between tokens.
fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_whitespace() {
            out.push(c);
            in_string = c == '"';
        }
    }
    out
}

fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Map(_) | Value::Object(_) => {
            let sorted = to_json(value).to_string();
            match KEY_ORDER.with(|m| m.borrow().get(&sorted).cloned()) {
                Some(raw) => out.push_str(&raw),
                None => out.push_str(&sorted),
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&to_json(other).to_string()),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let mut out = String::new();
    write_json(arg(args, 0, "json")?, &mut out);
    Ok(Value::String(out))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg(args, 0, "split")?;
    let sep = string_arg(args, 1, "split")?;
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| Value::String(c.to_string())).collect()
    } else {
        s.split(sep.as_str())
            .map(|p| Value::String(p.into()))
            .collect()
    };
    Ok(Value::Array(parts))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let sep = string_arg(args, 1, "join")?;
    match arg(args, 0, "join")? {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_print).collect();
            Ok(Value::String(items.join(&sep)))
        }
        Value::Nil => Ok(Value::String(String::new())),
        _ => Err(FuncError::Generic("join: expected a list".into())),
    }
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg(args, 0, "title")?;
    let mut out = String::with_capacity(s.len());
    let mut boundary = true;
    for c in s.chars() {
        if boundary {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        boundary = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    Ok(Value::String(out))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string_arg(args, 0, "lower")?.to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(string_arg(args, 0, "upper")?.to_uppercase()))
}

fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg(args, 0, "pad")?;
    let prefix = int_arg(args, 1, "pad")?;
    let suffix = int_arg(args, 2, "pad")?;
    Ok(Value::String(format!(
        "{}{s}{}",
        " ".repeat(prefix),
        " ".repeat(suffix)
    )))
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = string_arg(args, 0, "truncate")?;
    let len = int_arg(args, 1, "truncate")?;
    Ok(Value::String(s.chars().take(len).collect()))
}

/// Go's `println`: operands separated by spaces, then a newline.
fn println(args: &[Value]) -> Result<Value, FuncError> {
    let items: Vec<String> = args.iter().map(go_print).collect();
    Ok(Value::String(format!("{}\n", items.join(" "))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(format: &str, value: serde_json::Value) -> String {
        Format::parse(format).unwrap().render(&value).unwrap()
    }

    #[test]
    fn fields_and_nested_fields() {
        let v = json!({"State": {"Status": "running", "Pid": 42, "Running": true}});
        assert_eq!(render("{{.State.Status}}", v.clone()), "running");
        assert_eq!(
            render("{{.State.Pid}} {{.State.Running}}", v.clone()),
            "42 true"
        );
        assert_eq!(render("{{.Missing}}", v), "<no value>");
    }

    #[test]
    fn values_print_as_go_prints_them() {
        let v = json!({"Cmd": ["echo", "hi"], "Labels": {"b": "2", "a": "1"}, "E": null});
        assert_eq!(render("{{.Cmd}}", v.clone()), "[echo hi]");
        assert_eq!(render("{{.Labels}}", v.clone()), "map[a:1 b:2]");
        assert_eq!(render("{{.E}}", v), "[]");
        let v = json!({"Labels": null, "Health": null});
        assert_eq!(render("{{.Labels}} {{.Health}}", v), "map[] <nil>");
    }

    #[test]
    fn docker_functions() {
        let v = json!({"Name": "/web", "Cmd": ["a", "b"], "Labels": {"z": "1", "a": "x"}});
        assert_eq!(
            render("{{json .Labels}}", v.clone()),
            r#"{"a":"x","z":"1"}"#
        );
        assert_eq!(render("{{join .Cmd \",\"}}", v.clone()), "a,b");
        assert_eq!(render("{{upper .Name}}", v.clone()), "/WEB");
        assert_eq!(
            render("{{title \"hello world\"}}", v.clone()),
            "Hello World"
        );
        assert_eq!(render("{{truncate .Name 2}}", v.clone()), "/w");
        assert_eq!(render("{{pad .Name 1 2}}", v.clone()), " /web  ");
        assert_eq!(render("{{index (split \"a:b\" \":\") 1}}", v.clone()), "b");
        assert_eq!(render("{{index .Labels \"a\"}}", v), "x");
    }

    #[test]
    fn json_keeps_the_daemons_key_order() {
        let raw = r#"{"Id":"x","State":{"Status":"running","Running":true,"Pid":1},"Labels":{"b":"1","a":"2"},"Z":null}"#;
        remember_key_order(raw);
        let v: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(
            render("{{json .State}}", v.clone()),
            r#"{"Status":"running","Running":true,"Pid":1}"#
        );
        assert_eq!(render("{{json .}}", v.clone()), raw);
        // As the daemon wrote it (Go sorts its maps' keys itself).
        assert_eq!(render("{{json .Labels}}", v), r#"{"b":"1","a":"2"}"#);
        assert_eq!(compact("{ \"a b\" : [1, 2] }"), "{\"a b\":[1,2]}");
    }

    #[test]
    fn range_over_a_map_goes_in_key_order_as_in_go() {
        let v = json!({"L": {"c": "3", "a": "1", "b": "2", "d": "4", "e": "5"}, "A": ["x", "y"]});
        assert_eq!(
            render("{{range $k, $v := .L}}{{$k}}={{$v}};{{end}}", v.clone()),
            "a=1;b=2;c=3;d=4;e=5;"
        );
        assert_eq!(render("{{range .L}}{{.}}{{end}}", v.clone()), "12345");
        assert_eq!(
            render("{{range $v := .L}}{{$v}}{{end}}", v.clone()),
            "12345"
        );
        assert_eq!(
            render("{{range $i, $e := .A}}{{$i}}{{$e}} {{end}}", v.clone()),
            "0x 1y "
        );
        assert_eq!(render("{{range .A}}{{.}}{{end}}", v), "xy");
    }

    #[test]
    fn control_actions_are_left_alone() {
        let v = json!({"Env": ["A=1", "B=2"], "On": true});
        assert_eq!(render("{{range .Env}}{{.}};{{end}}", v.clone()), "A=1;B=2;");
        assert_eq!(render("{{if .On}}yes{{else}}no{{end}}", v.clone()), "yes");
        assert_eq!(render("{{$x := .On}}{{$x}}", v.clone()), "true");
        assert_eq!(render("{{.On}}", v.clone()), "true");
        assert_eq!(render("a  {{- .On -}}\n b", v.clone()), "atrueb");
        assert_eq!(render("{{range .Env -}}\n  {{.}}\n{{- end}}", v), "A=1B=2");
    }

    #[test]
    fn table_format_has_a_header_and_aligned_columns() {
        let f = Format::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        let rows = [
            json!({"ID": "abc", "Names": "x"}),
            json!({"ID": "d", "Names": "yy"}),
        ];
        let out = f
            .render_rows(&rows, &[("ID", "CONTAINER ID"), ("Names", "NAMES")])
            .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES\nabc            x\nd              yy\n"
        );
        let f = Format::parse("{{.ID}}").unwrap();
        assert_eq!(f.render_rows(&rows, &[]).unwrap(), "abc\nd\n");
    }

    #[test]
    fn bad_templates_fail_to_parse() {
        assert!(Format::parse("{{.ID").is_err());
        assert!(matches!(kind(Some("table")), FormatKind::DefaultTable));
        assert!(matches!(kind(Some("json")), FormatKind::Json));
    }
}
