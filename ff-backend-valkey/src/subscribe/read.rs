//! Reads paired with the stream's metadata: one `MULTI`/`EXEC` runs
//! `XRANGE` and `XINFO STREAM` — and, when the position read after carries
//! a [witness](crate::witness), `XRANGE` of that one entry — so expiry and
//! the position's entry are judged on exactly the state the entries were
//! read from. It touches the stream's key alone, so it is served wherever
//! that key is, also mid-migration; the trim record, when a judgment needs
//! it, is read after it on its own ([`push_record_request`], see
//! [`crate::stream_info`]).
//!
//! The reply is checked against what was asked ([`PageAsk`]) before
//! anything of it is used: at most `count` entries, ids strictly
//! increasing and after `after`, the whole reply within
//! [`limits::entries_reply`]. Anything else is a protocol error, so a
//! position only ever moves forward.

use ff_core::stream_subscribe::ValkeyPosition;

use super::conn::{ConnError, Reply};
use super::node_conn::Request;
use crate::entry::{Entries, Fields};
use crate::id;
use crate::limits;
use crate::resp::{skip, Token};
use crate::stream_info::{InfoValue, StreamState};

/// Entries read in one round trip, and the stream's state at that moment.
pub(crate) struct Page {
    reply: Reply,
    len: usize,
    last: Option<ValkeyPosition>,
    last_witness: Option<u32>,
    /// When asked: the witness of the entry at the position read after,
    /// `None` when the stream holds no entry there.
    pub(crate) found: Option<Option<u32>>,
    /// The stream's metadata in the same transaction.
    pub(crate) state: StreamState,
}

impl Page {
    /// How many entries the page holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The id of the page's last entry.
    pub(crate) fn last_id(&self) -> Option<ValkeyPosition> {
        self.last
    }

    /// The witness of the page's last entry.
    pub(crate) fn last_witness(&self) -> Option<u32> {
        self.last_witness
    }

    /// The page's entries, oldest first.
    pub(crate) fn entries(&self) -> Entries<'_> {
        Entries::new(&self.reply.data, &self.reply.tokens, 1).expect("checked when read")
    }
}

/// The stream a paired read touches, and its trim record's key.
pub(crate) struct PageKeys {
    /// The family's stream.
    pub(crate) stream: String,
    /// Its [`TrimRecord`](crate::trim_record::TrimRecord) key.
    pub(crate) record: String,
}

/// What a paired read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageAsk {
    /// Entries after this position; from the first retained when `None`.
    pub(crate) after: Option<ValkeyPosition>,
    /// At most this many.
    pub(crate) count: usize,
    /// The witness of the entry at `after`: the read fetches that entry
    /// too, to check it is still the same.
    pub(crate) witness: Option<u32>,
}

impl PageAsk {
    /// The position whose entry the read fetches, if any.
    fn probe(&self) -> Option<ValkeyPosition> {
        self.after.filter(|_| self.witness.is_some())
    }
}

/// Add the transaction reading what `ask` asks for together with
/// `XINFO STREAM` to `request`.
pub(crate) fn push_page_request(request: &mut Request, keys: &PageKeys, ask: PageAsk) {
    let (start, end) = match ask.after {
        None => ("-".to_owned(), "+"),
        // Nothing can follow the largest id: an empty range (start > end),
        // so the entry at that id is not read again.
        Some(id::MAX) => ("+".to_owned(), "-"),
        Some(p) => (format!("({}", id::format(p)), "+"),
    };
    let key = keys.stream.as_bytes();
    let count = ask.count.to_string();
    request.push(&[b"MULTI"], limits::SMALL_REPLY);
    let xrange: [&[u8]; 6] = [
        b"XRANGE",
        key,
        start.as_bytes(),
        end.as_bytes(),
        b"COUNT",
        count.as_bytes(),
    ];
    request.push(&xrange, limits::SMALL_REPLY);
    let xinfo: [&[u8]; 3] = [b"XINFO", b"STREAM", key];
    request.push(&xinfo, limits::SMALL_REPLY);
    if let Some(at) = ask.probe() {
        let at = id::format(at);
        request.push(
            &[b"XRANGE", key, at.as_bytes(), at.as_bytes()],
            limits::SMALL_REPLY,
        );
    }
    request.push(
        &[b"EXEC"],
        limits::entries_reply(ask.count + usize::from(ask.probe().is_some())),
    );
}

