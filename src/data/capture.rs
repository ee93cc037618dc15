//! Change capture: which keys of the source changed, from keyspace notifications (PSUBSCRIBE, the only
//! change feed ElastiCache allows), kept as a de-duplicated set that spills to disk past a memory bound.
//!
//! Notifications are fire-and-forget, so the capture also says when it may have missed something: a
//! dropped subscription, a FLUSHDB / FLUSHALL / SWAPDB on the source (they emit no key events; they are
//! seen in `INFO commandstats`), or a capture started after the snapshot. Whoever replays the capture must
//! then reconcile in full. Never claim zero loss when the capture had a gap.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use serde::Serialize;

use crate::data::connect::{RedisEndpoint, connect, pubsub};
use crate::data::error::DataError;

/// One changed key: its database and name.
pub type ChangedKey = (i64, Vec<u8>);

/// Which notifications the source emits, as its `notify-keyspace-events` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStyle {
    /// `E`: `__keyevent@<db>__:<event>` carries the key as the message.
    KeyEvent,
    /// `K` only: `__keyspace@<db>__:<key>` carries the event as the message.
    KeySpace,
}

/// Check a `notify-keyspace-events` value: `K` or `E`, plus every key class (`A`, or `g$lshzxe`).
pub fn notifications_style(flags: &str) -> Result<EventStyle, DataError> {
    let has = |c: char| flags.contains(c);
    let all_classes = has('A') || "g$lshzxe".chars().all(has);
    let style = if has('E') {
        Some(EventStyle::KeyEvent)
    } else if has('K') {
        Some(EventStyle::KeySpace)
    } else {
        None
    };
    match style {
        Some(s) if all_classes => Ok(s),
        _ => Err(DataError::Notifications {
            peer: None,
            message: format!(
                "notify-keyspace-events is `{flags}`; change capture needs `K` or `E` plus `A` (e.g. `KEA`)"
            ),
        }),
    }
}

/// The pending set: in memory up to a bound, then appended to a spill file (duplicates across the two are
/// harmless: a replay copies the key's current state, twice at worst).
struct Pending {
    memory: HashSet<ChangedKey>,
    bound: usize,
    spill_path: PathBuf,
    spill: Option<BufWriter<std::fs::File>>,
    spilled: u64,
    /// Spill records already read back.
    spill_read: u64,
    oldest: Option<Instant>,
}

impl Pending {
    fn insert(&mut self, key: ChangedKey) -> std::io::Result<()> {
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        if self.memory.len() < self.bound || self.memory.contains(&key) {
            self.memory.insert(key);
            return Ok(());
        }
        let spill = match &mut self.spill {
            Some(s) => s,
            None => {
                if let Some(parent) = self.spill_path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&self.spill_path)?;
                self.spill.insert(BufWriter::new(f))
            }
        };
        // One record: db (8 bytes), key length (4 bytes), key.
        spill.write_all(&key.0.to_le_bytes())?;
        spill.write_all(&(key.1.len() as u32).to_le_bytes())?;
        spill.write_all(&key.1)?;
        self.spilled += 1;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.memory.len() as u64 + (self.spilled - self.spill_read)
    }

    /// Up to `max` keys: from memory first, then from the spill file.
    fn take(&mut self, max: usize) -> std::io::Result<Vec<ChangedKey>> {
        let mut out: Vec<ChangedKey> = Vec::with_capacity(max.min(self.memory.len()));
        let keys: Vec<ChangedKey> = self.memory.iter().take(max).cloned().collect();
        for k in keys {
            self.memory.remove(&k);
            out.push(k);
        }
        if out.len() < max && self.spilled > self.spill_read {
            if let Some(s) = &mut self.spill {
                s.flush()?;
            }
            let mut reader = BufReader::new(std::fs::File::open(&self.spill_path)?);
            // Skip what was read before (spill files are bounded by the churn between two drains).
            for _ in 0..self.spill_read {
                read_record(&mut reader)?;
            }
            while out.len() < max && self.spill_read < self.spilled {
                out.push(read_record(&mut reader)?);
                self.spill_read += 1;
            }
            if self.spill_read == self.spilled {
                self.spill = None;
                let _ = std::fs::remove_file(&self.spill_path);
                self.spilled = 0;
                self.spill_read = 0;
            }
        }
        if self.len() == 0 {
            self.oldest = None;
        }
        Ok(out)
    }
}

