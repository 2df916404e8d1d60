//! Decoding one stream entry (`[id, [field, value, …]]`, as tokens of a
//! reply) into its event and metadata with ff-core's shared decoder,
//! reading fields in place.

use std::borrow::Cow;

use ff_core::stream_events::record::{decode_new_event, Field, RecordAccess};
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::ValkeyPosition;

use crate::id;
use crate::resp::{skip, Token};
use crate::witness;

/// An entry's fields: a flat run of string tokens over the reply bytes.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    data: &'a [u8],
    tokens: &'a [Token],
}

impl<'a> Fields<'a> {
    /// The fields whose tokens (name, value, …) are `tokens` over `data`.
    pub(crate) fn new(data: &'a [u8], tokens: &'a [Token]) -> Self {
        Self { data, tokens }
    }

    fn string(&self, t: &Token) -> Option<&'a [u8]> {
        match t {
            Token::Bulk(r) | Token::Simple(r) => Some(&self.data[r.clone()]),
            _ => None,
        }
    }

    /// The entry's [witness](crate::witness).
    pub(crate) fn witness(&self) -> u32 {
        witness::digest(
            self.tokens
                .iter()
                .map(|t| self.string(t).unwrap_or_default()),
        )
    }
}

impl RecordAccess for Fields<'_> {
    fn text(&self, field: Field) -> Result<Option<Cow<'_, str>>, String> {
        let name = field.name().as_bytes();
        for pair in self.tokens.chunks_exact(2) {
            if self.string(&pair[0]) == Some(name) {
                let value = self.string(&pair[1]).ok_or("value is not a string")?;
                return std::str::from_utf8(value)
                    .map(|s| Some(Cow::Borrowed(s)))
                    .map_err(|_| "value is not valid UTF-8".to_owned());
            }
        }
        Ok(None)
    }
}

/// One raw entry of a reply.
pub(crate) struct RawEntry<'a> {
    pub(crate) id: ValkeyPosition,
    pub(crate) fields: Fields<'a>,
    /// Its id, field names and values, in bytes (what
    /// [`MAX_ENTRY_BYTES`](crate::limits::MAX_ENTRY_BYTES) bounds).
    pub(crate) size: usize,
}

/// Iterates the entries of an `XRANGE` reply (`tokens[at]` is its array).
pub(crate) struct Entries<'a> {
    data: &'a [u8],
    tokens: &'a [Token],
    next: usize,
    left: usize,
}

impl<'a> Entries<'a> {
    /// The entries of the array at `tokens[at]`.
    pub(crate) fn new(data: &'a [u8], tokens: &'a [Token], at: usize) -> Result<Self, String> {
        match tokens.get(at) {
            Some(Token::Array(n)) => Ok(Self {
                data,
                tokens,
                next: at + 1,
                left: *n,
            }),
            other => Err(format!("expected an array of entries, got {other:?}")),
        }
    }

    /// How many entries are left.
    pub(crate) fn len(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for Entries<'a> {
    /// `Err` only for a reply that is not an entry at all (a protocol
    /// problem, not a bad entry).
    type Item = Result<RawEntry<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.next;
        self.next = skip(self.tokens, at);
        let t = self.tokens;
        let entry = match (t.get(at), t.get(at + 1), t.get(at + 2)) {
            (Some(Token::Array(2)), Some(Token::Bulk(r)), Some(fields)) => {
                let id = id::parse(&self.data[r.clone()]);
                let fields = match fields {
                    Token::Array(n) if at + 3 + n <= t.len() => Some(&t[at + 3..at + 3 + n]),
                    Token::Nil => Some(&t[0..0]),
                    _ => None,
                };
                id.zip(fields).map(|(id, tokens)| RawEntry {
                    id,
                    size: r.len() + tokens.iter().map(token_len).sum::<usize>(),
                    fields: Fields {
                        data: self.data,
                        tokens,
                    },
                })
            }
            _ => None,
        };
        Some(entry.ok_or_else(|| format!("malformed stream entry at token {at}")))
    }
}

/// The bytes a field token carries.
fn token_len(t: &Token) -> usize {
    match t {
        Token::Bulk(r) | Token::Simple(r) | Token::Error(r) => r.len(),
        _ => 0,
    }
}

