//! tokio-chat: tokio's chat example, speaking netchat's protocol, as the
//! peer of server3.
//!
//! The shape is that of tokio's `examples/chat.rs`: a task per client, its
//! socket framed as lines with `LinesCodec`, an unbounded channel per client
//! for what the others say, and the map of every client's sender behind a
//! mutex; a broadcast clones the message into each channel. What it speaks
//! is netchat's protocol, as much of it as loadgen's chat mode needs:
//! `Hi` is answered `Hello` and `* welcome, you are userN; …`, the others
//! are told `* userN joined` and `* userN left`, and every line is relayed
//! to the others as `<userN> line`. No commands, no cleaning, no limits but
//! the line length. `TCP_NODELAY` is set, as server3 sets it.
//!
//! `tokio-chat HOST PORT [--current-thread]` prints `listening on IP:PORT`.

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::SinkExt;
use netchat_bench::ServerArgs;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Builder;
use tokio::sync::{mpsc, Mutex};
use tokio_stream::StreamExt;
use tokio_util::codec::{Framed, LinesCodec};

/// The longest line, as in netchat's chat servers.
const MAX_LINE: usize = 4096;

/// Shorthand for the transmit half of a client's channel.
type Tx = mpsc::UnboundedSender<String>;

/// What every client's task shares: whom to broadcast to.
struct Shared {
    peers: HashMap<SocketAddr, Tx>,
    /// The number of the last `user<N>` nick given out.
    last_user: u64,
}

impl Shared {
    /// Sends `message` to every client but `sender`.
    fn broadcast(&mut self, sender: SocketAddr, message: &str) {
        for (addr, tx) in &self.peers {
            if *addr != sender {
                // A client whose task has ended removes itself; ignore it.
                let _ = tx.send(message.to_string());
            }
        }
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = ServerArgs::parse();
    let runtime = if args.current_thread {
        Builder::new_current_thread().enable_all().build()?
    } else {
        Builder::new_multi_thread().enable_all().build()?
    };
    runtime.block_on(serve(&args.addr))
}

async fn serve(addr: &str) -> Result<(), Box<dyn Error>> {
    let state = Arc::new(Mutex::new(Shared {
        peers: HashMap::new(),
        last_user: 0,
    }));
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (stream, addr) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            // A client that breaks the protocol or its connection just goes.
            let _ = process(state, stream, addr).await;
        });
    }
}

/// Serves one client: the greeting, then its lines out and the others' in.
async fn process(
    state: Arc<Mutex<Shared>>,
    stream: TcpStream,
    addr: SocketAddr,
) -> Result<(), Box<dyn Error>> {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));

    match lines.next().await {
        Some(Ok(line)) if line.trim().eq_ignore_ascii_case("hi") => {}
        Some(Ok(_)) => {
            lines.send("ERR say Hi first").await?;
            return Ok(());
        }
        _ => return Ok(()),
    }

    let nick = {
        let mut state = state.lock().await;
        state.last_user += 1;
        format!("user{}", state.last_user)
    };
    lines.feed("Hello".to_string()).await?;
    lines
        .send(format!("* welcome, you are {nick}; /help lists commands"))
        .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut state = state.lock().await;
        state.broadcast(addr, &format!("* {nick} joined"));
        state.peers.insert(addr, tx);
    }

    loop {
        tokio::select! {
            Some(msg) = rx.recv() => {
                if lines.send(&msg).await.is_err() {
                    break;
                }
            }
            result = lines.next() => match result {
                Some(Ok(msg)) => {
                    let mut state = state.lock().await;
                    state.broadcast(addr, &format!("<{nick}> {msg}"));
                }
                // An error (a line too long, a reset) or the end of stream.
                Some(Err(_)) | None => break,
            },
        }
    }

    let mut state = state.lock().await;
    state.peers.remove(&addr);
    state.broadcast(addr, &format!("* {nick} left"));
    Ok(())
}
