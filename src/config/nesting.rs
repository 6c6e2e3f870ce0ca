//! A cheap bound on how deeply YAML text nests flow collections (`[`, `{`),
//! checked before the parser sees it: the parser slows down quadratically on
//! deep nesting long before its own recursion limit stops it, so a 200 KB file
//! could hold start-up for most of a minute.

/// Deeper than any configuration needs (headway's keys nest four levels).
pub(crate) const MAX_NESTING: usize = 64;

/// `Err((line, depth))` at the first place `text` nests flow collections more
/// than [`MAX_NESTING`] deep. Quoted scalars and comments are skipped; block
/// nesting by indentation is bounded by the file size cap already.
pub(crate) fn check(text: &str) -> Result<(), (usize, usize)> {
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut chars = text.chars().peekable();
    // The previous character, to tell a comment's `#` from one inside a word.
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                previous = '\n';
                continue;
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if chars.next() == Some('\n') => line += 1,
                        '\\' => {}
                        '"' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            // A quote inside a plain scalar (`it's`) is a literal; only one that
            // starts a scalar opens a quoted one.
            '\'' if matches!(previous, ' ' | '\t' | '\n' | '[' | '{' | ',' | ':' | '-') => {
                while let Some(c) = chars.next() {
                    match c {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                        }
                        '\'' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err((line, depth));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configs_pass_and_deep_flow_nesting_is_caught_with_its_line() {
        assert_eq!(
            check("dns:\n  nameservers: {global: [1.1.1.1, \"[[[\"], split: {}}\n  # [[[[\n"),
            Ok(())
        );
        assert_eq!(check("a: 'it''s [[[['\nb: it's\n"), Ok(()));
        let deep = format!("a: 1\nb: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(check(&deep), Err((2, MAX_NESTING + 1)));
        let deep = format!("a: {}1{}\n", "{a: ".repeat(65), "}".repeat(65));
        assert_eq!(check(&deep), Err((1, MAX_NESTING + 1)));
    }
}