/// Decode an entry's fields: the event, then its metadata. `Err` says what
/// is wrong with the entry (it becomes a `Corrupt` item).
pub(crate) fn decode<R: RecordAccess + ?Sized>(
    family: Family,
    record: &R,
) -> Result<(NewEvent, EventMeta), String> {
    let event = decode_new_event(family, record).map_err(|e| e.detail)?;
    let mut meta = EventMeta::new();
    if let Some(ns) = record
        .text(Field::Namespace)
        .map_err(|e| format!("field `namespace`: {e}"))?
    {
        meta.namespace = Some(ns.into_owned());
    }
    if let Some(tags) = record
        .text(Field::Tags)
        .map_err(|e| format!("field `tags`: {e}"))?
    {
        meta.tags = EventMeta::parse_tags_json(&tags).map_err(|e| format!("field `tags`: {e}"))?;
    }
    Ok((event, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{encode, Parser};
    use ff_core::stream_events::sample_drafts;

    /// The RESP bytes of an XRANGE reply with one entry per field list.
    fn xrange_reply(entries: &[(&str, Vec<String>)]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", entries.len()).into_bytes();
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            out.extend_from_slice(format!("${}\r\n{id}\r\n", id.len()).as_bytes());
            let args: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
            encode(&mut out, &args);
        }
        out
    }

    fn fields_of(draft: &NewEvent, meta: &EventMeta) -> Vec<String> {
        let mut out = vec!["v".to_owned(), "1".to_owned()];
        for (f, v) in draft.fields() {
            if let Some(v) = v {
                out.push(f.name().to_owned());
                out.push(v);
            }
        }
        if let Some(ns) = &meta.namespace {
            out.extend(["namespace".to_owned(), ns.clone()]);
        }
        if !meta.tags.is_empty() {
            out.extend(["tags".to_owned(), meta.tags_json()]);
        }
        out
    }

    fn parse(bytes: &[u8]) -> Vec<Token> {
        let mut p = Parser::default();
        p.advance(bytes, crate::limits::entries_reply(1000))
            .unwrap()
            .expect("complete");
        p.take()
    }

    #[test]
    fn every_draft_and_its_metadata_round_trip() {
        let metas = [
            EventMeta::new(),
            EventMeta::new().with_namespace("ns").with_tag("k", "v"),
        ];
        for draft in sample_drafts() {
            for meta in &metas {
                let bytes = xrange_reply(&[("5-1", fields_of(&draft, meta))]);
                let tokens = parse(&bytes);
                let mut entries = Entries::new(&bytes, &tokens, 0).unwrap();
                assert_eq!(entries.len(), 1);
                let entry = entries.next().unwrap().unwrap();
                assert_eq!(entry.id, ValkeyPosition { ms: 5, seq: 1 });
                let (back, back_meta) = decode(draft.family(), &entry.fields).unwrap();
                assert_eq!(back, draft);
                assert_eq!(&back_meta, meta);
                assert!(entries.next().is_none());
            }
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let draft = &sample_drafts()[6];
        let mut bad_tags = fields_of(draft, &EventMeta::new());
        bad_tags.extend(["tags".to_owned(), "[1,2]".to_owned()]);
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let bytes = xrange_reply(&[
            ("1-0", bad_tags),
            (
                "2-0",
                strings(&["execution_id", "nope", "outcome", "success"]),
            ),
            ("3-0", strings(&["v", "2"])),
            ("4-0", strings(&["hello", "world"])),
        ]);
        let tokens = parse(&bytes);
        let errors: Vec<String> = Entries::new(&bytes, &tokens, 0)
            .unwrap()
            .map(|e| decode(Family::Completion, &e.unwrap().fields).unwrap_err())
            .collect();
        assert!(errors[0].contains("tags"), "{}", errors[0]);
        assert!(errors[1].contains("execution_id"), "{}", errors[1]);
        assert!(errors[2].contains("schema version"), "{}", errors[2]);
        assert!(errors[3].contains("execution_id"), "{}", errors[3]);
    }

    #[test]
    fn a_reply_that_is_not_an_entry_is_an_error() {
        let tokens = parse(b"*1\r\n$3\r\nabc\r\n");
        let data = b"*1\r\n$3\r\nabc\r\n";
        let mut entries = Entries::new(data, &tokens, 0).unwrap();
        assert!(entries.next().unwrap().is_err());
        assert!(Entries::new(data, &tokens, 1).is_err());
    }
}
