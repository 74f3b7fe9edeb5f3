//! loadgen, the load generator, against the real servers (and a fake NATS
//! server): it must complete small runs and count them right, and fail loudly — status 1, one
//! `error: …` line — when it cannot connect or gets back something else
//! than it sent. No test here looks at how fast anything is. The TLS tests
//! make their certificates at test time (`common::tls`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::thread;

use common::tls::Certs;
use common::{run, Server};
use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

/// Runs loadgen against `server` with `args`.
fn loadgen(server: &Server, args: &[&str]) -> Output {
    loadgen_on(server.addr().port(), args)
}

/// Runs loadgen against the server at `port` with `args`.
fn loadgen_on(port: u16, args: &[&str]) -> Output {
    let port = port.to_string();
    let mut argv = vec![port.as_str()];
    argv.extend(args);
    run(LOADGEN, &argv, b"")
}

/// Runs loadgen against `server`'s TLS port with `args`, trusting `ca`.
fn loadgen_tls(server: &Server, certs: &Certs, args: &[&str]) -> Output {
    let (port, ca) = (
        server.tls_addr().port().to_string(),
        certs.ca().display().to_string(),
    );
    let mut argv = vec![port.as_str(), "--tls", "--ca", &ca];
    argv.extend(args);
    run(LOADGEN, &argv, b"")
}

/// The JSON report of a run that must have succeeded.
fn report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

/// The error line of a run that must have failed with status 1.
fn error(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "loadgen should fail");
    String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string()
}

#[test]
fn echo_runs_count_every_message() {
    let server = Server::start(SERVER4, &[]);
    for mode in ["echo", "echo-lines"] {
        let args = [
            "--mode",
            mode,
            "-c",
            "4",
            "-n",
            "200",
            "--pipeline",
            "8",
            "--json",
        ];
        let report = report(&loadgen(&server, &args));
        assert_eq!(report["completed"], 800, "{mode}");
        assert_eq!(report["bytes"], 800 * 64, "{mode}");
    }
}

#[test]
fn a_run_given_a_pid_reports_that_processs_cpu_and_memory() {
    let server = Server::start(SERVER4, &[]);
    // Any process will do for reading /proc: this test's own.
    let pid = std::process::id().to_string();
    let args = ["-c", "2", "-n", "100", "--server-pid", &pid, "--json"];
    let report = report(&loadgen(&server, &args));
    assert!(report["server_cpu_ns_per_msg"].is_number());
    assert!(report["server_rss_kib"].as_u64().is_some_and(|kib| kib > 0));
}

#[test]
fn the_room_delivers_every_message_to_every_other_client_over_tcp_and_websockets() {
    let server = Server::start(SERVER3, &["--web-port", "0"]);
    for (mode, port) in [("chat", server.addr()), ("web", server.web_addr())] {
        let args = [
            "--mode",
            mode,
            "-c",
            "5",
            "-n",
            "20",
            "--pipeline",
            "2",
            "--json",
        ];
        let report = report(&loadgen_on(port.port(), &args));
        assert_eq!(report["mode"], mode);
        assert_eq!(report["sent"], 5 * 20, "{mode}");
        assert_eq!(report["completed"], 5 * 20 * 4, "{mode}");
    }
}

#[test]
fn one_sender_in_batches_reaches_everyone() {
    let server = Server::start(SERVER3, &[]);
    // 20 is two whole batches of 8 and a last one of 4.
    let args = [
        "--mode",
        "chat",
        "-c",
        "6",
        "--senders",
        "1",
        "--batch",
        "8",
        "-n",
        "20",
        "--json",
    ];
    let report = report(&loadgen(&server, &args));
    assert_eq!(report["sent"], 20);
    assert_eq!(report["completed"], 20 * 5);
    assert_eq!(report["batch"], true);
}

#[test]
fn batches_are_for_the_fan_out_modes() {
    let server = Server::start(SERVER4, &[]);
    let output = loadgen(&server, &["--batch", "8"]);
    assert_eq!(
        error(&output),
        "error: --batch is for the fan-out modes: chat, web, redis, nats"
    );
}

