//! HuJSON ("human JSON", the policy file format): JSON plus `//` and `/* */`
//! comments and trailing commas. Knows text, not policies.
//!
//! [`standardize`] blanks comments and trailing commas out with spaces (newlines
//! are kept), so the result is plain JSON whose every byte sits at the same line
//! and column as in the original: a JSON parser's error positions are the
//! positions in the file the admin wrote.

use std::fmt;

/// A syntax error at a 1-based line and column of the original text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for SyntaxError {}

/// Parses HuJSON text into a JSON value.
pub fn parse(text: &str) -> Result<serde_json::Value, SyntaxError> {
    let json = standardize(text)?;
    serde_json::from_str(&json).map_err(|e| SyntaxError {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })
}

/// serde_json appends " at line L column C" to its messages; we say it first.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Turns HuJSON into standard JSON of the same length and line structure.
pub fn standardize(text: &str) -> Result<String, SyntaxError> {
    let mut out: Vec<u8> = text.as_bytes().to_vec();
    let bytes = text.as_bytes();
    // The byte offset of the last comma seen outside strings, if only whitespace
    // and comments followed it so far.
    let mut pending_comma: Option<usize> = None;
    // The last byte outside comments and whitespace: a comma right after `[`, `{`
    // or another comma is not a trailing comma, and stays to be refused.
    let mut previous = b' ';
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                pending_comma = None;
                previous = b'"';
                i = skip_string(bytes, i)
                    .ok_or_else(|| error_at(text, i, "unterminated string"))?;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let start = i;
                out[i] = b' ';
                out[i + 1] = b' ';
                i += 2;
                loop {
                    if i + 1 >= bytes.len() {
                        return Err(error_at(text, start, "unterminated /* comment"));
                    }
                    if bytes[i] == b'*' && bytes[i + 1] == b'/' {
                        out[i] = b' ';
                        out[i + 1] = b' ';
                        i += 2;
                        break;
                    }
                    if bytes[i] != b'\n' && bytes[i] != b'\r' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
            }
            b',' => {
                pending_comma = (!matches!(previous, b'[' | b'{' | b',')).then_some(i);
                previous = b',';
                i += 1;
            }
            b']' | b'}' => {
                if let Some(comma) = pending_comma.take() {
                    out[comma] = b' ';
                }
                previous = bytes[i];
                i += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            other => {
                pending_comma = None;
                previous = other;
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced by spaces, and never inside a multi-byte
    // character (comments are blanked byte by byte, but a comment's bytes are all
    // replaced, so no partial character remains).
    String::from_utf8(out).map_err(|_| error_at(text, 0, "invalid UTF-8"))
}

/// The index just past the string starting at `start` (a `"`), or `None` if it
/// never ends.
fn skip_string(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

fn error_at(text: &str, offset: usize, message: &str) -> SyntaxError {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    SyntaxError {
        line,
        column,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comments_and_trailing_commas_are_accepted() {
        let text = r#"{
  // who may talk to whom
  "acls": [
    /* everyone */ {"action": "accept", "src": ["*"], "dst": ["*:*"],},
  ],
  "url": "http://example.com/a//b", // not a comment inside a string
}"#;
        assert_eq!(
            parse(text).unwrap(),
            json!({"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
                   "url": "http://example.com/a//b"})
        );
    }

    #[test]
    fn positions_are_those_of_the_original_text() {
        let text = "{\n  /* a\n comment */ \"a\": 1,\n  \"b\": [1 2]\n}";
        let err = parse(text).unwrap_err();
        assert_eq!((err.line, err.column), (4, 11), "{err}");
        assert!(err.to_string().starts_with("line 4, column 11: "), "{err}");
    }

    #[test]
    fn broken_inputs_are_errors_not_panics() {
        for text in [
            "",
            "{",
            "/*",
            "{\"a\": \"unterminated",
            "{\"a\": 1} /* trailing",
            "[1,,]",
            "{,}",
            "\"\\",
            "{\"é\": /* ü */ 1}",
        ] {
            let _ = parse(text);
        }
        assert_eq!(parse("{\"é\": /* ü */ 1}").unwrap(), json!({"é": 1}));
        let err = parse("{\n  /* never closed\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(err.message.contains("unterminated"), "{err}");
    }

    #[test]
    fn a_lone_comma_is_still_an_error() {
        assert!(parse("[1,,2]").is_err());
        assert!(parse("{,}").is_err());
        assert_eq!(parse("[1,2,\n// end\n]").unwrap(), json!([1, 2]));
    }
}
