//! The chat protocol, rule by rule, on the in-memory harness.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reactor::testing::Harness;
use reactor::{CloseReason, ConnId, Handler, ListenerId, Refusal};

use super::*;

/// A transcript the test reads while the handler writes it.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Transcript {
    /// Takes what was written since the last take.
    fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes).unwrap()
    }
}

impl io::Write for Transcript {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn chat_with(config: ChatConfig) -> (Harness<Chat>, Transcript) {
    let transcript = Transcript::default();
    let chat = Chat::new(config, Box::new(transcript.clone()));
    (Harness::new(chat), transcript)
}

fn chat() -> (Harness<Chat>, Transcript) {
    chat_with(ChatConfig::default())
}

/// A room where each of `nicks` has joined and taken that nick, with every
/// output and the transcript taken.
fn room(nicks: &[&str]) -> (Harness<Chat>, Transcript, Vec<ConnId>) {
    let (mut h, transcript) = chat();
    let ids: Vec<ConnId> = nicks
        .iter()
        .map(|nick| {
            let id = h.connect();
            h.receive(id, format!("Hi\n/nick {nick}\n"));
            id
        })
        .collect();
    for &id in &ids {
        h.take(id);
    }
    transcript.take();
    (h, transcript, ids)
}

#[test]
fn hi_is_answered_hello_then_a_welcome() {
    let (mut h, _) = chat();
    let id = h.connect();
    assert_eq!(h.take_text(id), "", "the client speaks first");
    h.receive(id, "Hi\n");
    assert_eq!(
        h.take_text(id),
        "Hello\n* welcome, you are user1; lines up to 4096 bytes; /help lists commands\n"
    );
    assert_eq!(h.closed(id), None);
}

#[test]
fn the_greeting_ignores_case_spaces_and_cr() {
    let (mut h, _) = chat();
    for greeting in [" hi \r\n", "HI\n", "\thI\n"] {
        let id = h.connect();
        h.receive(id, greeting);
        assert!(h.take_text(id).starts_with("Hello\n"), "{greeting:?}");
    }
}

#[test]
fn empty_lines_before_the_greeting_are_ignored() {
    let (mut h, _) = chat();
    let id = h.connect();
    h.receive(id, "\n\r\n   \nHi\n");
    assert!(h.take_text(id).starts_with("Hello\n"));
}

#[test]
fn anything_but_hi_first_is_refused_and_closed() {
    let (mut h, transcript) = chat();
    let alice = h.connect();
    h.receive(alice, "Hi\n");
    h.take(alice);
    transcript.take();

    let id = h.connect();
    h.receive(id, "hello\nHi\n");
    assert_eq!(
        h.take_text(id),
        "ERR say Hi first\n",
        "nothing after it is read"
    );
    assert_eq!(h.closed(id), Some(CloseReason::Requested));
    assert_eq!(h.take_text(alice), "", "it never joined, so it never left");
    assert_eq!(transcript.take(), "");
}

#[test]
fn default_nicks_count_up() {
    let (mut h, _) = chat();
    for n in 1..=3 {
        let id = h.connect();
        h.receive(id, "Hi\n");
        assert!(h.take_text(id).contains(&format!("you are user{n};")));
    }
}

#[test]
fn a_default_nick_someone_took_is_skipped() {
    let (mut h, _) = chat();
    let first = h.connect();
    h.receive(first, "Hi\n/nick user2\n");
    let second = h.connect();
    h.receive(second, "Hi\n");
    assert!(h.take_text(second).contains("you are user3;"));
}

#[test]
fn the_others_and_the_transcript_are_told_of_a_join() {
    let (mut h, transcript, ids) = room(&["alice"]);
    let newcomer = h.connect();
    h.receive(newcomer, "Hi\n");
    assert_eq!(h.take_text(ids[0]), "* user2 joined\n");
    assert!(!h.take_text(newcomer).contains("joined"));
    assert_eq!(transcript.take(), "* user2 joined\n");
}

#[test]
fn joins_and_leaves_are_told_only_in_rooms_up_to_the_announce_limit() {
    let (mut h, transcript) = chat_with(ChatConfig {
        announce_limit: 3,
        ..ChatConfig::default()
    });
    let ids: Vec<ConnId> = (0..4).map(|_| h.connect()).collect();
    for &id in &ids {
        h.receive(id, "Hi\n");
    }
    assert_eq!(
        h.take_text(ids[0]),
        "Hello\n* welcome, you are user1; lines up to 4096 bytes; /help lists commands\n* user2 joined\n* user3 joined\n"
    );
    // Four in the room: the fourth one's coming and going are not told...
    h.receive(ids[3], "bye\n");
    assert_eq!(h.take_text(ids[0]), "", "joined and left unannounced");
    // ...but in a room of three they are.
    h.receive(ids[2], "bye\n");
    assert_eq!(h.take_text(ids[0]), "* user3 left\n");
    assert_eq!(
        transcript.take(),
        "* user1 joined\n* user2 joined\n* user3 joined\n* user4 joined\n\
         * user4 left\n* user3 left\n",
        "the transcript has them all"
    );
}

#[test]
fn a_message_goes_to_everyone_else_and_the_transcript() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    let [alice, bob, carol] = ids[..] else {
        unreachable!()
    };
    h.receive(alice, "hello all\n");
    assert_eq!(h.take_text(alice), "", "not back to the sender");
    assert_eq!(h.take_text(bob), "<alice> hello all\n");
    assert_eq!(h.take_text(carol), "<alice> hello all\n");
    assert_eq!(transcript.take(), "<alice> hello all\n");
}

#[test]
fn a_greeted_client_that_has_not_spoken_only_listens() {
    let (mut h, _, ids) = room(&["alice"]);
    let waiting = h.connect();
    h.receive(ids[0], "anyone?\n");
    assert_eq!(h.take_text(waiting), "", "not greeted: not in the room");
}

#[test]
fn empty_and_blank_lines_are_ignored() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "\n\r\n  \t \n\x1b\n");
    assert_eq!(h.take_text(ids[0]), "");
    assert_eq!(h.take_text(ids[1]), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn a_message_split_across_reads_is_put_back_together() {
    let (mut h, _, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "hel");
    h.receive(ids[0], "lo wor");
    assert_eq!(h.take_text(ids[1]), "");
    h.receive(ids[0], "ld\r");
    h.receive(ids[0], "\n");
    assert_eq!(h.take_text(ids[1]), "<alice> hello world\n");
}

#[test]
fn several_lines_in_one_read_are_each_handled_in_order() {
    let (mut h, _, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "one\r\ntwo\n/who\nthree\npartial");
    assert_eq!(
        h.take_text(ids[1]),
        "<alice> one\n<alice> two\n<alice> three\n"
    );
    assert_eq!(h.take_text(ids[0]), "* 2 online: alice, bob\n");
    assert_eq!(h.pending_input(ids[0]), "partial".len());
}

#[test]
fn bye_is_answered_and_closed_and_the_others_told_once() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "  BYE \r\nignored\n");
    assert_eq!(h.take_text(ids[0]), "Bye\n");
    assert_eq!(h.closed(ids[0]), Some(CloseReason::Requested));
    assert_eq!(
        h.take_text(ids[1]),
        "* alice left\n",
        "once, though on_close followed"
    );
    assert_eq!(transcript.take(), "* alice left\n");
}

#[test]
fn a_disconnect_is_a_leave_told_once() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.disconnect(ids[0]);
    h.disconnect(ids[0]);
    assert_eq!(h.take_text(ids[1]), "* alice left\n");
    assert_eq!(transcript.take(), "* alice left\n");
    h.receive(ids[1], "/who\n");
    assert_eq!(h.take_text(ids[1]), "* 1 online: bob\n");
}

