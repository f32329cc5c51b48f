//! Printing results: `-o json` prints the API's JSON document (parsed by the generated types and
//! written back: the same members in the same order), `-o table` aligned columns for people,
//! `-o id` only the id, for shell variables.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use crate::failure::Failure;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (a list) or KEY VALUE rows (one resource).
    Table,
    /// The API's JSON document, one line.
    Json,
    /// Only the `id` (a file's `path`, a key's `key`; one per line for a list): `AGENT=$(turnstone agents create … -o id)`.
    Id,
}

/// Prints one response: a list (`data`) as rows with `columns`, anything else as KEY VALUE rows.
pub fn print<T: Serialize>(format: Format, value: &T, columns: &[&str]) -> Result<(), Failure> {
    print_as(format, value, columns, "id")
}

/// [`print`] for a resource named by another member than `id` (a file's `path`, a key's `key`):
/// `-o id` prints that member.
pub fn print_as<T: Serialize>(format: Format, value: &T, columns: &[&str], id: &str) -> Result<(), Failure> {
    let value = serde_json::to_value(value).map_err(|e| Failure::usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    let text = match format {
        Format::Json => format!("{value}\n"),
        Format::Id => match value.get("data").and_then(Value::as_array) {
            Some(rows) => rows.iter().map(|r| format!("{}\n", cell(&r[id]))).collect(),
            None => format!("{}\n", cell(value.get(id).unwrap_or(&value))),
        },
        Format::Table => match value.get("data").and_then(Value::as_array) {
            Some(rows) if !columns.is_empty() => {
                let mut text = rows_table(rows, columns);
                if let Some(cursor) = value.get("next_cursor").and_then(Value::as_str) {
                    text.push_str(&format!("(more: --after {cursor})\n"));
                }
                if let Some(after) = value.get("next_after_sequence").and_then(Value::as_i64) {
                    text.push_str(&format!("(more: --after-sequence {after})\n"));
                }
                text
            }
            _ => object_table(&value),
        },
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// One cell: strings bare, `null` as `-`, arrays of strings comma-joined, the rest as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

fn rows_table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| columns.iter().map(|c| cell(row.get(*c).unwrap_or(&Value::Null))).collect()).collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cols: &[String]| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut text = line(&headers);
    for row in &cells {
        text.push_str(&line(row));
    }
    text
}

fn object_table(value: &Value) -> String {
    let Some(object) = value.as_object() else { return format!("{}\n", cell(value)) };
    let width = object.keys().map(|k| k.len()).max().unwrap_or(0);
    object.iter().map(|(k, v)| format!("{k:<width$}  {}\n", cell(v))).collect()
}
