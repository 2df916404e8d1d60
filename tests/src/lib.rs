//! Integration tests for the ff workspace.
//!
//! The conformance suite runs every backend (memory, Valkey, Postgres, HTTP)
//! against real servers, and the fault tests kill and restart those servers
//! mid-stream. [`support`] starts the servers: throwaway Valkey and Postgres
//! processes on free loopback ports, or the external ones named by
//! `FF_TEST_VALKEY_URL` / `FF_TEST_POSTGRES_URL`. No server is mocked.
//!
//! Every test binary links every backend, so the integration tests are one
//! binary per area (`tests/tests/<area>/main.rs`: `memory`, `mutant`,
//! `valkey`, `valkey_cluster`, `postgres`, `http`), each test file a module
//! of it: `cargo test -p ff-tests --test valkey valkey_history::` runs one
//! file. Tests in one binary share its servers, so a test that inspects a
//! shared server picks out its own clients, keys or schema. `checker` (the
//! fault-injection checker's seed budget) and `group_faults` (member
//! processes killed over every backend) are areas of one file each;
//! `tracing_levels` must be a process of its own, since it installs the
//! global tracing subscriber and reads every line the process logs.

pub mod acl;
pub mod browser;
pub mod checker;
pub mod group_process;
pub mod harness;
pub mod hostile_valkey;
pub mod http_client;
pub mod mutant;
pub mod support;

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeExamples;

/// The Rust examples of the pages under `docs/`, compiled as doc tests so
/// they stay true.
#[cfg(doctest)]
pub mod docs_examples {
    #[doc = include_str!("../../docs/design.md")]
    pub struct Design;
    #[doc = include_str!("../../docs/valkey.md")]
    pub struct Valkey;
    #[doc = include_str!("../../docs/postgres.md")]
    pub struct Postgres;
    #[doc = include_str!("../../docs/http.md")]
    pub struct Http;
    #[doc = include_str!("../../docs/groups.md")]
    pub struct Groups;
    #[doc = include_str!("../../docs/writing-a-backend.md")]
    pub struct WritingABackend;
    #[doc = include_str!("../../docs/checker.md")]
    pub struct Checker;
}
