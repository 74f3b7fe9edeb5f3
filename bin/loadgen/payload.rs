//! The bytes loadgen sends: slices of one fixed pattern, the *wheel*, so that
//! any message can be regenerated — and checked — from its sender and
//! number alone, with a `memcmp` rather than a byte-by-byte recipe.

/// Letters and digits the wheel is made of. No `b`, `e` or `y` in either
/// case, so no message can be the line `bye` that closes an echo
/// connection; no space, `/`, `<` or `*`, so none can look like a chat
/// command or notice.
const ALPHABET: &[u8] = b"0123456789acdfghijklmnopqrstuvwxzACDFGHIJKLMNOPQRSTUVWXZ";
/// The pattern's period: a prime, so that successive messages start at
/// well-spread offsets.
const PERIOD: usize = 251;

/// The pattern, long enough that a message of any allowed size starting
/// anywhere in the first period is one slice of it.
pub struct Wheel {
    bytes: Vec<u8>,
}

impl Wheel {
    /// A wheel for messages of up to `max_len` bytes.
    pub fn new(max_len: usize) -> Wheel {
        let bytes = (0..PERIOD + max_len)
            .map(|i| {
                let i = i % PERIOD;
                ALPHABET[(i * 7 + i / ALPHABET.len()) % ALPHABET.len()]
            })
            .collect();
        Wheel { bytes }
    }

    /// The `len` bytes of message `number` of stream `stream` (a
    /// connection or a sender).
    pub fn slice(&self, stream: usize, number: u64, len: usize) -> &[u8] {
        let start = (stream.wrapping_mul(13) as u64).wrapping_add(number.wrapping_mul(7));
        let start = (start % PERIOD as u64) as usize;
        &self.bytes[start..start + len]
    }
}
