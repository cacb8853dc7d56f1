//! Text that came from outside, made safe to show to people: control characters (C0, DEL, C1),
//! bidirectional overrides and isolates, and line and paragraph separators are escaped, so that
//! input can neither start a new line of a report or log nor make one read like another.

use std::borrow::Cow;

/// `text` with every character that could move or reorder what a terminal shows written as
/// `\u{XXXX}`.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    // `is_control` is Unicode's Cc: C0, DEL and C1.
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_moves_text_and_nothing_else() {
        assert!(matches!(escape_controls("plain ünïcode, tabs? no"), Cow::Borrowed(_)));
        let hostile = "a\nOK   1 batches\r\u{1b}[2K\u{85}\u{202e}kcatta\u{2066}\u{2028}\u{7f}";
        let shown = escape_controls(hostile);
        assert_eq!(
            shown,
            "a\\u{000a}OK   1 batches\\u{000d}\\u{001b}[2K\\u{0085}\\u{202e}kcatta\\u{2066}\\u{2028}\\u{007f}"
        );
        assert!(!shown.chars().any(needs_escape));
    }
}
