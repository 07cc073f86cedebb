//! The first pass over a Dockerfile's text, as Docker's parser makes it:
//! the parser directives at the top (`# escape=` and `# syntax=`), comments,
//! line continuations (the escape character at the end of a line, comment
//! and empty lines inside a continued instruction skipped), the keyword and
//! its leading `--flags` split off, and the heredocs (`<<EOF`) of RUN, COPY
//! and ADD read. What the arguments mean is for [`super::instructions`].

use super::ParseError;

/// The largest Dockerfile accepted, in bytes.
pub const MAX_DOCKERFILE: usize = 4 << 20;

/// One instruction as written, before its arguments are interpreted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The line the instruction starts on, counting from 1.
    pub line: usize,
    /// The keyword, lowercased.
    pub keyword: String,
    /// The keyword as written, for messages.
    pub keyword_as_written: String,
    /// The flags (`--from=build`), their quotes removed.
    pub flags: Vec<String>,
    /// What follows the keyword and the flags, continuations joined.
    pub rest: String,
    /// The whole instruction as written, continuations joined.
    pub original: String,
    pub heredocs: Vec<Heredoc>,
}

/// A here-document of RUN, COPY or ADD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word, quotes removed.
    pub name: String,
    /// The lines up to the terminator, each ending in a newline.
    pub content: String,
    /// Whether variables in the content are expanded (the word unquoted).
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the content and the terminator.
    pub chomp: bool,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

/// What the parser directives set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            escape: '\\',
            syntax: None,
        }
    }
}

/// Splits a Dockerfile into its instructions.
pub fn parse_nodes(text: &str) -> Result<(Directives, Vec<Node>), ParseError> {
    if text.len() > MAX_DOCKERFILE {
        return Err(ParseError::TooLarge {
            size: text.len(),
            max: MAX_DOCKERFILE,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut directives = Directives::default();
    let mut seen_directives: Vec<String> = Vec::new();
    let mut looking_for_directives = true;
    let mut nodes = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let raw = lines[index];
        index += 1;
        let start_line = index;
        if looking_for_directives {
            match directive(raw) {
                Some((name, value)) if name == "escape" || name == "syntax" || name == "check" => {
                    if seen_directives.contains(&name) {
                        return Err(ParseError::at(
                            start_line,
                            format!("only one {name} parser directive can be used"),
                        ));
                    }
                    if name == "escape" {
                        directives.escape = match value.as_str() {
                            "\\" => '\\',
                            "`" => '`',
                            _ => {
                                return Err(ParseError::at(
                                    start_line,
                                    format!(
                                        "invalid escape token '{value}' does not match ` or \\"
                                    ),
                                ))
                            }
                        };
                    } else if name == "syntax" {
                        directives.syntax = Some(value);
                    }
                    seen_directives.push(name);
                    continue;
                }
                _ => looking_for_directives = false,
            }
        }
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        let (mut line, mut ended) = strip_continuation(trimmed, directives.escape);
        if ended && line.trim().is_empty() {
            continue;
        }
        while !ended && index < lines.len() {
            let next = lines[index];
            index += 1;
            let next_trimmed = next.trim_start();
            if next_trimmed.starts_with('#') || next_trimmed.is_empty() {
                continue;
            }
            let (part, end) = strip_continuation(next, directives.escape);
            line.push_str(&part);
            ended = end;
        }
        let mut node = split_node(&line, start_line)?;
        if can_contain_heredoc(&node) {
            for mut heredoc in heredocs_in(&node.rest) {
                let mut terminated = false;
                while index < lines.len() {
                    let body_line = lines[index];
                    index += 1;
                    let candidate = if heredoc.chomp {
                        body_line.trim_start_matches('\t')
                    } else {
                        body_line
                    };
                    if candidate == heredoc.name {
                        terminated = true;
                        break;
                    }
                    // `<<-`: the content's leading tabs go too.
                    heredoc.content.push_str(candidate);
                    heredoc.content.push('\n');
                }
                if !terminated {
                    return Err(ParseError::at(
                        start_line,
                        "unterminated heredoc".to_string(),
                    ));
                }
                node.heredocs.push(heredoc);
            }
        }
        nodes.push(node);
    }
    Ok((directives, nodes))
}

/// A parser directive: `# name = value`, the name lowercased.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let (name, value) = rest.split_once('=')?;
    let name = name.trim_end();
    let mut chars = name.chars();
    if !chars.next()?.is_ascii_alphabetic() || !chars.all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.to_string()))
}