fn read_record(r: &mut impl BufRead) -> std::io::Result<ChangedKey> {
    let mut db = [0u8; 8];
    let mut len = [0u8; 4];
    r.read_exact(&mut db)?;
    r.read_exact(&mut len)?;
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    Ok((i64::from_le_bytes(db), key))
}

/// The counters of the commands that change keys without key events.
async fn flush_counts(source: &RedisEndpoint) -> Result<BTreeMap<String, u64>, DataError> {
    let mut conn = connect(source).await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .map_err(|e| DataError::redis(source, &e).context("INFO commandstats"))?;
    let mut out = BTreeMap::new();
    for line in info.lines() {
        for name in ["flushdb", "flushall", "swapdb"] {
            if let Some(rest) = line.strip_prefix(&format!("cmdstat_{name}:calls=")) {
                let calls = rest
                    .split(',')
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                out.insert(name.to_string(), calls);
            }
        }
    }
    Ok(out)
}

struct Shared {
    pending: std::sync::Mutex<Pending>,
    /// Why the capture may have missed changes, if it may have.
    gap: std::sync::Mutex<Option<String>>,
    events: AtomicU64,
    subscribed: AtomicBool,
    stop: AtomicBool,
    wake: tokio::sync::Notify,
    /// Fence proofs asked of the listener: answered once every notification sent before is recorded.
    proofs: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ProofRequest>>>,
}

type ProofRequest = tokio::sync::oneshot::Sender<Result<(), DataError>>;

/// A running capture of one source endpoint.
pub struct Capture {
    source: RedisEndpoint,
    shared: Arc<Shared>,
    flush_baseline: BTreeMap<String, u64>,
    task: tokio::task::JoinHandle<()>,
}

/// What `status` and progress show of a capture.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    pub events: u64,
    pub pending: u64,
    pub oldest_pending_ms: u64,
    pub gap: Option<String>,
}

impl Capture {
    /// Subscribe (and wait until subscribed) before returning, so every change after this call is seen.
    pub async fn start(
        source: RedisEndpoint,
        style: EventStyle,
        spill_path: PathBuf,
        memory_bound: usize,
    ) -> Result<Capture, DataError> {
        let flush_baseline = flush_counts(&source).await?;
        let shared = Arc::new(Shared {
            pending: std::sync::Mutex::new(Pending {
                memory: HashSet::new(),
                bound: memory_bound.max(1),
                spill_path,
                spill: None,
                spilled: 0,
                spill_read: 0,
                oldest: None,
            }),
            gap: std::sync::Mutex::new(None),
            events: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            proofs: std::sync::Mutex::new(None),
        });
        let pattern = match style {
            EventStyle::KeyEvent => "__keyevent@*__:*",
            EventStyle::KeySpace => "__keyspace@*__:*",
        };
        let mut first = pubsub(&source).await?;
        first
            .psubscribe(pattern)
            .await
            .map_err(|e| DataError::redis(&source, &e).context("PSUBSCRIBE"))?;
        shared.subscribed.store(true, Ordering::SeqCst);
        let task = tokio::spawn(listen(
            source.clone(),
            style,
            pattern,
            first,
            shared.clone(),
        ));
        Ok(Capture {
            source,
            shared,
            flush_baseline,
            task,
        })
    }

    /// Record that changes may have been missed (the replay must reconcile in full).
    pub fn mark_gap(&self, why: impl Into<String>) {
        let mut gap = self.shared.gap.lock().expect("lock");
        if gap.is_none() {
            *gap = Some(why.into());
        }
    }

    /// Why changes may have been missed, checking the flush counters of the source now.
    pub async fn gap(&self) -> Option<String> {
        match flush_counts(&self.source).await {
            Ok(now) if now != self.flush_baseline => self.mark_gap(
                "FLUSHDB, FLUSHALL or SWAPDB ran on the source (they emit no key events)",
            ),
            Ok(_) => {}
            Err(e) => self.mark_gap(format!("cannot read the source's command counters: {e}")),
        }
        self.shared.gap.lock().expect("lock").clone()
    }

