//! The routes and their handlers.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use ff_core::backend::validate_new_event;
use ff_core::stream_events::{new_event_from_json, Family};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Need};
use crate::body;
use crate::client::{Client, ClientGuard};
use crate::cors;
use crate::errors::ApiError;
use crate::gateway::GatewayState;
use crate::metrics::{self, Metrics};
use crate::params::{self, LAST_EVENT_ID};
use crate::server::{ServedConnection, ServedOverTls};
use crate::session;
use crate::viewer;

type AppState = State<Arc<GatewayState>>;

/// Largest `POST /v1/session` body: a token and a little JSON.
const SESSION_BODY_LIMIT: usize = 8 * 1024;

pub(crate) fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/", get(viewer::page))
        .route("/viewer.js", get(viewer::script))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/streams/{family}", get(stream).post(publish))
        .route("/v1/session", post(session_create).delete(session_delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), cors::cors))
        .with_state(state)
}

fn family_of(
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Family, ApiError> {
    let Path(name) =
        path.map_err(|_| ApiError::not_found("no such stream").with_parameter("family"))?;
    name.parse::<Family>()
        .map_err(|e| ApiError::not_found(e.to_string()).with_parameter("family"))
}

fn query_of(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::bad_parameter(
            "query",
            format!("the query string is malformed: {}", e.body_text()),
        )
    })
}

/// The query of a read request, once its token (header, `access_token`
/// or cookie) is found to allow reading.
fn read_query(
    state: &GatewayState,
    headers: &HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let query = query_of(query)?;
    auth::authorize(
        &state.config.auth,
        headers,
        params::query_token(&query),
        Need::Read,
    )?;
    Ok(query)
}

fn shutting_down(state: &GatewayState) -> Result<(), ApiError> {
    if *state.shutdown.borrow() {
        return Err(ApiError::unavailable(
            "shutting_down",
            "the gateway is shutting down; reconnect with Last-Event-ID",
            state.config.retry_after,
        ));
    }
    Ok(())
}

/// `GET /v1/streams/{family}`: the SSE stream.
async fn stream(
    State(state): AppState,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    open_stream(state, path, headers, query)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn open_stream(
    state: Arc<GatewayState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let family = family_of(path)?;
    let query = read_query(&state, &headers, query)?;
    shutting_down(&state)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::bad_parameter(LAST_EVENT_ID, "Last-Event-ID is not visible ASCII")
        })?),
    };
    let params = params::parse_stream_params(family, last_event_id, &query)?;
    let guard = ClientGuard::admit(&state.metrics, state.config.max_clients).ok_or_else(|| {
        ApiError::unavailable(
            "too_many_clients",
            format!(
                "the gateway serves at most {} client{} at once; retry later",
                state.config.max_clients,
                if state.config.max_clients == 1 {
                    ""
                } else {
                    "s"
                }
            ),
            state.config.retry_after,
        )
    })?;
    let client = Client::open(state, family, params, guard).await?;
    let mut resp = Response::new(Body::from_stream(client.into_body_stream()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// `POST /v1/streams/{family}`: publish one event or an array of events.
async fn publish(
    State(state): AppState,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    publish_inner(state, path, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn publish_inner(
    state: Arc<GatewayState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let family = family_of(path).map_err(body::closing)?;
    auth::authorize(&state.config.auth, &headers, None, Need::Write).map_err(body::closing)?;
    let Some(publisher) = state.publisher.clone() else {
        let mut e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "publishing is not enabled on this gateway",
        );
        e.allow = Some("GET");
        return Err(body::closing(e));
    };
    let body = body::read_limited(
        &headers,
        body,
        state.config.max_body_bytes,
        state.config.body_read_timeout,
    )
    .await?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_parameter("body", format!("the body is not valid JSON: {e}")))?;
    let (values, is_batch) = match value {
        Value::Array(values) => (values, true),
        v @ Value::Object(_) => (vec![v], false),
        _ => {
            return Err(ApiError::bad_parameter(
                "body",
                "the body must be one event object or an array of event objects",
            ))
        }
    };
    if values.is_empty() {
        return Err(ApiError::bad_parameter("body", "the array holds no event"));
    }
    let max = state.config.max_batch_events;
    if values.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{} events in one request; at most {max} are accepted",
                values.len()
            ),
        )
        .with_parameter("body"));
    }
    let element = |i: usize| {
        if is_batch {
            format!("body[{i}]")
        } else {
            "body".to_owned()
        }
    };
    let mut events = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let (draft, meta) = new_event_from_json(v, Some(family)).map_err(|e| {
            let parameter = match &e.field {
                Some(field) => format!("{}.{field}", element(i)),
                None => element(i),
            };
            ApiError::bad_parameter(parameter, e.detail)
        })?;
        validate_new_event(&draft, &meta)
            .map_err(|e| ApiError::bad_parameter(element(i), e.to_string()))?;
        events.push((draft, meta));
    }
    let n = events.len() as u64;
    let retry = state.config.retry_after;
    let published = tokio::time::timeout(
        state.config.backend_timeout,
        publisher.publish_batch(events),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable(
            "backend_unavailable",
            "the backend did not confirm the publish in time; it may or may not have been stored",
            retry,
        )
    })?
    .map_err(|e| ApiError::from_engine(&e, Some("body"), retry))?;
    Metrics::add(&state.metrics.published_events, n);
    let cursors: Vec<String> = published.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "cursors": cursors })).into_response())
}

