//! server3: the chat server on the event loop — every client, one thread.

use chatapp::chat::ConsoleLine;
use chatapp::cli::{self, ChatArgs, ServerArgs};
use chatapp::web::Web;
use clap::Parser;
use reactor::Reactor;

/// Chat server: all clients in one room, served by one thread with epoll.
///
/// A client greets with `Hi` and is answered `Hello`; each line it sends
/// then goes to everyone else as `<nick> line`. See docs/protocol.md.
/// Lines typed on stdin go to everyone from `server` (/help lists the
/// console commands, /quit stops); stdout is the chat transcript, stderr
/// the log. SIGINT, SIGTERM or SIGHUP stops the server gracefully.
///
/// With --web-port the room is also open to browsers: `GET /` is the chat
/// page, and its WebSocket (`/ws`) speaks the same lines.
///
/// In a terminal the console has a prompt, line editing and history, and
/// the transcript is printed above the line being typed.
#[derive(Parser)]
#[command(version, after_help = cli::CHAT_SERVER_EXIT_STATUS)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() {
    let args = Args::parse();
    let _log = cli::init_logging(args.chat.quiet_log(args.server.quiet));
    let plan = args.chat.plan(&args.server);
    let web = args.chat.web_config(&args.server, &plan);
    let mut chat = Web::new(args.chat.handler(None), web);
    let config = args.chat.loop_config(args.server.config());
    cli::serve_on::<Reactor<_>, _>(&args.server, &plan, config, &mut chat, Some(ConsoleLine));
}
