//! The chat page in a real browser: server3 serves it (`--web-port`, and
//! `--web-tls-port` for `wss://`), headless Chromium loads it, and it chats
//! with TCP clients in the same room. The browser is driven through
//! chromedriver with W3C WebDriver, a handful of JSON-over-HTTP calls made
//! here on a plain `TcpStream`. A screenshot goes to `target/browser.png`
//! (and a phone-sized one to `target/browser-phone.png`) for a person to
//! look at.
//!
//! Skipped, saying so, where Debian's `chromium` or `chromium-driver` is not
//! installed — except under `CI=true`, where the test command installs them
//! and their absence is a failure.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use base64::Engine;
use common::tls::Certs;
use common::{ChatClient, Server, TIMEOUT};
use serde_json::{json, Value};

const SERVER3: &str = env!("CARGO_BIN_EXE_server3");
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long one WebDriver call may take: starting the browser is the
/// longest, a few seconds on a busy machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A message that would run script if the page put text into its markup.
const XSS: &str = r#"<img src=x onerror="document.title='pwned'">"#;

#[test]
fn the_page_in_chromium_chats_escapes_markup_fits_a_phone_and_reconnects() {
    if !have_chromium() {
        return;
    }
    let browser = Browser::start();
    let (mut server, web) = start_server3(0);
    let (mut bob, bob_nick) = ChatClient::join(server.addr());

    // The page greets by itself, and asks who is here.
    browser.navigate(&format!("http://{web}/"));
    let nick = joined(&browser, &mut bob);
    browser.wait_for(
        "the who list",
        &format!("{} === '{bob_nick}\\n{nick}'", text_of("#who li")),
    );

    // For the keyboard alone: the cursor starts where a line is typed, and
    // every field has a label a screen reader can say.
    browser.wait_for(
        "the cursor in the message field",
        "document.activeElement === document.getElementById('input')",
    );
    let unlabelled = browser.execute(
        "return [...document.querySelectorAll('input')].filter(i => !i.labels.length).map(i => i.id)",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]), "fields without a label");

    // The nick field sends /nick, and the page follows the change.
    let field = browser.find("#nick");
    browser.clear(&field);
    browser.send_keys(&field, "alice\u{E007}");
    bob.expect_line(&format!("* {nick} is now alice"));
    browser.wait_for(
        "the new nick in the who list",
        &format!("{} === '{bob_nick}\\nalice'", text_of("#who li")),
    );

    // Enter sends a line from the page to the TCP client...
    let input = browser.find("#input");
    browser.send_keys(&input, "hello from a browser\u{E007}");
    bob.expect_line("<alice> hello from a browser");

    // ...and a TCP client's line shows on the page, with its sender.
    bob.send("hello from a terminal");
    browser.wait_for(
        "the TCP client's line",
        &format!(
            "{}.endsWith('{bob_nick}hello from a terminal')",
            last_message()
        ),
    );

    // Private messages, both ways, marked as such on the page.
    browser.send_keys(&input, &format!("/msg {bob_nick} psst\u{E007}"));
    bob.expect_line("<alice> (private) psst");
    bob.send("/msg alice psst yourself");
    browser.wait_for(
        "the private message",
        &format!(
            "document.querySelector('#messages li:last-child.private') \
             && {}.endsWith('{bob_nick}(private)psst yourself')",
            last_message()
        ),
    );

    // Rooms: the page follows alice into #rust, where bob joins her, and
    // both come back to the lobby.
    browser.send_keys(&input, "/join #rust\u{E007}");
    bob.expect_line("* alice left");
    browser.wait_for(
        "the room's title",
        "document.getElementById('who-title').textContent === '#rust (1)'",
    );
    bob.send("/join #rust");
    bob.expect_line("* you are now in #rust");
    browser.wait_for(
        "bob in the room's list",
        &format!(
            "document.getElementById('who-title').textContent === '#rust (2)' \
                  && {} === 'alice\\n{bob_nick}'",
            text_of("#who li")
        ),
    );
    bob.send("/join #lobby");
    bob.expect_line("* you are now in #lobby");
    browser.send_keys(&input, "/join #lobby\u{E007}");
    bob.expect_line("* alice joined");
    browser.wait_for(
        "the lobby's title",
        "document.getElementById('who-title').textContent === 'Here (2)'",
    );

    // Markup in a message is text: shown as sent, no element made of it,
    // nothing run. A round trip after it gives a script that was wrongly
    // made the time to run before the title is looked at.
    let title = browser.execute("return document.title", json!([]));
    bob.send(XSS);
    browser.wait_for(
        "the markup as text",
        &format!("{}.endsWith({})", last_message(), json!(XSS)),
    );
    browser.send_keys(&input, "still here\u{E007}");
    bob.expect_line("<alice> still here");
    let images = browser.execute(
        "return document.querySelectorAll('#messages img').length",
        json!([]),
    );
    assert_eq!(images, json!(0), "the message made an element");
    let after = browser.execute("return document.title", json!([]));
    assert_eq!(after, title, "the message ran script");

    // A desktop's window, then a phone's: one column, and nothing wider
    // than the screen, so no sideways scrolling — not even for a word
    // longer than the screen is wide, such as a hash.
    browser.screenshot(&target().join("browser.png"));
    let hash = format!("sha256:{}", "0123456789abcdef".repeat(4));
    bob.send(&hash);
    browser.wait_for(
        "the long word",
        &format!("{}.endsWith('{hash}')", last_message()),
    );
    browser.set_window_size(390, 844);
    browser.wait_for("the phone's width", "window.innerWidth <= 400");
    let overflow = browser.execute(
        "const e = [document.documentElement, document.getElementById('messages')]; \
         return e.filter(x => x.scrollWidth > x.clientWidth).map(x => x.id || x.tagName)",
        json!([]),
    );
    assert_eq!(overflow, json!([]), "wider than a phone's screen");
    browser.screenshot(&target().join("browser-phone.png"));

    // The server stops: the page says the connection is lost and that it
    // will come back by itself.
    server.sigterm();
    server.expect_exit_success();
    browser.wait_for(
        "the lost connection",
        "document.getElementById('status').dataset.state === 'lost' \
         && document.getElementById('status').textContent.includes('reconnecting')",
    );
    browser.wait_for(
        "the shutdown notice",
        &format!(
            "{}.includes('server shutting down')",
            text_of("#messages li")
        ),
    );

    // A server on the same port again: the page comes back by itself, and
    // takes its nick again.
    let (mut server, _) = start_server3(web.port());
    browser.wait_for(
        "the page to come back as alice",
        "document.getElementById('status').dataset.state === 'online' \
         && document.getElementById('nick').value === 'alice'",
    );
    let (mut carol, carol_nick) = ChatClient::join(server.addr());
    carol.send("/who");
    carol.expect_line(&format!("* 2 online: alice, {carol_nick}"));
    browser.wait_for(
        "the who list of the new server",
        &format!("{} === 'alice\\n{carol_nick}'", text_of("#who li")),
    );

    // Kicked, the page stays away until its user asks to rejoin.
    server.console("/kick alice");
    carol.expect_line("* alice was kicked");
    browser.wait_for(
        "the page to stay away",
        "document.getElementById('status').textContent.startsWith('Disconnected.')",
    );
    let rejoin = browser.find("#status button");
    browser.click(&rejoin);
    let joined = carol.line();
    let again = joined
        .strip_prefix("* ")
        .and_then(|line| line.strip_suffix(" joined"))
        .unwrap_or_else(|| panic!("expected a join, got {joined:?}"));
    carol.expect_line(&format!("* {again} is now alice"));
    browser.wait_for(
        "the page to rejoin as alice",
        "document.getElementById('status').textContent === 'Connected as alice.'",
    );
}

