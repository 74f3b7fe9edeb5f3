//! Who is where in the whole cluster, as Redis keeps it: every server
//! writes its participants into a hash of its own, `<nick> → "<seq> <room>
//! <nick>"`, and a reader gathers the hashes of the servers still alive
//! (the [`WHO`] script, which also drops the dead ones). This module reads
//! that answer and says it as `/who` and `/rooms` do on one server.

use redis_protocol::resp2::types::OwnedFrame;

use super::redis::text;

/// Gathers every live server's participants as `"<seq> <room> <nick>"`
/// strings, and forgets the servers whose alive key has expired (ARGV[1]
/// is the key prefix). Lua, so that reading the set, checking each server
/// and dropping the dead is one step no other server can come between.
pub(super) const WHO: &str = "\
local out = {}
local servers = ARGV[1] .. 'servers'
for _, s in ipairs(redis.call('SMEMBERS', servers)) do
  if redis.call('EXISTS', ARGV[1] .. 'alive:' .. s) == 1 then
    for _, v in ipairs(redis.call('HVALS', ARGV[1] .. 'members:' .. s)) do
      out[#out + 1] = v
    end
  else
    redis.call('SREM', servers, s)
    redis.call('DEL', ARGV[1] .. 'members:' .. s)
  end
end
return out";

/// One participant somewhere in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// When it came into its room, as its server counts: the order `/who`
    /// lists them in.
    pub(crate) seq: u64,
    /// Its room, as its server spells it.
    pub(crate) room: String,
    /// Its nick.
    pub(crate) nick: String,
}

/// What a server writes for one participant, the value of its field.
pub(super) fn entry(seq: u64, room: &str, nick: &str) -> String {
    format!("{seq} {room} {nick}")
}

/// The members in the answer to [`WHO`], in the order they came in;
/// entries not of our form are skipped.
pub(crate) fn parse(reply: &OwnedFrame) -> Vec<Member> {
    let OwnedFrame::Array(values) = reply else {
        return Vec::new();
    };
    let mut members: Vec<Member> = values
        .iter()
        .filter_map(|v| {
            let mut parts = text(v)?.splitn(3, ' ');
            Some(Member {
                seq: parts.next()?.parse().ok()?,
                room: parts.next()?.to_string(),
                nick: parts.next()?.to_string(),
            })
        })
        .collect();
    members.sort_by_key(|m| m.seq);
    members
}

/// `/who` in the room called `room`, from every server's `members`: the
/// line one server would say, with everyone in it.
pub(crate) fn who(members: &[Member], room: &str) -> String {
    let nicks: Vec<&str> = members
        .iter()
        .filter(|m| m.room.eq_ignore_ascii_case(room))
        .map(|m| m.nick.as_str())
        .collect();
    match (nicks.len(), room) {
        (0, _) => "* 0 online\n".to_string(),
        (n, "#lobby") => format!("* {n} online: {}\n", nicks.join(", ")),
        (n, _) => format!("* {n} online in {room}: {}\n", nicks.join(", ")),
    }
}

/// The console's `/who`: the `/who` line of every room someone is in, the
/// lobby first.
pub(crate) fn who_everywhere(members: &[Member]) -> String {
    let rooms = rooms(members);
    let lines: String = rooms
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(room, _)| who(members, room))
        .collect();
    if lines.is_empty() {
        "* 0 online\n".to_string()
    } else {
        lines
    }
}

/// `/rooms` from every server's `members`: `* N rooms: #lobby (2), #rust (1)`.
pub(crate) fn list_rooms(members: &[Member]) -> String {
    let rooms = rooms(members);
    let plural = if rooms.len() == 1 { "" } else { "s" };
    let list: Vec<String> = rooms.iter().map(|(r, n)| format!("{r} ({n})")).collect();
    format!("* {} room{plural}: {}\n", rooms.len(), list.join(", "))
}

/// Every room and how many are in it, the lobby first (even empty), then
/// by name; a room is spelled as its first member's server spells it.
fn rooms(members: &[Member]) -> Vec<(String, usize)> {
    let mut rooms: Vec<(String, usize)> = vec![("#lobby".to_string(), 0)];
    for m in members {
        match rooms
            .iter_mut()
            .find(|(r, _)| r.eq_ignore_ascii_case(&m.room))
        {
            Some((_, n)) => *n += 1,
            None => rooms.push((m.room.clone(), 1)),
        }
    }
    rooms[1..].sort_by_cached_key(|(r, _)| r.to_ascii_lowercase());
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(entries: &[&str]) -> OwnedFrame {
        let values = entries
            .iter()
            .map(|e| OwnedFrame::BulkString(e.as_bytes().to_vec()));
        OwnedFrame::Array(values.collect())
    }

    #[test]
    fn members_come_in_the_order_they_came_in_whatever_their_server() {
        let members = parse(&reply(&[
            "30 #lobby carol",
            "10 #lobby alice",
            "20 #Rust bob",
            "junk",
        ]));
        let nicks: Vec<&str> = members.iter().map(|m| m.nick.as_str()).collect();
        assert_eq!(nicks, ["alice", "bob", "carol"]);
        assert_eq!(who(&members, "#lobby"), "* 2 online: alice, carol\n");
        assert_eq!(who(&members, "#rust"), "* 1 online in #rust: bob\n");
        assert_eq!(who(&members, "#none"), "* 0 online\n");
    }

    #[test]
    fn rooms_are_counted_across_servers_the_lobby_first() {
        let members = parse(&reply(&["1 #zed a", "2 #lobby b", "3 #Abc c", "4 #abc d"]));
        assert_eq!(
            list_rooms(&members),
            "* 3 rooms: #lobby (1), #Abc (2), #zed (1)\n"
        );
        assert_eq!(list_rooms(&[]), "* 1 room: #lobby (0)\n");
        assert_eq!(
            who_everywhere(&members),
            "* 1 online: b\n* 2 online in #Abc: c, d\n* 1 online in #zed: a\n"
        );
        assert_eq!(who_everywhere(&[]), "* 0 online\n");
    }
}
