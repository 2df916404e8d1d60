//! Log setup for every `ff` subcommand: `tracing` to stderr, filtered by
//! `FF_LOG` or else `RUST_LOG`, in colour only when stderr is a terminal and
//! `NO_COLOR` is unset, so redirected logs stay plain text.
//!
//! By default a user sees ff's own warnings and only errors from the
//! libraries underneath: their warnings (a connection pool's failed ping
//! after a server restart, a slow statement) describe what ff already
//! handles and reports in its own words.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The variables a filter is read from, the first set one winning: `FF_LOG`
/// is specific to ff, so it overrides a general `RUST_LOG`.
const FILTER_VARS: [&str; 2] = ["FF_LOG", "RUST_LOG"];

/// The filter when none is set: warnings from ff's crates, errors from
/// everything else.
const DEFAULT_FILTER: &str = "error,ff=warn,ff_cli=warn,ff_core=warn,ff_backend_memory=warn,\
                              ff_backend_valkey=warn,ff_backend_postgres=warn,ff_http=warn,ffstream=warn";

/// The filter from the environment; a malformed one is reported on stderr
/// (one line) and the default used.
fn filter() -> EnvFilter {
    for var in FILTER_VARS {
        let Ok(directives) = std::env::var(var) else {
            continue;
        };
        match EnvFilter::try_new(&directives) {
            Ok(filter) => return filter,
            Err(e) => {
                eprintln!("ff: ignoring {var}={directives:?}: {e}; logging ff's warnings only");
                break;
            }
        }
    }
    EnvFilter::new(DEFAULT_FILTER)
}

/// Whether log lines may carry ANSI colour codes.
fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// Install the global subscriber. Call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_ansi(colour())
        .with_writer(std::io::stderr)
        .init();
}
