//! The places connections take, counted once for both drivers: how many
//! are served (in all, per listener, per address), how many are closing,
//! which limit a new connection is over, and when each closing one must be
//! gone.
//!
//! A connection is counted by the key of its slot (the reactor's slab slot,
//! the threaded driver's place): in when it is admitted, out when it starts
//! closing, and as closing until it is removed. A closing connection is no
//! longer a client — it takes no place under `max_connections` — but it
//! still holds a descriptor (and on the threaded driver two threads), so
//! closing ones are counted apart, under `max_closing`. The drivers say how
//! a connection was counted (its `Origin`, whether it is closing) rather
//! than this keeping a map by key: that costs a hash at every open and
//! close, which only `max_per_address` needs.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::listeners::{counted_address, refusal};
use crate::{Config, Endpoint, ListenerId, Origin, Refusal};

/// How a connection just accepted is to be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Admission {
    /// The limit it is over, if any: it is then sent the refusal and
    /// closed, and counted as closing from the start.
    pub(crate) refusal: Option<Refusal>,
    /// The address it is counted under, if served (with `max_per_address`).
    pub(crate) address: Option<IpAddr>,
}

/// The counts of one driver's connections, and its limits on them.
#[derive(Debug)]
pub(crate) struct Places {
    max_connections: usize,
    max_closing: usize,
    max_per_address: usize,
    /// Connections served: open, and not the handler's own outbound ones.
    open: usize,
    /// Connections closing: flushing, lingering, refusals.
    closing: usize,
    /// Connections served from each listener, by its index.
    by_listener: Vec<usize>,
    /// With `max_per_address`: the connections served from each address,
    /// and the address of each, by key, to give its place back.
    per_address: HashMap<IpAddr, usize>,
    addresses: HashMap<usize, IpAddr>,
    /// A graceful stop has begun: everyone closes at once, so the closing
    /// cap no longer applies.
    stopping: bool,
}

impl Places {
    pub(crate) fn new(config: &Config) -> Places {
        Places {
            max_connections: config.max_connections,
            max_closing: config.max_closing,
            max_per_address: config.max_per_address,
            open: 0,
            closing: 0,
            by_listener: Vec::new(),
            per_address: HashMap::new(),
            addresses: HashMap::new(),
            stopping: false,
        }
    }

    /// Connections served.
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Connections closing.
    pub(crate) fn closing(&self) -> usize {
        self.closing
    }

    /// How to serve a connection from `peer` just accepted from `listener`
    /// (whose policy is `endpoint`): refused when the driver serves
    /// `max_connections` in all or the listener its own, or when its
    /// address has `max_per_address` served already. `None`: close it
    /// without a word, as it is over a limit and half of `max_closing` are
    /// closing already — one address connecting hundreds of times a second
    /// must not crowd out the last lines (`Bye`) of clients that were served.
    pub(crate) fn admit(
        &self,
        listener: ListenerId,
        endpoint: &Endpoint,
        peer: Option<SocketAddr>,
    ) -> Option<Admission> {
        let from_listener = self.by_listener.get(listener.index()).copied();
        let full = self.open >= self.max_connections
            || from_listener.unwrap_or(0) >= endpoint.max_connections;
        let address = counted_address(self.max_per_address, peer);
        let open = address.map(|ip| self.per_address.get(&ip).copied().unwrap_or(0));
        match refusal(full, open, self.max_per_address) {
            None => Some(Admission {
                refusal: None,
                address,
            }),
            Some(_) if self.closing >= self.max_closing / 2 => None,
            refusal => Some(Admission {
                refusal,
                address: None,
            }),
        }
    }

    /// Counts in the connection of `key`: against the client limits unless
    /// it is the handler's own (`Origin::Connected`), against its
    /// listener's, and under `address`.
    pub(crate) fn count_in(&mut self, key: usize, origin: Origin, address: Option<IpAddr>) {
        if origin != Origin::Connected {
            self.open += 1;
        }
        if let Origin::Accepted(listener) = origin {
            let index = listener.index();
            if self.by_listener.len() <= index {
                self.by_listener.resize(index + 1, 0);
            }
            self.by_listener[index] += 1;
        }
        if let Some(ip) = address {
            *self.per_address.entry(ip).or_default() += 1;
            self.addresses.insert(key, ip);
        }
    }

    /// The connection of `key`, from `origin`, starts closing: it no
    /// longer counts as served, and counts as closing until removed.
    /// Returns whether it may linger: `false` if `max_closing` were closing
    /// already (unless a graceful stop is under way), and then the caller
    /// is to end it at once instead.
    pub(crate) fn start_closing(&mut self, key: usize, origin: Origin) -> bool {
        let crowded = self.closing >= self.max_closing && !self.stopping;
        self.uncount(key, origin);
        self.closing += 1;
        !crowded
    }

