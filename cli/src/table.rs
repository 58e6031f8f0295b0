//! A plain-text table in the style of `kubectl get`: upper-case headers, columns left-aligned
//! and separated by three spaces, no borders, no trailing spaces.

/// Rows of cells under a header line.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: &str = "   ";

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Missing cells are empty; cells beyond the headers are dropped. Line breaks
    /// and tabs in a cell become spaces, so that one row stays one line.
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.headers.len())
            .map(|c| c.into().replace(['\n', '\r', '\t'], " "))
            .collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
        self
    }

    /// The table as text, one line per row, each ending with a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, (cell, w)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str(GAP);
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Display width of a cell (one column per character).
fn width(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(["ID", "NAME", "ROLE"]);
        t.row(["1", "node-a", "leader"]);
        t.row(["12", "b", "follower"]);
        assert_eq!(
            t.render(),
            "ID   NAME     ROLE\n\
             1    node-a   leader\n\
             12   b        follower\n"
        );
    }

    #[test]
    fn no_line_ends_in_spaces_even_with_empty_last_cells() {
        let mut t = Table::new(["A", "B"]);
        t.row(["x"]);
        let out = t.render();
        assert_eq!(out, "A   B\nx\n");
        assert!(out.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn cells_stay_on_one_line_and_extra_cells_are_dropped() {
        let mut t = Table::new(["JSON"]);
        t.row(["{\n  \"a\": 1\n}", "extra"]);
        assert_eq!(t.render(), "JSON\n{   \"a\": 1 }\n");
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut t = Table::new(["NAME", "X"]);
        t.row(["zürich", "1"]);
        assert_eq!(t.render(), "NAME     X\nzürich   1\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(["NAME", "SHARDS"]);
        assert_eq!(t.render(), "NAME   SHARDS\n");
    }
}