    /// After a full reconcile, a gap is covered: start counting again from the source's current state.
    pub async fn reset_gap(&mut self) -> Result<(), DataError> {
        self.flush_baseline = flush_counts(&self.source).await?;
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
        }
    }

    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.task.abort();
    }

    /// Prove that every notification the source sent before this call is in the pending set (the cutover
    /// does it with the source's writes paused, `verify` to count the changes made while it counted). A `PING` on the subscribed connection is answered in order after the
    /// notifications queued before it (a marker written on the source cannot work: the pause blocks
    /// writes and PUBLISH), and the listener records every message it received before the answer.
    pub async fn confirm_received(&self, timeout: Duration) -> Result<(), DataError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match &*self.shared.proofs.lock().expect("lock") {
            Some(requests) => requests.send(reply).is_ok(),
            None => false,
        };
        let peer = crate::data::Peer::from(&self.source);
        if !sent || !self.shared.subscribed.load(Ordering::SeqCst) {
            return Err(DataError::Unreachable {
                peer,
                message: "the keyspace-notification subscription is not connected".into(),
            });
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DataError::Unreachable {
                peer,
                message: "the subscription dropped while proving the fence".into(),
            }),
            Err(_) => Err(DataError::Timeout {
                peer,
                message: format!(
                    "no answer on the subscription within {} ms",
                    timeout.as_millis()
                ),
            }),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Receive notifications; on a dropped subscription mark the gap and subscribe again.
async fn listen(
    source: RedisEndpoint,
    style: EventStyle,
    pattern: &'static str,
    first: redis::aio::PubSub,
    shared: Arc<Shared>,
) {
    let mut conn = Some(first);
    loop {
        if let Some(pubsub) = conn.take() {
            let (mut sink, mut stream) = pubsub.split();
            let (requests, mut proofs) = tokio::sync::mpsc::unbounded_channel::<ProofRequest>();
            *shared.proofs.lock().expect("lock") = Some(requests);
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => record(style, &msg, &shared),
                        None => break,
                    },
                    Some(reply) = proofs.recv() => {
                        // The connection's reader hands over every message that precedes the PONG before
                        // it resolves the PING, so they are all waiting in the stream once it returns.
                        let answer = sink.ping::<redis::Value>().await;
                        while let Some(Some(msg)) = stream.next().now_or_never() {
                            record(style, &msg, &shared);
                        }
                        let _ = reply.send(answer.map(|_| ()).map_err(|e| {
                            DataError::redis(&source, &e).context("PING on the subscription")
                        }));
                    }
                }
            }
            *shared.proofs.lock().expect("lock") = None;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        shared.subscribed.store(false, Ordering::SeqCst);
        {
            let mut gap = shared.gap.lock().expect("lock");
            gap.get_or_insert_with(|| "the keyspace-notification subscription dropped".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(mut p) = pubsub(&source).await
            && p.psubscribe(pattern).await.is_ok()
        {
            shared.subscribed.store(true, Ordering::SeqCst);
            conn = Some(p);
        }
    }
}

/// Add the key of one notification to the pending set.
fn record(style: EventStyle, msg: &redis::Msg, shared: &Shared) {
    let Some(key) = parse(style, msg.get_channel_name(), msg.get_payload_bytes()) else {
        return;
    };
    shared.events.fetch_add(1, Ordering::Relaxed);
    let failed = shared.pending.lock().expect("lock").insert(key).err();
    if let Some(e) = failed {
        let mut gap = shared.gap.lock().expect("lock");
        gap.get_or_insert_with(|| format!("capture spill file: {e}"));
    }
    shared.wake.notify_waiters();
}

/// `(db, key)` of one notification.
fn parse(style: EventStyle, channel: &str, payload: &[u8]) -> Option<ChangedKey> {
    let (prefix, rest) = match style {
        EventStyle::KeyEvent => ("__keyevent@", channel.strip_prefix("__keyevent@")?),
        EventStyle::KeySpace => ("__keyspace@", channel.strip_prefix("__keyspace@")?),
    };
    let _ = prefix;
    let (db, tail) = rest.split_once("__:")?;
    let db: i64 = db.parse().ok()?;
    Some(match style {
        EventStyle::KeyEvent => (db, payload.to_vec()),
        EventStyle::KeySpace => (db, tail.as_bytes().to_vec()),
    })
}