    /// The connection of `key`, from `origin`, is gone: `closing` says
    /// whether it had started closing.
    pub(crate) fn remove(&mut self, key: usize, origin: Origin, closing: bool) {
        if closing {
            self.closing -= 1;
        } else {
            self.uncount(key, origin);
        }
    }

    /// A graceful stop has begun: from now on closing connections linger
    /// however many there are.
    pub(crate) fn begin_stop(&mut self) {
        self.stopping = true;
    }

    /// Whether a graceful stop has begun.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping
    }

    /// Gives back the places `count_in` took.
    fn uncount(&mut self, key: usize, origin: Origin) {
        if origin != Origin::Connected {
            self.open -= 1;
        }
        if let Origin::Accepted(listener) = origin {
            self.by_listener[listener.index()] -= 1;
        }
        // Only with `max_per_address`: otherwise nothing is counted here.
        if !self.addresses.is_empty() {
            if let Some(ip) = self.addresses.remove(&key) {
                if let Entry::Occupied(mut open) = self.per_address.entry(ip) {
                    *open.get_mut() -= 1;
                    if *open.get() == 0 {
                        open.remove();
                    }
                }
            }
        }
    }
}

/// When each closing connection must be gone, in the order they began
/// closing. They all wait the same `linger_timeout`, so this order is also
/// the order of their deadlines: the front is always the next, and the
/// driver's poll timeout includes it. Entries are not removed when their
/// connection ends sooner: the driver skips those it no longer has, which
/// its ids (slot and generation) tell.
#[derive(Debug)]
pub(crate) struct Linger<K> {
    queue: VecDeque<(K, Instant)>,
}

impl<K: Copy> Linger<K> {
    pub(crate) fn new() -> Linger<K> {
        Linger {
            queue: VecDeque::new(),
        }
    }

    /// Adds `key`, to be gone by the deadline with it, which must be no
    /// earlier than any before it.
    pub(crate) fn push(&mut self, key: K, at: Instant) {
        self.queue.push_back((key, at));
    }

