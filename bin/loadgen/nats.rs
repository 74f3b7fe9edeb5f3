//! The part of the NATS client protocol that loadgen speaks, for `--mode
//! nats`: text control lines ending in CRLF, payloads after a length.
//!
//! ```text
//! server: INFO {...}                        on connect (and on cluster changes)
//! client: CONNECT {"verbose":false,...}     verbose off: no +OK after each command
//! client: SUB room 1                        subscription id 1
//! client: PING         server: PONG         in order, so the SUB has been taken
//! client: PUB room 61\r\n<61 bytes>         no answer
//! server: MSG room 1 61\r\n<61 bytes>       one per subscriber
//! server: PING         client: PONG         the server's keepalive
//! server: -ERR 'why'                        then, usually, it closes
//! ```

use std::io::Write;

use crate::fanout::show;

/// What a subscriber sends once connected: its options, the subscription,
/// and a PING. NATS handles a connection's commands in order, so its PONG
/// says that the subscription is in place.
pub const SUBSCRIBE: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n\
                               SUB room 1\r\nPING\r\n";
/// What a publisher sends once connected: the PONG says it may publish.
pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n";
/// The answer to the server's keepalive PING.
pub const PONG: &[u8] = b"PONG\r\n";

/// One thing the server sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Server information, sent first: nothing loadgen needs.
    Info,
    /// A keepalive, to be answered with [`PONG`].
    Ping,
    /// The answer to loadgen's PING.
    Pong,
    /// An error (`-ERR 'reason'`).
    Err,
    /// A message delivered to a subscription: its payload.
    Msg(&'a [u8]),
}

/// Appends a `PUB` of `payload` on `room`.
pub fn publish(buf: &mut Vec<u8>, payload: &[u8]) {
    let _ = write!(buf, "PUB room {}\r\n", payload.len());
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"\r\n");
}

/// The first frame in `input` and its length in bytes, or `None` if it has
/// not all arrived. Anything that is not NATS is an error.
pub fn parse(input: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &input[..end];
    let after = end + 2;
    let unexpected = || format!("unexpected data from NATS: {}", show(line));
    let (op, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    let frame = match op {
        b"INFO" => Frame::Info,
        b"PING" => Frame::Ping,
        b"PONG" => Frame::Pong,
        b"-ERR" => Frame::Err,
        // MSG <subject> <sid> [reply-to] <#bytes>: the length comes last.
        b"MSG" => {
            let len = args
                .rsplit(|&b| b == b' ')
                .find(|f| !f.is_empty())
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(|f| f.parse::<usize>().ok())
                .ok_or_else(unexpected)?;
            let total = after + len + 2;
            if input.len() < total {
                return Ok(None);
            }
            if &input[after + len..total] != b"\r\n" {
                return Err(format!(
                    "a NATS message is not {len} bytes long: {}",
                    show(&input[..total])
                ));
            }
            return Ok(Some((Frame::Msg(&input[after..after + len]), total)));
        }
        _ => return Err(unexpected()),
    };
    Ok(Some((frame, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_are_parsed_whole() {
        let info = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\nPING\r\n";
        assert_eq!(parse(info), Ok(Some((Frame::Info, info.len() - 6))));
        assert_eq!(parse(b"PING\r\n"), Ok(Some((Frame::Ping, 6))));
        assert_eq!(parse(b"PONG\r\nMSG"), Ok(Some((Frame::Pong, 6))));
        assert_eq!(
            parse(b"-ERR 'Unknown Protocol Operation'\r\n"),
            Ok(Some((Frame::Err, 35)))
        );
    }

    #[test]
    fn a_message_is_its_payload_with_or_without_a_reply_subject() {
        let msg = b"MSG room 1 7\r\nm 0 1 2\r\nPING\r\n";
        assert_eq!(parse(msg), Ok(Some((Frame::Msg(b"m 0 1 2"), 23))));
        let reply = b"MSG room 1 _INBOX.x 3\r\nabc\r\n";
        assert_eq!(parse(reply), Ok(Some((Frame::Msg(b"abc"), reply.len()))));
        // A payload may hold CRLF: only the length says where it ends.
        assert_eq!(
            parse(b"MSG room 1 4\r\na\r\nb\r\n"),
            Ok(Some((Frame::Msg(b"a\r\nb"), 20)))
        );
    }

    #[test]
    fn a_frame_not_all_here_waits_for_more() {
        let msg = b"MSG room 1 7\r\nm 0 1 2\r\n";
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(b"PIN"), Ok(None));
    }

    #[test]
    fn anything_else_is_an_error() {
        assert!(parse(b"+OK\r\n").is_err());
        assert!(parse(b"HTTP/1.1 400 Bad Request\r\n").is_err());
        assert!(parse(b"MSG room 1 x\r\n").is_err());
        // The length must match the payload.
        assert!(parse(b"MSG room 1 2\r\nabc\r\n").is_err());
    }

    #[test]
    fn publish_frames_the_payload_with_its_length() {
        let mut buf = Vec::new();
        publish(&mut buf, b"m 0 1 2");
        assert_eq!(buf, b"PUB room 7\r\nm 0 1 2\r\n");
    }
}
