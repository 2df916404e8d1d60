//! Key names: one stream per family under the configured prefix, and the
//! hash the cursor store writes.

use ff_core::stream_events::Family;

/// The keys of one backend instance.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    streams: [String; 4],
    cursors: String,
}

impl Keys {
    /// Keys under `prefix` (already validated).
    pub(crate) fn new(prefix: &str) -> Self {
        let stream = |f: Family| format!("{prefix}{}", f.as_str());
        Self {
            streams: [
                stream(Family::LeaseHistory),
                stream(Family::Completion),
                stream(Family::SignalDelivery),
                stream(Family::InstanceTags),
            ],
            cursors: format!("{prefix}cursors"),
        }
    }

    /// `{prefix}{family}`, e.g. `ff:completion`.
    pub(crate) fn stream(&self, family: Family) -> &str {
        &self.streams[usize::from(family.cursor_byte() - 1)]
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
    }
}
