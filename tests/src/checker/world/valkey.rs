//! Valkey: a primary with a replica on a frozen (or real) clock, reached
//! through a proxy that moves to the replica on a failover. Its store is
//! read with raw `XRANGE` on whichever server is primary.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ff_backend_valkey::{ValkeyBackend, ValkeyConfig};
use ff_core::backend::{CursorStore, DeliveryStream, EventPublisher, StreamBackend};
use ff_core::engine_error::EngineError;
use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::{EventMeta, Family, NewEvent};
use ff_core::stream_subscribe::{
    decode_valkey_partitioned, decode_valkey_witnessed, CursorStart, StreamCursor,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::{
    addr, blocking, ck_of, publish_all, publish_each, Fault, FaultCtx, PublishResult, World,
    WorldKind,
};
use crate::checker::history::{DeliveryPath, PosKey, PublishPath};
use crate::checker::truth::{StoreState, StoredEvent};
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

fn parse_id(id: &[u8]) -> Option<PosKey> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    Some(PosKey(ms.parse().ok()?, seq.parse().ok()?))
}

/// The `ck` of one `XRANGE` entry (`[id, [field, value, ...]]`).
fn entry_ck(item: &Reply) -> Option<u64> {
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

fn bulk(r: &Reply) -> Option<&[u8]> {
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

    fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let servers = self.servers();
        blocking(|| servers.primary.command(args)).map_err(|e| e.to_string())
    }

    fn keys(&self, family: Family) -> Vec<(u16, String)> {
        let p = self.publisher.partitions();
        if p == 1 {
            vec![(0, self.publisher.stream_key(family).to_owned())]
        } else {
            (0..p)
                .map(|n| (n, self.publisher.partition_stream_key(family, n).to_owned()))
                .collect()
        }
    }

    /// Every entry of `key`, as `(ck, position)` where it carries a `ck`.
    fn entries(&self, key: &str) -> Result<Vec<(u64, PosKey)>, String> {
        let reply = self.command(&["XRANGE", key, "-", "+"])?;
        let Reply::Array(Some(items)) = reply else {
            return Err(format!("XRANGE {key} answered {reply:?}"));
        };
        let mut out = Vec::new();
        for item in &items {
            let Reply::Array(Some(pair)) = item else {
                continue;
            };
            let (Some(id), Some(Reply::Array(Some(fields)))) =
                (pair.first().and_then(bulk), pair.get(1))
            else {
                continue;
            };
            let pos = parse_id(id).ok_or("an entry id that does not parse")?;
            let mut meta = EventMeta::new();
            for kv in fields.chunks(2) {
                if let [k, v] = kv {
                    if bulk(k) == Some(b"tags") {
                        if let Some(tags) = bulk(v)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|t| EventMeta::parse_tags_json(t).ok())
                        {
                            meta.tags = tags;
                        }
                    }
                }
            }
            if let Some(ck) = ck_of(&meta) {
                out.push((ck, pos));
            }
        }
        Ok(out)
    }

    /// An `XADD` as the README documents it, as a plain client would.
    fn raw_xadd(&self, event: &NewEvent, meta: &EventMeta) -> Result<PosKey, String> {
        let partition = self.publisher.partition_of(event.execution_id());
        let key = if self.publisher.partitions() == 1 {
            self.publisher.stream_key(event.family()).to_owned()
        } else {
            self.publisher
                .partition_stream_key(event.family(), partition)
                .to_owned()
        };
        let execution = event.execution_id().to_string();
        let tags = meta.tags_json();
        let mut args: Vec<&str> = vec!["XADD", &key, "*", "v", "1", "execution_id", &execution];
        let kind_fields: Vec<(String, String)> = match event {
            NewEvent::Completion { outcome, .. } => {
                vec![("outcome".into(), outcome.as_wire().to_owned())]
            }
            NewEvent::TagAttached { tag, .. } => {
                vec![
                    ("type".into(), "attached".into()),
                    ("tag".into(), tag.clone()),
                ]
            }
            _ => return Err("the raw path writes completion and tag events only".into()),
        };
        for (k, v) in &kind_fields {
            args.push(k);
            args.push(v);
        }
        if let Some(ns) = &meta.namespace {
            args.push("namespace");
            args.push(ns);
        }
        args.push("tags");
        args.push(&tags);
        match self.command(&args)? {
            Reply::Bulk(Some(id)) => parse_id(&id).ok_or_else(|| "a bad entry id".into()),
            other => Err(format!("XADD answered {other:?}")),
        }
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

    async fn mismatch(&self, rng: &mut StdRng, ctx: &FaultCtx<'_>) -> Result<(), String> {
        let ours = self.publisher.partitions();
        let theirs = if ours == 1 { 4 } else { ours * 2 };
        let window = ctx.rec.fault(
            format!("a publisher with partitions={theirs} against partitions={ours}"),
            false,
            None,
        );
        let other =
            ValkeyBackend::connect(&self.url, self.config.clone().with_partitions(theirs)).await;
        if let Ok(other) = other {
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
                    self,
                    &draft,
                    PublishPath::Single,
                    started,
                    result,
                );
            }
        } else if let Err(e) = other {
            ctx.rec
                .note(format!("the mismatched publisher was refused: {e}"));
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
        vec![PublishPath::Single, PublishPath::Batch, PublishPath::Raw]
    }

    fn delivery_paths(&self) -> Vec<DeliveryPath> {
        let mut paths = vec![
            DeliveryPath::Typed,
            DeliveryPath::Delivery,
            DeliveryPath::Store,
            DeliveryPath::Sse,
        ];
        if self.partitions() > 1 {
            paths.push(DeliveryPath::Partitions);
        }
        paths
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
            Fault::SettingMismatch => self.mismatch(rng, ctx).await,
            Fault::Prune => self.prune(rng, ctx),
            other => Err(format!("the valkey world cannot inject {other:?}")),
        }
    }

    fn position(&self, family: Family, cursor: &StreamCursor) -> Option<PosKey> {
        let p = self.partitions();
        if p == 1 {
            match decode_valkey_witnessed(cursor, family).ok()? {
                CursorStart::After(v) => Some(PosKey(v.at.ms, v.at.seq)),
                _ => None,
            }
        } else {
            match decode_valkey_partitioned(cursor, family, p, None).ok()? {
                CursorStart::After(pp) => {
                    let (_, v) = pp.iter().next()?;
                    (pp.len() == 1).then_some(PosKey(v.ms, v.seq))
                }
                _ => None,
            }
        }
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
