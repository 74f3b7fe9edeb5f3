//! server4, the echo server, from the outside: through sockets, signals and
//! its exit status.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::{
    connect, echo_round_trip, expect_bytes, expect_closed, run, write_until_stopped, Server,
    TIMEOUT,
};

const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

fn server4(args: &[&str]) -> Server {
    Server::start(SERVER4, args)
}

/// `len` pseudo-random bytes (xorshift64): any byte value, no `rand` needed.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn a_megabyte_of_binary_comes_back_byte_exact() {
    let server = server4(&[]);
    let mut stream = connect(server.addr());
    let data = noise(1024 * 1024);
    // Write on another thread: the server echoes as it reads, so someone
    // must be reading the echo while the rest is being written.
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let writing = thread::spawn(move || writer.write_all(&sent));
    expect_bytes(&mut stream, &data, TIMEOUT);
    writing.join().unwrap().expect("write");
}

#[test]
fn serves_200_connections_at_once() {
    let server = server4(&[]);
    let mut streams: Vec<_> = (0..200).map(|_| connect(server.addr())).collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(format!("client {i}\n").as_bytes())
            .unwrap();
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        expect_bytes(stream, format!("client {i}\n").as_bytes(), TIMEOUT);
    }
}

#[test]
fn text_without_a_newline_comes_back_at_once() {
    let server = server4(&[]);
    let mut stream = connect(server.addr());
    echo_round_trip(&mut stream, b"Hi");
}

#[test]
fn bye_is_echoed_then_the_server_closes() {
    let server = server4(&[]);
    let mut stream = connect(server.addr());
    echo_round_trip(&mut stream, b"Hi\nbye\n");
    expect_closed(&mut stream);
}

#[test]
fn raw_does_not_close_on_bye() {
    let server = server4(&["--raw"]);
    let mut stream = connect(server.addr());
    echo_round_trip(&mut stream, b"bye\n");
    echo_round_trip(&mut stream, b"still here\n");
}

#[test]
fn a_hundred_mebibytes_with_a_concurrent_reader_come_back_byte_exact() {
    // What `head -c 100M file | nc -N localhost PORT | wc -c` does: one
    // thread writes as fast as it can, another reads the echo. The reader is
    // not slow, but it is not always ahead either; the server must slow the
    // writer down (by not reading it) rather than cut it off. No line of
    // this stream can be `bye`: it has no `y`.
    const TOTAL: usize = 100 << 20;
    let server = server4(&[]);
    let mut stream = connect(server.addr());
    let block: Vec<u8> = noise(64 * 1024)
        .into_iter()
        .map(|b| if b == b'y' { b'z' } else { b })
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = block.clone();
    let writing = thread::spawn(move || {
        for _ in 0..TOTAL / sent.len() {
            writer.write_all(&sent)?;
        }
        writer.shutdown(std::net::Shutdown::Write)
    });
    let mut got = 0;
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("read after {got} bytes: {e}"),
        };
        for (i, &byte) in buf[..n].iter().enumerate() {
            let at = got + i;
            assert_eq!(byte, block[at % block.len()], "byte {at} differs");
        }
        got += n;
    }
    writing.join().unwrap().expect("write");
    assert_eq!(got, TOTAL, "echoed bytes");
}

#[test]
fn a_client_that_never_reads_is_slowed_not_cut_off_and_others_are_served() {
    let server = server4(&[]);
    let mut reader = connect(server.addr());
    let mut hog = connect(server.addr());

    // The hog writes without reading. Its echo fills the socket buffers, then
    // the server's queue to the high-water mark; then the server stops
    // reading it, and TCP stops the hog: a write blocks.
    hog.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let sent = write_until_stopped(&mut hog, &noise(64 * 1024), "the hog");
    // Meanwhile the well-behaved client is answered.
    echo_round_trip(&mut reader, b"while the hog waits\n");

    // Nothing was lost: once the hog reads, it gets every byte it wrote.
    expect_bytes(&mut hog, &sent, TIMEOUT);
    echo_round_trip(&mut hog, b"and goes on\n");
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(SERVER4, &["127.0.0.1", &port], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(
        stderr,
        format!("error: cannot listen on 127.0.0.1:{port}: address already in use\n")
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unknown_host_is_a_one_line_error() {
    let out = run(SERVER4, &["nosuch.invalid", "0"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: cannot resolve host 'nosuch.invalid'\n"
    );
}

#[test]
fn sigterm_stops_the_server_gracefully() {
    let mut server = server4(&[]);
    let mut stream = connect(server.addr());
    echo_round_trip(&mut stream, b"Hi\n");
    server.sigterm();
    // Open connections are closed, and once their peers have closed too (the
    // server lingers for that), the server exits with success.
    expect_closed(&mut stream);
    drop(stream);
    let status = server.wait_with_timeout(Duration::from_secs(2));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)));
    // The reactor logs through the `log` crate: it must reach stderr.
    assert!(server.stderr().contains("signal received"));
}

#[test]
fn connections_beyond_max_clients_are_closed() {
    let server = server4(&["--max-clients", "1"]);
    let mut first = connect(server.addr());
    // A round trip: the first connection is surely accepted before the second.
    echo_round_trip(&mut first, b"one\n");
    let mut second = connect(server.addr());
    expect_closed(&mut second);
    echo_round_trip(&mut first, b"still served\n");
}
