//! The instructions of a Dockerfile, typed: each [`Node`] of the parser
//! becomes an [`Instruction`] with its flags checked and its arguments
//! split as Docker splits them (the JSON or shell form, `name=value` pairs,
//! whitespace-separated lists, whole strings). Variables are not expanded
//! here: the builder does that step by step, with the values the variables
//! have at that step ([`Instruction::expand`]).

use std::time::Duration;

use super::parser::{self, Heredoc, Node};
use super::shell::{self, Lookup, ShellError};
use super::ParseError;
use crate::types::duration::parse_go_duration;

/// An instruction with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// The instruction as written (continuations joined), as `Step N/M`
    /// prints it.
    pub original: String,
    pub instruction: Instruction,
}

/// A command in its shell form (run through the image's SHELL) or its exec
/// (JSON) form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    /// Names with their defaults, if any.
    Arg(Vec<(String, Option<String>)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Maintainer(String),
    Healthcheck(Healthcheck),
    /// The trigger as written, without `ONBUILD`.
    Onbuild(String),
    Copy(Copy),
    Add(Copy),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct From {
    pub image: String,
    /// The stage's name (`AS name`), lowercased.
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub command: Command,
    pub network: Option<String>,
    pub mounts: Vec<String>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
    /// `--from`: a stage's name or index, or an image.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// ADD's `--checksum=sha256:<hex>` of a URL source.
    pub checksum: Option<String>,
    /// The here-documents among the sources (COPY <<EOF /dst).
    pub heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK: `test` as the image config stores it (`["NONE"]`,
/// `["CMD", ...]` or `["CMD-SHELL", "..."]`); durations and retries unset
/// are inherited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// The flags an instruction accepts.
struct Flags {
    values: Vec<(String, Option<String>)>,
}

enum FlagKind {
    Text,
    Bool,
    Repeated,
}

impl Flags {
    fn parse(raw: &[String], allowed: &[(&str, FlagKind)]) -> Result<Flags, String> {
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        for flag in raw {
            let Some(body) = flag.strip_prefix("--") else {
                return Err(format!("Arg should start with -- : {flag}"));
            };
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (body, None),
            };
            let Some((_, kind)) = allowed.iter().find(|(known, _)| *known == name) else {
                return Err(format!("Unknown flag: {name}"));
            };
            match kind {
                FlagKind::Text | FlagKind::Repeated if value.is_none() => {
                    return Err(format!("Missing a value on flag: {name}"));
                }
                FlagKind::Bool => {
                    if let Some(value) = &value {
                        if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") {
                            return Err(format!(
                                "Expecting boolean value for flag {name}, not: {value}"
                            ));
                        }
                    }
                }
                _ => {}
            }
            let repeated = matches!(kind, FlagKind::Repeated);
            if !repeated && values.iter().any(|(seen, _)| seen == name) {
                return Err(format!("Duplicate flag specified: {name}"));
            }
            values.push((name.to_string(), value));
        }
        Ok(Flags { values })
    }

    fn text(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(flag, _)| flag == name)
            .and_then(|(_, value)| value.clone())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(flag, _)| flag == name)
            .filter_map(|(_, value)| value.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> bool {
        self.values.iter().any(|(flag, value)| {
            flag == name
                && value
                    .as_deref()
                    .is_none_or(|v| v.eq_ignore_ascii_case("true"))
        })
    }
}

/// Types one parsed instruction.
pub fn parse_step(node: &Node, escape: char) -> Result<Step, ParseError> {
    let instruction =
        parse_instruction(node, escape).map_err(|message| ParseError::at(node.line, message))?;
    Ok(Step {
        line: node.line,
        original: node.original.clone(),
        instruction,
    })
}

fn no_flags(node: &Node) -> Result<(), String> {
    Flags::parse(&node.flags, &[]).map(|_| ())
}

fn parse_instruction(node: &Node, escape: char) -> Result<Instruction, String> {
    let rest = node.rest.as_str();
    let upper = node.keyword.to_ascii_uppercase();
    Ok(match node.keyword.as_str() {
        "from" => {
            let flags = Flags::parse(&node.flags, &[("platform", FlagKind::Text)])?;
            let args: Vec<&str> = rest.split_whitespace().collect();
            let name = match args.as_slice() {
                [_] => None,
                [_, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
                    let lower = name.to_ascii_lowercase();
                    if !valid_stage_name(&lower) {
                        return Err(format!(
                            "invalid name for build stage: \"{name}\", name can't start with a number or contain symbols"
                        ));
                    }
                    Some(lower)
                }
                _ => return Err("FROM requires either one or three arguments".to_string()),
            };
            Instruction::From(From {
                image: args[0].to_string(),
                name,
                platform: flags.text("platform"),
            })
        }
        "run" => {
            let flags = Flags::parse(
                &node.flags,
                &[("network", FlagKind::Text), ("mount", FlagKind::Repeated)],
            )?;
            let command = command(rest)?.ok_or_else(|| at_least_one("RUN"))?;
            Instruction::Run(Run {
                command,
                network: flags.text("network"),
                mounts: flags.all("mount"),
                heredocs: node.heredocs.clone(),
            })
        }
        "cmd" => {
            no_flags(node)?;
            // An empty CMD is allowed: it clears the command.
            Instruction::Cmd(command(rest)?.unwrap_or(Command::Exec(Vec::new())))
        }
        "entrypoint" => {
            no_flags(node)?;
            Instruction::Entrypoint(command(rest)?.unwrap_or(Command::Exec(Vec::new())))
        }
        "shell" => {
            no_flags(node)?;
            match parser::parse_json_array(rest)? {
                Some(list) if list.is_empty() => return Err(at_least_one("SHELL")),
                Some(list) => Instruction::Shell(list),
                None if rest.trim().is_empty() => return Err(at_least_one("SHELL")),
                None => return Err("SHELL requires the arguments to be in JSON form".to_string()),
            }
        }
        "env" => {
            no_flags(node)?;
            Instruction::Env(name_values(rest, "ENV", escape)?)
        }
        "label" => {
            no_flags(node)?;
            Instruction::Label(name_values(rest, "LABEL", escape)?)
        }
        "arg" => {
            no_flags(node)?;
            let words = parser::parse_words(rest, escape);
            if words.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut args = Vec::new();
            for word in words {
                let (name, value) = match word.split_once('=') {
                    Some((name, value)) => (name.to_string(), Some(value.to_string())),
                    None => (word, None),
                };
                if name.is_empty() {
                    return Err("ARG names can not be blank".to_string());
                }
                args.push((name, value));
            }
            Instruction::Arg(args)
        }
        "expose" => {
            no_flags(node)?;
            let ports: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if ports.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            Instruction::Expose(ports)
        }
        "volume" => {
            no_flags(node)?;
            let list = list(rest)?;
            if list.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            if list.iter().any(|v| v.trim().is_empty()) {
                return Err("VOLUME specified can not be an empty string".to_string());
            }
            Instruction::Volume(list)
        }
        "user" | "workdir" | "stopsignal" | "maintainer" => {
            no_flags(node)?;
            let value = rest.trim();
            if value.is_empty() {
                return Err(format!("{upper} requires exactly one argument"));
            }
            let value = value.to_string();
            match node.keyword.as_str() {
                "user" => Instruction::User(value),
                "workdir" => Instruction::Workdir(value),
                "stopsignal" => Instruction::StopSignal(value),
                _ => Instruction::Maintainer(value),
            }
        }
        "healthcheck" => Instruction::Healthcheck(healthcheck(node)?),
        "onbuild" => {
            no_flags(node)?;
            let trigger = rest.trim();
            let keyword = trigger
                .split_whitespace()
                .next()
                .ok_or_else(|| at_least_one("ONBUILD"))?
                .to_ascii_uppercase();
            match keyword.as_str() {
                "ONBUILD" => {
                    return Err("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".to_string())
                }
                "FROM" | "MAINTAINER" => {
                    return Err(format!("{keyword} isn't allowed as an ONBUILD trigger"))
                }
                _ => {}
            }
            Instruction::Onbuild(trigger.to_string())
        }
        "copy" | "add" => {
            let allowed: &[(&str, FlagKind)] = if node.keyword == "copy" {
                &[
                    ("from", FlagKind::Text),
                    ("chown", FlagKind::Text),
                    ("chmod", FlagKind::Text),
                    ("link", FlagKind::Bool),
                ]
            } else {
                &[
                    ("chown", FlagKind::Text),
                    ("chmod", FlagKind::Text),
                    ("link", FlagKind::Bool),
                    ("checksum", FlagKind::Text),
                ]
            };
            let flags = Flags::parse(&node.flags, allowed)?;
            let mut args = list(rest)?;
            if args.len() < 2 {
                return Err(format!("{upper} requires at least two arguments"));
            }
            let dest = args.pop().unwrap_or_default();
            let copy = Copy {
                sources: args,
                dest,
                from: flags.text("from"),
                chown: flags.text("chown"),
                chmod: flags.text("chmod"),
                link: flags.bool("link"),
                checksum: flags.text("checksum"),
                heredocs: node.heredocs.clone(),
            };
            if node.keyword == "copy" {
                Instruction::Copy(copy)
            } else {
                Instruction::Add(copy)
            }
        }
        _ => {
            return Err(format!(
                "unknown instruction: {}",
                node.keyword_as_written.to_ascii_uppercase()
            ))
        }
    })
}

fn at_least_one(name: &str) -> String {
    format!("{name} requires at least one argument")
}

/// A stage name: a lowercase letter, then letters, digits, `-`, `_` or `.`.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The exec form if the text is a JSON array of strings, else the shell form.
fn command(rest: &str) -> Result<Option<Command>, String> {
    if rest.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(match parser::parse_json_array(rest)? {
        Some(list) => Command::Exec(list),
        None => Command::Shell(rest.to_string()),
    }))
}

