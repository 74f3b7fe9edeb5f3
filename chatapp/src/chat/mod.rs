//! The chat rooms behind server1, server2 and server3: one [`Chat`] handler,
//! whichever driver runs it (the reactor with one client at a time, a thread
//! per client, or the reactor with many).
//!
//! The protocol it speaks is docs/protocol.md. In short: a client says `Hi`,
//! is answered `Hello`, given a nick and put in the room `#lobby`, and from
//! then on every line it sends is either a command (`/nick`, `/join`,
//! `/rooms`, `/who`, `/msg`, `/help`, `bye`) or a message relayed to everyone
//! else in its room as `<nick> text`. The operator types on the server's
//! console, whose lines arrive as [`ConsoleLine`] messages; the server's
//! transcript (everything said in every room) goes to a sink given to
//! [`Chat::new`].
//!
//! What is about one connection (how far it has got, its nick, its flood
//! budget, its greeting's timers) is its [`Client`], which the driver keeps
//! beside the connection and hands to each callback about it. The handler
//! keeps what is about the others: `rooms` (rooms.rs), who is in which
//! room, in the order they came in; and `nicks`, an index of everyone by
//! lower-cased nick, whatever their room, changed wherever a nick is given,
//! changed or given up. A broadcast builds its line once into a [`Bytes`]
//! and hands the same bytes to every member of the room; nothing is
//! allocated per recipient, and nobody outside the room is looked at.
//!
//! With [`ChatConfig::cluster`], `cluster` links the handler to the other
//! servers of its cluster through Redis (docs/cluster.md): each line for a
//! room is also published once, where it leaves for the room's members
//! (`broadcast`, `announce_arrival`, `announce_departure`), and what the
//! other servers say comes back as events that cluster/hooks.rs applies.

mod clean;
mod cluster;
mod flood;
mod nick;
mod rooms;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reactor::{
    CloseReason, ConnId, Context, Handler, Input, LineTooLong, ListenerId, Refusal, TimerId,
};
use rustc_hash::FxHashMap;

use crate::telnet;
use clean::clean;
use cluster::{Asker, Cluster, Query};
pub use cluster::{ClusterConfig, Url};
use flood::Budget;
use nick::OPERATOR;
use rooms::{Left, Moved, Room, RoomId, Rooms, LOBBY};

/// The server's answer to `bye`.
const BYE: &[u8] = b"Bye\n";
/// The answer to a first line that is not `Hi`.
const SAY_HI: &[u8] = b"ERR say Hi first\n";
/// Sent to a client that did not say `Hi` in time.
const GREETING_TIMEOUT: &[u8] = b"ERR timeout: say Hi first\n";
/// Sent to a client the operator kicks.
const KICKED: &[u8] = b"ERR kicked by the operator\n";
/// Sent to a client whose address already has `--max-per-ip` connections
/// (`Config::max_per_address`).
const TOO_MANY_FROM_ADDRESS: &[u8] = b"ERR busy: too many connections from your address\n";
/// Sent to everyone when the server stops.
const SHUTTING_DOWN: &[u8] = b"* server shutting down\n";
/// Sent to every participant when the link to the cluster's Redis is lost,
/// and to a newcomer while it is.
const LINK_LOST: &[u8] = b"* cluster link lost\n";
/// Sent to every participant when the link is back.
const LINK_RESTORED: &[u8] = b"* cluster link restored\n";

/// How long a client's input must be quiet before an unterminated `Hi` is
/// taken as its greeting. The programs of the original assignment send `Hi`
/// with no line end and wait 2 s for an answer; a person or a line client
/// sends the line end with the text, in the same write, so it never waits.
/// Well under their 2 s, and well over the time between two packets of one
/// line.
pub const GREETING_QUIET: Duration = Duration::from_millis(300);

/// What a nick change costs of a client's flood budget, in lines. More than
/// a line, because a rename is worth more to a flooder and costs the others
/// more: it is told to the whole room like a message, but it also changes
/// who is who — a client cycling through nicks makes the room unreadable,
/// dodges `/msg` and can snatch a nick the moment its owner leaves. IRC
/// servers limit nick changes much more tightly than lines for the same
/// reasons. With the default budget a client can still rename ten times in
/// a row, then about once every 0.6 s.
const RENAME_COST: u32 = 3;

/// What a move to another room costs of a client's flood budget, in lines:
/// as much as a rename, for the same reasons. It is told to two rooms, and
/// a client hopping from room to room would fill them with notices.
const MOVE_COST: u32 = RENAME_COST;

/// A line also costs one more line of budget for each this many bytes. A
/// budget of lines alone let a client relay its lines' full length at the
/// allowed rate: 30 lines of 4,096 invalid bytes are 370 KB to every
/// recipient (each bad byte becomes a three-byte U+FFFD), and twenty such
/// clients cut off a participant reading 1 MB/s (found by an attack on
/// server3). Ordinary lines are shorter than this and cost one.
const BYTES_PER_LINE: usize = 512;

/// The answer to `/help`.
const HELP: &[u8] = b"\
* /nick NAME       change your nick: 1-32 letters, digits, _ or -
* /join #ROOM      go to ROOM, made if new: # and 1-32 letters, digits, _ or -
* /rooms           list the rooms and how many are in each
* /who             list who is in your room
* /msg NICK text   send text to NICK alone, in any room
* /help            this list
* bye              leave
* any other line is sent to your room as <your nick> line
";

