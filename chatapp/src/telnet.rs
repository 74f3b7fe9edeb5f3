//! Telnet's commands on a line protocol: taken out of a connection's input
//! before it is split into lines, and answered where telnet waits for an
//! answer.
//!
//! `telnet HOST PORT` is a fine client for a line protocol until the user
//! presses Ctrl-C: telnet then sends `IAC IP` (interrupt process) and
//! `IAC DO TIMING-MARK`, and shows nothing more from the server until that
//! is answered (RFC 860). A command is the byte IAC (0xFF) and what follows
//! it (RFC 854):
//!
//! | bytes | what it is | what [`strip`] does |
//! |---|---|---|
//! | `IAC IAC` | a data byte 0xFF | keeps a data byte (see [`ESCAPED_FF`]) |
//! | `IAC DO TIMING-MARK` | "tell me when you got here" | answers `IAC WILL TIMING-MARK` |
//! | `IAC DO x` | "please turn on your option x" | refuses: `IAC WONT x` |
//! | `IAC WILL x` | "may I turn on my option x?" | refuses: `IAC DONT x` |
//! | `IAC WONT x`, `IAC DONT x` | "x is (to be) off" | nothing: every option is off already |
//! | `IAC SB … IAC SE` | a subnegotiation | nothing: there is no option to negotiate |
//! | `IAC` and any other byte | IP, AO, AYT, BRK, EC, EL, GA, NOP, DM, … | nothing |
//!
//! Refusing every option is RFC 854's rule for a party that supports none,
//! and answering only the requests (`DO`, `WILL`), never the refusals, is
//! what keeps two parties from acknowledging each other forever. `IP` and
//! `AO` ask to interrupt a running process and to drop its output: a chat
//! server handles each line at once, so there is neither to stop. `EC` and
//! `EL` (erase a character, a line) are not applied either: in its usual
//! line mode telnet edits a line itself before it sends it.
//!
//! The filter keeps no state of its own. A command cut short by the end of a
//! read is left at the end of the input, as a line cut short is, and read
//! again with the bytes that complete it. That takes at most
//! [`MAX_UNFINISHED`] bytes, even in the middle of a subnegotiation of any
//! length, whose contents are thrown away as they come.

use reactor::Input;

/// "Interpret as command": the byte that starts every telnet command.
const IAC: u8 = 0xFF;
/// The end of a subnegotiation.
const SE: u8 = 0xF0;
/// The start of a subnegotiation.
const SB: u8 = 0xFA;
/// "I will use option x", or asks whether it may.
const WILL: u8 = 0xFB;
/// "I will not use option x".
const WONT: u8 = 0xFC;
/// "Please use option x", or confirms that the peer may.
const DO: u8 = 0xFD;
/// "Do not use option x".
const DONT: u8 = 0xFE;
/// The option RFC 860 defines: `DO TIMING-MARK` asks the receiver to answer
/// `WILL TIMING-MARK` once it has handled everything sent before.
const TIMING_MARK: u8 = 6;

/// What a data byte 0xFF (`IAC IAC`) becomes in the stripped input: 0xFE,
/// which is no more UTF-8 than 0xFF is, so that the chat shows both the same
/// way (U+FFFD). The stripped input must hold no 0xFF: what is left of a
/// partial line is stripped again with the next read, and an 0xFF there
/// would be taken for the start of a command.
pub const ESCAPED_FF: u8 = 0xFE;

/// The most bytes [`strip`] leaves unfinished at the end of the input:
/// `IAC SB IAC`.
pub const MAX_UNFINISHED: usize = 3;

/// What [`strip`] found besides the data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stripped {
    /// The answers the peer is owed, in order, to be sent to it as they
    /// are. Empty (and not allocated) unless it asked for something.
    pub replies: Vec<u8>,
    /// How many bytes at the end of the input are the start of a command
    /// that has not all arrived (0 to [`MAX_UNFINISHED`]). They are not
    /// data: the caller must leave them where they are, after the data,
    /// for the next call to finish.
    pub unfinished: usize,
}

