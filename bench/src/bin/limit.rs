//! limit: the floor under any echo server's cost per message.
//!
//! Whatever its design, an echo server pays, for every message, at least
//! one `read` of it and one `write` of it on a loopback TCP connection — and
//! on loopback the `write` also does the delivery to the receiving socket.
//! This program does exactly that and nothing else: one connection to
//! itself, `write` a message on one end, `read` it on the other, in one
//! thread, and reports the CPU time per message. With `--batch B` each
//! write carries B messages (as a pipelined client's would), to show the
//! floor when system calls are shared.
//!
//! `limit [-s SIZE] [-n COUNT] [--batch B] [--json]`

use std::env;
use std::error::Error;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn Error>> {
    let mut size = 64;
    let mut count = 1_000_000;
    let mut batch = 1;
    let mut json = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> usize {
            let v = args.next().and_then(|v| v.parse().ok());
            v.filter(|&v| v > 0).unwrap_or_else(|| usage())
        };
        match arg.as_str() {
            "-s" => size = value(),
            "-n" => count = value(),
            "--batch" => batch = value(),
            "--json" => json = true,
            _ => usage(),
        }
    }

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut writer = TcpStream::connect(listener.local_addr()?)?;
    let (mut reader, _) = listener.accept()?;
    writer.set_nodelay(true)?;
    reader.set_nodelay(true)?;
    let out = vec![b'x'; size * batch];
    let mut buf = vec![0; size * batch];

    let rounds = count.div_ceil(batch);
    let before = cpu_time()?;
    let start = Instant::now();
    for _ in 0..rounds {
        writer.write_all(&out)?;
        reader.read_exact(&mut buf)?;
    }
    let elapsed = start.elapsed();
    let (user, system) = cpu_time()?;
    let messages = (rounds * batch) as f64;
    let ns = |d: Duration| d.as_nanos() as f64 / messages;
    let (user, system) = (ns(user - before.0), ns(system - before.1));
    let rate = messages / elapsed.as_secs_f64();
    if json {
        println!(
            "{{\"size\":{size},\"batch\":{batch},\"messages\":{messages},\"per_s\":{rate:.0},\
             \"cpu_ns_per_msg\":{:.1},\"user_ns_per_msg\":{user:.1},\"sys_ns_per_msg\":{system:.1}}}",
            user + system
        );
    } else {
        println!(
            "{size}-byte messages, {batch} per write: {:.0} ns of CPU per message \
             (user {user:.0}, system {system:.0}), {rate:.0} messages/s",
            user + system
        );
    }
    Ok(())
}

/// This process's user and system CPU time, from /proc/self/stat (in clock
/// ticks of 10 ms: run for a second or more).
fn cpu_time() -> Result<(Duration, Duration), Box<dyn Error>> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3. The
    // tick is 1/100 s on every Linux configuration this runs on.
    let tick = |i: usize| -> Result<Duration, Box<dyn Error>> {
        let ticks: u64 = fields.get(i - 3).ok_or("short /proc/self/stat")?.parse()?;
        Ok(Duration::from_millis(ticks * 10))
    };
    Ok((tick(14)?, tick(15)?))
}

fn usage() -> ! {
    eprintln!("usage: limit [-s SIZE] [-n COUNT] [--batch B] [--json]");
    process::exit(2);
}
