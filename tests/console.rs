//! The chat server's console in a terminal: the server runs with a
//! pseudo-terminal as its stdin and stdout, as in an operator's shell, and
//! the test types on the terminal's other side and reads what it shows.

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::{ChatClient, TIMEOUT};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// A server whose stdin and stdout are a pseudo-terminal.
struct OnTerminal {
    child: Child,
    /// The terminal's side the operator types on and reads.
    keyboard: File,
    /// The terminal's own side, to read its settings.
    terminal: OwnedFd,
    /// What the terminal shows, as it comes.
    screen: Receiver<Vec<u8>>,
    /// Everything shown so far not yet matched.
    shown: String,
}

impl OnTerminal {
    /// Starts `bin 127.0.0.1 0 ARGS…` with the terminal as its stdin and
    /// stdout, and as its stderr too if `log_on_terminal`.
    fn start(bin: &str, args: &[&str], log_on_terminal: bool) -> OnTerminal {
        let (keyboard, terminal) = open_pty();
        let stderr = if log_on_terminal {
            Stdio::from(terminal.try_clone().expect("dup"))
        } else {
            Stdio::null()
        };
        let child = Command::new(bin)
            .args(["127.0.0.1", "0"])
            .args(args)
            .stdin(Stdio::from(terminal.try_clone().expect("dup")))
            .stdout(Stdio::from(terminal.try_clone().expect("dup")))
            .stderr(stderr)
            .env("TERM", "xterm")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let mut reader = keyboard.try_clone().expect("dup");
        let (tx, screen) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0; 4096];
            // Ends with EIO once the server has exited and closed its side.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        OnTerminal {
            child,
            keyboard,
            terminal,
            screen,
            shown: String::new(),
        }
    }

    /// Waits until the screen has shown `wanted`; returns what it showed up
    /// to the end of it, and forgets that.
    fn expect(&mut self, wanted: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(at) = self.shown.find(wanted) {
                let rest = self.shown.split_off(at + wanted.len());
                return std::mem::replace(&mut self.shown, rest);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.recv_timeout(left) {
                Ok(bytes) => self.shown.push_str(&String::from_utf8_lossy(&bytes)),
                Err(e) => panic!(
                    "expected {wanted:?} on the terminal ({e}); it shows {:?}",
                    self.shown
                ),
            }
        }
    }

    /// Types `keys` on the terminal.
    fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).expect("type");
    }

    /// Whether the terminal is in its line discipline (canonical mode, echo):
    /// as a shell leaves it, not as a line editor sets it.
    fn is_cooked(&self) -> bool {
        let mut settings = MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr writes a termios to a pointer valid for it.
        let rc = unsafe { libc::tcgetattr(self.terminal.as_raw_fd(), settings.as_mut_ptr()) };
        assert_eq!(rc, 0, "tcgetattr: {}", io::Error::last_os_error());
        // SAFETY: initialised by the successful call.
        let settings = unsafe { settings.assume_init() };
        settings.c_lflag & (libc::ICANON | libc::ECHO) == (libc::ICANON | libc::ECHO)
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new pseudo-terminal, 80 by 24: its controlling side and the terminal.
fn open_pty() -> (File, OwnedFd) {
    // SAFETY: plain system calls; each result is checked before use, and
    // each fd is owned by exactly one OwnedFd or File.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt: {}", io::Error::last_os_error());
        let keyboard = File::from_raw_fd(master);
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let terminal = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            terminal >= 0,
            "open the terminal: {}",
            io::Error::last_os_error()
        );
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        assert_eq!(
            libc::ioctl(master, libc::TIOCSWINSZ, &size),
            0,
            "TIOCSWINSZ"
        );
        (keyboard, OwnedFd::from_raw_fd(terminal))
    }
}

/// Waits up to [`TIMEOUT`] for the server to exit; its status.
fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn server2_console_in_a_terminal_edits_lines_and_prints_the_room_above_them() {
    console_in_a_terminal(SERVER2);
}

#[test]
fn server3_console_in_a_terminal_edits_lines_and_prints_the_room_above_them() {
    console_in_a_terminal(SERVER3);
}

/// The console, typed on through a terminal: its prompt after the address,
/// a line to the room, a line from the room printed above a half-typed one,
/// which is then finished and sent whole, history, and `/quit`, after which
/// the terminal is as the shell had it.
fn console_in_a_terminal(bin: &str) {
    let mut server = OnTerminal::start(bin, &[], false);
    let before = server.expect("listening on ");
    assert!(
        !before.contains("> "),
        "the prompt after the address: {before:?}"
    );
    let addr: SocketAddr = server.expect("\n").trim().parse().expect("IP:PORT");
    server.expect(">");

    let (mut alice, _) = ChatClient::join(addr);
    server.expect("* user1 joined");
    server.type_keys("hello room\r");
    alice.expect_line("<server> hello room");

    // Half a line typed, then a line from the room: it is printed above,
    // and the half-typed line is kept, to be finished and sent whole.
    server.type_keys("half ");
    server.expect("half ");
    alice.send("interrupting");
    let shown = server.expect("<user1> interrupting");
    assert!(!shown.contains("half <user1>"), "{shown:?}");
    server.expect("> half ");
    server.type_keys("typed\r");
    alice.expect_line("<server> half typed");

    // History: up-arrow brings the last line back.
    server.type_keys("\x1b[A\r");
    alice.expect_line("<server> half typed");

    server.type_keys("/quit\r");
    alice.expect_line("* server shutting down");
    server.expect("* server shutting down");
    alice.expect_eof();
    drop(alice);
    let status = wait_exit(&mut server.child);
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    assert!(
        server.is_cooked(),
        "the terminal is left as the shell had it"
    );
}

#[test]
fn the_log_shows_no_joins_on_the_console_s_terminal_unless_verbose() {
    // The log's line for a join names the client's address; the
    // transcript's does not.
    let logged_join = "Some(127.0.0.1:";
    let mut verbose = OnTerminal::start(SERVER3, &["--verbose"], true);
    verbose.expect("listening on ");
    let addr: SocketAddr = verbose.expect("\n").trim().parse().expect("IP:PORT");
    let (_alice, _) = ChatClient::join(addr);
    verbose.expect(logged_join);

    let mut server = OnTerminal::start(SERVER3, &[], true);
    server.expect("listening on ");
    let addr: SocketAddr = server.expect("\n").trim().parse().expect("IP:PORT");
    let (mut alice, _) = ChatClient::join(addr);
    let mut shown = server.expect("* user1 joined");
    alice.send("bye");
    alice.expect_line("Bye");
    shown += &server.expect("* user1 left");
    // The last line the server writes: what the log wrote at the join, on
    // the same terminal, came before it.
    server.type_keys("/quit\r");
    shown += &server.expect("* server shutting down");
    assert!(!shown.contains(logged_join), "{shown:?}");
}
