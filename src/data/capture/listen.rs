//! One subscription of the capture: a source primary's keyspace notifications received into the shared
//! pending set, re-subscribed when the connection drops (a gap), and the fence's in-band proof answered
//! on the same connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};

use super::Shared;
use super::style::{EventStyle, parse};
use crate::data::connect::{RedisEndpoint, connect, pubsub};
use crate::data::error::DataError;

/// A fence proof asked of a listener: answered once every notification sent before is recorded.
pub(super) type ProofRequest = tokio::sync::oneshot::Sender<Result<(), DataError>>;

/// What a listener's task and its owner share.
#[derive(Default)]
struct NodeState {
    subscribed: AtomicBool,
    proofs: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<ProofRequest>>>,
}

/// The subscription to one source primary.
pub(super) struct Listener {
    pub(super) endpoint: RedisEndpoint,
    /// The node's counters of FLUSHDB / FLUSHALL / SWAPDB when the capture last had no gap.
    pub(super) flush_baseline: BTreeMap<String, u64>,
    node: Arc<NodeState>,
    task: tokio::task::JoinHandle<()>,
    /// A connection for the checks of each round (counters, role), kept while it answers.
    checks: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl Listener {
    /// Subscribe to `endpoint` (and wait until subscribed), then receive in the background.
    pub(super) async fn start(
        endpoint: RedisEndpoint,
        style: EventStyle,
        shared: Arc<Shared>,
    ) -> Result<Listener, DataError> {
        let flush_baseline = flush_counts(&mut connect(&endpoint).await?, &endpoint).await?;
        let mut first = pubsub(&endpoint).await?;
        first
            .psubscribe(style.pattern())
            .await
            .map_err(|e| DataError::redis(&endpoint, &e).context("PSUBSCRIBE"))?;
        let node = Arc::new(NodeState::default());
        node.subscribed.store(true, Ordering::SeqCst);
        let task = tokio::spawn(listen(endpoint.clone(), style, first, shared, node.clone()));
        Ok(Listener {
            endpoint,
            flush_baseline,
            node,
            task,
            checks: tokio::sync::Mutex::new(None),
        })
    }

    /// The node's flush counters and, if `with_role`, its replication role (`master`, `slave`), on the
    /// kept connection (a new one after a failure: the checks run every round, and inside the fence).
    pub(super) async fn check(
        &self,
        with_role: bool,
    ) -> Result<(BTreeMap<String, u64>, Option<String>), DataError> {
        let mut kept = self.checks.lock().await;
        let mut conn = match &*kept {
            Some(c) => c.clone(),
            None => connect(&self.endpoint).await?,
        };
        let found = async {
            let flushes = flush_counts(&mut conn, &self.endpoint).await?;
            let role = match with_role {
                true => Some(role(&mut conn, &self.endpoint).await?),
                false => None,
            };
            Ok::<_, DataError>((flushes, role))
        }
        .await;
        *kept = found.is_ok().then_some(conn);
        found
    }

    /// Prove that every notification this node sent before the call is in the pending set.
    pub(super) async fn confirm_received(&self, timeout: Duration) -> Result<(), DataError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = match &*self.node.proofs.lock().expect("lock") {
            Some(requests) => requests.send(reply).is_ok(),
            None => false,
        };
        let peer = crate::data::Peer::from(&self.endpoint);
        if !sent || !self.node.subscribed.load(Ordering::SeqCst) {
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

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The counters of the commands that change keys without key events, on one node.
pub(super) async fn flush_counts(
    conn: &mut redis::aio::MultiplexedConnection,
    node: &RedisEndpoint,
) -> Result<BTreeMap<String, u64>, DataError> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .map_err(|e| DataError::redis(node, &e).context("INFO commandstats"))?;
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

/// `role:` of a node's `INFO replication` (`master`, `slave`).
async fn role(
    conn: &mut redis::aio::MultiplexedConnection,
    node: &RedisEndpoint,
) -> Result<String, DataError> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .map_err(|e| DataError::redis(node, &e).context("INFO replication"))?;
    Ok(info
        .lines()
        .find_map(|l| l.trim().strip_prefix("role:"))
        .unwrap_or("unknown")
        .to_string())
}

/// Receive notifications; on a dropped subscription mark the gap and subscribe again.
async fn listen(
    endpoint: RedisEndpoint,
    style: EventStyle,
    first: redis::aio::PubSub,
    shared: Arc<Shared>,
    node: Arc<NodeState>,
) {
    let mut conn = Some(first);
    loop {
        if let Some(pubsub) = conn.take() {
            let (mut sink, mut stream) = pubsub.split();
            let (requests, mut proofs) = tokio::sync::mpsc::unbounded_channel::<ProofRequest>();
            *node.proofs.lock().expect("lock") = Some(requests);
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
                            DataError::redis(&endpoint, &e).context("PING on the subscription")
                        }));
                    }
                }
            }
            *node.proofs.lock().expect("lock") = None;
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        node.subscribed.store(false, Ordering::SeqCst);
        shared.mark_gap(format!(
            "the keyspace-notification subscription to {} dropped",
            endpoint.display_url()
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(mut p) = pubsub(&endpoint).await
            && p.psubscribe(style.pattern()).await.is_ok()
        {
            node.subscribed.store(true, Ordering::SeqCst);
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
        shared.mark_gap(format!("capture spill file: {e}"));
    }
    shared.wake.notify_waiters();
}
