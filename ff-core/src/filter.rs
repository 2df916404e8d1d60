//! [`SubscriptionFilter`]: which events a subscription admits.

use crate::error::EngineError;
use crate::event::{EventKind, EventMeta, Family, StreamEvent};
use crate::types::ExecutionId;

/// Which events a subscription admits. Every criterion is optional and
/// they combine with AND; [`SubscriptionFilter::default`] admits everything.
///
/// ```
/// use ff_core::filter::SubscriptionFilter;
/// use ff_core::event::{CompletionKind, EventKind};
/// let f = SubscriptionFilter::default()
///     .with_namespace("billing")
///     .with_tag("region", "eu")
///     .with_kinds([EventKind::Completion(CompletionKind::Failure)]);
/// assert!(!f.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionFilter {
    /// Admit only events published with this namespace.
    pub namespace: Option<String>,
    /// Admit only events carrying this tag key with this value.
    pub tag: Option<(String, String)>,
    /// Admit only events about this execution.
    pub execution_id: Option<ExecutionId>,
    /// Admit only events of these kinds (all of the subscribed family).
    pub kinds: Option<Vec<EventKind>>,
}

impl SubscriptionFilter {
    /// A filter that admits everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only events in `namespace`.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Only events tagged `key=value`.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tag = Some((key.into(), value.into()));
        self
    }

    /// Only events about `execution_id`.
    pub fn with_execution_id(mut self, execution_id: ExecutionId) -> Self {
        self.execution_id = Some(execution_id);
        self
    }

    /// Only events of `kinds`.
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = EventKind>) -> Self {
        self.kinds = Some(kinds.into_iter().collect());
        self
    }

    /// `true` when the filter admits everything.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.tag.is_none()
            && self.execution_id.is_none()
            && self.kinds.is_none()
    }

    /// Check the filter can apply to `family`: every kind must be one of
    /// its kinds. Backends call this at subscribe time.
    pub fn validate_for(&self, family: Family) -> Result<(), EngineError> {
        if let Some(kinds) = &self.kinds {
            if kinds.is_empty() {
                return Err(EngineError::validation(
                    "filter `kinds` is empty, so it would admit nothing; omit it to admit every kind",
                ));
            }
            if let Some(k) = kinds.iter().find(|k| k.family() != family) {
                return Err(EngineError::validation(format!(
                    "filter kind `{k}` belongs to {}, not {family}",
                    k.family()
                )));
            }
        }
        Ok(())
    }

    /// Whether an event with `meta` passes the filter.
    pub fn matches(&self, event: &StreamEvent, meta: &EventMeta) -> bool {
        self.matches_parts(event.kind(), event.execution_id(), meta)
    }

    /// Whether an event of `kind` about `execution_id` with `meta` passes
    /// (for backends that filter before building the typed event).
    pub fn matches_parts(
        &self,
        kind: EventKind,
        execution_id: &ExecutionId,
        meta: &EventMeta,
    ) -> bool {
        if let Some(ns) = &self.namespace {
            if meta.namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        if let Some((k, v)) = &self.tag {
            if meta.tags.get(k) != Some(v) {
                return false;
            }
        }
        if let Some(id) = &self.execution_id {
            if id != execution_id {
                return false;
            }
        }
        if let Some(kinds) = &self.kinds {
            if !kinds.contains(&kind) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::StreamCursor;
    use crate::event::{CompletionKind, CompletionOutcome, LeaseHistoryKind, NewEvent};
    use crate::types::TimestampMs;

    fn completion(outcome: CompletionOutcome) -> StreamEvent {
        NewEvent::completion(ExecutionId::new(0), outcome)
            .into_event(StreamCursor::beginning(), TimestampMs(0))
    }

    #[test]
    fn default_admits_everything() {
        let e = completion(CompletionOutcome::Success);
        assert!(SubscriptionFilter::default().matches(&e, &EventMeta::new()));
    }

    #[test]
    fn each_criterion_excludes_what_does_not_match() {
        let e = completion(CompletionOutcome::Failure);
        let meta = EventMeta::new().with_namespace("a").with_tag("k", "v");
        let f = SubscriptionFilter::new().with_namespace("a");
        assert!(f.matches(&e, &meta));
        assert!(!f.matches(&e, &EventMeta::new()));
        assert!(SubscriptionFilter::new()
            .with_tag("k", "v")
            .matches(&e, &meta));
        assert!(!SubscriptionFilter::new()
            .with_tag("k", "w")
            .matches(&e, &meta));
        assert!(!SubscriptionFilter::new()
            .with_execution_id(ExecutionId::new(0))
            .matches(&e, &meta));
        assert!(SubscriptionFilter::new()
            .with_execution_id(*e.execution_id())
            .matches(&e, &meta));
        let fail =
            SubscriptionFilter::new().with_kinds([EventKind::Completion(CompletionKind::Failure)]);
        assert!(fail.matches(&e, &meta));
        assert!(!fail.matches(&completion(CompletionOutcome::Success), &meta));
    }

    #[test]
    fn kinds_of_another_family_are_rejected() {
        let f = SubscriptionFilter::new()
            .with_kinds([EventKind::LeaseHistory(LeaseHistoryKind::Acquired)]);
        assert!(f.validate_for(Family::LeaseHistory).is_ok());
        assert!(matches!(
            f.validate_for(Family::Completion),
            Err(EngineError::Validation { .. })
        ));
        let empty = SubscriptionFilter::new().with_kinds([]);
        assert!(empty.validate_for(Family::Completion).is_err());
    }
}
