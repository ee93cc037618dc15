//! One file per step kind. Each step is idempotent on resume: it records its intent before a mutating call
//! and, when run again, finds what it already created and waits for it instead of creating a second one.
//! Steps reach the control plane only through `cloud` traits and the data plane only through `data`.

pub mod backup;
pub mod cutover;
pub mod delete_source;
pub mod preflight;
pub mod restore_encrypted;
pub mod stream_copy;
pub mod switch;
pub mod verify;

use std::time::Duration;

use serde_json::{Map, Value};

use crate::cloud::{CloudError, ReplicationGroup};
use crate::data::connect::RedisEndpoint;
use crate::engine::{RunOptions, StepContext};
use crate::error::{Error, Result};
use crate::plan::{LoadedPlan, StepSpec};
use crate::secret::{Secret, TokenStore};

/// What a finished step leaves in the state file.
pub struct StepOutcome {
    pub outputs: Map<String, Value>,
    /// The step had nothing to do (recorded as `skipped`).
    pub skipped: bool,
}

impl StepOutcome {
    pub fn done(outputs: Map<String, Value>) -> Self {
        StepOutcome {
            outputs,
            skipped: false,
        }
    }
}

pub async fn execute(spec: &StepSpec, ctx: &StepContext) -> Result<StepOutcome> {
    match spec {
        StepSpec::Preflight(s) => preflight::run(ctx, s).await,
        StepSpec::Backup(s) => backup::run(ctx, s).await,
        StepSpec::RestoreEncrypted(s) => restore_encrypted::run(ctx, s).await,
        StepSpec::StreamCopy(s) => stream_copy::run(ctx, s).await,
        StepSpec::Verify(s) => verify::run(ctx, s).await,
        StepSpec::Cutover(s) => cutover::run(ctx, s).await,
        StepSpec::DeleteSource(s) => delete_source::run(ctx, s).await,
    }
}

/// The default wait bound for cloud operations (an hour: large snapshots take long).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn timeout(seconds: Option<u64>) -> Duration {
    seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT)
}

pub fn cloud_error(what: &str, e: CloudError) -> Error {
    let hint = match &e {
        CloudError::Transient { .. } => {
            "the cloud is throttling or failing; run the same command again to resume"
        }
        CloudError::NotFound { .. } => {
            "check the identifiers in the plan and the provider/region it points at"
        }
        CloudError::AlreadyExists { .. } => "another resource has this name; rename it in the plan",
        _ => "fix the cause shown and run the same command again; it resumes where it stopped",
    };
    Error::failed(format!("{what}: {e}"), hint)
}

/// The store the plan names for the target's AUTH token.
pub fn token_store(plan: &LoadedPlan) -> TokenStore {
    let spec = &plan.plan.target.auth_token;
    match (&spec.file, &spec.env, &spec.secrets_manager) {
        (Some(file), _, _) => TokenStore::File(plan.resolve(file)),
        (None, Some(env), _) => TokenStore::Env(env.clone()),
        (None, None, Some(id)) => TokenStore::SecretsManager(id.clone()),
        // Validation guarantees one of them; keep a harmless default rather than panic.
        (None, None, None) => TokenStore::Env("ECMIGRATE_AUTH_TOKEN".into()),
    }
}

/// The token in `store`, `None` when the store is empty. A Secrets Manager secret is read through the
/// cloud (in a rehearsal: including what the rehearsal "stored").
pub async fn read_token(
    ctx: &StepContext,
    store: &TokenStore,
) -> std::result::Result<Option<Secret>, String> {
    match store {
        TokenStore::SecretsManager(id) => ctx
            .cloud
            .get_secret(id)
            .await
            .map_err(|e| format!("reading {store}: {e}")),
        local => local.load(),
    }
}