    /// The next deadline (perhaps of a connection gone since).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.front().map(|&(_, at)| at)
    }

    /// The next key whose deadline has passed at `now`, taken off.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(key, at) = self.queue.front()?;
        (at <= now).then(|| {
            self.queue.pop_front();
            key
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const L0: ListenerId = ListenerId::nth(0);
    const L1: ListenerId = ListenerId::nth(1);

    fn places(max_connections: usize, max_closing: usize, max_per_address: usize) -> Places {
        Places::new(&Config {
            max_connections,
            max_closing,
            max_per_address,
            ..Config::default()
        })
    }

    fn peer(last: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), 4000)))
    }

    fn serve(address: Option<IpAddr>) -> Option<Admission> {
        Some(Admission {
            refusal: None,
            address,
        })
    }

    fn refuse(why: Refusal) -> Option<Admission> {
        Some(Admission {
            refusal: Some(why),
            address: None,
        })
    }

    /// Admits a connection from `peer` on `listener` at `key` and counts it
    /// in as the drivers do: a refusal closing from the start.
    fn accept(
        places: &mut Places,
        key: usize,
        listener: ListenerId,
        from: u8,
    ) -> Option<Admission> {
        let admission = places.admit(listener, &Endpoint::plain(), peer(from));
        if let Some(Admission { refusal, address }) = admission {
            places.count_in(key, Origin::Accepted(listener), address);
            if refusal.is_some() {
                places.start_closing(key, Origin::Accepted(listener));
            }
        }
        admission
    }

    #[test]
    fn past_max_closing_a_close_is_immediate_unless_stopping() {
        let mut places = places(100, 2, usize::MAX);
        for key in 0..4 {
            places.count_in(key, Origin::Attached, None);
        }
        assert!(places.start_closing(0, Origin::Attached));
        assert!(places.start_closing(1, Origin::Attached));
        assert!(!places.start_closing(2, Origin::Attached), "crowded");
        assert_eq!((places.open(), places.closing()), (1, 3));
        places.begin_stop();
        assert!(
            places.start_closing(3, Origin::Attached),
            "a stop lingers everyone"
        );
        for key in 0..4 {
            places.remove(key, Origin::Attached, true);
        }
        assert_eq!((places.open(), places.closing()), (0, 0));
    }

    #[test]
    fn refusals_stop_at_half_of_max_closing() {
        let mut places = places(1, 4, usize::MAX);
        assert_eq!(accept(&mut places, 0, L0, 1), serve(None));
        let refused = refuse(Refusal::Full);
        assert_eq!(accept(&mut places, 1, L0, 2), refused);
        assert_eq!(accept(&mut places, 2, L0, 3), refused);
        assert_eq!(places.closing(), 2);
        assert_eq!(accept(&mut places, 3, L0, 4), None);
        assert_eq!((places.open(), places.closing()), (1, 2));
    }

    #[test]
    fn a_listener_limit_counts_that_listener_only() {
        let mut places = places(100, 100, usize::MAX);
        let one = Endpoint {
            max_connections: 1,
            ..Endpoint::plain()
        };
        places.count_in(0, Origin::Accepted(L0), None);
        let full = refuse(Refusal::Full);
        assert_eq!(places.admit(L0, &one, peer(1)), full);
        assert_eq!(places.admit(L1, &one, peer(1)), serve(None));
        // Given back when it starts closing, and not again when it goes.
        places.start_closing(0, Origin::Accepted(L0));
        assert_eq!(places.admit(L0, &one, peer(1)), serve(None));
        places.remove(0, Origin::Accepted(L0), true);
        places.count_in(1, Origin::Accepted(L0), None);
        assert_eq!(places.admit(L0, &one, peer(1)), full);
        // Given back by a connection removed without closing, too.
        places.remove(1, Origin::Accepted(L0), false);
        assert_eq!(places.admit(L0, &one, peer(1)), serve(None));
    }

    #[test]
    fn an_address_gets_its_places_back_however_its_connections_end() {
        let mut places = places(100, 100, 2);
        let ip = peer(7).map(|a| a.ip());
        assert_eq!(accept(&mut places, 0, L0, 7), serve(ip));
        assert_eq!(accept(&mut places, 1, L1, 7), serve(ip));
        let refused = refuse(Refusal::FromAddress);
        assert_eq!(
            accept(&mut places, 2, L0, 7),
            refused,
            "over both listeners"
        );
        assert_eq!(
            accept(&mut places, 3, L0, 8),
            serve(peer(8).map(|a| a.ip()))
        );
        // The refusal took no place of the address's: it ends, nothing changes.
        places.remove(2, Origin::Accepted(L0), true);
        assert_eq!(accept(&mut places, 4, L0, 7), refused);
        places.remove(4, Origin::Accepted(L0), true);
        // One closes gracefully, one is removed at once.
        places.start_closing(0, Origin::Accepted(L0));
        assert_eq!(accept(&mut places, 5, L0, 7), serve(ip));
        places.remove(1, Origin::Accepted(L1), false);
        places.remove(0, Origin::Accepted(L0), true);
        assert_eq!(accept(&mut places, 6, L0, 7), serve(ip));
        assert_eq!(accept(&mut places, 7, L0, 7), refused);
        assert_eq!(places.open(), 3);
        // A slot given back is given to another: its address is not the
        // one counted for the slot before.
        places.count_in(0, Origin::Attached, None);
        places.start_closing(0, Origin::Attached);
        assert_eq!(accept(&mut places, 8, L0, 7), refused);
    }

    #[test]
    fn outbound_connections_take_no_client_place() {
        let mut places = places(1, 100, usize::MAX);
        places.count_in(0, Origin::Connected, None);
        assert_eq!(places.open(), 0);
        assert_eq!(places.admit(L0, &Endpoint::plain(), peer(1)), serve(None));
        assert!(places.start_closing(0, Origin::Connected));
        places.remove(0, Origin::Connected, true);
        assert_eq!((places.open(), places.closing()), (0, 0));
    }

    #[test]
    fn linger_gives_keys_back_in_order_when_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut linger = Linger::new();
        assert_eq!(linger.next(), None);
        linger.push("a", t0 + s(2));
        linger.push("b", t0 + s(2));
        linger.push("c", t0 + s(3));
        assert_eq!(linger.next(), Some(t0 + s(2)));
        assert_eq!(linger.pop_due(t0 + s(1)), None, "not yet");
        assert_eq!(linger.pop_due(t0 + s(2)), Some("a"));
        assert_eq!(linger.pop_due(t0 + s(2)), Some("b"));
        assert_eq!(linger.pop_due(t0 + s(2)), None);
        assert_eq!(linger.next(), Some(t0 + s(3)));
        assert_eq!(linger.pop_due(t0 + s(9)), Some("c"));
        assert!(linger.is_empty());
    }
}