#[test]
fn a_close_for_any_other_reason_is_a_leave_too() {
    let (h, transcript) = chat();
    let mut h = h.with_max_input(16);
    let alice = h.connect();
    h.receive(alice, "Hi\n");
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    h.take(bob);
    transcript.take();
    // The harness's input limit, below max_line, closes alice with InputLimit.
    h.receive(alice, "x".repeat(17));
    assert_eq!(h.closed(alice), Some(CloseReason::InputLimit));
    assert_eq!(h.take_text(bob), "* user1 left\n");
    assert_eq!(transcript.take(), "* user1 left (flooding)\n");
}

#[test]
fn the_welcome_states_the_line_limit() {
    let (mut h, _) = chat_with(ChatConfig {
        max_line: 100,
        ..ChatConfig::default()
    });
    let id = h.connect();
    h.receive(id, "Hi\n");
    assert_eq!(
        h.take_text(id),
        "Hello\n* welcome, you are user1; lines up to 100 bytes; /help lists commands\n"
    );
}

#[test]
fn the_transcript_says_why_a_client_was_cut_off_and_the_room_only_who() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol", "dave", "eve", "fred"]);
    // The driver's reasons, as it reports them.
    let reasons = [
        CloseReason::Idle,
        CloseReason::OutputLimit,
        CloseReason::InputLimit,
        CloseReason::Reset,
        CloseReason::Error(io::ErrorKind::TimedOut),
    ];
    let nicks = ["alice", "bob", "carol", "dave", "eve"];
    for ((&id, reason), nick) in ids.iter().zip(reasons).zip(nicks) {
        // The state the driver would hand back: a client in the room.
        let client = Client {
            stage: Stage::Joined { nick: nick.into() },
            ..Client::default()
        };
        h.handler.on_close(&mut h.cx, id, client, reason);
    }
    assert_eq!(
        h.take_text(ids[5]),
        "* alice left\n* bob left\n* carol left\n* dave left\n* eve left\n"
    );
    assert_eq!(
        transcript.take(),
        "* alice left (idle)\n* bob left (not reading)\n* carol left (flooding)\n\
         * dave left (connection reset)\n* eve left (connection error)\n"
    );
    // Leaving of one's own accord needs no reason.
    h.receive(ids[5], "bye\n");
    let new = h.connect();
    h.receive(new, "Hi\n");
    h.disconnect(new);
    assert_eq!(
        transcript.take(),
        "* fred left\n* user7 joined\n* user7 left\n"
    );
}

/// One quiet period with nothing arriving.
fn stay_quiet(h: &mut Harness<Chat>) {
    h.advance(GREETING_QUIET);
}

#[test]
fn an_unterminated_hi_is_greeted_after_a_quiet_moment() {
    let (mut h, transcript, ids) = room(&["alice"]);
    let id = h.connect();
    h.receive(id, "Hi");
    h.advance(GREETING_QUIET - Duration::from_millis(1));
    assert_eq!(h.take_text(id), "", "not quiet long enough");
    h.advance(Duration::from_millis(1));
    let welcome = h.take_text(id);
    assert!(welcome.starts_with("Hello\n* welcome, you are user2;"));
    assert_eq!(h.take_text(ids[0]), "* user2 joined\n");
    assert_eq!(transcript.take(), "* user2 joined\n");
    // The greeting took the bytes: the line end, if it comes late, is a
    // blank line, and the next line a message.
    h.receive(id, "\nhello\n");
    assert_eq!(h.take_text(ids[0]), "<user2> hello\n");
}

#[test]
fn every_byte_starts_the_quiet_period_again() {
    let (mut h, _) = chat();
    let id = h.connect();
    h.receive(id, " h");
    stay_quiet(&mut h);
    h.receive(id, "I");
    h.advance(GREETING_QUIET - Duration::from_millis(1));
    h.receive(id, " \r");
    h.advance(GREETING_QUIET - Duration::from_millis(1));
    assert_eq!(h.take_text(id), "");
    h.advance(Duration::from_millis(1));
    assert!(h.take_text(id).starts_with("Hello\n"));
    assert_eq!(h.pending_input(id), 0);
}

#[test]
fn only_a_greeting_is_taken_without_its_line_end() {
    let (mut h, transcript, ids) = room(&["alice"]);
    let id = h.connect();
    h.receive(id, "Hello");
    stay_quiet(&mut h);
    stay_quiet(&mut h);
    assert_eq!(h.take_text(id), "", "waits for its line end");
    assert_eq!(h.closed(id), None);
    h.receive(id, "\n");
    assert_eq!(h.take_text(id), "ERR say Hi first\n");

    // After the greeting, a line without its end is never relayed.
    h.receive(ids[0], "half a line");
    stay_quiet(&mut h);
    h.advance(Duration::from_secs(5));
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    assert!(h.take_text(bob).starts_with("Hello\n"));
    h.receive(ids[0], " and the rest\n");
    assert_eq!(h.take_text(bob), "<alice> half a line and the rest\n");
    assert_eq!(h.take_text(ids[0]), "* user2 joined\n");
    assert_eq!(
        transcript.take(),
        "* user2 joined\n<alice> half a line and the rest\n"
    );
}

#[test]
fn the_greeting_deadline_holds_for_an_unterminated_greeting_too() {
    let (mut h, _) = chat_with(ChatConfig {
        greeting_timeout: Duration::from_secs(1),
        ..ChatConfig::default()
    });
    let id = h.connect();
    h.advance(Duration::from_millis(900));
    h.receive(id, "H");
    h.advance(Duration::from_millis(100));
    assert_eq!(h.take_text(id), "ERR timeout: say Hi first\n");
    assert_eq!(h.closed(id), Some(CloseReason::Requested));
    h.advance(Duration::from_secs(1));
}

#[test]
fn a_client_that_never_greeted_leaves_silently() {
    let (mut h, transcript, ids) = room(&["alice"]);
    let waiting = h.connect();
    h.disconnect(waiting);
    assert_eq!(h.take_text(ids[0]), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn nick_changes_are_told_to_everyone_including_the_changer() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "/nick Ally_2-x\n");
    assert_eq!(h.take_text(ids[0]), "* alice is now Ally_2-x\n");
    assert_eq!(h.take_text(ids[1]), "* alice is now Ally_2-x\n");
    assert_eq!(transcript.take(), "* alice is now Ally_2-x\n");
    h.receive(ids[0], "hi\n");
    assert_eq!(h.take_text(ids[1]), "<Ally_2-x> hi\n");
}

#[test]
fn bad_nicks_are_refused_with_the_reason() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let cases = [
        ("/nick\n", "ERR usage: /nick NAME\n"),
        ("/nick    \n", "ERR usage: /nick NAME\n"),
        (
            "/nick al ice\n",
            "ERR a nick may only have letters, digits, _ and -\n",
        ),
        (
            "/nick <bob>\n",
            "ERR a nick may only have letters, digits, _ and -\n",
        ),
        (
            "/nick éloïse\n",
            "ERR a nick may only have letters, digits, _ and -\n",
        ),
        ("/nick ab\x1b\n", "* alice is now ab\n"),
        ("/nick server\n", "ERR nick server is reserved\n"),
        ("/nick SERVER\n", "ERR nick server is reserved\n"),
        ("/nick BOB\n", "ERR nick BOB is taken\n"),
        ("/nick bob\n", "ERR nick bob is taken\n"),
    ];
    for (line, answer) in cases {
        h.receive(ids[0], line);
        assert_eq!(h.take_text(ids[0]), answer, "{line:?}");
    }
    h.receive(ids[0], format!("/nick {}\n", "a".repeat(33)));
    assert_eq!(
        h.take_text(ids[0]),
        "ERR nick too long (max 32 characters)\n"
    );
    let longest = "a".repeat(32);
    h.receive(ids[0], format!("/nick {longest}\n"));
    let renames = format!("* alice is now ab\n* ab is now {longest}\n");
    assert_eq!(h.take_text(ids[0]), format!("* ab is now {longest}\n"));
    assert_eq!(
        h.take_text(ids[1]),
        renames,
        "the others see only the changes"
    );
    assert_eq!(transcript.take(), renames);
}