/// Keep a generated token in `store`, reported as a call with the token redacted. A rehearsal writes
/// nothing: its cloud and token sink only record.
pub async fn keep_token(ctx: &StepContext, store: &TokenStore, token: &Secret) -> Result<()> {
    match store {
        TokenStore::SecretsManager(id) => {
            ctx.call(
                "PutSecretValue",
                serde_json::json!({ "SecretId": id, "SecretString": "<redacted>" }),
            );
            let tags = [("ecmigrate:plan".to_string(), ctx.plan.plan.name.clone())].into();
            ctx.write
                .put_secret(id, token, &tags)
                .await
                .map_err(|e| cloud_error("storing the AUTH token in Secrets Manager", e))
        }
        local => {
            ctx.call(
                "StoreAuthToken",
                serde_json::json!({ "store": store.to_string(), "token": "<redacted>" }),
            );
            ctx.tokens
                .save(local, token)
                .map_err(|e| Error::failed(e, "point target.auth_token.file at a writable path"))
        }
    }
}

/// The target's AUTH token, which must already be stored (restore_encrypted stores a generated one).
pub async fn load_token(ctx: &StepContext) -> Result<Secret> {
    let store = token_store(&ctx.plan);
    match read_token(ctx, &store).await {
        Ok(Some(token)) => Ok(token),
        Ok(None) => Err(Error::failed(
            format!("the AUTH token is not in {store}"),
            "restore the token where the plan says it is; the target group requires it",
        )),
        Err(e) => Err(Error::failed(
            e,
            "check the token store named in target.auth_token",
        )),
    }
}

/// The KMS key the target and its snapshots are encrypted with: the plan's, or the service default.
pub fn kms_key_ref(ctx: &StepContext) -> Option<String> {
    ctx.plan
        .plan
        .target
        .kms_key_id
        .clone()
        .or_else(|| ctx.cloud.default_kms_key())
}

