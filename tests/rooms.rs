//! Rooms on the chat servers, from the outside: clients moving between
//! rooms over real sockets, the console joining one, and the transcript
//! saying which room each line was said in.

mod common;

use common::{ChatClient, Server};

const SERVER2: &str = env!("CARGO_BIN_EXE_server2");
const SERVER3: &str = env!("CARGO_BIN_EXE_server3");

/// Asks `client` for `/who` and checks the answer: once it comes, the
/// server has handled everything `client` sent before it.
fn expect_who(client: &mut ChatClient, who: &str) {
    client.send("/who");
    client.expect_line(who);
}

#[test]
fn server3_keeps_two_rooms_apart_and_its_console_speaks_in_one() {
    let mut server = Server::start(SERVER3, &[]);
    let (mut a, _) = ChatClient::join(server.addr());
    let (mut b, _) = ChatClient::join(server.addr());
    a.expect_line("* user2 joined");
    let (mut c, _) = ChatClient::join(server.addr());
    a.expect_line("* user3 joined");
    b.expect_line("* user3 joined");

    b.send("/join #rust");
    b.expect_line("* you are now in #rust");
    a.expect_line("* user2 left");
    c.expect_line("* user2 left");
    c.send("/join #RUST");
    c.expect_line("* you are now in #rust");
    a.expect_line("* user3 left");
    b.expect_line("* user3 joined");

    b.send("hi rust");
    c.expect_line("<user2> hi rust");
    a.send("hi lobby");
    expect_who(&mut a, "* 1 online: user1");
    // c's next line is its answer: the lobby's message never reached it.
    expect_who(&mut c, "* 2 online in #rust: user2, user3");
    a.send("/rooms");
    a.expect_line("* 2 rooms: #lobby (1), #rust (2)");
    a.send("/msg user3 psst");
    c.expect_line("<user1> (private) psst");

    server.console("/join #Rust");
    server.console("hello rust");
    b.expect_line("<server> hello rust");
    c.expect_line("<server> hello rust");
    server.console("/who");
    for line in [
        "* user1 joined",
        "* user2 joined",
        "* user3 joined",
        "* user2 left",
        "#rust * user2 joined",
        "* user3 left",
        "#rust * user3 joined",
        "#rust <user2> hi rust",
        "<user1> hi lobby",
        "* you are now in #rust",
        "#rust <server> hello rust",
        "* 1 online: user1",
        "* 2 online in #rust: user2, user3",
    ] {
        server.expect_transcript(line);
    }

    server.sigterm();
    for client in [&mut a, &mut b, &mut c] {
        client.expect_line("* server shutting down");
        client.expect_eof();
    }
    server.expect_transcript("* server shutting down");
    server.expect_exit_success();
}

#[test]
fn server2_moves_a_client_to_a_room_that_goes_when_it_leaves() {
    let server = Server::start(SERVER2, &[]);
    let (mut a, _) = ChatClient::join(server.addr());
    let (mut b, _) = ChatClient::join(server.addr());
    a.expect_line("* user2 joined");

    b.send("/join #go");
    b.expect_line("* you are now in #go");
    a.expect_line("* user2 left");
    b.send("alone here");
    a.send("/rooms");
    a.expect_line("* 2 rooms: #lobby (1), #go (1)");
    // Back to the lobby: #go, emptied, is gone.
    b.send("/join #lobby");
    b.expect_line("* you are now in #lobby");
    a.expect_line("* user2 joined");
    a.send("/rooms");
    a.expect_line("* 1 room: #lobby (2)");
    for line in [
        "* user1 joined",
        "* user2 joined",
        "* user2 left",
        "#go * user2 joined",
        "#go <user2> alone here",
        "#go * user2 left",
        "* user2 joined",
    ] {
        server.expect_transcript(line);
    }
}
