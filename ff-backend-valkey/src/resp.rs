//! A lean RESP2 codec for the subscription read path: commands are encoded
//! straight into bytes, and replies are parsed into a flat list of tokens
//! that point into the received buffer — no allocation per field.
//!
//! Catch-up throughput is decided on the client: profiling showed the
//! general-purpose client spending most of a catch-up in its parser and in
//! allocating a value tree for every entry, so subscriptions read with
//! this instead (see the crate docs for measurements).

use std::ops::Range;

use crate::limits::ReplyLimit;

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

/// Why bytes could not be parsed as RESP2, or were more than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

/// Longest line (`+…`, `-…`, `:…`, `$n`, `*n`) accepted: the server's
/// status and error lines are short, and a line that never ends must not
/// be buffered without bound.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// Deepest nesting accepted (ff's replies nest at most five deep).
const MAX_DEPTH: usize = 8;

/// A parser that can be fed a growing buffer and resumes where it stopped.
///
/// Invariants: every byte is scanned for a line end at most once (an
/// incomplete line is not rescanned from its start when more bytes
/// arrive), no line is longer than [`MAX_LINE`], and a reply that would
/// pass the caller's [`ReplyLimit`] is an error as soon as that is known —
/// for bytes, from a bulk string's declared length, before its bytes are
/// read; for elements, as the one past the limit is parsed.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// Start of the element being parsed.
    pos: usize,
    /// Bytes before this were searched for a line end without success.
    scanned: usize,
    tokens: Vec<Token>,
    /// Elements still expected by each open array.
    open: Vec<usize>,
}

impl Parser {
    /// Parse from where the last call stopped. `Ok(Some(end))` when one
    /// complete reply occupies `buf[..end]` (its tokens are in
    /// [`Parser::take`]); `Ok(None)` when more bytes are needed. A reply
    /// larger than `limit` is an error.
    pub(crate) fn advance(
        &mut self,
        buf: &[u8],
        limit: ReplyLimit,
    ) -> Result<Option<usize>, ProtocolError> {
        loop {
            if self.tokens.len() >= limit.elements {
                return Err(ProtocolError(format!(
                    "reply has more than the {} elements allowed for what was asked",
                    limit.elements
                )));
            }
            let Some(line_end) = self.find_line_end(buf, limit.bytes)? else {
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
                    n if n >= 0 => {
                        let n = usize::try_from(n).unwrap_or(usize::MAX);
                        let end = next.saturating_add(n).saturating_add(2);
                        if end > limit.bytes {
                            return Err(too_large(limit.bytes));
                        }
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if &buf[next + n..end] != b"\r\n" {
                            return Err(ProtocolError("bulk string not followed by CRLF".into()));
                        }
                        self.pos = end;
                        self.scanned = end;
                        self.push(Token::Bulk(next..next + n))?;
                        if self.open.is_empty() {
                            return Ok(Some(self.pos));
                        }
                        continue;
                    }
                    n => return Err(ProtocolError(format!("bad bulk length {n}"))),
                },
                b'*' => match number(&buf[body])? {
                    -1 => Token::Nil,
                    n if n >= 0 => Token::Array(usize::try_from(n).unwrap_or(usize::MAX)),
                    n => return Err(ProtocolError(format!("bad array length {n}"))),
                },
                other => {
                    return Err(ProtocolError(format!(
                        "unexpected reply type byte 0x{other:02x}"
                    )))
                }
            };
            self.pos = next;
            self.scanned = next;
            self.push(token)?;
            if self.open.is_empty() {
                return Ok(Some(self.pos));
            }
        }
    }

    /// The end (the `\r`) of the line starting at `pos`, searching only
    /// bytes not searched before.
    fn find_line_end(&mut self, buf: &[u8], limit: usize) -> Result<Option<usize>, ProtocolError> {
        let from = self.scanned.max(self.pos + 1);
        match buf
            .get(from..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            Some(offset) => {
                let newline = from + offset;
                if buf[newline - 1] != b'\r' {
                    return Err(ProtocolError("line not ended by CRLF".into()));
                }
                if newline - self.pos > MAX_LINE {
                    return Err(line_too_long());
                }
                if newline + 1 > limit {
                    return Err(too_large(limit));
                }
                Ok(Some(newline - 1))
            }
            None => {
                self.scanned = buf.len().max(self.pos);
                if buf.len().saturating_sub(self.pos) > MAX_LINE {
                    return Err(line_too_long());
                }
                if buf.len() > limit {
                    return Err(too_large(limit));
                }
                Ok(None)
            }
        }
    }

    fn push(&mut self, token: Token) -> Result<(), ProtocolError> {
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
            if self.open.len() >= MAX_DEPTH {
                return Err(ProtocolError(format!(
                    "reply nested more than {MAX_DEPTH} deep"
                )));
            }
            self.open.push(n);
        } else {
            while self.open.last() == Some(&0) {
                self.open.pop();
            }
        }
        Ok(())
    }

    /// The tokens of the completed reply; the parser starts afresh (at
    /// offset 0 of the remaining buffer).
    pub(crate) fn take(&mut self) -> Vec<Token> {
        self.pos = 0;
        self.scanned = 0;
        self.open.clear();
        std::mem::take(&mut self.tokens)
    }
}

