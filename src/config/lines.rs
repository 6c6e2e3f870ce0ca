//! A map from dotted key path to the line it was written on, built by scanning
//! block-style YAML by indentation, because parsed `yaml_serde::Value`s carry no
//! positions.
//!
//! Knows only text layout; flow style (`{a: 1}`), anchors and multi-line quoted
//! scalars are not followed, and lookups then fall back to the nearest parent.

use std::collections::HashMap;

/// Where each key and list item sits in the file.
#[derive(Debug, Default)]
pub(crate) struct LineIndex {
    /// Path (`dns.nameservers.global`, or `ip_prefixes[1]` for list items) to
    /// its 1-based line and the scalar text written after it, if any.
    entries: HashMap<String, (usize, Option<String>)>,
    /// Keys written a second time at the same path, with the later line.
    repeats: Vec<(String, usize)>,
}

/// One open mapping key or list item whose children may follow.
struct Frame {
    indent: usize,
    path: String,
}

impl LineIndex {
    pub(crate) fn build(text: &str) -> LineIndex {
        let mut index = LineIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut item_counts: HashMap<String, usize> = HashMap::new();
        // Lines deeper than this indent belong to a `|` or `>` block scalar.
        let mut block_scalar_indent: Option<usize> = None;

        for (number, raw_line) in text.lines().enumerate() {
            let line_no = number + 1;
            let indent = raw_line.len() - raw_line.trim_start_matches(' ').len();
            let content = strip_comment(&raw_line[indent..]).trim_end();
            if content.is_empty() {
                continue;
            }
            if let Some(limit) = block_scalar_indent {
                if indent > limit {
                    continue;
                }
                block_scalar_indent = None;
            }
            if indent == 0 && (content.starts_with("---") || content.starts_with("...")) {
                stack.clear();
                continue;
            }
            if content.starts_with('%') {
                continue;
            }

            let mut column = indent;
            let mut rest = content;
            if rest == "-" || rest.starts_with("- ") {
                // A list item belongs to the nearest key at this indent or less.
                while stack.last().is_some_and(|f| f.indent > column) {
                    stack.pop();
                }
                let Some(owner) = stack.last() else { continue };
                let count = item_counts.entry(owner.path.clone()).or_insert(0);
                let item_path = format!("{}[{}]", owner.path, count);
                *count += 1;
                let after = rest[1..].trim_start();
                let scalar = (!after.is_empty() && split_key(after).is_none())
                    .then(|| unquote(after).to_owned());
                index
                    .entries
                    .entry(item_path.clone())
                    .or_insert((line_no, scalar));
                // Keys of a mapping inside the item sit deeper than the dash.
                stack.push(Frame {
                    indent: column + 1,
                    path: item_path,
                });
                if after.is_empty() {
                    continue;
                }
                column += rest.len() - after.len();
                rest = after;
            }

            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|f| f.indent >= column) {
                stack.pop();
            }
            let path = match stack.last() {
                Some(parent) => format!("{}.{}", parent.path, key),
                None => key.to_owned(),
            };
            let scalar = (!value.is_empty()).then(|| unquote(value).to_owned());
            if value.starts_with('|') || value.starts_with('>') {
                block_scalar_indent = Some(column);
            }
            if index.entries.contains_key(&path) {
                index.repeats.push((path.clone(), line_no));
            } else {
                index.entries.insert(path.clone(), (line_no, scalar));
            }
            stack.push(Frame {
                indent: column,
                path,
            });
        }
        index
    }

    /// The line of `path`, or of its nearest recorded parent.
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some((line, _)) = self.entries.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The first key named `name` (last path segment) that is written twice:
    /// its path, first line and repeated line.
    pub(crate) fn repeated(&self, name: &str) -> Option<(&str, usize, usize)> {
        self.repeats.iter().find_map(|(path, again)| {
            let last = path.rsplit('.').next().unwrap_or(path);
            (last == name).then(|| (path.as_str(), self.entries[path].0, *again))
        })
    }

    /// Whether `path` itself (not just a parent) was written.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// The scalar exactly as written after `path:` (quotes removed), when on the same line.
    pub(crate) fn raw(&self, path: &str) -> Option<&str> {
        self.entries.get(path).and_then(|(_, raw)| raw.as_deref())
    }
}

/// Splits `key: value` (or `key:`), with the key unquoted; `None` when the line is no key.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let (key, after) = if let Some(quote @ ('"' | '\'')) = content.chars().next() {
        let end = content[1..].find(quote)? + 1;
        let after = content[end + 1..].trim_start();
        (&content[1..end], after.strip_prefix(':')?)
    } else {
        if content.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
            return None;
        }
        let colon = find_key_colon(content)?;
        (content[..colon].trim_end(), &content[colon + 1..])
    };
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, after.trim()))
}

/// The first `:` that ends a plain key: followed by a space or the end of the line.
fn find_key_colon(content: &str) -> Option<usize> {
    let bytes = content.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t')
    })
}

/// Drops a trailing `# comment`, leaving `#` inside quotes alone.
fn strip_comment(content: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in content.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            // A quote opens a quoted scalar only at the start of a token, not inside `Bob's`.
            None if (c == '"' || c == '\'') && " \t:[{,".contains(previous) => quote = Some(c),
            None if c == '#' && (previous == ' ' || previous == '\t') => return &content[..i],
            None => {}
        }
        previous = c;
    }
    content
}

fn unquote(value: &str) -> &str {
    let v = value.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment: not a key
server_url: http://x:8080   # trailing comment
dns:
  magic_dns: true

  nameservers:
    global:
      - 1.1.1.1
      - \"2606:4700::1111\"
  extra_records:
    - name: a.example
      type: A
    - {name: b, type: A, value: 100.64.0.9}
description: |
  looks: like a key
unix_socket_permission: \"0770\"
'quoted.key': 1
ip_prefixes:
- fd7a:115c:a1e0::/48
- 10.1.0.0/16
";

    #[test]
    fn nested_keys_and_list_items_get_their_lines() {
        let index = LineIndex::build(TEXT);
        assert_eq!(index.line("server_url"), Some(2));
        assert_eq!(index.line("dns.magic_dns"), Some(4));
        assert_eq!(index.line("dns.nameservers.global"), Some(7));
        assert_eq!(index.line("dns.nameservers.global[1]"), Some(9));
        assert_eq!(index.line("dns.extra_records[0].type"), Some(12));
        assert_eq!(index.line("dns.extra_records[1]"), Some(13));
        assert_eq!(index.line("unix_socket_permission"), Some(16));
        assert_eq!(index.line("quoted.key"), Some(17));
        assert_eq!(index.line("ip_prefixes[1]"), Some(20));
    }

    #[test]
    fn block_scalars_and_flow_values_fall_back_to_the_parent() {
        let index = LineIndex::build(TEXT);
        assert_eq!(index.line("description.looks"), Some(14));
        assert_eq!(index.line("dns.extra_records[1].value"), Some(13));
        assert_eq!(index.line("nowhere"), None);
    }

    #[test]
    fn raw_scalars_are_kept_without_quotes_or_comments() {
        let index = LineIndex::build(TEXT);
        assert_eq!(index.raw("unix_socket_permission"), Some("0770"));
        assert_eq!(index.raw("server_url"), Some("http://x:8080"));
        assert_eq!(
            index.raw("dns.nameservers.global[1]"),
            Some("2606:4700::1111")
        );
        assert_eq!(index.raw("dns"), None);
    }
}
