//! What the ledger's SQL sees of a database: owned parameter and column values, statements
//! written once in the portable dialect ([`crate::ledger::schema`] says which), and the two
//! backends — a SQLite connection in this thread, a PostgreSQL session on its own thread
//! ([`super::pg`]). The ledger's records and rules live in `mod.rs`; this module only moves
//! values in and out.

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::LedgerError;

/// A parameter or column value: the four types the ledger stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (booleans are 0/1, `u64`s are stored bit-preserving).
    Int(i64),
    /// UTF-8 text (ids, names, JSON).
    Text(String),
    /// Bytes (device keys).
    Blob(Vec<u8>),
    /// A whole column of values: a PostgreSQL array, for statements that write many rows at
    /// once (`unnest`). SQLite has no arrays; it refuses one.
    Array(Column),
}

/// A column of values, all of one kind (see [`Value::Array`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    /// `bigint[]`.
    Int(Vec<Option<i64>>),
    /// `text[]`.
    Text(Vec<Option<String>>),
    /// `bytea[]`.
    Blob(Vec<Vec<u8>>),
}

/// The kind of a [`Column`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// See [`Column::Int`].
    Int,
    /// See [`Column::Text`].
    Text,
    /// See [`Column::Blob`].
    Blob,
}

/// Turns rows of values into one [`Value::Array`] per column, of the given kinds. A value of
/// another kind is a bug in the caller, reported as an error, not a panic.
pub fn columns(rows: &[Vec<Value>], kinds: &[ColumnKind]) -> Result<Vec<Value>, LedgerError> {
    let mut out = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let cell = |r: &Vec<Value>| {
            r.get(i)
                .cloned()
                .ok_or_else(|| LedgerError::Corrupt(format!("row without column {i}")))
        };
        let wrong = |v: &Value| LedgerError::Corrupt(format!("column {i}: {v:?} is not {kind:?}"));
        let col = match kind {
            ColumnKind::Int => Column::Int(
                rows.iter()
                    .map(|r| match cell(r)? {
                        Value::Int(x) => Ok(Some(x)),
                        Value::Null => Ok(None),
                        v => Err(wrong(&v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ColumnKind::Text => Column::Text(
                rows.iter()
                    .map(|r| match cell(r)? {
                        Value::Text(x) => Ok(Some(x)),
                        Value::Null => Ok(None),
                        v => Err(wrong(&v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ColumnKind::Blob => Column::Blob(
                rows.iter()
                    .map(|r| match cell(r)? {
                        Value::Blob(x) => Ok(x),
                        v => Err(wrong(&v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        out.push(Value::Array(col));
    }
    Ok(out)
}

/// A Rust value the ledger stores (by reference: [`vals!`] borrows its arguments).
pub trait ToValue {
    /// The stored form.
    fn to_value(&self) -> Value;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}
impl ToValue for u32 {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}
impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}
impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

/// Builds a parameter list: `vals![a, b]` is `vec![a.to_value(), b.to_value()]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { vec![$($crate::ledger::sql::ToValue::to_value(&$v)),*] };
}
pub(crate) use vals;

/// One result row.
#[derive(Debug)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    /// Column `i` as a `T`; a column of another type is a corrupt ledger, not a panic.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, LedgerError> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| LedgerError::Corrupt(format!("row has no column {i}")))?;
        T::from_value(v).ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "column {i} holds {v:?}, not {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A column type the ledger reads.
pub trait FromValue: Sized {
    /// `None` when the value is not of this type.
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}
macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Option<Self> {
                i64::from_value(v).and_then(|i| <$t>::try_from(i).ok())
            }
        }
    )*};
}
from_int!(u8, u16, u32, u64, i32);
impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            _ => None,
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One statement of a write transaction.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// Portable SQL with `?N` placeholders.
    pub sql: &'static str,
    /// Its parameters, `?1` first.
    pub params: Vec<Value>,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
            Value::Array(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "SQLite has no arrays (a PostgreSQL-only statement)".into(),
                ))
            }
        }))
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Result<Value, LedgerError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| LedgerError::Corrupt(format!("text column: {e}")))?
                .to_string(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(LedgerError::Corrupt("unexpected REAL column".into())),
    })
}

/// Runs a query on SQLite through the statement cache.
pub(crate) fn sqlite_query(
    conn: &Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, LedgerError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut cols = Vec::with_capacity(n);
        for i in 0..n {
            cols.push(from_sqlite(r.get_ref(i)?)?);
        }
        out.push(Row(cols));
    }
    Ok(out)
}