fn too_large(limit: usize) -> ProtocolError {
    ProtocolError(format!(
        "reply larger than the {limit} bytes allowed for what was asked"
    ))
}

fn line_too_long() -> ProtocolError {
    ProtocolError(format!("reply line longer than {MAX_LINE} bytes"))
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

    const NO_LIMIT: ReplyLimit = ReplyLimit {
        bytes: usize::MAX,
        elements: usize::MAX,
    };

    fn small(bytes: usize) -> ReplyLimit {
        ReplyLimit {
            bytes,
            elements: usize::MAX,
        }
    }

    fn parse_all(bytes: &[u8]) -> Vec<Token> {
        let mut p = Parser::default();
        let end = p.advance(bytes, NO_LIMIT).unwrap().expect("complete");
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
            let first = p.advance(&with_next[..split], small(1024)).unwrap();
            let end = match first {
                Some(end) => end,
                None => p
                    .advance(&with_next, small(1024))
                    .unwrap()
                    .expect("complete"),
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
        for bad in [
            &b"?x\r\n"[..],
            b"$abc\r\n",
            b"*-5\r\n",
            b"$2\r\nabcd\r\n",
            b"+OK\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(Parser::default().advance(bad, NO_LIMIT).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_reply_past_the_limit_is_an_error_before_its_bytes_arrive() {
        // A bulk declared larger than allowed fails on its header alone.
        let header = b"*2\r\n$536870912\r\n";
        let e = Parser::default()
            .advance(header, small(1 << 20))
            .unwrap_err();
        assert!(e.0.contains("larger than"), "{e:?}");
        // Many small tokens: fails once the buffer passes the limit.
        let mut many = b"*100000\r\n".to_vec();
        many.extend(std::iter::repeat_n(&b":1\r\n"[..], 300).flatten());
        assert!(Parser::default().advance(&many, small(1000)).is_err());
        assert_eq!(Parser::default().advance(&many, small(1 << 20)), Ok(None));
        // ... or once it holds more elements than allowed.
        let limit = ReplyLimit {
            bytes: 1 << 20,
            elements: 100,
        };
        let e = Parser::default().advance(&many, limit).unwrap_err();
        assert!(e.0.contains("elements"), "{e:?}");
    }

    #[test]
    fn an_endless_line_is_scanned_once_and_capped() {
        let mut p = Parser::default();
        let mut buf = b"+".to_vec();
        while buf.len() <= MAX_LINE {
            buf.extend_from_slice(&[b'a'; 1000]);
            match p.advance(&buf, NO_LIMIT) {
                Ok(None) => assert_eq!(p.scanned, buf.len(), "nothing left to rescan"),
                Err(e) => {
                    assert!(e.0.contains("longer than"), "{e:?}");
                    return;
                }
                Ok(Some(_)) => panic!("no line end was sent"),
            }
        }
        panic!("a line past {MAX_LINE} bytes was accepted");
    }

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XRANGE", b"k", b"-"]);
        assert_eq!(out, b"*3\r\n$6\r\nXRANGE\r\n$1\r\nk\r\n$1\r\n-\r\n");
    }
}
