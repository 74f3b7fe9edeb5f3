//! Serves the calculator handler (`chatapp::calc`) on the reactor: the whole
//! of what it takes to put a handler on the network. See docs/extending.md.
//!
//! ```text
//! $ cargo run --example calc_server -- localhost 5001
//! listening on 127.0.0.1:5001
//! $ nc localhost 5001
//! 1 + 2 * 3
//! 7
//! ```
//!
//! An expression sent without its line end is answered once nothing more
//! has come for 300 ms (`chatapp::calc::EndLines`), for clients that send
//! each message with one write and no newline.
//!
//! Ctrl-C (SIGINT) or SIGTERM stops it gracefully.

use std::error::Error;
use std::net::TcpListener;

use chatapp::calc::{Calc, EndLines};
use reactor::{Config, Reactor};

fn main() {
    if let Err(e) = serve() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port] = args.as_slice() else {
        return Err("usage: calc_server HOST PORT".into());
    };
    let port: u16 = port.parse().map_err(|_| format!("invalid port '{port}'"))?;
    // Binding `(host, port)` tries each address `host` resolves to.
    let listener = TcpListener::bind((host.as_str(), port))
        .map_err(|e| format!("cannot listen on {host}:{port}: {e}"))?;

    let mut reactor = Reactor::new(Config::default())?;
    let calc = reactor.listen(listener)?;
    reactor.stop_on_signals()?;
    // Port 0 means "any free port": print the one we got.
    if let Some(addr) = reactor.local_addr(calc) {
        println!("listening on {addr}");
    }
    reactor.run(&mut EndLines::new(Calc))?;
    Ok(())
}