#[test]
fn connections_are_spread_over_the_servers_in_turn() {
    let (first, first_count) = counting_echo();
    let (second, second_count) = counting_echo();
    let servers = format!("{first},{second}");
    let args = ["--servers", &servers, "-c", "5", "-n", "20", "--json"];
    let report = report(&run(LOADGEN, &args, b""));
    assert_eq!(report["completed"], 5 * 20);
    assert_eq!(report["addr"], format!("127.0.0.1:{servers}"));
    assert_eq!(
        (*first_count.lock().unwrap(), *second_count.lock().unwrap()),
        (3, 2),
        "connections 0, 2, 4 to the first, 1 and 3 to the second"
    );
}

/// An echo server on a port of its own that counts the connections it
/// accepts; its threads end when loadgen closes them.
fn counting_echo() -> (u16, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream?;
            *counted.lock().unwrap() += 1;
            let mut out = stream.try_clone()?;
            thread::spawn(move || std::io::copy(&mut stream, &mut out));
        }
        Ok::<(), std::io::Error>(())
    });
    (port, count)
}

/// A NATS server just big enough for loadgen, on a port of its own: `INFO`
/// on connect, `PONG` for `PING`, every `PUB room` to every connection that
/// said `SUB room SID`, and `-ERR` for anything else, as NATS does. Its
/// threads end when loadgen closes its connections.
fn fake_nats() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let subscribers = Arc::new(Mutex::new(Vec::new()));
    thread::spawn(move || {
        for stream in listener.incoming() {
            let subscribers = Arc::clone(&subscribers);
            thread::spawn(move || serve_nats(stream?, &subscribers));
        }
        Ok::<(), std::io::Error>(())
    });
    port
}

/// One connection to the fake NATS server.
fn serve_nats(
    stream: TcpStream,
    subscribers: &Mutex<Vec<(TcpStream, String)>>,
) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    out.write_all(b"INFO {\"server_id\":\"fake\",\"max_payload\":1048576}\r\n")?;
    let mut input = BufReader::new(stream);
    let mut line = String::new();
    while input.read_line(&mut line)? > 0 {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["CONNECT", _] => {}
            ["PING"] => out.write_all(b"PONG\r\n")?,
            ["SUB", "room", sid] => subscribers
                .lock()
                .unwrap()
                .push((out.try_clone()?, sid.to_string())),
            ["PUB", "room", len] => {
                let mut payload = vec![0; len.parse::<usize>().unwrap() + 2];
                input.read_exact(&mut payload)?;
                for (subscriber, sid) in subscribers.lock().unwrap().iter_mut() {
                    let mut frame = format!("MSG room {sid} {len}\r\n").into_bytes();
                    frame.extend_from_slice(&payload);
                    subscriber.write_all(&frame)?;
                }
            }
            _ => return out.write_all(b"-ERR 'Unknown Protocol Operation'\r\n"),
        }
        line.clear();
    }
    Ok(())
}

#[test]
fn nats_delivers_every_message_to_every_subscriber() {
    let port = fake_nats().to_string();
    let args = [
        &port,
        "--mode",
        "nats",
        "-c",
        "4",
        "--senders",
        "2",
        "-n",
        "30",
        "--pipeline",
        "3",
        "--json",
    ];
    let report = report(&run(LOADGEN, &args, b""));
    assert_eq!(report["connections"], 4 + 2);
    assert_eq!(report["sent"], 2 * 30);
    assert_eq!(report["completed"], 2 * 30 * 4);
}

#[test]
fn an_error_from_nats_is_one_error_line() {
    // A server that refuses every client, as one that wants a password does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"INFO {}\r\n-ERR 'Authorization Violation'\r\n");
        }
    });
    let output = run(LOADGEN, &[&port.to_string(), "--mode", "nats"], b"");
    assert_eq!(
        error(&output),
        "error: NATS answered \"-ERR 'Authorization Violation'\""
    );
}

