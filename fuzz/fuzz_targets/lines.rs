//! The line framer: however the bytes are cut into reads, the same lines
//! come out, and no more than `max + 1` bytes wait unframed.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../chatapp/tests/checks/mod.rs"]
#[allow(dead_code)] // each target uses one of the checks
mod checks;

fuzz_target!(|input: (u8, Vec<u16>, &[u8])| {
    let (max, cuts, data) = input;
    let cuts: Vec<usize> = cuts.into_iter().map(usize::from).collect();
    checks::check_framer(data, &cuts, usize::from(max % 64));
});