/// The answer to `/help` typed on the console.
const CONSOLE_HELP: &[u8] = b"\
* /who         list every room and who is in it
* /rooms       list the rooms and how many are in each
* /join #ROOM  send your lines to ROOM from now on (#lobby at first)
* /kick NICK   disconnect NICK, in any room
* /quit        stop the server
* /help        this list
* any other line is sent to your room as <server> line
";

/// What can be set when a chat server starts.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// The longest line a client may send, in bytes, not counting its `\n`
    /// (or `\r\n`). A longer one is answered `ERR line too long (max N
    /// bytes)` and the connection closed.
    pub max_line: usize,
    /// How long a new client has to say `Hi` before it is sent `ERR timeout:
    /// say Hi first` and closed.
    pub greeting_timeout: Duration,
    /// The whole line, without its `\n`, sent to a client the server is too
    /// full to serve; it should start with `ERR busy: `.
    pub busy_message: String,
    /// Joins and leaves are told to the room only while it has at most this
    /// many participants, counting the one who comes or goes; the transcript
    /// has them all. In a bigger room they would be most of the traffic:
    /// filling a room of N clients costs N²/2 notices, 20,000 for 200 and
    /// half a million for 1,000. (Twitch's chat stops sending them at
    /// 1,000.) Nick changes too, except to the one who changes.
    pub announce_limit: usize,
    /// Flood control: lines a client may send per second, on average; 0
    /// turns flood control off. Past its budget a client's input is not
    /// read until the budget allows its next line: it is slowed, and TCP
    /// slows its sender, but nothing it sends is dropped. Every line counts,
    /// the greeting and blank lines too; a nick change counts as 3.
    pub flood_rate: u32,
    /// Flood control: lines a client may send at once, after a quiet
    /// moment, before `flood_rate` holds it back.
    pub flood_burst: u32,
    /// The most rooms there may be at once, `#lobby` included; a `/join`
    /// that would make one more is answered `ERR too many rooms (max N);
    /// /rooms lists them`. Each room costs little, but every room is a line
    /// of `/rooms` and a name someone can squat on.
    pub max_rooms: usize,
    /// The cluster this server is one of (`--cluster`), or `None` to be a
    /// chat of its own.
    pub cluster: Option<ClusterConfig>,
}

impl Default for ChatConfig {
    fn default() -> ChatConfig {
        ChatConfig {
            max_line: 4096,
            greeting_timeout: Duration::from_secs(10),
            busy_message: "ERR busy: too many clients, try again later".to_string(),
            announce_limit: 200,
            // A person typing, or pasting a few dozen lines, never notices;
            // a script that sends thousands of lines is slowed to what a
            // room can read (5 lines a second is fast for a human
            // conversation), and it is the script that waits, not the room.
            flood_rate: 5,
            flood_burst: 30,
            // Rooms for a busy server's topics, and a `/rooms` answer that
            // is still one line a client can read (about 40 KB at most).
            max_rooms: 1000,
            cluster: None,
        }
    }
}

/// A line the operator typed on the server's console (its standard input),
/// posted to the loop with `Handle::post` by the thread that reads it. A
/// trailing `\n` or `\r\n` may be left on: it is removed with the other
/// control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleLine(pub String);

/// A connection as the chat keeps it, beside the connection in the driver:
/// how far the client has got (its greeting, or its nick), its flood
/// budget, and the address it counts against. Made when the connection
/// opens and handed back to `on_close`, so nothing here can outlive the
/// connection.
#[derive(Default)]
pub struct Client {
    /// How far it has got.
    stage: Stage,
    /// When its next line is due by its flood budget (the theoretical
    /// arrival time of [`flood`]); `None` before its first line, which
    /// finds a full budget. Unused with flood control off.
    next_line: Option<Instant>,
}

/// How far a connection has got.
enum Stage {
    /// Connected, and has not said `Hi` yet. Boxed: what a greeting holds
    /// is several times the size of a nick, and every connection in the
    /// room would pay for it.
    Greeting(Box<Greeting>),
    /// Greeted: in the room, under `nick`.
    Joined { nick: Box<str> },
}

impl Default for Stage {
    fn default() -> Stage {
        Stage::Greeting(Box::default())
    }
}

/// A connection that has not greeted: its timers, and a `Hi` it sent
/// without a line end. Both are connection timers, and end with the
/// connection.
#[derive(Default)]
struct Greeting {
    /// Fires [`DEADLINE`]: the client is out of time to say `Hi`. `None`
    /// only for a connection that was refused, and is closing.
    deadline: Option<TimerId>,
    /// `Hi` without a line end, taken out of the input: the driver cannot
    /// be asked for its input back from a timer (the threaded driver hands
    /// it back only with new bytes), so the handler holds it, and puts it
    /// back in front of the input if more bytes come.
    pending: BytesMut,
    /// Set while `pending` waits: fires [`QUIET`] once nothing more has come
    /// for [`GREETING_QUIET`].
    quiet: Option<TimerId>,
}

/// The tag of a client's greeting deadline.
const DEADLINE: u64 = 0;
/// The tag of a client's quiet timer: the `Hi` it waited on is the greeting.
const QUIET: u64 = 1;
/// The tag of the timer that brings a client the cluster's answer about
/// its nick (see `Chat::claims`).
const ANSWERED: u64 = 2;

