//! Making strings from an untrusted source (a guest) safe to print on a terminal.

use std::borrow::Cow;

/// Whether `c` could move the cursor, recolour or reorder text on a terminal: control
/// characters (C0, DEL, C1 such as CSI) and the bidirectional-text overrides.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every control character and bidi override written as `\u{..}` (so `ESC [ 2 J`
/// prints as `\u{1b}[2J`); borrowed when nothing needed escaping. Use it on every
/// guest-chosen string a text output prints (JSON output is escaped by serde already).
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`printable`] but keeps line feeds, for messages that are several lines on purpose.
pub fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

/// `s` on one line: its lines trimmed, empty ones dropped, joined with ` | ` (for a
/// message that must fit one log line or one protocol field).
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_trimmed_lines() {
        assert_eq!(one_line("a\n\n b \n"), "a | b");
        assert_eq!(one_line("x"), "x");
    }

    #[test]
    fn escapes_terminal_controls_only() {
        assert!(matches!(printable("eth0 é ü"), Cow::Borrowed(_)));
        assert_eq!(
            printable("\x1b[2Jeth\r0\u{9b}"),
            "\\u{1b}[2Jeth\\u{d}0\\u{9b}"
        );
        assert_eq!(printable("a\u{202e}b\n"), "a\\u{202e}b\\u{a}");
        assert_eq!(printable_lines("a\x07\nb"), "a\\u{7}\nb");
    }
}
