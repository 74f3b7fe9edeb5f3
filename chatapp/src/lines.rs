//! Line framing for the text protocols: split complete lines off the front
//! of a connection's input, with a bound on their length.

use bytes::BytesMut;

/// A line longer than the limit arrived (or is arriving: no newline within
/// `max + 1` bytes). The connection should be told and closed: the rest of
/// the stream cannot be framed reliably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Takes the next complete line off the front of `input`, without its `\n`
/// and without a `\r` just before it. Returns `None` when no complete line
/// has arrived yet, and `Err(LineTooLong)` as soon as a line is certain to
/// exceed `max` bytes (its terminator not counted), so that a line that never
/// ends costs at most `max + 1` buffered bytes.
pub fn next_line(input: &mut BytesMut, max: usize) -> Option<Result<BytesMut, LineTooLong>> {
    // A line of `max` bytes may be followed by "\r\n": look that far.
    let window = input.len().min(max.saturating_add(2));
    match input[..window].iter().position(|&b| b == b'\n') {
        Some(end) => {
            let mut line = input.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Some(if line.len() > max {
                Err(LineTooLong)
            } else {
                Ok(line)
            })
        }
        None if input.len() > max.saturating_add(1) => Some(Err(LineTooLong)),
        None if input.len() > max && input.last() != Some(&b'\r') => Some(Err(LineTooLong)),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8], max: usize) -> (Vec<Result<Vec<u8>, LineTooLong>>, usize) {
        let mut input = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut input, max) {
            let stop = line.is_err();
            out.push(line.map(|l| l.to_vec()));
            if stop {
                break;
            }
        }
        (out, input.len())
    }

    #[test]
    fn splits_lines_and_keeps_the_partial_one() {
        let (out, left) = lines(b"Hi\r\nsecond\npart", 100);
        assert_eq!(out, vec![Ok(b"Hi".to_vec()), Ok(b"second".to_vec())]);
        assert_eq!(left, 4);
    }

    #[test]
    fn only_a_final_cr_is_dropped() {
        let (out, _) = lines(b"a\rb\r\n\n", 100);
        assert_eq!(out, vec![Ok(b"a\rb".to_vec()), Ok(Vec::new())]);
    }

    #[test]
    fn exactly_max_is_allowed_with_or_without_cr() {
        assert_eq!(lines(b"abcd\n", 4).0, vec![Ok(b"abcd".to_vec())]);
        assert_eq!(lines(b"abcd\r\n", 4).0, vec![Ok(b"abcd".to_vec())]);
        assert_eq!(lines(b"abcd\r", 4).0, vec![], "may still be a CRLF");
        assert_eq!(lines(b"abcd", 4).0, vec![]);
    }

    #[test]
    fn too_long_is_reported_before_the_newline_arrives() {
        assert_eq!(lines(b"abcde\n", 4).0, vec![Err(LineTooLong)]);
        assert_eq!(lines(b"abcde", 4).0, vec![Err(LineTooLong)]);
        assert_eq!(lines(b"abcd\rx", 4).0, vec![Err(LineTooLong)]);
    }
}