/// Removes a trailing escape character (and the blanks after it): the
/// line then continues on the next one.
fn strip_continuation(line: &str, escape: char) -> (String, bool) {
    let without_blanks = line.trim_end_matches([' ', '\t']);
    match without_blanks.strip_suffix(escape) {
        Some(kept) => (kept.to_string(), false),
        None => (line.to_string(), true),
    }
}

fn split_node(line: &str, number: usize) -> Result<Node, ParseError> {
    let trimmed = line.trim();
    let (keyword, after) = match trimmed.find(|c: char| c.is_whitespace()) {
        Some(at) => (&trimmed[..at], trimmed[at..].trim_start()),
        None => (trimmed, ""),
    };
    let (flags, rest) = extract_flags(after);
    Ok(Node {
        line: number,
        keyword: keyword.to_ascii_lowercase(),
        keyword_as_written: keyword.to_string(),
        flags,
        rest: rest.to_string(),
        original: trimmed.to_string(),
        heredocs: Vec::new(),
    })
}

/// Splits the leading `--flag` words off, removing their quotes and
/// backslashes as Docker does. A lone `--` ends the flags.
pub fn extract_flags(line: &str) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut pos = 0;
    let bytes = line.as_bytes();
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if !line[pos..].starts_with("--") {
            return (flags, &line[pos..]);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut chars = line[pos..].char_indices().peekable();
        let mut end = line.len();
        while let Some((offset, ch)) = chars.next() {
            match quote {
                None if ch.is_whitespace() => {
                    end = pos + offset;
                    break;
                }
                None if ch == '\'' || ch == '"' => quote = Some(ch),
                Some(open) if ch == open => quote = None,
                _ if ch == '\\' => {
                    if let Some((_, next)) = chars.next() {
                        word.push(next);
                    }
                }
                _ => word.push(ch),
            }
        }
        if word == "--" {
            return (flags, line[end..].trim_start());
        }
        flags.push(word);
        pos = end;
    }
}

fn can_contain_heredoc(node: &Node) -> bool {
    matches!(node.keyword.as_str(), "run" | "copy" | "add")
        && !node.rest.trim_start().starts_with('[')
}

/// The heredocs an instruction opens, in order: its words of the form
/// `[fd]<<[-]WORD`.
fn heredocs_in(rest: &str) -> Vec<Heredoc> {
    raw_words(rest)
        .iter()
        .filter_map(|word| parse_heredoc(word))
        .collect()
}

/// One heredoc opener: `<<EOF`, `<<-EOF`, `3<<"EOF"`.
pub fn parse_heredoc(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let after = word[digits..].strip_prefix("<<")?;
    let (chomp, after) = match after.strip_prefix('-') {
        Some(after) => (true, after),
        None => (false, after),
    };
    if after.is_empty() || after.contains('<') {
        return None;
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse().ok()?
    };
    let name: String = unquote(after)?;
    if name.is_empty() {
        return None;
    }
    // A quoted terminator (any part of it) turns expansion off.
    let expand = !after.contains(['\'', '"', '\\']);
    Some(Heredoc {
        name,
        content: String::new(),
        expand,
        chomp,
        fd,
    })
}

/// Removes quotes and backslashes from a word; `None` when a quote is left open.
fn unquote(word: &str) -> Option<String> {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = word.chars();
    while let Some(ch) = chars.next() {
        match quote {
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            Some(open) if ch == open => quote = None,
            None if ch == '\\' => out.push(chars.next()?),
            _ => out.push(ch),
        }
    }
    quote.is_none().then_some(out)
}

/// Shell-like words with their quotes kept (for finding heredoc openers).
fn raw_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        match quote {
            None if ch.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            None if ch == '\\' => {
                word.push(ch);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            None if ch == '\'' || ch == '"' => {
                quote = Some(ch);
                word.push(ch);
            }
            Some(open) if ch == open => {
                quote = None;
                word.push(ch);
            }
            _ => word.push(ch),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Docker's whitespace-separated words that keep their quotes and escapes
/// (the form ENV, LABEL and ARG split `name=value` pairs with).
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match chars.next() {
                        // An escape at the end of the line is dropped.
                        None => continue,
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Some(open) => {
                if ch == open {
                    quote = None;
                }
                if ch == escape && open != '\'' {
                    match chars.next() {
                        None => {
                            quote = None;
                            continue;
                        }
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if blank_ok || !word.is_empty() {
        words.push(word);
    }
    words
}

/// The JSON (exec) form of an argument list: `Ok(Some(list))` for an array
/// of strings, `Ok(None)` for text that is not a JSON array (the shell
/// form), an error for an array holding something other than strings.
pub fn parse_json_array(rest: &str) -> Result<Option<Vec<String>>, String> {
    let text = rest.trim();
    if !text.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::String(text) => Ok(text),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
