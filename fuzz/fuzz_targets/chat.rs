//! The chat handler, driven by a script decoded from the fuzzer's bytes,
//! keeps the promises `checks::check_chat` lists.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../chatapp/tests/checks/mod.rs"]
#[allow(dead_code)] // each target uses one of the checks
mod checks;

use checks::ChatOp;

/// Reads a script: each step is one byte whose low three bits say what
/// happens and whose high five bits say to whom (or for how long); bytes
/// from a client and a console line follow their step byte, up to and
/// including the next `\n`.
fn decode(mut data: &[u8]) -> Vec<ChatOp> {
    let mut ops = Vec::new();
    while let Some((&step, rest)) = data.split_first() {
        data = rest;
        let (what, arg) = (step & 7, usize::from(step >> 3));
        let mut line = || {
            let len = data
                .iter()
                .position(|&b| b == b'\n')
                .map_or(data.len(), |end| end + 1);
            let (line, rest) = data.split_at(len);
            data = rest;
            line
        };
        ops.push(match what {
            0 => ChatOp::Connect,
            1 => ChatOp::Disconnect(arg),
            // Up to 15.5 s: past the 10 s greeting deadline.
            2 => ChatOp::Advance(arg as u64 * 500),
            // The operator's lines have no length limit; keeping them as
            // short as a client's keeps `check_chat`'s bound on line length.
            3 => {
                let line = line();
                let line = &line[..line.len().min(checks::CHAT_MAX_LINE)];
                ChatOp::Console(String::from_utf8_lossy(line).into_owned())
            }
            _ => ChatOp::Send(arg, line().to_vec()),
        });
    }
    ops
}

fuzz_target!(|data: &[u8]| {
    checks::check_chat(&decode(data));
});
