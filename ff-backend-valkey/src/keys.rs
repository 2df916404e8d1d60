//! Key names: one stream per family under the configured prefix, beside
//! it the record of ff's last trim, and the hash the cursor store writes.

use ff_core::stream_events::Family;

use crate::trim_record;

/// The keys of one backend instance.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    streams: [String; 4],
    trim_records: [String; 4],
    cursors: String,
}

impl Keys {
    /// Keys under `prefix` (already validated).
    pub(crate) fn new(prefix: &str) -> Self {
        let stream = |f: Family| format!("{prefix}{}", f.as_str());
        let streams = [
            stream(Family::LeaseHistory),
            stream(Family::Completion),
            stream(Family::SignalDelivery),
            stream(Family::InstanceTags),
        ];
        Self {
            trim_records: streams.clone().map(|s| trim_record::key(&s)),
            streams,
            cursors: format!("{prefix}cursors"),
        }
    }

    /// `{prefix}{family}`, e.g. `ff:completion`.
    pub(crate) fn stream(&self, family: Family) -> &str {
        &self.streams[usize::from(family.cursor_byte() - 1)]
    }

    /// `{prefix}{family}:trimmed`: the record of ff's last trim of the
    /// family's stream (see [`crate::trim_record`]).
    pub(crate) fn trim_record(&self, family: Family) -> &str {
        &self.trim_records[usize::from(family.cursor_byte() - 1)]
    }

    /// `{prefix}cursors`: a hash of consumer name → cursor text.
    pub(crate) fn cursors(&self) -> &str {
        &self.cursors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_its_own_key_under_the_prefix() {
        let k = Keys::new("ff:");
        assert_eq!(k.stream(Family::LeaseHistory), "ff:lease-history");
        assert_eq!(k.stream(Family::Completion), "ff:completion");
        assert_eq!(k.stream(Family::SignalDelivery), "ff:signal-delivery");
        assert_eq!(k.stream(Family::InstanceTags), "ff:instance-tags");
        assert_eq!(k.cursors(), "ff:cursors");
        assert_eq!(k.trim_record(Family::Completion), "ff:completion:trimmed");
    }
}
