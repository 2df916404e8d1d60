//! Choosing and opening a backend from a URL.
//!
//! The scheme alone picks the backend; everything after it is the
//! backend's own to read. Every message this module builds shows the URL
//! through [`redact_url`], so no password reaches an error or a log.

use ff_core::redact::redact_url;
use ff_core::EngineError;

use crate::AnyBackend;

/// The backends a URL can name, by scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Memory,
    Valkey,
    Postgres,
}

impl Scheme {
    /// The backend `url`'s scheme names, if any.
    fn of(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once(':')?;
        match scheme.to_ascii_lowercase().as_str() {
            "memory" => Some(Self::Memory),
            "valkey" | "valkeys" | "redis" | "rediss" => Some(Self::Valkey),
            "postgres" | "postgresql" => Some(Self::Postgres),
            _ => None,
        }
    }
}

/// The URL forms [`connect`] accepts, for error messages.
const ACCEPTED: &str = "use memory:, valkey://host:port[,host:port…][/db][?partitions=P] \
     (valkeys:// for TLS; any node of a cluster), redis://host:port[/db] \
     or postgres://user@host:port/db";

/// Open the backend `url` names, with that backend's default configuration,
/// as one handle that subscribes, publishes and stores cursors.
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory:` | a new in-process backend (its cursors are valid only in this process) | `memory` (default) |
/// | `valkey://`, `valkeys://` (TLS), `redis://`, `rediss://` | Valkey streams: a standalone server or any node of a cluster; `?partitions=P` splits each family | `valkey` |
/// | `postgres://`, `postgresql://` | Postgres outbox rows; applies the migrations | `postgres` |
///
/// To configure a backend beyond its URL, build it with its own crate and
/// wrap it: `AnyBackend::from(ValkeyBackend::connect(url, config).await?)`.
///
/// # Errors
///
/// `Validation` for a URL of no known scheme or of a backend whose feature
/// is off; otherwise what the backend's own connect reports (`Transport`
/// when the server cannot be reached). The URL in every message has its
/// password hidden.
pub async fn connect(url: &str) -> Result<AnyBackend, EngineError> {
    let Some(scheme) = Scheme::of(url) else {
        return Err(EngineError::validation(format!(
            "unsupported backend URL {:?}: {ACCEPTED}",
            redact_url(url)
        )));
    };
    let label = redact_url(url);
    let backend = match scheme {
        #[cfg(feature = "memory")]
        Scheme::Memory => AnyBackend::from(ff_backend_memory::MemoryBackend::new()),
        #[cfg(feature = "valkey")]
        Scheme::Valkey => {
            let config = ff_backend_valkey::ValkeyConfig::default();
            AnyBackend::from(ff_backend_valkey::ValkeyBackend::connect(url, config).await?)
        }
        #[cfg(feature = "postgres")]
        Scheme::Postgres => {
            let config = ff_backend_postgres::PostgresConfig::default();
            AnyBackend::from(ff_backend_postgres::PostgresBackend::connect(url, config).await?)
        }
        #[cfg(not(feature = "memory"))]
        Scheme::Memory => return Err(feature_off(&label, "memory")),
        #[cfg(not(feature = "valkey"))]
        Scheme::Valkey => return Err(feature_off(&label, "valkey")),
        #[cfg(not(feature = "postgres"))]
        Scheme::Postgres => return Err(feature_off(&label, "postgres")),
    };
    Ok(backend.with_label(label))
}

/// The error for a URL of a backend whose Cargo feature is off.
#[cfg(not(all(feature = "memory", feature = "valkey", feature = "postgres")))]
fn feature_off(label: &str, feature: &str) -> EngineError {
    EngineError::validation(format!(
        "backend URL {label:?} needs the {feature:?} feature of ffstream: enable it in Cargo.toml (ffstream = {{ features = [{feature:?}] }})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_of_every_backend_is_recognised() {
        assert_eq!(Scheme::of("memory:"), Some(Scheme::Memory));
        for url in [
            "valkey://h:1",
            "valkeys://h:1",
            "redis://h:1",
            "REDISS://h:1",
        ] {
            assert_eq!(Scheme::of(url), Some(Scheme::Valkey), "{url}");
        }
        assert_eq!(Scheme::of("postgres://u@h/db"), Some(Scheme::Postgres));
        assert_eq!(Scheme::of("postgresql://u@h/db"), Some(Scheme::Postgres));
        assert_eq!(Scheme::of("mysql://h"), None);
        assert_eq!(Scheme::of("no scheme"), None);
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_one_line_naming_the_accepted_ones_without_the_password() {
        let err = connect("mysql://app:s3cret@db:3306/ff").await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, EngineError::Validation { .. }), "{err:?}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("mysql://app:***@db:3306/ff"), "{message}");
        assert!(message.contains("memory:"), "{message}");
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_opens_a_memory_backend() {
        let backend = connect("memory:").await.unwrap();
        assert_eq!(ff_core::StreamBackend::backend_name(&backend), "memory");
        assert_eq!(backend.label(), "memory:");
        assert_eq!(backend.partitions(), 1);
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn a_backend_whose_feature_is_off_names_the_feature_to_enable() {
        let err = connect("postgres://app:s3cret@db/ff").await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"postgres\" feature"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
}