#[test]
fn a_nick_can_change_case() {
    let (mut h, _, ids) = room(&["alice"]);
    h.receive(ids[0], "/nick ALICE\n");
    assert_eq!(h.take_text(ids[0]), "* alice is now ALICE\n");
}

#[test]
fn a_nick_given_up_by_renaming_or_leaving_is_free_again() {
    let (mut h, _, ids) = room(&["alice", "bob", "carol"]);
    h.receive(ids[0], "/nick Ally\n");
    h.receive(ids[2], "bye\n");
    h.take_text(ids[1]);
    h.receive(ids[1], "/msg alice hello?\n");
    assert_eq!(h.take_text(ids[1]), "ERR no such nick: alice\n");
    h.receive(ids[1], "/nick ALICE\n");
    assert_eq!(h.take_text(ids[1]), "* bob is now ALICE\n");
    h.take_text(ids[0]);
    h.receive(ids[0], "/nick Carol\n");
    assert_eq!(h.take_text(ids[0]), "* Ally is now Carol\n");
    h.receive(ids[0], "/msg alice hi\n");
    assert_eq!(
        h.take_text(ids[1]),
        "* Ally is now Carol\n<Carol> (private) hi\n"
    );
}

#[test]
fn who_lists_the_room_in_join_order_without_the_operator() {
    let (mut h, transcript, ids) = room(&["carol", "alice", "bob"]);
    let waiting = h.connect();
    h.receive(ids[1], "/who\n");
    assert_eq!(h.take_text(ids[1]), "* 3 online: carol, alice, bob\n");
    assert_eq!(h.take_text(ids[0]), "", "the answer is the asker's alone");
    assert_eq!(transcript.take(), "");
    h.receive(ids[0], "bye\n");
    assert_eq!(h.take_text(ids[1]), "* carol left\n");
    h.receive(ids[1], "/WHO\n");
    assert_eq!(h.take_text(ids[1]), "* 2 online: alice, bob\n");
    assert_eq!(h.take_text(waiting), "");
}

#[test]
fn msg_goes_to_one_client_marked_private_and_not_to_the_transcript() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    h.receive(ids[0], "/msg BOB  meet me  at noon\n");
    assert_eq!(h.take_text(ids[1]), "<alice> (private) meet me  at noon\n");
    assert_eq!(h.take_text(ids[0]), "");
    assert_eq!(h.take_text(ids[2]), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn msg_to_an_unknown_nick_or_without_text_is_an_error() {
    let (mut h, _, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "/msg dave hi\n");
    assert_eq!(h.take_text(ids[0]), "ERR no such nick: dave\n");
    h.receive(ids[0], "/msg server hi\n");
    assert_eq!(h.take_text(ids[0]), "ERR no such nick: server\n");
    for line in ["/msg\n", "/msg bob\n", "/msg bob   \n"] {
        h.receive(ids[0], line);
        assert_eq!(
            h.take_text(ids[0]),
            "ERR usage: /msg NICK text\n",
            "{line:?}"
        );
    }
    assert_eq!(h.take_text(ids[1]), "");
}

#[test]
fn help_lists_the_commands() {
    let (mut h, _, ids) = room(&["alice"]);
    h.receive(ids[0], "/help\n");
    let help = h.take_text(ids[0]);
    assert_eq!(help, String::from_utf8_lossy(HELP));
    assert!(help.lines().all(|line| line.starts_with("* ")));
    for command in ["/nick", "/who", "/msg", "/help", "bye"] {
        assert!(help.contains(command), "{command}");
    }
}

#[test]
fn an_unknown_command_is_an_error() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], "/dance now\n/\n");
    assert_eq!(
        h.take_text(ids[0]),
        "ERR unknown command /dance (try /help)\nERR unknown command / (try /help)\n"
    );
    assert_eq!(h.take_text(ids[1]), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn control_characters_never_reach_the_others() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let cases: [(&[u8], &str); 6] = [
        (b"\x1b[2J\x1b[31mred\x1b[0m", "[2J[31mred[0m"),
        (b"bell\x07 nul\x00 bs\x08", "bell nul bs"),
        (b"del\x7f", "del"),
        ("c1\u{9b}31m\u{85}".as_bytes(), "c131m"),
        (b"hello\rfake", "hellofake"),
        (b"tab\tstays", "tab\tstays"),
    ];
    for (line, relayed) in cases {
        h.receive(ids[0], [line, b"\n"].concat());
        assert_eq!(h.take_text(ids[1]), format!("<alice> {relayed}\n"));
    }
    transcript.take();
    // Not 0xFF, which starts a telnet command.
    h.receive(ids[0], b"caf\xe9 \xfe!\n");
    assert_eq!(h.take(ids[1]), "<alice> caf\u{fffd} \u{fffd}!\n".as_bytes());
    assert_eq!(transcript.take(), "<alice> caf\u{fffd} \u{fffd}!\n");
}

#[test]
fn a_spoofed_nick_arrives_under_the_true_one() {
    let (mut h, _, ids) = room(&["alice", "bob", "carol"]);
    h.receive(ids[0], "<bob> hi\n* bob left\n");
    assert_eq!(
        h.take_text(ids[2]),
        "<alice> <bob> hi\n<alice> * bob left\n"
    );
}

#[test]
fn a_line_over_the_limit_is_an_error_and_closes() {
    let config = ChatConfig {
        max_line: 8,
        ..ChatConfig::default()
    };
    let (mut h, transcript) = chat_with(config);
    let alice = h.connect();
    let bob = h.connect();
    h.receive(alice, "Hi\n");
    h.receive(bob, "Hi\n");
    h.take(alice);
    h.take(bob);
    transcript.take();

    h.receive(alice, "12345678\r\n");
    assert_eq!(
        h.take_text(bob),
        "<user1> 12345678\n",
        "exactly max_line is fine"
    );
    h.receive(alice, "123456789\n");
    assert_eq!(h.take_text(alice), "ERR line too long (max 8 bytes)\n");
    assert_eq!(h.closed(alice), Some(CloseReason::Requested));
    assert_eq!(h.take_text(bob), "* user1 left\n");
    assert_eq!(
        transcript.take(),
        "<user1> 12345678\n* user1 left (line too long)\n"
    );
}

#[test]
fn a_line_that_never_ends_is_caught_before_its_end() {
    let config = ChatConfig {
        max_line: 8,
        ..ChatConfig::default()
    };
    let (mut h, _) = chat_with(config);
    let id = h.connect();
    h.receive(id, "Hi\n");
    h.take(id);
    h.receive(id, "12345");
    assert_eq!(h.closed(id), None);
    h.receive(id, "6789");
    assert_eq!(h.take_text(id), "ERR line too long (max 8 bytes)\n");
    assert_eq!(h.closed(id), Some(CloseReason::Requested));
}

