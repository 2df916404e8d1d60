//! Errors as HTTP answers and as mid-stream `ff-error` messages.
//!
//! Every error body is one JSON object:
//! `{"error": CODE, "detail": TEXT, "parameter"?: NAME, "cursor"?: CURSOR,
//! "oldest"?: CURSOR}`. `CODE` is stable and machine-readable; `detail`
//! says what was wrong and what to do; `parameter` names the offending query
//! parameter, header or body element. No error ever carries a credential.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ff_core::engine_error::EngineError;
use ff_core::stream_subscribe::StreamCursor;
use serde_json::{json, Map, Value};

/// An error answered before a stream started (or instead of a publish).
/// Boxed, so `Result<_, ApiError>` stays small.
#[derive(Debug)]
pub(crate) struct ApiError(Box<ErrorInfo>);

/// The parts of an [`ApiError`].
#[derive(Debug)]
pub(crate) struct ErrorInfo {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub parameter: Option<String>,
    pub cursor: Option<StreamCursor>,
    pub oldest: Option<StreamCursor>,
    pub retry_after: Option<Duration>,
    pub www_authenticate: Option<&'static str>,
    pub allow: Option<&'static str>,
    /// Close the connection after this answer (the body was not read).
    pub connection_close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self(Box::new(ErrorInfo {
            status,
            code,
            detail: detail.into(),
            parameter: None,
            cursor: None,
            oldest: None,
            retry_after: None,
            www_authenticate: None,
            allow: None,
            connection_close: false,
        }))
    }

    /// 400 naming the offending parameter.
    pub fn bad_parameter(parameter: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", detail).with_parameter(parameter)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, detail: impl Into<String>, retry: Duration) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail);
        e.retry_after = Some(retry);
        e
    }

    pub fn with_parameter(mut self, parameter: impl Into<String>) -> Self {
        self.parameter = Some(parameter.into());
        self
    }

    /// Map a backend error at subscribe or publish time. `parameter` names
    /// where the cursor (or other input) came from.
    pub fn from_engine(err: &EngineError, parameter: Option<&str>, retry: Duration) -> Self {
        let status = engine_status(err);
        let mut e = Self::new(status, engine_code(err), engine_detail(err));
        if status == StatusCode::BAD_REQUEST {
            e.parameter = parameter.map(str::to_owned);
        }
        if let EngineError::CursorExpired { cursor, oldest, .. } = err {
            e.cursor = Some(cursor.clone());
            e.oldest = oldest.clone();
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            e.retry_after = Some(retry);
        }
        e
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("error".into(), self.code.into());
        if let Some(p) = &self.parameter {
            obj.insert("parameter".into(), p.clone().into());
        }
        obj.insert("detail".into(), self.detail.clone().into());
        if let Some(c) = &self.cursor {
            obj.insert("cursor".into(), c.to_string().into());
        }
        if let Some(c) = &self.oldest {
            obj.insert("oldest".into(), c.to_string().into());
        }
        Value::Object(obj)
    }
}

impl std::ops::Deref for ApiError {
    type Target = ErrorInfo;
    fn deref(&self) -> &ErrorInfo {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorInfo {
        &mut self.0
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(retry) = self.retry_after {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry.as_secs().max(1)),
            );
        }
        if let Some(challenge) = self.www_authenticate {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.connection_close {
            headers.insert(header::CONNECTION, crate::body::CLOSE);
        }
        resp
    }
}

/// The HTTP status a backend error maps to.
fn engine_status(err: &EngineError) -> StatusCode {
    match err {
        EngineError::InvalidCursor { .. } | EngineError::Validation { .. } => {
            StatusCode::BAD_REQUEST
        }
        EngineError::CursorExpired { .. } => StatusCode::GONE,
        EngineError::Transport { .. } | EngineError::StreamDisconnected { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        EngineError::Unavailable { .. } => StatusCode::NOT_IMPLEMENTED,
        EngineError::Backend { .. } | EngineError::Corrupt { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The stable error code of a backend error (HTTP bodies and `ff-error`).
pub(crate) fn engine_code(err: &EngineError) -> &'static str {
    match err {
        EngineError::InvalidCursor { .. } => "invalid_cursor",
        EngineError::Validation { .. } => "invalid_parameter",
        EngineError::CursorExpired { .. } => "cursor_expired",
        EngineError::Transport { .. } => "backend_unavailable",
        EngineError::StreamDisconnected { .. } => "disconnected",
        EngineError::Unavailable { .. } => "not_supported",
        EngineError::Backend { .. } => "backend_error",
        EngineError::Corrupt { .. } => "corrupt",
        _ => "internal",
    }
}

/// The human-readable detail of a backend error. Backends keep credentials
/// out of their messages; this adds what an HTTP client should do.
fn engine_detail(err: &EngineError) -> String {
    match err {
        EngineError::CursorExpired { oldest, .. } => match oldest {
            Some(_) => format!("{err} (pass it as `?cursor=`), or reconnect with `from=tail`"),
            None => format!("{err} (`from=tail` or `from=beginning`)"),
        },
        EngineError::Transport { .. } => {
            format!("{err}. The gateway cannot reach its backend; retry later")
        }
        _ => err.to_string(),
    }
}

/// The JSON of an `ff-error` message for a backend error met after the
/// stream started. `position` is the client's resume position.
pub(crate) fn stream_error_json(err: &EngineError, position: &StreamCursor) -> Value {
    let mut obj = Map::new();
    obj.insert("error".into(), engine_code(err).into());
    obj.insert("detail".into(), engine_detail(err).into());
    match err {
        EngineError::CursorExpired { cursor, oldest, .. } => {
            obj.insert("cursor".into(), cursor.to_string().into());
            if let Some(o) = oldest {
                obj.insert("oldest".into(), o.to_string().into());
            }
        }
        EngineError::Corrupt { cursor, .. } => {
            obj.insert("cursor".into(), cursor.to_string().into());
        }
        _ => {
            obj.insert("cursor".into(), position.to_string().into());
        }
    }
    Value::Object(obj)
}

/// The JSON of an `ff-error` message for a corrupt entry (not terminal).
pub(crate) fn corrupt_json(cursor: &StreamCursor, detail: &str) -> Value {
    json!({ "error": "corrupt", "cursor": cursor.to_string(), "detail": detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_maps_to_410_with_oldest() {
        let err = EngineError::CursorExpired {
            cursor: StreamCursor::new(vec![3u8, 2, 1]),
            oldest: Some(StreamCursor::new(vec![3u8, 2, 9])),
            detail: "evicted".into(),
        };
        let e = ApiError::from_engine(&err, Some("cursor"), Duration::from_secs(5));
        assert_eq!(e.status, StatusCode::GONE);
        let body = e.body();
        assert_eq!(body["error"], "cursor_expired");
        assert_eq!(
            body["oldest"],
            StreamCursor::new(vec![3u8, 2, 9]).to_string()
        );
        assert!(body.get("parameter").is_none());
    }

    #[test]
    fn invalid_cursor_names_the_parameter_and_transport_is_503() {
        let e = ApiError::from_engine(
            &EngineError::invalid_cursor("wrong family"),
            Some("Last-Event-ID"),
            Duration::from_secs(5),
        );
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["parameter"], "Last-Event-ID");
        let t = ApiError::from_engine(
            &EngineError::transport("valkey", std::io::Error::other("refused")),
            None,
            Duration::from_secs(7),
        );
        assert_eq!(t.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(t.retry_after, Some(Duration::from_secs(7)));
    }
}
