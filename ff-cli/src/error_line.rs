//! The one line `ff` prints when a command fails: every cause once (error
//! chains often repeat their source's text inside their own), whitespace
//! flattened, overlong parts abbreviated (never the cursor to resume
//! from: an error that names one keeps it whole), and — for the failures
//! people hit most — what to do about it.

use std::fmt::Write as _;

use ff_core::engine_error::EngineError;

/// Longest part of a message kept whole; longer parts (echoed input) are
/// abbreviated to a marked prefix.
const MAX_PART: usize = 200;

/// `err` and its causes as one line.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        for part in text.split(": ").map(flatten) {
            if part.is_empty() || parts.contains(&part) || is_parser_detail(&part) {
                continue;
            }
            parts.push(part);
        }
    }
    let mut line = parts
        .iter()
        .map(|p| abbreviate(p))
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(resume) = resume_cursor(err) {
        if !line.contains(&resume) {
            let _ = write!(line, "; resume from cursor {resume}");
        }
    }
    if let Some(hint) = hint(err, &line) {
        let _ = write!(line, " — {hint}");
    }
    line
}

/// The cursor an [`EngineError`] in `err`'s chain says to resume from.
fn resume_cursor(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|c| c.downcast_ref::<EngineError>())
        .and_then(|e| match e {
            EngineError::CursorExpired {
                oldest: Some(oldest),
                ..
            } => Some(oldest.to_string()),
            EngineError::StreamDisconnected { cursor } => Some(cursor.to_string()),
            _ => None,
        })
}

/// Whitespace runs (newlines included) as single spaces.
fn flatten(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lines a protocol parser adds after its summary (`Unexpected \`33\``),
/// which name bytes nobody can act on.
fn is_parser_detail(part: &str) -> bool {
    part.starts_with("Unexpected `") || part.starts_with("Parse error at")
}

/// `part` itself, or its first characters and how long it was.
fn abbreviate(part: &str) -> String {
    let chars = part.chars().count();
    if chars <= MAX_PART {
        return part.to_owned();
    }
    let head: String = part.chars().take(MAX_PART / 2).collect();
    format!("{head}… ({chars} characters)")
}

/// What to do about a failure recognised from its causes.
fn hint(err: &anyhow::Error, line: &str) -> Option<&'static str> {
    let io_kind = err
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    // Servers and client crates capitalise their messages differently.
    let lower = line.to_lowercase();
    let has = |needle: &str| lower.contains(&needle.to_lowercase());
    if io_kind == Some(std::io::ErrorKind::ConnectionRefused) || has("Connection refused") {
        Some("nothing is listening there: start the server, or check the host and port")
    } else if has("parse error") || has("ParseError") || has("invalid response") {
        Some("the server did not answer in the Valkey/Redis protocol (an HTTP server, or another service?): check the port")
    } else if has("WRONGPASS")
        || has("invalid username-password")
        || has("password authentication failed")
    {
        Some("authentication failed: check the user name and password in the URL")
    } else if has("NOPERM") && !has("docs/valkey.md") {
        Some("the account lacks a permission ff needs: docs/valkey.md lists the rights per role")
    } else if io_kind == Some(std::io::ErrorKind::TimedOut)
        || has("within") && has("could not connect")
    {
        Some(
            "no answer in time: is the host reachable, and is it the kind of server the URL names?",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source inside its own message too.
    #[derive(Debug)]
    struct Wrapped {
        source: std::io::Error,
    }

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "valkey transport error: {}", self.source)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_repeated_cause_is_printed_once_with_what_to_do() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cause = io.to_string();
        let err = anyhow::Error::new(Wrapped { source: io }).context(format!(
            "connecting to valkey://127.0.0.1:1: {cause}: connecting to valkey://127.0.0.1:1: {cause}"
        ));
        let line = one_line(&err);
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
        assert_eq!(line.matches("connecting to").count(), 1, "{line}");
        assert!(line.contains("nothing is listening there"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_parser_dump_becomes_one_line_naming_the_protocol() {
        let err = anyhow::anyhow!(
            "parse error - ParseError: Parse error at 1\nUnexpected `33`\nUnexpected `60`\n"
        )
        .context("connecting to valkey://127.0.0.1:8080");
        let line = one_line(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(!line.contains("Unexpected"), "{line}");
        assert!(
            line.contains("not answer in the Valkey/Redis protocol"),
            "{line}"
        );
    }

    #[test]
    fn long_echoed_input_is_abbreviated() {
        let input = "A".repeat(100_000);
        let err = anyhow::anyhow!("invalid cursor").context(format!("--from {input:?}"));
        let line = one_line(&err);
        assert!(line.len() < 400, "{} characters", line.len());
        assert!(line.contains(" characters)"), "{line}");
    }

    #[test]
    fn plain_errors_pass_unchanged() {
        let err = anyhow::anyhow!("unknown family \"leases\"");
        assert_eq!(one_line(&err), "unknown family \"leases\"");
    }

    #[test]
    fn authentication_and_permission_failures_say_what_to_do() {
        let auth = anyhow::anyhow!("WRONGPASS invalid username-password pair or user is disabled");
        assert!(one_line(&auth).contains("check the user name and password"));
        let perm = anyhow::anyhow!("NOPERM User app has no permissions to run the 'xadd' command");
        assert!(one_line(&perm).contains("lacks a permission"));
    }
}
