//! [`Topology`]: which node serves each hash slot — read from `CLUSTER
//! SHARDS`, or, for a standalone server, one node serving every slot (so a
//! standalone server is the one-node case of the same routing, not a second
//! code path).
//!
//! Invariants: every slot is served by exactly one node or by none (a slot
//! no healthy primary serves); every node the topology names is one the
//! server reported (or the seed of a standalone server); replicas are kept
//! as places to ask for a newer topology, never as owners.

use std::collections::BTreeSet;

use redis::Value;

use super::redirect::NodeAddr;
use super::slot::SLOTS;

/// No node serves the slot.
const UNSERVED: u16 = u16::MAX;

/// Which node serves each slot, and every node known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Topology {
    cluster: bool,
    nodes: Vec<NodeAddr>,
    /// Index into `nodes` per slot, or [`UNSERVED`].
    owners: Vec<u16>,
    /// Nodes that serve no slot (replicas): asked for the topology only.
    others: Vec<NodeAddr>,
}

impl Topology {
    /// A standalone server: `node` serves every slot.
    pub(crate) fn standalone(node: NodeAddr) -> Self {
        Self {
            cluster: false,
            nodes: vec![node],
            owners: vec![0; usize::from(SLOTS)],
            others: Vec::new(),
        }
    }

    /// Whether this is a Valkey Cluster (rather than one server).
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The node serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        match self.owners.get(usize::from(slot)) {
            Some(&i) if i != UNSERVED => self.nodes.get(usize::from(i)),
            _ => None,
        }
    }

    /// Record that `to` serves `slot` now (a `MOVED` reply said so).
    pub(crate) fn set_owner(&mut self, slot: u16, to: &NodeAddr) {
        if usize::from(slot) >= self.owners.len() {
            return;
        }
        let index = match self.nodes.iter().position(|n| n == to) {
            Some(i) => i,
            None => {
                self.nodes.push(to.clone());
                self.nodes.len() - 1
            }
        };
        self.owners[usize::from(slot)] = index as u16;
    }

    /// The nodes serving at least one slot, in address order.
    pub(crate) fn primaries(&self) -> Vec<NodeAddr> {
        let serving: BTreeSet<u16> = self
            .owners
            .iter()
            .copied()
            .filter(|&i| i != UNSERVED)
            .collect();
        let mut nodes: Vec<NodeAddr> = serving
            .into_iter()
            .map(|i| self.nodes[usize::from(i)].clone())
            .collect();
        nodes.sort();
        nodes
    }

    /// Every node known, serving slots first: where to ask for a newer
    /// topology.
    pub(crate) fn all_nodes(&self) -> Vec<NodeAddr> {
        let mut nodes = self.primaries();
        for n in self.nodes.iter().chain(&self.others) {
            if !nodes.contains(n) {
                nodes.push(n.clone());
            }
        }
        nodes
    }

    /// How many slots have a node serving them.
    pub(crate) fn slots_served(&self) -> usize {
        self.owners.iter().filter(|&&i| i != UNSERVED).count()
    }

    /// Read a `CLUSTER SHARDS` reply. A shard's slots go to its primary
    /// whose health is `online`; `tls` picks each node's `tls-port` (else
    /// its `port`). A node is reached by its announced `hostname`, else its
    /// preferred `endpoint`, else its `ip`; an unknown endpoint (`?`, or
    /// none) is `seed`'s host, the node the reply came from. `Err` says what
    /// is malformed.
    pub(crate) fn from_shards(reply: &Value, tls: bool, seed: &NodeAddr) -> Result<Self, String> {
        let shards = array(reply).ok_or("CLUSTER SHARDS did not return an array")?;
        let mut topology = Topology {
            cluster: true,
            nodes: Vec::new(),
            owners: vec![UNSERVED; usize::from(SLOTS)],
            others: Vec::new(),
        };
        for shard in shards {
            let fields = pairs(shard).ok_or("a CLUSTER SHARDS shard is not a map")?;
            let mut ranges = Vec::new();
            let mut members = Vec::new();
            for (name, value) in fields {
                match name {
                    b"slots" => {
                        let bounds = array(value).ok_or("shard slots are not an array")?;
                        for pair in bounds.chunks(2) {
                            let [lo, hi] = pair else {
                                return Err("shard slots are not start-end pairs".into());
                            };
                            let (lo, hi) = (slot_number(lo)?, slot_number(hi)?);
                            if lo > hi {
                                return Err(format!("shard slot range {lo}-{hi} is reversed"));
                            }
                            ranges.push((lo, hi));
                        }
                    }
                    b"nodes" => {
                        for node in array(value).ok_or("shard nodes are not an array")? {
                            members.push(Member::parse(node, tls, seed)?);
                        }
                    }
                    _ => {}
                }
            }
            let primary = members
                .iter()
                .find(|m| m.primary && m.online)
                .map(|m| m.addr.clone());
            for m in &members {
                if Some(&m.addr) != primary.as_ref() && !topology.others.contains(&m.addr) {
                    topology.others.push(m.addr.clone());
                }
            }
            let Some(primary) = primary else { continue };
            for (lo, hi) in ranges {
                for slot in lo..=hi {
                    topology.set_owner(slot, &primary);
                }
            }
        }
        topology.others.retain(|n| !topology.nodes.contains(n));
        Ok(topology)
    }
}

