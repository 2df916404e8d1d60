//! What one node says about the cluster: `CLUSTER NODES` and `CLUSTER
//! INFO` parsed, and [`Topology`] — slot owners and replicas by node index.
//!
//! Invariant: parsing never trusts the reply's shape (a line it cannot read
//! is an error naming it), and a [`Topology`] lists each slot of 0..16384
//! at most once, in ascending ranges.

use std::collections::BTreeMap;

/// The number of hash slots.
pub const SLOTS: u32 = 16384;

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct NodeLine {
    pub(super) id: String,
    pub(super) port: u16,
    pub(super) flags: Vec<String>,
    /// The primary's id, for a replica.
    pub(super) primary: Option<String>,
    /// Owned slot ranges, inclusive.
    pub(super) slots: Vec<(u16, u16)>,
    /// Whether the line carries `[slot->-id]` / `[slot-<-id]` markers of
    /// a slot being migrated or imported.
    pub(super) migrating: bool,
}

impl NodeLine {
    pub(super) fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Whether the describing node sees this one as failed, unreachable or
    /// not yet known.
    pub(super) fn is_troubled(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has_flag(f))
    }

    pub(super) fn is_replica(&self) -> bool {
        self.has_flag("slave") || self.has_flag("replica")
    }
}

/// Parses a `CLUSTER NODES` reply.
pub(super) fn parse_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            parse_line(line).ok_or_else(|| format!("unreadable CLUSTER NODES line {line:?}"))
        })
        .collect()
}

fn parse_line(line: &str) -> Option<NodeLine> {
    let mut fields = line.split_whitespace();
    let id = fields.next()?.to_string();
    // ip:port@cport[,hostname]
    let address = fields.next()?;
    let port = address
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = fields.next()?.split(',').map(str::to_string).collect();
    let primary = Some(fields.next()?)
        .filter(|p| *p != "-")
        .map(str::to_string);
    // ping-sent, pong-recv, config-epoch, link-state
    for _ in 0..4 {
        fields.next()?;
    }
    let mut slots = Vec::new();
    let mut migrating = false;
    for field in fields {
        if field.starts_with('[') {
            migrating = true;
            continue;
        }
        let (lo, hi) = match field.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let slot = field.parse().ok()?;
                (slot, slot)
            }
        };
        if lo > hi || u32::from(hi) >= SLOTS {
            return None;
        }
        slots.push((lo, hi));
    }
    Some(NodeLine {
        id,
        port,
        flags,
        primary,
        slots,
        migrating,
    })
}

/// The value of `field` in an `INFO`/`CLUSTER INFO` reply.
pub(super) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v)
}

/// Who serves what, by node index (as [`ValkeyCluster`](super::ValkeyCluster)
/// numbers its nodes), as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Inclusive slot ranges, ascending, each with the node index of the
    /// primary that serves it.
    pub slots: Vec<(u16, u16, usize)>,
    /// Each replica's node index with its primary's.
    pub replicas: BTreeMap<usize, usize>,
}

impl Topology {
    /// Builds the topology from one node's view; `index_of` maps a port to
    /// a node index, and a node it does not know is an error.
    pub(super) fn from_view(
        view: &[NodeLine],
        index_of: impl Fn(u16) -> Option<usize>,
    ) -> Result<Self, String> {
        let index = |line: &NodeLine| {
            index_of(line.port).ok_or_else(|| format!("unknown node on port {}", line.port))
        };
        let mut slots = Vec::new();
        let mut replicas = BTreeMap::new();
        for line in view {
            let node = index(line)?;
            for &(lo, hi) in &line.slots {
                slots.push((lo, hi, node));
            }
            if let (true, Some(primary)) = (line.is_replica(), &line.primary) {
                let primary = view.iter().find(|l| &l.id == primary).ok_or_else(|| {
                    format!("replica on port {} of an unknown primary", line.port)
                })?;
                replicas.insert(node, index(primary)?);
            }
        }
        slots.sort_unstable();
        if let Some(pair) = slots.windows(2).find(|w| w[0].1 >= w[1].0) {
            return Err(format!("slots claimed twice: {pair:?}"));
        }
        Ok(Topology { slots, replicas })
    }

    /// The primaries that serve at least one slot, ascending.
    pub fn primaries(&self) -> Vec<usize> {
        let mut primaries: Vec<usize> = self.slots.iter().map(|&(_, _, n)| n).collect();
        primaries.sort_unstable();
        primaries.dedup();
        primaries
    }

    /// The primary that serves `slot`, if any does.
    pub fn owner_of_slot(&self, slot: u16) -> Option<usize> {
        self.slots
            .iter()
            .find(|&&(lo, hi, _)| (lo..=hi).contains(&slot))
            .map(|&(_, _, n)| n)
    }

    /// The replicas of `primary`, ascending.
    pub fn replicas_of(&self, primary: usize) -> Vec<usize> {
        self.replicas
            .iter()
            .filter(|&(_, &p)| p == primary)
            .map(|(&r, _)| r)
            .collect()
    }

    /// How many slots have an owner.
    pub fn slots_covered(&self) -> u32 {
        self.slots
            .iter()
            .map(|&(lo, hi, _)| u32::from(hi) - u32::from(lo) + 1)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "\
a1 127.0.0.1:21000@21001 myself,master - 0 0 1 connected 0-5460 [5461-<-b2]
b2 127.0.0.1:22000@22001,host master - 0 1700 2 connected 5461-10922
c3 127.0.0.1:23000@23001 master,fail - 0 1700 3 connected 10923-16383
d4 127.0.0.1:24000@24001 slave a1 0 1700 1 connected
e5 127.0.0.1:25000@25001 slave,fail? b2 0 1700 2 disconnected
";

    #[test]
    fn cluster_nodes_lines_parse_with_flags_slots_and_markers() {
        let view = parse_nodes(VIEW).unwrap();
        assert_eq!(view.len(), 5);
        assert_eq!(view[0].port, 21000);
        assert!(view[0].migrating && !view[1].migrating);
        assert_eq!(view[0].slots, [(0, 5460)]);
        assert_eq!(view[1].port, 22000);
        assert!(view[2].is_troubled() && view[4].is_troubled() && !view[3].is_troubled());
        assert_eq!(view[3].primary.as_deref(), Some("a1"));
        assert!(view[3].is_replica() && !view[0].is_replica());
        assert!(parse_nodes("a1 127.0.0.1:1@2 master - 0 0 1 connected 9-8").is_err());
        assert!(parse_nodes("a1 127.0.0.1:1@2 master").is_err());
    }

    #[test]
    fn topology_maps_slots_and_replicas_to_node_indexes() {
        let view = parse_nodes(VIEW).unwrap();
        let topology =
            Topology::from_view(&view, |port| Some(usize::from(port / 1000 - 21))).unwrap();
        assert_eq!(topology.primaries(), [0, 1, 2]);
        assert_eq!(topology.owner_of_slot(5461), Some(1));
        assert_eq!(topology.owner_of_slot(16383), Some(2));
        assert_eq!(topology.replicas_of(0), [3]);
        assert_eq!(topology.replicas_of(1), [4]);
        assert_eq!(topology.slots_covered(), SLOTS);
        assert!(Topology::from_view(&view, |_| None).is_err());
        assert_eq!(
            info_field("a:1\r\ncluster_state:ok\r\n", "cluster_state"),
            Some("ok")
        );
    }
}