/// Over HTTPS the page opens its WebSocket with `wss://`, to the port it
/// came from.
#[test]
fn the_page_over_https_chats_through_wss() {
    if !have_chromium() {
        return;
    }
    let browser = Browser::start();
    let certs = Certs::new();
    // Beside a TLS port for the line protocol, as one would serve both.
    let server = certs.serve(SERVER3, &["--web-tls-port", "0"]);
    let port = server.web_tls_addr().port();
    let (mut bob, _) = ChatClient::join(server.addr());

    browser.navigate(&format!("https://127.0.0.1:{port}/"));
    let nick = joined(&browser, &mut bob);
    let input = browser.find("#input");
    browser.send_keys(&input, "hello over wss\u{E007}");
    bob.expect_line(&format!("<{nick}> hello over wss"));
    let scheme = browser.execute("return location.protocol", json!([]));
    assert_eq!(scheme, json!("https:"));
}

/// Waits for the page to join, as `bob` (in its room) sees it; its nick.
fn joined(browser: &Browser, bob: &mut ChatClient) -> String {
    let nick = browser.wait_for(
        "the page to join",
        "document.getElementById('status').dataset.state === 'online' \
         && document.getElementById('nick').value",
    );
    let nick = nick.as_str().expect("a nick").to_owned();
    bob.expect_line(&format!("* {nick} joined"));
    nick
}

