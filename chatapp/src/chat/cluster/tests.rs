//! The cluster's side of the chat on the in-memory harness: no Redis, no
//! socket. The test plays Redis on the two outbound connections, reading
//! the commands the chat sends and writing the replies and messages Redis
//! would.

use std::io;
use std::time::Duration;

use reactor::testing::Harness;
use reactor::ConnId;

use super::BACKLOG_GRACE;
use crate::chat::{Chat, ChatConfig, ClusterConfig};

/// A chat in a cluster whose Redis is the test, with both connections
/// established; returns them (`cmd`, `sub`) and the server's id.
fn clustered(high_water: usize) -> (Harness<Chat>, ConnId, ConnId, String) {
    let config = ChatConfig {
        cluster: Some(ClusterConfig {
            url: "redis://127.0.0.1:6379".parse().unwrap(),
            ttl: Duration::from_secs(15),
        }),
        flood_rate: 0,
        ..ChatConfig::default()
    };
    let chat = Chat::new(config, Box::new(io::sink()));
    // The link is asked for as the server starts, before any client.
    let mut h = Harness::new(chat).with_high_water(high_water);
    let dialing = h.dialing();
    assert_eq!(dialing.len(), 2, "cmd and sub");
    let (cmd, sub) = (dialing[0].0, dialing[1].0);
    h.establish(cmd);
    h.establish(sub);
    let said = h.take_text(cmd);
    // SET alive, then SADD netchat:servers <id>, then DEL members:<id>.
    let id = said
        .split("netchat:servers\r\n$16\r\n")
        .nth(1)
        .map(|rest| rest[..16].to_string())
        .expect("the server's id in its SADD");
    assert!(h.take_text(sub).contains("PSUBSCRIBE"));
    // The replies to those three.
    h.receive(cmd, "+OK\r\n:1\r\n:0\r\n");
    (h, cmd, sub, id)
}

/// A participant greeted with the cluster's nick `nick`.
fn greeted(h: &mut Harness<Chat>, cmd: ConnId, nick: &str) -> ConnId {
    let client = h.connect();
    h.receive(client, "Hi\n");
    assert!(h.take_text(cmd).contains("INCR"), "the GREET script");
    h.receive(cmd, format!("${}\r\n{nick}\r\n", nick.len()));
    h.advance(Duration::ZERO);
    assert!(h.take_text(client).contains(&format!("you are {nick};")));
    // The replies to its HSET and to the PUBLISH of its join, for the FIFO.
    h.receive(cmd, ":1\r\n:0\r\n");
    client
}

/// A message on `sub` as Redis sends a `PSUBSCRIBE`d one.
fn pmessage(channel: &str, payload: &str) -> String {
    let pattern = "netchat:room:*";
    format!(
        "*4\r\n$8\r\npmessage\r\n${}\r\n{pattern}\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
        pattern.len(),
        channel.len(),
        payload.len()
    )
}

#[test]
fn hello_waits_for_the_clusters_nick_and_the_lines_after_it_wait_too() {
    let (mut h, cmd, _sub, _) = clustered(64 * 1024);
    let client = h.connect();
    h.receive(client, "Hi\nearly\n");
    assert_eq!(h.take_text(client), "", "no Hello before Redis answers");
    assert!(h.take_text(cmd).contains("INCR"));
    h.receive(cmd, "$5\r\nuser7\r\n");
    // One turn brings the answer to the client's timer, the next its input.
    h.advance(Duration::ZERO);
    h.advance(Duration::ZERO);
    let said = h.take_text(client);
    assert!(
        said.starts_with("Hello\n* welcome, you are user7;"),
        "{said:?}"
    );
    // `early`, held while Redis answered, is said after the greeting.
    assert!(h.take_text(cmd).contains("user7> early"));
}

#[test]
fn a_line_is_published_once_whoever_is_in_the_room() {
    let (mut h, cmd, _sub, id) = clustered(64 * 1024);
    let a = greeted(&mut h, cmd, "a");
    greeted(&mut h, cmd, "b");
    greeted(&mut h, cmd, "c");
    h.take_text(cmd);
    h.receive(a, "hello\n");
    let said = h.take_text(cmd);
    assert_eq!(said.matches("PUBLISH").count(), 1, "{said:?}");
    assert!(said.contains(&format!("netchat:room:#lobby\r\n$27\r\n{id} <a> hello\n")));
}