/// The cluster's answer about a client's nick, waiting for the client's
/// timer: only a callback about the client is handed its state.
enum Claim {
    /// The nick the cluster gave a newcomer, or `None`: pick one here.
    Greeted(Option<String>),
    /// Whether the nick asked for with `/nick` was granted.
    Renamed { nick: String, granted: bool },
}

/// The chat handler: rooms, and everyone who greeted in one of them.
///
/// What is about one connection is its [`Client`]; the handler keeps what
/// a connection's callbacks must know about the others.
pub struct Chat {
    config: ChatConfig,
    /// The rooms, and who is in which: whom a line for a room goes to, and
    /// the order `/who` lists them in.
    rooms: Rooms,
    /// The room the console's lines go to, as the operator last named it
    /// with `/join` (or as the room was spelled, if it was there). The
    /// console is no participant: it is in no room's list, and keeps no
    /// room from going when its last participant leaves.
    console_room: Box<str>,
    /// Who has which nick, whatever their room, keyed in lower case: nicks
    /// are unique regardless of case. Greeting, `/nick`, `/msg` and `/kick`
    /// look here rather than scan the rooms, which made filling a room
    /// quadratic.
    nicks: HashMap<Box<str>, ConnId>,
    /// The number of the last default nick given out, `user<N>`.
    last_user: u64,
    /// The refusal line, built once from `config.busy_message`.
    refusal: Bytes,
    /// The flood budget from `config`; `None` with flood control off.
    flood: Option<Budget>,
    /// Where everything said in every room is written for the operator.
    transcript: Box<dyn Write + Send>,
    /// The link to the other servers, with `--cluster`.
    cluster: Option<Cluster>,
    /// The clients waiting for the cluster's answer about their nick, and
    /// the answer once it has come: their input is not read meanwhile, so
    /// that their lines keep their order around the nick they ask for.
    claims: FxHashMap<ConnId, Option<Claim>>,
}

impl Chat {
    /// An empty lobby that writes its transcript to `transcript` (the
    /// server's stdout, say). It is written on the thread that runs the
    /// handler, so a sink that blocks (a pipe nobody reads) holds up the
    /// whole chat: give it a terminal, a file, or a reader that keeps up.
    pub fn new(config: ChatConfig, transcript: Box<dyn Write + Send>) -> Chat {
        let refusal = Bytes::from(format!("{}\n", config.busy_message));
        let flood = Budget::new(config.flood_rate, config.flood_burst);
        let cluster = config.cluster.clone();
        Chat {
            rooms: Rooms::new(config.max_rooms),
            config,
            console_room: LOBBY.into(),
            nicks: HashMap::new(),
            last_user: 0,
            refusal,
            flood,
            transcript,
            cluster: cluster.map(Cluster::new),
            claims: FxHashMap::default(),
        }
    }

