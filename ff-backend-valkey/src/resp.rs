//! A lean RESP2 codec for the subscription read path: commands are encoded
//! straight into bytes, and replies are parsed into a flat list of tokens
//! that point into the received buffer — no allocation per field.
//!
//! Catch-up throughput is decided on the client: profiling showed the
//! general-purpose client spending most of a catch-up in its parser and in
//! allocating a value tree for every entry, so subscriptions read with
//! this instead (see the crate docs for measurements).

use std::ops::Range;

/// One element of a reply, in pre-order: an array token is followed by the
/// tokens of its elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// `+text`
    Simple(Range<usize>),
    /// `-text`
    Error(Range<usize>),
    /// `:n`
    Int(i64),
    /// `$n` with its bytes.
    Bulk(Range<usize>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n`, followed by its `n` elements.
    Array(usize),
}

/// Why bytes could not be parsed as RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// The largest bulk string or array accepted (a guard against garbage).
const MAX_LEN: i64 = 512 * 1024 * 1024;

/// A parser that can be fed a growing buffer and resumes where it stopped.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    pos: usize,
    tokens: Vec<Token>,
    /// Elements still expected by each open array.
    open: Vec<usize>,
}

impl Parser {
    /// Parse from where the last call stopped. `Ok(Some(end))` when one
    /// complete reply occupies `buf[..end]` (its tokens are in
    /// [`Parser::take`]); `Ok(None)` when more bytes are needed.
    pub(crate) fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(line_end) = find_crlf(buf, self.pos) else {
                return Ok(None);
            };
            let kind = buf[self.pos];
            let body = self.pos + 1..line_end;
            let next = line_end + 2;
            let token = match kind {
                b'+' => Token::Simple(body),
                b'-' => Token::Error(body),
                b':' => Token::Int(number(&buf[body])?),
                b'$' => match number(&buf[body])? {
                    -1 => Token::Nil,
                    n if (0..=MAX_LEN).contains(&n) => {
                        let n = n as usize;
                        if buf.len() < next + n + 2 {
                            return Ok(None);
                        }
                        if &buf[next + n..next + n + 2] != b"\r\n" {
                            return Err(ProtocolError("bulk string not followed by CRLF".into()));
                        }
                        self.pos = next + n + 2;
                        self.push(Token::Bulk(next..next + n));
                        if self.open.is_empty() {
                            return Ok(Some(self.pos));
                        }
                        continue;
                    }
                    n => return Err(ProtocolError(format!("bad bulk length {n}"))),
                },
                b'*' => match number(&buf[body])? {
                    -1 => Token::Nil,
                    n if (0..=MAX_LEN).contains(&n) => Token::Array(n as usize),
                    n => return Err(ProtocolError(format!("bad array length {n}"))),
                },
                other => {
                    return Err(ProtocolError(format!(
                        "unexpected reply type byte 0x{other:02x}"
                    )))
                }
            };
            self.pos = next;
            self.push(token);
            if self.open.is_empty() {
                return Ok(Some(self.pos));
            }
        }
    }

    fn push(&mut self, token: Token) {
        // The new token fills a slot of the innermost open array.
        if let Some(remaining) = self.open.last_mut() {
            *remaining -= 1;
        }
        let opens = match token {
            Token::Array(n) if n > 0 => Some(n),
            _ => None,
        };
        self.tokens.push(token);
        if let Some(n) = opens {
            self.open.push(n);
        } else {
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
        }
    }

    /// The tokens of the completed reply; the parser starts afresh (at
    /// offset 0 of the remaining buffer).
    pub(crate) fn take(&mut self) -> Vec<Token> {
        self.pos = 0;
        self.open.clear();
        std::mem::take(&mut self.tokens)
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i..].iter().position(|b| *b == b'\r') {
            Some(off) => {
                let at = i + off;
                if at + 1 >= buf.len() {
                    return None;
                }
                if buf[at + 1] == b'\n' {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

fn number(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "bad number {:?}",
                String::from_utf8_lossy(&digits[..digits.len().min(20)])
            ))
        })
}

/// The index just past the value starting at `tokens[i]` (its whole subtree).
pub(crate) fn skip(tokens: &[Token], mut i: usize) -> usize {
    let mut pending = 1usize;
    while pending > 0 && i < tokens.len() {
        if let Token::Array(n) = tokens[i] {
            pending += n;
        }
        pending -= 1;
        i += 1;
    }
    i
}

/// Append one command (`*n` then each argument as a bulk string).
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Vec<Token> {
        let mut p = Parser::default();
        let end = p.advance(bytes).unwrap().expect("complete");
        assert_eq!(end, bytes.len());
        p.take()
    }

    #[test]
    fn parses_every_type_and_nesting() {
        let bytes = b"*5\r\n+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n*2\r\n$-1\r\n*0\r\n";
        let t = parse_all(bytes);
        assert_eq!(
            t,
            vec![
                Token::Array(5),
                Token::Simple(5..7),
                Token::Error(10..16),
                Token::Int(42),
                Token::Bulk(27..30),
                Token::Array(2),
                Token::Nil,
                Token::Array(0),
            ]
        );
        assert_eq!(skip(&t, 0), t.len());
        assert_eq!(skip(&t, 5), t.len());
        assert_eq!(skip(&t, 1), 2);
    }

    #[test]
    fn resumes_across_any_split_and_stops_at_the_reply_end() {
        let reply: &[u8] = b"*2\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n$-1\r\n";
        let mut with_next = reply.to_vec();
        with_next.extend_from_slice(b"+NEXT\r\n");
        let whole = parse_all(reply);
        for split in 0..with_next.len() {
            let mut p = Parser::default();
            let first = p.advance(&with_next[..split]).unwrap();
            let end = match first {
                Some(end) => end,
                None => p.advance(&with_next).unwrap().expect("complete"),
            };
            assert_eq!(end, reply.len(), "split at {split}");
            assert_eq!(p.take(), whole, "split at {split}");
        }
    }

    #[test]
    fn binary_bulk_strings_may_contain_crlf() {
        let t = parse_all(b"$4\r\n\r\n\r\n\r\n");
        assert_eq!(t, vec![Token::Bulk(4..8)]);
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [&b"?x\r\n"[..], b"$abc\r\n", b"*-5\r\n", b"$2\r\nabcd\r\n"] {
            assert!(Parser::default().advance(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XRANGE", b"k", b"-"]);
        assert_eq!(out, b"*3\r\n$6\r\nXRANGE\r\n$1\r\nk\r\n$1\r\n-\r\n");
    }
}
