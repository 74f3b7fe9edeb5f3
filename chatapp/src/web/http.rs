//! The HTTP/1.1 side of the web endpoint: a request's head parsed with
//! `httparse` from the connection's input, what it is answered, and the
//! answers as bytes. Nothing here keeps state: a request is read whole from
//! the input or left there until the rest comes.

use std::borrow::Cow;
use std::io::Write as _;

use tungstenite::handshake::derive_accept_key;

/// The chat page, served at `/`.
const PAGE: &str = include_str!("page.html");

/// The longest request head (request line and headers) read; a longer one
/// is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// The most headers a request may have; more is answered 431 too.
const MAX_HEADERS: usize = 64;

/// What the adapter is to do with the front of a connection's input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// The head has not all come: wait for more.
    Partial,
    /// Send `answer` for the request of the first `len` bytes.
    Answer { len: usize, answer: Answer },
    /// A WebSocket handshake in the first `len` bytes: send `101` with
    /// this `Sec-WebSocket-Accept`, and speak frames from then on.
    Upgrade { len: usize, accept: String },
}

/// An HTTP answer, and whether the connection closes after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answer {
    pub(super) status: Status,
    pub(super) close: bool,
}

/// The answers the endpoint gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// 200, the chat page.
    Page,
    /// 400: not HTTP, or not a WebSocket handshake at `/ws`.
    BadRequest(&'static str),
    /// 403: a WebSocket from a page of another origin.
    Forbidden,
    /// 404: no such path.
    NotFound,
    /// 405: only `GET` is served.
    MethodNotAllowed,
    /// 426: a WebSocket version other than 13.
    UpgradeRequired,
    /// 431: a head over [`MAX_HEAD`] or [`MAX_HEADERS`].
    TooLarge,
    /// 503: the server is full.
    Unavailable,
}

/// Who may open a WebSocket, and how connections are kept.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Origins allowed besides the page's own, as browsers send them
    /// (`https://example.com`, `http://localhost:8080`), compared without
    /// regard to case.
    pub origins: Vec<String>,
    /// Whether a connection may be kept for more requests (HTTP/1.1's
    /// default). Off, every answer closes its connection.
    pub keep_alive: bool,
}

/// Reads the request at the front of `input` and decides its answer.
pub(super) fn read(input: &[u8], policy: &Policy) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if input.len() <= MAX_HEAD => return Request::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return fatal(Status::TooLarge),
        Err(_) => return fatal(Status::BadRequest("not an HTTP request")),
    };
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    // HTTP/1.0 closes after each answer; so does a request with a body,
    // which is never read, so the next request cannot be found after it.
    let has_body =
        header("transfer-encoding").is_some() || header("content-length").is_some_and(|n| n != "0");
    let close = !policy.keep_alive
        || request.version != Some(1)
        || has_token("connection", "close")
        || has_body;
    let answer = |status| Request::Answer {
        len,
        answer: Answer { status, close },
    };
    let Some(host) = header("host") else {
        return fatal(Status::BadRequest("no Host header"));
    };
    if request.method != Some("GET") {
        return answer(Status::MethodNotAllowed);
    }
    let path = request.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    match path {
        "/" => answer(Status::Page),
        "/ws" => {
            if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
                return answer(Status::BadRequest("expected a WebSocket handshake"));
            }
            if header("sec-websocket-version").as_deref() != Some("13") {
                return answer(Status::UpgradeRequired);
            }
            let Some(key) = header("sec-websocket-key").filter(|key| key.len() == 24) else {
                return answer(Status::BadRequest("no Sec-WebSocket-Key"));
            };
            if let Some(origin) = header("origin") {
                if !allowed(&origin, &host, policy) {
                    return answer(Status::Forbidden);
                }
            }
            Request::Upgrade {
                len,
                accept: derive_accept_key(key.as_bytes()),
            }
        }
        _ => answer(Status::NotFound),
    }
}

/// An answer after which the input cannot be read on: the connection closes.
fn fatal(status: Status) -> Request {
    Request::Answer {
        len: 0,
        answer: Answer {
            status,
            close: true,
        },
    }
}

