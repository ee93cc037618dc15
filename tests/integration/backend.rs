//! The cloud a scenario runs against, so that one test body (in `scenarios.rs`) runs on each: the embedded
//! sandbox (control plane and data plane in one) or moto (the control plane only; its data plane is the
//! sandbox's redis, see `moto.rs`). A backend owns the ids of one test, seeds the source group with its
//! data and the KMS key, writes the plan to run, reports the groups and snapshots it holds, and asserts what
//! only it can see (the `*_extras` hooks).

use std::cell::Cell;
use std::path::Path;

use ecmigrate::data::connect::RedisEndpoint;
use serde_json::Value;

use crate::harness::{Env, Run, SOURCE, TARGET, block_on, full_plan, wait_for};
use crate::moto::{
    AwsPlan, Moto, TOKEN, aws_plan, is_mutating, local_data_plane, moto_url, recorded_operations,
    recording_len, unique, write_token,
};

/// Whether the AWS SDK of the child retries (a run expected to fail sets it off: moto answers an
/// unimplemented call with HTML the SDK would retry).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    Retried,
    Once,
}

/// A replication group as the backend reports it.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub status: String,
    pub at_rest: bool,
    pub transit: bool,
    pub transit_mode: Option<String>,
    pub auth_token: bool,
    pub kms_key_id: Option<String>,
}

/// A snapshot of the source group: its name and the ARN of the key that encrypts it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub kms_key_id: Option<String>,
}

/// The groups of this test and the snapshots of its source.
#[derive(Debug)]
pub struct Resources {
    pub groups: Vec<Group>,
    pub snapshots: Vec<Snapshot>,
}

impl Resources {
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn count(&self, id: &str) -> usize {
        self.groups.iter().filter(|g| g.id == id).count()
    }
}

/// Where the data of the source and of the target are: the source in plain text, the target over TLS with
/// the backend's CA (no password: the caller adds the token or checks that none is refused).
pub struct DataPlane {
    pub source: RedisEndpoint,
    pub target: RedisEndpoint,
}

/// What the full migration saw, for the backend's own checks.
pub struct FullMigration<'a> {
    pub plan: &'a Path,
    /// Names of keys read from the source before the run.
    pub keys: &'a [String],
}

pub trait Backend: Sized {
    /// The backend for one test in `env` (child processes configured to reach it), or `None` when it
    /// cannot run here (moto without a server, outside CI only).
    fn start(env: &mut Env, calls: Calls) -> Option<Self>;

    fn source(&self) -> &str;
    fn target(&self) -> &str;
    /// The plan's `name`: its state is under `env.state_dir()/<name>`.
    fn plan_name(&self) -> &str;

    /// An unencrypted, available source group; with `Some(keys)` its data plane holds that many keys and
    /// the plan has the data steps (verify, cutover, delete_source).
    fn seed_source(&mut self, env: &Env, keys: Option<u64>);
    /// The customer managed key the plan names.
    fn seed_key(&mut self, env: &Env);
    /// The ARN of that key.
    fn key_arn(&self) -> &str;
    fn disable_key(&self, env: &Env);
    /// A group that already has the target's id.
    fn seed_taken_target(&self, env: &Env);

    /// The migration plan for what was seeded.
    fn plan(&self, env: &Env) -> String;
    fn data_plane(&self, env: &Env) -> DataPlane;
    /// The target's AUTH token, once there is one.
    fn token(&self, env: &Env) -> Option<String>;

    fn resources(&self, env: &Env) -> Resources;
    /// Whether `group` (as `resources` reports it) counts as deleted.
    fn is_deleted(&self, group: Option<&Group>) -> bool {
        group.is_none()
    }
    /// Everything a run could change in this cloud, and every mutating call seen since `begin`.
    fn fingerprint(&self, env: &Env) -> String;
    /// The run under test starts now (a backend with a call recorder marks its place).
    fn begin(&self) {}

