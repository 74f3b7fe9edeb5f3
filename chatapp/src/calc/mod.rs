//! A calculator served over a line protocol: the worked example of
//! docs/extending.md.
//!
//! Each line is an arithmetic expression; the answer is one line with its
//! value, or `ERR` and the reason:
//!
//! ```text
//! > 1 + 2 * 3          < 7
//! > -2^2               < -4
//! > 1/3                < 0.3333333333333333
//! > 2 x 3              < ERR unexpected 'x' at column 3
//! > 1/0                < ERR division by zero
//! > hi                 < Hello
//! > bye                < Bye            (and the server closes)
//! ```
//!
//! Lines end in `\n` (a `\r` before it is dropped) and are at most
//! [`MAX_LINE`] bytes: a longer one is answered `ERR line too long` and the
//! connection closed, since the rest of the stream can no longer be framed.
//! Blank lines get no answer. `hi` and `bye` are matched ignoring case and
//! surrounding whitespace. The expression language is described in
//! [`evaluate`].
//!
//! [`EndLines`] serves clients that send each message with one write and
//! no newline: `examples/calc_server` wraps `Calc` in it, so that an
//! expression left without its line end for [`QUIET`] is answered too.

mod parser;
mod quiet;

pub use parser::{evaluate, CalcError, MAX_DEPTH};
pub use quiet::{EndLines, QUIET, QUIET_TAG};

use bytes::Bytes;
use reactor::{ConnId, Context, Handler, Input, LineTooLong};

/// The longest line accepted, in bytes, not counting its `\n` or `\r\n`.
pub const MAX_LINE: usize = 1024;

/// The calculator handler. It keeps no state: an expression is answered as
/// soon as its line is complete, and the loop keeps any partial line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calc;

impl Handler for Calc {
    type Message = ();
    type Conn = ();

    fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
        while let Some(line) = input.next_line(MAX_LINE) {
            let line = match line {
                Ok(line) => line,
                Err(LineTooLong) => {
                    cx.send(id, &too_long());
                    cx.close(id);
                    return;
                }
            };
            let Ok(text) = std::str::from_utf8(line) else {
                cx.send(id, b"ERR line is not valid UTF-8\n");
                continue;
            };
            let command = text.trim();
            if command.is_empty() {
                continue;
            }
            if command.eq_ignore_ascii_case("bye") {
                cx.send(id, b"Bye\n");
                // Lines after `bye` in the same read are left unanswered:
                // once closing, the connection's input is discarded.
                cx.close(id);
                return;
            }
            let reply = if command.eq_ignore_ascii_case("hi") {
                "Hello".to_owned()
            } else {
                // The untrimmed text, so that error columns match the line as sent.
                match evaluate(text) {
                    Ok(value) => format_number(value),
                    Err(e) => format!("ERR {e}"),
                }
            };
            cx.send(id, (reply + "\n").as_bytes());
        }
    }
}

/// The answer to an overlong line.
fn too_long() -> Bytes {
    Bytes::from(format!("ERR line too long (max {MAX_LINE} bytes)\n"))
}

/// Writes a result the way a calculator shows it: integers without `.0`,
/// other numbers in the shortest form that reads back as the same `f64`
/// (`0.3333333333333333`), and very large or very small magnitudes in
/// exponent form (`1e300`, `1.5e-7`) rather than as hundreds of digits.
pub fn format_number(value: f64) -> String {
    // -0 is a floating-point artefact (`-0 * 5`); a calculator shows 0.
    if value == 0.0 {
        return "0".to_owned();
    }
    // The same bounds as JavaScript's Number#toString.
    if (1e-6..1e21).contains(&value.abs()) {
        format!("{value}")
    } else {
        format!("{value:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactor::testing::Harness;
    use reactor::CloseReason;

    #[test]
    fn formats_numbers_like_a_calculator() {
        assert_eq!(format_number(7.0), "7");
        assert_eq!(format_number(-4.0), "-4");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(2f64.powi(53)), "9007199254740992");
        assert_eq!(format_number(1e21), "1e21");
        assert_eq!(format_number(1e300), "1e300");
        assert_eq!(format_number(1.5e-7), "1.5e-7");
        assert_eq!(format_number(0.000001), "0.000001");
    }

    #[test]
    fn answers_each_line() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, "Hi\n");
        assert_eq!(h.take_text(c), "Hello\n");
        h.receive(c, "1 + 2 * 3\n");
        assert_eq!(h.take_text(c), "7\n");
        h.receive(c, "1/3\r\n");
        assert_eq!(h.take_text(c), "0.3333333333333333\n");
        h.receive(c, "2 x 3\n");
        assert_eq!(h.take_text(c), "ERR unexpected 'x' at column 3\n");
        h.receive(c, "1 % 0\n");
        assert_eq!(h.take_text(c), "ERR division by zero\n");
        assert_eq!(h.closed(c), None, "errors in expressions do not close");
    }

    #[test]
    fn answers_several_lines_from_one_read() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, "2^3^2\n\n   \n-2^2\n10^400\n");
        assert_eq!(h.take_text(c), "512\n-4\nERR overflow\n");
    }

    #[test]
    fn waits_for_the_rest_of_a_split_line() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, "(1 + ");
        assert_eq!(h.take_text(c), "");
        assert_eq!(h.pending_input(c), 5);
        h.receive(c, "2) * 3\r");
        assert_eq!(h.take_text(c), "");
        h.receive(c, "\n4");
        assert_eq!(h.take_text(c), "9\n");
        assert_eq!(h.pending_input(c), 1);
    }

    #[test]
    fn error_columns_count_from_the_start_of_the_line() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, "   1 + x\n");
        assert_eq!(h.take_text(c), "ERR unexpected 'x' at column 8\n");
    }

    #[test]
    fn rejects_invalid_utf8_and_carries_on() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, b"1 + \xff\n2\n");
        assert_eq!(h.take_text(c), "ERR line is not valid UTF-8\n2\n");
    }

    #[test]
    fn bye_says_bye_and_closes() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        h.receive(c, "1+1\n  BYE \n2+2\n");
        assert_eq!(h.take_text(c), "2\nBye\n");
        assert_eq!(h.closed(c), Some(CloseReason::Requested));
    }

    #[test]
    fn an_overlong_line_is_refused_and_closes() {
        let mut h = Harness::new(Calc);
        let c = h.connect();
        // Exactly MAX_LINE bytes is fine.
        let longest = format!("{} ", "1+".repeat(511) + "1");
        assert_eq!(longest.len(), MAX_LINE);
        h.receive(c, format!("{longest}\n"));
        assert_eq!(h.take_text(c), "512\n");

        // One more is refused as soon as it is certain, newline or not.
        h.receive(c, "1".repeat(MAX_LINE + 1));
        assert_eq!(h.take_text(c), "ERR line too long (max 1024 bytes)\n");
        assert_eq!(h.closed(c), Some(CloseReason::Requested));
    }

    #[test]
    fn connections_are_independent() {
        let mut h = Harness::new(Calc);
        let (a, b) = (h.connect(), h.connect());
        h.receive(a, "6 *");
        h.receive(b, "1 + 1\n");
        h.receive(a, " 7\n");
        assert_eq!(h.take_text(a), "42\n");
        assert_eq!(h.take_text(b), "2\n");
    }
}
