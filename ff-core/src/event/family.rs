//! The four families and their kinds: the names used by filters, the CLI,
//! URLs and SSE `event:` fields.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A kind or family name that is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {input:?}; expected one of: {expected}")]
pub struct UnknownName {
    /// What was being parsed (`family`, `completion kind`, ...).
    pub what: &'static str,
    /// The rejected input (truncated to 80 characters).
    pub input: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

impl UnknownName {
    fn new(what: &'static str, input: &str, names: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            what,
            input: input.chars().take(80).collect(),
            expected: names.into_iter().collect::<Vec<_>>().join(", "),
        }
    }
}

/// Defines a fieldless name enum with `as_str`, `ALL`, `Display`, `FromStr`
/// and string serde.
macro_rules! name_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The kebab/lower-case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName::new($what, s, Self::ALL.iter().map(|v| v.as_str())))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_enum!(
    /// One of the four event families; each is its own ordered stream.
    Family, "family", {
        /// Lease acquired / renewed / expired / reclaimed / revoked.
        LeaseHistory => "lease-history",
        /// An execution reached a final outcome.
        Completion => "completion",
        /// A signal was delivered to an execution.
        SignalDelivery => "signal-delivery",
        /// A tag was attached to or cleared from an execution.
        InstanceTags => "instance-tags",
    }
);

impl Family {
    /// The family's byte in every cursor (byte 1): 1..=4.
    pub fn cursor_byte(self) -> u8 {
        match self {
            Family::LeaseHistory => 1,
            Family::Completion => 2,
            Family::SignalDelivery => 3,
            Family::InstanceTags => 4,
        }
    }

    /// The family's position in [`Family::ALL`] (`0..4`), for arrays
    /// that hold one entry per family.
    ///
    /// ```
    /// use ff_core::event::Family;
    /// for family in Family::ALL {
    ///     assert_eq!(Family::ALL[family.index()], *family);
    /// }
    /// ```
    pub fn index(self) -> usize {
        usize::from(self.cursor_byte() - 1)
    }

    /// The family whose cursor byte is `b`.
    pub fn from_cursor_byte(b: u8) -> Option<Family> {
        Family::ALL.iter().copied().find(|f| f.cursor_byte() == b)
    }

    /// Every kind this family's events can have.
    pub fn kinds(self) -> Vec<EventKind> {
        match self {
            Family::LeaseHistory => LeaseHistoryKind::ALL
                .iter()
                .map(|k| EventKind::LeaseHistory(*k))
                .collect(),
            Family::Completion => CompletionKind::ALL
                .iter()
                .map(|k| EventKind::Completion(*k))
                .collect(),
            Family::SignalDelivery => SignalDeliveryKind::ALL
                .iter()
                .map(|k| EventKind::SignalDelivery(*k))
                .collect(),
            Family::InstanceTags => InstanceTagKind::ALL
                .iter()
                .map(|k| EventKind::InstanceTags(*k))
                .collect(),
        }
    }
}

name_enum!(
    /// Kinds of [`LeaseHistoryEvent`](crate::event::LeaseHistoryEvent): its variants.
    LeaseHistoryKind, "lease-history kind", {
        /// `Acquired`.
        Acquired => "acquired",
        /// `Renewed`.
        Renewed => "renewed",
        /// `Expired`.
        Expired => "expired",
        /// `Reclaimed`.
        Reclaimed => "reclaimed",
        /// `Revoked`.
        Revoked => "revoked",
    }
);

name_enum!(
    /// Kinds of [`CompletionEvent`](crate::event::CompletionEvent): its outcomes.
    CompletionKind, "completion kind", {
        /// `CompletionOutcome::Success`.
        Success => "success",
        /// `CompletionOutcome::Failure`.
        Failure => "failure",
        /// `CompletionOutcome::Cancelled`.
        Cancelled => "cancelled",
        /// Any `CompletionOutcome::Other(_)`.
        Other => "other",
    }
);

name_enum!(
    /// Kinds of [`SignalDeliveryEvent`](crate::event::SignalDeliveryEvent): its effects.
    SignalDeliveryKind, "signal-delivery kind", {
        /// `SignalDeliveryEffect::Satisfied`.
        Satisfied => "satisfied",
        /// `SignalDeliveryEffect::Buffered`.
        Buffered => "buffered",
        /// `SignalDeliveryEffect::Deduped`.
        Deduped => "deduped",
        /// Any `SignalDeliveryEffect::Other(_)`.
        Other => "other",
    }
);

name_enum!(
    /// Kinds of [`InstanceTagEvent`](crate::event::InstanceTagEvent): its variants.
    InstanceTagKind, "instance-tags kind", {
        /// `Attached`.
        Attached => "attached",
        /// `Cleared`.
        Cleared => "cleared",
    }
);

/// The kind of an event of any family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// A lease-history kind.
    LeaseHistory(LeaseHistoryKind),
    /// A completion kind.
    Completion(CompletionKind),
    /// A signal-delivery kind.
    SignalDelivery(SignalDeliveryKind),
    /// An instance-tags kind.
    InstanceTags(InstanceTagKind),
}

impl EventKind {
    /// Parse a kind name within `family` (`success` is a completion kind,
    /// not a lease-history one).
    pub fn parse(family: Family, s: &str) -> Result<Self, UnknownName> {
        Ok(match family {
            Family::LeaseHistory => EventKind::LeaseHistory(s.parse()?),
            Family::Completion => EventKind::Completion(s.parse()?),
            Family::SignalDelivery => EventKind::SignalDelivery(s.parse()?),
            Family::InstanceTags => EventKind::InstanceTags(s.parse()?),
        })
    }

    /// The family this kind belongs to.
    pub fn family(self) -> Family {
        match self {
            EventKind::LeaseHistory(_) => Family::LeaseHistory,
            EventKind::Completion(_) => Family::Completion,
            EventKind::SignalDelivery(_) => Family::SignalDelivery,
            EventKind::InstanceTags(_) => Family::InstanceTags,
        }
    }

    /// The kind's name (`acquired`, `success`, ...), as used in SSE `event:`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LeaseHistory(k) => k.as_str(),
            EventKind::Completion(k) => k.as_str(),
            EventKind::SignalDelivery(k) => k.as_str(),
            EventKind::InstanceTags(k) => k.as_str(),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_and_cursor_bytes_round_trip() {
        for f in Family::ALL {
            assert_eq!(f.as_str().parse::<Family>().unwrap(), *f);
            assert_eq!(Family::from_cursor_byte(f.cursor_byte()), Some(*f));
        }
        assert_eq!(Family::LeaseHistory.as_str(), "lease-history");
        assert_eq!(Family::from_cursor_byte(0), None);
        assert_eq!(Family::from_cursor_byte(5), None);
        let err = "leases".parse::<Family>().unwrap_err();
        assert!(err.to_string().contains("lease-history"), "{err}");
    }

    #[test]
    fn kinds_parse_within_their_family_only() {
        for f in Family::ALL {
            for k in f.kinds() {
                assert_eq!(EventKind::parse(*f, k.as_str()).unwrap(), k);
                assert_eq!(k.family(), *f);
            }
        }
        assert!(EventKind::parse(Family::LeaseHistory, "success").is_err());
        assert_eq!(
            EventKind::parse(Family::Completion, "other").unwrap(),
            EventKind::Completion(CompletionKind::Other)
        );
    }
}