    /// Make the target's creation last (if the backend can) so a kill lands while it runs.
    fn slow_restore(&self, _env: &mut Env) {}
    /// Called once the run under test reported its CreateReplicationGroup call, before the SIGKILL.
    fn before_kill(&self, _env: &Env) {}

    fn full_migration_extras(&self, _env: &Env, _seen: &FullMigration<'_>) {}
    fn dry_run_extras(&self, _env: &Env, _run: &Run) {}
    /// `status` is `ecmigrate status --output json` right after the kill.
    fn killed_extras(&self, _env: &Env, _status: &Value) {}
    fn resumed_extras(&self, _env: &Env, _resumed: &Run) {}
    fn refusal_extras(&self, _env: &Env, _run: &Run) {}
}

/// The embedded sandbox: `orders` migrated onto `orders-enc` with the key alias/orders, the token generated
/// into the env's secrets folder.
pub struct Sandbox {
    key_arn: Option<String>,
}

impl Backend for Sandbox {
    fn start(_env: &mut Env, _calls: Calls) -> Option<Self> {
        Some(Sandbox { key_arn: None })
    }

    fn source(&self) -> &str {
        SOURCE
    }
    fn target(&self) -> &str {
        TARGET
    }
    fn plan_name(&self) -> &str {
        "orders-migration"
    }

    fn seed_source(&mut self, env: &Env, keys: Option<u64>) {
        // The sandbox's control plane is its data plane: a source always has some keys.
        let keys = keys.unwrap_or(10).to_string();
        env.ok(&[
            "sandbox",
            "up",
            "--group",
            SOURCE,
            "--replicas",
            "1",
            "--keys",
            &keys,
        ]);
    }

