//! Rendering of answers: aligned tables and key/value views for people, the envelope's `data`
//! as JSON or YAML for scripts (`-o json|yaml`).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

/// The `-o` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns (lists) or a key/value view (single objects).
    #[default]
    Table,
    /// The server's `data`, as pretty JSON.
    Json,
    /// The server's `data`, as YAML.
    Yaml,
}

impl Format {
    /// The `-o` value: none is a table.
    pub fn parse(s: Option<&str>) -> Result<Format> {
        match s.map(str::trim) {
            None | Some("table") => Ok(Format::Table),
            Some("json") => Ok(Format::Json),
            Some("yaml") => Ok(Format::Yaml),
            Some(other) => {
                anyhow::bail!("-o {other:?}: expected table, json or yaml")
            }
        }
    }
}

/// Prints `data` as JSON or YAML. Returns `false` for [`Format::Table`], which the caller
/// renders itself.
pub fn print_structured<T: Serialize + ?Sized>(format: Format, data: &T) -> Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            let text = serde_json::to_string_pretty(data).context("cannot render JSON")?;
            println!("{text}");
            Ok(true)
        }
        Format::Yaml => {
            print!("{}", to_yaml(data)?);
            Ok(true)
        }
    }
}

/// YAML text of `data`, ending with a newline.
pub fn to_yaml<T: Serialize + ?Sized>(data: &T) -> Result<String> {
    let mut text = serde_norway::to_string(data).context("cannot render YAML")?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A table of text cells with a header row.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns separated by three spaces, no trailing spaces.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| display_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(display_width(&clean(cell)));
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(|c| clean(c)).unwrap_or_default();
                text.push_str(&cell);
                if i + 1 < cols {
                    let pad = width.saturating_sub(display_width(&cell)) + 3;
                    text.push_str(&" ".repeat(pad));
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(&self.header);
        for row in &self.rows {
            line(row);
        }
        out
    }
}

/// A key/value view: `Key:   value` lines with aligned values.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| display_width(k) + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let pad = width.saturating_sub(display_width(&key)) + 2;
        let _ = writeln!(out, "{key}{}{}", " ".repeat(pad), clean(v));
    }
    out
}

/// `-` for empty values, so columns never look shifted.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// The first line of `s`, cut to at most `max` characters (an ellipsis marks the cut), for
/// long free text such as error messages in a table cell.
pub fn truncate(s: &str, max: usize) -> String {
    let first = s.trim().lines().next().unwrap_or("");
    let more_lines = s.trim().lines().nth(1).is_some();
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    } else if more_lines {
        format!("{first} …")
    } else {
        first.to_string()
    }
}

/// Control characters (newlines, tabs, escapes) would break the layout or the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Columns a string takes in a terminal: CJK and other wide characters take two.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let cp = u32::from(c);
    let wide = matches!(cp,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x2FFFD
        | 0x30000..=0x3FFFD);
    if wide {
        2
    } else if (0x0300..=0x036F).contains(&cp) || cp == 0x200B {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let mut t = Table::new(&["NAME", "VERSION"]);
        t.row(vec!["hello-world".into(), "1.0".into()]);
        t.row(vec!["流水线".into(), "10.2".into()]);
        t.row(vec!["a\nb".into(), String::new()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME          VERSION");
        assert_eq!(lines[1], "hello-world   1.0");
        assert_eq!(lines[2], "流水线        10.2");
        assert_eq!(lines[3], "a b");
    }

    #[test]
    fn long_text_is_truncated() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly 10", 10), "exactly 10");
        assert_eq!(truncate("a much longer message", 10), "a much lo…");
        assert_eq!(truncate("abcd efgh", 6), "abcd…");
        assert_eq!(truncate("line one\nline two", 20), "line one …");
        assert_eq!(truncate("", 5), "");
    }

    #[test]
    fn key_values_are_aligned() {
        let text = key_values(&[("Name", "x".into()), ("Created", "t".into())]);
        assert_eq!(text, "Name:     x\nCreated:  t\n");
    }
}
