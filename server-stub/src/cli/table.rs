//! Plain text tables for humans: columns padded to their widest cell.

/// A field of an admin API answer as a table cell: as `--json` would show it, without quotes,
/// and `-` where the API says null.
pub trait Cell {
    /// The cell's text.
    fn cell(&self) -> String;
}

impl Cell for str {
    fn cell(&self) -> String {
        self.to_string()
    }
}

impl Cell for String {
    fn cell(&self) -> String {
        self.clone()
    }
}

macro_rules! display_cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn cell(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
display_cell!(u32, u64, bool);

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> String {
        self.as_ref().map_or_else(|| "-".to_string(), Cell::cell)
    }
}

/// A field as a table cell.
pub fn s(v: &(impl Cell + ?Sized)) -> String {
    v.cell()
}

/// Prints a header row and the rows, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    if rows.is_empty() {
        println!("(none)");
    }
    for r in rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::s;

    /// Typed fields render as the untyped JSON cells did: text unquoted, numbers and booleans
    /// as JSON writes them, null (`None`) as `-`.
    #[test]
    fn typed_cells_render_as_the_json_values_did() {
        assert_eq!(s("acme"), "acme");
        assert_eq!(s(&String::from("x y")), "x y");
        assert_eq!(s(&7u32), "7");
        assert_eq!(s(&u64::MAX), "18446744073709551615");
        assert_eq!(s(&true), "true");
        assert_eq!(s(&None::<u32>), "-");
        assert_eq!(s(&Some(4u32)), "4");
        assert_eq!(s(&None::<String>), "-");
        for (typed, json) in [
            (s(&Some("SUB-1".to_string())), serde_json::json!("SUB-1")),
            (s(&Some(12u32)), serde_json::json!(12)),
            (s(&false), serde_json::json!(false)),
        ] {
            let untyped = match &json {
                serde_json::Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            assert_eq!(typed, untyped);
        }
    }
}