/// Why a page could not be read.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The exchange failed (see [`ConnError::is_transient`]); a reply of
    /// the wrong shape is a [`ConnError::Protocol`] here: a buggy server
    /// or a broken connection, reconnected to.
    Conn(ConnError),
    /// The server refused a command of the read (say `WRONGTYPE`, or an
    /// account without the right); the message says which and why.
    Reply(String),
}

/// A reply of the wrong shape.
fn malformed(why: impl Into<String>) -> PageError {
    PageError::Conn(ConnError::Protocol(why.into()))
}

impl From<ConnError> for PageError {
    fn from(e: ConnError) -> Self {
        Self::Conn(e)
    }
}

/// The page in the replies of the [`push_page_request`] that asked `ask`.
pub(crate) fn read_page(mut replies: Vec<Reply>, ask: PageAsk) -> Result<Page, PageError> {
    // +OK, two +QUEUED (three with the probe), then EXEC's reply. An
    // error before EXEC (say -LOADING after a restart) makes EXEC answer
    // -EXECABORT; report the first one, which says why.
    let exec = replies
        .pop()
        .ok_or_else(|| malformed("no reply to the paired read"))?;
    let mut first_error = None;
    for reply in replies {
        if let Err(e) = reply.check() {
            first_error.get_or_insert(e);
        }
    }
    let exec = exec.check();
    let reply = match first_error {
        Some(e) => Err(e),
        None => exec,
    }?;
    let page = parse_page(reply, ask.probe())?;
    check_order(&page, ask).map_err(|why| PageError::Conn(ConnError::Protocol(why)))?;
    Ok(page)
}

/// `Err` unless the page holds at most what was asked, in strictly
/// increasing id order after `ask.after`.
fn check_order(page: &Page, ask: PageAsk) -> Result<(), String> {
    if page.len() > ask.count {
        return Err(format!(
            "XRANGE returned {} entries for COUNT {}",
            page.len(),
            ask.count
        ));
    }
    let mut previous = ask.after;
    for entry in page.entries() {
        let id = entry?.id;
        if let Some(p) = previous.filter(|p| id <= *p) {
            return Err(format!(
                "entry id {} does not follow {} (positions only move forward)",
                id::format(id),
                id::format(p)
            ));
        }
        previous = Some(id);
    }
    Ok(())
}

/// Parse the `EXEC` reply of a paired read that fetched the entry at
/// `probe` too, when given.
fn parse_page(reply: Reply, probe: Option<ValkeyPosition>) -> Result<Page, PageError> {
    let t = &reply.tokens;
    let parts = 2 + usize::from(probe.is_some());
    if t.first() != Some(&Token::Array(parts)) {
        return Err(malformed(format!("EXEC returned {:?}", t.first())));
    }
    if let Some(Token::Error(r)) = t.get(1) {
        return Err(PageError::Reply(format!(
            "XRANGE failed: {}",
            String::from_utf8_lossy(reply.bytes(r))
        )));
    }
    let mut entries = Entries::new(&reply.data, t, 1).map_err(malformed)?;
    let len = entries.len();
    let mut last = None;
    let mut last_fields = None;
    for entry in entries.by_ref() {
        let entry = entry.map_err(malformed)?;
        last = Some(entry.id);
        last_fields = Some(entry.fields);
    }
    let last_witness = last_fields.map(|f| f.witness());
    let info = skip(t, 1);
    let found = match probe {
        None => None,
        Some(at) => Some(probed(&reply, skip(t, info), at)?),
    };
    let state = state_from_tokens(&reply, info)?;
    Ok(Page {
        len,
        last,
        last_witness,
        found,
        state,
        reply,
    })
}

/// Add `GET` of the trim record (see [`crate::stream_info`]) to `request`.
pub(crate) fn push_record_request(request: &mut Request, keys: &PageKeys) {
    request.push(&[b"GET", keys.record.as_bytes()], limits::SMALL_REPLY);
}

/// The record's text in the reply of [`push_record_request`], `None` when
/// the key does not exist.
pub(crate) fn read_record(reply: Reply) -> Result<Option<Vec<u8>>, PageError> {
    let reply = reply.check()?;
    match reply.tokens.first() {
        Some(Token::Nil) => Ok(None),
        Some(Token::Bulk(r)) => Ok(Some(reply.bytes(r).to_vec())),
        other => Err(malformed(format!(
            "GET of the trim record returned {other:?}"
        ))),
    }
}

