//! Change capture: which keys of the source changed, from keyspace notifications (PSUBSCRIBE, the only
//! change feed ElastiCache allows), kept as a de-duplicated set that spills to disk past a memory bound.
//! A cluster's notifications are per node and never broadcast, so a cluster source is captured by one
//! subscription per primary ([`listen`]), all feeding the one pending set.
//!
//! Notifications are fire-and-forget, so the capture also says when it may have missed something: a
//! dropped subscription, a FLUSHDB / FLUSHALL / SWAPDB on any primary (they emit no key events; they are
//! seen in `INFO commandstats`), a capture started after the snapshot, and on a cluster a failover or a
//! slot migration (a primary that is no longer one, or a slot map that changed: a new primary is not
//! subscribed yet). Whoever replays the capture must then reconcile in full; [`Capture::reset_gap`],
//! called before that pass, subscribes to the primaries as they are now. Never claim zero loss when the
//! capture had a gap.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::data::connect::RedisEndpoint;
use crate::data::error::DataError;
use crate::data::topology::Topology;

mod listen;
mod pending;
mod style;

use listen::Listener;
use pending::Pending;
pub use style::{EventStyle, detect_style, notifications_style};

/// One changed key: its database and name.
pub type ChangedKey = (i64, Vec<u8>);

/// What every subscription of a capture feeds.
pub(crate) struct Shared {
    pending: std::sync::Mutex<Pending>,
    /// Why the capture may have missed changes, if it may have.
    gap: std::sync::Mutex<Option<String>>,
    events: AtomicU64,
    stop: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Shared {
    /// Record the first reason changes may have been missed (kept until a reconcile covers it).
    fn mark_gap(&self, why: impl Into<String>) {
        let mut gap = self.gap.lock().expect("lock");
        if gap.is_none() {
            *gap = Some(why.into());
        }
    }
}

/// A running capture of one source: a single primary, or every primary of a cluster.
pub struct Capture {
    /// The endpoint the capture was given (any node of a cluster): the topology is read through it.
    source: RedisEndpoint,
    style: EventStyle,
    shared: Arc<Shared>,
    /// One subscription per primary, in slot order.
    listeners: Vec<Listener>,
    /// A cluster's slot map when its primaries were subscribed (empty for a single primary).
    slot_map: Vec<String>,
    /// A connection to `source` for the slot map read every round, kept while it answers.
    topology_conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// What `status` and progress show of a capture.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    pub events: u64,
    pub pending: u64,
    pub oldest_pending_ms: u64,
    pub gap: Option<String>,
    /// Primaries subscribed to (1 for a single primary).
    pub primaries: usize,
}

impl Capture {
    /// Subscribe to every primary (and wait until subscribed) before returning, so every change after
    /// this call is seen.
    pub async fn start(
        source: RedisEndpoint,
        style: EventStyle,
        spill_path: PathBuf,
        memory_bound: usize,
    ) -> Result<Capture, DataError> {
        let shared = Arc::new(Shared {
            pending: std::sync::Mutex::new(Pending::new(memory_bound, spill_path)),
            gap: std::sync::Mutex::new(None),
            events: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        let topology = Topology::discover(&source).await?;
        let mut listeners = Vec::new();
        for shard in &topology.shards {
            listeners.push(Listener::start(shard.endpoint.clone(), style, shared.clone()).await?);
        }
        Ok(Capture {
            source,
            style,
            shared,
            listeners,
            slot_map: cluster_slot_map(&topology),
            topology_conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Record that changes may have been missed (the replay must reconcile in full).
    pub fn mark_gap(&self, why: impl Into<String>) {
        self.shared.mark_gap(why);
    }

    /// Why changes may have been missed, checking the source now: every primary's flush counters, and on
    /// a cluster that each subscribed node is still a primary and that the slot map is unchanged. The
    /// primaries are asked at once: this runs inside the cutover's write pause.
    pub async fn gap(&self) -> Option<String> {
        let cluster = !self.slot_map.is_empty();
        let checks = self.listeners.iter().map(|l| l.check(cluster));
        let found = futures_util::future::join_all(checks).await;
        for (l, found) in self.listeners.iter().zip(found) {
            let at = l.endpoint.display_url();
            match found {
                Ok((flushes, _)) if flushes != l.flush_baseline => self.mark_gap(format!(
                    "FLUSHDB, FLUSHALL or SWAPDB ran on the source primary {at} (they emit no key events)"
                )),
                Ok((_, Some(role))) if role != "master" => self.mark_gap(format!(
                    "the source primary {at} is now a {role} (a failover): its shard's writes go to a node not subscribed yet"
                )),
                Ok(_) => {}
                Err(e) => self.mark_gap(format!("cannot read the source primary {at}: {e}")),
            }
        }
        if cluster && self.shared.gap.lock().expect("lock").is_none() {
            // The slot map read through the given endpoint tells of a slot migration (and of a failover
            // once the cluster agrees on it).
            match self.read_topology().await {
                Ok(now) if cluster_slot_map(&now) != self.slot_map => self.mark_gap(format!(
                    "the source's slot map changed (a failover or a slot migration): {} now",
                    now.slot_map().join(" ")
                )),
                Ok(_) => {}
                Err(e) => self.mark_gap(format!("cannot read the source's topology: {e}")),
            }
        }
        self.shared.gap.lock().expect("lock").clone()
    }

    /// The source's topology, on the kept connection (a new one after a failure).
    async fn read_topology(&self) -> Result<Topology, DataError> {
        let mut kept = self.topology_conn.lock().await;
        let mut conn = match &*kept {
            Some(c) => c.clone(),
            None => crate::data::connect::connect(&self.source).await?,
        };
        let read = Topology::discover_on(&mut conn, &self.source).await;
        *kept = read.is_ok().then_some(conn);
        read
    }

    /// Before a full reconcile pass: subscribe to the primaries as they are now (a failover or a slot
    /// migration may have moved them), then count from the source's current state. A change made after
    /// this call is captured; one made before it is copied by the pass.
    pub async fn reset_gap(&mut self) -> Result<(), DataError> {
        if !self.slot_map.is_empty() {
            let topology = Topology::discover(&self.source).await?;
            let map = cluster_slot_map(&topology);
            if map != self.slot_map {
                let mut listeners = Vec::new();
                for shard in &topology.shards {
                    let kept = self
                        .listeners
                        .iter()
                        .position(|l| same_node(&l.endpoint, &shard.endpoint));
                    listeners.push(match kept {
                        Some(i) => self.listeners.swap_remove(i),
                        None => {
                            Listener::start(shard.endpoint.clone(), self.style, self.shared.clone())
                                .await?
                        }
                    });
                }
                // What is left is no longer a primary: dropping a listener ends its subscription.
                self.listeners = listeners;
                self.slot_map = map;
            }
        }
        for l in &mut self.listeners {
            l.flush_baseline = l.check(false).await?.0;
        }
        *self.shared.gap.lock().expect("lock") = None;
        Ok(())
    }

    /// Up to `max` changed keys, removed from the pending set.
    pub fn take(&self, max: usize) -> Result<Vec<ChangedKey>, DataError> {
        let mut pending = self.shared.pending.lock().expect("lock");
        pending.take(max).map_err(|source| DataError::Spill {
            path: pending.spill_path.clone(),
            source,
        })
    }

    /// Wait until a change arrives or `timeout` passes.
    pub async fn wait_for_change(&self, timeout: Duration) {
        if self.shared.pending.lock().expect("lock").len() > 0 {
            return;
        }
        let _ = tokio::time::timeout(timeout, self.shared.wake.notified()).await;
    }

    pub fn has_pending(&self) -> bool {
        self.shared.pending.lock().expect("lock").len() > 0
    }

    pub fn status(&self) -> CaptureStatus {
        let pending = self.shared.pending.lock().expect("lock");
        CaptureStatus {
            events: self.shared.events.load(Ordering::Relaxed),
            pending: pending.len(),
            oldest_pending_ms: pending
                .oldest
                .map(|t| t.elapsed().as_millis() as u64)
                .unwrap_or(0),
            gap: self.shared.gap.lock().expect("lock").clone(),
            primaries: self.listeners.len(),
        }
    }

    /// The primaries subscribed to, in slot order.
    pub fn primaries(&self) -> Vec<RedisEndpoint> {
        self.listeners.iter().map(|l| l.endpoint.clone()).collect()
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for l in &self.listeners {
            l.stop();
        }
    }

    /// Prove that every notification each primary sent before this call is in the pending set (the
    /// cutover does it with the source's writes paused, `verify` to count the changes made while it
    /// counted). A `PING` on each subscribed connection is answered in order after the notifications
    /// queued before it (a marker written on the source cannot work: the pause blocks writes and
    /// PUBLISH), and each listener records every message it received before the answer. All the
    /// subscriptions are asked at once; the first failure is returned.
    pub async fn confirm_received(&self, timeout: Duration) -> Result<(), DataError> {
        let proofs = self.listeners.iter().map(|l| l.confirm_received(timeout));
        futures_util::future::try_join_all(proofs).await.map(|_| ())
    }
}

/// The slot map of a cluster, empty for a single primary (whose topology cannot change under us).
fn cluster_slot_map(topology: &Topology) -> Vec<String> {
    if topology.cluster {
        topology.slot_map()
    } else {
        Vec::new()
    }
}

fn same_node(a: &RedisEndpoint, b: &RedisEndpoint) -> bool {
    a.host == b.host && a.port == b.port
}
