//! The application the cutover tests run beside a migration: it resolves the sandbox alias on every
//! (re)connect, sends each key to the primary owning its slot (a single primary is one shard), writes
//! sets, overwrites, deletes and expiring sets continuously, and retries a failed write on new
//! connections (a write cut off inside the fence was never executed); afterwards every acknowledged
//! write is checked on the group the alias names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecmigrate::data::connect::RedisEndpoint;
use ecmigrate::data::topology::Topology;
use serde_json::Value;

use crate::harness::{Env, TARGET, block_on};

pub const ALIAS: &str = "orders-endpoint";

/// Where the alias points now, for `env`.
pub fn resolve_env(env: &Env) -> RedisEndpoint {
    resolve(&env.sandbox_dir(), &env.token_file())
}

/// The node the alias stands for, as an application reaches it: plain for the source, TLS with the
/// sandbox CA and the plan's token for the target.
pub fn resolve(sandbox_dir: &std::path::Path, token_file: &std::path::Path) -> RedisEndpoint {
    resolve_alias(sandbox_dir, ALIAS, TARGET, token_file)
}

/// As [`resolve`], for the alias `alias` of a source migrating to `target` (a fleet has several).
pub fn resolve_alias(
    sandbox_dir: &std::path::Path,
    alias: &str,
    target: &str,
    token_file: &std::path::Path,
) -> RedisEndpoint {
    let out = std::process::Command::new(crate::harness::bin())
        .args(["sandbox", "status", "--output", "json"])
        .env("ECMIGRATE_SANDBOX_DIR", sandbox_dir)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let port = status["alias_endpoints"][alias]["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no endpoint for {alias}: {status}")) as u16;
    if status["aliases"][alias] == target {
        RedisEndpoint {
            port,
            ..crate::harness::encrypted_primary(&status, target, token_file)
        }
    } else {
        RedisEndpoint::plain("127.0.0.1", port)
    }
}

/// A cluster's primaries, each key routed to the one owning its slot.
pub struct ClusterConn {
    topology: Topology,
    pub conns: Vec<redis::Connection>,
}

impl ClusterConn {
    pub fn open(any: &RedisEndpoint) -> redis::RedisResult<ClusterConn> {
        let topology = block_on(Topology::discover(any))
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        let mut conns = Vec::new();
        for s in &topology.shards {
            let c = s
                .endpoint
                .client()?
                .get_connection_with_timeout(Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            conns.push(c);
        }
        Ok(ClusterConn { topology, conns })
    }

    pub fn on(&mut self, key: &str) -> &mut redis::Connection {
        &mut self.conns[self.topology.shard_of(key.as_bytes())]
    }
}

/// The primaries behind `any` on which a write waits longer than `wait` (the seal after a cutover): on
/// each, a DEL of a key it owns and nobody writes (a write command that changes nothing when it runs).
pub fn primaries_whose_writes_wait(any: &RedisEndpoint, wait: Duration) -> usize {
    let mut cluster = ClusterConn::open(any).expect("the primaries");
    let shards = cluster.conns.len();
    (0..shards)
        .filter(|&shard| {
            let key = (0..)
                .map(|i| format!("ecm:sealed:{i}"))
                .find(|k| cluster.topology.shard_of(k.as_bytes()) == shard)
                .unwrap();
            let conn = cluster.on(&key);
            conn.set_read_timeout(Some(wait)).unwrap();
            let wrote: redis::RedisResult<i64> = redis::cmd("DEL").arg(&key).query(conn);
            match wrote {
                Ok(_) => false,
                Err(e) if e.is_timeout() => true,
                Err(e) => panic!("a write to primary {shard} failed: {e}"),
            }
        })
        .count()
}

#[derive(Debug, Default)]
pub struct WriterReport {
    pub model: BTreeMap<String, Option<(String, bool)>>,
    pub writes: u64,
    pub reconnects: u64,
    pub longest_write: Duration,
    /// The alias's endpoint port at each (re)connection.
    pub ports: Vec<u16>,
}

/// An application: resolves the alias on every (re)connect, writes sets, overwrites,
/// deletes and expiring sets continuously, and retries a failed write on new connections.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// The alias's port now, and the writes acknowledged since connecting there.
    current: Arc<Mutex<(u16, u64)>>,
    thread: std::thread::JoinHandle<WriterReport>,
}

