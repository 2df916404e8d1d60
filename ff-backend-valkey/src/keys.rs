//! Key names: each family's stream — one per partition — under the
//! configured prefix, beside each stream the record of ff's last trim, and
//! the hash the cursor store writes.
//!
//! Layouts:
//! - one partition on a standalone server, or under a prefix that carries
//!   its own hash tag: `{prefix}{family}` (`ff:completion`);
//! - otherwise (P > 1, or one partition on a Valkey Cluster):
//!   `{prefix}{fp:n}:{family}` (`ff:{fp:3}:completion`), so partition `n`
//!   lives in the slot of the execution ids `{fp:n}:…` and, with one
//!   partition, the four families share slot `{fp:0}`.
//!
//! Invariant: a stream and its trim record always share a hash slot (the
//! record's name is the stream's plus `:trimmed`, and every stream name on
//! a cluster carries a hash tag), and on a cluster every stream of one
//! partition shares a slot, so one `MULTI`/`EXEC` can touch all of them.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;

use crate::routing::slot::{has_hash_tag, key_slot};
use crate::trim_record;

/// The keys of one backend instance.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    partitions: u16,
    /// Per family (by cursor byte − 1), then per partition.
    streams: Vec<String>,
    trim_records: Vec<String>,
    slots: Vec<u16>,
    cursors: String,
}

/// Where `family`'s partition `partition` sits among the streams of a
/// backend whose families have `partitions` partitions each: family-major,
/// for arrays holding one entry per stream.
pub(crate) fn stream_index(partitions: u16, family: Family, partition: u16) -> usize {
    family.index() * usize::from(partitions) + usize::from(partition)
}

impl Keys {
    /// The keys under `prefix` (already validated as a prefix) for
    /// `partitions` partitions, on a cluster or a standalone server. A
    /// prefix that would take the partitions' hash tags away — any `{` or
    /// `}` with P > 1, or braces that do not form a hash tag on a cluster —
    /// is a `Validation` error.
    pub(crate) fn new(prefix: &str, partitions: u16, cluster: bool) -> Result<Self, EngineError> {
        let braces = prefix.contains(['{', '}']);
        let tagged = has_hash_tag(prefix);
        if partitions > 1 && braces {
            return Err(EngineError::validation(format!(
                "key prefix {prefix:?} contains braces, which would override the partitions' {{fp:n}} hash tags; with partitions={partitions} use a prefix without {{ or }}"
            )));
        }
        if cluster && braces && !tagged {
            return Err(EngineError::validation(format!(
                "key prefix {prefix:?} contains braces that do not form a hash tag, so a family's streams could land in different slots of the cluster; use a prefix without {{ or }}, or with a hash tag such as \"ff:{{app}}:\""
            )));
        }
        let partitioned = partitions > 1 || (cluster && !tagged);
        let mut streams = Vec::with_capacity(4 * usize::from(partitions));
        for family in Family::ALL.iter().copied() {
            for n in 0..partitions {
                streams.push(if partitioned {
                    format!("{prefix}{{fp:{n}}}:{}", family.as_str())
                } else {
                    format!("{prefix}{}", family.as_str())
                });
            }
        }
        Ok(Self {
            partitions,
            trim_records: streams.iter().map(|s| trim_record::key(s)).collect(),
            slots: streams.iter().map(|s| key_slot(s.as_bytes())).collect(),
            streams,
            cursors: format!("{prefix}cursors"),
        })
    }

    fn index(&self, family: Family, partition: u16) -> usize {
        debug_assert!(partition < self.partitions);
        stream_index(self.partitions, family, partition)
    }

    /// How many partitions each family has.
    pub(crate) fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The stream of `family`'s partition `partition`.
    pub(crate) fn stream(&self, family: Family, partition: u16) -> &str {
        &self.streams[self.index(family, partition)]
    }

    /// `{stream}:trimmed`: the record of ff's last trim of that stream (see
    /// [`crate::trim_record`]).
    pub(crate) fn trim_record(&self, family: Family, partition: u16) -> &str {
        &self.trim_records[self.index(family, partition)]
    }

    /// The hash slot of that stream (and of its trim record).
    pub(crate) fn slot(&self, family: Family, partition: u16) -> u16 {
        self.slots[self.index(family, partition)]
    }

    /// `{prefix}cursors`: a hash of consumer name → cursor text.
    pub(crate) fn cursors(&self) -> &str {
        &self.cursors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(r: Result<Keys, EngineError>, needle: &str) {
        match r {
            Err(EngineError::Validation { detail }) => {
                assert!(detail.contains(needle), "{detail:?} lacks {needle:?}")
            }
            other => panic!("expected Validation, got {other:?}"),
        }
    }

    #[test]
    fn one_partition_on_a_standalone_server_keeps_one_key_per_family() {
        let k = Keys::new("ff:", 1, false).unwrap();
        assert_eq!(k.stream(Family::LeaseHistory, 0), "ff:lease-history");
        assert_eq!(k.stream(Family::Completion, 0), "ff:completion");
        assert_eq!(k.stream(Family::SignalDelivery, 0), "ff:signal-delivery");
        assert_eq!(k.stream(Family::InstanceTags, 0), "ff:instance-tags");
        assert_eq!(k.cursors(), "ff:cursors");
        assert_eq!(
            k.trim_record(Family::Completion, 0),
            "ff:completion:trimmed"
        );
    }

    #[test]
    fn on_a_cluster_one_partitions_streams_share_a_slot() {
        let k = Keys::new("ff:", 1, true).unwrap();
        assert_eq!(k.stream(Family::Completion, 0), "ff:{fp:0}:completion");
        let slot = key_slot(b"{fp:0}");
        for f in Family::ALL.iter().copied() {
            assert_eq!(k.slot(f, 0), slot);
            assert_eq!(key_slot(k.trim_record(f, 0).as_bytes()), slot);
        }
        let tagged = Keys::new("ff:{app}:", 1, true).unwrap();
        assert_eq!(tagged.stream(Family::Completion, 0), "ff:{app}:completion");
        assert_eq!(tagged.slot(Family::LeaseHistory, 0), key_slot(b"app"));
    }

    #[test]
    fn partition_n_lives_in_the_slot_of_execution_ids_fp_n() {
        for cluster in [false, true] {
            let k = Keys::new("ff:", 6, cluster).unwrap();
            assert_eq!(k.partitions(), 6);
            assert_eq!(k.stream(Family::Completion, 3), "ff:{fp:3}:completion");
            assert_eq!(
                k.trim_record(Family::InstanceTags, 5),
                "ff:{fp:5}:instance-tags:trimmed"
            );
            for n in 0..6 {
                let exec_slot = key_slot(format!("{{fp:{n}}}:6f1c0a4e").as_bytes());
                for f in Family::ALL.iter().copied() {
                    assert_eq!(k.slot(f, n), exec_slot);
                    assert_eq!(key_slot(k.trim_record(f, n).as_bytes()), exec_slot);
                }
            }
        }
    }

    #[test]
    fn prefixes_that_would_move_streams_out_of_their_slot_are_refused() {
        invalid(Keys::new("ff:{app}:", 4, true), "override the partitions");
        invalid(Keys::new("ff:{}:", 2, false), "override the partitions");
        invalid(Keys::new("ff:{app:", 1, true), "do not form a hash tag");
        assert!(
            Keys::new("ff:{app:", 1, false).is_ok(),
            "no slots standalone"
        );
    }
}
