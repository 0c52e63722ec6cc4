//! Text from disk or from users made safe for one line of a table: a
//! snapshot comment with a newline must not start a fake row, and one with
//! a terminal escape sequence must not recolour or rewrite the screen.
//! JSON output never goes through here (serde escapes on its own).

use std::fmt::Write;

/// `s` with every control character escaped: `\n`, `\r`, `\t` as such, any
/// other C0/C1 control or DEL as `\xNN` (or `\u{NNNN}` above 0xff). Other
/// text, backslashes included, is left as it is.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// [`one_line`] on every cell of a table row.
pub fn row(cells: Vec<String>) -> Vec<String> {
    cells.iter().map(|c| one_line(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(one_line("plain comment"), "plain comment");
        assert_eq!(one_line("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(one_line("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(one_line("del\x7f c1\u{9b}"), "del\\x7f c1\\x9b");
        assert_eq!(one_line("C:\\path ünïcode"), "C:\\path ünïcode");
        assert!(!one_line("x\ny\u{85}z").contains(['\n', '\u{85}']));
    }
}