#[test]
fn the_limit_holds_before_the_greeting_too() {
    let (mut h, _) = chat();
    let id = h.connect();
    h.receive(id, vec![b'x'; 5000]);
    assert_eq!(h.take_text(id), "ERR line too long (max 4096 bytes)\n");
    assert_eq!(h.closed(id), Some(CloseReason::Requested));
}

#[test]
fn a_full_server_refuses_with_the_busy_line() {
    let (h, _) = chat();
    assert_eq!(
        h.handler.refusal(ListenerId::nth(0), Refusal::Full),
        Some(Bytes::from_static(
            b"ERR busy: too many clients, try again later\n"
        ))
    );
    let config = ChatConfig {
        busy_message: "ERR busy: serving another client, try again later".to_string(),
        ..ChatConfig::default()
    };
    let (h, _) = chat_with(config);
    assert_eq!(
        h.handler.refusal(ListenerId::nth(0), Refusal::Full),
        Some(Bytes::from_static(
            b"ERR busy: serving another client, try again later\n"
        ))
    );
}

#[test]
fn an_address_over_its_limit_is_refused_in_the_chats_own_words() {
    // The driver counts addresses (`--max-per-ip` is the loop's
    // `max_per_address`); the chat says which limit it was.
    let (h, _) = chat();
    assert_eq!(
        h.handler.refusal(ListenerId::nth(0), Refusal::FromAddress),
        Some(Bytes::from_static(
            b"ERR busy: too many connections from your address\n"
        ))
    );
}

#[test]
fn a_client_that_does_not_greet_in_time_is_closed() {
    let (mut h, transcript) = chat();
    let slow = h.connect();
    let quick = h.connect();
    h.receive(quick, "Hi\n");
    h.take(quick);
    transcript.take();
    h.advance(Duration::from_millis(9_999));
    assert_eq!(h.closed(slow), None);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take_text(slow), "ERR timeout: say Hi first\n");
    assert_eq!(h.closed(slow), Some(CloseReason::Requested));
    assert_eq!(h.closed(quick), None, "greeting cancelled its timer");
    assert_eq!(h.take_text(quick), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn the_greeting_timeout_is_configurable_and_its_timer_cancelled() {
    let config = ChatConfig {
        greeting_timeout: Duration::from_secs(2),
        ..ChatConfig::default()
    };
    let (mut h, _) = chat_with(config);
    let slow = h.connect();
    let gone = h.connect();
    h.disconnect(gone);
    h.advance(Duration::from_secs(2));
    assert_eq!(h.take_text(slow), "ERR timeout: say Hi first\n");
    assert_eq!(h.take_text(gone), "");
    assert_eq!(h.closed(gone), Some(CloseReason::PeerClosed));
}

/// The nick in `id`'s state, while it is open and has greeted.
fn nick_of(h: &Harness<Chat>, id: ConnId) -> Option<&str> {
    match &h.state(id)?.stage {
        Stage::Joined { nick } => Some(nick),
        Stage::Greeting(_) => None,
    }
}

#[test]
fn a_client_carries_its_own_stage_and_nick_until_it_goes() {
    let (mut h, transcript, ids) = room(&["alice"]);
    let bob = h.connect();
    let Some(Stage::Greeting(greeting)) = h.state(bob).map(|client| &client.stage) else {
        panic!("a new connection is greeting");
    };
    assert!(greeting.deadline.is_some() && greeting.quiet.is_none());
    h.receive(bob, "Hi");
    let Some(Stage::Greeting(greeting)) = h.state(bob).map(|client| &client.stage) else {
        panic!("not greeted before the quiet moment");
    };
    assert_eq!(&greeting.pending[..], b"Hi");
    assert!(greeting.quiet.is_some());
    stay_quiet(&mut h);
    assert_eq!(nick_of(&h, bob), Some("user2"));
    h.receive(bob, "/nick bob\n");
    assert_eq!(nick_of(&h, bob), Some("bob"));
    assert_eq!(nick_of(&h, ids[0]), Some("alice"), "each has its own");
    h.take(bob);
    h.receive(bob, "/who\n");
    assert_eq!(h.take_text(bob), "* 2 online: alice, bob\n");
    h.disconnect(bob);
    assert!(h.state(bob).is_none(), "the state went with the connection");
    assert_eq!(
        transcript.take(),
        "* user2 joined\n* user2 is now bob\n* bob left\n"
    );
}

#[test]
fn a_client_gone_in_the_middle_of_its_greeting_leaves_no_timer_behind() {
    let (mut h, transcript, ids) = room(&["alice"]);
    // Gone while its `Hi` waits for the quiet moment, or before it said
    // anything: neither its quiet timer nor its deadline fires for it.
    let quiet = h.connect();
    h.receive(quiet, "Hi");
    let silent = h.connect();
    h.disconnect(quiet);
    h.disconnect(silent);
    h.advance(Duration::from_secs(11));
    assert_eq!(h.take_text(quiet), "");
    assert_eq!(h.take_text(silent), "");
    assert_eq!(h.take_text(ids[0]), "", "nobody joined or left");
    assert_eq!(transcript.take(), "");
    // The next client is served as usual.
    let next = h.connect();
    h.receive(next, "Hi\n");
    assert!(h.take_text(next).starts_with("Hello\n"));
}

#[test]
fn a_console_line_goes_to_everyone_as_server() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let waiting = h.connect();
    h.post(ConsoleLine("welcome all\r\n".to_string()));
    assert_eq!(h.take_text(ids[0]), "<server> welcome all\n");
    assert_eq!(h.take_text(ids[1]), "<server> welcome all\n");
    assert_eq!(h.take_text(waiting), "");
    assert_eq!(transcript.take(), "<server> welcome all\n");
    h.post(ConsoleLine("  \n".to_string()));
    assert_eq!(h.take_text(ids[0]), "");
    assert_eq!(transcript.take(), "");
}

#[test]
fn console_who_and_help_answer_in_the_transcript() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.post(ConsoleLine("/who".to_string()));
    assert_eq!(transcript.take(), "* 2 online: alice, bob\n");
    h.post(ConsoleLine("/help".to_string()));
    assert_eq!(transcript.take(), String::from_utf8_lossy(CONSOLE_HELP));
    h.post(ConsoleLine("/dance".to_string()));
    assert_eq!(
        transcript.take(),
        "ERR unknown command /dance (try /help)\n"
    );
    assert_eq!(h.take_text(ids[0]), "");

    let (mut h, transcript) = chat();
    h.post(ConsoleLine("/who".to_string()));
    assert_eq!(transcript.take(), "* 0 online\n");
}

#[test]
fn console_kick_closes_the_client_and_tells_the_room_once() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    h.post(ConsoleLine("/kick ALICE".to_string()));
    assert_eq!(h.take_text(ids[0]), "ERR kicked by the operator\n");
    assert_eq!(h.closed(ids[0]), Some(CloseReason::Requested));
    assert_eq!(h.take_text(ids[1]), "* alice was kicked\n");
    assert_eq!(transcript.take(), "* alice was kicked\n");

    h.post(ConsoleLine("/kick alice".to_string()));
    assert_eq!(transcript.take(), "ERR no such nick: alice\n");
    h.post(ConsoleLine("/kick".to_string()));
    assert_eq!(transcript.take(), "ERR usage: /kick NICK\n");
    assert_eq!(h.take_text(ids[1]), "");
}

