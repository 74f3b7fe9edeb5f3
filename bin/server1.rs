//! server1: the chat server that serves one client at a time.

use chatapp::chat::ConsoleLine;
use chatapp::cli::{self, ChatArgs, ServerArgs};
use chatapp::web::Web;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use reactor::{Config, Reactor};

/// What a second client is told while the first is being served.
const BUSY: &str = "ERR busy: serving another client, try again later";

/// Chat server for one client at a time: the chat is between that client
/// and the operator at the console.
///
/// A client greets with `Hi` and is answered `Hello`. While it is connected,
/// anyone else who connects is told `ERR busy: serving another client, try
/// again later` at once and disconnected; once it leaves, the next client is
/// served. Lines typed on stdin go to the client from `server` (/help lists
/// the console commands, /quit stops); stdout is the chat transcript,
/// stderr the log. SIGINT, SIGTERM or SIGHUP stops the server gracefully.
///
/// With --web-port the one client may be a browser: `GET /` is the chat
/// page, and its WebSocket (`/ws`) is a client like a TCP one, taking the
/// one place while it is open (a page load meanwhile is answered `503`).
/// Every HTTP answer closes its connection, so that a page load holds the
/// place only while it is answered.
///
/// In a terminal the console has a prompt, line editing and history, and
/// the transcript is printed above the line being typed.
#[derive(Parser)]
#[command(
    version,
    after_help = cli::CHAT_SERVER_EXIT_STATUS,
    // One client at a time is what server1 is: its limit is not a choice.
    mut_arg("max_clients", |arg| arg.help(
        "Always 1: server1 serves one client at a time, and tells a second one it is busy"
    ))
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() {
    let args = Args::parse();
    if args.server.max_clients.is_some_and(|n| n != 1) {
        // A usage error like clap's own: the same `error:` line and status 2.
        let msg = "server1 serves one client at a time: --max-clients can only be 1";
        let mut command = Args::command().bin_name("server1");
        command.error(ErrorKind::ArgumentConflict, msg).exit();
    }
    let _log = cli::init_logging(args.chat.quiet_log(args.server.quiet));
    let plan = args.chat.plan(&args.server);
    let mut web = args.chat.web_config(&args.server, &plan);
    // A kept-alive page connection would hold the one place, and the
    // page's WebSocket would be told the server is busy.
    web.policy.keep_alive = false;
    let mut chat = Web::new(args.chat.handler(Some(BUSY)), web);
    // One at a time is the event loop's connection limit set to one: the
    // loop answers a second client with the handler's busy line, at once.
    let config = Config {
        max_connections: 1,
        ..args.chat.loop_config(args.server.config())
    };
    cli::serve_on::<Reactor<_>, _>(&args.server, &plan, config, &mut chat, Some(ConsoleLine));
}
