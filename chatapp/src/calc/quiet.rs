//! Lines without their end, for clients that send each message with one
//! write and no newline, then wait for the answer: once such a client has
//! been quiet for a moment, what it sent is taken as a line.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reactor::{CloseReason, ConnId, Context, Handler, Input, ListenerId, Refusal, TimerId};

/// How long input without a line end must be followed by nothing to be
/// taken as a line: well under the 2 s the original assignment's client
/// waits for its answer, and well over the time between two packets of one
/// message. The chat's greeting waits as long (`chat::GREETING_QUIET`).
pub const QUIET: Duration = Duration::from_millis(300);

/// Wraps a line handler (one that answers lines ended by `\n`, such as
/// [`Calc`](super::Calc)) so that input left without a line end, followed
/// by nothing for [`QUIET`], is handed to it with a `\n` added.
///
/// What the inner handler leaves is taken out of the driver's input and
/// kept in the connection's state until more bytes come (it is then put
/// back in front of them) or the connection's quiet timer fires: a driver
/// cannot be asked for a connection's input from a timer (the threaded
/// driver hands it back only with new bytes). The quiet timer is a
/// connection timer of the wrapper's own, tagged [`QUIET_TAG`]; every other
/// timer, of either kind, is the inner handler's and passes through.
#[derive(Debug, Default)]
pub struct EndLines<H> {
    inner: H,
}

/// A connection's state: the inner handler's, and input that waits
/// without a line end.
#[derive(Debug, Default)]
pub struct Quiet<C> {
    inner: C,
    /// What the inner handler left, and the timer that fires once nothing
    /// more has come for [`QUIET`].
    waiting: Option<(BytesMut, TimerId)>,
}

/// The tag of the wrapper's own connection timer, which the inner handler's
/// connection timers must not use.
pub const QUIET_TAG: u64 = u64::MAX;

impl<H: Handler> EndLines<H> {
    /// `inner`, with its unterminated lines ended after a quiet moment.
    pub fn new(inner: H) -> EndLines<H> {
        EndLines { inner }
    }

    /// Hands `input` to the inner handler, and keeps what it leaves, if
    /// anything, until more comes or `QUIET` has passed.
    fn serve(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Quiet<H::Conn>,
        input: &mut Input<'_>,
    ) {
        self.inner.on_data(cx, id, &mut conn.inner, input);
        // A line the inner handler left whole (it stopped for a backlog)
        // is not ended again; and a closed connection has nothing to wait.
        if input.is_empty() || input.contains(&b'\n') || cx.backlogged(id) {
            return;
        }
        let timer = cx.set_conn_timer(id, QUIET, QUIET_TAG);
        // A copy: the input is only lent.
        conn.waiting = Some((BytesMut::from(&input[..]), timer));
        input.clear();
    }
}

impl<H: Handler> Handler for EndLines<H> {
    type Message = H::Message;
    type Conn = Quiet<H::Conn>;

    fn on_open(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn) {
        self.inner.on_open(cx, id, &mut conn.inner);
    }

    fn on_data(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: &mut Self::Conn,
        input: &mut Input<'_>,
    ) {
        if let Some((waiting, timer)) = conn.waiting.take() {
            cx.cancel_timer(timer);
            input.put_back(&waiting);
        }
        self.serve(cx, id, conn, input);
    }

    fn on_close(
        &mut self,
        cx: &mut dyn Context,
        id: ConnId,
        conn: Self::Conn,
        reason: CloseReason,
    ) {
        // The quiet timer ended with the connection.
        self.inner.on_close(cx, id, conn.inner, reason);
    }

    fn on_timer(&mut self, cx: &mut dyn Context, tag: u64) {
        self.inner.on_timer(cx, tag);
    }

    fn on_conn_timer(&mut self, cx: &mut dyn Context, id: ConnId, conn: &mut Self::Conn, tag: u64) {
        if tag != QUIET_TAG {
            return self.inner.on_conn_timer(cx, id, &mut conn.inner, tag);
        }
        if let Some((mut input, _)) = conn.waiting.take() {
            input.extend_from_slice(b"\n");
            self.inner
                .on_data(cx, id, &mut conn.inner, &mut Input::new(&mut input));
        }
    }

    fn on_start(&mut self, cx: &mut dyn Context) {
        self.inner.on_start(cx);
    }

    fn on_wake(&mut self, cx: &mut dyn Context, msg: H::Message) {
        self.inner.on_wake(cx, msg);
    }

    fn on_stop(&mut self, cx: &mut dyn Context) {
        self.inner.on_stop(cx);
    }

    fn refusal(&self, listener: ListenerId, why: Refusal) -> Option<Bytes> {
        self.inner.refusal(listener, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calc::Calc;
    use reactor::testing::Harness;

    /// Whether `c` has no input waiting for its quiet timer.
    fn nothing_waits(h: &Harness<EndLines<Calc>>, c: ConnId) -> bool {
        h.state(c).is_none_or(|state| state.waiting.is_none())
    }

    /// Nothing arrives for [`QUIET`].
    fn stay_quiet(h: &mut Harness<EndLines<Calc>>) {
        h.advance(QUIET);
    }

    #[test]
    fn an_expression_without_its_line_end_is_answered_after_a_quiet_moment() {
        let mut h = Harness::new(EndLines::new(Calc));
        let c = h.connect();
        h.receive(c, "1 + 2");
        h.advance(QUIET - Duration::from_millis(1));
        assert_eq!(h.take_text(c), "", "not quiet long enough");
        h.advance(Duration::from_millis(1));
        assert_eq!(h.take_text(c), "3\n");
        h.receive(c, "Hi");
        stay_quiet(&mut h);
        assert_eq!(h.take_text(c), "Hello\n");
        assert_eq!(h.pending_input(c), 0);
        assert!(nothing_waits(&h, c), "nothing kept once answered");
    }

    #[test]
    fn every_byte_starts_the_quiet_period_again() {
        let mut h = Harness::new(EndLines::new(Calc));
        let c = h.connect();
        h.receive(c, "6 *");
        h.advance(QUIET - Duration::from_millis(1));
        h.receive(c, " 7");
        h.advance(QUIET - Duration::from_millis(1));
        assert_eq!(h.take_text(c), "");
        h.advance(Duration::from_millis(1));
        assert_eq!(h.take_text(c), "42\n");
    }

    #[test]
    fn lines_with_their_ends_are_answered_at_once_and_set_no_timer() {
        let mut h = Harness::new(EndLines::new(Calc));
        let c = h.connect();
        h.receive(c, "1 + 1\n2 * 3\n");
        assert_eq!(h.take_text(c), "2\n6\n");
        assert!(nothing_waits(&h, c));
        h.receive(c, "bye");
        stay_quiet(&mut h);
        assert_eq!(h.take_text(c), "Bye\n");
        assert_eq!(h.closed(c), Some(CloseReason::Requested));
        assert!(h.state(c).is_none(), "the state went with the connection");
    }

    #[test]
    fn a_client_that_goes_leaves_no_timer() {
        let mut h = Harness::new(EndLines::new(Calc));
        let c = h.connect();
        h.receive(c, "1 +");
        h.disconnect(c);
        assert!(h.state(c).is_none(), "the state went with the connection");
        stay_quiet(&mut h);
        assert_eq!(h.take_text(c), "");
    }
}
