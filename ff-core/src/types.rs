//! Identifiers carried by events: executions, leases, signals, waitpoints,
//! worker instances, and millisecond timestamps.
//!
//! Every id is `Clone + Debug + Eq + Hash`, has `Display`/`FromStr`, and is
//! serialised as a string (timestamps as integers).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Why an id could not be parsed: which kind of id, the offending input
/// (truncated), and what shape was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct IdParseError {
    /// The kind of id being parsed (`execution id`, `lease id`, ...).
    pub kind: &'static str,
    /// The rejected input, truncated to 80 characters.
    pub input: String,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl IdParseError {
    fn new(kind: &'static str, input: &str, reason: impl Into<String>) -> Self {
        let input = input.chars().take(80).collect();
        Self {
            kind,
            input,
            reason: reason.into(),
        }
    }
}

/// Parse a UUID in its canonical hyphenated 36-character form only.
fn parse_canonical_uuid(kind: &'static str, s: &str) -> Result<Uuid, IdParseError> {
    if s.len() != 36 {
        return Err(IdParseError::new(
            kind,
            s,
            "expected a hyphenated UUID like 11111111-1111-4111-8111-111111111111",
        ));
    }
    Uuid::parse_str(s).map_err(|e| IdParseError::new(kind, s, format!("not a UUID: {e}")))
}

/// Serde glue: serialise through `Display`, deserialise through `FromStr`.
macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// An execution: `{fp:N}:<uuid>`, where `N` is the execution's partition.
///
/// ```
/// use ff_core::types::ExecutionId;
/// let id = ExecutionId::parse("{fp:7}:11111111-1111-4111-8111-111111111111").unwrap();
/// assert_eq!(id.partition(), 7);
/// assert!(ExecutionId::parse("11111111-1111-4111-8111-111111111111").is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId {
    partition: u16,
    uuid: Uuid,
}

impl ExecutionId {
    /// An execution id from its partition and UUID.
    pub fn from_parts(partition: u16, uuid: Uuid) -> Self {
        Self { partition, uuid }
    }

    /// A fresh random (v4) execution id in `partition`.
    pub fn new(partition: u16) -> Self {
        Self::from_parts(partition, Uuid::new_v4())
    }

    /// Parse the `{fp:N}:<uuid>` form; anything else is rejected.
    pub fn parse(s: &str) -> Result<Self, IdParseError> {
        const KIND: &str = "execution id";
        const SHAPE: &str =
            "expected {fp:N}:<uuid>, e.g. {fp:0}:11111111-1111-4111-8111-111111111111";
        let rest = s
            .strip_prefix("{fp:")
            .ok_or_else(|| IdParseError::new(KIND, s, SHAPE))?;
        let (partition, uuid) = rest
            .split_once("}:")
            .ok_or_else(|| IdParseError::new(KIND, s, SHAPE))?;
        if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdParseError::new(KIND, s, SHAPE));
        }
        if partition.len() > 1 && partition.starts_with('0') {
            return Err(IdParseError::new(
                KIND,
                s,
                "partition must not have leading zeros (one id, one spelling)",
            ));
        }
        let partition = partition.parse::<u16>().map_err(|_| {
            IdParseError::new(KIND, s, "partition must be an integer from 0 to 65535")
        })?;
        let uuid = parse_canonical_uuid(KIND, uuid)?;
        Ok(Self { partition, uuid })
    }

    /// The partition (`N` in `{fp:N}`).
    pub fn partition(&self) -> u16 {
        self.partition
    }

    /// The UUID part.
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{fp:{}}}:{}", self.partition, self.uuid.hyphenated())
    }
}

impl FromStr for ExecutionId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
string_serde!(ExecutionId);

