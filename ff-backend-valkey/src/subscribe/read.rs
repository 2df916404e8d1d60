//! Reads paired with the stream's metadata: one `MULTI`/`EXEC` runs
//! `XRANGE`, `XINFO STREAM` and `GET` of the trim record, so expiry is
//! judged on exactly the state the entries were read from.
//!
//! The reply is checked against what was asked ([`PageAsk`]) before
//! anything of it is used: at most `count` entries, ids strictly
//! increasing and after `after`, the whole reply within
//! [`limits::entries_reply`]. Anything else is a protocol error, so a
//! position only ever moves forward.

use std::time::Duration;

use ff_core::stream_subscribe::ValkeyPosition;

use super::conn::{Conn, ConnError, Reply};
use crate::entry::Entries;
use crate::id;
use crate::limits;
use crate::resp::{skip, Token};
use crate::stream_info::{InfoValue, StreamState};

/// Entries read in one round trip, and the stream's state at that moment.
pub(crate) struct Page {
    reply: Reply,
    len: usize,
    last: Option<ValkeyPosition>,
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

    /// The page's entries, oldest first.
    pub(crate) fn entries(&self) -> Entries<'_> {
        Entries::new(&self.reply.data, &self.reply.tokens, 1).expect("checked when read")
    }
}

/// The keys a paired read touches: the stream and its trim record.
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
}

/// Queue the transaction reading what `ask` asks for together with
/// `XINFO STREAM` and the trim record.
pub(crate) fn push_page_request(conn: &mut Conn, keys: &PageKeys, ask: PageAsk) {
    let (start, end) = match ask.after {
        None => ("-".to_owned(), "+"),
        // Nothing can follow the largest id: an empty range (start > end),
        // so the entry at that id is not read again.
        Some(id::MAX) => ("+".to_owned(), "-"),
        Some(p) => (format!("({}", id::format(p)), "+"),
    };
    let key = keys.stream.as_bytes();
    let count = ask.count.to_string();
    conn.push(&[b"MULTI"]);
    let xrange: [&[u8]; 6] = [
        b"XRANGE",
        key,
        start.as_bytes(),
        end.as_bytes(),
        b"COUNT",
        count.as_bytes(),
    ];
    conn.push(&xrange);
    let xinfo: [&[u8]; 3] = [b"XINFO", b"STREAM", key];
    conn.push(&xinfo);
    conn.push(&[b"GET", keys.record.as_bytes()]);
    conn.push(&[b"EXEC"]);
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

/// Read the replies of the [`push_page_request`] that asked `ask`.
pub(crate) async fn read_page(
    conn: &mut Conn,
    ask: PageAsk,
    timeout: Duration,
) -> Result<Page, PageError> {
    let read = async {
        // +OK, three +QUEUED, then EXEC's reply. An error in the first
        // four (say -LOADING after a restart) makes EXEC answer
        // -EXECABORT; report the first one, which says why.
        let mut first_error = None;
        for _ in 0..4 {
            if let Err(e) = conn.read(limits::SMALL_REPLY).await?.check() {
                first_error.get_or_insert(e);
            }
        }
        let exec = conn.read(limits::entries_reply(ask.count)).await?.check();
        match first_error {
            Some(e) => Err(e),
            None => exec,
        }
    };
    let reply = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ConnError::Timeout(timeout))??;
    let page = parse_page(reply)?;
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

fn parse_page(reply: Reply) -> Result<Page, PageError> {
    let t = &reply.tokens;
    if t.first() != Some(&Token::Array(3)) {
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
    for entry in entries.by_ref() {
        last = Some(entry.map_err(malformed)?.id);
    }
    let info = skip(t, 1);
    let record = match t.get(skip(t, info)) {
        Some(Token::Nil) => None,
        Some(Token::Bulk(r)) => Some(reply.bytes(r)),
        Some(Token::Error(r)) => {
            return Err(PageError::Reply(format!(
                "GET of the trim record failed: {}",
                String::from_utf8_lossy(reply.bytes(r))
            )))
        }
        other => {
            return Err(malformed(format!(
                "GET of the trim record returned {other:?}"
            )))
        }
    };
    let state = state_from_tokens(&reply, info)?.with_record(record);
    Ok(Page {
        len,
        last,
        state,
        reply,
    })
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
            Some(Token::Array(_)) => InfoValue::Entry(string(i + 2)),
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
        let exec = b"*3\r\n\
            *2\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\n5-0\r\n*0\r\n\
            *10\r\n$6\r\nlength\r\n:2\r\n$17\r\nlast-generated-id\r\n$3\r\n5-0\r\n\
            $20\r\nmax-deleted-entry-id\r\n$3\r\n3-0\r\n\
            $11\r\nfirst-entry\r\n*2\r\n$3\r\n4-0\r\n*2\r\n$1\r\na\r\n$1\r\n1\r\n\
            $10\r\nlast-entry\r\n*2\r\n$3\r\n5-0\r\n*0\r\n\
            $5\r\n3-0 3\r\n";
        let page = parse_page(reply(exec)).unwrap();
        assert_eq!(page.len(), 2);
        let p = |ms| ValkeyPosition { ms, seq: 0 };
        assert_eq!(page.last_id(), Some(p(5)));
        assert_eq!(page.entries().count(), 2);
        assert_eq!(page.state.first, Some(p(4)));
        assert_eq!(page.state.last, Some(p(5)));
        assert_eq!(page.state.max_deleted, p(3));
        assert_eq!(page.state.last_generated, p(5));
        assert_eq!(page.state.length, 2);
        assert_eq!(
            page.state.trim_record,
            Some(crate::trim_record::TrimRecord {
                through: p(3),
                removed: 3
            })
        );
    }

    fn page_of(ids: &[&str]) -> Page {
        let mut bytes = format!("*3\r\n*{}\r\n", ids.len()).into_bytes();
        for id in ids {
            bytes.extend_from_slice(format!("*2\r\n${}\r\n{id}\r\n*0\r\n", id.len()).as_bytes());
        }
        bytes.extend_from_slice(b"-ERR no such key\r\n$-1\r\n");
        parse_page(reply(&bytes)).unwrap()
    }

    #[test]
    fn ids_that_go_backwards_or_repeat_are_refused() {
        let ask = |after: Option<(u64, u64)>, count| PageAsk {
            after: after.map(|(ms, seq)| ValkeyPosition { ms, seq }),
            count,
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
    fn an_absent_stream_is_an_empty_page() {
        let page = parse_page(reply(b"*3\r\n*0\r\n-ERR no such key\r\n$-1\r\n")).unwrap();
        assert_eq!(page.len(), 0);
        assert_eq!(page.state, StreamState::ABSENT);
        assert!(matches!(
            parse_page(reply(b"*3\r\n*0\r\n-WRONGTYPE x\r\n$-1\r\n")),
            Err(PageError::Reply(_))
        ));
        assert!(matches!(
            parse_page(reply(b"*-1\r\n")),
            Err(PageError::Conn(ConnError::Protocol(_)))
        ));
        assert!(matches!(
            parse_page(reply(b"*3\r\n:5\r\n-ERR no such key\r\n$-1\r\n")),
            Err(PageError::Conn(ConnError::Protocol(_)))
        ));
    }
}
