//! The calculator's parser: no text makes it panic or overflow the stack.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = chatapp::calc::evaluate(text);
});
