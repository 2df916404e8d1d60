//! Log setup for every `ff` subcommand: `tracing` to stderr, filtered by
//! `FF_LOG` or else `RUST_LOG` (default `warn`), in colour only when stderr
//! is a terminal and `NO_COLOR` is unset, so redirected logs stay plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The variables a filter is read from, the first set one winning: `FF_LOG`
/// is specific to ff, so it overrides a general `RUST_LOG`.
const FILTER_VARS: [&str; 2] = ["FF_LOG", "RUST_LOG"];

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
                eprintln!("ff: ignoring {var}={directives:?}: {e}; logging warnings only");
                break;
            }
        }
    }
    EnvFilter::new("warn")
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
