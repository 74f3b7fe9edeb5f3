//! The chat's link to the other servers of its cluster, through Redis: what
//! makes every server started with the same `--cluster redis://…` one chat.
//! docs/cluster.md is the design; in short:
//!
//! - Two outbound connections on the loop: `cmd`, for commands, whose
//!   replies come back in the order they were asked (so [`Pending`], a
//!   FIFO, says what each is for), and `sub`, subscribed to every room's
//!   channel and to this server's own (a subscribed connection can do
//!   nothing else).
//! - A line said in a room here is told to its local members as before,
//!   then published once on the room's channel; every other server fans it
//!   out to its own members. One connection publishes, and Redis keeps a
//!   connection's order, so a sender's lines arrive in the order it sent them.
//! - Presence: this server's alive key, renewed every third of `--cluster-ttl`;
//!   its participants in a hash of its own; nicks as keys holding the id
//!   of the server whose participant has them, claimable once that server
//!   is dead (scripts.rs).
//!
//! The chat hands every callback about the two connections to [`Cluster`]
//! and gets back [`Event`]s: lines to fan out, answers for clients, the
//! link lost or restored. Nothing here blocks, and nothing is queued
//! without bound: a command for a link that has stayed backlogged (see
//! `BACKLOG_GRACE`) is dropped and counted.

mod hooks;
mod presence;
pub mod redis;
mod scripts;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reactor::{CloseReason, ConnId, Connect, Context, Input, TimerId};
use redis_protocol::resp2::types::OwnedFrame;

pub(crate) use presence::Member;
pub use redis::Url;
use redis::{bytes, command, next_frame, text};

/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first wait before reconnecting; doubled after each failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Dropped commands are logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(1);
/// How long the command link may stay over the loop's high-water mark
/// before commands are dropped, and how much may be queued past the mark
/// meanwhile. One connection carries every client's lines, and one turn in
/// which a thousand clients each send a line queues more than the mark
/// before the flush, while Redis keeps up: such a burst is queued. A Redis
/// that stays behind for longer, or a burst past half the loop's
/// `max_output` (1 MiB, past which the loop would cut the link off), is
/// not: then commands are dropped.
const BACKLOG_GRACE: Duration = Duration::from_secs(1);
const BACKLOG_BURST: usize = 512 * 1024;
/// The tag of the timer that renews the alive key.
pub(super) const RENEW: u64 = 1 << 32;
/// The tag of the timer that reconnects.
pub(super) const RETRY: u64 = RENEW + 1;
/// The tag of the timer that goes on telling Redis who is here.
pub(super) const REGISTER: u64 = RENEW + 2;
/// How often a registration held up by a backlogged link is taken up again.
const REGISTER_EVERY: Duration = Duration::from_millis(10);

/// How a server joins a cluster: `--cluster` and `--cluster-ttl`.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Where Redis is.
    pub url: Url,
    /// How long this server's participants outlive it in everyone's `/who`
    /// (and keep their nicks) should it die without a word.
    pub ttl: Duration,
}

/// Who asked a question the answer of which comes from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A participant.
    Client(ConnId),
    /// The operator's console.
    Console,
}

/// Which question: the answer is a list of members either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Query {
    /// `/who` in a participant's room, or the console's `/who` everywhere.
    Who,
    /// `/rooms`.
    Rooms,
}

/// What the cluster asks the chat to do.
#[derive(Debug)]
pub(crate) enum Event {
    /// The link is up (at first, or again): tell Redis who is here.
    Up,
    /// Tell every participant `* cluster link restored`.
    Restored,
    /// Tell every participant `* cluster link lost`.
    Lost,
    /// Another server's line for the room called `room` (in lower case).
    Line { room: String, line: Bytes },
    /// Another server's private message for the local participant `nick`.
    Private { nick: String, line: Bytes },
    /// The console of another server kicks the local participant `nick`.
    Kick { nick: String },
    /// The answer to a greeting: the nick `id` is to have, or `None` for
    /// one given out by this server alone (the link is down).
    Greeted { id: ConnId, nick: Option<String> },
    /// The answer to a nick claim.
    Claimed {
        id: ConnId,
        nick: String,
        granted: bool,
    },
    /// The cluster's members, or `None` if they cannot be had (answer
    /// from this server's alone).
    Answer {
        asker: Asker,
        query: Query,
        members: Option<Vec<Member>>,
    },
    /// A private message or a kick found nobody called `nick` anywhere.
    NoSuchNick { asker: Asker, nick: String },
}

