//! Property tests: the line framer, the echo and chat handlers and the
//! calculator, each on thousands of generated inputs, through public APIs
//! only. The properties themselves are in `checks/`, shared with the fuzz
//! targets in `fuzz/`; this file says how to generate inputs for them.
//!
//! A failure prints the smallest input proptest could shrink it to: turn
//! it into an ordinary `#[test]` (or a unit test beside the code) to keep it.

mod checks;

use chatapp::calc::{evaluate, CalcError};
use checks::{check_chat, check_echo, check_framer, ChatOp, CHAT_MAX_LINE};
use proptest::prelude::*;

/// Bytes that are mostly what line framing cares about.
fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'\n'),
        2 => Just(b'\r'),
        6 => Just(b'a'),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..120)
}

/// Offsets to cut a stream at: up to a dozen reads.
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..130usize, 0..12)
}

/// Bytes that often spell `bye` in some case, with whitespace around.
fn bye_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => Just(&b"bye"[..]),
        1 => Just(&b"BYE"[..]),
        1 => Just(&b"bYe"[..]),
        1 => Just(&b"by"[..]),
        1 => Just(&b"e"[..]),
        3 => Just(&b" "[..]),
        1 => Just(&b"\t"[..]),
        2 => Just(&b"\r"[..]),
        4 => Just(&b"\n"[..]),
        2 => Just(&b"x"[..]),
        1 => Just(&b"\xff\x00"[..]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// A nick to use in commands: valid, taken by default, reserved or invalid.
fn nick() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "alice",
        "ALICE",
        "bob",
        "user1",
        "user2",
        "server",
        "al ice",
        "<bob>",
        "",
        "abcdefghijklmnopqrstuvwxyz0123456",
    ])
}

/// A line a client might send: the protocol's commands, hostile text, and
/// raw bytes; most of them whole lines, some not.
fn chat_line() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        3 => Just("Hi".to_owned()),
        1 => Just(" hI \r".to_owned()),
        1 => Just("bye".to_owned()),
        2 => nick().prop_map(|n| format!("/nick {n}")),
        1 => Just("/who".to_owned()),
        2 => (nick(), "[a-z ]{0,8}").prop_map(|(n, t)| format!("/msg {n} {t}")),
        1 => Just("/help".to_owned()),
        1 => Just("/dance".to_owned()),
        1 => Just("<bob> I am bob".to_owned()),
        1 => Just("* bob left".to_owned()),
        1 => Just("\x1b[2J\x1b[31mred\rfake\x00".to_owned()),
        4 => "[a-z ]{0,20}",
    ]
    .prop_map(String::into_bytes);
    let raw = prop::collection::vec(any::<u8>(), 0..40);
    let too_long = prop_oneof![Just(b'a'), Just(0xff)]
        .prop_map(|b| vec![b; CHAT_MAX_LINE + 1 + usize::from(b)]);
    prop_oneof![
        8 => text.prop_map(|t| [t, b"\n".to_vec()].concat()),
        2 => raw.clone().prop_map(|r| [r, b"\n".to_vec()].concat()),
        // Invalid UTF-8, up to the longest line allowed.
        1 => (1..=CHAT_MAX_LINE).prop_map(|n| [vec![0xff; n], b"\n".to_vec()].concat()),
        1 => raw,
        1 => too_long,
    ]
}

/// A console line: the operator's commands, and text.
fn console_line() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[a-z ]{0,12}",
        1 => Just("/who".to_owned()),
        2 => nick().prop_map(|n| format!("/kick {n}")),
        1 => Just("/help".to_owned()),
        1 => Just("/shout".to_owned()),
        1 => Just("\x1b[1mbold\x07\r\n".to_owned()),
    ]
}

fn chat_op() -> impl Strategy<Value = ChatOp> {
    prop_oneof![
        3 => Just(ChatOp::Connect),
        12 => (any::<usize>(), chat_line()).prop_map(|(n, line)| ChatOp::Send(n, line)),
        1 => any::<usize>().prop_map(ChatOp::Disconnect),
        // Up to 12 s: past the 10 s greeting deadline, sometimes.
        1 => (0..12_000u64).prop_map(ChatOp::Advance),
        1 => console_line().prop_map(ChatOp::Console),
        // Rare, as it ends the run.
        1 => prop::bool::weighted(0.1).prop_map(|quit| {
            ChatOp::Console(if quit { "/quit" } else { "/who" }.to_owned())
        }),
    ]
}