/// Starts server3 with its web endpoint on `port` (0: a free one), and
/// returns it and that endpoint's address.
fn start_server3(port: u16) -> (Server, SocketAddr) {
    let server = Server::start(SERVER3, &["--web-port", &port.to_string()]);
    let web = server.web_addr();
    (server, web)
}

/// A script expression: the text of the elements `selector` finds, one per
/// line.
fn text_of(selector: &str) -> String {
    format!("[...document.querySelectorAll('{selector}')].map(e => e.textContent).join('\\n')")
}

/// A script expression: the text of the last line in the message list.
fn last_message() -> String {
    "(document.querySelector('#messages li:last-child') || {textContent: ''}).textContent"
        .to_owned()
}

/// The build's `target/` directory (server3 is `target/debug/server3`).
fn target() -> PathBuf {
    let bin = Path::new(SERVER3);
    bin.parent()
        .and_then(Path::parent)
        .expect("target/debug/server3")
        .to_owned()
}

/// Whether chromium and chromedriver are installed. Missing, the test says
/// so in one line and passes — except under CI.
fn have_chromium() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|tool| !Path::new(tool).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} missing (./test installs chromium and chromium-driver)",
        missing.join(" and ")
    );
    eprintln!(
        "skipped: {} not installed (./test installs chromium and chromium-driver)",
        missing.join(" and ")
    );
    false
}

