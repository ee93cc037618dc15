//! redis-server processes: configuration files, start (daemonized, tracked by pidfile), liveness, stop, and
//! finding every redis-server whose working folder lies in a folder of ours, recorded or not (a start that
//! was retried, or whose caller was killed before it recorded the pid, leaves such a process behind).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::registry::write_atomic;
use crate::cloud::{CloudError, CloudResult};
use crate::secret::Secret;

pub const HOST: &str = "127.0.0.1";
pub const PIDFILE: &str = "redis.pid";
pub const CONF: &str = "redis.conf";
pub const LOGFILE: &str = "redis.log";
pub const RDB: &str = "dump.rdb";
/// The cluster state file redis-server keeps itself (`cluster-config-file`) on a cluster node.
pub const CLUSTER_CONF: &str = "nodes.conf";

/// The TLS files of an encrypted node.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// What goes into one node's `redis.conf`.
pub struct NodeConfig<'a> {
    /// The client port (TLS port when `tls` is set).
    pub port: u16,
    /// Plain-text port next to the TLS one (transit mode `preferred`).
    pub plain_port: Option<u16>,
    pub tls: Option<TlsFiles>,
    pub password: Option<&'a Secret>,
    /// The ACL `user` lines of an RBAC group: then `password` is the sandbox's administrative user's,
    /// not the default user's (see `sandbox::rbac`).
    pub acl_users: Vec<String>,
    pub replica_of: Option<u16>,
    /// The cluster bus port of a node of a cluster-mode-enabled group (`cluster-enabled yes`).
    pub cluster_bus_port: Option<u16>,
}

/// A value quoted for redis.conf (double quotes, `\` and `"` escaped).
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn path_str(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

/// Write `<node_dir>/redis.conf` (mode 0600: it holds the AUTH token of an encrypted node).
pub fn write_conf(node_dir: &Path, cfg: &NodeConfig<'_>) -> CloudResult<()> {
    let mut c = vec![
        format!("bind {HOST}"),
        "daemonize yes".to_string(),
        format!("pidfile {}", path_str(&node_dir.join(PIDFILE))),
        format!("logfile {}", path_str(&node_dir.join(LOGFILE))),
        format!("dir {}", path_str(node_dir)),
        format!("dbfilename {RDB}"),
        "save \"\"".to_string(),
        "appendonly no".to_string(),
        "repl-diskless-sync yes".to_string(),
        "repl-diskless-sync-delay 0".to_string(),
        "repl-diskless-load swapdb".to_string(),
        "shutdown-on-sigterm nosave now".to_string(),
        "shutdown-on-sigint nosave now".to_string(),
        "notify-keyspace-events KEA".to_string(),
    ];
    match &cfg.tls {
        None => {
            c.push("protected-mode no".to_string());
            c.push(format!("port {}", cfg.port));
        }
        Some(t) => {
            c.push(format!("port {}", cfg.plain_port.unwrap_or(0)));
            c.push(format!("tls-port {}", cfg.port));
            c.push(format!("tls-cert-file {}", path_str(&t.cert)));
            c.push(format!("tls-key-file {}", path_str(&t.key)));
            c.push(format!("tls-ca-cert-file {}", path_str(&t.ca)));
            c.push("tls-auth-clients no".to_string());
            c.push("tls-replication yes".to_string());
            if cfg.cluster_bus_port.is_some() {
                c.push("tls-cluster yes".to_string());
            }
        }
    }
    if let Some(bus) = cfg.cluster_bus_port {
        c.push("cluster-enabled yes".to_string());
        c.push(format!(
            "cluster-config-file {}",
            path_str(&node_dir.join(CLUSTER_CONF))
        ));
        c.push(format!("cluster-port {bus}"));
        c.push("cluster-node-timeout 5000".to_string());
    }
    match cfg.password {
        Some(p) if !cfg.acl_users.is_empty() => {
            c.extend(admin_lines(p));
            c.extend(cfg.acl_users.iter().cloned());
        }
        Some(p) => {
            c.push(format!("requirepass {}", quote(p.expose())));
            c.push(format!("masterauth {}", quote(p.expose())));
        }
        None => {}
    }
    if let Some(primary) = cfg.replica_of {
        c.push(format!("replicaof {HOST} {primary}"));
    }
    c.push(String::new());
    write_atomic(&node_dir.join(CONF), c.join("\n").as_bytes(), 0o600)
}

/// The AUTH token in a node's redis.conf, if any.
pub fn read_password(node_dir: &Path) -> Option<Secret> {
    let text = std::fs::read_to_string(node_dir.join(CONF)).ok()?;
    // An RBAC node has no `requirepass`: its `masterauth` is the sandbox's administrative password.
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key));
    value("requirepass ")
        .or_else(|| value("masterauth "))
        .map(|v| Secret::new(unquote(v.trim())))
}