#[derive(Deserialize)]
struct SessionBody {
    token: String,
}

/// Whether the session cookie must be `Secure`: configured so, served over
/// TLS here, or (when trusted) forwarded from an HTTPS proxy.
fn cookie_secure(state: &GatewayState, headers: &HeaderMap, extensions: &Extensions) -> bool {
    let forwarded_https = || {
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
    };
    state.config.secure_cookie
        || extensions.get::<ServedOverTls>().is_some()
        || (state.config.trust_forwarded_proto && forwarded_https())
}

/// `POST /v1/session`: `{"token": "..."}` as `application/json` from the
/// gateway's own origin → an HttpOnly cookie holding a read-only session
/// value (never the token) that authorises reads from this browser (the
/// viewer page's sign-in).
///
/// The sign-in body proves nothing until it is read, so reading it must
/// cost the server little: it is small ([`SESSION_BODY_LIMIT`]), must
/// arrive within [`GatewayConfig::session_body_timeout`], and meanwhile the
/// connection may be evicted to admit another.
///
/// [`GatewayConfig::session_body_timeout`]: crate::GatewayConfig::session_body_timeout
async fn session_create(
    State(state): AppState,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> Response {
    if let Err(e) = session::check_sign_in_request(&headers, uri.authority().map(|a| a.as_str())) {
        return body::closing(e).into_response();
    }
    let evictable = extensions
        .get::<ServedConnection>()
        .map(ServedConnection::unauthenticated_read);
    let read = body::read_limited(
        &headers,
        body,
        SESSION_BODY_LIMIT,
        state.config.session_body_timeout(),
    )
    .await;
    drop(evictable);
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let Ok(body) = serde_json::from_slice::<SessionBody>(&bytes) else {
        return ApiError::bad_parameter("body", "expected a JSON object {\"token\": \"...\"}")
            .into_response();
    };
    if !auth::is_valid(&state.config.auth, &body.token) {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        );
        e.www_authenticate = Some("Bearer realm=\"ff\", error=\"invalid_token\"");
        return e.into_response();
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if !state.config.auth.is_no_auth() {
        if let Ok(v) = HeaderValue::from_str(&auth::session_set_cookie(
            &body.token,
            cookie_secure(&state, &headers, &extensions),
        )) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `DELETE /v1/session`: remove the cookie.
async fn session_delete(
    State(state): AppState,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let secure = cookie_secure(&state, &headers, &extensions);
    if let Ok(v) = HeaderValue::from_str(&auth::session_clear_cookie(secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /healthz`: 200 while serving, 503 once shutting down. Needs no token.
async fn healthz(State(state): AppState) -> Response {
    let backend = state.backend.backend_name();
    if *state.shutdown.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting_down", "backend": backend })),
        )
            .into_response();
    }
    Json(json!({ "status": "ok", "backend": backend })).into_response()
}

/// `GET /metrics`: Prometheus text. Needs a read token.
async fn metrics(
    State(state): AppState,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(e) = read_query(&state, &headers, query) {
        return e.into_response();
    }
    let text = metrics::render(&state.metrics.snapshot(), &state.hubs.stats());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/status`: per family, whether the gateway follows it live, the
/// latest position it has delivered (the head it knows), how old that
/// event was on arrival, and its clients. Needs a read token; the viewer
/// page shows it as each family's lag.
async fn status(
    State(state): AppState,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(e) = read_query(&state, &headers, query) {
        return e.into_response();
    }
    let stats = state.hubs.stats();
    let families: serde_json::Map<String, Value> = Family::ALL
        .iter()
        .map(|family| {
            let hub = stats.iter().find(|s| s.family == *family);
            let entry = json!({
                "live": hub.is_some(),
                "position": hub.and_then(|h| h.position.as_ref()).map(ToString::to_string),
                "delivery_lag_ms": hub.and_then(|h| h.delivery_lag_ms),
                "clients": hub.map_or(0, |h| h.clients),
            });
            (family.as_str().to_owned(), entry)
        })
        .collect();
    let mut resp = Json(json!({ "families": families })).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn not_found() -> Response {
    ApiError::not_found("no such route; streams are at /v1/streams/{family}").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this route",
    )
    .into_response()
}