/// An arithmetic expression over small integers, as a tree.
#[derive(Clone, Debug)]
enum Expr {
    Num(u32),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = (0..=12u32).prop_map(Expr::Num);
    leaf.prop_recursive(6, 40, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            (
                prop::sample::select(vec!['+', '-', '*', '/', '%', '^']),
                inner.clone(),
                inner,
            )
                .prop_map(|(op, a, b)| Expr::Bin(op, Box::new(a), Box::new(b))),
        ]
    })
}

impl Expr {
    /// How tightly it binds, as `evaluate`'s grammar has it: sums, products,
    /// signs, powers, numbers.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Bin('+' | '-', ..) => 1,
            Expr::Bin('*' | '/' | '%', ..) => 2,
            Expr::Neg(_) => 3,
            Expr::Bin(..) => 4,
            Expr::Num(_) => 5,
        }
    }

    /// Written out with only the parentheses the grammar needs, so that
    /// precedence and associativity are what is tested.
    fn render(&self) -> String {
        let wrap = |e: &Expr, needs: bool| {
            if needs {
                format!("({})", e.render())
            } else {
                e.render()
            }
        };
        match self {
            Expr::Num(n) => n.to_string(),
            // A sign applies to a sign or a power: `--2`, `-2^2`.
            Expr::Neg(e) => format!("-{}", wrap(e, e.precedence() < 3)),
            // The base is a number or in parentheses; the exponent, a sign,
            // a power or a number: `2^-1`, `2^3^2`.
            Expr::Bin('^', a, b) => format!(
                "{}^{}",
                wrap(a, a.precedence() < 5),
                wrap(b, b.precedence() < 3)
            ),
            // Left-associative: the right operand of the same precedence
            // needs parentheses, `1 - (2 - 3)`.
            Expr::Bin(op, a, b) => {
                let p = self.precedence();
                format!(
                    "{} {op} {}",
                    wrap(a, a.precedence() < p),
                    wrap(b, b.precedence() <= p)
                )
            }
        }
    }

    /// The value, worked out directly on the tree, left operand first.
    fn value(&self) -> Result<f64, CalcError> {
        let value = match self {
            Expr::Num(n) => f64::from(*n),
            Expr::Neg(e) => -e.value()?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.value()?, b.value()?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    '/' | '%' if b == 0.0 => return Err(CalcError::DivisionByZero),
                    '/' => a / b,
                    '%' => a % b,
                    '^' if a == 0.0 && b < 0.0 => return Err(CalcError::DivisionByZero),
                    _ => a.powf(b),
                }
            }
        };
        if value.is_nan() {
            Err(CalcError::NotReal)
        } else if value.is_infinite() {
            Err(CalcError::Overflow)
        } else {
            Ok(value)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn framing_does_not_depend_on_how_the_bytes_arrive(
        data in line_bytes(),
        cuts in cuts(),
        max in 0..10usize,
    ) {
        check_framer(&data, &cuts, max);
    }

    #[test]
    fn echo_does_not_depend_on_how_the_bytes_arrive(
        data in bye_bytes(),
        cuts in cuts(),
        raw in any::<bool>(),
    ) {
        check_echo(&data, &cuts, raw);
    }

    #[test]
    fn raw_echo_returns_any_bytes_and_never_closes(
        data in prop::collection::vec(any::<u8>(), 0..200),
        cuts in cuts(),
    ) {
        check_echo(&data, &cuts, true);
    }

    #[test]
    fn evaluate_never_panics_on_any_text(text in any::<String>()) {
        let _ = evaluate(&text);
    }

    #[test]
    fn evaluate_never_panics_on_calculator_text(text in "[0-9.+*/%^() -]{0,200}") {
        let _ = evaluate(&text);
    }

    #[test]
    fn evaluate_never_panics_however_deep(
        piece in prop::sample::select(vec!["(", "-", "+", "2^", "(-", "((1)", "2^(", "-("]),
        times in 0..5_000usize,
    ) {
        let _ = evaluate(&piece.repeat(times));
    }

    #[test]
    fn evaluate_agrees_with_the_tree(e in expr()) {
        let text = e.render();
        match (evaluate(&text), e.value()) {
            (Ok(got), Ok(want)) => prop_assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{text} = {got}, expected {want}"
            ),
            (got, want) => prop_assert_eq!(got, want, "{}", text),
        }
    }
}

/// A case proptest found: a telnet `IAC DO` before the greeting, which the
/// chat answers with `IAC WONT` — protocol, not text the checks refuse.
#[test]
fn the_chat_keeps_its_promises_to_a_telnet_client() {
    check_chat(&[ChatOp::Connect, ChatOp::Send(0, vec![0xFF, 0xFD, b'\n'])]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_chat_keeps_its_promises(ops in prop::collection::vec(chat_op(), 0..60)) {
        check_chat(&ops);
    }
}