/// What a reply on `cmd` is the answer to.
#[derive(Debug)]
enum Pending {
    /// Nothing anyone waits for.
    Nothing,
    /// A default nick for this newcomer.
    Greet(ConnId),
    /// A nick claimed for this participant.
    Claim(ConnId, String),
    /// A participant's nick claimed again after the link came back; a
    /// refusal is only logged.
    Reclaim(String),
    /// Every server's members, to answer this query.
    Members(Asker, Query),
    /// A private line or a kick for this nick.
    Send(Asker, String),
}

/// What the participants were last told of the link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Told {
    Nothing,
    Lost,
    Restored,
}

/// The chat's end of the cluster.
pub(crate) struct Cluster {
    config: ClusterConfig,
    /// This run's id: random, in every key and message this server writes,
    /// so that it knows its own publications and another server its nicks.
    id: String,
    /// Where every key and channel name starts: `netchat:`, and the
    /// database's number if not 0, as pub/sub ignores databases.
    prefix: String,
    /// The command connection, and what it waits for.
    commands: Commands,
    /// The subscribed connection.
    sub: Option<ConnId>,
    /// How many of the two are established.
    open: u8,
    /// Connections given up but not yet closed: their `on_close` is ours.
    closing: Vec<ConnId>,
    /// The server is stopping: no more reconnecting.
    stopping: bool,
    told: Told,
    /// The wait before the next reconnection.
    backoff: Duration,
    /// The last order number given to a participant's entry.
    seq: u64,
    /// The alive key's renewal, while up.
    renew: Option<TimerId>,
    /// Participants (room, nick) still to be told to Redis since the link
    /// came up: as many at a time as the link takes without backlog.
    registering: VecDeque<(String, String)>,
    /// Room to build in, so that nothing is allocated per line: the first
    /// commands of a connection, and a publication's channel and payload.
    out: Vec<u8>,
}

/// The command connection: what is sent on it, and what its replies are for.
#[derive(Default)]
struct Commands {
    /// The connection, once asked for; `None` while the link is down.
    conn: Option<ConnId>,
    /// What each reply still to come is for, in order.
    pending: VecDeque<Pending>,
    /// Since when the connection has been backlogged, if it is, and the
    /// bytes sent on it since then.
    backlogged_since: Option<Instant>,
    sent_backlogged: usize,
    /// Commands dropped because the connection was backlogged: in all, and
    /// since the last time that was logged.
    dropped: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
    /// Each command is encoded here before its one send.
    out: Vec<u8>,
}

impl Commands {
    /// Sends one command on `cmd`, its reply to go to `pending`; `false`
    /// if it could not be: the link is down, or `cmd` has owed Redis more
    /// than the loop's high-water mark for longer than `BACKLOG_GRACE`
    /// (then it is dropped and counted).
    fn send(&mut self, cx: &mut dyn Context, args: &[&[u8]], pending: Pending) -> bool {
        let Some(cmd) = self.conn else {
            return false;
        };
        let now = cx.now();
        if !cx.backlogged(cmd) {
            self.backlogged_since = None;
            self.sent_backlogged = 0;
        } else if now.duration_since(*self.backlogged_since.get_or_insert(now)) > BACKLOG_GRACE
            || self.sent_backlogged > BACKLOG_BURST
        {
            self.dropped += 1;
            self.unlogged += 1;
            if self
                .last_logged
                .is_none_or(|last| now.duration_since(last) >= DROP_LOG_EVERY)
            {
                tracing::warn!(
                    "cluster: Redis is not keeping up: {} commands dropped ({} in all)",
                    self.unlogged,
                    self.dropped
                );
                self.unlogged = 0;
                self.last_logged = Some(now);
            }
            return false;
        }
        self.write(cx, args, pending)
    }

