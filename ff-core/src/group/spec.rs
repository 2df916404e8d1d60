//! [`GroupSpec`]: what defines a group, and which unit an event is in.
//!
//! The unit of an event depends only on its execution id and U, so every
//! member (and every backend) puts an execution's events in the same unit.

use crate::error::{excerpt, EngineError};
use crate::event::Family;
use crate::filter::SubscriptionFilter;
use crate::types::ExecutionId;

/// The most units a group may have (one per `{fp:N}` partition value).
pub const MAX_UNITS: u32 = 1 << 16;

/// Longest accepted group name, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 200;

/// A group's definition: stored when the group is created; a member whose
/// family, filter or unit count differs is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupSpec {
    /// The group's name (unique per store).
    pub name: String,
    /// The family whose events the group shares.
    pub family: Family,
    /// Which events the group handles.
    pub filter: SubscriptionFilter,
    /// How many units the family is split into (1..=[`MAX_UNITS`]).
    pub units: u32,
}

impl GroupSpec {
    /// A group over every event of `family`, split into `units` units.
    pub fn new(name: impl Into<String>, family: Family, units: u32) -> Result<Self, EngineError> {
        let name = name.into();
        validate_group_name(&name)?;
        if units == 0 || units > MAX_UNITS {
            return Err(EngineError::validation(format!(
                "a group needs 1..={MAX_UNITS} units, got {units}"
            )));
        }
        Ok(Self {
            name,
            family,
            filter: SubscriptionFilter::default(),
            units,
        })
    }

    /// Only events `filter` admits.
    pub fn with_filter(mut self, filter: SubscriptionFilter) -> Result<Self, EngineError> {
        filter.validate_for(self.family)?;
        self.filter = filter;
        Ok(self)
    }

    /// The unit `execution`'s events belong to.
    pub fn unit_of(&self, execution: &ExecutionId) -> u32 {
        unit_of(execution, self.units)
    }

    /// Check a stored definition against this one; the error names both.
    pub fn check_matches(
        &self,
        family: Family,
        filter: &str,
        units: u32,
    ) -> Result<(), EngineError> {
        if units != self.units {
            return Err(EngineError::validation(format!(
                "group {:?} was created with {units} units, this member asked for {}; \
                 join with --units {units} (a group's unit count is fixed)",
                self.name, self.units
            )));
        }
        if family != self.family {
            return Err(EngineError::validation(format!(
                "group {:?} is over family {}, this member asked for {}; use another group name",
                self.name,
                family.as_str(),
                self.family.as_str()
            )));
        }
        let mine = filter_text(&self.filter);
        if filter != mine {
            return Err(EngineError::validation(format!(
                "group {:?} was created with filter {filter:?}, this member asked for {mine:?}; \
                 use the same filter or another group name",
                self.name
            )));
        }
        Ok(())
    }
}

/// The unit of an event about `execution` in a group of `units` units.
pub fn unit_of(execution: &ExecutionId, units: u32) -> u32 {
    u32::from(execution.partition()) % units.max(1)
}

/// A stable text form of a filter, stored with a group to refuse a member
/// whose filter differs.
pub fn filter_text(filter: &SubscriptionFilter) -> String {
    let mut parts = Vec::new();
    if let Some(ns) = &filter.namespace {
        parts.push(format!("namespace={ns}"));
    }
    if let Some((k, v)) = &filter.tag {
        parts.push(format!("tag={k}={v}"));
    }
    if let Some(id) = &filter.execution_id {
        parts.push(format!("execution={id}"));
    }
    if let Some(kinds) = &filter.kinds {
        let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        parts.push(format!("kinds={}", names.join(",")));
    }
    parts.join(";")
}

/// Check a group name: non-empty, at most 200 bytes, no control characters.
pub fn validate_group_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_LEN || name.chars().any(char::is_control) {
        return Err(EngineError::validation(format!(
            "group name {} must be 1..={MAX_GROUP_NAME_LEN} bytes without control characters",
            excerpt(name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_execution_stays_in_one_unit() {
        let a = ExecutionId::new(37);
        assert_eq!(unit_of(&a, 16), 5);
        assert_eq!(unit_of(&a, 1), 0);
    }

    #[test]
    fn another_unit_count_is_refused_naming_both() {
        let spec = GroupSpec::new("g", Family::Completion, 8).unwrap();
        let err = spec
            .check_matches(Family::Completion, "", 16)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("16 units") && err.contains("asked for 8"),
            "{err}"
        );
        assert!(spec.check_matches(Family::Completion, "", 8).is_ok());
        assert!(GroupSpec::new("g", Family::Completion, 0).is_err());
        assert!(GroupSpec::new("", Family::Completion, 1).is_err());
    }
}