#[test]
fn other_servers_lines_are_fanned_out_and_our_own_are_not_told_twice() {
    let (mut h, cmd, sub, id) = clustered(64 * 1024);
    let a = greeted(&mut h, cmd, "a");
    let b = greeted(&mut h, cmd, "b");
    h.take_text(a);
    h.receive(
        sub,
        pmessage("netchat:room:#lobby", "0123456789abcdef <z> hi\n"),
    );
    h.receive(
        sub,
        pmessage("netchat:room:#lobby", &format!("{id} <a> echo\n")),
    );
    h.receive(
        sub,
        pmessage("netchat:room:#other", "0123456789abcdef <z> elsewhere\n"),
    );
    assert_eq!(h.take_text(a), "<z> hi\n");
    assert_eq!(h.take_text(b), "<z> hi\n");
}

#[test]
fn a_lost_link_is_told_and_retried_after_a_second() {
    let (mut h, cmd, _sub, _) = clustered(64 * 1024);
    let a = greeted(&mut h, cmd, "a");
    h.take_text(a);
    h.disconnect(cmd);
    assert_eq!(h.take_text(a), "* cluster link lost\n");
    assert!(h.dialing().is_empty());
    // The local chat goes on, without Redis.
    let b = h.connect();
    h.receive(b, "Hi\n");
    assert!(h.take_text(b).ends_with("* cluster link lost\n"));
    h.advance(Duration::from_millis(999));
    assert!(h.dialing().is_empty());
    h.advance(Duration::from_millis(1));
    let dialing = h.dialing();
    assert_eq!(dialing.len(), 2);
    h.establish(dialing[0].0);
    h.establish(dialing[1].0);
    assert_eq!(h.take_text(a), "* user1 joined\n* cluster link restored\n");
}

#[test]
fn a_backlogged_link_drops_what_it_cannot_queue() {
    let (mut h, cmd, _sub, _) = clustered(200);
    let a = greeted(&mut h, cmd, "a");
    // The greeting's pause (the Hello waited for Redis) ends next turn.
    h.advance(Duration::ZERO);
    h.take_text(cmd);
    // Redis reads nothing from now on: the commands stay queued. A burst
    // past the high-water mark is queued whole…
    for i in 0..20 {
        h.receive(a, format!("line {i} of a slow Redis\n"));
    }
    assert_eq!(h.take_text(cmd).matches("PUBLISH").count(), 20);
    // …and so is what comes while Redis is behind for less than the
    // grace, but not what comes once it has been for longer.
    for i in 20..30 {
        h.receive(a, format!("line {i} of a slow Redis\n"));
    }
    h.advance(BACKLOG_GRACE + Duration::from_millis(1));
    for i in 30..50 {
        h.receive(a, format!("line {i} of a slow Redis\n"));
    }
    assert_eq!(h.take_text(cmd).matches("PUBLISH").count(), 10);
}

#[test]
fn a_graceful_stop_says_who_left_and_gives_up_the_servers_keys_once() {
    let (mut h, cmd, _sub, id) = clustered(64 * 1024);
    greeted(&mut h, cmd, "a");
    h.take_text(cmd);
    h.stop();
    let said = h.take_text(cmd);
    assert!(said.contains(&format!("{id} * a left\n")), "{said:?}");
    assert!(said.contains("SREM"), "{said:?}");
    // Once: the participant's own close at the stop adds nothing.
    assert_eq!(said.matches("* a left").count(), 1);
    assert_eq!(said.matches("HDEL").count(), 0);
}

#[test]
fn after_a_reconnect_everyone_is_registered_as_fast_as_the_link_takes_it() {
    let (mut h, cmd, _sub, _) = clustered(2048);
    for i in 0..30 {
        greeted(&mut h, cmd, &format!("n{i}"));
        h.take_text(cmd);
    }
    h.disconnect(cmd);
    h.advance(Duration::from_secs(1));
    let dialing = h.dialing();
    h.establish(dialing[0].0);
    h.establish(dialing[1].0);
    let cmd = dialing[0].0;
    // Redis reads what is queued, turn after turn.
    let mut registered = 0;
    for _ in 0..100 {
        let said = h.take_text(cmd);
        assert!(said.len() < 4096, "more than the link takes at once");
        registered += said.matches("HSET").count();
        h.advance(Duration::from_millis(10));
    }
    assert_eq!(registered, 30);
}