    /// Sends one command whatever the backlog: for a caller that checked
    /// it before a group of commands that must go together.
    fn write(&mut self, cx: &mut dyn Context, args: &[&[u8]], pending: Pending) -> bool {
        let Some(cmd) = self.conn else {
            return false;
        };
        self.out.clear();
        command(&mut self.out, args);
        if !cx.send(cmd, &self.out) {
            return false;
        }
        if self.backlogged_since.is_some() {
            self.sent_backlogged += self.out.len();
        }
        self.pending.push_back(pending);
        true
    }
}

impl Cluster {
    /// A cluster link to `config.url`, not yet connected: it is opened by
    /// [`start`](Cluster::start), in the loop.
    pub(crate) fn new(config: ClusterConfig) -> Cluster {
        let prefix = match config.url.db {
            0 => "netchat:".to_string(),
            db => format!("netchat:{db}:"),
        };
        Cluster {
            config,
            id: server_id(),
            prefix,
            commands: Commands::default(),
            sub: None,
            open: 0,
            closing: Vec::new(),
            stopping: false,
            told: Told::Nothing,
            backoff: FIRST_RETRY,
            seq: 0,
            renew: None,
            registering: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// Whether `id` is one of the cluster's connections, not a client.
    pub(crate) fn owns(&self, id: ConnId) -> bool {
        self.commands.conn == Some(id) || self.sub == Some(id) || self.closing.contains(&id)
    }

    /// Whether the participants were told the link is lost, and not since
    /// that it is back: a newcomer is told too.
    pub(crate) fn lost(&self) -> bool {
        self.told == Told::Lost
    }

    /// Connects for the first time, when the server starts.
    pub(crate) fn start(&mut self, cx: &mut dyn Context) {
        tracing::info!("cluster {} as server {}", self.config.url, self.id);
        self.connect(cx);
    }

    /// Asks for both connections, and queues what each must say first.
    fn connect(&mut self, cx: &mut dyn Context) {
        let to = Connect::new(self.config.url.addr).timeout(CONNECT_TIMEOUT);
        let (cmd, sub) = match (cx.connect(to.clone()), cx.connect(to)) {
            (Ok(cmd), Ok(sub)) => (cmd, sub),
            (cmd, sub) => {
                // No attempt at all (out of descriptors): as a failed one.
                for id in [cmd, sub].into_iter().flatten() {
                    cx.close(id);
                    self.closing.push(id);
                }
                tracing::warn!("cluster: cannot connect to {}", self.config.url);
                self.retry_later(cx);
                return;
            }
        };
        self.commands.conn = Some(cmd);
        self.commands.backlogged_since = None;
        self.commands.sent_backlogged = 0;
        self.sub = Some(sub);
        for id in [cmd, sub] {
            self.out.clear();
            let url = &self.config.url;
            match (&url.user, &url.password) {
                (Some(user), Some(pass)) => {
                    command(&mut self.out, &[b"AUTH", user.as_bytes(), pass.as_bytes()])
                }
                (None, Some(pass)) => command(&mut self.out, &[b"AUTH", pass.as_bytes()]),
                _ => {}
            }
            if url.db != 0 && id == cmd {
                command(&mut self.out, &[b"SELECT", url.db.to_string().as_bytes()]);
            }
            if !self.out.is_empty() {
                cx.send(id, &self.out);
            }
        }
        // The replies to AUTH and SELECT on `cmd`; `sub`'s are read past.
        if self.config.url.password.is_some() {
            self.commands.pending.push_back(Pending::Nothing);
        }
        if self.config.url.db != 0 {
            self.commands.pending.push_back(Pending::Nothing);
        }
    }

    /// One of the two connections is established; once both are, the link
    /// is up: this server says it is alive and subscribes.
    pub(crate) fn on_open(&mut self, cx: &mut dyn Context, events: &mut Vec<Event>) {
        self.open += 1;
        if self.open < 2 {
            return;
        }
        tracing::info!("cluster link to {} up", self.config.url);
        self.backoff = FIRST_RETRY;
        self.renew_alive(cx);
        let servers = format!("{}servers", self.prefix);
        let members = format!("{}members:{}", self.prefix, self.id);
        self.commands.send(
            cx,
            &[b"SADD", servers.as_bytes(), self.id.as_bytes()],
            Pending::Nothing,
        );
        self.commands
            .send(cx, &[b"DEL", members.as_bytes()], Pending::Nothing);
        if let Some(sub) = self.sub {
            let rooms = format!("{}room:*", self.prefix);
            let own = format!("{}server:{}", self.prefix, self.id);
            self.out.clear();
            command(&mut self.out, &[b"PSUBSCRIBE", rooms.as_bytes()]);
            command(&mut self.out, &[b"SUBSCRIBE", own.as_bytes()]);
            cx.send(sub, &self.out);
        }
        events.push(Event::Up);
        if self.told == Told::Lost {
            self.told = Told::Restored;
            events.push(Event::Restored);
        }
    }

    /// What Redis sent on one of the two connections.
    pub(crate) fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        input: &mut Input<'_>,
        events: &mut Vec<Event>,
    ) {
        loop {
            let frame = match next_frame(input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("cluster: Redis sent what is not RESP ({e})");
                    input.clear();
                    cx.close(id);
                    self.closing.push(id);
                    self.lose(cx, id, events);
                    return;
                }
            };
            if Some(id) == self.commands.conn {
                self.on_reply(frame, events);
            } else if Some(id) == self.sub {
                self.on_push(&frame, events);
            }
        }
    }

