//! The expression evaluator, in three small steps: [`tokenize`] the text,
//! parse the tokens by recursive descent into a postfix program, and [`run`]
//! that program on a stack.
//!
//! Parsing to a program first, rather than computing while parsing, means a
//! line is checked as a whole before any arithmetic happens: `1/0 +` is
//! reported as a missing operand, not as a division by zero. And since the
//! program is run by a loop, not by recursion, only the parser needs a depth
//! bound.

use std::fmt;

/// How deeply parentheses, signs and exponents may nest inside each other.
/// Each level costs the parser a few stack frames; without a bound, a line
/// of a million `(` would overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Why an expression has no value. Columns count characters from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalcError {
    /// Nothing but whitespace.
    Empty,
    /// A character that starts no token (`2 x 3`, or a second `.` in a number).
    Unexpected {
        /// The character.
        ch: char,
        /// Where it is.
        column: usize,
    },
    /// A `(` that is never closed.
    Unclosed {
        /// Where the `(` is.
        column: usize,
    },
    /// A `)` with no `(` before it.
    Unopened {
        /// Where the `)` is.
        column: usize,
    },
    /// `()`, with nothing inside.
    EmptyParens {
        /// Where the `(` is.
        column: usize,
    },
    /// The expression ends where an operand should be: `1 +`, `2 * (`.
    MissingOperandAfter {
        /// The last symbol of the line.
        symbol: char,
        /// Where it is.
        column: usize,
    },
    /// A symbol stands where an operand should be: `* 2`, `1 + * 2`, `(1 + )`.
    MissingOperandBefore {
        /// The symbol.
        symbol: char,
        /// Where it is.
        column: usize,
    },
    /// Two operands in a row: `2 3`, `2 (3)`.
    MissingOperator {
        /// Where the second operand starts.
        column: usize,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// `/` or `%` by zero, or zero to a negative power.
    DivisionByZero,
    /// A result (or a number as written) too large for an `f64`.
    Overflow,
    /// A result that is not a real number: `(-8)^0.5`.
    NotReal,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CalcError::Empty => f.write_str("empty expression"),
            CalcError::Unexpected { ch, column } => {
                // escape_debug keeps a control character from reaching the peer raw.
                write!(f, "unexpected '{}' at column {column}", ch.escape_debug())
            }
            CalcError::Unclosed { column } => {
                write!(
                    f,
                    "unbalanced parentheses: '(' at column {column} is not closed"
                )
            }
            CalcError::Unopened { column } => {
                write!(
                    f,
                    "unbalanced parentheses: ')' at column {column} has no '('"
                )
            }
            CalcError::EmptyParens { column } => write!(f, "empty parentheses at column {column}"),
            CalcError::MissingOperandAfter { symbol, column } => {
                write!(f, "missing operand after '{symbol}' at column {column}")
            }
            CalcError::MissingOperandBefore { symbol, column } => {
                write!(f, "missing operand before '{symbol}' at column {column}")
            }
            CalcError::MissingOperator { column } => {
                write!(f, "missing operator at column {column}")
            }
            CalcError::TooDeep => f.write_str("expression too deeply nested"),
            CalcError::DivisionByZero => f.write_str("division by zero"),
            CalcError::Overflow => f.write_str("overflow"),
            CalcError::NotReal => f.write_str("result is not a real number"),
        }
    }
}

impl std::error::Error for CalcError {}

/// Evaluates an arithmetic expression in `f64`.
///
/// The grammar, loosest-binding first:
///
/// ```text
/// sum     = product (("+" | "-") product)*         left-associative
/// product = unary (("*" | "/" | "%") unary)*       left-associative
/// unary   = ("-" | "+") unary | power
/// power   = primary ("^" unary)?                   right-associative
/// primary = number | "(" sum ")"
/// number  = digits and at most one ".", at least one digit: 2, 2.5, .5, 2.
/// ```
///
/// `^` takes its exponent through `unary`, so it is right-associative
/// (`2^3^2` is `2^9`) and its exponent may have a sign (`2^-1`); and a sign
/// applies to a whole power (`-2^2` is `-(2^2)`, as in mathematics). `%` is
/// the remainder of truncated division, with the sign of its left operand
/// (`-7 % 3` is `-1`). Whitespace may go anywhere except inside a number;
/// there is no exponent notation (`1e3`) and no implicit multiplication
/// (`2(3)`).
///
/// Errors are reported in this order: a character that starts no token;
/// then the first place, from the left, where the tokens stop making an
/// expression; then, for a well-formed expression only, the first
/// arithmetic error (division by zero, overflow).
///
/// ```
/// use chatapp::calc::{evaluate, CalcError};
///
/// assert_eq!(evaluate("-2^2 + 2^3^2"), Ok(508.0));
/// assert_eq!(evaluate("(1 + 2"), Err(CalcError::Unclosed { column: 1 }));
/// assert_eq!(evaluate("1 / 0"), Err(CalcError::DivisionByZero));
/// ```
pub fn evaluate(text: &str) -> Result<f64, CalcError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        program: Vec::new(),
    };
    parser.parse()?;
    run(&parser.program)
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Number(f64),
    /// One of [`SYMBOLS`].
    Symbol(char),
}

