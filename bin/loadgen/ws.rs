//! `--mode web`: the chat protocol over a WebSocket (a chat server's
//! `--web-port`), the client's side of RFC 6455 as far as loadgen needs it:
//! the upgrade request, masked text frames out, unmasked frames in. The
//! frame headers are tungstenite's (`FrameHeader`), the same code the
//! server uses, so neither side's framing is a copy of the other's.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The upgrade request every connection opens with. The key is fixed: it
/// only proves to the client that the server speaks WebSocket, and the
/// answer is not checked beyond its status (loadgen measures, the tests
/// check the handshake).
pub const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The mask of every frame loadgen sends. RFC 6455 wants it unpredictable,
/// to keep a browser's script from steering what a proxy on the way sees;
/// loadgen is no browser and has no proxy, and one key costs every run the
/// same.
const MASK: [u8; 4] = [0x6e, 0x65, 0x74, 0x63];

/// The server's answer to `UPGRADE`: `Ok(Some(len))` once its headers are
/// all in `input` and it switched protocols, `Ok(None)` while they are not.
pub fn upgraded(input: &[u8]) -> Result<Option<usize>, String> {
    let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    if input.starts_with(b"HTTP/1.1 101 ") {
        Ok(Some(end + 4))
    } else {
        let status = input.split(|&b| b == b'\r').next().unwrap_or_default();
        Err(format!(
            "the upgrade was refused: {}",
            String::from_utf8_lossy(status)
        ))
    }
}

/// Appends `line` to `out` as one masked text message.
pub fn text(out: &mut Vec<u8>, line: &[u8]) {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        mask: Some(MASK),
        ..FrameHeader::default()
    };
    header
        .format(line.len() as u64, out)
        .expect("a Vec takes every write");
    out.extend(line.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
}

/// The next message in `input`: `Ok(Some((text, used)))` for a whole text
/// frame, `Ok(None)` while one is not all here. Anything else the server
/// sends loadgen (a close, a fragment, binary) is an error: the chat
/// servers send each line as one unmasked text frame.
pub fn next(input: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    let mut cursor = Cursor::new(input);
    let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let start = cursor.position() as usize;
    let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
        return Err(format!("a frame of {len} bytes"));
    };
    if input.len() < end {
        return Ok(None);
    }
    let payload = &input[start..end];
    match header.opcode {
        OpCode::Data(Data::Text) if header.is_final && header.mask.is_none() => {
            Ok(Some((payload, end)))
        }
        OpCode::Control(Control::Close) => {
            let code = payload.get(..2).map_or("none".to_string(), |c| {
                u16::from_be_bytes([c[0], c[1]]).to_string()
            });
            Err(format!(
                "the server closed the WebSocket (code {code}): {}",
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default())
            ))
        }
        opcode => Err(format!(
            "unexpected frame: {opcode} (final {}, masked {})",
            header.is_final,
            header.mask.is_some()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_frame_is_masked_and_read_back_by_the_header_parser() {
        let mut out = Vec::new();
        text(&mut out, b"Hi");
        assert_eq!(out[0], 0x81, "final text frame");
        assert_eq!(out[1], 0x80 | 2, "masked, two bytes");
        assert_eq!(&out[2..6], &MASK);
        assert_eq!(out[6] ^ MASK[0], b'H');
        assert_eq!(out[7] ^ MASK[1], b'i');
    }

    #[test]
    fn server_frames_are_taken_whole_or_not_at_all() {
        let frame = [0x81, 5, b'H', b'e', b'l', b'l', b'o'];
        assert_eq!(next(&frame[..4]), Ok(None));
        assert_eq!(next(&frame), Ok(Some((&b"Hello"[..], 7))));
        let close = [0x88, 2, 0x03, 0xe9];
        assert!(next(&close).unwrap_err().contains("1001"));
    }

    #[test]
    fn the_upgrade_is_read_to_the_end_of_its_headers() {
        let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05Hello";
        assert_eq!(upgraded(&answer[..20]), Ok(None));
        assert_eq!(upgraded(answer), Ok(Some(answer.len() - 7)));
        assert!(upgraded(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            .unwrap_err()
            .contains("403 Forbidden"));
    }
}
