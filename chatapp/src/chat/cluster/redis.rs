//! What the cluster says to Redis and how it reads the answers: where Redis
//! is ([`Url`]), commands encoded as RESP arrays ([`command`]), and replies
//! and pushes decoded from a connection's input ([`next_frame`]). The codec
//! is the `redis-protocol` crate's; this module only lays our commands out
//! for it and hands it the lent input.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use reactor::Input;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};

/// Where the cluster's Redis is, as `--cluster redis://[[USER]:PASS@]HOST[:PORT][/DB]`
/// gives it: the host resolved once, at start, so that no lookup ever
/// blocks the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// The address connected to, and reconnected to.
    pub addr: SocketAddr,
    /// `AUTH` with this user name (Redis 6's ACLs), if given with a password.
    pub user: Option<String>,
    /// `AUTH` with this password first, if given.
    pub password: Option<String>,
    /// `SELECT` this database for the keys. Pub/sub ignores databases, so
    /// the channels carry the number too (see `cluster::Names`).
    pub db: u32,
}

impl FromStr for Url {
    type Err = String;

    fn from_str(url: &str) -> Result<Url, String> {
        let usage = || format!("{url:?} is not redis://[:PASSWORD@]HOST[:PORT][/DB]");
        let rest = url.strip_prefix("redis://").ok_or_else(usage)?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (user, password) = match auth.map(|a| a.split_once(':')) {
            None => (None, None),
            Some(Some((user, pass))) => {
                let user = (!user.is_empty()).then(|| user.to_string());
                (user, Some(pass.to_string()))
            }
            Some(None) => return Err(usage()),
        };
        let (host, db) = match rest.split_once('/') {
            None | Some((_, "")) => (rest.trim_end_matches('/'), 0),
            Some((host, db)) => (host, db.parse().map_err(|_| usage())?),
        };
        if host.is_empty() {
            return Err(usage());
        }
        // The default port, unless one is given; `[::1]:6379` keeps its brackets.
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(h, _)| !h.ends_with(':'))
            && !host.ends_with(']')
        {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} has no address"))?;
        Ok(Url {
            addr,
            user,
            password,
            db,
        })
    }
}

impl fmt::Display for Url {
    /// The URL without its password, for the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://{}/{}", self.addr, self.db)
    }
}

/// Appends the command `args` to `out` as Redis reads one: a RESP array of
/// bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frames: Vec<BorrowedFrame<'_>> =
        args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&frames);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer was sized by the codec itself: encoding cannot fall short.
    let used = encode_borrowed(&mut out[start..], &frame, false).unwrap_or(0);
    out.truncate(start + used);
}

/// The next whole frame at the front of `input`, taken off it; `Ok(None)`
/// if only part of one has come. An error means the stream is not RESP:
/// the link cannot be read any further.
pub fn next_frame(input: &mut Input<'_>) -> Result<Option<OwnedFrame>, String> {
    match decode(&input[..]) {
        Ok(Some((frame, used))) => {
            input.consume(used);
            Ok(Some(frame))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The bytes of a bulk or simple string frame.
pub fn bytes(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Some(b),
        _ => None,
    }
}

/// A frame as text, if it is a string of UTF-8.
pub fn text(frame: &OwnedFrame) -> Option<&str> {
    bytes(frame).and_then(|b| std::str::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"netchat:room:#lobby", b"x y\n"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$19\r\nnetchat:room:#lobby\r\n$4\r\nx y\n\r\n"
        );
    }

    #[test]
    fn urls_give_the_address_password_and_database() {
        let url: Url = "redis://127.0.0.1:6390/2".parse().unwrap();
        assert_eq!(url.addr, "127.0.0.1:6390".parse().unwrap());
        assert_eq!((url.password, url.db), (None, 2));
        let url: Url = "redis://:secret@127.0.0.1".parse().unwrap();
        assert_eq!(url.addr.port(), 6379);
        assert_eq!((url.user, url.password.as_deref()), (None, Some("secret")));
        let url: Url = "redis://[::1]:7000".parse().unwrap();
        assert_eq!(url.addr, "[::1]:7000".parse().unwrap());
        for bad in [
            "127.0.0.1:6379",
            "redis://",
            "redis://h:1/x",
            "redis://nopass@h",
        ] {
            assert!(bad.parse::<Url>().is_err(), "{bad}");
        }
    }
}
