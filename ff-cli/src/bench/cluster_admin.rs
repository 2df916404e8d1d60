//! What `ff bench --operations` needs to know about and do to a Valkey
//! Cluster, in the server's own terms: the node table (`CLUSTER NODES`),
//! a planned failover, a slot migration held open, a node made
//! unresponsive. Every command goes to one named node over a connection
//! the backend opens (its TLS settings and credentials).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ff_backend_valkey::redis::{self, aio::MultiplexedConnection};
use ff_backend_valkey::ValkeyBackend;

/// One row of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's id.
    pub id: String,
    /// `host:port` clients use.
    pub addr: String,
    /// Whether it is a primary now.
    pub primary: bool,
    /// The id of its primary, for a replica.
    pub primary_id: Option<String>,
    /// Whether the cluster marks it failed.
    pub failed: bool,
}

/// Parse the text `CLUSTER NODES` answers (rows that do not parse are
/// left out).
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split(['@', ',']).next()?.to_owned();
            let flags: Vec<&str> = fields[2].split(',').collect();
            if flags.contains(&"noaddr") || flags.contains(&"handshake") {
                return None;
            }
            Some(ClusterNode {
                id: fields[0].to_owned(),
                addr,
                primary: flags.contains(&"master"),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.iter().any(|f| *f == "fail" || *f == "fail?"),
            })
        })
        .collect()
}

/// A connection to one node, for administration.
pub async fn node(backend: &ValkeyBackend, addr: &str) -> anyhow::Result<MultiplexedConnection> {
    backend
        .connection_to_node(addr)
        .await
        .with_context(|| format!("connecting to node {addr}"))
}

/// The node table as `addr` sees it.
pub async fn nodes(backend: &ValkeyBackend, addr: &str) -> anyhow::Result<Vec<ClusterNode>> {
    let mut conn = node(backend, addr).await?;
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .with_context(|| format!("CLUSTER NODES on {addr}"))?;
    Ok(parse_cluster_nodes(&text))
}

/// The primary serving `key` now and one healthy replica of it.
pub async fn primary_and_replica(
    backend: &ValkeyBackend,
    key: &str,
) -> anyhow::Result<(ClusterNode, ClusterNode)> {
    let owner = backend
        .node_for_key(key)
        .with_context(|| format!("no node serves {key:?} right now"))?;
    let table = nodes(backend, &owner).await?;
    let primary = table
        .iter()
        .find(|n| n.addr == owner && n.primary)
        .or_else(|| {
            table
                .iter()
                .find(|n| n.primary && same_port(&n.addr, &owner))
        })
        .cloned()
        .with_context(|| format!("{owner} is not a primary in its own node table"))?;
    let replica = table
        .iter()
        .find(|n| !n.failed && n.primary_id.as_deref() == Some(primary.id.as_str()))
        .cloned()
        .with_context(|| {
            format!(
                "primary {} has no healthy replica: --operations needs a cluster of primaries with one replica each",
                primary.addr
            )
        })?;
    Ok((primary, replica))
}

fn same_port(a: &str, b: &str) -> bool {
    a.rsplit(':').next() == b.rsplit(':').next()
}

/// `CLUSTER FAILOVER` on `replica`, then wait (at most `deadline`) until
/// it reports itself a primary.
pub async fn planned_failover(
    backend: &ValkeyBackend,
    replica: &ClusterNode,
    deadline: Duration,
) -> anyhow::Result<()> {
    let mut conn = node(backend, &replica.addr).await?;
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query_async(&mut conn)
        .await
        .with_context(|| format!("CLUSTER FAILOVER on {}", replica.addr))?;
    wait_for(deadline, "the replica to become primary", || async {
        let table = nodes(backend, &replica.addr).await?;
        Ok(table.iter().any(|n| n.id == replica.id && n.primary))
    })
    .await
}