    /// One line from a client, without its end; returns what it costs of
    /// the client's flood budget, in lines.
    fn on_line(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        client: &mut Client,
        raw: &[u8],
    ) -> u32 {
        let text = clean(raw);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return 1;
        }
        match &mut client.stage {
            Stage::Greeting(greeting) => {
                if trimmed.eq_ignore_ascii_case("hi") {
                    greeting.cancel_timers(cx);
                    // In a cluster, the nick comes from Redis: `Hello` waits.
                    if self.cluster.as_mut().is_some_and(|c| c.greet(cx, id)) {
                        self.claims.insert(id, None);
                    } else {
                        let nick = self.default_nick();
                        client.stage = Stage::Joined {
                            nick: self.greet(cx, id, nick),
                        };
                    }
                } else {
                    self.dismiss(cx, id, Bytes::from_static(SAY_HI), None);
                }
            }
            Stage::Joined { nick } => {
                if trimmed.eq_ignore_ascii_case("bye") {
                    self.dismiss(cx, id, Bytes::from_static(BYE), None);
                } else if let Some(command) = trimmed.strip_prefix('/') {
                    return self.on_command(cx, id, nick, command);
                } else {
                    self.relay(cx, id, nick, &text);
                }
            }
        }
        1
    }

    /// Takes the complete lines at the front of `input`, which holds no
    /// telnet command, as far as flood control and `id`'s output allow.
    fn take_lines(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        client: &mut Client,
        input: &mut Input<'_>,
    ) {
        // Whatever is not taken here stays in `input`, and the driver hands
        // it back: once `id`'s peer has read its answers (backlogged), or
        // when the pause ends (flood control). Nothing is dropped. A line
        // that closes the connection (`bye`, a wrong greeting, a line too
        // long) ends the loop too: a closing connection is backlogged, so
        // nothing after that line is read.
        while !input.is_empty() && !cx.backlogged(id) && !self.claims.contains_key(&id) {
            let now = cx.now();
            let wait = self.flood_wait(now, client);
            if !wait.is_zero() {
                // Over its budget: not another line until the budget allows
                // it. The others are served meanwhile.
                cx.pause_input(id, wait);
                return;
            }
            let Some(line) = input.next_line(self.config.max_line) else {
                return;
            };
            let cost = match line {
                Ok(line) => {
                    let size = u32::try_from(line.len() / BYTES_PER_LINE).unwrap_or(u32::MAX);
                    self.on_line(cx, id, client, line).saturating_add(size)
                }
                Err(LineTooLong) => {
                    let error = format!("ERR line too long (max {} bytes)\n", self.config.max_line);
                    self.dismiss(cx, id, Bytes::from(error), Some("line too long"));
                    1
                }
            };
            self.charge(now, client, cost);
        }
    }

    /// How long `client` must wait before its next line by its flood
    /// budget; zero if it may send one now, or flood control is off.
    fn flood_wait(&self, now: Instant, client: &Client) -> Duration {
        match (self.flood, client.next_line) {
            (Some(budget), Some(due)) => budget.wait(due, now),
            _ => Duration::ZERO,
        }
    }

    /// Charges `client`'s flood budget for a line that costs `lines`.
    fn charge(&self, now: Instant, client: &mut Client, lines: u32) {
        if let Some(budget) = self.flood {
            budget.charge(client.next_line.get_or_insert(now), now, lines);
        }
    }

    /// Gives the client `id`, which said `Hi`, its `nick`, and lets it into
    /// the lobby; returns the nick.
    fn greet(&mut self, cx: &mut dyn Context, id: ConnId, nick: Box<str>) -> Box<str> {
        tracing::info!(peer = ?cx.peer_addr(id), "{nick} joined");
        // `Hello` first, as the protocol promises; one send for both lines.
        let welcome = format!(
            "Hello\n* welcome, you are {nick}; lines up to {} bytes; /help lists commands\n",
            self.config.max_line
        );
        cx.send(id, welcome.as_bytes());
        if let Some(cluster) = &mut self.cluster {
            if cluster.lost() {
                cx.send(id, LINK_LOST);
            }
            cluster.seated(cx, LOBBY, &nick);
        }
        let lobby = self.rooms.enter(id, &nick);
        self.nicks.insert(nick.to_ascii_lowercase().into(), id);
        let joined = Bytes::from(format!("* {nick} joined\n"));
        self.announce_arrival(cx, id, lobby, &joined);
        nick
    }

    /// The next `user<N>` nobody has: someone may have picked it with `/nick`.
    fn default_nick(&mut self) -> Box<str> {
        loop {
            self.last_user += 1;
            let nick = format!("user{}", self.last_user);
            if self.find(&nick).is_none() {
                return nick.into_boxed_str();
            }
        }
    }

    /// A message from `from`, called `nick`, relayed to everyone else in its
    /// room and to the transcript.
    fn relay(&mut self, cx: &mut dyn Context, from: ConnId, nick: &str, text: &str) {
        if let Some(room) = self.rooms.room_of(from) {
            self.broadcast(cx, room, &message(nick, text), Some(from));
        }
    }

    /// A command from the client `id`, called `nick`: the line after its
    /// `/`. Returns what it costs of the client's flood budget, in lines.
    fn on_command(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        nick: &mut Box<str>,
        command: &str,
    ) -> u32 {
        let (name, args) = split_command(command);
        match name.to_ascii_lowercase().as_str() {
            "nick" => return self.rename(cx, id, nick, args),
            "join" => return self.join(cx, id, nick, args),
            "rooms" => {
                if !self.ask_cluster(cx, Asker::Client(id), Query::Rooms) {
                    cx.send(id, &self.list_rooms());
                }
            }
            "who" => {
                if !self.ask_cluster(cx, Asker::Client(id), Query::Who) {
                    if let Some(room) = self.rooms.room_of(id).and_then(|r| self.rooms.get(r)) {
                        cx.send(id, &who(room));
                    }
                }
            }
            "msg" => self.private(cx, id, nick, args),
            "help" => {
                cx.send(id, HELP);
            }
            _ => {
                cx.send(id, &unknown_command(name));
            }
        }
        1
    }

    /// `/nick NAME` from `id`, now called `nick`; returns what it cost of
    /// the flood budget: a refusal is a line like any other, a change costs
    /// [`RENAME_COST`].
    fn rename(&mut self, cx: &mut dyn Context, id: ConnId, nick: &mut Box<str>, new: &str) -> u32 {
        if let Err(why) = nick::check(new) {
            cx.send(id, format!("ERR {why}\n").as_bytes());
            return 1;
        }
        // Taken by someone else, that is: changing the case of one's own is fine.
        if self.find(new).is_some_and(|holder| holder != id) {
            cx.send(id, format!("ERR nick {new} is taken\n").as_bytes());
            return 1;
        }
        // In a cluster another server may have it: Redis says, and the
        // client's input waits for the answer (`Chat::answered`).
        if !new.eq_ignore_ascii_case(nick) {
            if let Some(cluster) = &mut self.cluster {
                if cluster.claim(cx, id, new, Some(nick)) {
                    self.claims.insert(id, None);
                    return RENAME_COST;
                }
            }
        }
        self.renamed(cx, id, nick, new);
        RENAME_COST
    }

    /// `id`, called `nick`, is called `new` from now on: the room is told.
    fn renamed(&mut self, cx: &mut dyn Context, id: ConnId, nick: &mut Box<str>, new: &str) {
        let old = std::mem::replace(nick, new.into());
        self.nicks.remove(&*old.to_ascii_lowercase());
        self.nicks.insert(new.to_ascii_lowercase().into(), id);
        self.rooms.rename(id, new);
        let notice = Bytes::from(format!("* {old} is now {new}\n"));
        let Some(room) = self.rooms.room_of(id) else {
            return;
        };
        if let (Some(cluster), Some(here)) = (&mut self.cluster, self.rooms.get(room)) {
            cluster.unseated(cx, &old);
            cluster.seated(cx, here.name(), new);
        }
        // Like a join, told to the room only while it is small enough; the
        // changer is always told, as the answer to its command.
        if self
            .rooms
            .get(room)
            .is_some_and(|room| room.len() <= self.config.announce_limit)
        {
            self.broadcast(cx, room, &notice, None);
        } else {
            cx.send(id, &notice);
            self.transcribe_in(room, &notice);
        }
    }

    /// `/join NAME` from `id`, called `nick`: a move from its room to the
    /// one called `name`, told to both as a leave and a join. Returns what it
    /// cost of the flood budget: a refusal is a line, a move [`MOVE_COST`].
    fn join(&mut self, cx: &mut dyn Context, id: ConnId, nick: &str, name: &str) -> u32 {
        let Moved { from, to } = match self.rooms.join(id, nick, name) {
            Ok(moved) => moved,
            Err(why) => {
                cx.send(id, format!("ERR {why}\n").as_bytes());
                return 1;
            }
        };
        tracing::debug!("{nick} moved from {} to {name}", from.name);
        let left = Bytes::from(format!("* {nick} left\n"));
        self.announce_departure(cx, &from, &left, &left);
        if let Some(room) = self.rooms.get(to) {
            cx.send(id, format!("* you are now in {}\n", room.name()).as_bytes());
            if let Some(cluster) = &mut self.cluster {
                cluster.seated(cx, room.name(), nick);
            }
        }
        let joined = Bytes::from(format!("* {nick} joined\n"));
        self.announce_arrival(cx, id, to, &joined);
        MOVE_COST
    }

    /// `* N rooms: #lobby (2), #rust (1)`: every room, the lobby first, with
    /// how many are in it.
    fn list_rooms(&self) -> Bytes {
        let rooms = self.rooms.list();
        let plural = if rooms.len() == 1 { "" } else { "s" };
        let mut line = format!("* {} room{plural}:", rooms.len());
        for (i, room) in rooms.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            line += &format!("{comma} {} ({})", room.name(), room.len());
        }
        line.push('\n');
        exact(line)
    }

    /// `/msg NICK text` from `from`, called `nick`: to one client, in any
    /// room, marked private, and not in the transcript.
    fn private(&mut self, cx: &mut dyn Context, from: ConnId, nick: &str, args: &str) {
        let Some((to, text)) = args.split_once(char::is_whitespace) else {
            cx.send(from, b"ERR usage: /msg NICK text\n");
            return;
        };
        let line = exact(format!("<{nick}> (private) {}\n", text.trim_start()));
        match self.find(to) {
            Some(to_id) => {
                cx.send(to_id, &line);
            }
            None => {
                // Perhaps on another server; if not, the cluster says so.
                let asker = Asker::Client(from);
                if !self
                    .cluster
                    .as_mut()
                    .is_some_and(|c| c.private(cx, asker, to, &line))
                {
                    cx.send(from, format!("ERR no such nick: {to}\n").as_bytes());
                }
            }
        }
    }

    /// A line typed on the console: a command, or a message from `server`
    /// to the console's room.
    fn on_console(&mut self, cx: &mut dyn Context, line: &str) {
        // Cleaning also takes off the line's end, if the reader left it on.
        let text = clean(line.as_bytes());
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return;
        }
        let Some(command) = trimmed.strip_prefix('/') else {
            let message = message(OPERATOR, &text);
            match self.rooms.find(&self.console_room) {
                Some(room) => self.broadcast(cx, room, &message, None),
                // Nobody is in it here: the transcript hears the operator,
                // and the room's members on other servers.
                None => {
                    transcribe(&mut *self.transcript, &self.console_room, &message);
                    if let Some(cluster) = &mut self.cluster {
                        cluster.publish(cx, &self.console_room, &message);
                    }
                }
            }
            return;
        };
        let (name, args) = split_command(command);
        match name.to_ascii_lowercase().as_str() {
            "who" => {
                if !self.ask_cluster(cx, Asker::Console, Query::Who) {
                    let who = self.who_everywhere();
                    self.transcribe(&who);
                }
            }
            "rooms" => {
                if !self.ask_cluster(cx, Asker::Console, Query::Rooms) {
                    let rooms = self.list_rooms();
                    self.transcribe(&rooms);
                }
            }
            "join" => self.console_join(args),
            "kick" => self.kick(cx, args),
            // `on_stop` follows and says goodbye.
            "quit" => cx.stop(),
            "help" => self.transcribe(CONSOLE_HELP),
            _ => self.transcribe(&unknown_command(name)),
        }
    }

    /// The console's `/who`: the `/who` line of every room someone is in,
    /// the lobby first; `* 0 online` if nobody is anywhere.
    fn who_everywhere(&self) -> Bytes {
        let mut lines = BytesMut::new();
        for room in self.rooms.list() {
            if room.len() > 0 {
                lines.extend_from_slice(&who(room));
            }
        }
        if lines.is_empty() {
            return Bytes::from_static(b"* 0 online\n");
        }
        lines.freeze()
    }

    /// `/join NAME` on the console: its lines go to that room from now on.
    /// The console is no participant, so it neither makes a room nor counts
    /// against the limit: until someone is in the room, what it says there
    /// reaches the transcript alone.
    fn console_join(&mut self, name: &str) {
        if let Err(why) = rooms::check(name) {
            self.transcribe(format!("ERR {why}\n").as_bytes());
            return;
        }
        let here = self.rooms.find(name).and_then(|r| self.rooms.get(r));
        let name: Box<str> = here.map_or(name, Room::name).into();
        if name.eq_ignore_ascii_case(&self.console_room) {
            let already = rooms::JoinError::AlreadyIn(name);
            self.transcribe(format!("ERR {already}\n").as_bytes());
            return;
        }
        self.transcribe(format!("* you are now in {name}\n").as_bytes());
        self.console_room = name;
    }

    /// `/kick NICK` on the console, whatever room NICK is in.
    fn kick(&mut self, cx: &mut dyn Context, nick: &str) {
        if nick.is_empty() {
            self.transcribe(b"ERR usage: /kick NICK\n");
            return;
        }
        if !self.kick_here(cx, nick) && !self.cluster.as_mut().is_some_and(|c| c.kick(cx, nick)) {
            self.transcribe(format!("ERR no such nick: {nick}\n").as_bytes());
        }
    }

    /// Kicks `nick` if it is a participant here; `false` if not.
    fn kick_here(&mut self, cx: &mut dyn Context, nick: &str) -> bool {
        let Some(id) = self.find(nick) else {
            return false;
        };
        cx.send(id, KICKED);
        cx.close(id);
        self.leave(cx, id, "was kicked", None);
        true
    }

    /// Sends `id` its `last` line and closes it; if it was in a room, the
    /// others there are told `* NICK left` at once rather than when the
    /// driver reports the close, which may be seconds later, and the
    /// transcript why, if there is an `aside` to say.
    fn dismiss(&mut self, cx: &mut dyn Context, id: ConnId, last: Bytes, aside: Option<&str>) {
        cx.send(id, &last);
        cx.close(id);
        self.leave(cx, id, "left", aside);
    }

    /// If `id` is in a room, takes it out, and tells the others there
    /// `* NICK {how}`, and the transcript the same, or `* NICK {how}
    /// ({aside})` if there is an aside: the room is told who left, the
    /// operator also why.
    fn leave(&mut self, cx: &mut dyn Context, id: ConnId, how: &str, aside: Option<&str>) {
        let Some(left) = self.unseat(cx, id) else {
            return;
        };
        let nick = &left.nick;
        let notice = Bytes::from(format!("* {nick} {how}\n"));
        match aside {
            None => self.announce_departure(cx, &left, &notice, &notice),
            Some(aside) => {
                let told = format!("* {nick} {how} ({aside})\n");
                self.announce_departure(cx, &left, &notice, told.as_bytes());
            }
        }
    }

    /// A join, made once the newcomer `id` is in `room`: `notice` is told
    /// to the others there if the room is small enough (see
    /// [`ChatConfig::announce_limit`]), and always to the transcript.
    /// (`rename` makes the same choice for a nick change.)
    fn announce_arrival(&mut self, cx: &mut dyn Context, id: ConnId, room: RoomId, notice: &Bytes) {
        let Some(members) = self.rooms.get(room) else {
            return;
        };
        if members.len() <= self.config.announce_limit {
            tell_room(cx, members, notice, Some(id));
            if let Some(cluster) = &mut self.cluster {
                cluster.publish(cx, members.name(), notice);
            }
        }
        self.transcribe_in(room, notice);
    }

    /// A leave, made once the one who went is out of its room: `notice` is
    /// told to the room if it is small enough, counting the one who went,
    /// and `told` (usually the same line) always to the transcript, under
    /// the room's name even if the room went with its last participant.
    fn announce_departure(
        &mut self,
        cx: &mut dyn Context,
        left: &Left,
        notice: &Bytes,
        told: &[u8],
    ) {
        let room = self.rooms.get(left.room);
        let announced = room.is_none_or(|room| room.len() < self.config.announce_limit);
        if let (Some(room), true) = (room, announced) {
            tell_room(cx, room, notice, None);
        }
        // A room gone here with its last member may have members elsewhere.
        if let (Some(cluster), true) = (&mut self.cluster, announced) {
            cluster.publish(cx, &left.name, notice);
        }
        transcribe(&mut *self.transcript, &left.name, told);
    }

    /// Takes `id` out of its room and gives up its nick; says who left
    /// where, if it was in a room. Once out, a client cannot leave twice:
    /// this is what makes `* NICK left` come exactly once, whether this
    /// handler closed the client (and told the room then) or the driver
    /// reports that it went.
    fn unseat(&mut self, cx: &mut dyn Context, id: ConnId) -> Option<Left> {
        let left = self.rooms.leave(id)?;
        self.nicks.remove(&*left.nick.to_ascii_lowercase());
        if let Some(cluster) = &mut self.cluster {
            cluster.unseated(cx, &left.nick);
            cluster.release(cx, &left.nick);
        }
        Some(left)
    }

    /// Sends `line` to everyone in `room` but `except`, and writes it to
    /// the transcript.
    fn broadcast(
        &mut self,
        cx: &mut dyn Context,
        room: RoomId,
        line: &Bytes,
        except: Option<ConnId>,
    ) {
        if let Some(members) = self.rooms.get(room) {
            tell_room(cx, members, line, except);
            transcribe(&mut *self.transcript, members.name(), line);
            if let Some(cluster) = &mut self.cluster {
                cluster.publish(cx, members.name(), line);
            }
        }
    }

    /// Writes `line`, said in `room`, to the transcript.
    fn transcribe_in(&mut self, room: RoomId, line: &[u8]) {
        if let Some(room) = self.rooms.get(room) {
            transcribe(&mut *self.transcript, room.name(), line);
        }
    }

    /// Appends `line`, which belongs to no room (the answer to a console
    /// command, the shutdown notice), to the transcript.
    fn transcribe(&mut self, line: &[u8]) {
        transcribe(&mut *self.transcript, LOBBY, line);
    }

    /// Who is called `nick`, ignoring case, in any room.
    fn find(&self, nick: &str) -> Option<ConnId> {
        self.nicks.get(&*nick.to_ascii_lowercase()).copied()
    }
}

