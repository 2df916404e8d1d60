//! Valkey: a primary with a replica on a frozen (or real) clock, reached
//! through a proxy that moves to the replica on a failover. Its store is
//! read with raw `XRANGE` on whichever server is primary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_valkey::cursor_codec::decode_valkey_witnessed;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{decode_valkey_partitioned, CursorStart, StreamCursor};
use rand::rngs::StdRng;
use rand::Rng;

use super::{
    addr, blocking, ck_of, publish_all, publish_each, Fault, FaultCtx, PublishResult, World,
    WorldKind,
};
use crate::checker::history::{DeliveryPath, PosKey, PublishPath};
use crate::checker::truth::{StoreState, StoredEvent};
use crate::support::valkey_cluster::Session;
use crate::support::{unique_name, Reply, TcpProxy, ValkeyServer};

/// The frozen wall clock both servers run on, when the seed freezes it.
const FROZEN_AT: &str = "2026-01-01 00:00:00";

struct Servers {
    primary: ValkeyServer,
    replica: Option<ValkeyServer>,
}

/// The Valkey world.
pub struct ValkeyWorld {
    servers: Mutex<Servers>,
    proxy: TcpProxy,
    url: String,
    config: ValkeyConfig,
    publisher: Arc<ValkeyBackend>,
    removed: Mutex<BTreeMap<Family, Vec<StoredEvent>>>,
    survived: Mutex<Option<std::collections::HashSet<u64>>>,
}

pub(super) fn parse_id(id: &[u8]) -> Option<PosKey> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    Some(PosKey(ms.parse().ok()?, seq.parse().ok()?))
}

/// The `ck` of one `XRANGE` entry (`[id, [field, value, ...]]`).
pub(super) fn entry_ck(item: &Reply) -> Option<u64> {
    let Reply::Array(Some(pair)) = item else {
        return None;
    };
    let Some(Reply::Array(Some(fields))) = pair.get(1) else {
        return None;
    };
    let tags = fields
        .chunks(2)
        .find(|kv| kv.first().and_then(bulk) == Some(b"tags"))?
        .get(1)
        .and_then(bulk)?;
    let mut meta = EventMeta::new();
    meta.tags = EventMeta::parse_tags_json(std::str::from_utf8(tags).ok()?).ok()?;
    ck_of(&meta)
}

pub(super) fn bulk(r: &Reply) -> Option<&[u8]> {
    match r {
        Reply::Bulk(Some(b)) => Some(b),
        _ => None,
    }
}

