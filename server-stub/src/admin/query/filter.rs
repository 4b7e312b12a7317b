//! Snow filters (`status -eq "active" -and sku -eq "LIC-AP"`): parsing against the fields a
//! list has, and keeping the items that match.

use serde::Serialize;

use crate::admin::error::ApiError;

/// One condition of a Snow filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Field name (as in the JSON items).
    pub field: String,
    /// `true` for `-eq`, `false` for `-ne`.
    pub equal: bool,
    /// Value to compare with (case-insensitive).
    pub value: String,
}

/// Parses `field -eq "value"` conditions joined by `-and` (`-ne` for not equal; operators in
/// any case; values in double or single quotes; spaces between the parts), naming only
/// `fields`. Exactly what [`crate::admin::schema::filter_pattern`] describes.
pub fn parse_filter(s: &str, fields: &[String]) -> Result<Vec<Condition>, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "filter {s:?}: {why}; expected e.g. status -eq \"active\" -and sku -eq \"LIC-AP\""
        ))
    };
    let mut out = Vec::new();
    let mut rest = s.trim_matches(' ');
    while !rest.is_empty() {
        let (field, r) = rest
            .split_once(' ')
            .ok_or_else(|| bad("incomplete condition"))?;
        if !fields.iter().any(|f| f == field) {
            return Err(bad(&format!(
                "unknown field {field:?}; fields: {}",
                fields.join(", ")
            )));
        }
        let (op, r) = r
            .trim_start_matches(' ')
            .split_once(' ')
            .ok_or_else(|| bad("missing value"))?;
        let equal = if op.eq_ignore_ascii_case("-eq") {
            true
        } else if op.eq_ignore_ascii_case("-ne") {
            false
        } else {
            return Err(bad(&format!("unsupported operator {op}")));
        };
        let r = r.trim_start_matches(' ');
        let quote = r
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| bad("the value must be quoted"))?;
        let body = &r[1..];
        let end = body
            .find(quote)
            .ok_or_else(|| bad("unterminated quoted value"))?;
        out.push(Condition {
            field: field.to_string(),
            equal,
            value: body[..end].to_string(),
        });
        rest = &body[end + 1..];
        if rest.is_empty() {
            break;
        }
        let and = after_spaces(rest).ok_or_else(|| bad("join conditions with -and"))?;
        rest = match and.get(..4) {
            Some(word) if word.eq_ignore_ascii_case("-and") => after_spaces(&and[4..])
                .filter(|r| !r.is_empty())
                .ok_or_else(|| bad("a condition must follow -and"))?,
            _ => return Err(bad("join conditions with -and")),
        };
    }
    Ok(out)
}

/// What follows one or more spaces at the start of `r` (`None` without one).
fn after_spaces(r: &str) -> Option<&str> {
    let rest = r.trim_start_matches(' ');
    (rest.len() < r.len()).then_some(rest)
}

/// Keeps the items matching every condition; a field no item has is a 400.
pub fn apply_filter<T: Serialize>(items: Vec<T>, conds: &[Condition]) -> Result<Vec<T>, ApiError> {
    if conds.is_empty() {
        return Ok(items);
    }
    let mut out = Vec::new();
    for item in items {
        let v =
            serde_json::to_value(&item).map_err(|e| ApiError::internal(format!("filter: {e}")))?;
        let mut keep = true;
        for c in conds {
            let Some(field) = v.get(&c.field) else {
                let fields: Vec<&str> = v
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                return Err(ApiError::bad_request(format!(
                    "filter: unknown field {:?}; fields: {}",
                    c.field,
                    fields.join(", ")
                )));
            };
            let text = match field {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            if text.eq_ignore_ascii_case(&c.value) != c.equal {
                keep = false;
            }
        }
        if keep {
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_parse_eq_ne_and_and() {
        let fields = ["status".to_string(), "sku".to_string()];
        let c = parse_filter(r#" status -eq "active"  -and sku -NE 'LIC-AP' "#, &fields).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c[0].equal && !c[1].equal);
        assert_eq!(c[1].value, "LIC-AP");
        assert!(parse_filter("  ", &fields).unwrap().is_empty());
        for bad in [
            "status",
            "status -gt \"x\"",
            "status -eq x",
            "status -eq \"x\" sku -eq \"y\"",
            "status -eq \"x\"-and sku -eq \"y\"",
            "status -eq \"x\" -and",
            "status\t-eq \"x\"",
            "model -eq \"x\"",
            "status -eq \"x\" -andsku -eq \"y\"",
        ] {
            assert!(parse_filter(bad, &fields).is_err(), "{bad}");
        }
    }
}
