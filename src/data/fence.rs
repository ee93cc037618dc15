//! The write fence on a source for the cutover: `CLIENT PAUSE <bound> WRITE` (allowed on ElastiCache) on
//! every primary at once (one for a single primary, each of a cluster's), the disconnection of the
//! application's clients on every node while paused, and the release.
//!
//! The bound is given to Redis itself, so even if ecmigrate dies inside the fence the source resumes
//! writes on its own when the bound passes: the application is never stalled for longer than
//! `max_write_pause_ms`.
//!
//! The seal after the cutover's tail is the same pause with a bound of hours, left in force
//! ([`seal`]): `CLIENT PAUSE` belongs to the server, not to the connection that asked it.
//! [`lift`] ends it, for a rollback.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use futures_util::future::{join_all, try_join_all};

use crate::data::connect::{ConnectedClient, RedisEndpoint, connect, parse_client_list};
use crate::data::error::DataError;
use crate::data::topology::Topology;

/// A write pause in force on every primary of a source (one for a single primary).
pub struct WriteFence {
    /// A connection to each paused primary, and the node's endpoint.
    primaries: Vec<(MultiplexedConnection, RedisEndpoint)>,
    /// The replicas known: their clients (readers) are moved too.
    replicas: Vec<RedisEndpoint>,
    /// Before the first pause was asked: every primary's pause ends within `bound` of this.
    started: Instant,
    bound: Duration,
}

impl WriteFence {
    /// Pause writes (and PUBLISH, scripts) on every primary behind `endpoint` (any node of a cluster) for
    /// at most `bound`. Reads go on. The connections are made first and the pauses asked all at once, so
    /// the primaries are paused together; if one refuses, the others are unpaused before the error.
    pub async fn pause(endpoint: &RedisEndpoint, bound: Duration) -> Result<WriteFence, DataError> {
        let mut fence = WriteFence::connect(endpoint, bound).await?;
        fence.started = Instant::now();
        let paused = pause_each(&mut fence.primaries, bound).await;
        if let Some(Err(e)) = paused.into_iter().find(Result::is_err) {
            let _ = fence.release().await;
            return Err(e);
        }
        Ok(fence)
    }

    /// Connections to every primary behind `endpoint`, and the replicas known, without a pause yet.
    async fn connect(endpoint: &RedisEndpoint, bound: Duration) -> Result<WriteFence, DataError> {
        let topology = Topology::discover(endpoint).await?;
        let nodes: Vec<RedisEndpoint> =
            topology.shards.iter().map(|s| s.endpoint.clone()).collect();
        let conns = try_join_all(nodes.iter().map(connect)).await?;
        Ok(WriteFence {
            primaries: conns.into_iter().zip(nodes).collect(),
            replicas: topology.nodes().split_off(topology.shards.len()),
            started: Instant::now(),
            bound,
        })
    }

    /// The primaries paused.
    pub fn primaries(&self) -> usize {
        self.primaries.len()
    }

    /// Time since the pause began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before Redis lifts the pause by itself.
    pub fn remaining(&self) -> Duration {
        self.bound.saturating_sub(self.started.elapsed())
    }

    /// Close the connections of the application's clients on every node, primaries and replicas (not
    /// ecmigrate's own, not replication links, not subscribers such as the capture), so they reconnect
    /// and resolve the endpoint again. A write they had waiting under the pause is never executed on the
    /// source: the client sees an error and retries on its new connection. A replica that cannot be
    /// reached is passed over (its readers see the old data, which is what they saw before).
    pub async fn disconnect_clients(&mut self) -> Result<Vec<ConnectedClient>, DataError> {
        let on_primaries = self
            .primaries
            .iter_mut()
            .map(|(conn, node)| disconnect_on(conn, node));
        let mut closed = Vec::new();
        for found in join_all(on_primaries).await {
            closed.extend(found?);
        }
        let on_replicas = self.replicas.iter().map(|node| async move {
            let mut conn = connect(node).await?;
            disconnect_on(&mut conn, node).await
        });
        for found in join_all(on_replicas).await.into_iter().flatten() {
            closed.extend(found);
        }
        Ok(closed)
    }