/// Takes telnet's commands out of `input`, in place, and returns the answers
/// they need. Afterwards `input` is the data, which holds no 0xFF, followed
/// by the start of an unfinished command, if the input ended in one.
///
/// Stripping what a previous call left (data, and an unfinished command
/// completed by new bytes) changes only the new part, and answers only the
/// commands completed there. So a caller that consumes only some of its
/// input (whole lines) can strip the whole buffer on every read.
///
/// Input with no 0xFF in it, the usual case, costs one `memchr` and is left
/// as it is.
pub fn strip(input: &mut Input<'_>) -> Stripped {
    let mut stripped = Stripped::default();
    let Some(first) = memchr::memchr(IAC, input) else {
        return stripped;
    };
    let buf = &mut input[..];
    // The data is moved down over the commands: `write` is where the next
    // data byte goes, `read` the next byte to look at, which is an IAC at
    // the top of the loop.
    let (mut write, mut read) = (first, first);
    loop {
        match step(&buf[read..]) {
            Step::Command { len, reply } => {
                if let Some(reply) = reply {
                    stripped.replies.extend_from_slice(&reply);
                }
                read += len;
            }
            Step::Escaped => {
                buf[write] = ESCAPED_FF;
                write += 1;
                read += 2;
            }
            Step::Cut => {
                let len = buf.len() - read;
                buf.copy_within(read.., write);
                stripped.unfinished = len;
                write += len;
                break;
            }
            Step::CutInSubnegotiation { after_iac } => {
                // What matters of it is kept; the contents are not.
                let kept: &[u8] = if after_iac {
                    &[IAC, SB, IAC]
                } else {
                    &[IAC, SB]
                };
                buf[write..write + kept.len()].copy_from_slice(kept);
                stripped.unfinished = kept.len();
                write += kept.len();
                break;
            }
        }
        // The data up to the next command.
        let data = memchr::memchr(IAC, &buf[read..]).unwrap_or(buf.len() - read);
        buf.copy_within(read..read + data, write);
        write += data;
        read += data;
        if read == buf.len() {
            break;
        }
    }
    input.truncate(write);
    stripped
}

/// The command at the start of some input, which starts with IAC.
enum Step {
    /// A whole command of `len` bytes, and its answer if it needs one.
    Command { len: usize, reply: Option<[u8; 3]> },
    /// `IAC IAC`: a data byte 0xFF.
    Escaped,
    /// The input ends within the command, which is all kept: at most two
    /// bytes, an IAC and a verb that needs an option.
    Cut,
    /// The input ends within a subnegotiation, just after an IAC in it if
    /// `after_iac`. Its contents are never needed, only where it stands.
    CutInSubnegotiation { after_iac: bool },
}

/// Reads the command at the start of `input` (`input[0]` is IAC).
fn step(input: &[u8]) -> Step {
    let Some(&verb) = input.get(1) else {
        return Step::Cut;
    };
    match verb {
        IAC => Step::Escaped,
        WILL | WONT | DO | DONT => {
            let Some(&option) = input.get(2) else {
                return Step::Cut;
            };
            let reply = match (verb, option) {
                (DO, TIMING_MARK) => Some([IAC, WILL, TIMING_MARK]),
                (DO, _) => Some([IAC, WONT, option]),
                (WILL, _) => Some([IAC, DONT, option]),
                // Already off: a refusal is never answered.
                _ => None,
            };
            Step::Command { len: 3, reply }
        }
        SB => subnegotiation(input),
        // The other commands are two bytes, and none needs an answer; a stray
        // SE (no SB before it) and bytes that are no command are dropped too.
        _ => Step::Command {
            len: 2,
            reply: None,
        },
    }
}

