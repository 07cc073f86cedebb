//! `.dockerignore`: which files of a build context are left out, by
//! Docker's rules. Lines starting with `#` are comments; each pattern is
//! cleaned (`a//b/../c` is `a/c`, a leading `/` dropped); `*` and `?` match
//! within one path element, `**` any number of elements (none too),
//! `[...]` a class, `\` escapes; `!` makes an exception. The last pattern
//! that matches a path, or one of its parent directories, decides.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\"")]
    BareExclusion,
    #[error("syntax error in pattern {0:?}: unterminated character class")]
    BadClass(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: anything but `/`.
    Star,
    /// `?`: one character but `/`.
    Any,
    /// `**` followed by more: `(.*/)?`.
    Dirs,
    /// `**` at the end: anything.
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: String,
    exclusion: bool,
    tokens: Vec<Token>,
}

/// The patterns of a `.dockerignore` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    /// Reads a `.dockerignore` file's text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exclusion = pattern.starts_with('!');
            if exclusion {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(IgnoreError::BareExclusion);
                }
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let tokens = compile(&cleaned)?;
            patterns.push(Pattern {
                text: cleaned,
                exclusion,
                tokens,
            });
        }
        Ok(Ignore { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the patterns leave out `path` (relative to the context,
    /// `/`-separated), itself or through one of its parents.
    pub fn excludes(&self, path: &str) -> bool {
        let path = clean(path);
        let path = path.trim_start_matches('/');
        let parents: Vec<&str> = match path.rfind('/') {
            Some(at) => path[..at].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion can't change a match, nor an exclusion a non-match.
            if pattern.exclusion != matched {
                continue;
            }
            let mut hit = matches(&pattern.tokens, path);
            if !hit {
                let mut parent = String::new();
                for element in &parents {
                    if !parent.is_empty() {
                        parent.push('/');
                    }
                    parent.push_str(element);
                    if matches(&pattern.tokens, &parent) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// Whether some exception (`!pattern`) exists: a directory left out may
    /// then still hold files to send, so it must be walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|pattern| pattern.exclusion)
    }

    /// The patterns as cleaned, with their `!`.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| format!("{}{}", if p.exclusion { "!" } else { "" }, p.text))
            .collect()
    }
}

/// Go's `filepath.Clean` on a `/`-separated path.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|last| *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Match` (COPY and ADD sources): `*` and `?` within one
/// path element, classes, escapes; `**` is no more than `*`.
pub fn path_match(pattern: &str, path: &str) -> Result<bool, IgnoreError> {
    Ok(matches(&compile_with(pattern, false)?, path))
}

/// Whether a source names files by a pattern rather than by path.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn compile(pattern: &str) -> Result<Vec<Token>, IgnoreError> {
    compile_with(pattern, true)
}

fn compile_with(pattern: &str, double_star: bool) -> Result<Vec<Token>, IgnoreError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if double_star && chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::Rest
                } else {
                    Token::Dirs
                });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => {
                i += 1;
                tokens.push(Token::Char(chars.get(i).copied().unwrap_or('\\')));
            }
            '[' => {
                let (token, end) =
                    class(&chars, i).ok_or_else(|| IgnoreError::BadClass(pattern.to_string()))?;
                tokens.push(token);
                i = end;
            }
            other => tokens.push(Token::Char(other)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// A character class starting at `chars[start] == '['`: the token and the
/// index of its `]`.
fn class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let ch = *chars.get(i)?;
        if ch == ']' && !first {
            return Some((Token::Class { negated, ranges }, i));
        }
        first = false;
        let low = if ch == '\\' {
            i += 1;
            *chars.get(i)?
        } else {
            ch
        };
        let mut high = low;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|c| *c != ']') {
            i += 2;
            high = if chars[i] == '\\' {
                i += 1;
                *chars.get(i)?
            } else {
                chars[i]
            };
        }
        ranges.push((low, high));
        i += 1;
    }
}