#[test]
fn idle_clients_greet_and_are_held() {
    let server = Server::start(SERVER3, &[]);
    let args = [
        "--mode", "chat", "-c", "20", "--idle", "-d", "200ms", "--json",
    ];
    let report = report(&loadgen(&server, &args));
    assert_eq!(report["connections"], 20);
    assert_eq!(report["completed"], 0);
}

#[test]
fn a_refused_connection_is_one_error_line() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = run(LOADGEN, &[port.to_string()], b"");
    assert_eq!(
        error(&output),
        format!("error: cannot connect to 127.0.0.1:{port}: connection refused")
    );
}

#[test]
fn an_answer_that_is_not_the_echo_fails_the_run() {
    // A chat server answers an echo client's first line with an error.
    let server = Server::start(SERVER3, &[]);
    let output = loadgen(&server, &["--mode", "echo-lines", "-n", "10"]);
    let error = error(&output);
    assert!(
        error.starts_with("error: connection 0: echo differs"),
        "{error}"
    );
    assert!(error.contains("ERR say Hi first"), "{error}");
}

#[test]
fn other_hosts_are_refused_without_allow_remote() {
    // 192.0.2.0/24 is reserved for documentation: nothing is sent there.
    let output = run(LOADGEN, &["--host", "192.0.2.1", "5000"], b"");
    assert_eq!(
        error(&output),
        "error: 192.0.2.1 is not a loopback address: pass --allow-remote to load another host"
    );
}

#[test]
fn echo_over_tls_counts_every_message() {
    let cert = Certs::new();
    let server = cert.serve(SERVER4, &[]);
    // Small messages, and messages larger than what rustls encrypts or
    // holds decrypted at a time (64 KiB, 16 KiB).
    for (size, messages) in [("64", 800), ("100000", 40)] {
        let per_conn = (messages / 4).to_string();
        let args = [
            "-c",
            "4",
            "-s",
            size,
            "-n",
            &per_conn,
            "--pipeline",
            "4",
            "--json",
        ];
        let report = report(&loadgen_tls(&server, &cert, &args));
        let tls = report["tls"].as_str().unwrap_or_default();
        assert!(tls.starts_with("TLSv1_3 "), "{tls}");
        assert_eq!(report["completed"], messages, "{size} B");
        let bytes = messages * size.parse::<u64>().unwrap();
        assert_eq!(report["bytes"], bytes, "{size} B");
    }
}

#[test]
fn chat_over_tls_delivers_every_message_to_every_other_client() {
    let cert = Certs::new();
    let server = cert.serve(SERVER3, &[]);
    let args = [
        "--mode",
        "chat",
        "-c",
        "5",
        "-n",
        "20",
        "--pipeline",
        "2",
        "--json",
    ];
    let report = report(&loadgen_tls(&server, &cert, &args));
    assert_eq!(report["sent"], 5 * 20);
    assert_eq!(report["completed"], 5 * 20 * 4);
}

#[test]
fn handshake_mode_counts_every_handshake() {
    let cert = Certs::new();
    let server = cert.serve(SERVER4, &[]);
    let args = ["--mode", "handshake", "-c", "4", "-n", "10", "--json"];
    let report = report(&loadgen_tls(&server, &cert, &args));
    assert_eq!(report["mode"], "handshake");
    assert!(report["tls"].is_string());
    assert_eq!(report["completed"], 4 * 10);
}

#[test]
fn a_certificate_not_trusted_is_one_error_line() {
    let cert = Certs::new();
    let other = Certs::new();
    let server = cert.serve(SERVER4, &[]);
    let output = loadgen_tls(&server, &other, &["-n", "1"]);
    let port = server.tls_addr().port();
    let error = error(&output);
    let expected = format!(
        "error: cannot connect to 127.0.0.1:{port}: the TLS handshake failed: \
         invalid peer certificate"
    );
    assert!(error.starts_with(&expected), "{error}");
}

#[test]
fn handshakes_need_tls() {
    let server = Server::start(SERVER4, &[]);
    let output = loadgen(&server, &["--mode", "handshake"]);
    assert_eq!(
        error(&output),
        "error: --mode handshake measures TLS handshakes: add --tls --ca FILE"
    );
}
