//! Slots with generations: a slab whose entries are named by [`ConnId`]s,
//! so that an id kept after its entry is gone never reaches the entry that
//! takes the slot next. Both drivers keep their connections in one (the
//! reactor its `Conn`s; the threaded driver its peers and its client
//! threads' places).
//!
//! `slab` hands out the most recently freed slot first, so a slot is reused
//! at once: a close and an accept in one batch give the new connection the
//! old one's slot while an event for the old one may still be on its way
//! (Redis #4877, mio #172). calloop packs an index and a version into its
//! keys for the same reason.
//!
//! The slab itself is still there (`Deref`): the reactor dispatches an
//! event by slot, with no more than the slab's own lookup.

use std::ops::{Deref, DerefMut};

use slab::{Slab, VacantEntry};

use crate::ConnId;

/// What an entry of [`Slots`] says about itself: the generation it was
/// given when it took its slot.
pub(crate) trait Generation {
    fn generation(&self) -> u32;
}

/// A slab of `T`s, each named by its slot and its generation.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    slab: Slab<T>,
    /// The generation the next entry is given. One counter for every slot,
    /// skipping zero: two entries of one slot could only share an id if 2³²
    /// were made in between.
    next_gen: u32,
}

impl<T: Generation> Slots<T> {
    pub(crate) fn new() -> Slots<T> {
        Slots {
            slab: Slab::new(),
            next_gen: 1,
        }
    }

    /// The id of the next entry, and the place to put it: an entry made
    /// for the id must carry its generation. The generation is used up even
    /// if nothing is put there.
    pub(crate) fn vacant(&mut self) -> (ConnId, VacantEntry<'_, T>) {
        let gen = self.next_gen;
        self.next_gen = self.next_gen.checked_add(1).unwrap_or(1);
        let entry = self.slab.vacant_entry();
        (ConnId::new(entry.key(), gen), entry)
    }

    /// The entry `id` names, unless its slot is empty or holds another.
    pub(crate) fn by_id(&self, id: ConnId) -> Option<&T> {
        self.slab
            .get(id.slot())
            .filter(|t| t.generation() == id.gen())
    }

    /// The entry `id` names, unless its slot is empty or holds another.
    pub(crate) fn by_id_mut(&mut self, id: ConnId) -> Option<&mut T> {
        self.slab
            .get_mut(id.slot())
            .filter(|t| t.generation() == id.gen())
    }

    /// Takes the entry `id` names out, unless its slot holds another.
    pub(crate) fn remove_id(&mut self, id: ConnId) -> Option<T> {
        self.by_id(id)?;
        Some(self.slab.remove(id.slot()))
    }

    /// The id of every entry.
    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.slab
            .iter()
            .map(|(slot, t)| ConnId::new(slot, t.generation()))
            .collect()
    }
}

impl<T> Deref for Slots<T> {
    type Target = Slab<T>;

    fn deref(&self) -> &Slab<T> {
        &self.slab
    }
}

impl<T> DerefMut for Slots<T> {
    fn deref_mut(&mut self) -> &mut Slab<T> {
        &mut self.slab
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Entry(u32);

    impl Generation for Entry {
        fn generation(&self) -> u32 {
            self.0
        }
    }

    fn insert(slots: &mut Slots<Entry>) -> ConnId {
        let (id, entry) = slots.vacant();
        entry.insert(Entry(id.gen()));
        id
    }

    #[test]
    fn an_id_kept_after_its_entry_is_gone_names_nothing() {
        let mut slots = Slots::new();
        let old = insert(&mut slots);
        assert!(slots.remove_id(old).is_some());
        let new = insert(&mut slots);
        assert_eq!(new.slot(), old.slot(), "slab reuses the freed slot first");
        assert_ne!(new, old);
        assert!(slots.by_id(old).is_none());
        assert!(slots.by_id_mut(old).is_none());
        assert!(slots.remove_id(old).is_none(), "the new entry stays");
        assert!(slots.by_id(new).is_some());
        assert_eq!(slots.ids(), vec![new]);
    }

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let mut slots = Slots::new();
        slots.next_gen = u32::MAX;
        assert_eq!(insert(&mut slots).gen(), u32::MAX);
        assert_eq!(insert(&mut slots).gen(), 1);
    }
}
