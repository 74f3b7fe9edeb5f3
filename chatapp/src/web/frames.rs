//! WebSocket frames (RFC 6455 §5) read from and written to the connection's
//! own buffers with tungstenite's frame layer: its header codec and its
//! codes, without a `tungstenite::WebSocket` and the buffers it would keep
//! per connection.

use std::io::Cursor;
use std::ops::Range;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
/// A message of `max` bytes in one frame takes `max + MAX_HEADER` bytes
/// of input.
pub const MAX_HEADER: usize = 14;

/// The most a control frame (close, ping, pong) may carry (§5.5).
const MAX_CONTROL: u64 = 125;

/// One complete frame at the front of the input.
#[derive(Debug)]
pub(super) struct Frame {
    /// What it is; the checks of [`parse`] are passed.
    pub(super) opcode: OpCode,
    /// Whether it ends its message.
    pub(super) is_final: bool,
    /// The client's mask, applied to the payload (§5.3).
    pub(super) mask: [u8; 4],
    /// Where its payload is in the input, still masked.
    pub(super) payload: Range<usize>,
}

impl Frame {
    /// How many bytes of input it takes, header and payload.
    pub(super) fn len(&self) -> usize {
        self.payload.end
    }
}

/// Reads the frame at the front of `input`: `Ok(None)` while it has not all
/// arrived, or the close code it breaks the protocol with. A data frame
/// whose payload is over `room` bytes (what is left of the line limit) is
/// refused as soon as its header has come, without waiting for it.
pub(super) fn parse(input: &[u8], room: usize) -> Result<Option<Frame>, CloseCode> {
    let mut cursor = Cursor::new(input);
    let (header, length) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return Ok(None),
        // A reserved opcode: the only error the header parser reports.
        Err(_) => return Err(CloseCode::Protocol),
    };
    if header.rsv1 || header.rsv2 || header.rsv3 {
        // No extension was negotiated, so no reserved bit may be set (§5.2).
        return Err(CloseCode::Protocol);
    }
    // A client masks every frame (§5.1): the server must fail one that
    // does not.
    let Some(mask) = header.mask else {
        return Err(CloseCode::Protocol);
    };
    match header.opcode {
        OpCode::Control(_) if length > MAX_CONTROL || !header.is_final => {
            return Err(CloseCode::Protocol)
        }
        OpCode::Data(_) if length > room as u64 => return Err(CloseCode::Size),
        _ => {}
    }
    let start = cursor.position() as usize;
    // At most `room` or 125 bytes: it fits in a usize.
    let end = start + length as usize;
    if input.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        opcode: header.opcode,
        is_final: header.is_final,
        mask,
        payload: start..end,
    }))
}

/// Unmasks `payload` in place; `offset` is where it starts in its frame's
/// payload (the mask cycles over the whole of it).
pub(super) fn unmask(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) % 4];
    }
}

/// Appends a frame of `opcode` carrying `payload` to `out`, unmasked, as a
/// server sends them.
fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        opcode,
        is_final: true,
        ..FrameHeader::default()
    };
    header
        .format(payload.len() as u64, out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
}

/// Appends one text message in one frame to `out`.
pub(super) fn text(out: &mut Vec<u8>, text: &[u8]) {
    frame(out, OpCode::Data(Data::Text), text);
}

/// Appends a pong answering a ping of `payload` to `out`.
pub(super) fn pong(out: &mut Vec<u8>, payload: &[u8]) {
    frame(out, OpCode::Control(Control::Pong), payload);
}

/// Appends a close frame with `code` (none: an empty one) and no reason to
/// `out`.
pub(super) fn close(out: &mut Vec<u8>, code: Option<CloseCode>) {
    let code = code.map(|code| u16::from(code).to_be_bytes());
    frame(
        out,
        OpCode::Control(Control::Close),
        code.as_ref().map_or(&[], |c| &c[..]),
    );
}

/// What the payload of a client's close frame says (§5.5.1): the code to
/// echo, if it gave one, or the code it breaks the protocol with.
pub(super) fn close_code(payload: &[u8]) -> Result<Option<CloseCode>, CloseCode> {
    match payload {
        [] => Ok(None),
        [_] => Err(CloseCode::Protocol),
        [high, low, reason @ ..] => {
            let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
            if !code.is_allowed() {
                Err(CloseCode::Protocol)
            } else if std::str::from_utf8(reason).is_err() {
                Err(CloseCode::Invalid)
            } else {
                Ok(Some(code))
            }
        }
    }
}

/// A client's frame, for tests: `first` byte (FIN, RSV, opcode), then
/// `payload`, masked.
#[cfg(test)]
pub(super) fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = Vec::new();
    let header = FrameHeader {
        is_final: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        opcode: OpCode::from(first & 0x0f),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    header.format(payload.len() as u64, &mut out).unwrap();
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_found_only_once_it_has_all_come() {
        let bytes = masked(0x81, b"hello");
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut], 100).unwrap().is_none(), "{cut}");
        }
        let frame = parse(&bytes, 100).unwrap().unwrap();
        assert_eq!(frame.len(), bytes.len());
        let mut payload = bytes[frame.payload.clone()].to_vec();
        unmask(&mut payload, frame.mask, 0);
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn too_big_is_known_from_the_header() {
        let bytes = masked(0x81, &[b'a'; 200]);
        assert_eq!(parse(&bytes[..8], 199).unwrap_err(), CloseCode::Size);
    }

    #[test]
    fn unmasked_reserved_bits_and_big_or_split_control_frames_are_protocol_errors() {
        assert_eq!(parse(b"\x81\x02hi", 100).unwrap_err(), CloseCode::Protocol);
        for bad in [
            masked(0xc1, b"hi"),
            masked(0x89, &[0; 126]),
            masked(0x09, b"split"),
            masked(0x83, b"reserved opcode"),
        ] {
            assert_eq!(parse(&bad, 1000).unwrap_err(), CloseCode::Protocol);
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_code(b""), Ok(None));
        assert_eq!(close_code(b"\x03"), Err(CloseCode::Protocol));
        assert_eq!(close_code(b"\x03\xe8bye"), Ok(Some(CloseCode::Normal)));
        assert_eq!(close_code(b"\x03\xed"), Err(CloseCode::Protocol), "1005");
        assert_eq!(close_code(b"\x03\xe8\xff"), Err(CloseCode::Invalid));
    }
}
