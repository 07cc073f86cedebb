//! Go's `text/tabwriter` as the docker CLI configures it (minimum width 10,
//! padding 3, spaces, no flags): cells end at a tab, a column is as wide
//! as its widest cell in a run of consecutive lines that have it, and the
//! last cell of a line is never padded.

/// Docker's tabwriter settings.
pub const MIN_WIDTH: usize = 10;
pub const PADDING: usize = 3;

/// Aligns tab-separated `text` (lines ending in '\n') as Go's tabwriter
/// does with minimum width `min_width` and `padding`.
pub fn align(text: &str, min_width: usize, padding: usize) -> String {
    let mut lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    // The text after the last newline is a line of its own, kept as is.
    let trailing = lines.pop().map(|l| l.join("\t")).unwrap_or_default();
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len()]).collect();
    format_block(&lines, &mut widths, 0, lines.len(), 0, min_width, padding);
    let mut out = String::with_capacity(text.len() * 2);
    for (line, cell_widths) in lines.iter().zip(&widths) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < line.len() {
                let pad = cell_widths[j].saturating_sub(width(cell));
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out.push_str(&trailing);
    out
}

/// Go's `Writer.format`: for lines `line0..line1`, sets the widths of
/// column `column` block by block, recursing into the lines that have more.
fn format_block(
    lines: &[Vec<&str>],
    widths: &mut [Vec<usize>],
    line0: usize,
    line1: usize,
    column: usize,
    min_width: usize,
    padding: usize,
) {
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        // A block of consecutive lines with a cell in this column.
        let start = this;
        let mut w = min_width;
        while this < line1 && column + 1 < lines[this].len() {
            w = w.max(width(lines[this][column]) + padding);
            this += 1;
        }
        for row in widths.iter_mut().take(this).skip(start) {
            row[column] = w;
        }
        format_block(lines, widths, start, this, column + 1, min_width, padding);
    }
}

/// The width of a cell: its characters (Go counts runes).
fn width(cell: &str) -> usize {
    cell.chars().count()
}

/// Aligns with docker's settings.
pub fn docker_align(text: &str) -> String {
    align(text, MIN_WIDTH, PADDING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_widest_cell_plus_padding_and_at_least_ten() {
        let text = "CONTAINER ID\tIMAGE\tNAMES\nabc\tbusybox:latest\tx\n";
        assert_eq!(
            docker_align(text),
            "CONTAINER ID   IMAGE            NAMES\n\
             abc            busybox:latest   x\n"
        );
    }

    #[test]
    fn short_cells_still_fill_the_minimum_width() {
        assert_eq!(docker_align("A\tB\nc\td\n"), "A         B\nc         d\n");
    }

    #[test]
    fn the_last_cell_is_never_padded_and_blocks_are_separate() {
        let text = "a\tb\nlonger-than-ten\nx\ty\n";
        assert_eq!(
            docker_align(text),
            "a         b\nlonger-than-ten\nx         y\n"
        );
    }

    #[test]
    fn multibyte_cells_count_characters() {
        assert_eq!(docker_align("\"sh…\"\tz\n"), "\"sh…\"     z\n");
    }
}