#[test]
fn console_quit_stops_the_loop() {
    let (mut h, _, _) = room(&["alice"]);
    h.post(ConsoleLine("/quit".to_string()));
    assert!(h.cx.stopped());
}

#[test]
fn stopping_tells_the_room_and_no_one_leaves() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let waiting = h.connect();
    h.stop();
    for &id in &ids {
        assert_eq!(h.take_text(id), "* server shutting down\n");
        assert_eq!(h.closed(id), Some(CloseReason::Shutdown));
    }
    assert_eq!(h.take_text(waiting), "", "not greeted: owed Hello first");
    assert_eq!(h.closed(waiting), Some(CloseReason::Shutdown));
    assert_eq!(transcript.take(), "* server shutting down\n");
}

#[test]
fn a_broken_transcript_does_not_stop_the_chat() {
    struct Broken;
    impl io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    let mut h = Harness::new(Chat::new(ChatConfig::default(), Box::new(Broken)));
    let alice = h.connect();
    let bob = h.connect();
    h.receive(alice, "Hi\n");
    h.receive(bob, "Hi\n");
    h.receive(alice, "still here\n");
    assert!(h.take_text(bob).ends_with("<user1> still here\n"));
}

#[test]
fn the_handler_can_move_to_another_thread_and_stays_small() {
    fn assert_send<T: Send>() {}
    assert_send::<Chat>();
    // Every connection has one, beside it in the driver: keep it small.
    // Its stage is 24 bytes (its greeting's timers, boxed, or a nick);
    // flood control adds one instant, 16 (a token bucket kept as GCRA
    // needs nothing else), and `max_per_ip` the address it counts against.
    assert!(std::mem::size_of::<Client>() <= 64);
}

#[test]
fn the_sample_session_of_protocol_md() {
    let (mut h, transcript) = chat();
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    let alice = h.connect();
    h.receive(alice, "Hi\n/nick alice\n/who\n");
    h.receive(bob, "/nick bob\nhi alice\n");
    h.receive(
        alice,
        "hello bob\n/msg bob \x1b[2Jpsst\n/nick Bob\n/shout hey\n",
    );
    h.post(ConsoleLine("maintenance at noon".to_string()));
    h.receive(alice, "bye\n");
    assert_eq!(
        h.take_text(alice),
        "Hello\n\
         * welcome, you are user2; lines up to 4096 bytes; /help lists commands\n\
         * user2 is now alice\n\
         * 2 online: user1, alice\n\
         * user1 is now bob\n\
         <bob> hi alice\n\
         ERR nick Bob is taken\n\
         ERR unknown command /shout (try /help)\n\
         <server> maintenance at noon\n\
         Bye\n"
    );
    assert!(h.take_text(bob).ends_with(
        "* user2 joined\n\
         * user2 is now alice\n\
         * user1 is now bob\n\
         <alice> hello bob\n\
         <alice> (private) [2Jpsst\n\
         <server> maintenance at noon\n\
         * alice left\n"
    ));
    assert_eq!(
        transcript.take(),
        "* user1 joined\n\
         * user2 joined\n\
         * user2 is now alice\n\
         * user1 is now bob\n\
         <bob> hi alice\n\
         <alice> hello bob\n\
         <server> maintenance at noon\n\
         * alice left\n"
    );
}

/// The config of these tests with flood control off, for the tests of what
/// happens without it.
fn no_flood_control() -> ChatConfig {
    ChatConfig {
        flood_rate: 0,
        ..ChatConfig::default()
    }
}

/// Everything `id` is sent while it reads until the handler has taken all
/// its input; checks at each read that its queue never went far over the
/// high-water mark (by more than `slack` bytes, one answer).
fn read_until_served(h: &mut Harness<Chat>, id: ConnId, slack: usize) -> String {
    let high_water = reactor::Config::default().high_water;
    let mut got = String::new();
    loop {
        let queued = h.queued_output(id);
        assert!(queued <= high_water + slack, "{queued} bytes queued");
        got += &h.take_text(id);
        if h.pending_input(id) == 0 && h.queued_output(id) == 0 {
            return got;
        }
    }
}

#[test]
fn a_backlogged_client_is_read_as_it_reads_with_nothing_lost_or_reordered() {
    let (mut h, _) = chat_with(no_flood_control());
    let alice = h.connect();
    h.receive(alice, "Hi\n/nick alice\n");
    h.take(alice);
    // Each asks for an answer longer than itself: about 130 KiB owed for
    // 80 KiB asked, twice the high-water mark.
    let asked: String = (0..5000).map(|i| format!("/msg alice {i:04}\n")).collect();
    h.receive(alice, &asked);
    assert!(h.pending_input(alice) > 0, "stopped while backlogged");
    let got = read_until_served(&mut h, alice, 100);
    let expected: String = (0..5000)
        .map(|i| format!("<alice> (private) {i:04}\n"))
        .collect();
    assert!(got == expected, "every answer, in order");
    assert_eq!(h.closed(alice), None);
}

#[test]
fn who_pipelined_in_a_big_room_queues_about_the_high_water_mark() {
    // The amplification of issue 9: 64 KiB of `/who` in a room of 1,000 is
    // 13,107 answers of 8.9 KB each, 116 MB owed to one client.
    let (mut h, _) = chat_with(no_flood_control());
    let ids: Vec<ConnId> = (0..1000)
        .map(|_| {
            let id = h.connect();
            h.receive(id, "Hi\n");
            id
        })
        .collect();
    let asker = ids[0];
    h.take(asker);
    h.receive(asker, "/who\n".repeat(64 * 1024 / 5));
    assert_eq!(h.closed(asker), None, "slowed, not cut off");
    let left = h.pending_input(asker);
    assert!(left > 60_000, "the rest waits: {left} bytes");
    let high_water = reactor::Config::default().high_water;
    let answers = h.take_text(asker);
    let one = answers.find('\n').unwrap() + 1;
    assert!(one > 8000, "a long answer: {one} bytes");
    assert!(answers.len() <= high_water + one, "{} bytes", answers.len());
    // The read let as many more through as fit, and so on.
    assert!(h.pending_input(asker) < left);
    let answers = h.take_text(asker);
    assert!(answers.len() > high_water / 2 && answers.len() <= high_water + one);
}

#[test]
fn a_burst_over_the_flood_budget_is_delayed_then_delivered_in_order() {
    // The default budget: a burst of 30 lines, then 5 a second.
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (ids[0], ids[1], ids[2]);
    let said: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
    h.receive(alice, said.join("\n") + "\n");
    let heard = |text: String| -> Vec<String> {
        text.lines()
            .map(|line| line.strip_prefix("<alice> ").unwrap().to_owned())
            .collect()
    };
    // Greeting and nick spent 1 + 3 of the 30: 26 go through at once.
    assert_eq!(heard(h.take_text(bob)), said[..26]);
    h.take(carol);
    assert!(h.pending_input(alice) > 0, "the rest is kept, not dropped");
    // Meanwhile the others are served as ever.
    h.receive(carol, "unaffected\n");
    assert_eq!(h.take_text(bob), "<carol> unaffected\n");
    h.receive(bob, "me too\n");
    assert_eq!(h.take_text(carol), "<bob> me too\n");
    // Then 5 a second.
    h.advance(Duration::from_millis(199));
    assert_eq!(h.take_text(bob), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(heard(h.take_text(bob)), said[26..27]);
    h.advance(Duration::from_secs(3));
    assert_eq!(heard(h.take_text(bob)), said[27..40]);
    assert_eq!(h.pending_input(alice), 0);
    assert_eq!(h.paused_until(alice), None, "no pause when nothing waits");
    let told = transcript.take();
    assert_eq!(
        told.lines().filter(|l| l.starts_with("<alice>")).count(),
        40
    );
}

#[test]
fn bytes_sent_while_paused_wait_behind_the_rest() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 3,
        ..ChatConfig::default()
    });
    let alice = h.connect();
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    h.take(bob);
    h.receive(alice, "Hi\none\ntwo\nthree\n");
    assert_eq!(
        h.take_text(bob),
        "* user2 joined\n<user2> one\n<user2> two\n",
        "the greeting and two lines spent the burst"
    );
    h.receive(alice, "four\n");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take_text(bob), "<user2> three\n<user2> four\n");
}

