//! Parsing a stream request: where it starts (`Last-Event-ID`, `cursor`,
//! `from`) and its filter (`kinds`, `execution_id`, `namespace`, `tag`).

use ff_core::backend::MAX_TEXT_LEN;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventKind, Family};
use ff_core::stream_subscribe::StreamCursor;
use ff_core::types::ExecutionId;

use crate::auth::ACCESS_TOKEN_PARAM;
use crate::errors::ApiError;

/// Name used in errors for the `Last-Event-ID` header.
pub(crate) const LAST_EVENT_ID: &str = "Last-Event-ID";

const KNOWN: &[&str] = &[
    "cursor",
    "from",
    "kinds",
    "execution_id",
    "namespace",
    "tag",
    ACCESS_TOKEN_PARAM,
];

/// Where a stream starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// After everything already delivered (the default).
    Tail,
    /// From the oldest retained event.
    Beginning,
    /// Exactly after `cursor`, which came from `parameter`.
    After {
        cursor: StreamCursor,
        parameter: &'static str,
    },
}

impl Start {
    /// The parameter the start position came from, for errors.
    pub fn parameter(&self) -> &'static str {
        match self {
            Start::After { parameter, .. } => parameter,
            Start::Tail | Start::Beginning => "from",
        }
    }
}

/// A parsed stream request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamParams {
    pub start: Start,
    pub filter: SubscriptionFilter,
}

/// The `access_token` query parameter, if present.
pub(crate) fn query_token(query: &[(String, String)]) -> Option<&str> {
    query
        .iter()
        .find(|(k, _)| k == ACCESS_TOKEN_PARAM)
        .map(|(_, v)| v.as_str())
}

fn single<'a>(query: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = query.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_parameter(
            name,
            format!("`{name}` is given more than once; give it at most once"),
        ));
    }
    Ok(first.map(String::as_str))
}

fn parse_cursor(
    text: &str,
    family: Family,
    parameter: &'static str,
) -> Result<StreamCursor, ApiError> {
    let cursor: StreamCursor = text
        .parse()
        .map_err(|e: ff_core::engine_error::EngineError| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_cursor",
                e.to_string(),
            )
            .with_parameter(parameter)
        })?;
    if let Some(other) = cursor.family() {
        if other != family {
            return Err(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_cursor",
                format!("cursor {cursor} belongs to the {other} stream, not {family}; use a cursor this stream sent"),
            )
            .with_parameter(parameter));
        }
    }
    Ok(cursor)
}

fn start_of(
    family: Family,
    last_event_id: Option<&str>,
    query: &[(String, String)],
) -> Result<Start, ApiError> {
    let from_query = single(query, "cursor")?.filter(|c| !c.is_empty());
    let from = single(query, "from")?;
    let (text, parameter) = match (
        last_event_id.map(str::trim).filter(|s| !s.is_empty()),
        from_query,
    ) {
        (Some(id), _) => (Some(id), LAST_EVENT_ID),
        (None, Some(c)) => (Some(c), "cursor"),
        (None, None) => (None, "from"),
    };
    if let Some(text) = text {
        let cursor = parse_cursor(text, family, parameter)?;
        return Ok(if cursor.is_beginning() {
            Start::Beginning
        } else {
            Start::After { cursor, parameter }
        });
    }
    match from {
        None | Some("tail") => Ok(Start::Tail),
        Some("beginning") => Ok(Start::Beginning),
        Some(other) => Err(ApiError::bad_parameter(
            "from",
            format!(
                "`from` is {:?}; expected `tail` or `beginning` (pass a cursor as `cursor`)",
                other.chars().take(80).collect::<String>()
            ),
        )),
    }
}

fn text_value<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN {
        return Err(ApiError::bad_parameter(
            name,
            format!(
                "`{name}` must be 1..={MAX_TEXT_LEN} bytes, got {}",
                value.len()
            ),
        ));
    }
    Ok(value)
}

fn filter_of(family: Family, query: &[(String, String)]) -> Result<SubscriptionFilter, ApiError> {
    let mut filter = SubscriptionFilter::new();
    let kind_values: Vec<&String> = query
        .iter()
        .filter(|(k, _)| k == "kinds")
        .map(|(_, v)| v)
        .collect();
    if !kind_values.is_empty() {
        let mut kinds: Vec<EventKind> = Vec::new();
        for name in kind_values
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let kind = EventKind::parse(family, name)
                .map_err(|e| ApiError::bad_parameter("kinds", e.to_string()))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() {
            return Err(ApiError::bad_parameter(
                "kinds",
                "`kinds` is empty, so it would admit nothing; omit it to admit every kind",
            ));
        }
        filter = filter.with_kinds(kinds);
    }
    if let Some(id) = single(query, "execution_id")? {
        let id = ExecutionId::parse(id)
            .map_err(|e| ApiError::bad_parameter("execution_id", e.to_string()))?;
        filter = filter.with_execution_id(id);
    }
    if let Some(ns) = single(query, "namespace")? {
        filter = filter.with_namespace(text_value("namespace", ns)?);
    }
    if let Some(tag) = single(query, "tag")? {
        let (key, value) = tag.split_once(':').ok_or_else(|| {
            ApiError::bad_parameter("tag", "`tag` must be `key:value`, e.g. `tag=region:eu`")
        })?;
        let key = text_value("tag", key)?;
        if value.len() > MAX_TEXT_LEN {
            return Err(ApiError::bad_parameter(
                "tag",
                format!("the tag value must be at most {MAX_TEXT_LEN} bytes"),
            ));
        }
        filter = filter.with_tag(key, value);
    }
    filter
        .validate_for(family)
        .map_err(|e| ApiError::bad_parameter("kinds", e.to_string()))?;
    Ok(filter)
}

