//! How results reach the operator: tables by default, JSON with `--output json`, JSON lines for
//! message streams. Writes go through `io::Result` so a closed pipe (`sagactl ... | head`)
//! ends the command quietly instead of panicking.

use std::io::{self, Write as _};

use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// A borderless table with upper-case headers, never wrapped (long cells stay on one line so
/// `grep` and `less -S` work).
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    if header.iter().any(|h| !h.is_empty()) {
        table.set_header(header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>());
    }
    table
}

/// Print a table (or `empty` when it has no rows), its columns two spaces apart.
pub fn print_table(table: &mut Table, empty: &str) -> io::Result<()> {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = io::stdout().lock();
    if table.is_empty() {
        writeln!(out, "{empty}")
    } else {
        for line in table.lines() {
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Print a value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Print one JSON value on one line (a JSON-lines stream).
pub fn print_json_line<T: Serialize>(out: &mut impl io::Write, value: &T) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Print a line of text.
pub fn print_line(line: &str) -> io::Result<()> {
    writeln!(io::stdout().lock(), "{line}")
}

/// Did this error come from writing to a closed pipe?
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || cause.downcast_ref::<serde_json::Error>().and_then(|e| e.io_error_kind())
                == Some(io::ErrorKind::BrokenPipe)
    })
}

/// Amounts are integer minor units of EUR.
pub fn money(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02} EUR", minor.abs() / 100, minor.abs() % 100)
}

/// At most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_in_major_units() {
        assert_eq!(money(3000), "30.00 EUR");
        assert_eq!(money(905), "9.05 EUR");
        assert_eq!(money(-50), "-0.50 EUR");
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        assert_eq!(truncate("short", 10), "short");
    }
}
