//! The echo server's handler (server4): every byte received goes straight
//! back, and a line saying `bye` ends the connection.

use reactor::{ConnId, Context, Handler, Input};

/// Echoes a stream byte for byte, at once: no framing, no waiting for a
/// newline, binary data welcome.
///
/// Unless `raw`, a line that is `bye` — any case, surrounded by any
/// whitespace, ended by `\n` or `\r\n` — is echoed and the connection then
/// closed. Anything after that line is discarded.
#[derive(Debug)]
pub struct Echo {
    raw: bool,
}

impl Echo {
    /// An echo handler; `raw` turns off the `bye` rule.
    pub fn new(raw: bool) -> Echo {
        Echo { raw }
    }
}

/// Follows `data` from `line`, where the connection's current line stands,
/// and returns the offset just past the first complete `bye` line, if
/// there is one. Otherwise leaves in `line` where the unfinished line
/// stands, for the next read.
fn find_bye(line: &mut Line, data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < data.len() {
        if *line == Line::Other {
            // This line cannot be `bye`: skip to its end at memchr's
            // speed rather than stepping the state machine over every
            // byte, which made echoing large messages cost microseconds.
            match memchr::memchr(b'\n', &data[i..]) {
                Some(end) => {
                    i += end + 1;
                    *line = Line::Blank;
                    continue;
                }
                None => break,
            }
        }
        match data[i] {
            b'\n' if *line == Line::Bye => return Some(i + 1),
            b'\n' => *line = Line::Blank,
            byte => *line = line.next(byte),
        }
        i += 1;
    }
    None
}

impl Handler for Echo {
    type Message = ();
    /// Where the connection's current line stands; untouched when `raw`.
    type Conn = Line;

    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        line: &mut Line,
        input: &mut Input<'_>,
    ) {
        let bye = if self.raw {
            None
        } else {
            find_bye(line, input)
        };
        let end = bye.unwrap_or(input.len());
        // Written through from the input itself; only what the socket does
        // not take is copied.
        cx.send(id, &input[..end]);
        input.clear();
        if bye.is_some() {
            // Closes once the echo of `bye` has been written.
            cx.close(id);
        }
    }
}

/// How far a connection's current line has got towards being `bye`: the
/// echo's state of each connection, kept by the driver. One byte however
/// long the line is, so any amount of whitespace around the word is
/// recognised without buffering the line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Line {
    /// Nothing but whitespace so far: a new line.
    #[default]
    Blank,
    /// `b`, after optional whitespace.
    B,
    /// `by`.
    By,
    /// `bye`, then only whitespace (which includes the `\r` of `\r\n`).
    Bye,
    /// Anything else: this line cannot be `bye`.
    Other,
}

impl Line {
    /// The state after one more byte of the line (never its `\n`).
    fn next(self, byte: u8) -> Line {
        match (self, byte.to_ascii_lowercase()) {
            (Line::Blank | Line::Bye, b) if b.is_ascii_whitespace() => self,
            (Line::Blank, b'b') => Line::B,
            (Line::B, b'y') => Line::By,
            (Line::By, b'e') => Line::Bye,
            _ => Line::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactor::testing::Harness;
    use reactor::CloseReason;

    fn echo() -> Harness<Echo> {
        Harness::new(Echo::new(false))
    }

    #[test]
    fn echoes_binary_bytes_unchanged() {
        let mut h = echo();
        let id = h.connect();
        let bytes: Vec<u8> = (0..=255).collect();
        h.receive(id, &bytes);
        assert_eq!(h.take(id), bytes);
        assert_eq!(h.pending_input(id), 0);
        assert_eq!(h.closed(id), None);
    }

    #[test]
    fn echoes_at_once_without_a_newline() {
        let mut h = echo();
        let id = h.connect();
        h.receive(id, "Hi");
        assert_eq!(h.take_text(id), "Hi");
    }

    #[test]
    fn bye_is_echoed_then_closes() {
        let mut h = echo();
        let id = h.connect();
        h.receive(id, "hello\nbye\n");
        assert_eq!(h.take_text(id), "hello\nbye\n");
        assert_eq!(h.closed(id), Some(CloseReason::Requested));
    }

    #[test]
    fn bye_ignores_case_whitespace_and_crlf() {
        for line in ["BYE  \r\n", " \tBye\n", "bYe\r\n"] {
            let mut h = echo();
            let id = h.connect();
            h.receive(id, line);
            assert_eq!(h.take_text(id), line);
            assert_eq!(h.closed(id), Some(CloseReason::Requested), "{line:?}");
        }
    }

    #[test]
    fn what_follows_bye_is_not_echoed() {
        let mut h = echo();
        let id = h.connect();
        h.receive(id, "bye\nmore\n");
        assert_eq!(h.take_text(id), "bye\n");
        assert_eq!(h.closed(id), Some(CloseReason::Requested));
    }

    #[test]
    fn bye_split_across_reads() {
        let mut h = echo();
        let id = h.connect();
        for part in ["b", "ye", "\r", "\n"] {
            assert_eq!(h.closed(id), None);
            h.receive(id, part);
            assert_eq!(h.take_text(id), part);
        }
        assert_eq!(h.closed(id), Some(CloseReason::Requested));
    }

    #[test]
    fn other_lines_do_not_close() {
        let mut h = echo();
        let id = h.connect();
        for line in [
            "byebye\n",
            "bye x\n",
            "b ye\n",
            "by\n",
            "\n",
            "goodbye\n",
            "bye",
        ] {
            h.receive(id, line);
            assert_eq!(h.take_text(id), line);
            assert_eq!(h.closed(id), None, "{line:?}");
        }
    }

    #[test]
    fn bye_after_a_long_line_closes() {
        let mut h = echo();
        let id = h.connect();
        let long = "x".repeat(100_000);
        h.receive(id, &long);
        h.receive(id, "\nbye\n");
        assert_eq!(h.take(id).len(), long.len() + 5);
        assert_eq!(h.closed(id), Some(CloseReason::Requested));
    }

    #[test]
    fn raw_never_closes() {
        let mut h = Harness::new(Echo::new(true));
        let id = h.connect();
        h.receive(id, "b");
        h.receive(id, "ye\nbye\r\nBYE\n");
        assert_eq!(h.take_text(id), "bye\nbye\r\nBYE\n");
        assert_eq!(h.closed(id), None);
        assert_eq!(h.state(id), Some(&Line::Blank), "raw follows no line");
    }

    #[test]
    fn each_connection_follows_its_own_line() {
        let mut h = echo();
        let a = h.connect();
        let b = h.connect();
        h.receive(a, "hello\n");
        assert_eq!(h.state(a), Some(&Line::Blank), "at the start of a line");
        h.receive(a, "by");
        h.receive(b, "b");
        assert_eq!(h.state(a), Some(&Line::By));
        assert_eq!(h.state(b), Some(&Line::B));
        h.receive(b, "x\n");
        h.receive(a, "e\n");
        assert_eq!(h.closed(a), Some(CloseReason::Requested));
        assert_eq!(h.closed(b), None, "b's `bx` is not a's `bye`");
        assert_eq!(h.state(a), None, "the state went with the connection");
    }
}