/// A token and the column it starts at.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Token {
    kind: Kind,
    column: usize,
}

/// The operators and parentheses: every token that is not a number.
const SYMBOLS: &str = "+-*/%^()";

/// Splits `text` into numbers and symbols, skipping whitespace.
fn tokenize(text: &str) -> Result<Vec<Token>, CalcError> {
    // Indexing a Vec<char> makes index + 1 the column, whatever the bytes.
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (ch, column) = (chars[i], i + 1);
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = if ch.is_ascii_digit() || ch == '.' {
            let len = chars[i..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || **c == '.')
                .count();
            let number: String = chars[i..i + len].iter().collect();
            if let Some(second) = number.match_indices('.').nth(1) {
                return Err(CalcError::Unexpected {
                    ch: '.',
                    column: column + second.0,
                });
            }
            // With at most one '.', only a lone "." fails to parse. (And 400
            // digits parse to infinity, which `run` reports as an overflow.)
            let value: f64 = number
                .parse()
                .map_err(|_| CalcError::Unexpected { ch, column })?;
            i += len;
            Kind::Number(value)
        } else if SYMBOLS.contains(ch) {
            i += 1;
            Kind::Symbol(ch)
        } else {
            return Err(CalcError::Unexpected { ch, column });
        };
        tokens.push(Token { kind, column });
    }
    Ok(tokens)
}

/// One instruction of a postfix program: `1 + 2 * 3` is
/// `Push(1) Push(2) Push(3) Binary(Mul) Binary(Add)`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    /// Push a number on the stack.
    Push(f64),
    /// Negate the number on top of the stack.
    Neg,
    /// Replace the two numbers on top of the stack by their result.
    Binary(Binary),
}

/// The operators with two operands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
}

/// A recursive-descent parser: one method per grammar rule, each appending
/// the postfix code for what it parsed to `program`. `depth` counts the
/// nesting reached; it grows by one per parenthesis, sign and exponent.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    program: Vec<Op>,
}

impl Parser {
    /// The whole line: one `sum`, and nothing after it.
    fn parse(&mut self) -> Result<(), CalcError> {
        self.sum(0)?;
        match self.tokens.get(self.pos) {
            None => Ok(()),
            // `sum` stops at anything that cannot continue it.
            Some(&Token {
                kind: Kind::Symbol(')'),
                column,
            }) => Err(CalcError::Unopened { column }),
            Some(token) => Err(CalcError::MissingOperator {
                column: token.column,
            }),
        }
    }

    fn sum(&mut self, depth: usize) -> Result<(), CalcError> {
        self.product(depth)?;
        loop {
            let op = match self.peek_symbol() {
                Some('+') => Binary::Add,
                Some('-') => Binary::Sub,
                _ => return Ok(()),
            };
            self.pos += 1;
            self.product(depth)?;
            self.program.push(Op::Binary(op));
        }
    }

    fn product(&mut self, depth: usize) -> Result<(), CalcError> {
        self.unary(depth)?;
        loop {
            let op = match self.peek_symbol() {
                Some('*') => Binary::Mul,
                Some('/') => Binary::Div,
                Some('%') => Binary::Rem,
                _ => return Ok(()),
            };
            self.pos += 1;
            self.unary(depth)?;
            self.program.push(Op::Binary(op));
        }
    }

    /// Every recursion of the grammar passes through here, so this one check
    /// bounds the stack.
    fn unary(&mut self, depth: usize) -> Result<(), CalcError> {
        if depth > MAX_DEPTH {
            return Err(CalcError::TooDeep);
        }
        match self.peek_symbol() {
            Some('-') => {
                self.pos += 1;
                self.unary(depth + 1)?;
                self.program.push(Op::Neg);
                Ok(())
            }
            Some('+') => {
                self.pos += 1;
                self.unary(depth + 1)
            }
            _ => self.power(depth),
        }
    }

    fn power(&mut self, depth: usize) -> Result<(), CalcError> {
        self.primary(depth)?;
        if self.peek_symbol() == Some('^') {
            self.pos += 1;
            self.unary(depth + 1)?;
            self.program.push(Op::Binary(Binary::Pow));
        }
        Ok(())
    }

