//! Property tests of the RESP parser over generated and mutated replies
//! (a deterministic fuzzer: fixed seeds, so CI runs the same cases in
//! bounded time). Properties: every valid reply parses to its tokens at
//! any split of its bytes; any input — truncated, corrupted, hostile —
//! yields tokens, "need more" or an error, never a panic; a completed
//! reply's tokens stay inside its bytes and within the limit; and an
//! input past the limit is always an error.

use crate::limits::ReplyLimit;
use crate::resp::{skip, Parser, Token};

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Append a random reply to `out`, and its expected tokens to `tokens`.
fn value(rng: &mut Rng, depth: usize, out: &mut Vec<u8>, tokens: &mut Vec<Token>) {
    let kind = if depth >= 4 {
        rng.below(5)
    } else {
        rng.below(7)
    };
    match kind {
        0 => {
            let text = "OK QUEUED".repeat(rng.below(3));
            out.push(b'+');
            tokens.push(Token::Simple(out.len()..out.len() + text.len()));
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        1 => {
            let text = "ERR no such key";
            out.push(b'-');
            tokens.push(Token::Error(out.len()..out.len() + text.len()));
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        2 => {
            let n = rng.next() as i64;
            out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            tokens.push(Token::Int(n));
        }
        3 => {
            // Any bytes, CRLF included.
            let len = rng.below(40);
            let data: Vec<u8> = (0..len)
                .map(|_| [b'\r', b'\n', b'a', b'$', b'*', 0][rng.below(6)])
                .collect();
            out.extend_from_slice(format!("${len}\r\n").as_bytes());
            tokens.push(Token::Bulk(out.len()..out.len() + len));
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        4 => {
            out.extend_from_slice(if rng.below(2) == 0 {
                b"$-1\r\n"
            } else {
                b"*-1\r\n"
            });
            tokens.push(Token::Nil);
        }
        _ => {
            let n = rng.below(5);
            out.extend_from_slice(format!("*{n}\r\n").as_bytes());
            tokens.push(Token::Array(n));
            for _ in 0..n {
                value(rng, depth + 1, out, tokens);
            }
        }
    }
}

/// Feed `buf` to a fresh parser in growing prefixes cut at random points.
fn feed(rng: &mut Rng, buf: &[u8], limit: ReplyLimit) -> (Result<Option<usize>, String>, Parser) {
    let mut p = Parser::default();
    let mut len = 0;
    loop {
        len = (len + 1 + rng.below(16)).min(buf.len());
        match p.advance(&buf[..len], limit) {
            Ok(None) if len < buf.len() => continue,
            Ok(r) => return (Ok(r), p),
            Err(e) => return (Err(e.0), p),
        }
    }
}

const ROOMY: ReplyLimit = ReplyLimit {
    bytes: 1 << 20,
    elements: 1 << 16,
};

#[test]
fn every_valid_reply_parses_to_its_tokens_at_any_split() {
    let mut rng = Rng(0x5eed_0001);
    for case in 0..3000 {
        let (mut buf, mut expected) = (Vec::new(), Vec::new());
        value(&mut rng, 0, &mut buf, &mut expected);
        let end = buf.len();
        buf.extend_from_slice(b"+NEXT\r\n");
        let (result, mut p) = feed(&mut rng, &buf, ROOMY);
        assert_eq!(result, Ok(Some(end)), "case {case}: {buf:?}");
        let tokens = p.take();
        assert_eq!(tokens, expected, "case {case}");
        assert_eq!(skip(&tokens, 0), tokens.len(), "case {case}: one tree");
    }
}

#[test]
fn mutated_and_hostile_input_never_panics_and_stays_in_bounds() {
    let mut rng = Rng(0x5eed_0002);
    let limit = ReplyLimit {
        bytes: 4096,
        elements: 300,
    };
    for case in 0..20_000 {
        let (mut buf, mut expected) = (Vec::new(), Vec::new());
        value(&mut rng, 0, &mut buf, &mut expected);
        for _ in 0..1 + rng.below(4) {
            if buf.is_empty() {
                break;
            }
            let at = rng.below(buf.len());
            match rng.below(5) {
                0 => buf[at] = rng.next() as u8,
                1 => buf.truncate(at),
                2 => buf.insert(at, [b'\r', b'\n', b'*', b'$', b'9', b'-'][rng.below(6)]),
                3 => {
                    let tail = buf[at..].to_vec();
                    buf.extend_from_slice(&tail);
                }
                _ => buf
                    .splice(at..at, b"*99999999\r\n".iter().copied())
                    .for_each(drop),
            }
        }
        if buf.is_empty() {
            continue;
        }
        let (result, mut p) = feed(&mut rng, &buf, limit);
        match result {
            Ok(Some(end)) => {
                assert!(end <= buf.len() && end <= limit.bytes, "case {case}");
                let tokens = p.take();
                assert!(tokens.len() <= limit.elements, "case {case}");
                assert_eq!(skip(&tokens, 0), tokens.len(), "case {case}");
                for t in &tokens {
                    if let Token::Simple(r) | Token::Error(r) | Token::Bulk(r) = t {
                        assert!(r.start <= r.end && r.end <= end, "case {case}: {r:?}");
                    }
                }
            }
            Ok(None) => assert!(buf.len() <= limit.bytes, "case {case}"),
            Err(_) => {}
        }
    }
}

#[test]
fn input_past_the_limit_without_a_complete_reply_is_an_error() {
    let mut rng = Rng(0x5eed_0003);
    for case in 0..2000 {
        let limit = ReplyLimit {
            bytes: 64 + rng.below(512),
            elements: 1 << 16,
        };
        // An array that never completes, of random elements.
        let mut buf = b"*1000000\r\n".to_vec();
        while buf.len() <= limit.bytes {
            value(&mut rng, 1, &mut buf, &mut Vec::new());
        }
        let (result, _) = feed(&mut rng, &buf, limit);
        assert!(result.is_err(), "case {case}: {result:?}");
    }
}