/// Wait until every node the cluster lists answers `cluster_state:ok`
/// and no node is marked failed (at most `deadline`).
pub async fn wait_until_stable(
    backend: &ValkeyBackend,
    seed: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    wait_for(deadline, "the cluster to settle", || async {
        let table = nodes(backend, seed).await?;
        if table.iter().any(|n| n.failed) {
            return Ok(false);
        }
        for n in &table {
            let mut conn = node(backend, &n.addr).await?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await?;
            if !info.contains("cluster_state:ok") {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

/// Move `slot` from primary `from` to primary `to`, holding it
/// `MIGRATING`/`IMPORTING` for `hold`: half with the keys on the source,
/// half with them on the target. Cluster without passwords only
/// (`MIGRATE` is sent without credentials).
pub async fn migrate_slot(
    backend: &ValkeyBackend,
    slot: u16,
    from: &ClusterNode,
    to: &ClusterNode,
    others: &[ClusterNode],
    hold: Duration,
) -> anyhow::Result<()> {
    let mut source = node(backend, &from.addr).await?;
    let mut target = node(backend, &to.addr).await?;
    setslot(&mut target, slot, "IMPORTING", &from.id).await?;
    setslot(&mut source, slot, "MIGRATING", &to.id).await?;
    tokio::time::sleep(hold / 2).await;
    let (host, port) = to
        .addr
        .rsplit_once(':')
        .with_context(|| format!("{} has no port", to.addr))?;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut source)
            .await?;
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(host)
            .arg(port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut source)
            .await
            .with_context(|| format!("MIGRATE of slot {slot} to {}", to.addr))?;
    }
    tokio::time::sleep(hold / 2).await;
    setslot(&mut target, slot, "NODE", &to.id).await?;
    setslot(&mut source, slot, "NODE", &to.id).await?;
    for other in others {
        let mut conn = node(backend, &other.addr).await?;
        setslot(&mut conn, slot, "NODE", &to.id).await?;
    }
    Ok(())
}

async fn setslot(
    conn: &mut MultiplexedConnection,
    slot: u16,
    state: &str,
    id: &str,
) -> anyhow::Result<()> {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(state)
        .arg(id)
        .query_async(conn)
        .await
        .with_context(|| format!("CLUSTER SETSLOT {slot} {state}"))?;
    Ok(())
}

/// `cluster-node-timeout` of `addr`.
pub async fn node_timeout(backend: &ValkeyBackend, addr: &str) -> anyhow::Result<Duration> {
    let mut conn = node(backend, addr).await?;
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("cluster-node-timeout")
        .query_async(&mut conn)
        .await
        .context("CONFIG GET cluster-node-timeout")?;
    let ms: u64 = reply
        .get(1)
        .and_then(|v| v.parse().ok())
        .context("cluster-node-timeout is not a number")?;
    Ok(Duration::from_millis(ms))
}

/// Make `addr` unresponsive for `sleep` with `DEBUG SLEEP`, sent on a
/// connection of its own that is left to finish in the background.
/// Fails at once when the node refuses `DEBUG` (start it with
/// `enable-debug-command yes`).
pub async fn debug_sleep(
    backend: &ValkeyBackend,
    addr: &str,
    sleep: Duration,
) -> anyhow::Result<()> {
    let mut conn = node(backend, addr).await?;
    let probe: redis::RedisResult<String> = redis::cmd("DEBUG")
        .arg("HELP")
        .query_async(&mut conn)
        .await
        .map(|_: redis::Value| String::new());
    if let Err(e) = probe {
        bail!("node {addr} refuses DEBUG ({e}): start the bench's cluster with enable-debug-command yes");
    }
    let seconds = format!("{:.3}", sleep.as_secs_f64());
    tokio::spawn(async move {
        let _: redis::RedisResult<redis::Value> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(seconds)
            .query_async(&mut conn)
            .await;
    });
    Ok(())
}

/// Poll `check` every 100 ms until it answers true; fail after `deadline`
/// naming `what`. Errors from `check` count as "not yet".
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), check()).await {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("gave up after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_table_names_primaries_replicas_and_failures() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host-b slave a1 0 1700000000 1 connected
c3 127.0.0.1:7002@17002 master,fail - 1 1700000000 2 disconnected 5461-10922
d4 :0@0 noaddr - 0 0 0 disconnected
";
        let table = parse_cluster_nodes(text);
        assert_eq!(table.len(), 3);
        assert_eq!(table[0].addr, "127.0.0.1:7000");
        assert!(table[0].primary && !table[0].failed);
        assert_eq!(table[1].addr, "127.0.0.1:7001");
        assert_eq!(table[1].primary_id.as_deref(), Some("a1"));
        assert!(!table[1].primary);
        assert!(table[2].failed);
    }
}
