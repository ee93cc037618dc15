//! The write fence on a source primary for the cutover: `CLIENT PAUSE <bound> WRITE` (allowed on
//! ElastiCache), the disconnection of the application's clients while paused, and the release.
//!
//! The bound is given to Redis itself, so even if ecmigrate dies inside the fence the source resumes
//! writes on its own when the bound passes: the application is never stalled for longer than
//! `max_write_pause_ms`.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::data::connect::{ConnectedClient, RedisEndpoint, connect, parse_client_list};
use crate::data::error::DataError;

/// A write pause in force on one source primary.
pub struct WriteFence {
    conn: MultiplexedConnection,
    endpoint: RedisEndpoint,
    started: Instant,
    bound: Duration,
}

impl WriteFence {
    /// Pause writes (and PUBLISH, scripts) on `endpoint` for at most `bound`. Reads go on.
    pub async fn pause(endpoint: &RedisEndpoint, bound: Duration) -> Result<WriteFence, DataError> {
        let mut conn = connect(endpoint).await?;
        let started = Instant::now();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(bound.as_millis() as u64)
            .arg("WRITE")
            .query_async(&mut conn)
            .await
            .map_err(|e| refused(endpoint, "CLIENT PAUSE", &e))?;
        Ok(WriteFence {
            conn,
            endpoint: endpoint.clone(),
            started,
            bound,
        })
    }

    /// Time since the pause began.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Time left before Redis lifts the pause by itself.
    pub fn remaining(&self) -> Duration {
        self.bound.saturating_sub(self.started.elapsed())
    }

    /// Close the connections of the application's clients (not ecmigrate's own, not replication links,
    /// not subscribers such as the capture), so they reconnect and resolve the endpoint again. A write
    /// they had waiting under the pause is never executed on the source: the client sees an error and
    /// retries on its new connection.
    pub async fn disconnect_clients(&mut self) -> Result<Vec<ConnectedClient>, DataError> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| refused(&self.endpoint, "CLIENT LIST", &e))?;
        let clients = parse_client_list(&list);
        let mut closed = Vec::new();
        for (id, client) in clients {
            let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(&mut self.conn)
                .await;
            if matches!(killed, Ok(n) if n > 0) {
                closed.push(client);
            }
        }
        Ok(closed)
    }

    /// Lift the pause. Returns how long writes were paused (never more than the bound: Redis lifts it
    /// there by itself, which is also what happens when this call fails).
    pub async fn release(mut self) -> (Duration, Result<(), DataError>) {
        let result: redis::RedisResult<()> = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query_async(&mut self.conn)
            .await;
        let taken = self.started.elapsed().min(self.bound);
        (
            taken,
            result.map_err(|e| refused(&self.endpoint, "CLIENT UNPAUSE", &e)),
        )
    }
}

/// A failed fence command: `<command> on <endpoint>: <error>`.
fn refused(endpoint: &RedisEndpoint, command: &str, e: &redis::RedisError) -> DataError {
    DataError::redis(endpoint, e)
        .command(command)
        .context(format!("{command} on {}", endpoint.display_url()))
}