    /// Lift the pause on every primary. Returns how long writes were paused: the longest of the
    /// primaries, from before the first pause to after the last unpause (never more than the bound:
    /// Redis lifts it there by itself, which is also what happens when this call fails).
    pub async fn release(mut self) -> (Duration, Result<(), DataError>) {
        let unpauses = self.primaries.iter_mut().map(|(conn, node)| async move {
            redis::cmd("CLIENT")
                .arg("UNPAUSE")
                .query_async::<()>(conn)
                .await
                .map_err(|e| refused(node, "CLIENT UNPAUSE", &e))
        });
        let results = join_all(unpauses).await;
        let taken = self.started.elapsed().min(self.bound);
        let result = results.into_iter().find(Result::is_err).unwrap_or(Ok(()));
        (taken, result)
    }
}

/// What [`seal`] left in force: the primaries paused, and why each of the others is not.
#[derive(Debug)]
pub struct SealOutcome {
    pub paused: usize,
    pub primaries: usize,
    pub refused: Vec<String>,
}

impl SealOutcome {
    /// `N of M primaries refused: …`, when any did.
    pub fn refusal(&self) -> Option<String> {
        (!self.refused.is_empty()).then(|| {
            format!(
                "{} of {} primaries refused: {}",
                self.refused.len(),
                self.primaries,
                self.refused.join("; ")
            )
        })
    }
}

/// Pause writes on every primary behind `endpoint` for `bound` and leave the pauses in force (the seal
/// after the cutover). Unlike [`WriteFence::pause`], a primary that refuses does not undo the others: a
/// seal on some primaries still stops the clients left on those.
pub async fn seal(endpoint: &RedisEndpoint, bound: Duration) -> Result<SealOutcome, DataError> {
    let mut fence = WriteFence::connect(endpoint, bound).await?;
    let results = pause_each(&mut fence.primaries, bound).await;
    let primaries = results.len();
    let refused: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    Ok(SealOutcome {
        paused: primaries - refused.len(),
        primaries,
        refused,
    })
}

/// End a pause left on every primary behind `endpoint` (the seal): first close the application's
/// connections on every node, so that the writes they had waiting under it are never executed (those
/// clients wrote to a group they should have left), then unpause. Returns the connections closed; a
/// source that was not paused is only unpaused again, which changes nothing.
pub async fn lift(endpoint: &RedisEndpoint) -> Result<Vec<ConnectedClient>, DataError> {
    let mut fence = WriteFence::connect(endpoint, Duration::ZERO).await?;
    let closed = fence.disconnect_clients().await?;
    let (_, unpaused) = fence.release().await;
    unpaused.map(|()| closed)
}

/// `CLIENT PAUSE <bound> WRITE` asked of every primary at once; one result each.
async fn pause_each(
    primaries: &mut [(MultiplexedConnection, RedisEndpoint)],
    bound: Duration,
) -> Vec<Result<(), DataError>> {
    let pauses = primaries.iter_mut().map(|(conn, node)| async move {
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(bound.as_millis() as u64)
            .arg("WRITE")
            .query_async::<()>(conn)
            .await
            .map_err(|e| refused(node, "CLIENT PAUSE", &e))
    });
    join_all(pauses).await
}

/// Close the application's connections on one node: those `CLIENT LIST TYPE normal` names that are not
/// ecmigrate's own.
async fn disconnect_on(
    conn: &mut MultiplexedConnection,
    node: &RedisEndpoint,
) -> Result<Vec<ConnectedClient>, DataError> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query_async(conn)
        .await
        .map_err(|e| refused(node, "CLIENT LIST", &e))?;
    let mut closed = Vec::new();
    for (id, client) in parse_client_list(&list) {
        let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(conn)
            .await;
        if matches!(killed, Ok(n) if n > 0) {
            closed.push(client);
        }
    }
    Ok(closed)
}

/// A failed fence command: `<command> on <endpoint>: <error>`.
fn refused(endpoint: &RedisEndpoint, command: &str, e: &redis::RedisError) -> DataError {
    DataError::redis(endpoint, e)
        .command(command)
        .context(format!("{command} on {}", endpoint.display_url()))
}