/// chromedriver, running until dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    /// Starts chromedriver on a port of its choosing, and waits for it to
    /// say which.
    fn start() -> Driver {
        let mut child = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (port, port_said) = mpsc::channel();
        // Reads every line to the end, so that chromedriver never blocks
        // on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(rest) =
                    line.strip_prefix("ChromeDriver was started successfully on port ")
                {
                    let _ = port.send(rest.trim_end_matches('.').parse::<u16>());
                }
            }
        });
        let mut driver = Driver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        match port_said.recv_timeout(TIMEOUT) {
            Ok(Ok(port)) => driver.addr.set_port(port),
            other => panic!("chromedriver did not say where it listens: {other:?}"),
        }
        driver
    }

    /// One WebDriver command: `method path` with `body` as JSON (a POST's
    /// only). Returns
    /// the answer's `value`, or the error WebDriver gave.
    fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, String> {
        let body = match method {
            "POST" => body.to_string(),
            _ => String::new(),
        };
        let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(CALL_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        (&stream)
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        // chromedriver says `Connection: close` but may leave the
        // connection open: read exactly the body its length announces.
        let mut reader = BufReader::new(&stream);
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let mut answer = vec![0; length.ok_or("an answer without Content-Length")?];
        reader.read_exact(&mut answer).map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        match value.get("error") {
            Some(error) => Err(format!("{error}: {}", value["message"])),
            None => Ok(value),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Does nothing if it has already exited and been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session. Dropped, pass or fail, it ends the session
/// (which closes the browser), then chromedriver.
struct Browser {
    session: String,
    // Dropped after `Browser::drop` has ended the session with it.
    driver: Driver,
}

impl Browser {
    /// Starts chromedriver and, through it, headless Chromium.
    fn start() -> Browser {
        let driver = Driver::start();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The HTTPS test's CA is made at test time: no browser trusts it.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespaces to sandbox with.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1000,640",
                ],
            },
        }}});
        let session = driver
            .call("POST", "/session", &capabilities)
            .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
        let session = session["sessionId"].as_str().expect("a session id");
        let browser = Browser {
            session: session.to_owned(),
            driver,
        };
        // Leaves `wait_for`'s own timeout room to fire first.
        browser.command(
            "POST",
            "timeouts",
            &json!({"script": TIMEOUT.as_millis() as u64 + 5_000}),
        );
        browser
    }

    /// A command of this session: `method /session/ID/what`.
    fn command(&self, method: &str, what: &str, body: &Value) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        self.driver
            .call(method, &path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {what}: {e}"))
    }

    /// Loads `url`, and returns once it has loaded.
    fn navigate(&self, url: &str) {
        self.command("POST", "url", &json!({ "url": url }));
    }

    /// The element `selector` (CSS) finds, as WebDriver names it.
    fn find(&self, selector: &str) -> String {
        let found = self.command(
            "POST",
            "element",
            &json!({"using": "css selector", "value": selector}),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_owned()
    }

    /// Clicks `element`, as a person would (or presses Enter on it).
    fn click(&self, element: &str) {
        self.command("POST", &format!("element/{element}/click"), &json!({}));
    }

    fn clear(&self, element: &str) {
        self.command("POST", &format!("element/{element}/clear"), &json!({}));
    }

    /// Types `text` into `element`, as a person at its keyboard would;
    /// `\u{E007}` is Enter.
    fn send_keys(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &format!("element/{element}/value"),
            &json!({ "text": text }),
        );
    }

    /// Runs `script` (a function body) in the page with `args`, and returns
    /// what it returns.
    fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "execute/sync",
            &json!({"script": script, "args": args}),
        )
    }

    /// Waits up to [`TIMEOUT`] for the script expression `condition` to be
    /// truthy, and returns its value. The page does the waiting: it checks
    /// the condition again on every change to the document, so no time is
    /// lost between polls and none is guessed.
    fn wait_for(&self, what: &str, condition: &str) -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return null; }} }};
             const now = check();
             if (now) {{ done(now); return; }}
             const watch = new MutationObserver(() => {{
                 const v = check();
                 if (v) {{ watch.disconnect(); clearTimeout(timer); done(v); }}
             }});
             watch.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
             const timer = setTimeout(() => {{ watch.disconnect(); done(null); }}, {});",
            TIMEOUT.as_millis()
        );
        let value = self.command(
            "POST",
            "execute/async",
            &json!({"script": script, "args": []}),
        );
        if value.is_null() || value == json!(false) || value == json!("") {
            let page = self.execute("return document.body.innerText", json!([]));
            panic!(
                "timed out waiting for {what} ({condition}); the page reads:\n{}",
                page.as_str().unwrap_or_default()
            );
        }
        value
    }

    /// Sets the window's outer size in CSS pixels.
    fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "window/rect",
            &json!({"width": width, "height": height}),
        );
    }

    /// Saves a PNG of what the window shows to `path`.
    fn screenshot(&self, path: &Path) {
        let png = self.command("GET", "screenshot", &json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a screenshot in base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Never panics: this may run while a failed test unwinds.
        let path = format!("/session/{}", self.session);
        if let Err(e) = self.driver.call("DELETE", &path, &json!({})) {
            eprintln!("could not end the browser session: {e}");
        }
    }
}