    fn seed_key(&mut self, env: &Env) {
        env.ok(&["sandbox", "kms", "create", "orders"]);
        let status = env.sandbox_status();
        let arn = status["kms_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| {
                k["aliases"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a == "alias/orders"))
            })
            .and_then(|k| k["arn"].as_str())
            .unwrap_or_else(|| panic!("no key alias/orders in {status}"));
        self.key_arn = Some(arn.to_string());
    }

    fn key_arn(&self) -> &str {
        self.key_arn.as_deref().expect("seed_key first")
    }

    fn disable_key(&self, env: &Env) {
        env.ok(&["sandbox", "kms", "disable", "orders"]);
    }

    fn seed_taken_target(&self, env: &Env) {
        env.ok(&[
            "sandbox",
            "up",
            "--group",
            TARGET,
            "--replicas",
            "0",
            "--keys",
            "0",
        ]);
    }

    fn plan(&self, env: &Env) -> String {
        full_plan(env)
    }

    /// The primaries of the groups as they are now (port 0 for a group not there).
    fn data_plane(&self, env: &Env) -> DataPlane {
        let status = env.sandbox_status();
        let port = |id| Env::group(&status, id).map_or(0, |_| Env::primary_port(&status, id));
        DataPlane {
            source: RedisEndpoint::plain("127.0.0.1", port(SOURCE)),
            target: tls_endpoint(&status, port(TARGET)),
        }
    }

    fn token(&self, env: &Env) -> Option<String> {
        let text = std::fs::read_to_string(env.token_file()).ok()?;
        Some(text.trim().to_string())
    }

    fn resources(&self, env: &Env) -> Resources {
        let status = env.sandbox_status();
        let groups = status["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| Group {
                id: g["replication_group_id"].as_str().unwrap().to_string(),
                status: g["status"].as_str().unwrap().to_string(),
                at_rest: g["at_rest_encryption_enabled"] == true,
                transit: g["transit_encryption_enabled"] == true,
                transit_mode: g["transit_encryption_mode"].as_str().map(str::to_string),
                auth_token: g["auth_token_enabled"] == true,
                kms_key_id: g["kms_key_id"].as_str().map(str::to_string),
            })
            .collect();
        let snapshots = status["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["source_group"] == SOURCE)
            .map(|s| Snapshot {
                name: s["name"].as_str().unwrap().to_string(),
                kms_key_id: s["kms_key_id"].as_str().map(str::to_string),
            })
            .collect();
        Resources { groups, snapshots }
    }

    /// The sandbox's files (path, bytes; node logs left out) and its status.
    fn fingerprint(&self, env: &Env) -> String {
        let files: Vec<(String, Vec<u8>)> = env
            .sandbox_files()
            .into_iter()
            .filter(|p| !p.to_string_lossy().ends_with(".log"))
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap_or_default();
                (p.display().to_string(), bytes)
            })
            .collect();
        format!("{files:?}\n{}", env.sandbox_status())
    }

    fn slow_restore(&self, env: &mut Env) {
        // Every later command of `env` creates slowly too.
        env.set_env("ECMIGRATE_SANDBOX_CREATE_DELAY_MS", "4000");
    }

    /// Wait for the target's first node to be started. Until then the AUTH token is nowhere but in the
    /// killed process (the sandbox keeps it only in a node's redis.conf), so no one could finish the
    /// creation: it would end `create-failed`.
    fn before_kill(&self, env: &Env) {
        wait_for(
            "the sandbox to start a node of the requested target",
            std::time::Duration::from_secs(30),
            || {
                Env::group(&env.sandbox_status(), TARGET)
                    .and_then(|g| g["nodes"].as_array())
                    .is_some_and(|nodes| !nodes.is_empty())
            },
        );
    }

    fn full_migration_extras(&self, env: &Env, seen: &FullMigration<'_>) {
        sandbox_full_migration_extras(env, seen);
    }

    fn dry_run_extras(&self, env: &Env, run: &Run) {
        assert!(
            run.stdout
                .contains("would point alias orders-endpoint at orders-enc"),
            "missing `would point alias`: {run:?}"
        );
        assert!(
            !env.token_file().exists(),
            "a dry run must not write the token file"
        );
    }

    fn killed_extras(&self, env: &Env, status: &Value) {
        let mid = env.sandbox_status();
        let target = Env::group(&mid, TARGET).expect("the target was requested before the kill");
        assert_ne!(
            target["status"], "available",
            "the kill should land while the target is still creating"
        );
        assert_eq!(status["steps"][2]["status"], "running", "{status}");
    }

    fn resumed_extras(&self, _env: &Env, resumed: &Run) {
        assert!(resumed.stdout.contains("already requested"), "{resumed:?}");
        assert!(
            !resumed.stdout.contains("create group "),
            "a second create was made: {resumed:?}"
        );
    }

    fn refusal_extras(&self, env: &Env, _run: &Run) {
        assert!(
            !env.token_file().exists(),
            "a refused run generated the token"
        );
    }
}