impl Writer {
    pub fn start(env: &Env) -> Writer {
        Writer::start_on(&env.sandbox_dir(), ALIAS, TARGET, &env.token_file())
    }

    /// An application writing through `alias`, its source migrating to `target` with the token kept
    /// in `token_file`.
    pub fn start_on(
        sandbox_dir: &std::path::Path,
        alias: &str,
        target: &str,
        token_file: &std::path::Path,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let current = Arc::new(Mutex::new((0, 0)));
        let progress = current.clone();
        let (sandbox_dir, token_file) = (sandbox_dir.to_path_buf(), token_file.to_path_buf());
        let (alias, target) = (alias.to_string(), target.to_string());
        let thread = std::thread::spawn(move || {
            let mut report = WriterReport::default();
            let connect = |report: &mut WriterReport| -> ClusterConn {
                let started = Instant::now();
                loop {
                    let endpoint = resolve_alias(&sandbox_dir, &alias, &target, &token_file);
                    match ClusterConn::open(&endpoint) {
                        Ok(c) => {
                            report.ports.push(endpoint.port);
                            *progress.lock().unwrap() = (endpoint.port, 0);
                            return c;
                        }
                        Err(e) => {
                            assert!(
                                started.elapsed() < Duration::from_secs(30),
                                "cannot reconnect: {e}"
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            };
            let mut conn = connect(&mut report);
            let mut i: u64 = 0;
            while !stopped.load(Ordering::SeqCst) {
                let key = format!("live:{}", (i * 7919) % 4000);
                let value = format!("v{i}");
                let kind = i % 10;
                let cmd = match kind {
                    0..=5 => redis::cmd("SET").arg(&key).arg(&value).to_owned(),
                    6 | 7 => redis::cmd("DEL").arg(&key).to_owned(),
                    _ => redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("EX")
                        .arg(600)
                        .to_owned(),
                };
                let started = Instant::now();
                while cmd.query::<redis::Value>(conn.on(&key)).is_err() {
                    report.reconnects += 1;
                    conn = connect(&mut report);
                }
                report.longest_write = report.longest_write.max(started.elapsed());
                report.model.insert(
                    key,
                    match kind {
                        6 | 7 => None,
                        8 | 9 => Some((value, true)),
                        _ => Some((value, false)),
                    },
                );
                report.writes += 1;
                progress.lock().unwrap().1 += 1;
                i += 1;
                // Paced like an application, not awaiting anything.
                std::thread::sleep(Duration::from_millis(2));
            }
            report
        });
        Writer {
            stop,
            current,
            thread,
        }
    }

    pub fn writes_on(&self, port: u16) -> u64 {
        match *self.current.lock().unwrap() {
            (p, n) if p == port => n,
            _ => 0,
        }
    }

    pub fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer panicked")
    }
}

/// The acknowledged writes missing on the group behind `endpoint`.
pub fn lost_writes(report: &WriterReport, endpoint: &RedisEndpoint) -> Vec<String> {
    let mut conn = ClusterConn::open(endpoint).unwrap();
    let mut lost = Vec::new();
    for (key, expected) in &report.model {
        let c = conn.on(key);
        let value: Option<String> = redis::cmd("GET").arg(key).query(c).unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(key).query(c).unwrap();
        let ok = match expected {
            None => value.is_none(),
            Some((v, expiring)) => value.as_deref() == Some(v) && ((ttl > 0) == *expiring),
        };
        if !ok {
            lost.push(format!(
                "{key}: expected {expected:?}, found {value:?} (ttl {ttl})"
            ));
        }
    }
    lost
}