/// A JSON array, or whitespace-separated words.
fn list(rest: &str) -> Result<Vec<String>, String> {
    Ok(match parser::parse_json_array(rest)? {
        Some(list) => list,
        None => rest.split_whitespace().map(str::to_string).collect(),
    })
}

/// ENV and LABEL: `name=value ...`, or the old form `name value...`.
fn name_values(rest: &str, what: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = parser::parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Err(at_least_one(what));
    };
    if !first.contains('=') {
        let trimmed = rest.trim();
        let Some(at) = trimmed.find(|c: char| c.is_whitespace()) else {
            return Err(format!("{what} must have two arguments"));
        };
        let value = trimmed[at..].trim_start().to_string();
        return Ok(vec![(trimmed[..at].to_string(), value)]);
    }
    let mut pairs = Vec::new();
    for word in &words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in \"{word}\". Must be of the form: name=value"
            ));
        };
        if name.is_empty() {
            return Err(format!("{what} names can not be blank"));
        }
        pairs.push((name.to_string(), value.to_string()));
    }
    Ok(pairs)
}

fn healthcheck(node: &Node) -> Result<Healthcheck, String> {
    let flags = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagKind::Text),
            ("timeout", FlagKind::Text),
            ("start-period", FlagKind::Text),
            ("start-interval", FlagKind::Text),
            ("retries", FlagKind::Text),
        ],
    )?;
    let rest = node.rest.trim();
    let (kind, after) = match rest.find(|c: char| c.is_whitespace()) {
        Some(at) => (&rest[..at], rest[at..].trim_start()),
        None => (rest, ""),
    };
    let test = match kind.to_ascii_uppercase().as_str() {
        "" => return Err(at_least_one("HEALTHCHECK")),
        "NONE" => {
            if !after.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".to_string());
            }
            vec!["NONE".to_string()]
        }
        "CMD" => match command(after)? {
            None => return Err("Missing command after HEALTHCHECK CMD".to_string()),
            Some(Command::Exec(list)) if list.is_empty() => {
                return Err("Missing command after HEALTHCHECK CMD".to_string())
            }
            Some(Command::Exec(list)) => [vec!["CMD".to_string()], list].concat(),
            Some(Command::Shell(text)) => vec!["CMD-SHELL".to_string(), text],
        },
        _ => return Err(format!("Unknown type \"{kind}\" in HEALTHCHECK (try CMD)")),
    };
    let duration = |name: &str| -> Result<Option<Duration>, String> {
        let Some(text) = flags.text(name) else {
            return Ok(None);
        };
        let nanos =
            parse_go_duration(&text).ok_or_else(|| format!("time: invalid duration \"{text}\""))?;
        let value = u64::try_from(nanos)
            .map(Duration::from_nanos)
            .map_err(|_| format!("Interval \"{name}\" cannot be negative"))?;
        if !value.is_zero() && value < Duration::from_millis(1) {
            return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
        }
        Ok(Some(value))
    };
    let retries = match flags.text("retries") {
        None => None,
        Some(text) => {
            let value: i64 = text
                .parse()
                .map_err(|_| format!("strconv.ParseInt: parsing \"{text}\": invalid syntax"))?;
            if value < 1 {
                return Err(format!("--retries must be at least 1 (not {value})"));
            }
            Some(u32::try_from(value).map_err(|_| format!("--retries {value} is too large"))?)
        }
    };
    Ok(Healthcheck {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    })
}

