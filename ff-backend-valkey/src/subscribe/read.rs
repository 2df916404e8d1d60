//! Reads paired with the stream's metadata: one `MULTI`/`EXEC` runs
//! `XRANGE`, `XINFO STREAM` and `GET` of the trim record, so expiry is
//! judged on exactly the state the entries were read from.

use std::time::Duration;

use ff_core::stream_subscribe::ValkeyPosition;

use super::conn::{Conn, ConnError, Reply};
use crate::entry::Entries;
use crate::id;
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

/// Queue the transaction reading up to `count` entries after `after` (from
/// the first retained entry when `None`) together with `XINFO STREAM` and
/// the trim record.
pub(crate) fn push_page_request(
    conn: &mut Conn,
    keys: &PageKeys,
    after: Option<ValkeyPosition>,
    count: usize,
) {
    let start = match after {
        None => "-".to_owned(),
        // Nothing can follow the largest id.
        Some(id::MAX) => "+".to_owned(),
        Some(p) => format!("({}", id::format(p)),
    };
    let key = keys.stream.as_bytes();
    let count = count.to_string();
    conn.push(&[b"MULTI"]);
    let xrange: [&[u8]; 6] = [
        b"XRANGE",
        key,
        start.as_bytes(),
        b"+",
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
pub(crate) enum PageError {
    /// The exchange failed (see [`ConnError::is_transient`]).
    Conn(ConnError),
    /// The reply made no sense; the message says what was wrong.
    Reply(String),
}

impl From<ConnError> for PageError {
    fn from(e: ConnError) -> Self {
        Self::Conn(e)
    }
}

/// Read the replies of one [`push_page_request`].
pub(crate) async fn read_page(conn: &mut Conn, timeout: Duration) -> Result<Page, PageError> {
    let read = async {
        // +OK, three +QUEUED, then EXEC's reply. An error in the first
        // four (say -LOADING after a restart) makes EXEC answer
        // -EXECABORT; report the first one, which says why.
        let mut first_error = None;
        for _ in 0..4 {
            if let Err(e) = conn.read().await?.check() {
                first_error.get_or_insert(e);
            }
        }
        let exec = conn.read().await?.check();
        match first_error {
            Some(e) => Err(e),
            None => exec,
        }
    };
    let reply = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ConnError::Timeout(timeout))??;
    parse_page(reply).map_err(PageError::Reply)
}

fn parse_page(reply: Reply) -> Result<Page, String> {
    let t = &reply.tokens;
    if t.first() != Some(&Token::Array(3)) {
        return Err(format!("EXEC returned {:?}", t.first()));
    }
    if let Some(Token::Error(r)) = t.get(1) {
        return Err(format!(
            "XRANGE failed: {}",
            String::from_utf8_lossy(reply.bytes(r))
        ));
    }
    let mut entries = Entries::new(&reply.data, t, 1)?;
    let len = entries.len();
    let mut last = None;
    for entry in entries.by_ref() {
        last = Some(entry?.id);
    }
    let info = skip(t, 1);
    let record = match t.get(skip(t, info)) {
        Some(Token::Nil) => None,
        Some(Token::Bulk(r)) => Some(reply.bytes(r)),
        other => return Err(format!("GET of the trim record returned {other:?}")),
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
fn state_from_tokens(reply: &Reply, at: usize) -> Result<StreamState, String> {
    let t = &reply.tokens;
    let n = match t.get(at).cloned() {
        Some(Token::Array(n)) => n,
        Some(Token::Error(r)) => {
            let msg = String::from_utf8_lossy(reply.bytes(&r));
            return if msg.contains("no such key") {
                Ok(StreamState::ABSENT)
            } else {
                Err(format!("XINFO STREAM failed: {msg}"))
            };
        }
        other => return Err(format!("XINFO STREAM returned {other:?}")),
    };
    let string = |i: usize| match t.get(i) {
        Some(Token::Bulk(r) | Token::Simple(r)) => Some(reply.bytes(r)),
        _ => None,
    };
    let mut fields = Vec::with_capacity(n / 2);
    let mut i = at + 1;
    for _ in 0..n / 2 {
        let name = string(i).ok_or("XINFO STREAM field name is not a string")?;
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
    StreamState::from_fields(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Parser;

    fn reply(bytes: &[u8]) -> Reply {
        let mut p = Parser::default();
        let end = p.advance(bytes).unwrap().expect("complete");
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

    #[test]
    fn an_absent_stream_is_an_empty_page() {
        let page = parse_page(reply(b"*3\r\n*0\r\n-ERR no such key\r\n$-1\r\n")).unwrap();
        assert_eq!(page.len(), 0);
        assert_eq!(page.state, StreamState::ABSENT);
        assert!(parse_page(reply(b"*3\r\n*0\r\n-WRONGTYPE x\r\n$-1\r\n")).is_err());
        assert!(parse_page(reply(b"*-1\r\n")).is_err());
    }
}