/// A node's redis.conf moved from an AUTH token to RBAC: no `requirepass` or `user default` line; the
/// sandbox's administrative user with `admin_password` (kept as `masterauth`, which replicas send with
/// `masteruser`), then the group's ACL `user` lines.
pub fn write_rbac_conf(
    node_dir: &Path,
    admin_password: &Secret,
    acl_users: &[String],
) -> CloudResult<()> {
    let mut lines = conf_lines_without(
        node_dir,
        &["requirepass ", "masterauth ", "masteruser ", "user "],
    )?;
    lines.extend(admin_lines(admin_password));
    lines.extend(acl_users.iter().cloned());
    rewrite_conf(node_dir, lines)
}

/// The sandbox's administrative user on an RBAC node, and the replicas' sign-in as it.
fn admin_lines(admin_password: &Secret) -> [String; 3] {
    let admin = super::rbac::SANDBOX_ADMIN_USER;
    [
        format!(
            "user {admin} on #{} ~* &* +@all",
            super::rbac::password_hash(admin_password.expose())
        ),
        format!("masteruser {admin}"),
        format!("masterauth {}", quote(admin_password.expose())),
    ]
}

/// The lines of a node's redis.conf, without blank ones and those starting with one of `dropped`.
fn conf_lines_without(node_dir: &Path, dropped: &[&str]) -> CloudResult<Vec<String>> {
    let path = node_dir.join(CONF);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CloudError::other(format!("sandbox: cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !dropped.iter().any(|d| l.starts_with(d)))
        .map(str::to_string)
        .collect())
}

/// Replace a node's redis.conf with `lines` (0600: it holds secrets).
fn rewrite_conf(node_dir: &Path, mut lines: Vec<String>) -> CloudResult<()> {
    lines.push(String::new());
    write_atomic(&node_dir.join(CONF), lines.join("\n").as_bytes(), 0o600)
}

/// Every AUTH token a node's redis.conf lets in: during a rotation (ROTATE) the old and the new one,
/// from its `user default` line; else the one of `requirepass`. The newest comes last.
pub fn read_passwords(node_dir: &Path) -> Vec<Secret> {
    let Ok(text) = std::fs::read_to_string(node_dir.join(CONF)) else {
        return Vec::new();
    };
    if let Some(rule) = text.lines().find_map(|l| l.strip_prefix("user default ")) {
        return rule
            .split(' ')
            .map(unquote)
            .filter_map(|arg| arg.strip_prefix('>').map(Secret::new))
            .collect();
    }
    read_password(node_dir).into_iter().collect()
}

/// A node's redis.conf with new AUTH tokens: `requirepass` and `masterauth` the newest of `valid`
/// (what a replica and ecmigrate's own connections use), and with two tokens a `user default` rule that
/// lets both in (redis-server applies it after `requirepass`), so a node started later takes the same.
pub fn write_passwords(node_dir: &Path, valid: &[&Secret]) -> CloudResult<()> {
    let mut lines =
        conf_lines_without(node_dir, &["requirepass ", "masterauth ", "user default "])?;
    if let Some(newest) = valid.last() {
        lines.push(format!("requirepass {}", quote(newest.expose())));
        lines.push(format!("masterauth {}", quote(newest.expose())));
    }
    if valid.len() > 1 {
        let passwords: Vec<String> = valid
            .iter()
            .map(|p| quote(&format!(">{}", p.expose())))
            .collect();
        lines.push(format!(
            "user default on {} ~* &* +@all",
            passwords.join(" ")
        ));
    }
    rewrite_conf(node_dir, lines)
}

/// A port that was free a moment ago.
pub fn free_port() -> CloudResult<u16> {
    let l = std::net::TcpListener::bind((HOST, 0))
        .map_err(|e| CloudError::other(format!("sandbox: cannot find a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| CloudError::other(format!("sandbox: cannot find a free port: {e}")))
}

/// `7.0.15` from `redis-server --version`.
pub fn redis_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                text.split_whitespace()
                    .find_map(|w| w.strip_prefix("v=").map(str::to_string))
            })
            .unwrap_or_else(|| "unknown".to_string())
    })
    .clone()
}

/// Running (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 || unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// Whether `pid` is the redis-server of `node_dir` (its working folder), so a recycled pid is never killed.
fn is_node_process(pid: i32, node_dir: &Path) -> bool {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    let want = std::fs::canonicalize(node_dir).unwrap_or_else(|_| node_dir.to_path_buf());
    match cwd {
        Ok(cwd) => cwd == want,
        Err(_) => std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
            .map(|c| c.contains("redis-server"))
            .unwrap_or(false),
    }
}

