//! The Dockerfile language, parsed as Docker parses it (no crate covers
//! the whole reference: heredocs, the escape directive, Docker's words and
//! messages, so this one is ours).
//!
//! - [`parser`]: text to [`parser::Node`]s: directives, comments,
//!   continuations, flags, heredocs.
//! - [`instructions`]: nodes to typed [`instructions::Instruction`]s.
//! - [`shell`]: variable substitution, as each step's expansion needs it.
//! - This module: the [`Dockerfile`] as its build stages, the global
//!   arguments declared before the first FROM, the stages a target needs.
//!
//! Errors name the line as Docker does:
//! `Dockerfile parse error line 3: unknown instruction: FOO`.

use std::collections::BTreeMap;

pub mod instructions;
pub mod parser;
pub mod shell;

use instructions::{Instruction, Step};
pub use parser::Directives;

/// The build arguments every Dockerfile may use without declaring them;
/// they are left out of the image's history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("Dockerfile parse error line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("the Dockerfile cannot be empty")]
    Empty,
    #[error("the Dockerfile is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    #[error("failed to reach build target {0} in Dockerfile")]
    NoTarget(String),
    #[error("Dockerfile parse error line {line}: {source}")]
    Expand {
        line: usize,
        source: shell::ShellError,
    },
}

impl ParseError {
    pub fn at(line: usize, message: String) -> ParseError {
        ParseError::Line { line, message }
    }
}

/// A parsed Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Directives,
    /// The ARG instructions before the first FROM: usable in FROM lines,
    /// and as defaults of a stage's ARG that names one of them.
    pub global_args: Vec<Step>,
    pub stages: Vec<Stage>,
}

/// A build stage: a FROM and the instructions up to the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The FROM line: where it is and how it is written.
    pub line: usize,
    pub original: String,
    /// Its fields; the stage's name (`FROM x AS name`) is `base.name`.
    pub base: instructions::From,
    pub steps: Vec<Step>,
}

impl Stage {
    pub fn name(&self) -> Option<&str> {
        self.base.name.as_deref()
    }
}

/// Parses a Dockerfile into its stages.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (directives, nodes) = parser::parse_nodes(text)?;
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &nodes {
        let step = instructions::parse_step(node, directives.escape)?;
        match (&step.instruction, stages.last_mut()) {
            (Instruction::From(from), _) => {
                if let Some(name) = &from.name {
                    if stages
                        .iter()
                        .any(|stage| stage.name() == Some(name.as_str()))
                    {
                        return Err(ParseError::at(
                            step.line,
                            format!("duplicate stage name \"{name}\""),
                        ));
                    }
                }
                stages.push(Stage {
                    line: step.line,
                    original: step.original.clone(),
                    base: from.clone(),
                    steps: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.steps.push(step),
            (Instruction::Arg(_), None) => global_args.push(step),
            (_, None) => {
                return Err(ParseError::at(
                    step.line,
                    "no build stage in current context".to_string(),
                ))
            }
        }
    }
    if stages.is_empty() {
        if nodes.is_empty() {
            return Err(ParseError::Empty);
        }
        let line = global_args.last().map_or(1, |step| step.line);
        return Err(ParseError::at(
            line,
            "no build stage in current context".to_string(),
        ));
    }
    Ok(Dockerfile {
        directives,
        global_args,
        stages,
    })
}

impl Dockerfile {
    /// The global arguments' values: each declared default (expanded with
    /// the arguments before it), replaced by a build argument of that name.
    pub fn global_arg_values(
        &self,
        build_args: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, ParseError> {
        let mut values: Vec<(String, String)> = Vec::new();
        for step in &self.global_args {
            let expanded = step
                .instruction
                .expand(&values, self.directives.escape)
                .map_err(|source| ParseError::Expand {
                    line: step.line,
                    source,
                })?;
            if let Instruction::Arg(args) = expanded {
                for (name, default) in args {
                    if let Some(value) = build_args.get(&name).cloned().or(default) {
                        values.push((name, value));
                    }
                }
            }
        }
        Ok(values)
    }

    /// The index of the stage a build ends with: `target`'s, or the last.
    pub fn target_index(&self, target: Option<&str>) -> Result<usize, ParseError> {
        match target.filter(|target| !target.is_empty()) {
            None => Ok(self.stages.len() - 1),
            Some(target) => {
                let lower = target.to_ascii_lowercase();
                self.stages
                    .iter()
                    .position(|stage| stage.name() == Some(lower.as_str()))
                    .ok_or_else(|| ParseError::NoTarget(target.to_string()))
            }
        }
    }

    /// The stage a `FROM` or `--from` value names among those before
    /// `before`: by name or by index.
    pub fn stage_named(&self, reference: &str, before: usize) -> Option<usize> {
        let lower = reference.to_ascii_lowercase();
        if let Some(index) = self.stages[..before]
            .iter()
            .position(|stage| stage.name() == Some(lower.as_str()))
        {
            return Some(index);
        }
        reference
            .parse::<usize>()
            .ok()
            .filter(|index| *index < before)
    }

    /// The stages stage `index` reads from: its base and its `--from`s. A
    /// reference holding a variable may name any earlier stage, so it
    /// counts as all of them.
    pub fn dependencies(&self, index: usize) -> Vec<usize> {
        let mut deps = Vec::new();
        let mut add = |reference: &str| {
            if reference.contains('$') {
                deps.extend(0..index);
            } else if let Some(found) = self.stage_named(reference, index) {
                deps.push(found);
            }
        };
        let stage = &self.stages[index];
        add(&stage.base.image);
        for step in &stage.steps {
            match &step.instruction {
                Instruction::Copy(copy) => {
                    if let Some(from) = &copy.from {
                        add(from);
                    }
                }
                Instruction::Run(run) => {
                    for mount in &run.mounts {
                        for field in mount.split(',') {
                            if let Some(from) = field.strip_prefix("from=") {
                                add(from);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    /// The stages a build of `target` needs, in order: the target and what
    /// it reads from, transitively. The others are skipped.
    pub fn needed_stages(&self, target: Option<&str>) -> Result<Vec<usize>, ParseError> {
        let last = self.target_index(target)?;
        let mut needed = vec![false; self.stages.len()];
        let mut pending = vec![last];
        while let Some(index) = pending.pop() {
            if std::mem::replace(&mut needed[index], true) {
                continue;
            }
            pending.extend(self.dependencies(index));
        }
        Ok((0..self.stages.len()).filter(|i| needed[*i]).collect())
    }
}

#[cfg(test)]
mod tests;
