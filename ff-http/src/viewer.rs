//! The live viewer page at `GET /`: plain HTML and JavaScript embedded in
//! the binary (no build step, no CDN), served under a strict Content
//! Security Policy (scripts from this origin only, no inline script). It
//! signs in through `POST /v1/session` (an HttpOnly cookie, so the token
//! never sits in page script or URLs), opens an `EventSource` on the chosen
//! family with the chosen filters and resumes automatically: the browser
//! reconnects with `Last-Event-ID` after a network blip, and after any HTTP
//! error (a 503 at the client cap, a proxy's 502), when the browser gives
//! up, the page reconnects from the latest position the stream gave it —
//! an event's, or an `ff-position` message's (the start position, a
//! checkpoint), so a filtered page that has shown nothing yet loses nothing.
//!
//! It shows one line per event (long ids cut with an ellipsis, cursors as
//! their last characters and a short digest, which differ from row to row;
//! the full value is the tooltip and a click copies it), highlights
//! failures and expired leases, pauses and resumes without losing its
//! place (events are held while paused, and past a cap the stream is closed
//! at the last held event and reopened from it), charts events per second
//! by kind over the last five minutes on a scale set by the typical second
//! shown, not by a burst (taller seconds are clipped and marked), and shows
//! per family whether it has caught up with the gateway's live position (as
//! the stream's `ff-position` messages say) or the gateway's lag
//! (`GET /v1/status`). It never reads a cursor's bytes.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../assets/viewer.html");
const SCRIPT: &str = include_str!("../assets/viewer.js");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`.
pub(crate) async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

/// `GET /viewer.js`.
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}