/// A TLS endpoint of the sandbox (its CA), without a password.
fn tls_endpoint(status: &Value, port: u16) -> RedisEndpoint {
    RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port,
        tls: true,
        ca_file: Some(status["ca_file"].as_str().unwrap().into()),
        password: None,
        db: 0,
        client_cert: None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the sandbox shows beyond the cloud's API: the target's shape and alias, snapshot files that hold no
/// key name, a target that refuses plain text and a missing token, the evidence report, no token anywhere.
fn sandbox_full_migration_extras(env: &Env, seen: &FullMigration<'_>) {
    use ecmigrate::data::connect::connect;
    let after = env.sandbox_status();
    let target = Env::group(&after, TARGET).expect("target group");
    assert!(
        target["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["tls"] == true)
    );
    assert_eq!(
        target["nodes"].as_array().unwrap().len(),
        2,
        "the target copies the source's shape"
    );
    assert_eq!(after["aliases"]["orders-endpoint"], TARGET);

    // Both snapshots are all the sandbox holds, encrypted, and no snapshot file shows a key name.
    let snaps = after["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{after}");
    assert!(snaps.iter().all(|s| s["encrypted"] == true), "{after}");
    for s in snaps {
        let bytes = std::fs::read(s["path"].as_str().unwrap()).expect("snapshot file");
        for key in seen.keys {
            assert!(
                !contains(&bytes, key.as_bytes()),
                "snapshot {} contains key name {key}",
                s["name"]
            );
        }
    }
    // Nor any other file the sandbox keeps (node folders, registry).
    for file in env.sandbox_files() {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, seen.keys[0].as_bytes()),
            "{} contains a key name",
            file.display()
        );
    }

    // Plain text refused, TLS without the token refused.
    let port = Env::primary_port(&after, TARGET);
    block_on(async {
        let plain = async {
            let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port)).await?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        assert!(
            plain.await.is_err(),
            "a plain-text connection to the target must be refused"
        );
        let no_token = async {
            let mut c = connect(&tls_endpoint(&after, port)).await?;
            redis::cmd("DBSIZE")
                .query_async::<u64>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        let err = no_token
            .await
            .expect_err("TLS without the token must be refused");
        assert!(err.contains("NOAUTH") || err.contains("auth"), "{err}");
    });
    let token = std::fs::read_to_string(env.token_file()).unwrap();
    let token = token.trim();
    assert!(
        !env.sandbox_status().to_string().contains(token),
        "the AUTH token is in the sandbox's status"
    );

    // The evidence report: before/after attributes that match what the sandbox says, and no token.
    let state_dir = env.state_dir().join("orders-migration");
    let report_text = std::fs::read_to_string(state_dir.join("report.json")).expect("report.json");
    let report: Value = serde_json::from_str(&report_text).unwrap();
    assert!(
        report["run_by"]["aws_principal"].is_null(),
        "the sandbox has no AWS principal"
    );
    let markdown = std::fs::read_to_string(state_dir.join("report.md")).expect("report.md");
    let sandbox_target = Env::group(&env.sandbox_status(), TARGET).unwrap().clone();
    let r_after = &report["target"]["after"];
    assert_eq!(
        r_after["AtRestEncryptionEnabled"],
        sandbox_target["at_rest_encryption_enabled"]
    );
    assert_eq!(
        r_after["TransitEncryptionEnabled"],
        sandbox_target["transit_encryption_enabled"]
    );
    assert_eq!(
        r_after["AuthTokenEnabled"],
        sandbox_target["auth_token_enabled"]
    );
    assert_eq!(r_after["KmsKeyId"], sandbox_target["kms_key_id"]);
    assert_eq!(r_after["AtRestEncryptionEnabled"], true);
    assert_eq!(report["source"]["before"]["AtRestEncryptionEnabled"], false);
    assert_eq!(
        report["source"]["before"]["TransitEncryptionEnabled"],
        false
    );
    assert_eq!(report["source"]["after"]["Status"], "deleted");
    assert!(
        report["snapshots"]["final"]
            .as_str()
            .unwrap()
            .contains("final")
    );
    assert!(report["plan_checksum"].as_str().unwrap().len() == 64);
    assert!(markdown.contains("AtRestEncryptionEnabled") && markdown.contains(TARGET));
    // The documents for people: the EC-014 statement and its before/after table, no JSON, and the
    // digest of report.json as written.
    let html = std::fs::read_to_string(state_dir.join("report.html")).expect("report.html");
    for doc in [&markdown, &html] {
        assert!(doc.contains("Control EC-014"), "{doc}");
        assert!(!doc.contains("{\""), "JSON in a document: {doc}");
        assert!(!doc.contains(token), "the token is in a document");
    }
    assert!(
        markdown.contains("| AtRestEncryptionEnabled | false | ")
            && markdown.contains("| TransitEncryptionEnabled | false | "),
        "{markdown}"
    );
    assert!(markdown.contains("Result: **compliant**"), "{markdown}");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, report_text.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert!(markdown.contains(&hex) && html.contains(&hex), "{markdown}");
    assert!(html.starts_with("<!DOCTYPE html>") && !html.contains("<script"));
    assert!(
        !report_text.contains(token) && !markdown.contains(token),
        "the token is in the report"
    );
    let status_text = env.ok(&["status", seen.plan.to_str().unwrap()]).stdout;
    assert!(
        status_text.contains("report.md"),
        "status must point to the report: {status_text}"
    );
}