fn parse_endpoint(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// `host:port` of a group's data plane: the plan's override (`<side>.data_endpoint`, for tunnels), else
/// the group's primary endpoint.
fn data_host_port(
    side: &str,
    plan_override: Option<&String>,
    group: &ReplicationGroup,
) -> Result<(String, u16)> {
    match plan_override {
        Some(e) => parse_endpoint(e).ok_or_else(|| {
            Error::usage(
                format!("{side}.data_endpoint `{e}` is not host:port"),
                "write it as host:port",
            )
        }),
        None => {
            let ep = group.primary_endpoint.clone().ok_or_else(|| {
                Error::failed(
                    format!("the group `{}` reports no primary endpoint", group.id),
                    format!("set {side}.data_endpoint in the plan"),
                )
            })?;
            Ok((ep.host, ep.port))
        }
    }
}

/// How to reach the source's data plane (TLS only if the source already has it).
pub fn source_data_endpoint(ctx: &StepContext, group: &ReplicationGroup) -> Result<RedisEndpoint> {
    let (host, port) =
        data_host_port("source", ctx.plan.plan.source.data_endpoint.as_ref(), group)?;
    Ok(RedisEndpoint {
        host,
        port,
        tls: group.transit_encryption_enabled,
        ca_file: ctx.cloud.data_plane_ca(),
        password: None,
        db: 0,
    })
}

/// How to reach the target's data plane: TLS with the plan's CA (or the cloud's), and the AUTH token.
pub fn target_data_endpoint(
    ctx: &StepContext,
    group: &ReplicationGroup,
    token: Secret,
) -> Result<RedisEndpoint> {
    let target = &ctx.plan.plan.target;
    let (host, port) = data_host_port("target", target.data_endpoint.as_ref(), group)?;
    let ca_file = target
        .tls_ca_file
        .as_ref()
        .map(|p| ctx.plan.resolve(p))
        .or_else(|| ctx.cloud.data_plane_ca());
    Ok(RedisEndpoint {
        host,
        port,
        tls: true,
        ca_file,
        password: Some(token),
        db: 0,
    })
}

/// Look a group up, turning "absent" into an error that names it.
pub async fn require_group(ctx: &StepContext, id: &str) -> Result<ReplicationGroup> {
    match ctx.cloud.describe_group(id).await {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(Error::failed(
            format!("replication group `{id}` does not exist"),
            "check the plan's ids and the provider it points at",
        )),
        Err(e) => Err(cloud_error(&format!("describing `{id}`"), e)),
    }
}

pub fn obj(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Wait until snapshot `name` is available (bounded by `limit`).
pub async fn wait_for_snapshot(
    ctx: &StepContext,
    name: &str,
    limit: Duration,
) -> Result<crate::cloud::Snapshot> {
    crate::engine::wait_until(ctx, &format!("snapshot {name}"), limit, || async {
        use crate::engine::Poll;
        Ok(match ctx.cloud.describe_snapshot(name).await? {
            Some(s) if s.status == "available" => Poll::Ready(s),
            Some(s) if s.status == "failed" => Poll::Failed(format!("snapshot `{name}` failed")),
            Some(s) => Poll::Pending(s.status),
            None => Poll::Pending("not visible yet".into()),
        })
    })
    .await
}

/// Refused before anything runs: steps that need a confirmation that cannot be given (no terminal, and
/// no `--yes` with `confirm:`).
pub fn confirmations_possible(plan: &LoadedPlan, options: &RunOptions) -> Result<()> {
    if options.interactive || options.dry_run {
        return Ok(());
    }
    for spec in &plan.plan.steps {
        match spec {
            StepSpec::DeleteSource(d)
                if !options.yes
                    || d.confirm.as_deref()
                        != Some(plan.plan.source.replication_group_id.as_str()) =>
            {
                return Err(Error::usage(
                    "`delete_source` needs a confirmation and there is no terminal to ask on",
                    format!(
                        "add `confirm: {}` to the delete_source step and pass --yes, or run from a terminal",
                        plan.plan.source.replication_group_id
                    ),
                ));
            }
            StepSpec::Cutover(c)
                if c.strategy == crate::plan::CutoverStrategy::Manual && !options.yes =>
            {
                return Err(Error::usage(
                    "the `manual` cutover asks the operator to confirm the switch and there is no terminal",
                    "run from a terminal, or pass --yes once the clients have been repointed",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the plan streams changes (has a `stream_copy` step).
pub fn plan_streams(plan: &LoadedPlan) -> bool {
    plan.plan
        .steps
        .iter()
        .any(|s| matches!(s, StepSpec::StreamCopy(_)))
}

/// Subscribe to the source's changes (for `stream_copy`), unless already subscribed in this process.
/// `before_snapshot`: whether this happens before the backup snapshot is requested; if not, the capture is
/// marked as having a gap, which `stream_copy` closes with a full reconcile pass.
pub async fn start_capture(
    ctx: &StepContext,
    source: &ReplicationGroup,
    before_snapshot: bool,
) -> Result<()> {
    let mut live = ctx.live.lock().await;
    if live.capture.is_some() || live.stream.is_some() {
        return Ok(());
    }
    let endpoint = source_data_endpoint(ctx, source)?;
    let style = crate::data::capture::detect_style(&endpoint, true)
        .await
        .map_err(|e| Error::failed(e, NOTIFICATIONS_FIX))?;
    let spill = ctx.state_folder().join("capture.spill");
    let _ = std::fs::remove_file(&spill);
    let capture = crate::data::capture::Capture::start(endpoint, style, spill, 1_000_000)
        .await
        .map_err(|e| {
            Error::failed(
                e,
                "check that the source's data plane is reachable (source.data_endpoint)",
            )
        })?;
    if !before_snapshot {
        capture.mark_gap("the capture started after the snapshot (a resumed run)");
    }
    ctx.note(format!(
        "capturing changes of `{}` (keyspace notifications){}",
        source.id,
        if before_snapshot {
            " from before the snapshot"
        } else {
            "; a full reconcile pass will close the gap"
        }
    ));
    live.capture = Some(capture);
    live.started_before_snapshot = before_snapshot;
    Ok(())
}

/// What to change when keyspace notifications are off.
pub const NOTIFICATIONS_FIX: &str = "set notify-keyspace-events to `KEA` on the source (on ElastiCache: in a custom \
    parameter group attached to the group; self-managed: CONFIG SET notify-keyspace-events KEA), or remove the \
    stream_copy step and stop writes before the backup";