impl Handler for Chat {
    type Message = ConsoleLine;
    type Conn = Client;

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, client: &mut Client) {
        if self.cluster_open(cx, id) {
            return;
        }
        if let Stage::Greeting(greeting) = &mut client.stage {
            let timeout = self.config.greeting_timeout;
            greeting.deadline = Some(cx.set_conn_timer(id, timeout, DEADLINE));
        }
    }

    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        client: &mut Client,
        input: &mut Input<'_>,
    ) {
        if self.cluster_data(cx, id, input) {
            return;
        }
        if let Stage::Greeting(greeting) = &mut client.stage {
            greeting.resume(cx, input);
        }
        // Telnet's commands first: they are below the lines, and may be in
        // the middle of one. What is stripped and left unread comes back
        // with the next read and is stripped again, which changes nothing.
        let telnet = telnet::strip(input);
        if !telnet.replies.is_empty() {
            // At once, not after the lines: telnet shows nothing it receives
            // until its `DO TIMING-MARK` is answered, so a late answer would
            // hide the answers to the lines that follow it.
            cx.send(id, &telnet.replies);
        }
        // An unfinished command stays at the end of the input, out of the
        // lines' reach: it is neither data nor a line's end, and must not
        // count towards a line's length.
        input.set_aside(telnet.unfinished);
        self.take_lines(cx, id, client, input);
        // Only with no telnet command waiting: what is taken aside is put
        // back in front of bytes that are stripped again.
        if telnet.unfinished == 0 && !self.claims.contains_key(&id) {
            if let Stage::Greeting(greeting) = &mut client.stage {
                greeting.await_quiet(cx, id, input);
            }
        }
    }

    fn on_close(&mut self, cx: &mut dyn Context, id: ConnId, _client: Client, reason: CloseReason) {
        if self.cluster_close(cx, id, reason) {
            return;
        }
        // Its timers ended with it.
        // A client this handler closed has left the room already; this one
        // went away by itself, or the server is stopping and everyone is
        // going at once.
        if reason == CloseReason::Shutdown {
            self.unseat(cx, id);
        } else {
            self.leave(cx, id, "left", why(reason));
        }
    }

    fn on_conn_timer(&mut self, cx: &mut dyn Context, id: ConnId, client: &mut Client, tag: u64) {
        if tag == ANSWERED {
            self.answered(cx, id, client);
            return;
        }
        // A client's only timers are its greeting's, cancelled when it greets.
        let Stage::Greeting(greeting) = &mut client.stage else {
            return;
        };
        if tag == DEADLINE {
            self.dismiss(cx, id, Bytes::from_static(GREETING_TIMEOUT), None);
        } else {
            // The quiet timer: the `Hi` it waited on is the greeting line.
            greeting.quiet = None;
            let line = std::mem::take(&mut greeting.pending);
            let cost = self.on_line(cx, id, client, &line);
            self.charge(cx.now(), client, cost);
        }
    }

    /// The handler's only timers are the cluster's.
    fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        self.cluster_timer(cx, tag);
    }

    fn on_start(&mut self, cx: &mut dyn Context) {
        self.cluster_start(cx);
    }

    fn on_wake(&mut self, cx: &mut dyn Context, ConsoleLine(line): ConsoleLine) {
        self.on_console(cx, &line);
    }

    fn on_stop(&mut self, cx: &mut dyn Context) {
        // To the participants only, in every room: a client that has not
        // been sent `Hello` is owed nothing else first.
        for room in self.rooms.list() {
            cx.send_many(room.members(), SHUTTING_DOWN);
        }
        self.transcribe(SHUTTING_DOWN);
        self.cluster_stop(cx);
    }

    /// The driver counts connections, by address too (`--max-per-ip` is
    /// the loop's `Config::max_per_address`, applied at the accept, before
    /// a TLS handshake); the chat says which limit in its own words.
    fn refusal(&self, _listener: ListenerId, why: Refusal) -> Option<Bytes> {
        Some(match why {
            Refusal::Full => self.refusal.clone(),
            Refusal::FromAddress => Bytes::from_static(TOO_MANY_FROM_ADDRESS),
        })
    }
}