#[test]
fn greeting_and_blank_lines_count_against_the_flood_budget() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 3,
        ..ChatConfig::default()
    });
    let id = h.connect();
    h.receive(id, "\n \n\r\nHi\n");
    assert_eq!(h.take_text(id), "", "three blank lines spent the burst");
    h.advance(Duration::from_millis(200));
    assert!(h.take_text(id).starts_with("Hello\n"));
}

#[test]
fn a_rename_costs_more_than_a_line() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 5,
        ..ChatConfig::default()
    });
    let alice = h.connect();
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    h.receive(alice, "Hi\n/nick alice\none\ntwo\n");
    h.take(bob);
    h.take(alice);
    // Hi, the rename (3) and `one` spent the 5: `two` waits a line's time.
    h.advance(Duration::from_millis(199));
    assert_eq!(h.take_text(bob), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take_text(bob), "<alice> two\n");
}

#[test]
fn a_long_line_costs_more_than_a_short_one() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 5,
        ..ChatConfig::default()
    });
    let alice = h.connect();
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    let long = "y".repeat(1024);
    h.take(bob);
    h.receive(alice, format!("Hi\n{long}\nshort\n"));
    // Hi (1) and the 1,024-byte line (1 + 2) spent 4 of the 5, and `short`
    // the last. A line is let through once a line's worth is back, and
    // charged what it costs: after a second long line, the next waits three
    // lines' time.
    assert_eq!(h.pending_input(alice), 0);
    assert_eq!(
        h.take_text(bob),
        format!("* user2 joined\n<user2> {long}\n<user2> short\n")
    );
    h.receive(alice, format!("{long}\nafter\n"));
    h.advance(Duration::from_millis(199));
    assert_eq!(h.take_text(bob), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take_text(bob), format!("<user2> {long}\n"));
    h.advance(Duration::from_millis(599));
    assert_eq!(h.take_text(bob), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take_text(bob), "<user2> after\n");
}

#[test]
fn flood_rate_zero_turns_flood_control_off() {
    let (mut h, _) = chat_with(no_flood_control());
    let alice = h.connect();
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    h.take(bob);
    let lines: String = (0..1000).map(|i| format!("{i}\n")).collect();
    h.receive(alice, format!("Hi\n{lines}"));
    let expected: String = (0..1000).map(|i| format!("<user2> {i}\n")).collect();
    assert!(h.take_text(bob).ends_with(&expected), "all at once");
    assert_eq!(h.pending_input(alice), 0);
}

#[test]
fn nick_changes_are_told_to_others_only_up_to_the_announce_limit() {
    let (mut h, transcript) = chat_with(ChatConfig {
        announce_limit: 2,
        ..ChatConfig::default()
    });
    let ids: Vec<ConnId> = (0..3).map(|_| h.connect()).collect();
    for &id in &ids {
        h.receive(id, "Hi\n");
    }
    for &id in &ids {
        h.take(id);
    }
    transcript.take();
    h.receive(ids[0], "/nick alice\n");
    assert_eq!(h.take_text(ids[0]), "* user1 is now alice\n", "the answer");
    assert_eq!(h.take_text(ids[1]), "", "three in the room: not told");
    assert_eq!(transcript.take(), "* user1 is now alice\n");
    h.receive(ids[2], "bye\n");
    transcript.take();
    h.receive(ids[1], "/nick bob\n");
    assert_eq!(h.take_text(ids[0]), "* user2 is now bob\n", "two: told");
    assert_eq!(transcript.take(), "* user2 is now bob\n");
}

/// What telnet sends after Ctrl-C: `IAC IP` (interrupt process), then
/// `IAC DO TIMING-MARK`, whose answer it waits for.
const TELNET_CTRL_C: &[u8] = b"\xff\xf4\xff\xfd\x06";
/// The answer: `IAC WILL TIMING-MARK`.
const WILL_TIMING_MARK: &[u8] = b"\xff\xfb\x06";

#[test]
fn telnet_commands_are_answered_and_never_relayed() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let [alice, bob] = ids[..] else {
        unreachable!()
    };
    h.receive(alice, [TELNET_CTRL_C, b"after ctrl-c\r\n"].concat());
    assert_eq!(h.take(alice), WILL_TIMING_MARK);
    assert_eq!(h.take_text(bob), "<alice> after ctrl-c\n");
    assert_eq!(transcript.take(), "<alice> after ctrl-c\n");
    // telnet goes on as before.
    h.receive(bob, "still there?\n");
    assert_eq!(h.take_text(alice), "<bob> still there?\n");
}

#[test]
fn a_telnet_command_may_be_cut_by_reads_anywhere_in_a_line() {
    let (mut h, _, ids) = room(&["alice", "bob"]);
    let [alice, bob] = ids[..] else {
        unreachable!()
    };
    h.receive(alice, b"hel\xff");
    h.receive(alice, b"\xfd");
    assert_eq!(h.take(alice), b"", "not answered before it is whole");
    h.receive(alice, b"\x06lo\xff\xfa\x18xt");
    assert_eq!(h.take(alice), WILL_TIMING_MARK);
    h.receive(alice, b"erm\xff");
    h.receive(alice, b"\xf0 world\n");
    assert_eq!(h.take(alice), b"", "answered once");
    assert_eq!(h.take_text(bob), "<alice> hello world\n");
}

#[test]
fn telnet_options_are_refused_before_the_greeting_too() {
    let (mut h, _) = chat();
    let id = h.connect();
    // DO ECHO, WILL NAWS, then the greeting.
    h.receive(id, b"\xff\xfd\x01\xff\xfb\x1fHi\r\n");
    let reply = h.take(id);
    let (refusals, rest) = reply.split_at(6);
    assert_eq!(
        refusals, b"\xff\xfc\x01\xff\xfe\x1f",
        "WONT ECHO, DONT NAWS"
    );
    assert!(rest.starts_with(b"Hello\n"), "{rest:?}");
}

#[test]
fn iac_iac_is_a_byte_0xff_and_shows_as_one() {
    let (mut h, _, ids) = room(&["alice", "bob"]);
    h.receive(ids[0], b"caf\xff\xff\n");
    assert_eq!(h.take_text(ids[1]), "<alice> caf\u{fffd}\n");
}

#[test]
fn an_escaped_0xff_held_back_by_flood_control_is_still_data() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 2,
        ..ChatConfig::default()
    });
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    let alice = h.connect();
    // The greeting and one line spend the burst: the last line waits,
    // stripped, and is stripped again when the pause ends.
    h.receive(alice, b"Hi\none\na\xff\xffb\n");
    h.take(bob);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take_text(bob), "<user2> a\u{fffd}b\n");
}