/// Runs `stmts` on SQLite in one transaction.
pub(crate) fn sqlite_write(conn: &mut Connection, stmts: &[Stmt]) -> Result<(), LedgerError> {
    let tx = conn.transaction()?;
    for s in stmts {
        tx.prepare_cached(s.sql)?
            .execute(rusqlite::params_from_iter(s.params.iter()))?;
    }
    tx.commit()?;
    Ok(())
}

/// The PostgreSQL spelling of a portable statement: `?N` placeholders become `$N` (the
/// portable SQL never has a `?` anywhere else).
pub fn to_postgres_params(sql: &str) -> Cow<'_, str> {
    if !sql.contains('?') {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(sql.replace('?', "$"))
}

/// The PostgreSQL spelling of a portable migration: SQLite's `INTEGER` is 64-bit, PostgreSQL's
/// is 32-bit, so it becomes `BIGINT`; `BLOB` becomes `BYTEA`. Whole words only.
pub fn to_postgres_ddl(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match word.as_str() {
            "INTEGER" => out.push_str("BIGINT"),
            "BLOB" => out.push_str("BYTEA"),
            w => out.push_str(w),
        }
        word.clear();
    };
    for ch in sql.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    to_postgres_params(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postgres_spelling_changes_types_and_placeholders_only() {
        assert_eq!(
            to_postgres_ddl("CREATE TABLE t (a INTEGER NOT NULL, k BLOB, integer_x TEXT);"),
            "CREATE TABLE t (a BIGINT NOT NULL, k BYTEA, integer_x TEXT);"
        );
        assert_eq!(
            to_postgres_params("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }

    #[test]
    fn a_column_of_the_wrong_type_is_corrupt_not_a_panic() {
        let r = Row(vec![Value::Text("x".into()), Value::Int(-1), Value::Null]);
        assert!(matches!(r.get::<i64>(0), Err(LedgerError::Corrupt(_))));
        assert!(matches!(r.get::<u32>(1), Err(LedgerError::Corrupt(_))));
        assert_eq!(r.get::<Option<u32>>(2).unwrap(), None);
        assert!(matches!(r.get::<i64>(9), Err(LedgerError::Corrupt(_))));
    }

    #[test]
    fn rows_become_one_array_per_column_and_a_misfit_is_an_error() {
        let rows = vec![
            vec![Value::Text("a".into()), Value::Int(1), Value::Blob(vec![1])],
            vec![Value::Null, Value::Null, Value::Blob(vec![])],
        ];
        let kinds = [ColumnKind::Text, ColumnKind::Int, ColumnKind::Blob];
        assert_eq!(
            columns(&rows, &kinds).unwrap(),
            vec![
                Value::Array(Column::Text(vec![Some("a".into()), None])),
                Value::Array(Column::Int(vec![Some(1), None])),
                Value::Array(Column::Blob(vec![vec![1], vec![]])),
            ]
        );
        assert!(
            columns(&rows, &[ColumnKind::Int]).is_err(),
            "text is not int"
        );
        assert!(
            columns(&rows, &[ColumnKind::Text; 4]).is_err(),
            "no fourth column"
        );
        assert!(columns(&[], &kinds).unwrap().iter().all(|c| match c {
            Value::Array(Column::Text(v)) => v.is_empty(),
            Value::Array(Column::Int(v)) => v.is_empty(),
            Value::Array(Column::Blob(v)) => v.is_empty(),
            _ => false,
        }));
        // SQLite refuses an array instead of storing something else.
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (a TEXT)").unwrap();
        let stmt = Stmt {
            sql: "INSERT INTO t (a) VALUES (?1)",
            params: vec![Value::Array(Column::Int(vec![]))],
        };
        assert!(sqlite_write(&mut conn, &[stmt]).is_err());
    }
}