impl ValkeyWorld {
    /// Start the servers and the publisher; the partition count, read
    /// batch and clock drawn from `rng`.
    pub async fn start(rng: &mut StdRng) -> Result<Self, String> {
        let frozen = rng.random_bool(0.7);
        let start = || {
            if frozen {
                ValkeyServer::start_with_frozen_clock(FROZEN_AT)
            } else {
                ValkeyServer::start()
            }
        };
        let (primary, replica) = blocking(|| -> Result<_, String> {
            let primary = start().map_err(|e| e.to_string())?;
            let replica = start().map_err(|e| e.to_string())?;
            Ok((primary, replica))
        })?;
        let port = primary.port().to_string();
        blocking(|| replica.command(&["REPLICAOF", "127.0.0.1", &port]))
            .map_err(|e| e.to_string())?;
        let proxy = TcpProxy::start(addr(primary.port())).map_err(|e| e.to_string())?;
        let partitions = [1u16, 1, 4][rng.random_range(0..3)];
        let config = ValkeyConfig::new()
            .with_key_prefix(format!("{}:", unique_name("ck")))
            .with_partitions(partitions)
            .with_read_batch([2, 16, 256][rng.random_range(0..3)])
            .with_checkpoint_interval(Duration::from_millis(200))
            .with_safety_net_poll(Duration::from_secs(30));
        let url = format!("redis://127.0.0.1:{}", proxy.port());
        let publisher = ValkeyBackend::connect(&url, config.clone())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            servers: Mutex::new(Servers {
                primary,
                replica: Some(replica),
            }),
            proxy,
            url,
            config,
            publisher: Arc::new(publisher),
            removed: Mutex::new(BTreeMap::new()),
            survived: Mutex::new(None),
        })
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, Servers> {
        self.servers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One command to whichever server is primary now, sent without
    /// holding the servers' lock (a write may wait out a `CLIENT PAUSE`).
    fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let port = self.servers().primary.port();
        blocking(|| Session::connect(port)?.text_command(args)).map_err(|e| e.to_string())
    }

    fn keys(&self, family: Family) -> Vec<(u16, String)> {
        stream_keys(&self.publisher, family)
    }

    /// Every entry of `key`, as `(ck, position)` where it carries a `ck`.
    fn entries(&self, key: &str) -> Result<Vec<(u64, PosKey)>, String> {
        xrange_cks(key, self.command(&["XRANGE", key, "-", "+"])?)
    }

    /// An `XADD` as the README documents it, as a plain client would.
    fn raw_xadd(&self, event: &NewEvent, meta: &EventMeta) -> Result<PosKey, String> {
        let (_, args) = raw_xadd_args(&self.publisher, event, meta)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        xadd_id(self.command(&args)?)
    }

    /// A planned switchover, as a sentinel or a managed service runs it:
    /// writes pause on the primary, the replica catches up and is
    /// promoted, the address moves to it, and the old primary becomes its
    /// replica (its blocked readers are answered `-UNBLOCKED`). Nothing
    /// acknowledged is lost.
    async fn planned_failover(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let Some(replica) = self.servers().replica.take() else {
            return Ok(());
        };
        let window = ctx.rec.fault(
            "planned failover: the replica catches up, is promoted, the old primary follows it",
            false,
            None,
        );
        let result = self.switch_over(&replica, rng).await;
        if result.is_err() {
            let _ = self.command(&["CLIENT", "UNPAUSE"]);
        }
        let old = if result.is_ok() {
            self.proxy.retarget(addr(replica.port()));
            std::mem::replace(&mut self.servers().primary, replica)
        } else {
            replica
        };
        if result.is_ok() {
            let port = self.servers().primary.port().to_string();
            blocking(|| old.command(&["REPLICAOF", "127.0.0.1", &port]))
                .map_err(|e| e.to_string())?;
            blocking(|| old.command(&["CLIENT", "UNPAUSE"])).map_err(|e| e.to_string())?;
        }
        self.servers().replica = Some(old);
        result?;
        ctx.rec.heal(window);
        Ok(())
    }

    /// Pause writes on the primary, wait until `replica` has every byte of
    /// it, and promote `replica`.
    async fn switch_over(&self, replica: &ValkeyServer, rng: &mut StdRng) -> Result<(), String> {
        let offset = |server: &ValkeyServer| -> Result<u64, String> {
            let info = match blocking(|| server.command(&["INFO", "replication"])) {
                Ok(Reply::Bulk(Some(text))) => String::from_utf8_lossy(&text).into_owned(),
                other => return Err(format!("INFO replication answered {other:?}")),
            };
            info.lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| "INFO replication has no master_repl_offset".into())
        };
        let pause_ms = rng.random_range(2000..4000).to_string();
        self.command(&["CLIENT", "PAUSE", &pause_ms, "WRITE"])?;
        let target = {
            let servers = self.servers();
            offset(&servers.primary)?
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while offset(replica)? < target {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("the replica did not reach offset {target} in 2 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        blocking(|| replica.command(&["REPLICAOF", "NO", "ONE"])).map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn lossy_failover(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let Some(replica) = self.servers().replica.take() else {
            return Ok(());
        };
        let window = ctx.rec.fault(
            "lossy failover to a replica that misses the tail",
            true,
            None,
        );
        // The replica stops following; the primary goes on taking writes
        // the replica will never have.
        blocking(|| replica.command(&["REPLICAOF", "NO", "ONE"])).map_err(|e| e.to_string())?;
        // What retention removed is part of the history the replica keeps
        // only up to the newest id the replica had seen.
        let mut seen = std::collections::HashMap::new();
        let mut held = std::collections::HashSet::new();
        for family in crate::checker::plan::FAMILIES {
            for (partition, key) in self.keys(family) {
                if let Ok(Reply::Array(Some(items))) =
                    blocking(|| replica.command(&["XRANGE", &key, "-", "+"]))
                {
                    held.extend(items.iter().filter_map(entry_ck));
                }
                let info = blocking(|| replica.command(&["XINFO", "STREAM", &key]));
                if let Ok(Reply::Array(Some(fields))) = info {
                    let last = fields
                        .chunks(2)
                        .find(|kv| kv.first().and_then(bulk) == Some(b"last-generated-id"))
                        .and_then(|kv| kv.get(1).and_then(bulk))
                        .and_then(parse_id);
                    if let Some(last) = last {
                        seen.insert((family, partition), last);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        ctx.send_half_away(Duration::from_millis(rng.random_range(500..2500)));
        self.proxy.retarget(addr(replica.port()));
        let old = {
            let mut servers = self.servers();
            std::mem::replace(&mut servers.primary, replica)
        };
        blocking(move || drop(old));
        ctx.rec.note(format!(
            "the replica held {} events; its newest ids: {seen:?}",
            held.len()
        ));
        *self.survived.lock().unwrap_or_else(|e| e.into_inner()) = Some(held);
        for (family, events) in self
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            events.retain(|e| {
                seen.get(&(*family, e.partition))
                    .is_some_and(|&last| e.pos <= last)
            });
        }
        ctx.rec.heal(window);
        Ok(())
    }

    fn prune(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let family = [Family::Completion, Family::InstanceTags][rng.random_range(0..2)];
        for (partition, key) in self.keys(family) {
            let entries = self.entries(&key)?;
            if entries.len() < 4 {
                continue;
            }
            let cut = entries[entries.len() / 2].1;
            let min_id = format!("{}-{}", cut.0, cut.1);
            self.command(&["XTRIM", &key, "MINID", &min_id])?;
            let gone: Vec<StoredEvent> = entries
                .iter()
                .filter(|(_, pos)| *pos < cut)
                .map(|&(ck, pos)| StoredEvent { ck, partition, pos })
                .collect();
            ctx.rec.note(format!(
                "trimmed {} entries of {key} before {min_id}",
                gone.len()
            ));
            self.removed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(family)
                .or_default()
                .extend(gone);
        }
        Ok(())
    }
}

#[async_trait]
impl World for ValkeyWorld {
    fn kind(&self) -> WorldKind {
        WorldKind::Valkey
    }

    fn partitions(&self) -> u16 {
        self.publisher.partitions()
    }

    fn exact(&self) -> bool {
        true
    }

    fn publish_paths(&self) -> Vec<PublishPath> {
        PUBLISH_PATHS.to_vec()
    }

    fn delivery_paths(&self) -> Vec<DeliveryPath> {
        delivery_paths(self.partitions())
    }

    fn faults(&self) -> Vec<Fault> {
        vec![
            Fault::KillRestart,
            Fault::Pause(1500),
            Fault::LossyFailover,
            Fault::SettingMismatch,
            Fault::Prune,
            Fault::GatewayRestart,
        ]
    }

    fn operations(&self) -> Vec<Fault> {
        vec![Fault::PlannedFailover]
    }

    async fn reader(&self) -> Result<Arc<dyn StreamBackend>, EngineError> {
        Ok(Arc::new(
            ValkeyBackend::connect(&self.url, self.config.clone()).await?,
        ))
    }

    fn store(&self) -> Arc<dyn CursorStore> {
        self.publisher.clone()
    }

    async fn publish(
        &self,
        path: PublishPath,
        events: Vec<(NewEvent, EventMeta)>,
    ) -> Vec<PublishResult> {
        match path {
            PublishPath::Raw => events
                .iter()
                .map(|(e, m)| self.raw_xadd(e, m).map(|pos| (None, Some(pos))))
                .collect(),
            PublishPath::Batch => publish_all(self.publisher.as_ref(), events).await,
            _ => publish_each(self.publisher.as_ref(), events).await,
        }
    }

    async fn subscribe_partitions(
        &self,
        family: Family,
        partitions: &[u16],
        cursor: StreamCursor,
        filter: &SubscriptionFilter,
    ) -> Result<DeliveryStream, EngineError> {
        let backend = ValkeyBackend::connect(&self.url, self.config.clone()).await?;
        let stream = backend
            .subscribe_partitions(family, partitions, cursor, filter)
            .await?;
        // The stream owns what it needs; the backend handle may go.
        Ok(stream)
    }

    async fn inject(
        &self,
        fault: &Fault,
        rng: &mut StdRng,
        ctx: &FaultCtx<'_>,
    ) -> Result<(), String> {
        match fault {
            Fault::KillRestart => {
                let window = ctx
                    .rec
                    .fault("kill -9 of the primary, then a restart", false, None);
                blocking(|| self.servers().primary.kill()).map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..800))).await;
                blocking(|| self.servers().primary.restart()).map_err(|e| e.to_string())?;
                ctx.rec.heal(window);
                Ok(())
            }
            Fault::Pause(ms) => {
                let Some(pid) = self.servers().primary.pid() else {
                    return Ok(());
                };
                let window =
                    ctx.rec
                        .fault(format!("SIGSTOP of the primary for {ms} ms"), false, None);
                let signal = |sig: &str| {
                    std::process::Command::new("kill")
                        .args([sig, &pid.to_string()])
                        .status()
                        .map_err(|e| e.to_string())
                };
                signal("-STOP")?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(*ms / 4..=*ms))).await;
                signal("-CONT")?;
                ctx.rec.heal(window);
                Ok(())
            }
            Fault::LossyFailover => self.lossy_failover(rng, ctx).await,
            Fault::PlannedFailover => self.planned_failover(rng, ctx).await,
            Fault::SettingMismatch => {
                publish_mismatched(self, &self.url, &self.config, rng, ctx).await
            }
            Fault::Prune => self.prune(rng, ctx),
            other => Err(format!("the valkey world cannot inject {other:?}")),
        }
    }

    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey> {
        position_of(self.partitions(), family, cursor)
    }

    async fn state(&self, _rec: &crate::checker::history::Recorder) -> Result<StoreState, String> {
        let mut state = StoreState::default();
        for family in crate::checker::plan::FAMILIES {
            let mut stored = Vec::new();
            for (partition, key) in self.keys(family) {
                for (ck, pos) in self.entries(&key)? {
                    stored.push(StoredEvent { ck, partition, pos });
                }
            }
            state.stored.insert(family, stored);
        }
        state.survived = self
            .survived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        state.removed = self
            .removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(state)
    }
}