    fn primary(&mut self, depth: usize) -> Result<(), CalcError> {
        let Some(&Token { kind, column }) = self.tokens.get(self.pos) else {
            return Err(self.missing_operand_at_end());
        };
        self.pos += 1;
        match kind {
            Kind::Number(value) => {
                self.program.push(Op::Push(value));
                Ok(())
            }
            Kind::Symbol('(') => {
                if self.peek_symbol() == Some(')') {
                    return Err(CalcError::EmptyParens { column });
                }
                self.sum(depth + 1)?;
                match self.tokens.get(self.pos) {
                    None => Err(CalcError::Unclosed { column }),
                    Some(token) if token.kind == Kind::Symbol(')') => {
                        self.pos += 1;
                        Ok(())
                    }
                    Some(token) => Err(CalcError::MissingOperator {
                        column: token.column,
                    }),
                }
            }
            Kind::Symbol(symbol) => Err(CalcError::MissingOperandBefore { symbol, column }),
        }
    }

    /// The line ended where an operand was expected: right after its last
    /// token, which is then an operator or `(`, or at once if it is empty.
    fn missing_operand_at_end(&self) -> CalcError {
        match self.tokens.last() {
            Some(&Token {
                kind: Kind::Symbol(symbol),
                column,
            }) => CalcError::MissingOperandAfter { symbol, column },
            _ => CalcError::Empty,
        }
    }

    fn peek_symbol(&self) -> Option<char> {
        match self.tokens.get(self.pos)?.kind {
            Kind::Symbol(symbol) => Some(symbol),
            Kind::Number(_) => None,
        }
    }
}

/// Runs a postfix program on a stack, checking every value it makes.
fn run(program: &[Op]) -> Result<f64, CalcError> {
    const WELL_FORMED: &str = "the parser emits only well-formed programs";
    let mut stack: Vec<f64> = Vec::new();
    for &op in program {
        let value = match op {
            Op::Push(value) => value,
            Op::Neg => -stack.pop().expect(WELL_FORMED),
            Op::Binary(op) => {
                let b = stack.pop().expect(WELL_FORMED);
                let a = stack.pop().expect(WELL_FORMED);
                apply(op, a, b)?
            }
        };
        if value.is_nan() {
            return Err(CalcError::NotReal);
        }
        if value.is_infinite() {
            return Err(CalcError::Overflow);
        }
        stack.push(value);
    }
    Ok(stack.pop().expect(WELL_FORMED))
}