/// Whether a page from `origin` may open a WebSocket here: its own page
/// (the origin's host and port are the `Host` it asked), or one allowed.
/// Without this, any site a user visits could chat in their name.
fn allowed(origin: &str, host: &str, policy: &Policy) -> bool {
    let origin = origin.trim_end_matches('/');
    let own = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
    own || policy
        .origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Appends `answer` as an HTTP/1.1 response to `out`.
pub(super) fn write(out: &mut Vec<u8>, answer: &Answer) {
    let (code, reason, body, extra) = match answer.status {
        Status::Page => (200, "OK", PAGE, ""),
        Status::BadRequest(why) => (400, "Bad Request", why, ""),
        Status::Forbidden => (403, "Forbidden", "origin not allowed", ""),
        Status::NotFound => (404, "Not Found", "not found", ""),
        Status::MethodNotAllowed => (405, "Method Not Allowed", "only GET", "Allow: GET\r\n"),
        Status::UpgradeRequired => (
            426,
            "Upgrade Required",
            "WebSocket version 13 only",
            "Sec-WebSocket-Version: 13\r\n",
        ),
        Status::TooLarge => (
            431,
            "Request Header Fields Too Large",
            "request head too large",
            "",
        ),
        Status::Unavailable => (503, "Service Unavailable", "server busy", ""),
    };
    let (kind, body) = match answer.status {
        Status::Page => ("text/html; charset=utf-8", Cow::Borrowed(PAGE)),
        _ => (
            "text/plain; charset=utf-8",
            Cow::Owned(format!("{code} {body}\n")),
        ),
    };
    let connection = if answer.close { "close" } else { "keep-alive" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\n\
         Content-Type: {kind}\r\n\
         Content-Length: {}\r\n\
         Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         {extra}Connection: {connection}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body.as_bytes());
}

/// Appends the `101 Switching Protocols` that opens a WebSocket to `out`.
pub(super) fn write_upgrade(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            origins: vec!["https://chat.example".into()],
            keep_alive: true,
        }
    }

    fn status(request: &str) -> Option<(Status, bool)> {
        match read(request.as_bytes(), &policy()) {
            Request::Answer { answer, .. } => Some((answer.status, answer.close)),
            _ => None,
        }
    }

    const WS: &str = "GET /ws HTTP/1.1\r\nHost: h:1\r\nUpgrade: websocket\r\n\
                      Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn the_rfc_example_key_is_accepted() {
        let request = format!("{WS}\r\n");
        let Request::Upgrade { len, accept } = read(request.as_bytes(), &policy()) else {
            panic!("not an upgrade");
        };
        assert_eq!(len, request.len());
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn origins_same_or_allowed_or_none() {
        for (origin, ok) in [
            ("", true),
            ("Origin: http://h:1\r\n", true),
            ("Origin: https://H:1\r\n", true),
            ("Origin: https://chat.example\r\n", true),
            ("Origin: http://h:2\r\n", false),
            ("Origin: http://evil.example\r\n", false),
            ("Origin: null\r\n", false),
        ] {
            let request = format!("{WS}{origin}\r\n");
            let upgraded = matches!(read(request.as_bytes(), &policy()), Request::Upgrade { .. });
            assert_eq!(upgraded, ok, "{origin:?}");
        }
    }

    #[test]
    fn answers_and_keep_alive() {
        let page = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(status(page), Some((Status::Page, false)));
        assert_eq!(
            status("GET /?x=1 HTTP/1.0\r\nHost: h\r\n\r\n"),
            Some((Status::Page, true))
        );
        let closed = "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
        assert_eq!(status(closed), Some((Status::Page, true)));
        let nope = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(status(nope), Some((Status::NotFound, false)));
        let post = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(status(post), Some((Status::MethodNotAllowed, true)));
        assert!(matches!(
            status("\x16\x03\x01\r\n\r\n"),
            Some((Status::BadRequest(_), true))
        ));
        let long = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(status(&long), Some((Status::TooLarge, true)));
        assert_eq!(read(b"GET / HTTP/1.1\r\nHo", &policy()), Request::Partial);
        let old = format!("{}\r\n", WS.replace("Version: 13", "Version: 8"));
        assert_eq!(status(&old), Some((Status::UpgradeRequired, false)));
    }
}