/// moto: a unique source id (target `<source>-enc`) and key alias, the token the tests know in a file, and
/// with data the local data plane of `moto::local_data_plane`.
pub struct MotoBackend {
    pub moto: Moto,
    pub source: String,
    pub target: String,
    pub alias: String,
    key_arn: Option<String>,
    /// (source port, target port, CA file) of the local data plane.
    data: Option<(u16, u16, String)>,
    /// The line of moto's recording the run under test starts at.
    recorded_from: Cell<usize>,
}

impl MotoBackend {
    /// As `start`, the source id starting with `prefix`.
    pub fn with_prefix(env: &mut Env, calls: Calls, prefix: &str) -> Option<MotoBackend> {
        let moto = Moto::new(&moto_url()?);
        moto.configure(env, calls == Calls::Retried);
        write_token(env);
        let source = unique(prefix);
        Some(MotoBackend {
            moto,
            target: format!("{source}-enc"),
            source,
            alias: unique("key"),
            key_arn: None,
            data: None,
            recorded_from: Cell::new(recording_len()),
        })
    }

    /// The mutating calls moto recorded for this test's ids since `begin`, sorted.
    fn mutations(&self) -> Vec<String> {
        let mut mutating: Vec<String> = recorded_operations(&self.source, self.recorded_from.get())
            .into_iter()
            .filter(|o| is_mutating(o))
            .collect();
        mutating.sort();
        mutating
    }

    /// Exactly the mutations a migration needs, each once.
    fn assert_one_migration(&self) {
        assert_eq!(
            self.mutations(),
            [
                "CreateReplicationGroup",
                "CreateSnapshot",
                "CreateSnapshot",
                "DeleteReplicationGroup"
            ],
            "the recorder saw other mutations, or one twice"
        );
    }
}

impl Backend for MotoBackend {
    fn start(env: &mut Env, calls: Calls) -> Option<Self> {
        MotoBackend::with_prefix(env, calls, "src")
    }

    fn source(&self) -> &str {
        &self.source
    }
    fn target(&self) -> &str {
        &self.target
    }
    fn plan_name(&self) -> &str {
        "aws-migration"
    }

    fn seed_source(&mut self, env: &Env, keys: Option<u64>) {
        self.data = keys.map(|k| local_data_plane(env, k));
        self.moto
            .seed_group(&self.source, "7.0.7", Some("subnets-a"));
    }

    fn seed_key(&mut self, _env: &Env) {
        self.key_arn = Some(self.moto.seed_key(&self.alias));
    }

    fn key_arn(&self) -> &str {
        self.key_arn.as_deref().expect("seed_key first")
    }

    fn disable_key(&self, _env: &Env) {
        self.moto.disable_key(self.key_arn());
    }

    fn seed_taken_target(&self, _env: &Env) {
        self.moto
            .seed_group(&self.target, "7.0.7", Some("subnets-a"));
    }

    fn plan(&self, env: &Env) -> String {
        aws_plan(
            env,
            &AwsPlan {
                name: self.plan_name(),
                source: &self.source,
                target: &self.target,
                kms_alias: &self.alias,
                data: self.data.clone(),
            },
        )
    }

    fn data_plane(&self, _env: &Env) -> DataPlane {
        let (source, target, ca) = self.data.clone().expect("seed_source with keys first");
        DataPlane {
            source: RedisEndpoint::plain("127.0.0.1", source),
            target: RedisEndpoint {
                username: None,
                host: "127.0.0.1".into(),
                port: target,
                tls: true,
                ca_file: Some(ca.into()),
                password: None,
                db: 0,
                client_cert: None,
            },
        }
    }

