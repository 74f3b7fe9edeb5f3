//! The rules a nick must follow, apart from being free.

use std::fmt;

/// The longest nick, in characters (which are all ASCII, so also bytes).
pub(super) const MAX_NICK: usize = 32;

/// The operator's nick: what the server console says is shown under it, so
/// no client may take it.
pub(super) const OPERATOR: &str = "server";

/// Why a nick was refused; its `Display` is the text after `ERR `.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BadNick {
    /// `/nick` with no name.
    Missing,
    /// More than [`MAX_NICK`] characters.
    TooLong,
    /// A character that is not an ASCII letter, a digit, `_` or `-`.
    BadCharacter,
    /// The operator's nick, in any case.
    Reserved,
}

impl fmt::Display for BadNick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadNick::Missing => f.write_str("usage: /nick NAME"),
            BadNick::TooLong => write!(f, "nick too long (max {MAX_NICK} characters)"),
            BadNick::BadCharacter => f.write_str("a nick may only have letters, digits, _ and -"),
            BadNick::Reserved => write!(f, "nick {OPERATOR} is reserved"),
        }
    }
}

/// Checks the form of `name`: 1 to [`MAX_NICK`] ASCII letters, digits, `_`
/// or `-`, and not the operator's. Keeping nicks to these characters means
/// they never need cleaning, cannot hide in spaces, and compare without case
/// with a plain ASCII comparison.
pub(super) fn check(name: &str) -> Result<(), BadNick> {
    if name.is_empty() {
        Err(BadNick::Missing)
    } else if !name.bytes().all(is_name_byte) {
        Err(BadNick::BadCharacter)
    } else if name.len() > MAX_NICK {
        Err(BadNick::TooLong)
    } else if name.eq_ignore_ascii_case(OPERATOR) {
        Err(BadNick::Reserved)
    } else {
        Ok(())
    }
}

/// Whether `b` may be in a nick (or a room's name, after its `#`): an
/// ASCII letter, a digit, `_` or `-`.
pub(super) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_underscore_and_dash_up_to_32() {
        assert_eq!(check("alice"), Ok(()));
        assert_eq!(check("Bob_2-x"), Ok(()));
        assert_eq!(check(&"a".repeat(32)), Ok(()));
    }

    #[test]
    fn refusals() {
        assert_eq!(check(""), Err(BadNick::Missing));
        assert_eq!(check(&"a".repeat(33)), Err(BadNick::TooLong));
        assert_eq!(check("al ice"), Err(BadNick::BadCharacter));
        assert_eq!(check("<bob>"), Err(BadNick::BadCharacter));
        assert_eq!(
            check("élise"),
            Err(BadNick::BadCharacter),
            "ASCII letters only"
        );
        assert_eq!(check("server"), Err(BadNick::Reserved));
        assert_eq!(check("SeRvEr"), Err(BadNick::Reserved));
    }
}
