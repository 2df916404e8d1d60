//! `ff tail`'s filter flags.

use anyhow::{anyhow, Result};
use clap::Args;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventKind, Family};
use ff_core::types::ExecutionId;

/// Which events to admit.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only events in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only events tagged KEY:VALUE.
    #[arg(long, value_name = "KEY:VALUE")]
    pub tag: Option<String>,
    /// Only events about this execution (`{fp:N}:<uuid>`).
    #[arg(long)]
    pub execution_id: Option<String>,
    /// Only these kinds, comma separated (e.g. `failure,cancelled`).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
}

impl FilterArgs {
    /// The filter for `family`, or an error naming the bad flag.
    pub fn to_filter(&self, family: Family) -> Result<SubscriptionFilter> {
        let mut filter = SubscriptionFilter::new();
        if let Some(ns) = &self.namespace {
            filter = filter.with_namespace(ns.clone());
        }
        if let Some(tag) = &self.tag {
            let (k, v) = tag
                .split_once(':')
                .ok_or_else(|| anyhow!("--tag {tag:?}: expected KEY:VALUE"))?;
            filter = filter.with_tag(k, v);
        }
        if let Some(id) = &self.execution_id {
            let id = ExecutionId::parse(id).map_err(|e| anyhow!("--execution-id: {e}"))?;
            filter = filter.with_execution_id(id);
        }
        if !self.kinds.is_empty() {
            let kinds = self
                .kinds
                .iter()
                .map(|k| EventKind::parse(family, k.trim()).map_err(|e| anyhow!("--kinds: {e}")))
                .collect::<Result<Vec<_>>>()?;
            filter = filter.with_kinds(kinds);
        }
        Ok(filter)
    }
}