fn pidfile_pid(node_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(node_dir.join(PIDFILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The live redis-server process of `node_dir`: from its pidfile, else the recorded pid.
pub fn node_pid(node_dir: &Path, recorded: Option<i32>) -> Option<i32> {
    [pidfile_pid(node_dir), recorded]
        .into_iter()
        .flatten()
        .find(|pid| pid_alive(*pid) && is_node_process(*pid, node_dir))
}

pub enum StartError {
    /// The port was taken between choosing it and binding it: pick another and retry.
    PortClash,
    Failed(String),
}

/// Start `redis-server <node_dir>/redis.conf` (it daemonizes) and wait until its pidfile names a live
/// process, which redis writes after it has bound its ports.
pub fn start(node_dir: &Path) -> Result<i32, StartError> {
    let _ = std::fs::remove_file(node_dir.join(PIDFILE));
    let log = node_dir.join(LOGFILE);
    let log_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let status = std::process::Command::new("redis-server")
        .arg(node_dir.join(CONF))
        .current_dir(node_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| StartError::Failed(format!("cannot run redis-server: {e}")))?;
    if !status.success() {
        return Err(StartError::Failed(format!(
            "redis-server exited with {status} (see {})",
            log.display()
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(pid) = pidfile_pid(node_dir).filter(|p| pid_alive(*p)) {
            return Ok(pid);
        }
        let new_log = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b[(log_len as usize).min(b.len())..]).to_string())
            .unwrap_or_default();
        if new_log.contains("Address already in use") {
            return Err(StartError::PortClash);
        }
        // `# Fatal error, can't open config file`, `Fatal error loading the DB`, `FATAL CONFIG FILE ERROR`.
        if ["# Fatal", "FATAL", "Fatal error", "Failed listening"]
            .iter()
            .any(|m| new_log.contains(m))
        {
            // redis quotes a configuration line it refuses: never one that holds the AUTH token.
            let log: Vec<&str> = new_log
                .lines()
                .filter(|l| {
                    !l.contains("requirepass")
                        && !l.contains("masterauth")
                        && !l.starts_with("user ")
                })
                .collect();
            return Err(StartError::Failed(format!(
                "redis-server did not start: {}",
                log.join("\n").trim()
            )));
        }
        if Instant::now() > deadline {
            return Err(StartError::Failed(format!(
                "redis-server did not start within 15s (see {})",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM every pid, wait up to `grace`, SIGKILL the rest, and wait until all are gone.
/// Returns how many were running.
pub fn stop_pids(pids: &[i32], grace: Duration) -> usize {
    let live: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    for pid in &live {
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let reap = |pid: i32| unsafe {
        // Reaps it when it happens to be our child (never with daemonized redis); harmless otherwise.
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::WNOHANG);
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            live.iter().for_each(|p| reap(*p));
            if live.iter().all(|p| !pid_alive(*p)) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(grace);
    for pid in live.iter().filter(|p| pid_alive(**p)) {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    wait(Duration::from_secs(5));
    // A process that turned into a zombie after the last reap in `wait`.
    live.iter().for_each(|p| reap(*p));
    live.len()
}

/// Whether `pid` runs a Redis-compatible server (its name or command line says so), so a scan by working
/// folder never hits a shell or an ecmigrate that happens to stand in a node folder.
fn is_redis_server(pid: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    ["redis-server", "valkey-server"]
        .iter()
        .any(|name| comm.trim() == *name || cmdline.contains(name))
}

/// Every live redis-server whose working folder is `dir` or lies inside it (also one whose folder was
/// removed under it: the kernel then reports `<path> (deleted)`). Found through `/proc`, so it finds what
/// no pidfile or registry entry names.
pub fn pids_under(dir: &Path) -> Vec<i32> {
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| {
                let cwd = cwd.to_string_lossy();
                let cwd = Path::new(cwd.strip_suffix(" (deleted)").unwrap_or(&cwd));
                cwd.starts_with(&root)
            })
        })
        .filter(|pid| pid_alive(*pid) && is_redis_server(*pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Stop every redis-server under `dir` (see [`pids_under`]) and `extra` (recorded pids, already checked to
/// be ours). Returns how many were running.
pub fn stop_under(dir: &Path, extra: &[i32], grace: Duration) -> usize {
    let mut pids = pids_under(dir);
    pids.extend_from_slice(extra);
    pids.sort_unstable();
    pids.dedup();
    stop_pids(&pids, grace)
}
