//! mio-echo: an echo server written the way mio's own `tcp_server` example
//! is, as the peer of server4 closest to the metal.
//!
//! Edge-triggered: every socket is registered once for reading and
//! writing; on each event it is read until `WouldBlock` and what was read is
//! written straight back, the part the socket would not take kept for the
//! next writable event. One 64 KiB read buffer serves every connection, as
//! in server4; connections live in a `HashMap` by token, as in the example.
//!
//! `mio-echo HOST PORT` prints `listening on IP:PORT`.

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use netchat_bench::ServerArgs;

const SERVER: Token = Token(0);

/// A client, and what it has been sent back that it has not taken yet.
struct Connection {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = ServerArgs::parse();
    let addr = args
        .addr
        .to_socket_addrs()?
        .next()
        .ok_or("cannot resolve the host")?;

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut server = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut server, SERVER, Interest::READABLE)?;
    println!("listening on {}", server.local_addr()?);

    let mut connections = HashMap::new();
    let mut next_token = Token(SERVER.0 + 1);
    let mut buf = vec![0; 64 * 1024];

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            match event.token() {
                SERVER => loop {
                    let (mut stream, _) = match server.accept() {
                        Ok(accepted) => accepted,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    };
                    stream.set_nodelay(true)?;
                    let token = next_token;
                    next_token.0 += 1;
                    poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE.add(Interest::WRITABLE),
                    )?;
                    let pending = Vec::new();
                    connections.insert(token, Connection { stream, pending });
                },
                token => {
                    let done = match connections.get_mut(&token) {
                        Some(conn) => {
                            handle_connection_event(conn, event, &mut buf).unwrap_or(true)
                        }
                        None => false,
                    };
                    if done {
                        if let Some(mut conn) = connections.remove(&token) {
                            deregister(poll.registry(), &mut conn.stream);
                        }
                    }
                }
            }
        }
    }
}

/// Reads everything waiting and echoes it; returns whether the connection
/// is finished.
fn handle_connection_event(
    conn: &mut Connection,
    event: &Event,
    buf: &mut [u8],
) -> io::Result<bool> {
    if event.is_writable() && !conn.pending.is_empty() {
        let pending = std::mem::take(&mut conn.pending);
        write_back(conn, &pending)?;
    }
    if event.is_readable() {
        loop {
            match conn.stream.read(buf) {
                Ok(0) => return Ok(true),
                Ok(n) => write_back(conn, &buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

/// Writes `data` after whatever is still pending, keeping what the socket
/// does not take.
fn write_back(conn: &mut Connection, data: &[u8]) -> io::Result<()> {
    if !conn.pending.is_empty() {
        conn.pending.extend_from_slice(data);
        return Ok(());
    }
    let mut written = 0;
    while written < data.len() {
        match conn.stream.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    conn.pending.extend_from_slice(&data[written..]);
    Ok(())
}

fn deregister(registry: &Registry, stream: &mut TcpStream) {
    // The stream is dropped (closed) next; a failure here changes nothing.
    let _ = registry.deregister(stream);
}
