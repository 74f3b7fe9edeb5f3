//! tokio-echo: tokio's echo example, as the peer of server4.
//!
//! As in tokio's `examples/echo.rs`: a task per connection, each with its
//! own buffer, reading and writing back until the peer closes. Two changes,
//! both to match server4: `TCP_NODELAY` (server4 sets it), and a 4 KiB
//! buffer where the example has 1 KiB, so that a 4 KiB message is one read.
//!
//! `tokio-echo HOST PORT [--current-thread]` prints `listening on IP:PORT`.

use std::error::Error;

use netchat_bench::ServerArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Builder;

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
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            loop {
                let n = match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if socket.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}
