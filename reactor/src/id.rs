//! Identifiers the loop hands out: [`ConnId`] for connections,
//! [`ListenerId`] for listeners, [`TimerId`] for timers.

use std::fmt;
use std::time::Instant;

/// Names one connection for as long as it lives, and never another one.
///
/// A connection lives in a slot of the loop's slab, and slots are reused once
/// their connection is gone. The id therefore carries the slot *and* the
/// generation of the connection that was given it: an id kept after its
/// connection closed no longer matches the slot's new occupant, so sending to
/// it is a no-op (`Context::send` returns `false`) rather than a message
/// delivered to a stranger.
///
/// Generations come from one counter per loop and skip zero; two
/// connections in the same slot could only share an id if 2³² connections
/// were accepted in between.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    slot: u32,
    gen: u32,
}

impl ConnId {
    pub(crate) fn new(slot: usize, gen: u32) -> ConnId {
        let slot = u32::try_from(slot).expect("more than 2^32 connection slots");
        ConnId { slot, gen }
    }

    pub(crate) fn slot(self) -> usize {
        self.slot as usize
    }

    pub(crate) fn gen(self) -> u32 {
        self.gen
    }

    /// The id packed into one number, for use as a timer tag or a map key.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.slot)
    }

    /// Unpacks an id made by [`ConnId::to_bits`].
    pub fn from_bits(bits: u64) -> ConnId {
        ConnId {
            slot: bits as u32,
            gen: (bits >> 32) as u32,
        }
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Names one listener of a driver, as returned by `listen`: what a handler
/// is told a connection came from ([`Origin::Accepted`](crate::Origin)),
/// and what [`Handler::refusal`](crate::Handler::refusal) is asked for.
/// Listeners live as long as their driver, so the id is just their number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(crate) u32);

impl ListenerId {
    /// The id of the `n`th listener a driver was given, counting from 0:
    /// what `listen` returns, in order.
    pub const fn nth(n: u32) -> ListenerId {
        ListenerId(n)
    }

    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}", self.0)
    }
}

/// Names a timer set with `Context::set_timer` or `Context::set_conn_timer`,
/// so that it can be cancelled.
///
/// It holds the deadline itself, which lets the timer queue find and remove
/// the timer in O(log n) without a second index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId {
    pub(crate) at: Instant,
    pub(crate) seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip() {
        let id = ConnId::new(7, 0xdead_beef);
        assert_eq!(ConnId::from_bits(id.to_bits()), id);
        assert_eq!(format!("{id}"), "#7.3735928559");
    }

    #[test]
    fn same_slot_other_generation_is_another_id() {
        assert_ne!(ConnId::new(3, 1), ConnId::new(3, 2));
    }
}