/// The witness of the entry at `at`, from the `XRANGE at at` reply at
/// `tokens[from]`; `None` when there is none.
fn probed(reply: &Reply, from: usize, at: ValkeyPosition) -> Result<Option<u32>, PageError> {
    if let Some(Token::Error(r)) = reply.tokens.get(from) {
        return Err(PageError::Reply(format!(
            "XRANGE of the position's entry failed: {}",
            String::from_utf8_lossy(reply.bytes(r))
        )));
    }
    let mut entries = Entries::new(&reply.data, &reply.tokens, from).map_err(malformed)?;
    let found = match entries.next() {
        None => return Ok(None),
        Some(entry) => entry.map_err(malformed)?,
    };
    if found.id != at || entries.len() > 0 {
        return Err(malformed(format!(
            "XRANGE {0} {0} returned entry {1} or more than one",
            id::format(at),
            id::format(found.id)
        )));
    }
    Ok(Some(found.fields.witness()))
}

/// The witness of the entry fields array at `tokens[at]` (an `XINFO
/// STREAM` first or last entry's).
fn entry_witness(reply: &Reply, at: usize) -> u32 {
    let t = &reply.tokens;
    let fields = match t.get(at) {
        Some(Token::Array(n)) if at + 1 + n <= t.len() => &t[at + 1..at + 1 + n],
        _ => &t[0..0],
    };
    Fields::new(&reply.data, fields).witness()
}

