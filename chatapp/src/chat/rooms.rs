//! The rooms of a chat server: which rooms there are, who is in each, in
//! the order they came in, and which room each participant is in.
//!
//! Every participant is in exactly one room. It starts in [`LOBBY`], which
//! is always there, even empty, so that a newcomer always has somewhere to
//! go whatever the limit on rooms; any other room is made by the first to
//! join it and is gone when the last one leaves. Names compare without
//! case, like nicks, and a room keeps the spelling it was made with.
//!
//! This module holds the rooms and says nothing to anyone: the handler asks
//! it who is in a room when it has a line for that room, and hands that
//! room's members to `send_many` with the line built once. A room's members
//! are a list beside it, so the line's way out is a slice, with nobody else
//! looked at; a move is a search and a removal in the room left, O(its
//! size). Whatever else has a line for a room (another server, say) finds
//! it with [`Rooms::find`] and its members with [`Room::members`].

use std::collections::HashMap;
use std::fmt;

use reactor::ConnId;
use rustc_hash::FxHashMap;

use super::nick::is_name_byte;

/// The room every participant starts in. Its name is all lower case, so it
/// is its own key.
pub(super) const LOBBY: &str = "#lobby";

/// The longest room name, in characters after its `#` (which are all
/// ASCII, so also bytes): as long as the longest nick.
pub(super) const MAX_ROOM_NAME: usize = 32;

/// A room, for the handler to hold on to while it tells the room something.
/// Ids are never reused: one kept after its room is gone finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RoomId(u64);

/// The lobby's id, given out first.
const LOBBY_ID: RoomId = RoomId(0);

/// One room: its name, and who is in it.
pub(super) struct Room {
    /// The name as it was first spelled, `#` included.
    name: Box<str>,
    /// Who is in it, in the order they came in: whom a line for the room
    /// goes to, and the order `/who` lists them in.
    members: Vec<ConnId>,
    /// The nick of each of `members`, at the same place, for `/who`: the
    /// handler is handed only the state of the connection a callback is about.
    nicks: Vec<Box<str>>,
}

impl Room {
    fn new(name: &str) -> Room {
        Room {
            name: name.into(),
            members: Vec::new(),
            nicks: Vec::new(),
        }
    }

    /// The room's name as first spelled, `#` included.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is [`LOBBY`].
    pub(super) fn is_lobby(&self) -> bool {
        *self.name == *LOBBY
    }

    /// Who is in the room, in the order they came in.
    pub(super) fn members(&self) -> &[ConnId] {
        &self.members
    }

    /// The nicks of [`members`](Room::members), in the same order.
    pub(super) fn nicks(&self) -> &[Box<str>] {
        &self.nicks
    }

    /// How many are in the room.
    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// Everyone in the room but `except`, as the two slices either side of
    /// it: no list of recipients to build.
    pub(super) fn others(&self, except: Option<ConnId>) -> [&[ConnId]; 2] {
        match except.and_then(|id| self.seat(id)) {
            Some(i) => [&self.members[..i], &self.members[i + 1..]],
            None => [&self.members, &[]],
        }
    }

    /// Where `id` is in `members`, and its nick in `nicks`.
    fn seat(&self, id: ConnId) -> Option<usize> {
        self.members.iter().position(|&member| member == id)
    }

    /// Takes the member at `seat` out, keeping the others' order for
    /// `/who`; returns its nick.
    fn unseat(&mut self, seat: usize) -> Box<str> {
        self.members.remove(seat);
        self.nicks.remove(seat)
    }
}

/// Why a `/join` was refused; its `Display` is the text after `ERR `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JoinError {
    /// `/join` with no name.
    Missing,
    /// Not `#` and 1 to [`MAX_ROOM_NAME`] letters, digits, `_` or `-`.
    BadName,
    /// The joiner is in that room already, called this.
    AlreadyIn(Box<str>),
    /// The room would be new, and there are this many, the most there may be.
    TooMany(usize),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Missing => f.write_str("usage: /join #NAME"),
            JoinError::BadName => write!(
                f,
                "a room name is # and 1-{MAX_ROOM_NAME} letters, digits, _ or -"
            ),
            JoinError::AlreadyIn(name) => write!(f, "you are in {name} already"),
            JoinError::TooMany(max) => write!(f, "too many rooms (max {max}); /rooms lists them"),
        }
    }
}

/// Checks the form of a room's `name`: `#` and 1 to [`MAX_ROOM_NAME`]
/// ASCII letters, digits, `_` or `-`, the characters of a nick, so that a
/// name needs no cleaning and compares without case in plain ASCII.
pub(super) fn check(name: &str) -> Result<(), JoinError> {
    if name.is_empty() {
        return Err(JoinError::Missing);
    }
    let Some(rest) = name.strip_prefix('#') else {
        return Err(JoinError::BadName);
    };
    if (1..=MAX_ROOM_NAME).contains(&rest.len()) && rest.bytes().all(is_name_byte) {
        Ok(())
    } else {
        Err(JoinError::BadName)
    }
}

/// Where a move took a participant: the room it left, and the one it is in.
pub(super) struct Moved {
    /// The room it left.
    pub(super) from: Left,
    /// The room it is in now.
    pub(super) to: RoomId,
}

/// Who left which room.
pub(super) struct Left {
    /// The nick of the one who left.
    pub(super) nick: Box<str>,
    /// The room it left: gone if it was the last one in it.
    pub(super) room: RoomId,
    /// That room's name, as first spelled, for the transcript, which has to
    /// say where even when the room is gone.
    pub(super) name: Box<str>,
}