#[test]
fn an_unfinished_telnet_command_does_not_count_towards_the_line_length() {
    let (mut h, _) = chat_with(ChatConfig {
        max_line: 4,
        ..ChatConfig::default()
    });
    let bob = h.connect();
    h.receive(bob, "Hi\n");
    let alice = h.connect();
    h.receive(alice, b"Hi\nabcd\xff\xfa\xff");
    h.receive(alice, b"\xf0\n");
    assert_eq!(h.closed(alice), None);
    assert!(h.take_text(bob).ends_with("<user2> abcd\n"));
}

// Rooms.

/// Sends `line` from `id`, and returns what `id` is sent back.
fn ask(h: &mut Harness<Chat>, id: ConnId, line: &str) -> String {
    h.receive(id, format!("{line}\n"));
    h.take_text(id)
}

/// A chat with `config` and `n` clients that greeted, `user1` to `user<n>`,
/// with every output and the transcript taken.
fn greeted(config: ChatConfig, n: usize) -> (Harness<Chat>, Transcript, Vec<ConnId>) {
    let (mut h, transcript) = chat_with(config);
    let ids: Vec<ConnId> = (0..n).map(|_| h.connect()).collect();
    for &id in &ids {
        h.receive(id, "Hi\n");
    }
    for &id in &ids {
        h.take(id);
    }
    transcript.take();
    (h, transcript, ids)
}

/// Moves each of `movers` to `room` with `/join`, and takes what each of
/// `everyone` was sent, and the transcript.
fn move_to(
    h: &mut Harness<Chat>,
    transcript: &Transcript,
    everyone: &[ConnId],
    movers: &[ConnId],
    room: &str,
) {
    for &id in movers {
        h.receive(id, format!("/join {room}\n"));
    }
    for &id in everyone {
        h.take(id);
    }
    transcript.take();
}

#[test]
fn a_join_is_a_leave_in_the_old_room_and_a_join_in_the_new() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    let [alice, bob, carol] = ids[..] else {
        unreachable!()
    };
    assert_eq!(
        ask(&mut h, alice, "/join #rust"),
        "* you are now in #rust\n"
    );
    assert_eq!(h.take_text(bob), "* alice left\n");
    assert_eq!(h.take_text(carol), "* alice left\n");
    assert_eq!(transcript.take(), "* alice left\n#rust * alice joined\n");

    assert_eq!(ask(&mut h, bob, "/join #rust"), "* you are now in #rust\n");
    assert_eq!(h.take_text(alice), "* bob joined\n");
    assert_eq!(h.take_text(carol), "* bob left\n");
    assert_eq!(transcript.take(), "* bob left\n#rust * bob joined\n");

    // Back to the lobby: the same two notices, the other way round.
    assert_eq!(
        ask(&mut h, alice, "/join #lobby"),
        "* you are now in #lobby\n"
    );
    assert_eq!(h.take_text(bob), "* alice left\n");
    assert_eq!(h.take_text(carol), "* alice joined\n");
    assert_eq!(transcript.take(), "#rust * alice left\n* alice joined\n");
}

#[test]
fn messages_nick_changes_and_leaves_stay_in_their_room() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    let [alice, bob, carol] = ids[..] else {
        unreachable!()
    };
    move_to(&mut h, &transcript, &ids, &[alice, bob], "#rust");
    h.receive(alice, "hi rust\n");
    h.receive(carol, "hi lobby\n");
    assert_eq!(h.take_text(bob), "<alice> hi rust\n");
    assert_eq!(h.take_text(alice), "");
    assert_eq!(h.take_text(carol), "");
    assert_eq!(
        transcript.take(),
        "#rust <alice> hi rust\n<carol> hi lobby\n"
    );

    h.receive(bob, "/nick bobby\n");
    assert_eq!(h.take_text(alice), "* bob is now bobby\n");
    assert_eq!(h.take_text(bob), "* bob is now bobby\n");
    assert_eq!(h.take_text(carol), "");
    h.receive(bob, "bye\n");
    assert_eq!(h.take_text(alice), "* bobby left\n");
    assert_eq!(h.take_text(carol), "");
    assert_eq!(
        transcript.take(),
        "#rust * bob is now bobby\n#rust * bobby left\n"
    );
}

#[test]
fn msg_reaches_a_nick_in_any_room() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    move_to(&mut h, &transcript, &ids, &ids[..1], "#rust");
    h.receive(ids[1], "/msg ALICE psst\n");
    assert_eq!(h.take_text(ids[0]), "<bob> (private) psst\n");
    h.receive(ids[0], "/msg bob back\n");
    assert_eq!(h.take_text(ids[1]), "<alice> (private) back\n");
    assert_eq!(transcript.take(), "");
}

#[test]
fn who_lists_the_askers_room_only() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    move_to(&mut h, &transcript, &ids, &ids[1..], "#Rust");
    assert_eq!(ask(&mut h, ids[0], "/who"), "* 1 online: alice\n");
    assert_eq!(
        ask(&mut h, ids[2], "/who"),
        "* 2 online in #Rust: bob, carol\n"
    );
    assert_eq!(transcript.take(), "");
}

#[test]
fn rooms_lists_every_room_the_lobby_first_with_its_count() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol", "dave"]);
    assert_eq!(ask(&mut h, ids[0], "/rooms"), "* 1 room: #lobby (4)\n");
    move_to(&mut h, &transcript, &ids, &ids[1..3], "#rust");
    move_to(&mut h, &transcript, &ids, &ids[3..], "#Go");
    move_to(&mut h, &transcript, &ids, &ids[..1], "#ada");
    h.receive(ids[0], "/ROOMS\n");
    assert_eq!(
        h.take_text(ids[0]),
        "* 4 rooms: #lobby (0), #ada (1), #Go (1), #rust (2)\n",
        "the lobby is there even empty; the others by name, ignoring case"
    );
    assert_eq!(transcript.take(), "");
}

#[test]
fn a_room_that_empties_is_gone_and_made_anew_by_the_next_to_join() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    move_to(&mut h, &transcript, &ids, &ids[..1], "#Rust");
    h.receive(ids[0], "bye\n");
    assert_eq!(transcript.take(), "#Rust * alice left\n");
    assert_eq!(ask(&mut h, ids[1], "/rooms"), "* 1 room: #lobby (1)\n");
    // Spelled as its new maker spells it.
    assert_eq!(
        ask(&mut h, ids[1], "/join #rust"),
        "* you are now in #rust\n"
    );
    // The same when its last one moves out, or is cut off.
    h.receive(ids[1], "/join #go\n/rooms\n");
    assert_eq!(
        h.take_text(ids[1]),
        "* you are now in #go\n* 2 rooms: #lobby (0), #go (1)\n"
    );
    h.disconnect(ids[1]);
    assert_eq!(
        transcript.take(),
        "* bob left\n#rust * bob joined\n#rust * bob left\n#go * bob joined\n#go * bob left\n"
    );
    h.post(ConsoleLine("/rooms".to_string()));
    assert_eq!(transcript.take(), "* 1 room: #lobby (0)\n");
}

