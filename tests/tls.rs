//! TLS on the servers, black-box: `--tls-port` beside the plain port, TLS
//! and plain clients in one room, a byte-exact echo, clients that get TLS
//! wrong costing only themselves, and tools nobody here wrote
//! (`openssl s_client`, `socat`) as clients.
//!
//! The certificates are made at test time (`common::tls`): a CA of the
//! test's own, and the server's certificate for `localhost` and 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::{self, Certs, Tls};
use common::{ChatClient, TIMEOUT};
use rustls::ClientConfig;

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const SERVER4: &str = env!("CARGO_BIN_EXE_server4");

fn path(path: PathBuf) -> String {
    path.display().to_string()
}

/// A chat participant over TLS.
struct TlsChat {
    stream: BufReader<Tls>,
}

impl TlsChat {
    fn join(addr: SocketAddr, config: &Arc<ClientConfig>) -> (TlsChat, String) {
        let mut chat = TlsChat {
            stream: BufReader::new(tls::connect(addr, config)),
        };
        chat.send("Hi");
        assert_eq!(chat.line(), "Hello");
        let welcome = chat.line();
        let nick = welcome
            .strip_prefix("* welcome, you are ")
            .and_then(|rest| rest.split_once(';'))
            .map(|(nick, _)| nick.to_owned())
            .unwrap_or_else(|| panic!("expected the welcome, got {welcome:?}"));
        (chat, nick)
    }

    fn send(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        stream.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("a line over TLS");
        assert!(line.ends_with('\n'), "cut short: {line:?}");
        line.pop();
        line
    }

    fn skip_to(&mut self, wanted: &str) {
        while self.line() != wanted {}
    }
}

fn tls_and_plain_clients_share_one_room(bin: &str) {
    let cert = Certs::new();
    let server = cert.serve(bin, &[]);
    let client = cert.client_config();
    let (mut plain, plain_nick) = ChatClient::join(server.addr());
    let (mut secure, secure_nick) = TlsChat::join(server.tls_addr(), &client);
    plain.send("over plain TCP");
    secure.skip_to(&format!("<{plain_nick}> over plain TCP"));
    secure.send("over TLS");
    loop {
        if plain.line() == format!("<{secure_nick}> over TLS") {
            break;
        }
    }
}

#[test]
fn tls_and_plain_clients_share_one_room_on_server3() {
    tls_and_plain_clients_share_one_room(SERVER3);
}

#[test]
fn tls_and_plain_clients_share_one_room_on_server2() {
    tls_and_plain_clients_share_one_room(SERVER2);
}

#[test]
fn the_plain_endpoint_is_announced_first_and_unchanged() {
    let cert = Certs::new();
    let server = cert.serve(SERVER4, &[]);
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(server.tls_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.addr().port(), server.tls_addr().port());
}

#[test]
fn a_mebibyte_echoed_over_tls_comes_back_byte_exact() {
    let cert = Certs::new();
    let server = cert.serve(SERVER4, &["--raw"]);
    let mut tls = tls::connect(server.tls_addr(), &cert.client_config());
    let sent: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // At most 64 KiB in flight: a client that wrote everything before
    // reading would fill both directions and wait forever.
    const CHUNK: usize = 16 * 1024;
    let mut back = Vec::with_capacity(sent.len());
    let mut buf = vec![0; 64 * 1024];
    let mut read_into = |tls: &mut Tls, back: &mut Vec<u8>| {
        let n = tls.read(&mut buf).expect("the echo");
        assert!(n > 0, "the echo ended after {} bytes", back.len());
        back.extend_from_slice(&buf[..n]);
    };
    for (i, chunk) in sent.chunks(CHUNK).enumerate() {
        tls.write_all(chunk).unwrap();
        while back.len() + 4 * CHUNK < (i + 1) * CHUNK {
            read_into(&mut tls, &mut back);
        }
    }
    while back.len() < sent.len() {
        read_into(&mut tls, &mut back);
    }
    assert!(back == sent, "the echo differs from what was sent");
}

#[test]
fn plaintext_to_the_tls_port_or_a_stalled_handshake_costs_only_that_client() {
    let cert = Certs::new();
    let server = cert.serve(SERVER3, &["--handshake-timeout", "1"]);
    let client = cert.client_config();
    let (mut alice, _) = TlsChat::join(server.tls_addr(), &client);
    let (mut bob, bob_nick) = ChatClient::join(server.addr());

    // A chat client that took the wrong port: it is told off by an alert
    // and closed, and nobody hears its `Hi`.
    let mut confused = common::connect(server.tls_addr());
    confused.write_all(b"Hi\n").unwrap();
    let mut answer = Vec::new();
    let _ = confused.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"Hello"), "{answer:?}");

    // Half a ClientHello, then silence: closed at the deadline.
    let started = Instant::now();
    let mut stalled = common::connect(server.tls_addr());
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    assert_eq!(stalled.read(&mut [0; 16]).unwrap(), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < TIMEOUT,
        "{waited:?}"
    );

    bob.send("still here");
    alice.skip_to(&format!("<{bob_nick}> still here"));
}