impl Instruction {
    /// The instruction with its variables expanded, for the instructions
    /// Docker expands (ADD, COPY, ENV, EXPOSE, LABEL, STOPSIGNAL, USER,
    /// VOLUME, WORKDIR, ARG's defaults, and FROM with the build's global
    /// arguments); RUN, CMD, ENTRYPOINT, SHELL and HEALTHCHECK are left to
    /// the shell.
    pub fn expand(&self, env: &dyn Lookup, escape: char) -> Result<Instruction, ShellError> {
        let word = |text: &str| shell::expand_word(text, env, escape);
        let words = |list: &[String]| list.iter().map(|w| word(w)).collect::<Result<Vec<_>, _>>();
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .map(|(k, v)| Ok((word(k)?, word(v)?)))
                .collect::<Result<Vec<_>, ShellError>>()
        };
        let optional = |value: &Option<String>| value.as_deref().map(word).transpose();
        Ok(match self {
            Instruction::From(from) => Instruction::From(From {
                image: word(&from.image)?,
                name: from.name.clone(),
                platform: optional(&from.platform)?,
            }),
            Instruction::Env(list) => Instruction::Env(pairs(list)?),
            Instruction::Label(list) => Instruction::Label(pairs(list)?),
            Instruction::Arg(list) => Instruction::Arg(
                list.iter()
                    .map(|(k, v)| Ok((word(k)?, optional(v)?)))
                    .collect::<Result<Vec<_>, ShellError>>()?,
            ),
            Instruction::Expose(list) => Instruction::Expose(words(list)?),
            Instruction::Volume(list) => Instruction::Volume(words(list)?),
            Instruction::User(value) => Instruction::User(word(value)?),
            Instruction::Workdir(value) => Instruction::Workdir(word(value)?),
            Instruction::StopSignal(value) => Instruction::StopSignal(word(value)?),
            Instruction::Copy(copy) => Instruction::Copy(expand_copy(copy, &word)?),
            Instruction::Add(copy) => Instruction::Add(expand_copy(copy, &word)?),
            other => other.clone(),
        })
    }
}

fn expand_copy(
    copy: &Copy,
    word: &dyn Fn(&str) -> Result<String, ShellError>,
) -> Result<Copy, ShellError> {
    let optional = |value: &Option<String>| value.as_deref().map(word).transpose();
    Ok(Copy {
        // A heredoc's opener is its name, not a path: it is not expanded.
        sources: copy
            .sources
            .iter()
            .map(|source| {
                if parser::parse_heredoc(source).is_some() {
                    Ok(source.clone())
                } else {
                    word(source)
                }
            })
            .collect::<Result<_, _>>()?,
        dest: word(&copy.dest)?,
        from: optional(&copy.from)?,
        chown: optional(&copy.chown)?,
        chmod: optional(&copy.chmod)?,
        link: copy.link,
        checksum: optional(&copy.checksum)?,
        heredocs: copy.heredocs.clone(),
    })
}
