//! The netchat applications, written as handlers for the `reactor` crate:
//! [`echo`] (server4), [`chat`] (server1–3) and [`calc`] (the worked example
//! of docs/extending.md). Each is tested through `reactor::testing` with no
//! socket. [`cli`] holds the plumbing every server binary shares,
//! [`console`] the operator's stdin and the transcript, and [`client`] the
//! client's session. [`telnet`] takes telnet's commands out of the chat's
//! input; lines are framed by `reactor::Input::next_line`. [`web`] serves a
//! line handler to browsers too, over HTTP and WebSocket.

pub mod calc;
pub mod chat;
pub mod cli;
pub mod client;
pub mod console;
pub mod echo;
pub mod telnet;
pub mod tls;
pub mod web;
