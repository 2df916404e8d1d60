//! The SSE gateway over the wire: the HTTP suite over every backend, and
//! the viewer page and browser session in a real Chromium.
//!
//! One binary per area: every test binary links every backend, so the
//! area's test files are modules of this one binary rather than binaries of
//! their own. Run one file's tests with
//! `cargo test -p ff-tests --test http <module>::`.

mod http_browser_session;
mod http_browser_viewer;
mod http_sse;
