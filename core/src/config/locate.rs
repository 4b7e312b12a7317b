//! Where in the config text an error is: its 1-based line and its dotted key, found from the
//! spans of toml's document parser, so one line can name both. toml's own `Display` prints a
//! ten-line source snippet instead, which is right for an editor and wrong for a log line.

use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// A toml error (syntax, unknown key, missing key, wrong type) as a one-line [`ConfigError`]
/// naming the line and the key (the file is filled in by the caller).
pub(super) fn parse_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = one_line(error.message());
    let (doc, _) = DeTable::parse_recoverable(text);
    let (line, key) = match (error.span(), missing_field(&message)) {
        // toml points a missing key at the table that lacks it: the document (no line) or a
        // table's header.
        (Some(span), Some(field)) if span == doc.span() => (None, Some(field.to_string())),
        (Some(span), Some(field)) => match table_at(doc.get_ref(), &span, "") {
            Some(table) => (
                Some(line_at(text, span.start)),
                Some(format!("{table}.{field}")),
            ),
            None => (Some(line_at(text, span.start)), Some(field.to_string())),
        },
        (Some(span), None) => (
            Some(line_at(text, span.start)),
            key_at(doc.get_ref(), span.start, ""),
        ),
        (None, field) => (None, field.map(str::to_string)),
    };
    let message = match missing_field(&message) {
        Some(_) => "required key is missing".to_string(),
        None => message,
    };
    ConfigError::Parse {
        path: super::NO_FILE.into(),
        line,
        key,
        message,
    }
}

/// The 1-based line of the dotted `key` in `text`, if the text has it.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut table = doc.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (k, v) = table.get_key_value(part)?;
        if parts.peek().is_none() {
            return Some(line_at(text, k.span().start));
        }
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => return Some(line_at(text, k.span().start)),
        }
    }
    None
}

/// `field` of toml's "missing field `field`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .strip_suffix('`')
        .filter(|f| !f.is_empty())
}

/// The dotted path of the table whose value span is `span` (a table header or an inline
/// table).
fn table_at(table: &DeTable<'_>, span: &std::ops::Range<usize>, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        if let DeValue::Table(t) = v.get_ref() {
            let path = join(prefix, k.get_ref());
            if v.span() == *span {
                return Some(path);
            }
            if let Some(found) = table_at(t, span, &path) {
                return Some(found);
            }
        }
    }
    None
}

/// The deepest dotted key whose key or value holds byte `pos`.
fn key_at(table: &DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        if let DeValue::Table(t) = v.get_ref() {
            if let Some(found) = key_at(t, pos, &path) {
                return Some(found);
            }
        }
        if k.span().contains(&pos) || v.span().contains(&pos) {
            return Some(path);
        }
    }
    None
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line of byte `pos`.
fn line_at(text: &str, pos: usize) -> usize {
    let end = pos.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A message on one line (a serde message could hold newlines).
fn one_line(message: &str) -> String {
    message.trim().lines().collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 99), 3);
    }

    #[test]
    fn keys_are_found_in_tables_and_inline_tables() {
        let text = "a = 1\n[t]\nb = 2\nc = { d = 3 }\n";
        assert_eq!(line_of_key(text, "a"), Some(1));
        assert_eq!(line_of_key(text, "t"), Some(2));
        assert_eq!(line_of_key(text, "t.b"), Some(3));
        assert_eq!(line_of_key(text, "t.c.d"), Some(4));
        assert_eq!(line_of_key(text, "t.x"), None);
        let (doc, _) = DeTable::parse_recoverable(text);
        let pos = text.find("3").unwrap();
        assert_eq!(key_at(doc.get_ref(), pos, "").as_deref(), Some("t.c.d"));
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\n"), "a; b");
        assert_eq!(missing_field("missing field `url`"), Some("url"));
        assert_eq!(missing_field("unknown field `url`"), None);
    }
}