/// Whether the tokens match the whole of `text`: one pass over the text
/// per token, so no pattern takes more than tokens × characters steps.
fn matches(tokens: &[Token], text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    // reach[k]: the tokens so far can end at position k.
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        match token {
            Token::Char(_) | Token::Any | Token::Class { .. } => {
                for k in 0..n {
                    if reach[k] && one(token, chars[k]) {
                        next[k + 1] = true;
                    }
                }
            }
            Token::Star => {
                // From any reached position, on up to the next `/`.
                let mut active = false;
                for k in 0..=n {
                    if k > 0 && chars[k - 1] == '/' {
                        active = false;
                    }
                    active |= reach[k];
                    next[k] = active;
                }
            }
            Token::Rest => {
                let mut active = false;
                for k in 0..=n {
                    active |= reach[k];
                    next[k] = active;
                }
            }
            Token::Dirs => {
                // Nothing, or anything ending in a `/`.
                let mut active = false;
                for k in 0..=n {
                    active |= reach[k];
                    next[k] |= reach[k];
                    if k < n && active && chars[k] == '/' {
                        next[k + 1] = true;
                    }
                }
            }
        }
        reach = next;
    }
    reach[n]
}

/// Whether a one-character token matches `c`.
fn one(token: &Token, c: char) -> bool {
    match token {
        Token::Char(expected) => *expected == c,
        Token::Any => c != '/',
        Token::Class { negated, ranges } => {
            let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
            inside != *negated && c != '/'
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text).unwrap()
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let rules = ignore("# a comment\n\n  \nfoo\n");
        assert_eq!(rules.patterns(), vec!["foo"]);
        assert!(rules.excludes("foo"));
        assert!(!rules.excludes("# a comment"));
    }

    #[test]
    fn patterns_are_cleaned_and_relative() {
        let rules = ignore("/a//b/../c\n./d/\n");
        assert_eq!(rules.patterns(), vec!["a/c", "d"]);
        assert!(rules.excludes("a/c"));
        assert!(rules.excludes("d"));
    }

    #[test]
    fn a_star_stays_within_an_element() {
        let rules = ignore("*.log\n*/temp*\n");
        assert!(rules.excludes("x.log"));
        assert!(!rules.excludes("dir/x.log"));
        assert!(rules.excludes("dir/temporary"));
        assert!(!rules.excludes("a/b/temporary"));
    }

    #[test]
    fn a_question_mark_is_one_character() {
        let rules = ignore("temp?\n");
        assert!(rules.excludes("temp1"));
        assert!(!rules.excludes("temp12"));
        assert!(!rules.excludes("temp"));
    }

    #[test]
    fn double_star_is_any_number_of_directories() {
        let rules = ignore("**/*.go\n");
        assert!(rules.excludes("a.go"));
        assert!(rules.excludes("x/y/z.go"));
        assert!(!rules.excludes("x/y/z.rs"));
        let rules = ignore("a/**\n");
        assert!(rules.excludes("a/b/c"));
        let rules = ignore("a/**/b\n");
        assert!(rules.excludes("a/b"));
        assert!(rules.excludes("a/x/y/b"));
        assert!(!rules.excludes("a/xb"));
    }

    #[test]
    fn a_directory_excludes_what_it_holds() {
        let rules = ignore("node_modules\n");
        assert!(rules.excludes("node_modules/x/y.js"));
        assert!(!rules.excludes("src/node_modules_x"));
    }

    #[test]
    fn exceptions_and_the_last_match_wins() {
        let rules = ignore("*.md\n!README.md\n");
        assert!(rules.excludes("CHANGES.md"));
        assert!(!rules.excludes("README.md"));
        let rules = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(rules.excludes("README-secret.md"));
        assert!(!rules.excludes("README-public.md"));
        assert!(rules.has_exceptions());
    }

    #[test]
    fn a_bare_exclamation_mark_is_an_error() {
        assert_eq!(
            Ignore::parse("!\n").unwrap_err(),
            IgnoreError::BareExclusion
        );
    }

    #[test]
    fn classes_and_escapes() {
        let rules = ignore("file[0-9]\nx[!a]\n\\*star\n");
        assert!(rules.excludes("file3"));
        assert!(!rules.excludes("filex"));
        assert!(rules.excludes("xb"));
        assert!(!rules.excludes("xa"));
        assert!(rules.excludes("*star"));
        assert!(!rules.excludes("1star"));
        assert!(matches!(
            Ignore::parse("a[b\n").unwrap_err(),
            IgnoreError::BadClass(_)
        ));
    }

    #[test]
    fn a_long_pattern_on_a_long_path_is_quick() {
        let rules = ignore(&format!("{}b\n", "*a".repeat(200)));
        let path = "a".repeat(5000);
        let started = std::time::Instant::now();
        assert!(!rules.excludes(&path));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn clean_is_go_clean() {
        assert_eq!(clean("a/./b/../../c"), "c");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a/"), "a");
    }
}
