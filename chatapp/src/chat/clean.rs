//! Making a client's text safe to show on everyone else's terminal.

use std::borrow::Cow;

/// Decodes `raw` as UTF-8 and removes every control character but tab.
///
/// Invalid UTF-8 becomes U+FFFD (`�`). Control characters are the C0 set
/// (U+0000–U+001F, which includes ESC and a lone `\r`), DEL (U+007F) and
/// the C1 set (U+0080–U+009F): exactly what [`char::is_control`] matches.
/// Removing ESC and CSI (U+009B) is enough to defuse every ANSI escape
/// sequence: what is left of one, such as `[31m`, is plain text that no
/// terminal acts on.
///
/// Text that needs no change is returned borrowed, so the common case
/// allocates nothing.
pub(super) fn clean(raw: &[u8]) -> Cow<'_, str> {
    match String::from_utf8_lossy(raw) {
        Cow::Borrowed(text) if !text.chars().any(is_unsafe) => Cow::Borrowed(text),
        text => Cow::Owned(text.chars().filter(|&c| !is_unsafe(c)).collect()),
    }
}

/// A character that must not reach a terminal: a control, except tab.
fn is_unsafe(c: char) -> bool {
    c.is_control() && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = clean("héllo\tworld <bob> ☺".as_bytes());
        assert!(matches!(text, Cow::Borrowed(_)));
        assert_eq!(text, "héllo\tworld <bob> ☺");
    }

    #[test]
    fn escape_sequences_lose_their_escape() {
        assert_eq!(clean(b"\x1b[2J\x1b[31mred\x1b[0m"), "[2J[31mred[0m");
        assert_eq!(clean("\u{9b}31mred".as_bytes()), "31mred", "C1 CSI");
        assert_eq!(clean(b"\x1b]0;title\x07x"), "]0;titlex", "OSC and BEL");
    }

    #[test]
    fn every_control_but_tab_is_removed() {
        assert_eq!(clean(b"a\x00b\x08c\rd\x7fe\tf"), "abcde\tf");
        assert_eq!(clean("x\u{85}y\u{9f}z".as_bytes()), "xyz");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(clean(b"a\xffb\xc3"), "a\u{fffd}b\u{fffd}");
        assert_eq!(clean(b"\xff\x1b"), "\u{fffd}");
    }
}