/// Defines a UUID newtype with `new`, `parse`, `Display`, `FromStr` and serde.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random (v4) id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wrap an existing UUID.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Parse the canonical hyphenated UUID form.
            pub fn parse(s: &str) -> Result<Self, IdParseError> {
                parse_canonical_uuid($kind, s).map(Self)
            }

            /// The UUID.
            pub fn uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        string_serde!($name);
    };
}

uuid_id!(
    /// A lease on an execution, held by one worker at a time.
    LeaseId,
    "lease id"
);
uuid_id!(
    /// A signal sent to an execution.
    SignalId,
    "signal id"
);
uuid_id!(
    /// A point at which an execution waits for signals.
    WaitpointId,
    "waitpoint id"
);

/// A worker process instance: a non-empty string of at most
/// [`WorkerInstanceId::MAX_LEN`] bytes without control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerInstanceId(String);

impl WorkerInstanceId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validate and wrap a worker instance id.
    pub fn parse(s: &str) -> Result<Self, IdParseError> {
        const KIND: &str = "worker instance id";
        if s.is_empty() {
            return Err(IdParseError::new(KIND, s, "must not be empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(IdParseError::new(
                KIND,
                s,
                format!("must be at most {} bytes, got {}", Self::MAX_LEN, s.len()),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(IdParseError::new(
                KIND,
                s,
                "must not contain control characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerInstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for WorkerInstanceId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
string_serde!(WorkerInstanceId);

/// Milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }
}

impl fmt::Display for TimestampMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TimestampMs {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .map(Self)
            .map_err(|_| IdParseError::new("timestamp", s, "expected integer milliseconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "{fp:0}:11111111-1111-4111-8111-111111111111";

    #[test]
    fn execution_id_accepts_the_canonical_form_and_round_trips() {
        let id = ExecutionId::parse(GOOD).unwrap();
        assert_eq!(id.partition(), 0);
        assert_eq!(id.to_string(), GOOD);
        let big = ExecutionId::parse("{fp:65535}:11111111-1111-4111-8111-111111111111").unwrap();
        assert_eq!(big.partition(), 65535);
    }

    #[test]
    fn execution_id_rejects_malformed_input() {
        for bad in [
            "",
            "11111111-1111-4111-8111-111111111111",
            "{fp:}:11111111-1111-4111-8111-111111111111",
            "{fp:-1}:11111111-1111-4111-8111-111111111111",
            "{fp:65536}:11111111-1111-4111-8111-111111111111",
            "{fp:1x}:11111111-1111-4111-8111-111111111111",
            "{fp:0}11111111-1111-4111-8111-111111111111",
            "{fp:0}:not-a-uuid",
            "{fp:0}:11111111111141118111111111111111",
            "{fp:0}:11111111-1111-4111-8111-111111111111 ",
            "{fp: 0}:11111111-1111-4111-8111-111111111111",
            "{fp:007}:11111111-1111-4111-8111-111111111111",
        ] {
            let err = ExecutionId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "execution id", "{bad:?}");
        }
    }

    #[test]
    fn ids_serialise_as_strings() {
        let id = ExecutionId::parse(GOOD).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{GOOD}\""));
        let back: ExecutionId = serde_json::from_str(&format!("\"{GOOD}\"")).unwrap();
        assert_eq!(back, id);
        let lease = LeaseId::new();
        let text = serde_json::to_string(&lease).unwrap();
        assert_eq!(serde_json::from_str::<LeaseId>(&text).unwrap(), lease);
        assert!(serde_json::from_str::<LeaseId>("\"nope\"").is_err());
        assert_eq!(serde_json::to_string(&TimestampMs(5)).unwrap(), "5");
    }

    #[test]
    fn worker_instance_id_is_bounded_and_non_empty() {
        assert!(WorkerInstanceId::parse("worker-1").is_ok());
        assert!(WorkerInstanceId::parse("").is_err());
        assert!(WorkerInstanceId::parse(&"x".repeat(257)).is_err());
        assert!(WorkerInstanceId::parse("a\nb").is_err());
    }
}