impl Greeting {
    /// Puts a `Hi` that waited for the quiet timer back in front of `input`,
    /// where more bytes of the first line have come.
    fn resume(&mut self, cx: &mut dyn Context, input: &mut Input<'_>) {
        if let Some(quiet) = self.quiet.take() {
            cx.cancel_timer(quiet);
        }
        if !self.pending.is_empty() {
            input.put_back(&self.pending);
            self.pending.clear();
        }
    }

    /// If what `id` has sent of its first line is `Hi`, takes it out of
    /// `input` and sets the quiet timer: should nothing more come for
    /// [`GREETING_QUIET`], it is the greeting.
    fn await_quiet(&mut self, cx: &mut dyn Context, id: ConnId, input: &mut Input<'_>) {
        // With a line end it is a line, waiting for flood control; and a
        // connection one of its lines closed has nothing to wait for.
        if !input.contains(&b'\n') && is_greeting(input) && !cx.backlogged(id) {
            // A copy: the input is only lent.
            self.pending = BytesMut::from(&input[..]);
            input.clear();
            self.quiet = Some(cx.set_conn_timer(id, GREETING_QUIET, QUIET));
        }
    }

    /// Cancels both timers: the client has greeted.
    fn cancel_timers(&self, cx: &mut dyn Context) {
        if let Some(deadline) = self.deadline {
            cx.cancel_timer(deadline);
        }
        if let Some(quiet) = self.quiet {
            cx.cancel_timer(quiet);
        }
    }
}