/// How the source notifies changes. `CONFIG GET` where allowed; where it is blocked (ElastiCache), and
/// `allow_probe`, a probe key with a 2 s expiry is written and its notification awaited.
pub async fn detect_style(
    source: &RedisEndpoint,
    allow_probe: bool,
) -> Result<EventStyle, DataError> {
    let mut conn = connect(source).await?;
    let config: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut conn)
        .await;
    if let Ok(pair) = config
        && pair.len() == 2
    {
        return notifications_style(&pair[1]).map_err(|e| match e {
            DataError::Notifications { message, .. } => DataError::Notifications {
                peer: Some(source.into()),
                message,
            },
            other => other,
        });
    }
    if !allow_probe {
        // Whatever the failure (an error reply, an odd reply), CONFIG cannot be used here.
        return Err(DataError::Refused {
            peer: source.into(),
            command: Some("CONFIG".into()),
            message: "CONFIG is not allowed on the source, so its notify-keyspace-events cannot be read without writing a probe key".into(),
        });
    }
    let mut sub = pubsub(source).await?;
    sub.psubscribe("__key*__:*")
        .await
        .map_err(|e| DataError::redis(source, &e).context("PSUBSCRIBE"))?;
    let mut token = [0u8; 6];
    aws_lc_rs::rand::fill(&mut token).map_err(|_| DataError::Internal("random".into()))?;
    let probe = format!(
        "ecmigrate:probe:{}",
        token.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let _: () = redis::cmd("SET")
        .arg(&probe)
        .arg("1")
        .arg("PX")
        .arg(2000)
        .query_async(&mut conn)
        .await
        .map_err(|e| DataError::redis(source, &e).context("probe"))?;
    let mut stream = sub.on_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut keyspace_seen = false;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let channel = msg.get_channel_name();
        if channel.starts_with("__keyevent@") && msg.get_payload_bytes() == probe.as_bytes() {
            return Ok(EventStyle::KeyEvent);
        }
        keyspace_seen |= channel.starts_with("__keyspace@") && channel.ends_with(probe.as_str());
    }
    match keyspace_seen {
        true => Ok(EventStyle::KeySpace),
        _ => Err(DataError::Notifications {
            peer: Some(source.into()),
            message: "no keyspace notification arrived for a probe key: notify-keyspace-events is off or lacks `K`/`E` plus `A`".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_flags() {
        assert_eq!(notifications_style("KEA").ok(), Some(EventStyle::KeyEvent));
        assert_eq!(
            notifications_style("Kg$lshzxe").ok(),
            Some(EventStyle::KeySpace)
        );
        assert!(matches!(
            notifications_style(""),
            Err(DataError::Notifications { .. })
        ));
        assert!(notifications_style("Ex").is_err());
        assert!(notifications_style("KA").is_ok());
    }

    #[test]
    fn channels_parse_to_db_and_key() {
        assert_eq!(
            parse(EventStyle::KeyEvent, "__keyevent@3__:set", b"k"),
            Some((3, b"k".to_vec()))
        );
        assert_eq!(
            parse(EventStyle::KeySpace, "__keyspace@0__:a:b", b"del"),
            Some((0, b"a:b".to_vec()))
        );
        assert_eq!(parse(EventStyle::KeyEvent, "other", b"k"), None);
    }

    #[test]
    fn pending_spills_past_its_bound_and_gives_everything_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Pending {
            memory: HashSet::new(),
            bound: 10,
            spill_path: dir.path().join("spill"),
            spill: None,
            spilled: 0,
            spill_read: 0,
            oldest: None,
        };
        for i in 0..100u32 {
            p.insert((0, format!("k{i}").into_bytes())).unwrap();
            p.insert((0, format!("k{}", i % 5).into_bytes())).unwrap();
        }
        assert_eq!(p.memory.len(), 10);
        assert!(p.spilled > 0);
        let mut seen = HashSet::new();
        loop {
            let batch = p.take(7).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(p.len(), 0);
        assert!(!dir.path().join("spill").exists());
    }
}