    fn token(&self, _env: &Env) -> Option<String> {
        Some(TOKEN.to_string())
    }

    fn resources(&self, _env: &Env) -> Resources {
        let groups = [&self.source, &self.target]
            .into_iter()
            .filter_map(|id| self.moto.group(id))
            .map(|g| Group {
                id: g.replication_group_id().unwrap_or_default().to_string(),
                status: g.status().unwrap_or_default().to_string(),
                at_rest: g.at_rest_encryption_enabled() == Some(true),
                transit: g.transit_encryption_enabled() == Some(true),
                transit_mode: g.transit_encryption_mode().map(|m| m.as_str().to_string()),
                auth_token: g.auth_token_enabled() == Some(true),
                kms_key_id: g.kms_key_id().map(str::to_string),
            })
            .collect();
        let snapshots = self
            .moto
            .snapshots_of(&self.source)
            .iter()
            .map(|s| Snapshot {
                name: s.snapshot_name().unwrap_or_default().to_string(),
                kms_key_id: s.kms_key_id().map(str::to_string),
            })
            .collect();
        Resources { groups, snapshots }
    }

    /// moto gap: deleted groups stay `deleting` forever.
    fn is_deleted(&self, group: Option<&Group>) -> bool {
        group.is_none_or(|g| g.status == "deleting")
    }

    /// Every group and snapshot that names this test's source, and the mutating calls since `begin`.
    fn fingerprint(&self, _env: &Env) -> String {
        format!(
            "{:?}\nmutating calls: {:?}",
            self.moto.resources_of(&self.source),
            self.mutations()
        )
    }

    fn begin(&self) {
        self.recorded_from.set(recording_len());
    }

    fn full_migration_extras(&self, env: &Env, _seen: &FullMigration<'_>) {
        self.assert_one_migration();
        // The evidence pack names the AWS principal that ran it (STS GetCallerIdentity) and its account.
        let state = env.state_dir().join(self.plan_name());
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(state.join("report.json")).unwrap())
                .unwrap();
        let principal = report["run_by"]["aws_principal"]
            .as_str()
            .unwrap_or_default();
        assert!(principal.starts_with("arn:aws:"), "{report}");
        let markdown = std::fs::read_to_string(state.join("report.md")).unwrap();
        assert!(
            markdown.contains(&format!("as AWS principal `{principal}`")),
            "{markdown}"
        );
        // The copied settings, as far as moto reports them.
        let g = self.moto.group(&self.target).expect("target group in moto");
        assert_eq!(g.cache_node_type(), Some("cache.t3.micro"));
    }

    fn dry_run_extras(&self, _env: &Env, run: &Run) {
        // moto's new keys do not rotate: preflight says so, with the command that turns rotation on.
        assert!(
            run.stdout.contains("has automatic rotation off")
                && run
                    .stdout
                    .contains("aws kms enable-key-rotation --key-id arn:aws:kms:us-east-1:"),
            "no rotation warning: {run:?}"
        );
        // Count what the rehearsal sent: reads of the source, and not one mutating call.
        let operations = recorded_operations(&self.source, self.recorded_from.get());
        assert!(
            operations.iter().any(|o| o == "DescribeReplicationGroups"),
            "the recorder saw no read: {operations:?}"
        );
        let mutating: Vec<&String> = operations.iter().filter(|o| is_mutating(o)).collect();
        assert!(
            mutating.is_empty(),
            "mutating calls in a dry run: {mutating:?} (all: {operations:?})"
        );
    }

    fn resumed_extras(&self, _env: &Env, _resumed: &Run) {
        // The kill may land before the create request left (the resumed run then makes it) or after (the
        // resumed run finds the group): either way moto must see exactly one create.
        self.assert_one_migration();
    }
}