/// Whether unterminated input is a greeting: `Hi`, as a line would be.
fn is_greeting(input: &[u8]) -> bool {
    clean(input).trim().eq_ignore_ascii_case("hi")
}

/// Why a participant's connection closed, as the transcript says it after
/// `* NICK left`; `None` if it left of its own accord. Only the operator is
/// told: the room's notice is `* NICK left` whatever the reason, as what
/// went wrong between the server and one client is not the others'
/// business, and clients that read the notices need only one form.
fn why(reason: CloseReason) -> Option<&'static str> {
    match reason {
        // `Requested` is a close this handler asked for: it has told the
        // room, and the transcript why, already.
        CloseReason::PeerClosed | CloseReason::Requested | CloseReason::Shutdown => None,
        CloseReason::Reset => Some("connection reset"),
        CloseReason::Error(_) => Some("connection error"),
        CloseReason::Tls => Some("TLS error"),
        // Not a client: only a connection the handler opened fails to connect.
        CloseReason::ConnectFailed(_) => Some("cannot connect"),
        CloseReason::HandlerPanicked => Some("server error"),
        CloseReason::InputLimit => Some("flooding"),
        CloseReason::OutputLimit => Some("not reading"),
        CloseReason::Idle => Some("idle"),
    }
}

/// Sends `line` to everyone in `room` but `except`.
fn tell_room(cx: &mut dyn Context, room: &Room, line: &Bytes, except: Option<ConnId>) {
    for members in room.others(except) {
        cx.send_many(members, line);
    }
}