/// Parse the `XINFO STREAM` reply at `tokens[at]`; "no such key" is the
/// absent stream.
fn state_from_tokens(reply: &Reply, at: usize) -> Result<StreamState, PageError> {
    let t = &reply.tokens;
    let n = match t.get(at).cloned() {
        Some(Token::Array(n)) => n,
        Some(Token::Error(r)) => {
            let msg = String::from_utf8_lossy(reply.bytes(&r));
            return if msg.contains("no such key") {
                Ok(StreamState::ABSENT)
            } else {
                Err(PageError::Reply(format!("XINFO STREAM failed: {msg}")))
            };
        }
        other => return Err(malformed(format!("XINFO STREAM returned {other:?}"))),
    };
    let string = |i: usize| match t.get(i) {
        Some(Token::Bulk(r) | Token::Simple(r)) => Some(reply.bytes(r)),
        _ => None,
    };
    let mut fields = Vec::with_capacity(n / 2);
    let mut i = at + 1;
    for _ in 0..n / 2 {
        let name = string(i).ok_or_else(|| malformed("XINFO STREAM field name is not a string"))?;
        let value = match t.get(i + 1).cloned() {
            Some(Token::Int(v)) => InfoValue::Int(v),
            Some(Token::Nil) => InfoValue::Nil,
            Some(Token::Bulk(r) | Token::Simple(r)) => InfoValue::Bytes(reply.bytes(&r)),
            Some(Token::Array(_)) => InfoValue::Entry {
                id: string(i + 2),
                witness: entry_witness(reply, i + 3),
            },
            Some(Token::Error(_)) | None => InfoValue::Other,
        };
        fields.push((name, value));
        i = skip(t, i + 1);
    }
    StreamState::from_fields(fields).map_err(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Parser;
    use crate::witness;

    fn reply(bytes: &[u8]) -> Reply {
        let mut p = Parser::default();
        let end = p
            .advance(bytes, crate::limits::entries_reply(1000))
            .unwrap()
            .expect("complete");
        assert_eq!(end, bytes.len());
        Reply {
            data: bytes::Bytes::copy_from_slice(bytes),
            tokens: p.take(),
        }
    }

    #[test]
    fn a_page_has_its_entries_last_id_and_state() {
        let exec = b"*2\r\n\
            *2\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n5-0\r\n*0\r\n\
            *10\r\n$6\r\nlength\r\n:2\r\n$17\r\nlast-generated-id\r\n$3\r\n5-0\r\n\
            $20\r\nmax-deleted-entry-id\r\n$3\r\n3-0\r\n\
            $11\r\nfirst-entry\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n\
            $10\r\nlast-entry\r\n*2\r\n$3\r\n5-0\r\n*0\r\n";
        let page = parse_page(reply(exec), None).unwrap();
        assert_eq!(page.len(), 2);
        let p = |ms| ValkeyPosition { ms, seq: 0 };
        assert_eq!(page.last_id(), Some(p(5)));
        assert_eq!(page.entries().count(), 2);
        assert_eq!(page.state.first, Some(p(4)));
        assert_eq!(page.state.last, Some(p(5)));
        assert_eq!(page.state.max_deleted, p(3));
        assert_eq!(page.state.last_generated, p(5));
        assert_eq!(page.state.length, 2);
        assert!(
            !page.state.record_read,
            "the record is read only when needed"
        );
        assert!(page.state.needs_record(p(3)), "3-0 is the trimmed edge");
        assert!(!page.state.needs_record(p(4)), "at the first entry");
        assert!(!page.state.needs_record(p(2)), "not the last removed");
    }

    fn page_of(ids: &[&str]) -> Page {
        let mut bytes = format!("*2\r\n*{}\r\n", ids.len()).into_bytes();
        for id in ids {
            bytes.extend_from_slice(format!("*2\r\n${}\r\n{id}\r\n*0\r\n", id.len()).as_bytes());
        }
        bytes.extend_from_slice(b"-ERR no such key\r\n");
        parse_page(reply(&bytes), None).unwrap()
    }

    #[test]
    fn ids_that_go_backwards_or_repeat_are_refused() {
        let ask = |after: Option<(u64, u64)>, count| PageAsk {
            after: after.map(|(ms, seq)| ValkeyPosition { ms, seq }),
            count,
            witness: None,
        };
        assert!(check_order(&page_of(&["1-0", "2-0", "2-1"]), ask(None, 3)).is_ok());
        assert!(check_order(&page_of(&["1-0", "2-0"]), ask(Some((0, 5)), 10)).is_ok());
        for (ids, after) in [
            (&["3-0", "2-0"][..], None),
            (&["2-0", "2-0"], None),
            (&["1-0", "0-0"], None),
            (&["1-0", "2-0"], Some((2, 0))),
            (&["2-0"], Some((2, 0))),
            (
                &["18446744073709551615-18446744073709551615"],
                Some((u64::MAX, u64::MAX)),
            ),
        ] {
            let e = check_order(&page_of(ids), ask(after, 10)).unwrap_err();
            assert!(e.contains("only move forward"), "{ids:?}: {e}");
        }
        let e = check_order(&page_of(&["1-0", "2-0", "3-0"]), ask(None, 2)).unwrap_err();
        assert!(e.contains("3 entries for COUNT 2"), "{e}");
    }

    #[test]
    fn a_read_that_fetched_its_positions_entry_has_that_entrys_witness() {
        let p = |ms| ValkeyPosition { ms, seq: 0 };
        let entry = |id: &str, value: &str| {
            format!(
                "*2\r\n${}\r\n{id}\r\n*2\r\n$1\r\na\r\n${}\r\n{value}\r\n",
                id.len(),
                value.len()
            )
        };
        let page = |probe: &str| {
            let text = format!(
                "*3\r\n*1\r\n{}-ERR no such key\r\n{probe}",
                entry("6-0", "x")
            );
            parse_page(reply(text.as_bytes()), Some(p(5)))
        };
        let found = page(&format!("*1\r\n{}", entry("5-0", "1"))).unwrap();
        assert_eq!(found.found, Some(Some(witness::digest([&b"a"[..], b"1"]))));
        assert_eq!(
            found.last_witness(),
            Some(witness::digest([&b"a"[..], b"x"]))
        );
        assert_eq!(page("*0\r\n").unwrap().found, Some(None), "gone");
        for bad in [format!("*1\r\n{}", entry("4-0", "1")), ":1\r\n".to_owned()] {
            assert!(matches!(
                page(&bad),
                Err(PageError::Conn(ConnError::Protocol(_)))
            ));
        }
        assert!(matches!(page("-ERR nope\r\n"), Err(PageError::Reply(_))));
    }

    #[test]
    fn an_absent_stream_is_an_empty_page() {
        let page = parse_page(reply(b"*2\r\n*0\r\n-ERR no such key\r\n"), None).unwrap();
        assert_eq!(page.len(), 0);
        assert_eq!(page.state, StreamState::ABSENT);
        assert!(matches!(
            parse_page(reply(b"*2\r\n*0\r\n-WRONGTYPE x\r\n"), None),
            Err(PageError::Reply(_))
        ));
        assert!(matches!(
            parse_page(reply(b"*-1\r\n"), None),
            Err(PageError::Conn(ConnError::Protocol(_)))
        ));
        assert!(matches!(
            parse_page(reply(b"*2\r\n:5\r\n-ERR no such key\r\n"), None),
            Err(PageError::Conn(ConnError::Protocol(_)))
        ));
    }
}