/// `a op b`; `run` checks that the result is finite.
fn apply(op: Binary, a: f64, b: f64) -> Result<f64, CalcError> {
    Ok(match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        // f64 division by zero is ±infinity or NaN: not what a calculator means.
        Binary::Div | Binary::Rem if b == 0.0 => return Err(CalcError::DivisionByZero),
        Binary::Div => a / b,
        // Truncated remainder, with the sign of `a`: -7 % 3 is -1.
        Binary::Rem => a % b,
        // 0^-1 is 1/0.
        Binary::Pow if a == 0.0 && b < 0.0 => return Err(CalcError::DivisionByZero),
        Binary::Pow => a.powf(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str) -> f64 {
        evaluate(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn error(text: &str) -> String {
        match evaluate(text) {
            Ok(value) => panic!("{text:?} = {value}, expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precedence() {
        assert_eq!(eval("1 + 2 * 3"), 7.0);
        assert_eq!(eval("(1 + 2) * 3"), 9.0);
        assert_eq!(eval("2 * 3 ^ 2"), 18.0);
        assert_eq!(eval("1 + 7 % 4"), 4.0);
        assert_eq!(eval("10 - 6 / 3"), 8.0);
    }

    #[test]
    fn associativity() {
        assert_eq!(eval("10 - 4 - 3"), 3.0);
        assert_eq!(eval("100 / 10 / 5"), 2.0);
        assert_eq!(eval("7 % 4 % 2"), 1.0);
        assert_eq!(eval("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(eval("(2 ^ 3) ^ 2"), 64.0);
    }

    #[test]
    fn signs() {
        assert_eq!(eval("-2 ^ 2"), -4.0);
        assert_eq!(eval("(-2) ^ 2"), 4.0);
        assert_eq!(eval("2 ^ -1"), 0.5);
        assert_eq!(eval("2 * -3"), -6.0);
        assert_eq!(eval("-3 * -2"), 6.0);
        assert_eq!(eval("--3"), 3.0);
        assert_eq!(eval("+3 - +1"), 2.0);
        assert_eq!(eval("1 - -1"), 2.0);
        assert_eq!(eval("-7 % 3"), -1.0);
    }

    #[test]
    fn decimals() {
        assert_eq!(eval("1.5 * 2"), 3.0);
        assert_eq!(eval(".5 + .25"), 0.75);
        assert_eq!(eval("2."), 2.0);
        assert_eq!(eval("5.5 % 2"), 1.5);
        assert_eq!(eval("1 / 4"), 0.25);
        assert_eq!(error("1.2.3"), "unexpected '.' at column 4");
        assert_eq!(error("2 + ."), "unexpected '.' at column 5");
    }

    #[test]
    fn whitespace_anywhere() {
        assert_eq!(eval("1+2"), 3.0);
        assert_eq!(eval(" \t( 1 +2 )*  3 \t"), 9.0);
        assert_eq!(error("1 2"), "missing operator at column 3");
    }

    #[test]
    fn unexpected_characters() {
        assert_eq!(error("2 x 3"), "unexpected 'x' at column 3");
        assert_eq!(error("1e3"), "unexpected 'e' at column 2");
        // Columns count characters, not bytes.
        assert_eq!(error("é + ü"), "unexpected 'é' at column 1");
        assert_eq!(error("1 + ü"), "unexpected 'ü' at column 5");
        assert_eq!(error("1 +\u{1}"), "unexpected '\\u{1}' at column 4");
    }

    #[test]
    fn unbalanced_parentheses() {
        assert_eq!(
            error("(1 + 2"),
            "unbalanced parentheses: '(' at column 1 is not closed"
        );
        assert_eq!(
            error("((1 + 2) * 3"),
            "unbalanced parentheses: '(' at column 1 is not closed"
        );
        assert_eq!(
            error("(1 + 2))"),
            "unbalanced parentheses: ')' at column 8 has no '('"
        );
        assert_eq!(
            error("1 + 2)"),
            "unbalanced parentheses: ')' at column 6 has no '('"
        );
    }

    #[test]
    fn missing_operands_and_operators() {
        assert_eq!(error("1 +"), "missing operand after '+' at column 3");
        assert_eq!(error("2 * ("), "missing operand after '(' at column 5");
        assert_eq!(error("-"), "missing operand after '-' at column 1");
        assert_eq!(error("* 2"), "missing operand before '*' at column 1");
        assert_eq!(error("1 + * 2"), "missing operand before '*' at column 5");
        assert_eq!(error("(1 + )"), "missing operand before ')' at column 6");
        assert_eq!(error("2 ^"), "missing operand after '^' at column 3");
        assert_eq!(error("2 (3)"), "missing operator at column 3");
        assert_eq!(error("(1)(2)"), "missing operator at column 4");
        assert_eq!(error("(1 2)"), "missing operator at column 4");
        assert_eq!(error(""), "empty expression");
        assert_eq!(error("   "), "empty expression");
    }

    #[test]
    fn empty_parentheses() {
        assert_eq!(error("()"), "empty parentheses at column 1");
        assert_eq!(error("2 * ( )"), "empty parentheses at column 5");
    }

    #[test]
    fn arithmetic_errors() {
        assert_eq!(error("1 / 0"), "division by zero");
        assert_eq!(error("1 % 0"), "division by zero");
        assert_eq!(error("5 / (2 - 2)"), "division by zero");
        assert_eq!(error("0 ^ -1"), "division by zero");
        assert_eq!(error("10 ^ 400"), "overflow");
        assert_eq!(error("-(10 ^ 200) * 10 ^ 200"), "overflow");
        assert_eq!(error(&"9".repeat(400)), "overflow");
        assert_eq!(error("(-8) ^ 0.5"), "result is not a real number");
        assert_eq!(eval("0 ^ 0"), 1.0);
    }

    #[test]
    fn syntax_errors_come_before_arithmetic_ones() {
        assert_eq!(error("1 / 0 +"), "missing operand after '+' at column 7");
        assert_eq!(
            error(&format!("{} 2", "9".repeat(400))),
            "missing operator at column 402"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |n: usize| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(eval(&nested(MAX_DEPTH)), 1.0);
        assert_eq!(
            error(&nested(MAX_DEPTH + 1)),
            "expression too deeply nested"
        );
        assert_eq!(eval(&format!("{}1", "-".repeat(MAX_DEPTH))), 1.0);

        // Far past any stack: every way of nesting stops at the bound.
        let deep = 1_000_000;
        let too_deep = "expression too deeply nested";
        assert_eq!(error(&"(".repeat(deep)), too_deep);
        assert_eq!(error(&nested(deep)), too_deep);
        assert_eq!(error(&format!("{}1", "-".repeat(deep))), too_deep);
        assert_eq!(error(&format!("{}1", "1^".repeat(deep))), too_deep);
    }

    #[test]
    fn long_flat_expressions_need_no_depth() {
        let sum = format!("1{}", " + 1".repeat(10_000));
        assert_eq!(eval(&sum), 10_001.0);
    }
}
