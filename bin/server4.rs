//! server4: the echo server. Every byte a client sends comes straight back;
//! a line saying `bye` ends the connection.

use std::error::Error;

use chatapp::cli::{self, ServerArgs};
use chatapp::echo::Echo;
use clap::Parser;
use reactor::Reactor;

/// Echo server: sends back every byte it receives, at once and unchanged.
///
/// A line that is `bye` (any case, with or without surrounding whitespace) is
/// echoed, then the server closes that connection; --raw turns this off.
/// SIGINT or SIGTERM stops the server gracefully.
#[derive(Parser)]
#[command(version, after_help = cli::SERVER_EXIT_STATUS)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Pure echo: do not close the connection on `bye`.
    #[arg(long)]
    raw: bool,
}

fn main() {
    let args = Args::parse();
    cli::init_logging(args.server.quiet);
    if let Err(e) = serve(&args) {
        cli::fail(e);
    }
}

fn serve(args: &Args) -> Result<(), Box<dyn Error>> {
    let listener = args.server.bind()?;
    let addr = listener.local_addr()?;
    let mut reactor = Reactor::new(args.server.config())?;
    reactor.listen(listener)?;
    reactor.stop_on_signals()?;
    // Only now: whoever waits for this line may connect, or send a signal.
    cli::announce(addr);

    reactor.run(&mut Echo::new(args.raw))?;
    tracing::info!("stopped");
    Ok(())
}