/// Appends `line`, said in the room called `room`, to `transcript`: after
/// the room's name and a space, unless the room is the lobby, whose lines
/// are written as they were before there were rooms (`#rust <alice> hi`,
/// but `<alice> hi` in the lobby). Errors are ignored: the transcript is
/// for the operator to watch, and a closed stdout must not take the chat
/// down with it. Flushed at once, so that it can be followed live whatever
/// the sink buffers.
fn transcribe(transcript: &mut dyn Write, room: &str, line: &[u8]) {
    let mut write = || {
        if room != LOBBY {
            transcript.write_all(room.as_bytes())?;
            transcript.write_all(b" ")?;
        }
        transcript.write_all(line)?;
        transcript.flush()
    };
    let _ = write();
}

/// `/who` in `room`: `* N online: a, b, c` in the lobby, `* N online in
/// #NAME: a, b, c` in another room, in the order they came in; `* 0 online`
/// in an empty lobby. The operator is not a client, so `server` is never
/// listed.
fn who(room: &Room) -> Bytes {
    if room.len() == 0 {
        return Bytes::from_static(b"* 0 online\n");
    }
    let names = room.nicks().join(", ");
    let count = room.len();
    exact(if room.is_lobby() {
        format!("* {count} online: {names}\n")
    } else {
        format!("* {count} online in {}: {names}\n", room.name())
    })
}

/// `<nick> text` and its newline: a message, built once into a buffer of
/// exactly its size, to be shared by every recipient.
fn message(nick: &str, text: &str) -> Bytes {
    let mut line = BytesMut::with_capacity(nick.len() + text.len() + 4);
    line.extend_from_slice(b"<");
    line.extend_from_slice(nick.as_bytes());
    line.extend_from_slice(b"> ");
    line.extend_from_slice(text.as_bytes());
    line.extend_from_slice(b"\n");
    line.freeze()
}

/// A line built with `format!`, in a buffer of exactly its size. `Bytes`
/// keeps a `String`'s spare capacity, which a long line queued for a slow
/// reader would hold unseen by the output limit: `/msg` texts over 1 KiB
/// cost twice the limit (found by an attack on server3).
fn exact(line: String) -> Bytes {
    Bytes::from(line.into_bytes().into_boxed_slice())
}

/// `ERR unknown command /x (try /help)`.
fn unknown_command(name: &str) -> Bytes {
    Bytes::from(format!("ERR unknown command /{name} (try /help)\n"))
}

/// Splits `msg bob hi there` into the command's name and its arguments,
/// trimmed.
fn split_command(command: &str) -> (&str, &str) {
    match command.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (command, ""),
    }
}