/// One node of a shard, as far as routing needs it.
struct Member {
    addr: NodeAddr,
    primary: bool,
    online: bool,
}

impl Member {
    fn parse(node: &Value, tls: bool, seed: &NodeAddr) -> Result<Self, String> {
        let fields = pairs(node).ok_or("a CLUSTER SHARDS node is not a map")?;
        let (mut hostname, mut endpoint, mut ip) = (None, None, None);
        let (mut port, mut tls_port) = (None, None);
        let (mut primary, mut online) = (false, false);
        for (name, value) in fields {
            match name {
                b"hostname" => hostname = text(value),
                b"endpoint" => endpoint = text(value),
                b"ip" => ip = text(value),
                b"port" => port = integer(value),
                b"tls-port" => tls_port = integer(value),
                b"role" => primary = text(value).as_deref() == Some("master"),
                b"health" => online = text(value).as_deref() == Some("online"),
                _ => {}
            }
        }
        fn usable(h: &Option<String>) -> Option<&str> {
            h.as_deref().filter(|h| !h.is_empty() && *h != "?")
        }
        let host = usable(&hostname)
            .or(usable(&endpoint))
            .or(usable(&ip))
            .unwrap_or(&seed.host)
            .to_owned();
        let port = if tls { tls_port.or(port) } else { port }
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("node {host} reports no usable port"))?;
        Ok(Self {
            addr: NodeAddr::new(&host, port),
            primary,
            online,
        })
    }
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// A map reply (RESP3) or a flat array of name-value pairs (RESP2).
fn pairs(v: &Value) -> Option<Vec<(&[u8], &Value)>> {
    match v {
        Value::Map(entries) => entries.iter().map(|(k, v)| Some((bytes(k)?, v))).collect(),
        Value::Array(items) if items.len() % 2 == 0 => items
            .chunks(2)
            .map(|p| Some((bytes(&p[0])?, &p[1])))
            .collect(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(b).into_owned())
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

fn slot_number(v: &Value) -> Result<u16, String> {
    integer(v)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n < SLOTS)
        .ok_or_else(|| format!("shard slot {v:?} is not a slot number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(fields: &[(&str, Value)]) -> Value {
        Value::Array(
            fields
                .iter()
                .flat_map(|(k, v)| [bulk(k), v.clone()])
                .collect(),
        )
    }

    fn member(port: i64, role: &str, health: &str) -> Value {
        node(&[
            ("id", bulk("abc")),
            ("port", Value::Int(port)),
            ("ip", bulk("127.0.0.1")),
            ("endpoint", bulk("127.0.0.1")),
            ("role", bulk(role)),
            ("replication-offset", Value::Int(0)),
            ("health", bulk(health)),
        ])
    }

    fn shard(slots: &[i64], members: Vec<Value>) -> Value {
        node(&[
            (
                "slots",
                Value::Array(slots.iter().map(|s| Value::Int(*s)).collect()),
            ),
            ("nodes", Value::Array(members)),
        ])
    }

    fn seed() -> NodeAddr {
        NodeAddr::new("127.0.0.1", 7000)
    }

    #[test]
    fn online_primaries_serve_their_shards_slots_and_replicas_are_kept_as_seeds() {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460, 16000, 16383],
                vec![
                    member(7000, "master", "online"),
                    member(7003, "replica", "online"),
                ],
            ),
            shard(&[5461, 15999], vec![member(7001, "master", "online")]),
        ]);
        let t = Topology::from_shards(&reply, false, &seed()).unwrap();
        assert!(t.is_cluster());
        let a = NodeAddr::new("127.0.0.1", 7000);
        let b = NodeAddr::new("127.0.0.1", 7001);
        assert_eq!(t.owner(0), Some(&a));
        assert_eq!(t.owner(5460), Some(&a));
        assert_eq!(t.owner(5461), Some(&b));
        assert_eq!(t.owner(16000), Some(&a));
        assert_eq!(t.slots_served(), 16_384);
        assert_eq!(t.primaries(), [a.clone(), b.clone()]);
        assert_eq!(
            t.all_nodes(),
            [a, b, NodeAddr::new("127.0.0.1", 7003)],
            "the replica is somewhere to ask"
        );
    }

    #[test]
    fn a_failed_primary_serves_nothing_and_hostnames_and_tls_ports_win() {
        let reply = Value::Array(vec![
            shard(&[0, 99], vec![member(7000, "master", "fail")]),
            shard(
                &[100, 199],
                vec![node(&[
                    ("port", Value::Int(7001)),
                    ("tls-port", Value::Int(8001)),
                    ("ip", bulk("10.0.0.2")),
                    ("endpoint", bulk("?")),
                    ("hostname", bulk("cache-2.example")),
                    ("role", bulk("master")),
                    ("health", bulk("online")),
                ])],
            ),
        ]);
        let plain = Topology::from_shards(&reply, false, &seed()).unwrap();
        assert_eq!(plain.owner(5), None);
        assert_eq!(plain.slots_served(), 100);
        assert_eq!(
            plain.owner(150),
            Some(&NodeAddr::new("cache-2.example", 7001))
        );
        let tls = Topology::from_shards(&reply, true, &seed()).unwrap();
        assert_eq!(
            tls.owner(150),
            Some(&NodeAddr::new("cache-2.example", 8001))
        );
    }

    #[test]
    fn malformed_replies_say_what_is_wrong() {
        for (reply, needle) in [
            (Value::Int(1), "not return an array"),
            (Value::Array(vec![Value::Int(1)]), "not a map"),
            (Value::Array(vec![shard(&[0], vec![])]), "start-end pairs"),
            (Value::Array(vec![shard(&[5, 1], vec![])]), "reversed"),
            (
                Value::Array(vec![shard(&[0, 20000], vec![])]),
                "not a slot number",
            ),
            (
                Value::Array(vec![shard(
                    &[0, 1],
                    vec![node(&[("role", bulk("master"))])],
                )]),
                "no usable port",
            ),
        ] {
            let e = Topology::from_shards(&reply, false, &seed()).unwrap_err();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        }
    }

    #[test]
    fn moved_slots_change_owner_and_standalone_serves_everything() {
        let mut t = Topology::standalone(seed());
        assert!(!t.is_cluster());
        assert_eq!(t.owner(16_383), Some(&seed()));
        assert_eq!(t.slots_served(), 16_384);
        let other = NodeAddr::new("127.0.0.1", 7005);
        t.set_owner(42, &other);
        assert_eq!(t.owner(42), Some(&other));
        assert_eq!(t.owner(41), Some(&seed()));
        assert_eq!(t.primaries(), [seed(), other]);
    }
}
