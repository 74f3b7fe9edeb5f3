//! The chat's side of the cluster: the callbacks about the two Redis
//! connections handed to [`Cluster`], and what its [`Event`]s do to the
//! rooms. An `impl Chat` of its own, so that chat/mod.rs has only one-line
//! hooks where a line leaves for a room or a question may be asked of Redis.

use std::time::Duration;

use bytes::Bytes;
use reactor::{CloseReason, ConnId, Context, Input};

use super::{presence, Asker, Event, Query};
use crate::chat::rooms::Rooms;
use crate::chat::{
    exact, transcribe, who, Chat, Claim, Client, Stage, ANSWERED, LINK_LOST, LINK_RESTORED,
};

impl Chat {
    /// `on_open` for `id`: `true` if it is the cluster's.
    pub(in crate::chat) fn cluster_open(&mut self, cx: &mut dyn Context, id: ConnId) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        if !cluster.owns(id) {
            return false;
        }
        let mut events = Vec::new();
        cluster.on_open(cx, &mut events);
        self.on_cluster(cx, events);
        true
    }

    /// `on_data` for `id`: `true` if it is the cluster's.
    pub(in crate::chat) fn cluster_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        input: &mut Input<'_>,
    ) -> bool {
        let Some(cluster) = self.cluster.as_mut().filter(|c| c.owns(id)) else {
            return false;
        };
        let mut events = Vec::new();
        cluster.on_data(cx, id, input, &mut events);
        self.on_cluster(cx, events);
        true
    }

    /// `on_close` for `id`: `true` if it is the cluster's. A client that
    /// goes while its nick is being claimed gives up what it was granted.
    pub(in crate::chat) fn cluster_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        reason: CloseReason,
    ) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return false;
        };
        if !cluster.owns(id) {
            match self.claims.remove(&id) {
                Some(Some(Claim::Greeted(Some(nick)))) => cluster.release(cx, &nick),
                Some(Some(Claim::Renamed {
                    nick,
                    granted: true,
                })) => cluster.release(cx, &nick),
                _ => {}
            }
            return false;
        }
        let mut events = Vec::new();
        cluster.on_close(cx, id, reason, &mut events);
        self.on_cluster(cx, events);
        true
    }

    /// A timer of the cluster's.
    pub(in crate::chat) fn cluster_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        if let Some(cluster) = &mut self.cluster {
            cluster.on_timer(cx, tag);
        }
    }

    /// The server starts: so does the cluster's link.
    pub(in crate::chat) fn cluster_start(&mut self, cx: &mut dyn Context) {
        if let Some(cluster) = &mut self.cluster {
            cluster.start(cx);
        }
    }

    /// The server stops: its participants leave the cluster's rooms.
    pub(in crate::chat) fn cluster_stop(&mut self, cx: &mut dyn Context) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let leaving = everyone(&self.rooms);
        cluster.stop(cx, &leaving);
    }

    /// Asks the cluster `query` for `asker`: `false` if it cannot be asked
    /// (no cluster, or its link is down), and this server answers alone.
    pub(in crate::chat) fn ask_cluster(
        &mut self,
        cx: &mut dyn Context,
        asker: Asker,
        query: Query,
    ) -> bool {
        self.cluster
            .as_mut()
            .is_some_and(|cluster| cluster.members(cx, asker, query))
    }

    /// Does what the cluster asks.
    fn on_cluster(&mut self, cx: &mut dyn Context, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Up => self.register(cx),
                Event::Lost => self.tell_everyone(cx, LINK_LOST),
                Event::Restored => self.tell_everyone(cx, LINK_RESTORED),
                Event::Line { room, line } => self.fan_out(cx, &room, &line),
                Event::Private { nick, line } => {
                    if let Some(id) = self.find(&nick) {
                        cx.send(id, &line);
                    }
                }
                Event::Kick { nick } => {
                    self.kick_here(cx, &nick);
                }
                Event::Greeted { id, nick } => self.claimed(cx, id, Claim::Greeted(nick)),
                Event::Claimed { id, nick, granted } => {
                    self.claimed(cx, id, Claim::Renamed { nick, granted })
                }
                Event::Answer {
                    asker,
                    query,
                    members,
                } => self.answer(cx, asker, query, members.as_deref()),
                Event::NoSuchNick { asker, nick } => {
                    let error = format!("ERR no such nick: {nick}\n");
                    self.tell(cx, asker, error.as_bytes());
                }
            }
        }
    }

    /// The link is up: Redis is told who is here and which nicks they
    /// have, as it may have forgotten (restarted, or taken this server for
    /// dead while the link was down).
    fn register(&mut self, cx: &mut dyn Context) {
        let members = everyone(&self.rooms);
        if let Some(cluster) = &mut self.cluster {
            cluster.register(cx, members);
        }
    }

    /// Tells every participant, and the transcript, `line`.
    fn tell_everyone(&mut self, cx: &mut dyn Context, line: &[u8]) {
        for room in self.rooms.list() {
            cx.send_many(room.members(), line);
        }
        self.transcribe(line);
    }

    /// Another server's `line` for the room called `room`: to everyone in
    /// it here, with the same bytes.
    fn fan_out(&mut self, cx: &mut dyn Context, room: &str, line: &Bytes) {
        match self.rooms.find(room).and_then(|r| self.rooms.get(r)) {
            Some(here) => {
                cx.send_many(here.members(), line);
                transcribe(&mut *self.transcript, here.name(), line);
            }
            None => transcribe(&mut *self.transcript, room, line),
        }
    }

    /// The cluster's answer about `id`'s nick, handed to the client's
    /// timer: only a callback about `id` has its state.
    fn claimed(&mut self, cx: &mut dyn Context, id: ConnId, claim: Claim) {
        match self.claims.get_mut(&id) {
            Some(waiting) => {
                *waiting = Some(claim);
                cx.set_conn_timer(id, Duration::ZERO, ANSWERED);
            }
            // The client went meanwhile: what it was granted is let go.
            None => match (&mut self.cluster, claim) {
                (Some(cluster), Claim::Greeted(Some(nick)))
                | (
                    Some(cluster),
                    Claim::Renamed {
                        nick,
                        granted: true,
                    },
                ) => cluster.release(cx, &nick),
                _ => {}
            },
        }
    }

    /// The client's timer [`ANSWERED`]: its greeting or its rename goes
    /// ahead, and its input is read again.
    pub(in crate::chat) fn answered(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        client: &mut Client,
    ) {
        let Some(Some(claim)) = self.claims.remove(&id) else {
            return;
        };
        match (claim, &mut client.stage) {
            (Claim::Greeted(nick), Stage::Greeting(_)) => {
                // Redis's nick, unless someone here has it (given out while
                // the link was down).
                let nick = match nick {
                    Some(nick) if self.find(&nick).is_none() => nick.into_boxed_str(),
                    _ => self.default_nick(),
                };
                client.stage = Stage::Joined {
                    nick: self.greet(cx, id, nick),
                };
            }
            (Claim::Renamed { nick: new, granted }, Stage::Joined { nick }) => {
                if granted && self.find(&new).is_none_or(|holder| holder == id) {
                    self.renamed(cx, id, nick, &new);
                } else {
                    cx.send(id, format!("ERR nick {new} is taken\n").as_bytes());
                }
            }
            _ => {}
        }
        // What it sent meanwhile is handed back to `on_data`.
        cx.pause_input(id, Duration::ZERO);
    }

    /// The cluster's `members` (or `None`: this server's alone) as the
    /// answer to `asker`'s `query`.
    fn answer(
        &mut self,
        cx: &mut dyn Context,
        asker: Asker,
        query: Query,
        members: Option<&[presence::Member]>,
    ) {
        let line = match (asker, query, members) {
            (_, Query::Rooms, Some(members)) => exact(presence::list_rooms(members)),
            (_, Query::Rooms, None) => self.list_rooms(),
            (Asker::Console, Query::Who, Some(members)) => exact(presence::who_everywhere(members)),
            (Asker::Console, Query::Who, None) => self.who_everywhere(),
            (Asker::Client(id), Query::Who, members) => {
                let Some(room) = self.rooms.room_of(id).and_then(|r| self.rooms.get(r)) else {
                    return;
                };
                match members {
                    Some(members) => exact(presence::who(members, room.name())),
                    None => who(room),
                }
            }
        };
        self.tell(cx, asker, &line);
    }

    /// Sends `line` to `asker`: a client, or the console's transcript.
    fn tell(&mut self, cx: &mut dyn Context, asker: Asker, line: &[u8]) {
        match asker {
            Asker::Client(id) => {
                cx.send(id, line);
            }
            Asker::Console => self.transcribe(line),
        }
    }
}

/// Every participant here, as (room, nick).
fn everyone(rooms: &Rooms) -> Vec<(String, String)> {
    let mut everyone = Vec::new();
    for room in rooms.list() {
        let name = room.name();
        everyone.extend(
            room.nicks()
                .iter()
                .map(|nick| (name.to_string(), nick.to_string())),
        );
    }
    everyone
}
