//! Variable substitution in Dockerfile words, as Docker's shell lexer does
//! it: `$name`, `${name}`, `${name:-word}`, `${name:+word}`,
//! `${name:?message}` and their colon-less forms, single quotes (literal),
//! double quotes (where `$`, the quote and the escape character can be
//! escaped), the escape character outside quotes, quotes removed from the
//! result. Values are never expanded again, and every result is capped at
//! [`MAX_WORD`] bytes, so an expansion bomb (`ENV b=$a$a$a$a`, again and
//! again) stops with an error instead of filling memory.

use std::iter::Peekable;
use std::str::Chars;

/// The longest word an expansion may produce.
pub const MAX_WORD: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShellError {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(char),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("variable expansion is longer than {MAX_WORD} bytes")]
    TooLong,
}

/// Where the lexer looks variables up: `None` for a variable that is not
/// set, `Some("")` for one set to nothing.
pub trait Lookup {
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Lookup for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        // The last definition wins, as in an environment list.
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Lookup for &[(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

impl Lookup for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// Expands one word: the whole text, spaces kept, quotes removed.
pub fn expand_word(word: &str, env: &dyn Lookup, escape: char) -> Result<String, ShellError> {
    let mut lexer = Lexer {
        chars: word.chars().peekable(),
        env,
        escape,
    };
    lexer.until(None)
}

/// Expands the variables of a heredoc's content (its delimiter unquoted),
/// as BuildKit does for `COPY <<EOF`: `$name` and `${...}` forms only;
/// quotes are text and stay, the escape character before `$` keeps it.
pub fn expand_heredoc(text: &str, env: &dyn Lookup, escape: char) -> Result<String, ShellError> {
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        env,
        escape,
    };
    let mut out = String::new();
    while let Some(&ch) = lexer.chars.peek() {
        if ch == '$' {
            let value = lexer.dollar()?;
            push(&mut out, &value)?;
            continue;
        }
        lexer.chars.next();
        if ch == escape && lexer.chars.peek() == Some(&'$') {
            lexer.chars.next();
            push(&mut out, "$")?;
            continue;
        }
        push(&mut out, ch.encode_utf8(&mut [0; 4]))?;
    }
    Ok(out)
}

struct Lexer<'a> {
    chars: Peekable<Chars<'a>>,
    env: &'a dyn Lookup,
    escape: char,
}

fn push(out: &mut String, text: &str) -> Result<(), ShellError> {
    if out.len() + text.len() > MAX_WORD {
        return Err(ShellError::TooLong);
    }
    out.push_str(text);
    Ok(())
}

impl Lexer<'_> {
    /// Reads up to `stop` (consumed) or the end of the word.
    fn until(&mut self, stop: Option<char>) -> Result<String, ShellError> {
        let mut out = String::new();
        while let Some(&ch) = self.chars.peek() {
            if Some(ch) == stop {
                self.chars.next();
                return Ok(out);
            }
            match ch {
                '\'' => {
                    let text = self.single_quoted()?;
                    push(&mut out, &text)?;
                }
                '"' => {
                    let text = self.double_quoted()?;
                    push(&mut out, &text)?;
                }
                '$' => {
                    let text = self.dollar()?;
                    push(&mut out, &text)?;
                }
                _ => {
                    self.chars.next();
                    let ch = if ch == self.escape {
                        match self.chars.next() {
                            Some(next) => next,
                            // An escape at the end of the word is dropped.
                            None => break,
                        }
                    } else {
                        ch
                    };
                    push(&mut out, ch.encode_utf8(&mut [0; 4]))?;
                }
            }
        }
        match stop {
            Some(_) => Err(ShellError::MissingBrace),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ShellError> {
        self.chars.next();
        let mut out = String::new();
        loop {
            match self.chars.next() {
                None => return Err(ShellError::UnterminatedSingleQuote),
                Some('\'') => return Ok(out),
                Some(ch) => out.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ShellError> {
        self.chars.next();
        let mut out = String::new();
        loop {
            let Some(&ch) = self.chars.peek() else {
                return Err(ShellError::UnterminatedDoubleQuote);
            };
            if ch == '"' {
                self.chars.next();
                return Ok(out);
            }
            if ch == '$' {
                let text = self.dollar()?;
                push(&mut out, &text)?;
                continue;
            }
            self.chars.next();
            let mut ch = ch;
            if ch == self.escape {
                match self.chars.peek() {
                    // An escape at the end of the word is dropped.
                    None => continue,
                    Some(&next) if next == '"' || next == '$' || next == self.escape => {
                        self.chars.next();
                        ch = next;
                    }
                    // Other escapes stay as written.
                    Some(_) => {}
                }
            }
            push(&mut out, ch.encode_utf8(&mut [0; 4]))?;
        }
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.chars.next();
        if self.chars.peek() != Some(&'{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.env.lookup(&name).unwrap_or_default().to_string());
        }
        self.chars.next();
        match self.chars.peek() {
            None => return Err(ShellError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        let value = self.env.lookup(&name).map(str::to_string);
        match self.chars.next() {
            None => Err(ShellError::MissingBrace),
            Some('}') => Ok(value.unwrap_or_default()),
            Some(':') => {
                let modifier = self.chars.next().ok_or(ShellError::MissingBrace)?;
                if !matches!(modifier, '-' | '+' | '?') {
                    return Err(ShellError::UnsupportedModifier(modifier));
                }
                let word = self.until(Some('}'))?;
                // With a colon, a variable set to nothing counts as unset.
                let value = value.filter(|value| !value.is_empty());
                self.modify(&name, modifier, value, word)
            }
            Some(modifier @ ('-' | '+' | '?')) => {
                let word = self.until(Some('}'))?;
                self.modify(&name, modifier, value, word)
            }
            Some(other) => Err(ShellError::UnsupportedModifier(other)),
        }
    }

    fn modify(
        &self,
        name: &str,
        modifier: char,
        value: Option<String>,
        word: String,
    ) -> Result<String, ShellError> {
        match (modifier, value) {
            ('-', None) => Ok(word),
            ('-', Some(value)) => Ok(value),
            ('+', None) => Ok(String::new()),
            ('+', Some(_)) => Ok(word),
            ('?', Some(value)) => Ok(value),
            (_, None) => Err(ShellError::Required {
                name: name.to_string(),
                message: if word.is_empty() {
                    "is not allowed to be unset".to_string()
                } else {
                    word
                },
            }),
            // `modifier` is one of - + ? (checked by the caller).
            (_, Some(value)) => Ok(value),
        }
    }

    /// A variable's name: letters, digits and `_`; or digits alone; or one
    /// of the shell's special parameters.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(&ch) = self.chars.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(&digit) = self.chars.peek() {
                    if !digit.is_ascii_digit() {
                        break;
                    }
                    name.push(digit);
                    self.chars.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.chars.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.chars.next();
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [("a", "x"), ("empty", ""), ("sp", "1 2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expand(word: &str) -> Result<String, ShellError> {
        expand_word(word, &env(), '\\')
    }

    #[test]
    fn plain_and_braced_names() {
        assert_eq!(expand("$a").unwrap(), "x");
        assert_eq!(expand("${a}").unwrap(), "x");
        assert_eq!(expand("pre-${a}-post").unwrap(), "pre-x-post");
        assert_eq!(expand("$a_b").unwrap(), "");
        assert_eq!(expand("$a/b").unwrap(), "x/b");
        assert_eq!(expand("$unset").unwrap(), "");
        assert_eq!(expand("${sp}").unwrap(), "1 2");
    }

    #[test]
    fn a_dollar_without_a_name_stays() {
        assert_eq!(expand("a$").unwrap(), "a$");
        assert_eq!(expand("$ b").unwrap(), "$ b");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(expand("${unset:-d}").unwrap(), "d");
        assert_eq!(expand("${empty:-d}").unwrap(), "d");
        assert_eq!(expand("${a:-d}").unwrap(), "x");
        assert_eq!(expand("${unset-d}").unwrap(), "d");
        assert_eq!(expand("${empty-d}").unwrap(), "");
        assert_eq!(expand("${a:+alt}").unwrap(), "alt");
        assert_eq!(expand("${empty:+alt}").unwrap(), "");
        assert_eq!(expand("${empty+alt}").unwrap(), "alt");
        assert_eq!(expand("${unset:+alt}").unwrap(), "");
        assert_eq!(expand("${unset:-$a}").unwrap(), "x");
        assert_eq!(expand("${unset:-${a:+y}}").unwrap(), "y");
    }

    #[test]
    fn required_values() {
        assert_eq!(expand("${a:?boom}").unwrap(), "x");
        assert_eq!(
            expand("${unset:?must be set}").unwrap_err().to_string(),
            "unset: must be set"
        );
        assert_eq!(
            expand("${empty:?}").unwrap_err().to_string(),
            "empty: is not allowed to be unset"
        );
    }

    #[test]
    fn quotes() {
        assert_eq!(expand("'$a'").unwrap(), "$a");
        assert_eq!(expand("\"$a\"").unwrap(), "x");
        assert_eq!(expand("\"a b\"c").unwrap(), "a bc");
        assert_eq!(expand("\"\\$a\"").unwrap(), "$a");
        assert_eq!(expand("\"\\n\"").unwrap(), "\\n");
        assert_eq!(expand("\"\\\"\"").unwrap(), "\"");
        assert_eq!(expand("'\\'").unwrap(), "\\");
    }

    #[test]
    fn escapes_outside_quotes() {
        assert_eq!(expand("\\$a").unwrap(), "$a");
        assert_eq!(expand("a\\ b").unwrap(), "a b");
        assert_eq!(expand("a\\").unwrap(), "a");
        assert_eq!(expand_word("`$a", &env(), '`').unwrap(), "$a");
        assert_eq!(expand_word("c:\\$a", &env(), '`').unwrap(), "c:\\x");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            expand("'a").unwrap_err(),
            ShellError::UnterminatedSingleQuote
        );
        assert_eq!(
            expand("\"a").unwrap_err(),
            ShellError::UnterminatedDoubleQuote
        );
        assert_eq!(expand("${a").unwrap_err(), ShellError::MissingBrace);
        assert_eq!(expand("${").unwrap_err(), ShellError::MissingBrace);
        assert_eq!(expand("${}").unwrap_err(), ShellError::BadSubstitution);
        assert_eq!(expand("${:a}").unwrap_err(), ShellError::BadSubstitution);
        assert_eq!(
            expand("${a:=b}").unwrap_err(),
            ShellError::UnsupportedModifier('=')
        );
        assert_eq!(expand("${a:-b").unwrap_err(), ShellError::MissingBrace);
        assert_eq!(
            expand("${a/b}").unwrap_err(),
            ShellError::UnsupportedModifier('/')
        );
    }

    #[test]
    fn an_expansion_bomb_stops_at_the_cap() {
        let mut env: Vec<(String, String)> = vec![("v0".into(), "x".repeat(1000))];
        let mut result = Ok(String::new());
        for level in 1..10 {
            let word = format!("$v{}", level - 1).repeat(16);
            result = expand_word(&word, &env, '\\');
            match &result {
                Ok(value) => env.push((format!("v{level}"), value.clone())),
                Err(_) => break,
            }
        }
        assert_eq!(result.unwrap_err(), ShellError::TooLong);
    }
}
