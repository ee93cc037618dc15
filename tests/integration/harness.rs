//! A small builder around the real binary: a temp folder with its own sandbox and state, plans written
//! into it, and `sandbox down` on drop so no redis-server outlives a test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SOURCE: &str = "orders";
pub const TARGET: &str = "orders-enc";

pub struct Env {
    pub dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ecmigrate"))
}

impl Env {
    pub fn new() -> Env {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            extra_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn sandbox_dir(&self) -> PathBuf {
        self.path().join("sandbox")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }
    pub fn token_file(&self) -> PathBuf {
        self.path().join("secrets").join("target.token")
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.into(), value.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("ECMIGRATE_SANDBOX_DIR", self.sandbox_dir())
            .env("ECMIGRATE_STATE_DIR", self.state_dir())
            .env("CI", "true")
            .env_remove("ECMIGRATE_SANDBOX_CREATE_DELAY_MS")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command(args).output().expect("run ecmigrate");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Start ecmigrate in the background, its output captured; killed if the test ends first.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::new(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start ecmigrate"),
        )
    }

    /// Run and insist on an exit code.
    /// `ecmigrate status PLAN --output json`, parsed.
    pub fn status_json(&self, plan: &str) -> Value {
        let out = self.ok(&["status", plan, "--output", "json"]);
        serde_json::from_str(&out.stdout).expect("status json")
    }

    /// Start `ecmigrate run PLAN` and wait until it holds (state `waiting`); a run that ends first fails
    /// the test with its output.
    pub fn run_until_waiting(&self, plan: &str, timeout: Duration) -> Running {
        let mut run = self.spawn(&["run", plan]);
        let mut ended = false;
        wait_for("the run's hold", timeout, || {
            ended = run.try_wait().unwrap().is_some();
            ended || self.status_json(plan)["state"] == "waiting"
        });
        if ended {
            panic!("the run ended before it held: {:?}", run.finish());
        }
        run
    }

    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(r.code, 0, "ecmigrate {args:?} failed: {r:?}");
        r
    }

    /// The run journal (`events.jsonl`) of the plan named `orders-migration` (the tests' plans), as text.
    pub fn journal(&self) -> String {
        std::fs::read_to_string(
            self.state_dir()
                .join("orders-migration")
                .join("events.jsonl"),
        )
        .unwrap_or_default()
    }

    pub fn write_plan(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, yaml).expect("write plan");
        path
    }

    /// An unencrypted source `orders` with `keys` keys and one replica, and a KMS key alias/orders.
    pub fn sandbox_with_source(&self, keys: u64) {
        self.ok(&[
            "sandbox",
            "up",
            "--group",
            SOURCE,
            "--replicas",
            "1",
            "--keys",
            &keys.to_string(),
        ]);
        self.ok(&["sandbox", "kms", "create", "orders"]);
    }

    pub fn sandbox_status(&self) -> Value {
        let r = self.ok(&["sandbox", "status", "--output", "json"]);
        serde_json::from_str(&r.stdout).expect("status json")
    }

    pub fn group<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
        status["groups"]
            .as_array()?
            .iter()
            .find(|g| g["replication_group_id"] == id)
    }

    pub fn primary_port(status: &Value, id: &str) -> u16 {
        let g = Self::group(status, id).unwrap_or_else(|| panic!("group {id} in {status}"));
        let node = g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["role"] == "primary")
            .expect("primary");
        node["port"].as_u64().unwrap() as u16
    }

    /// The sandbox source as a client reaches it, plain: its configuration endpoint if it is a cluster,
    /// else its primary.
    pub fn source_endpoint(&self) -> ecmigrate::data::connect::RedisEndpoint {
        let status = self.sandbox_status();
        let g = Self::group(&status, SOURCE).expect("source group");
        let port = match g["configuration_endpoint"]["port"].as_u64() {
            Some(port) => port as u16,
            None => Self::primary_port(&status, SOURCE),
        };
        ecmigrate::data::connect::RedisEndpoint::plain("127.0.0.1", port)
    }

    /// The sandbox target's primary as a client reaches it: TLS with the sandbox CA, the plan's token.
    pub fn target_endpoint(&self) -> ecmigrate::data::connect::RedisEndpoint {
        encrypted_primary(&self.sandbox_status(), TARGET, &self.token_file())
    }

    /// The record of step `kind` in `ecmigrate status --output json`.
    pub fn step<'a>(status: &'a Value, kind: &str) -> &'a Value {
        status["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["kind"] == kind))
            .unwrap_or_else(|| panic!("no `{kind}` step in {status}"))
    }

    /// Every file under the sandbox folder, recursively.
    pub fn sandbox_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.sandbox_dir(), &mut out);
        out.sort();
        out
    }
}

/// The primary of the encrypted sandbox group `group` in `status` (`sandbox status --output json`): TLS with
/// the sandbox CA, the token kept in `token_file`.
pub fn encrypted_primary(
    status: &Value,
    group: &str,
    token_file: &Path,
) -> ecmigrate::data::connect::RedisEndpoint {
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    ecmigrate::data::connect::RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port: Env::primary_port(status, group),
        tls: true,
        ca_file: Some(status["ca_file"].as_str().unwrap().into()),
        password: Some(ecmigrate::secret::Secret::new(token)),
        db: 0,
        client_cert: None,
    }
}

/// A run started in the background. It is killed if the test ends (or panics) before it finished, so no
/// `ecmigrate run` outlives its test.
pub struct Running(Option<std::process::Child>);

impl Running {
    pub fn new(child: std::process::Child) -> Running {
        Running(Some(child))
    }

    /// Wait for the run to end and collect its output.
    pub fn finish(mut self) -> Run {
        let out = self.0.take().expect("running").wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("running")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("running")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.sandbox_dir().exists() {
            let _ = self.command(&["sandbox", "down"]).output();
        }
    }
}

/// The full migration plan used by most tests (token generated into the env's secrets folder).
pub fn full_plan(env: &Env) -> String {
    format!(
        r#"version: 1
name: orders-migration
provider: sandbox
source:
  replication_group_id: {SOURCE}
target:
  replication_group_id: {TARGET}
  kms_key_id: alias/orders
  auth_token: {{ generate: true, file: {} }}
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
  - kind: verify
    full: true
  - kind: cutover
    strategy: sandbox_alias
    alias: orders-endpoint
    grace_seconds: 1
  - kind: delete_source
    confirm: {SOURCE}
"#,
        env.token_file().display()
    )
}

/// Run one redis command whose reply does not matter (`SET`, `DEL`, `HSET`…), failing the test on an error.
pub async fn exec(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let _: () = redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// Wait until `cond` holds, polling it every 10 ms; after `timeout`, fail the test naming `what` (what was
/// awaited). `cond` may assert on its own (that a background run is still alive, say) to fail sooner.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tokio runtime for talking to redis from a test.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `len` incompressible bytes (DUMP compresses values, so a big key needs these to stay big): an xorshift
/// stream that goes on from `state`.
pub fn noise(state: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state as u8
        })
        .collect()
}