    /// The reply to the oldest command on `cmd`.
    fn on_reply(&mut self, reply: OwnedFrame, events: &mut Vec<Event>) {
        if let OwnedFrame::Error(e) = &reply {
            tracing::warn!("cluster: Redis answered {e}");
        }
        let Some(pending) = self.commands.pending.pop_front() else {
            return;
        };
        events.push(match pending {
            Pending::Nothing => return,
            Pending::Reclaim(nick) => {
                if reply == OwnedFrame::Integer(0) {
                    tracing::warn!("cluster: {nick} is held on another server too");
                }
                return;
            }
            Pending::Greet(id) => Event::Greeted {
                id,
                nick: text(&reply).map(str::to_string),
            },
            Pending::Claim(id, nick) => Event::Claimed {
                id,
                nick,
                // An error (a script Redis would not run) grants nothing.
                granted: reply == OwnedFrame::Integer(1),
            },
            Pending::Members(asker, query) => Event::Answer {
                asker,
                query,
                members: matches!(reply, OwnedFrame::Array(_)).then(|| presence::parse(&reply)),
            },
            Pending::Send(asker, nick) => match reply {
                OwnedFrame::Integer(n) if n > 0 => return,
                _ => Event::NoSuchNick { asker, nick },
            },
        });
    }

    /// A message on `sub`: a line for a room, or for this server.
    fn on_push(&mut self, frame: &OwnedFrame, events: &mut Vec<Event>) {
        let OwnedFrame::Array(parts) = frame else {
            return;
        };
        let (channel, payload) = match parts.as_slice() {
            [kind, _pattern, channel, payload] if bytes(kind) == Some(b"pmessage") => {
                (channel, payload)
            }
            [kind, channel, payload] if bytes(kind) == Some(b"message") => (channel, payload),
            // Confirmations of the subscriptions.
            _ => return,
        };
        let (Some(channel), Some(payload)) = (text(channel), bytes(payload)) else {
            return;
        };
        let Some(name) = channel.strip_prefix(&self.prefix) else {
            return;
        };
        if let Some(room) = name.strip_prefix("room:") {
            // `<server id> <line>`; this server's own were told here already.
            let Some(space) = payload.iter().position(|&b| b == b' ') else {
                return;
            };
            if payload[..space] != *self.id.as_bytes() {
                events.push(Event::Line {
                    room: room.to_string(),
                    line: Bytes::copy_from_slice(&payload[space + 1..]),
                });
            }
        } else if let Ok(payload) = std::str::from_utf8(payload) {
            match payload.split_once(' ') {
                Some(("msg", rest)) => {
                    if let Some((nick, line)) = rest.split_once(' ') {
                        events.push(Event::Private {
                            nick: nick.to_string(),
                            line: Bytes::copy_from_slice(line.as_bytes()),
                        });
                    }
                }
                Some(("kick", nick)) => events.push(Event::Kick {
                    nick: nick.to_string(),
                }),
                _ => {}
            }
        }
    }