#[test]
fn a_certificate_with_no_tls_port_to_serve_is_a_usage_error() {
    let cert = Certs::new();
    let (cert_file, key_file) = (path(cert.cert()), path(cert.key()));
    for bin in [SERVER4, SERVER3] {
        let output = Command::new(bin)
            .args([
                "127.0.0.1",
                "0",
                "--tls-cert",
                &cert_file,
                "--tls-key",
                &key_file,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{bin}: {stderr}");
        assert!(
            stderr.starts_with("error: --tls-cert and --tls-key are for a TLS port"),
            "{bin}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{bin} listened: {stderr}");
    }
}

#[test]
fn the_web_tls_port_alone_serves_https_with_the_certificate() {
    let cert = Certs::new();
    let (cert_file, key_file) = (path(cert.cert()), path(cert.key()));
    let args = [
        "--web-tls-port",
        "0",
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
    ];
    let server = common::Server::start(SERVER3, &args);
    let mut tls = tls::connect(server.web_tls_addr(), &cert.client_config());
    tls.write_all(b"GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let mut answer = [0; 12];
    tls.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 404");
}

#[test]
fn unusable_certificate_files_are_one_error_line_and_status_1() {
    let cert = Certs::new();
    let missing = path(cert.cert().with_file_name("missing.pem"));
    let (cert_file, key_file) = (path(cert.cert()), path(cert.key()));
    let cases = [
        (&cert_file, &missing, "cannot read the private key"),
        (&missing, &key_file, "cannot read the certificate"),
        (&key_file, &key_file, "no certificate in this file"),
        (&cert_file, &cert_file, "no private key in this file"),
    ];
    for (cert_file, key_file, says) in cases {
        let output = Command::new(SERVER3)
            .args(["127.0.0.1", "0", "--tls-port", "0"])
            .args(["--tls-cert", cert_file, "--tls-key", key_file])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{says}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "it listened: {stderr}");
    }
}

/// Whether `tool` can be run. Missing, a test says so in one line and
/// passes — except under CI, where the test command installs it and its
/// absence is a failure.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing (./test installs it)"
        );
        eprintln!("skipped: {tool} is not installed (./test installs it)");
    }
    found
}

#[test]
fn openssl_s_client_chats_with_server3() {
    if !have("openssl") {
        return;
    }
    let cert = Certs::new();
    let server = cert.serve(SERVER3, &[]);
    let (mut bob, _) = ChatClient::join(server.addr());
    let port = server.tls_addr().port().to_string();
    let mut openssl = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", "localhost", "-CAfile", &path(cert.ca())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to = openssl.stdin.take().unwrap();
    to.write_all(b"Hi\n").unwrap();
    let mut from = BufReader::new(openssl.stdout.take().unwrap());
    let mut line = String::new();
    from.read_line(&mut line).unwrap();
    assert_eq!(line, "Hello\n");
    line.clear();
    from.read_line(&mut line).unwrap();
    let nick = line
        .strip_prefix("* welcome, you are ")
        .and_then(|rest| rest.split_once(';'))
        .map(|(nick, _)| nick.to_owned())
        .unwrap_or_else(|| panic!("expected the welcome, got {line:?}"));
    to.write_all(b"from openssl\n").unwrap();
    loop {
        if bob.line() == format!("<{nick}> from openssl") {
            break;
        }
    }
    to.write_all(b"bye\n").unwrap();
    drop(to);
    let _ = openssl.wait();
}

#[test]
fn socat_echoes_through_server4() {
    if !have("socat") {
        return;
    }
    let cert = Certs::new();
    let server = cert.serve(SERVER4, &[]);
    let port = server.tls_addr().port();
    let address = format!(
        "OPENSSL:127.0.0.1:{port},cafile={},commonname=localhost,verify=1",
        path(cert.ca())
    );
    let output = Command::new("socat")
        .args(["-t", "5", "-", &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut socat| {
            socat
                .stdin
                .take()
                .unwrap()
                .write_all(b"over socat\nbye\n")?;
            socat.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "over socat\nbye\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
