//! The echo handler: however the bytes are cut into reads, the same bytes
//! are echoed and the same `bye` closes the connection; raw never closes.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../chatapp/tests/checks/mod.rs"]
#[allow(dead_code)] // each target uses one of the checks
mod checks;

fuzz_target!(|input: (bool, Vec<u16>, &[u8])| {
    let (raw, cuts, data) = input;
    let cuts: Vec<usize> = cuts.into_iter().map(usize::from).collect();
    checks::check_echo(data, &cuts, raw);
});
