//! The big-key path: one key too large for one write (a value above the RESTORE bound) is copied
//! type-wise in chunks (GETRANGE / APPEND, LRANGE / RPUSH, HSCAN / HSET, SSCAN / SADD, ZSCAN / ZADD) into
//! a temporary key on the target (in the key's slot, in a cluster), which then replaces the real one in
//! one RENAME, so readers never see half a key.

use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;

use super::{Err, Pair, rerr};
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Peer, Role};
use crate::data::topology::{key_slot, same_slot_tag};

impl Pair {
    /// One key type-wise in chunks, on ordinary connections opened for it.
    pub(super) async fn copy_in_chunks(
        &self,
        db: i64,
        key: &[u8],
        expiry_ms: i64,
    ) -> Result<(), Err> {
        let (source, target) = (self.source.with_db(db), self.target.with_db(db));
        let mut s = connect(&source).await.map_err(|e| e.role(Role::Source))?;
        let mut d = connect(&target).await.map_err(|e| e.role(Role::Target))?;
        // In a cluster the temporary key must live in the key's slot, or RENAME refuses it (CROSSSLOT).
        let tmp = if self.slotted {
            let mut tmp = same_slot_tag(key_slot(key));
            tmp.extend_from_slice(key);
            tmp
        } else {
            let mut tmp = key.to_vec();
            tmp.extend_from_slice(b":ecmigrate-tmp");
            tmp
        };
        let chunked = Chunked {
            src: &mut s,
            dst: &mut d,
            source: &source,
            target: &target,
            key,
            tmp,
            chunk: self.options.chunk_items,
        };
        chunked.copy(expiry_ms).await?;
        self.stats.big_keys.fetch_add(1, Ordering::Relaxed);
        self.stats.keys_copied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The copy of one big key: both connections, the endpoints their errors name, the key and the
/// temporary key it is built in.
struct Chunked<'a> {
    src: &'a mut MultiplexedConnection,
    dst: &'a mut MultiplexedConnection,
    source: &'a RedisEndpoint,
    target: &'a RedisEndpoint,
    key: &'a [u8],
    tmp: Vec<u8>,
    /// Elements (or KiB, for strings) per chunk.
    chunk: usize,
}

impl Chunked<'_> {
    /// Copy the key type-wise into the temporary key, then RENAME it over the real one and set its
    /// absolute expiry.
    async fn copy(mut self, abs_expiry_ms: i64) -> Result<(), Err> {
        let kind: String = redis::cmd("TYPE")
            .arg(self.key)
            .query_async(self.src)
            .await
            .map_err(rerr(self.source, Role::Source))?;
        let _: () = redis::cmd("DEL")
            .arg(&self.tmp)
            .query_async(self.dst)
            .await
            .map_err(rerr(self.target, Role::Target))?;
        let wrote_any = match kind.as_str() {
            "string" => self.string().await?,
            "list" => self.list().await?,
            "hash" | "set" | "zset" => self.scanned(&kind).await?,
            "none" => {
                let _: () = redis::cmd("DEL")
                    .arg(self.key)
                    .query_async(self.dst)
                    .await
                    .map_err(rerr(self.target, Role::Target))?;
                return Ok(());
            }
            other => {
                return Err(DataError::Unsupported {
                    peer: Peer {
                        role: Some(Role::Source),
                        ..Peer::from(self.source)
                    },
                    message: format!(
                        "copy: key `{}` of type {other} is larger than one RESTORE allows and has no chunked copy",
                        String::from_utf8_lossy(self.key)
                    ),
                });
            }
        };
        if !wrote_any {
            return Ok(());
        }
        let _: () = redis::cmd("RENAME")
            .arg(&self.tmp)
            .arg(self.key)
            .query_async(self.dst)
            .await
            .map_err(rerr(self.target, Role::Target))?;
        if abs_expiry_ms > 0 {
            let _: () = redis::cmd("PEXPIREAT")
                .arg(self.key)
                .arg(abs_expiry_ms)
                .query_async(self.dst)
                .await
                .map_err(rerr(self.target, Role::Target))?;
        }
        Ok(())
    }

    /// A string, `chunk` KiB at a time (GETRANGE, APPEND). Whether anything was written.
    async fn string(&mut self) -> Result<bool, Err> {
        let mut wrote_any = false;
        let step = (self.chunk * 1024) as i64;
        let mut offset = 0i64;
        loop {
            let part: Vec<u8> = redis::cmd("GETRANGE")
                .arg(self.key)
                .arg(offset)
                .arg(offset + step - 1)
                .query_async(self.src)
                .await
                .map_err(rerr(self.source, Role::Source))?;
            if part.is_empty() && wrote_any {
                break;
            }
            let _: () = redis::cmd("APPEND")
                .arg(&self.tmp)
                .arg(&part)
                .query_async(self.dst)
                .await
                .map_err(rerr(self.target, Role::Target))?;
            wrote_any = true;
            if (part.len() as i64) < step {
                break;
            }
            offset += step;
        }
        Ok(wrote_any)
    }

    /// A list, `chunk` elements at a time (LRANGE, RPUSH). Whether anything was written.
    async fn list(&mut self) -> Result<bool, Err> {
        let mut wrote_any = false;
        let mut start = 0i64;
        loop {
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(self.key)
                .arg(start)
                .arg(start + self.chunk as i64 - 1)
                .query_async(self.src)
                .await
                .map_err(rerr(self.source, Role::Source))?;
            if items.is_empty() {
                break;
            }
            let _: () = redis::cmd("RPUSH")
                .arg(&self.tmp)
                .arg(&items)
                .query_async(self.dst)
                .await
                .map_err(rerr(self.target, Role::Target))?;
            wrote_any = true;
            start += items.len() as i64;
        }
        Ok(wrote_any)
    }

    /// A hash, set or sorted set, by its SCAN cursor (HSCAN / SSCAN / ZSCAN, then HSET / SADD / ZADD).
    /// Whether anything was written.
    async fn scanned(&mut self, kind: &str) -> Result<bool, Err> {
        let mut wrote_any = false;
        let (scan, write) = match kind {
            "hash" => ("HSCAN", "HSET"),
            "set" => ("SSCAN", "SADD"),
            _ => ("ZSCAN", "ZADD"),
        };
        let mut cursor: u64 = 0;
        loop {
            let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd(scan)
                .arg(self.key)
                .arg(cursor)
                .arg("COUNT")
                .arg(self.chunk)
                .query_async(self.src)
                .await
                .map_err(rerr(self.source, Role::Source))?;
            if !items.is_empty() {
                let mut cmd = redis::cmd(write);
                cmd.arg(&self.tmp);
                if kind == "zset" {
                    // ZSCAN yields member, score; ZADD takes score, member.
                    for pair in items.chunks(2) {
                        cmd.arg(&pair[1]).arg(&pair[0]);
                    }
                } else {
                    cmd.arg(&items);
                }
                let _: () = cmd
                    .query_async(self.dst)
                    .await
                    .map_err(rerr(self.target, Role::Target))?;
                wrote_any = true;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(wrote_any)
    }
}
