//! Tables for a person at a terminal: a bold header, container states and
//! health in colour, and columns cut with an ellipsis to the terminal's
//! width rather than wrapped. Only the default tables on a terminal with
//! `NO_COLOR` unset; `--format` and pipes get docker's bytes.

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};

use super::table::{MIN_WIDTH, PADDING};

/// The width to draw for when stdout is a terminal and colour is wanted:
/// `COLUMNS` if set, else the terminal's (TIOCGWINSZ).
pub fn terminal() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return None;
    }
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0);
    Some(columns.unwrap_or_else(super::terminal_width))
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// How a cell of the column headed `header` is drawn.
pub fn cell_style(header: &str, cell: &str) -> Style {
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match header {
        "STATUS" => {
            if cell.contains("(unhealthy)") {
                fg(AnsiColor::Red).bold()
            } else if cell.contains("(health: starting)")
                || cell.contains("(Paused)")
                || cell.starts_with("Restarting")
            {
                fg(AnsiColor::Yellow)
            } else if cell.starts_with("Up") {
                fg(AnsiColor::Green)
            } else if cell.starts_with("Exited (0)") {
                Style::new().dimmed()
            } else if cell.starts_with("Exited") || cell.starts_with("Dead") {
                fg(AnsiColor::Red)
            } else if cell.starts_with("Created") {
                fg(AnsiColor::Cyan)
            } else {
                Style::new()
            }
        }
        "STATE" => match cell {
            "running" => fg(AnsiColor::Green),
            "paused" | "restarting" => fg(AnsiColor::Yellow),
            "exited" | "dead" => fg(AnsiColor::Red),
            "created" => fg(AnsiColor::Cyan),
            _ => Style::new(),
        },
        _ => Style::new(),
    }
}

/// Cuts `cell` to `max` characters, the last one "…" when cut.
fn cut(cell: &str, max: usize) -> String {
    super::ellipsis(cell, max)
}

/// Draws tab-separated `text` (a header line, then rows) as a table at
/// most `columns` wide: docker's column widths (the widest cell plus 3, at
/// least 10, the last column unpadded), the widest of the middle columns
/// narrowed first, then the last, never the first, none below its header
/// (or 4 characters), their cells cut with "…".
pub fn table(text: &str, columns: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .collect();
    let Some(header) = lines.first() else {
        return String::new();
    };
    let n = lines.iter().map(Vec::len).max().unwrap_or(0);
    // Content widths, and the widths columns are drawn at (padding in).
    let mut content = vec![0usize; n];
    for line in &lines {
        for (j, cell) in line.iter().enumerate() {
            content[j] = content[j].max(width(cell));
        }
    }
    let mut drawn: Vec<usize> = content
        .iter()
        .enumerate()
        .map(|(j, w)| {
            if j + 1 == n {
                *w
            } else {
                (w + PADDING).max(MIN_WIDTH)
            }
        })
        .collect();
    let floor: Vec<usize> = (0..n)
        .map(|j| {
            let head = header.get(j).map_or(0, |h| width(h));
            let least = head.max(4);
            if j + 1 == n {
                least
            } else {
                least + PADDING
            }
        })
        .collect();
    // Narrow the widest column that can still give, one at a time: the
    // middle ones first, then the last (the names), never the first (ids).
    for candidates in [1..n.saturating_sub(1), 1..n] {
        while drawn.iter().sum::<usize>() > columns {
            let widest = candidates
                .clone()
                .filter(|&j| drawn[j] > floor[j])
                .max_by_key(|&j| (drawn[j] - floor[j], j));
            match widest {
                Some(j) => drawn[j] -= 1,
                None => break,
            }
        }
    }
    let mut out = String::with_capacity(text.len() * 2);
    for (i, line) in lines.iter().enumerate() {
        let mut row = String::new();
        for (j, cell) in line.iter().enumerate() {
            let last = j + 1 == line.len();
            let room = if j + 1 == n {
                drawn[j]
            } else {
                drawn[j] - PADDING
            };
            let shown = cut(cell, room);
            let style = if i == 0 {
                Style::new().bold()
            } else {
                cell_style(header.get(j).copied().unwrap_or(""), cell)
            };
            if style == Style::new() {
                row.push_str(&shown);
            } else {
                row.push_str(&format!("{style}{shown}{style:#}"));
            }
            if !last {
                row.extend(std::iter::repeat_n(' ', drawn[j] - width(&shown)));
            }
        }
        out.push_str(row.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn wide_enough_is_dockers_layout_with_styles() {
        let text = "NAMES\tSTATUS\nweb\tUp 2 seconds\n";
        let drawn = table(text, 80);
        assert_eq!(plain(&drawn), "NAMES     STATUS\nweb       Up 2 seconds\n");
        assert!(drawn.starts_with("\x1b[1mNAMES"), "{drawn:?}");
        assert!(drawn.contains("\x1b[32mUp 2 seconds"), "{drawn:?}");
    }

    #[test]
    fn narrow_terminals_cut_the_widest_column() {
        let text = "ID\tCOMMAND\tNAMES\nabc\tsh -c 'while true; do sleep 1; done'\tweb\n";
        let drawn = plain(&table(text, 30));
        for line in drawn.lines() {
            assert!(line.chars().count() <= 30, "{line:?} in {drawn}");
        }
        assert!(drawn.contains("sh -c"), "{drawn}");
        assert!(drawn.contains('…'), "{drawn}");
        assert!(drawn.lines().nth(1).unwrap().ends_with("web"), "{drawn}");
    }

    #[test]
    fn states_and_health() {
        assert_eq!(
            cell_style("STATUS", "Up 1 minute (unhealthy)"),
            Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
        );
        assert_eq!(
            cell_style("STATUS", "Exited (1) 2 seconds ago"),
            Style::new().fg_color(Some(AnsiColor::Red.into()))
        );
        assert_eq!(cell_style("NAMES", "Up"), Style::new());
    }
}