/// The stream keys of `family`, with their partitions.
pub(super) fn stream_keys(publisher: &ValkeyBackend, family: Family) -> Vec<(u16, String)> {
    let p = publisher.partitions();
    if p == 1 {
        vec![(0, publisher.stream_key(family).to_owned())]
    } else {
        (0..p)
            .map(|n| (n, publisher.partition_stream_key(family, n).to_owned()))
            .collect()
    }
}

/// The entries of an `XRANGE` reply, as `(ck, position)` where they carry a `ck`.
pub(super) fn xrange_cks(key: &str, reply: Reply) -> Result<Vec<(u64, PosKey)>, String> {
    let Reply::Array(Some(items)) = reply else {
        return Err(format!("XRANGE {key} answered {reply:?}"));
    };
    let mut out = Vec::new();
    for item in &items {
        let Some(ck) = entry_ck(item) else {
            continue;
        };
        let Reply::Array(Some(pair)) = item else {
            continue;
        };
        let pos = pair
            .first()
            .and_then(bulk)
            .and_then(parse_id)
            .ok_or("an entry id that does not parse")?;
        out.push((ck, pos));
    }
    Ok(out)
}

/// The key and arguments of an `XADD` of `event` as the README documents
/// the entry layout, as a plain client would write it.
pub(super) fn raw_xadd_args(
    publisher: &ValkeyBackend,
    event: &NewEvent,
    meta: &EventMeta,
) -> Result<(String, Vec<String>), String> {
    let partition = publisher.partition_of(event.execution_id());
    let key = if publisher.partitions() == 1 {
        publisher.stream_key(event.family()).to_owned()
    } else {
        publisher
            .partition_stream_key(event.family(), partition)
            .to_owned()
    };
    let mut args: Vec<String> = ["XADD", &key, "*", "v", "1", "execution_id"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(event.execution_id().to_string());
    match event {
        NewEvent::Completion { outcome, .. } => {
            args.extend(["outcome".into(), outcome.as_wire().to_owned()]);
        }
        NewEvent::TagAttached { tag, .. } => {
            args.extend(["type".into(), "attached".into(), "tag".into(), tag.clone()]);
        }
        _ => return Err("the raw path writes completion and tag events only".into()),
    }
    if let Some(ns) = &meta.namespace {
        args.extend(["namespace".into(), ns.clone()]);
    }
    args.extend(["tags".into(), meta.tags_json()]);
    Ok((key, args))
}

/// The entry id an `XADD` answered.
pub(super) fn xadd_id(reply: Reply) -> Result<PosKey, String> {
    match reply {
        Reply::Bulk(Some(id)) => parse_id(&id).ok_or_else(|| "a bad entry id".into()),
        other => Err(format!("XADD answered {other:?}")),
    }
}

/// The stored position a publish cursor names, with `partitions` per family.
pub(super) fn position_of(
    partitions: u16,
    family: Family,
    cursor: &StreamCursor,
) -> Option<PosKey> {
    if partitions == 1 {
        match decode_valkey_witnessed(cursor, family).ok()? {
            CursorStart::After(v) => Some(PosKey(v.at.ms, v.at.seq)),
            _ => None,
        }
    } else {
        match decode_valkey_partitioned(cursor, family, partitions, None).ok()? {
            CursorStart::After(pp) => {
                let (_, v) = pp.iter().next()?;
                (pp.len() == 1).then_some(PosKey(v.ms, v.seq))
            }
            _ => None,
        }
    }
}

/// A publisher configured with another partition count publishes a few
/// events (or is refused), as a rolling deploy with a changed setting would.
pub(super) async fn publish_mismatched(
    world: &dyn World,
    url: &str,
    config: &ValkeyConfig,
    rng: &mut StdRng,
    ctx: &FaultCtx<'_>,
) -> Result<(), String> {
    let ours = world.partitions();
    let theirs = if ours == 1 { 4 } else { ours * 2 };
    let window = ctx.rec.fault(
        format!("a publisher with partitions={theirs} against partitions={ours}"),
        false,
        None,
    );
    match ValkeyBackend::connect(url, config.clone().with_partitions(theirs)).await {
        Ok(other) => {
            for _ in 0..rng.random_range(1..4) {
                let family = [Family::Completion, Family::InstanceTags][rng.random_range(0..2)];
                let draft = ctx.draft(family);
                let started = ctx.rec.now();
                let result = other
                    .publish(draft.event.clone(), draft.meta.clone())
                    .await
                    .map(|c| (Some(c), None))
                    .map_err(|e| e.to_string());
                crate::checker::record_publish(
                    ctx.rec,
                    world,
                    &draft,
                    PublishPath::Single,
                    started,
                    result,
                );
            }
        }
        Err(e) => ctx
            .rec
            .note(format!("the mismatched publisher was refused: {e}")),
    }
    ctx.rec.heal(window);
    Ok(())
}

/// How the Valkey worlds publish: through ff, and as a plain client would.
pub(super) const PUBLISH_PATHS: [PublishPath; 3] =
    [PublishPath::Single, PublishPath::Batch, PublishPath::Raw];

/// How the Valkey worlds read: every path, a partition subset where there
/// are partitions.
pub(super) fn delivery_paths(partitions: u16) -> Vec<DeliveryPath> {
    let mut paths = vec![
        DeliveryPath::Typed,
        DeliveryPath::Delivery,
        DeliveryPath::Store,
        DeliveryPath::Sse,
    ];
    if partitions > 1 {
        paths.push(DeliveryPath::Partitions);
    }
    paths
}