#[test]
fn room_names_follow_one_rule_and_ignore_case() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    let rule = "ERR a room name is # and 1-32 letters, digits, _ or -\n";
    let long = format!("#{}", "r".repeat(33));
    for bad in ["rust", "#", "#ru st", "#rüst", "#a.b", "##", &long] {
        h.receive(ids[0], format!("/join {bad}\n"));
        assert_eq!(h.take_text(ids[0]), rule, "{bad:?}");
    }
    assert_eq!(ask(&mut h, ids[0], "/join"), "ERR usage: /join #NAME\n");
    assert_eq!(
        ask(&mut h, ids[0], "/join #LOBBY"),
        "ERR you are in #lobby already\n"
    );
    assert_eq!(h.take_text(ids[1]), "", "nobody moved");

    let longest = format!("#{}", "r".repeat(32));
    h.receive(ids[0], format!("/join {longest}\n/join #Rust\n"));
    h.take(ids[0]);
    h.take(ids[1]);
    assert_eq!(
        ask(&mut h, ids[1], "/join #RUST"),
        "* you are now in #Rust\n"
    );
    assert_eq!(
        ask(&mut h, ids[1], "/join #rust"),
        "ERR you are in #Rust already\n"
    );
    assert_eq!(
        ask(&mut h, ids[1], "/rooms"),
        "* 2 rooms: #lobby (0), #Rust (2)\n"
    );
    transcript.take();
}

#[test]
fn a_new_room_past_the_limit_is_refused_in_one_line() {
    let config = ChatConfig {
        max_rooms: 2,
        ..ChatConfig::default()
    };
    let (mut h, transcript, ids) = greeted(config, 3);
    assert_eq!(ask(&mut h, ids[0], "/join #a"), "* you are now in #a\n");
    h.take(ids[1]);
    h.receive(ids[1], "/join #b\n");
    assert_eq!(
        h.take_text(ids[1]),
        "ERR too many rooms (max 2); /rooms lists them\n"
    );
    // A room that is there takes anyone.
    assert_eq!(ask(&mut h, ids[1], "/join #A"), "* you are now in #a\n");
    // The last one in a room may leave it for a new one: they are no more.
    h.receive(ids[1], "/join #lobby\n");
    h.receive(ids[0], "/join #b\n");
    assert!(h.take_text(ids[0]).ends_with("* you are now in #b\n"));
    h.receive(ids[2], "/join #c\n");
    assert!(h
        .take_text(ids[2])
        .ends_with("ERR too many rooms (max 2); /rooms lists them\n"));
    transcript.take();
}

#[test]
fn joins_and_leaves_are_told_by_the_size_of_each_room() {
    let config = ChatConfig {
        announce_limit: 2,
        ..ChatConfig::default()
    };
    let (mut h, transcript, ids) = greeted(config, 3);
    // The lobby had three with the one who goes: not told. #rust has one.
    h.receive(ids[0], "/join #rust\n");
    assert_eq!(h.take_text(ids[1]), "");
    h.take(ids[0]);
    // Now it has two with the one who goes, and #rust two with the one who comes.
    h.receive(ids[1], "/join #rust\n");
    assert_eq!(h.take_text(ids[2]), "* user2 left\n");
    assert_eq!(h.take_text(ids[0]), "* user2 joined\n");
    assert_eq!(
        transcript.take(),
        "* user1 left\n#rust * user1 joined\n* user2 left\n#rust * user2 joined\n",
        "the transcript has them all"
    );
}

#[test]
fn a_move_costs_as_much_as_a_rename() {
    let (mut h, _) = chat_with(ChatConfig {
        flood_burst: 5,
        ..ChatConfig::default()
    });
    let alice = h.connect();
    let bob = h.connect();
    h.receive(bob, "Hi\n/join #rust\n");
    h.receive(alice, "Hi\n/join #rust\none\ntwo\n");
    h.take(alice);
    // Hi, the move (3) and `one` spent the 5: `two` waits a line's time.
    assert!(h.take_text(bob).ends_with("* user2 joined\n<user2> one\n"));
    h.advance(Duration::from_millis(199));
    assert_eq!(h.take_text(bob), "");
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take_text(bob), "<user2> two\n");
}

#[test]
fn help_lists_join_and_rooms() {
    let (mut h, transcript, ids) = room(&["alice"]);
    h.receive(ids[0], "/help\n");
    let help = h.take_text(ids[0]);
    assert!(help.contains("* /join #ROOM "), "{help}");
    assert!(help.contains("* /rooms "), "{help}");
    h.post(ConsoleLine("/help".to_string()));
    let help = transcript.take();
    for command in ["/join #ROOM", "/rooms", "/who", "/kick NICK"] {
        assert!(help.contains(command), "{command}: {help}");
    }
}

#[test]
fn the_console_joins_rooms_and_speaks_in_its_own() {
    let (mut h, transcript, ids) = room(&["alice", "bob"]);
    move_to(&mut h, &transcript, &ids, &ids[..1], "#Rust");
    h.post(ConsoleLine("/join #rust".to_string()));
    assert_eq!(transcript.take(), "* you are now in #Rust\n");
    h.post(ConsoleLine("hello rust".to_string()));
    assert_eq!(h.take_text(ids[0]), "<server> hello rust\n");
    assert_eq!(h.take_text(ids[1]), "", "not in the lobby");
    assert_eq!(transcript.take(), "#Rust <server> hello rust\n");
    h.post(ConsoleLine("/join #RUST".to_string()));
    assert_eq!(transcript.take(), "ERR you are in #Rust already\n");
    h.post(ConsoleLine("/join rust".to_string()));
    assert_eq!(
        transcript.take(),
        "ERR a room name is # and 1-32 letters, digits, _ or -\n"
    );

    // A room nobody is in: the console makes none, and only the transcript
    // hears it there, until someone comes.
    h.post(ConsoleLine("/join #empty".to_string()));
    h.post(ConsoleLine("anyone?".to_string()));
    assert_eq!(
        transcript.take(),
        "* you are now in #empty\n#empty <server> anyone?\n"
    );
    h.post(ConsoleLine("/rooms".to_string()));
    assert_eq!(transcript.take(), "* 2 rooms: #lobby (1), #Rust (1)\n");
    h.receive(ids[1], "/join #empty\n");
    h.post(ConsoleLine("welcome".to_string()));
    assert_eq!(
        h.take_text(ids[1]),
        "* you are now in #empty\n<server> welcome\n"
    );
    assert_eq!(h.take_text(ids[0]), "");
}

#[test]
fn the_consoles_who_lists_every_room_and_kick_reaches_any() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol", "dave"]);
    move_to(&mut h, &transcript, &ids, &ids[1..3], "#rust");
    h.post(ConsoleLine("/who".to_string()));
    assert_eq!(
        transcript.take(),
        "* 2 online: alice, dave\n* 2 online in #rust: bob, carol\n"
    );
    h.post(ConsoleLine("/kick CAROL".to_string()));
    assert_eq!(h.take_text(ids[2]), "ERR kicked by the operator\n");
    assert_eq!(h.closed(ids[2]), Some(CloseReason::Requested));
    assert_eq!(h.take_text(ids[1]), "* carol was kicked\n");
    assert_eq!(h.take_text(ids[0]), "", "not in #rust");
    assert_eq!(transcript.take(), "#rust * carol was kicked\n");

    // An empty lobby has no line of its own.
    move_to(&mut h, &transcript, &ids, &[ids[0], ids[3]], "#rust");
    h.post(ConsoleLine("/who".to_string()));
    assert_eq!(transcript.take(), "* 3 online in #rust: bob, alice, dave\n");
}

#[test]
fn the_shutdown_notice_reaches_every_room_once() {
    let (mut h, transcript, ids) = room(&["alice", "bob", "carol"]);
    move_to(&mut h, &transcript, &ids, &ids[1..2], "#rust");
    move_to(&mut h, &transcript, &ids, &ids[2..], "#go");
    h.stop();
    for &id in &ids {
        assert_eq!(h.take_text(id), "* server shutting down\n");
        assert_eq!(h.closed(id), Some(CloseReason::Shutdown));
    }
    assert_eq!(transcript.take(), "* server shutting down\n");
}
