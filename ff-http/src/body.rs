//! Reading a request body within a size limit and a deadline.
//!
//! Invariant: at most `limit` bytes are ever buffered, a declared
//! `Content-Length` over the limit is refused before a byte is read, a
//! chunked body is refused as soon as its running size passes the limit,
//! and the whole body must arrive before the deadline. Callers authorise
//! from the headers first, so an unauthorised client never gets here.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::errors::ApiError;

/// A body that could not be read, as the answer to send.
fn too_large(limit: usize) -> ApiError {
    closing(
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes; send fewer events per request"),
        )
        .with_parameter("body"),
    )
}

/// Mark an answer sent before the body was read whole: the connection
/// closes after it, so unread body bytes are never taken for a request.
pub(crate) fn closing(mut e: ApiError) -> ApiError {
    e.connection_close = true;
    e
}

/// Refuse at once a declared `Content-Length` over `limit`.
pub(crate) fn check_declared_length(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let declared = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            closing(ApiError::bad_parameter(
                "Content-Length",
                "Content-Length is not a number",
            ))
        })?;
    if declared > limit as u64 {
        return Err(too_large(limit));
    }
    Ok(())
}

/// Read `body` whole: at most `limit` bytes, within `timeout`.
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    check_declared_length(headers, limit)?;
    let read = async {
        let mut body = body;
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                closing(ApiError::bad_parameter(
                    "body",
                    format!("the body could not be read: {e}"),
                ))
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(read) => read,
        Err(_) => Err(closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within {} s; send it at once",
                timeout.as_secs_f64()
            ),
        ))),
    }
}

/// The `Connection: close` header value.
pub(crate) const CLOSE: HeaderValue = HeaderValue::from_static("close");

#[cfg(test)]
mod tests {
    use super::*;

    fn length(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_str(n).unwrap());
        h
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_413_before_reading() {
        let e = read_limited(
            &length("10000000000"),
            Body::empty(),
            1024,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.connection_close);
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_413() {
        let chunks = futures::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 200]))),
        );
        let e = read_limited(
            &HeaderMap::new(),
            Body::from_stream(chunks),
            1024,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out_with_408() {
        let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let e = read_limited(
            &HeaderMap::new(),
            Body::from_stream(stalled),
            1024,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
    }
}