/// Every room, and who is in which.
pub(super) struct Rooms {
    /// The rooms there are: the lobby, and every other room with someone in it.
    rooms: FxHashMap<RoomId, Room>,
    /// Each room by its name in lower case. Names are the clients' choice,
    /// so this map keeps std's hash, which a client cannot aim collisions
    /// at; ids are ours, and get the faster one.
    by_name: HashMap<Box<str>, RoomId>,
    /// The room each participant is in.
    seats: FxHashMap<ConnId, RoomId>,
    /// The id the next new room gets.
    next: u64,
    /// The most rooms there may be, the lobby included.
    max_rooms: usize,
}

impl Rooms {
    /// The lobby alone, empty; there may be up to `max_rooms` rooms, the
    /// lobby counted (so `max_rooms` of 1 or less leaves only the lobby).
    pub(super) fn new(max_rooms: usize) -> Rooms {
        let mut rooms = Rooms {
            rooms: FxHashMap::default(),
            by_name: HashMap::new(),
            seats: FxHashMap::default(),
            next: LOBBY_ID.0 + 1,
            max_rooms,
        };
        rooms.rooms.insert(LOBBY_ID, Room::new(LOBBY));
        rooms.by_name.insert(LOBBY.into(), LOBBY_ID);
        rooms
    }

    /// Puts `id`, which is in no room, in the lobby, under `nick`; returns
    /// the lobby's id. What a greeting does.
    pub(super) fn enter(&mut self, id: ConnId, nick: &str) -> RoomId {
        self.seat(id, nick, LOBBY_ID);
        LOBBY_ID
    }

    /// Moves `id`, called `nick`, from its room to the one called `name`
    /// (in any case), made if there is none. Refused if `name` is not a
    /// room's name, if `id` is in that room already, or if the room would
    /// be new and there are as many as there may be — unless `id` is the
    /// last in a room other than the lobby, which goes as this one comes.
    /// An `id` in no room is refused as [`JoinError::Missing`]: only a
    /// participant has a room to move from.
    pub(super) fn join(&mut self, id: ConnId, nick: &str, name: &str) -> Result<Moved, JoinError> {
        check(name)?;
        let from = self.room_of(id).ok_or(JoinError::Missing)?;
        let to = match self.find(name) {
            Some(to) if to == from => {
                return Err(JoinError::AlreadyIn(self.rooms[&to].name.clone()));
            }
            Some(to) => to,
            None => {
                let from_empties = from != LOBBY_ID && self.rooms[&from].len() == 1;
                if self.rooms.len() - usize::from(from_empties) >= self.max_rooms.max(1) {
                    return Err(JoinError::TooMany(self.max_rooms.max(1)));
                }
                self.make(name)
            }
        };
        let from = self.leave(id).ok_or(JoinError::Missing)?;
        self.seat(id, nick, to);
        Ok(Moved { from, to })
    }

    /// Takes `id` out of its room, and the room away if it is empty now
    /// and not the lobby; `None` if `id` was in no room. Once out, a client
    /// cannot leave twice.
    pub(super) fn leave(&mut self, id: ConnId) -> Option<Left> {
        let room_id = self.seats.remove(&id)?;
        let room = self.rooms.get_mut(&room_id)?;
        let nick = room.unseat(room.seat(id)?);
        let name = room.name.clone();
        if room.members.is_empty() && room_id != LOBBY_ID {
            self.rooms.remove(&room_id);
            self.by_name.remove(&*name.to_ascii_lowercase());
        }
        Some(Left {
            nick,
            room: room_id,
            name,
        })
    }

    /// `id`'s nick, in the list of its room, is `nick` from now on.
    pub(super) fn rename(&mut self, id: ConnId, nick: &str) {
        let Some(room) = self.seats.get(&id).and_then(|r| self.rooms.get_mut(r)) else {
            return;
        };
        if let Some(seat) = room.seat(id) {
            room.nicks[seat] = nick.into();
        }
    }

    /// The room `id` is in, if it is in one.
    pub(super) fn room_of(&self, id: ConnId) -> Option<RoomId> {
        self.seats.get(&id).copied()
    }

    /// The room `room`, if it is still there.
    pub(super) fn get(&self, room: RoomId) -> Option<&Room> {
        self.rooms.get(&room)
    }

    /// The room called `name`, in any case, if there is one.
    pub(super) fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(&*name.to_ascii_lowercase()).copied()
    }

    /// Every room: the lobby first, then the others by name, ignoring case.
    pub(super) fn list(&self) -> Vec<&Room> {
        let mut list: Vec<&Room> = self.rooms.values().collect();
        list.sort_by_cached_key(|room| (!room.is_lobby(), room.name.to_ascii_lowercase()));
        list
    }

    /// A new, empty room called `name`, which no room is called.
    fn make(&mut self, name: &str) -> RoomId {
        let id = RoomId(self.next);
        self.next += 1;
        self.rooms.insert(id, Room::new(name));
        self.by_name.insert(name.to_ascii_lowercase().into(), id);
        id
    }

    /// Puts `id`, in no room, in the room `room`, which is there.
    fn seat(&mut self, id: ConnId, nick: &str, room: RoomId) {
        if let Some(members) = self.rooms.get_mut(&room) {
            members.members.push(id);
            members.nicks.push(nick.into());
            self.seats.insert(id, room);
        }
    }
}