/// Reads the subnegotiation at the start of `input` (`IAC SB`), up to its
/// `IAC SE`. Inside, `IAC IAC` is an 0xFF of its contents; an IAC before
/// anything else is taken to end it without its SE, as telnetd does, and
/// starts the next command: a malformed subnegotiation cannot swallow the
/// rest of the stream.
fn subnegotiation(input: &[u8]) -> Step {
    let mut i = 2;
    while let Some(at) = memchr::memchr(IAC, &input[i..]) {
        i += at;
        match input.get(i + 1) {
            None => return Step::CutInSubnegotiation { after_iac: true },
            Some(&IAC) => i += 2,
            Some(&SE) => {
                return Step::Command {
                    len: i + 2,
                    reply: None,
                }
            }
            Some(_) => {
                return Step::Command {
                    len: i,
                    reply: None,
                }
            }
        }
    }
    Step::CutInSubnegotiation { after_iac: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    /// What telnet sends after Ctrl-C: interrupt, and "tell me when you got
    /// here".
    const CTRL_C: &[u8] = b"\xff\xf4\xff\xfd\x06";

    /// Strips `bytes` at once: the data, the replies and the unfinished end.
    fn strip_all(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, usize) {
        let mut input = BytesMut::from(bytes);
        let Stripped {
            replies,
            unfinished,
        } = strip(&mut Input::new(&mut input));
        (input.to_vec(), replies, unfinished)
    }

    /// Strips `parts` as a connection would receive them, one read each,
    /// leaving what is stripped in the buffer between reads (a partial line,
    /// as the chat does); returns the data and every reply.
    fn strip_reads(parts: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut input = BytesMut::new();
        let mut replies = Vec::new();
        for part in parts {
            input.extend_from_slice(part);
            let stripped = strip(&mut Input::new(&mut input));
            assert!(stripped.unfinished <= MAX_UNFINISHED);
            replies.extend(stripped.replies);
        }
        (input.to_vec(), replies)
    }

    #[test]
    fn input_without_iac_is_left_as_it_is() {
        let mut input = BytesMut::from(&b"hello, room\r\n\xfe\xc3"[..]);
        let (at, len) = (input.as_ptr(), input.len());
        assert_eq!(strip(&mut Input::new(&mut input)), Stripped::default());
        assert_eq!((input.as_ptr(), input.len()), (at, len), "not moved");
    }

    #[test]
    fn ctrl_c_is_stripped_and_its_timing_mark_answered() {
        let (data, replies, unfinished) =
            strip_all(&[b"abc", CTRL_C, b"after ctrl-c\r\n"].concat());
        assert_eq!(data, b"abcafter ctrl-c\r\n");
        assert_eq!(replies, b"\xff\xfb\x06", "IAC WILL TIMING-MARK");
        assert_eq!(unfinished, 0);
    }

    #[test]
    fn options_are_refused_and_refusals_not_answered() {
        // DO ECHO, WILL NAWS, WONT ECHO, DONT LINEMODE, DO TIMING-MARK.
        let (data, replies, _) =
            strip_all(b"a\xff\xfd\x01b\xff\xfb\x1f\xff\xfc\x01\xff\xfe\x22\xff\xfd\x06c");
        assert_eq!(data, b"abc");
        assert_eq!(replies, b"\xff\xfc\x01\xff\xfe\x1f\xff\xfb\x06");
    }

    #[test]
    fn two_byte_commands_are_dropped() {
        // IP, AO, AYT, EC, EL, NOP, DM, BRK, GA, a stray SE, a non-command.
        let (data, replies, _) =
            strip_all(b"\xff\xf4x\xff\xf5\xff\xf6\xff\xf7\xff\xf8\xff\xf1\xff\xf2\xff\xf3\xff\xf9\xff\xf0\xff\x41y");
        assert_eq!(data, b"xy");
        assert_eq!(replies, b"");
    }

    #[test]
    fn iac_iac_is_a_data_byte_that_is_not_iac() {
        let (data, replies, _) = strip_all(b"a\xff\xffb\xff\xff\xff\xff");
        assert_eq!(data, [b'a', ESCAPED_FF, b'b', ESCAPED_FF, ESCAPED_FF]);
        assert_eq!(replies, b"");
    }

    #[test]
    fn subnegotiations_are_skipped_whole() {
        // NAWS 80x24 with an escaped 0xFF in it, then terminal type.
        let (data, _, _) =
            strip_all(b"a\xff\xfa\x1f\x00\xff\xff\x00\x18\xff\xf0b\xff\xfa\x18\x00xterm\xff\xf0c");
        assert_eq!(data, b"abc");
    }

    #[test]
    fn a_subnegotiation_without_its_end_ends_at_the_next_command() {
        let (data, replies, _) = strip_all(b"a\xff\xfa\x18junk\xff\xfd\x06b");
        assert_eq!(data, b"ab");
        assert_eq!(replies, b"\xff\xfb\x06");
    }

    #[test]
    fn an_unfinished_command_is_left_at_the_end() {
        for (input, data, unfinished) in [
            (&b"ab\xff"[..], &b"ab\xff"[..], 1),
            (b"ab\xff\xfd", b"ab\xff\xfd", 2),
            (b"a\xff\xffb\xff", b"a\xfeb\xff", 1),
            (b"ab\xff\xfa\x1fcontents", b"ab\xff\xfa", 2),
            (b"ab\xff\xfa\x1fcontents\xff", b"ab\xff\xfa\xff", 3),
            (b"ab\xff\xfa\x1f\xff\xff", b"ab\xff\xfa", 2),
        ] {
            assert_eq!(
                strip_all(input),
                (data.to_vec(), Vec::new(), unfinished),
                "{input:?}"
            );
        }
    }

    #[test]
    fn stripping_again_changes_nothing_and_answers_nothing() {
        let once = strip_all(&[b"a\xff\xffb", CTRL_C, b"\xff\xfa\x18xterm"].concat());
        assert_eq!(once.2, 2);
        assert_eq!(strip_all(&once.0), (once.0.clone(), Vec::new(), 2));
    }

    #[test]
    fn a_long_subnegotiation_costs_no_memory() {
        let (data, replies) = strip_reads(&[
            b"a\xff\xfa\x18",
            &[b'x'; 10_000],
            &[b'y'; 10_000],
            b"\xff\xf0b",
        ]);
        assert_eq!(data, b"ab");
        assert_eq!(replies, b"");
    }

    /// Every kind of command, with data around each.
    const STREAM: &[u8] = b"Hi\r\n\xff\xf4\xff\xfd\x06a\xff\xffb\xff\xfb\x1f\xff\xfc\x01\
        c\xff\xfa\x1f\x00\xff\xff\x00\x18\xff\xf0d\xff\xfa\x18x\xff\xfe\x03e\xff\xf0\xff\xf5f\n";

    #[test]
    fn a_read_may_end_anywhere() {
        let whole = strip_reads(&[STREAM]);
        assert_eq!(
            whole,
            (
                b"Hi\r\na\xfebcdef\n".to_vec(),
                b"\xff\xfb\x06\xff\xfe\x1f".to_vec()
            )
        );
        for at in 0..=STREAM.len() {
            let (left, right) = STREAM.split_at(at);
            assert_eq!(strip_reads(&[left, right]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(strip_reads(&bytes), whole, "a byte at a time");
    }
}