    /// One of the connections closed (or never opened).
    pub(crate) fn on_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        reason: CloseReason,
        events: &mut Vec<Event>,
    ) {
        if let Some(at) = self.closing.iter().position(|&c| c == id) {
            self.closing.swap_remove(at);
            return;
        }
        let url = &self.config.url;
        match reason {
            CloseReason::Shutdown => {}
            CloseReason::ConnectFailed(kind) => tracing::warn!(
                "cluster: cannot reach Redis at {url} ({kind}): serving this server's clients alone"
            ),
            _ => tracing::warn!(
                "cluster link to {url} lost ({reason}): serving this server's clients alone"
            ),
        }
        self.lose(cx, id, events);
    }

    /// The link is down, `gone` closed (or is to be closed): closes the
    /// other connection, answers whoever waits from this server alone, and
    /// reconnects later.
    fn lose(&mut self, cx: &mut dyn Context, gone: ConnId, events: &mut Vec<Event>) {
        for id in [self.commands.conn.take(), self.sub.take()]
            .into_iter()
            .flatten()
        {
            if id != gone {
                cx.close(id);
                self.closing.push(id);
            }
        }
        self.open = 0;
        self.registering.clear();
        if let Some(renew) = self.renew.take() {
            cx.cancel_timer(renew);
        }
        for pending in self.commands.pending.drain(..) {
            events.push(match pending {
                Pending::Nothing | Pending::Reclaim(_) => continue,
                Pending::Greet(id) => Event::Greeted { id, nick: None },
                Pending::Claim(id, nick) => Event::Claimed {
                    id,
                    nick,
                    granted: true,
                },
                Pending::Members(asker, query) => Event::Answer {
                    asker,
                    query,
                    members: None,
                },
                Pending::Send(asker, nick) => Event::NoSuchNick { asker, nick },
            });
        }
        if self.stopping {
            return;
        }
        if self.told != Told::Lost {
            self.told = Told::Lost;
            events.push(Event::Lost);
        }
        self.retry_later(cx);
    }

    /// Reconnects after the backoff, which doubles up to [`MAX_RETRY`].
    fn retry_later(&mut self, cx: &mut dyn Context) {
        tracing::info!("cluster: reconnecting in {:?}", self.backoff);
        cx.set_timer(self.backoff, RETRY);
        self.backoff = (self.backoff * 2).min(MAX_RETRY);
    }

    /// The cluster's timers: the alive key's renewal, and reconnection.
    pub(crate) fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        match tag {
            RENEW => self.renew_alive(cx),
            RETRY if !self.stopping && self.commands.conn.is_none() => self.connect(cx),
            REGISTER => self.register_more(cx),
            _ => {}
        }
    }

    /// Sets this server's alive key for another TTL, and the timer that
    /// renews it a third of the way.
    fn renew_alive(&mut self, cx: &mut dyn Context) {
        let key = format!("{}alive:{}", self.prefix, self.id);
        let ttl = self.config.ttl.as_millis().max(1).to_string();
        self.commands.send(
            cx,
            &[b"SET", key.as_bytes(), b"1", b"PX", ttl.as_bytes()],
            Pending::Nothing,
        );
        self.renew = Some(cx.set_timer(self.config.ttl / 3, RENEW));
    }

    /// Publishes `line`, said here in the room called `room`, for the other
    /// servers: once, whoever is in the room there.
    pub(crate) fn publish(&mut self, cx: &mut dyn Context, room: &str, line: &[u8]) {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(b"room:");
        out.extend(room.bytes().map(|b| b.to_ascii_lowercase()));
        let channel_end = out.len();
        out.extend_from_slice(self.id.as_bytes());
        out.push(b' ');
        out.extend_from_slice(line);
        let (channel, payload) = out.split_at(channel_end);
        self.commands
            .send(cx, &[b"PUBLISH", channel, payload], Pending::Nothing);
    }

    /// Runs `script` with the key prefix, this server's id and `args` as
    /// its ARGV, its reply to go to `pending`; `false` if it could not be
    /// sent. The script's text goes with every call: `EVALSHA` would save
    /// its bytes, at the price of handling `NOSCRIPT` after Redis restarts.
    fn eval(
        &mut self,
        cx: &mut dyn Context,
        script: &str,
        args: &[&[u8]],
        pending: Pending,
    ) -> bool {
        let mut all: Vec<&[u8]> = vec![
            b"EVAL",
            script.as_bytes(),
            b"0",
            self.prefix.as_bytes(),
            self.id.as_bytes(),
        ];
        all.extend_from_slice(args);
        self.commands.send(cx, &all, pending)
    }

    /// Asks for a default nick no server has given out, for the newcomer
    /// `id`; `false` if the link is down: this server must pick one alone.
    pub(crate) fn greet(&mut self, cx: &mut dyn Context, id: ConnId) -> bool {
        self.eval(cx, scripts::GREET, &[], Pending::Greet(id))
    }

    /// Claims `new` for `id`, giving up `old` if it is granted; `false` if
    /// the link is down.
    pub(crate) fn claim(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        new: &str,
        old: Option<&str>,
    ) -> bool {
        let new_key = new.to_ascii_lowercase();
        let old_key = old.unwrap_or("").to_ascii_lowercase();
        let pending = Pending::Claim(id, new.to_string());
        self.eval(
            cx,
            scripts::CLAIM,
            &[new_key.as_bytes(), old_key.as_bytes()],
            pending,
        )
    }

    /// Tells Redis again who is here, `members` (room, nick), after the
    /// link came up: Redis may have restarted empty, or taken this server
    /// for dead. Each is claimed its nick again (a refusal is only logged)
    /// and written in the members' hash, as many at a time as the link
    /// takes, so that a big server's registration is neither dropped nor
    /// queued without bound.
    pub(crate) fn register(&mut self, cx: &mut dyn Context, members: Vec<(String, String)>) {
        self.registering = members.into();
        self.register_more(cx);
    }

    /// Registers participants until the link is backlogged, then again
    /// a little later.
    fn register_more(&mut self, cx: &mut dyn Context) {
        while let Some(cmd) = self.commands.conn {
            if cx.backlogged(cmd) {
                cx.set_timer(REGISTER_EVERY, REGISTER);
                return;
            }
            let Some((room, nick)) = self.registering.pop_front() else {
                return;
            };
            // Both or neither: one check for the two.
            let key = nick.to_ascii_lowercase();
            let entry = self.entry(&room, &nick);
            let members = format!("{}members:{}", self.prefix, self.id);
            let claim: [&[u8]; 7] = [
                b"EVAL",
                scripts::CLAIM.as_bytes(),
                b"0",
                self.prefix.as_bytes(),
                self.id.as_bytes(),
                key.as_bytes(),
                b"",
            ];
            self.commands
                .write(cx, &claim, Pending::Reclaim(nick.clone()));
            let hset: [&[u8]; 4] = [
                b"HSET",
                members.as_bytes(),
                key.as_bytes(),
                entry.as_bytes(),
            ];
            self.commands.write(cx, &hset, Pending::Nothing);
        }
    }

    /// `nick` changed (moved, renamed, left) before it was registered: what
    /// the chat says now is what counts.
    fn registered(&mut self, nick: &str) {
        if !self.registering.is_empty() {
            self.registering
                .retain(|(_, n)| !n.eq_ignore_ascii_case(nick));
        }
    }

    /// Gives up `nick`, if this server holds it.
    pub(crate) fn release(&mut self, cx: &mut dyn Context, nick: &str) {
        let key = nick.to_ascii_lowercase();
        self.eval(cx, scripts::RELEASE, &[key.as_bytes()], Pending::Nothing);
    }

    /// Writes that `nick` is now in `room`, for every server's `/who`.
    pub(crate) fn seated(&mut self, cx: &mut dyn Context, room: &str, nick: &str) {
        self.registered(nick);
        let entry = self.entry(room, nick);
        let key = format!("{}members:{}", self.prefix, self.id);
        let field = nick.to_ascii_lowercase();
        let args: [&[u8]; 4] = [b"HSET", key.as_bytes(), field.as_bytes(), entry.as_bytes()];
        self.commands.send(cx, &args, Pending::Nothing);
    }

    /// The members' hash entry of `nick`, in `room` from now on.
    fn entry(&mut self, room: &str, nick: &str) -> String {
        self.seq = self.seq.max(now_micros()).saturating_add(1);
        presence::entry(self.seq, room, nick)
    }

    /// Writes that `nick` is no longer here.
    pub(crate) fn unseated(&mut self, cx: &mut dyn Context, nick: &str) {
        self.registered(nick);
        let key = format!("{}members:{}", self.prefix, self.id);
        let field = nick.to_ascii_lowercase();
        let args: [&[u8]; 3] = [b"HDEL", key.as_bytes(), field.as_bytes()];
        self.commands.send(cx, &args, Pending::Nothing);
    }

    /// Asks for every live server's members, to answer `asker`'s `query`;
    /// `false` if the link is down.
    pub(crate) fn members(&mut self, cx: &mut dyn Context, asker: Asker, query: Query) -> bool {
        self.eval(cx, presence::WHO, &[], Pending::Members(asker, query))
    }

    /// Sends `line` to the participant called `nick` on whichever other
    /// server has it; `false` if the link is down.
    pub(crate) fn private(
        &mut self,
        cx: &mut dyn Context,
        asker: Asker,
        nick: &str,
        line: &[u8],
    ) -> bool {
        let mut payload = format!("msg {} ", nick.to_ascii_lowercase()).into_bytes();
        payload.extend_from_slice(line);
        self.via_owner(cx, asker, nick, &payload)
    }

    /// Has whichever other server has `nick` kick it; `false` if the link is down.
    pub(crate) fn kick(&mut self, cx: &mut dyn Context, nick: &str) -> bool {
        let payload = format!("kick {}", nick.to_ascii_lowercase());
        self.via_owner(cx, Asker::Console, nick, payload.as_bytes())
    }

    /// Publishes `payload` on the channel of the live server that holds
    /// `nick`, if it is not this one.
    fn via_owner(
        &mut self,
        cx: &mut dyn Context,
        asker: Asker,
        nick: &str,
        payload: &[u8],
    ) -> bool {
        let key = nick.to_ascii_lowercase();
        let pending = Pending::Send(asker, nick.to_string());
        self.eval(cx, scripts::SEND, &[key.as_bytes(), payload], pending)
    }

    /// The server is stopping: tells each room of `leaving` (room, nick)
    /// that they left, gives up their nicks and this server's keys. The
    /// loop writes it all out before it closes the connection.
    pub(crate) fn stop(&mut self, cx: &mut dyn Context, leaving: &[(String, String)]) {
        self.stopping = true;
        if self.open == 2 {
            self.say_goodbye(cx, leaving);
        }
        // Nothing more is sent: the participants' own closes follow, and
        // must neither repeat this nor count as dropped on a closing link.
        for id in [self.commands.conn.take(), self.sub.take()]
            .into_iter()
            .flatten()
        {
            self.closing.push(id);
        }
    }

    /// What [`stop`](Cluster::stop) tells Redis.
    fn say_goodbye(&mut self, cx: &mut dyn Context, leaving: &[(String, String)]) {
        for (room, nick) in leaving {
            self.publish(cx, room, format!("* {nick} left\n").as_bytes());
            self.release(cx, nick);
        }
        let members = format!("{}members:{}", self.prefix, self.id);
        let servers = format!("{}servers", self.prefix);
        let alive = format!("{}alive:{}", self.prefix, self.id);
        self.commands.send(
            cx,
            &[b"DEL", members.as_bytes(), alive.as_bytes()],
            Pending::Nothing,
        );
        self.commands.send(
            cx,
            &[b"SREM", servers.as_bytes(), self.id.as_bytes()],
            Pending::Nothing,
        );
    }
}

/// A random id for this run of the server: 64 bits from std's per-process
/// random hash keys, in hex.
fn server_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Microseconds since the epoch: an entry's order number, so that `/who`
/// lists the members of every server in about the order they came in.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
