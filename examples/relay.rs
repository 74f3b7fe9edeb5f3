//! A line relay: for each client it accepts, it opens a connection of its
//! own to an upstream server with `Context::connect`, and forwards lines
//! both ways. The worked example of a handler that connects out; see
//! docs/extending.md.
//!
//! ```text
//! $ cargo run --bin server4 -- 127.0.0.1 5000        # an echo server
//! $ cargo run --example relay -- 127.0.0.1 6000 127.0.0.1:5000
//! listening on 127.0.0.1:6000
//! $ nc 127.0.0.1 6000
//! hello
//! hello
//! ```
//!
//! The two ends of a pair live and die together: when either closes, the
//! other is closed (after what was forwarded to it is written). A client
//! whose upstream cannot be reached is told `ERR upstream unreachable: …`
//! and closed. What a client sends before its upstream is established is
//! queued by the reactor and written once it is.
//!
//! A client that only half-closes (shuts down writing and waits for the
//! answers, as `printf 'hi\n' | nc` does) is closed like one that left:
//! `Context` has no way to pass an end of stream on while the answers
//! still come back.
//!
//! Exits with status 1 and one `error:` line if it cannot start (a bad
//! argument, an unknown host, a port in use). Ctrl-C (SIGINT) or SIGTERM
//! stops it gracefully.

use std::collections::HashMap;
use std::error::Error;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use reactor::{CloseReason, Config, ConnId, Connect, Context, Handler, Input, Origin, Reactor};

/// How long the upstream may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an end waits before it looks again whether the other end's
/// queue has drained.
const RETRY: Duration = Duration::from_millis(10);

/// Pairs each client with a connection of its own to `upstream`.
struct Relay {
    upstream: SocketAddr,
    /// The other end of each end of a pair: a client's upstream connection,
    /// and an upstream connection's client. Both entries go when either
    /// end closes.
    other: HashMap<ConnId, ConnId>,
}

impl Handler for Relay {
    type Message = ();
    type Conn = ();

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut ()) {
        // Our own connection to the upstream, now established: what its
        // client sent meanwhile was queued for it and is being written.
        if cx.origin(id) == Some(Origin::Connected) {
            return;
        }
        // A client: the connect is not waited for; `on_open` or `on_close`
        // of the id it returns will tell how it went.
        match cx.connect(Connect::new(self.upstream).timeout(CONNECT_TIMEOUT)) {
            Ok(upstream) => {
                self.other.insert(id, upstream);
                self.other.insert(upstream, id);
            }
            Err(e) => {
                // No attempt was made (out of descriptors, say).
                cx.send(id, &unreachable_line(&e));
                cx.close(id);
            }
        }
    }

    fn on_data(&mut self, cx: &mut dyn Context, id: ConnId, _conn: &mut (), input: &mut Input<'_>) {
        // Every open end has its other end: the two entries go only in
        // `on_close`, which closes this end too, and a closing end gets no
        // input.
        let to = self.other[&id];
        if cx.backlogged(to) {
            // The other end's peer reads more slowly than this one writes.
            // The reactor holds a connection only for its own output, so
            // this end is paused instead: not read meanwhile, its peer
            // slowed by TCP, and its input handed back here to try again.
            cx.pause_input(id, RETRY);
            return;
        }
        // Whole lines only; a partial line waits in `input` for its end.
        let Some(last) = input.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        // The driver keeps its own copy of what it cannot write yet (`to`
        // may still be connecting): `input` can be let go of at once.
        cx.send(to, &input[..=last]);
        input.consume(last + 1);
    }

    fn on_close(&mut self, cx: &mut dyn Context, id: ConnId, _conn: (), reason: CloseReason) {
        // Told of the second end we closed ourselves: nothing left to do.
        let Some(other) = self.other.remove(&id) else {
            return;
        };
        self.other.remove(&other);
        if let CloseReason::ConnectFailed(kind) = reason {
            cx.send(other, &unreachable_line(&kind.into()));
        }
        // Written first: lines forwarded to `other` are not lost.
        cx.close(other);
    }
}

/// What a client is told when its upstream cannot be reached.
fn unreachable_line(why: &std::io::Error) -> Bytes {
    Bytes::from(format!("ERR upstream unreachable: {why}\n"))
}

fn main() {
    if let Err(e) = serve() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, upstream] = args.as_slice() else {
        return Err("usage: relay LISTEN_HOST LISTEN_PORT UPSTREAM_HOST:UPSTREAM_PORT".into());
    };
    let port: u16 = port.parse().map_err(|_| format!("invalid port '{port}'"))?;
    // Resolved once, here, to its first address: a DNS lookup in a
    // callback would stall the loop.
    let upstream = upstream
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{upstream}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{upstream}' has no address"))?;
    let listener = TcpListener::bind((host.as_str(), port))
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;

    let mut reactor = Reactor::new(Config::default())?;
    let clients = reactor.listen(listener)?;
    reactor.stop_on_signals()?;
    // Port 0 means "any free port": print the one we got.
    if let Some(addr) = reactor.local_addr(clients) {
        println!("listening on {addr}");
    }
    let mut relay = Relay {
        upstream,
        other: HashMap::new(),
    };
    reactor.run(&mut relay)?;
    Ok(())
}