/// Parse a stream request. The start is `Last-Event-ID` (a reconnecting
/// `EventSource` sends it), else `cursor`, else `from` (default `tail`).
/// Unknown parameters are rejected so a typo never silently widens a filter.
pub(crate) fn parse_stream_params(
    family: Family,
    last_event_id: Option<&str>,
    query: &[(String, String)],
) -> Result<StreamParams, ApiError> {
    if let Some((name, _)) = query.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::bad_parameter(
            name.chars().take(80).collect::<String>(),
            format!(
                "unknown parameter `{}`; known: {}",
                name.chars().take(80).collect::<String>(),
                KNOWN.join(", ")
            ),
        ));
    }
    single(query, ACCESS_TOKEN_PARAM)?;
    Ok(StreamParams {
        start: start_of(family, last_event_id, query)?,
        filter: filter_of(family, query)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_backend_memory::cursor_codec::encode_memory;
    use ff_core::stream_events::CompletionKind;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(last: Option<&str>, pairs: &[(&str, &str)]) -> Result<StreamParams, ApiError> {
        parse_stream_params(Family::Completion, last, &q(pairs))
    }

    #[test]
    fn default_start_is_tail_with_an_empty_filter() {
        let p = parse(None, &[]).unwrap();
        assert_eq!(p.start, Start::Tail);
        assert!(p.filter.is_empty());
        assert_eq!(
            parse(None, &[("from", "beginning")]).unwrap().start,
            Start::Beginning
        );
    }

    #[test]
    fn last_event_id_wins_over_cursor_which_wins_over_from() {
        let a = encode_memory(Family::Completion, 1, 5);
        let b = encode_memory(Family::Completion, 1, 9);
        let (a_text, b_text) = (a.to_string(), b.to_string());
        let p = parse(Some(&a_text), &[("cursor", &b_text), ("from", "beginning")]).unwrap();
        assert_eq!(
            p.start,
            Start::After {
                cursor: a,
                parameter: LAST_EVENT_ID
            }
        );
        let p = parse(Some("  "), &[("cursor", &b_text), ("from", "beginning")]).unwrap();
        assert_eq!(
            p.start,
            Start::After {
                cursor: b,
                parameter: "cursor"
            }
        );
        let p = parse(None, &[("cursor", ""), ("from", "beginning")]).unwrap();
        assert_eq!(p.start, Start::Beginning);
        assert_eq!(
            parse(None, &[("cursor", "AA")]).unwrap().start,
            Start::Beginning
        );
    }

    #[test]
    fn bad_cursors_name_their_source() {
        let e = parse(Some("not base64!"), &[]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some(LAST_EVENT_ID));
        assert_eq!(e.code, "invalid_cursor");
        let other_family = encode_memory(Family::LeaseHistory, 1, 5).to_string();
        let e = parse(None, &[("cursor", &other_family)]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("cursor"));
        assert!(e.detail.contains("lease-history"), "{}", e.detail);
        let e = parse(None, &[("from", "yesterday")]).unwrap_err();
        assert_eq!(e.parameter.as_deref(), Some("from"));
    }

    #[test]
    fn filters_parse_into_the_subscription_filter() {
        let id = ExecutionId::new(7);
        let id_text = id.to_string();
        let p = parse(
            None,
            &[
                ("kinds", "success, failure"),
                ("kinds", "success"),
                ("execution_id", &id_text),
                ("namespace", "billing"),
                ("tag", "region:eu:west"),
            ],
        )
        .unwrap();
        let want = SubscriptionFilter::new()
            .with_kinds([
                EventKind::Completion(CompletionKind::Success),
                EventKind::Completion(CompletionKind::Failure),
            ])
            .with_execution_id(id)
            .with_namespace("billing")
            .with_tag("region", "eu:west");
        assert_eq!(p.filter, want);
    }

    #[test]
    fn bad_filter_values_name_the_parameter() {
        for (pairs, param) in [
            (vec![("kinds", "acquired")], "kinds"),
            (vec![("kinds", ",")], "kinds"),
            (vec![("execution_id", "42")], "execution_id"),
            (vec![("namespace", "")], "namespace"),
            (vec![("tag", "region")], "tag"),
            (vec![("tag", ":eu")], "tag"),
            (vec![("namespace", "a"), ("namespace", "b")], "namespace"),
            (vec![("kind", "success")], "kind"),
        ] {
            let e = parse(None, &pairs).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(
                e.parameter.as_deref(),
                Some(param),
                "{pairs:?}: {}",
                e.detail
            );
        }
    }

    #[test]
    fn access_token_is_accepted_and_never_part_of_the_filter() {
        let p = parse(None, &[("access_token", "secret-secret-secret")]).unwrap();
        assert!(p.filter.is_empty());
        assert_eq!(query_token(&q(&[("access_token", "x")])), Some("x"));
    }
}
