//! The application of `scripts/demo.sh`: it writes through the sandbox alias the whole time a migration
//! runs, as a real client would — resolving the alias on every (re)connect, sending each key to the
//! primary that owns its slot (a cluster or a single primary alike), and retrying on a new connection a
//! write whose connection was closed (a write cut off inside the fence was never executed). When the stop
//! file appears it checks every acknowledged write on the group the alias names then, and prints
//! `writes made N, acknowledged N, lost L; writes paused M ms` (M read from the stop file, written by the
//! demo from the run's status). Exit 1 if any acknowledged write is lost.
//!
//! `cargo run --example demo_writer -- ECMIGRATE_BIN ALIAS TOKEN_FILE STOP_FILE`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ecmigrate::data::connect::RedisEndpoint;
use ecmigrate::data::topology::Topology;
use ecmigrate::secret::Secret;

/// The node the alias stands for now, as `sandbox status` says (TLS and the token for an encrypted group).
fn resolve(bin: &Path, alias: &str, token_file: &Path) -> Option<RedisEndpoint> {
    let out = std::process::Command::new(bin)
        .args(["sandbox", "status", "--output", "json"])
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let group_id = status["aliases"][alias].as_str()?;
    let port = status["alias_endpoints"][alias]["port"].as_u64()? as u16;
    let group = status["groups"]
        .as_array()?
        .iter()
        .find(|g| g["replication_group_id"] == group_id)?;
    let tls = group["transit_encryption_enabled"] == true;
    let password = match tls {
        true => Some(Secret::new(
            std::fs::read_to_string(token_file).ok()?.trim().to_string(),
        )),
        false => None,
    };
    Some(RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port,
        tls,
        ca_file: tls.then(|| PathBuf::from(status["ca_file"].as_str().unwrap_or_default())),
        password,
        db: 0,
        client_cert: None,
    })
}

/// Every primary behind an endpoint, a key routed to the one owning its slot.
struct Routed {
    topology: Topology,
    conns: Vec<redis::Connection>,
}

impl Routed {
    fn open(endpoint: &RedisEndpoint) -> Option<Routed> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let topology = runtime.block_on(Topology::discover(endpoint)).ok()?;
        let mut conns = Vec::new();
        for shard in &topology.shards {
            let conn = shard
                .endpoint
                .client()
                .ok()?
                .get_connection_with_timeout(Duration::from_secs(2))
                .ok()?;
            conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            conns.push(conn);
        }
        Some(Routed { topology, conns })
    }

    fn on(&mut self, key: &str) -> &mut redis::Connection {
        &mut self.conns[self.topology.shard_of(key.as_bytes())]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bin, alias, token_file, stop_file] = &args[..] else {
        eprintln!("usage: demo_writer ECMIGRATE_BIN ALIAS TOKEN_FILE STOP_FILE");
        std::process::exit(2);
    };
    let (bin, token_file, stop_file) =
        (Path::new(bin), Path::new(token_file), Path::new(stop_file));
    let connect = || -> Routed {
        let started = Instant::now();
        loop {
            if let Some(r) = resolve(bin, alias, token_file).and_then(|e| Routed::open(&e)) {
                return r;
            }
            if started.elapsed() > Duration::from_secs(60) {
                eprintln!("demo writer: cannot reach {alias} for 60 s");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Each key's last acknowledged value (`None`: deleted).
    let mut model: BTreeMap<String, Option<String>> = BTreeMap::new();
    let (mut made, mut acknowledged) = (0u64, 0u64);
    let mut conn = connect();
    let mut i = 0u64;
    while !stop_file.exists() {
        let key = format!("app:{}", (i * 7919) % 2000);
        let value = format!("v{i}");
        let delete = i % 5 == 4;
        loop {
            made += 1;
            let sent: redis::RedisResult<redis::Value> = if delete {
                redis::cmd("DEL").arg(&key).query(conn.on(&key))
            } else {
                redis::cmd("SET").arg(&key).arg(&value).query(conn.on(&key))
            };
            if sent.is_ok() {
                break;
            }
            conn = connect();
        }
        acknowledged += 1;
        model.insert(key, (!delete).then_some(value));
        i += 1;
        // An application's pace, not a wait for anything.
        std::thread::sleep(Duration::from_millis(3));
    }
    let pause = std::fs::read_to_string(stop_file).unwrap_or_default();
    let mut now = connect();
    let lost = model
        .iter()
        .filter(|(key, expected)| {
            let found: Option<String> = redis::cmd("GET")
                .arg(key.as_str())
                .query(now.on(key))
                .unwrap_or(Some("<unreadable>".into()));
            found != **expected
        })
        .count();
    println!(
        "writes made {made}, acknowledged {acknowledged}, lost {lost}; writes paused {} ms",
        pause.trim()
    );
    std::process::exit(i32::from(lost > 0));
}
