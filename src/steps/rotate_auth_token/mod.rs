//! `rotate_auth_token`: the source's AUTH token replaced in place (a plan without `target`), without
//! downtime, in the order the ElastiCache API reference gives (`SET` is "allowed only after ROTATE"):
//!
//! 1. A new token generated into `source.auth_token`'s store as a pending version ([`versions`]).
//! 2. ModifyReplicationGroup `AuthToken=new`, `AuthTokenUpdateStrategy=ROTATE`: both tokens open the
//!    group; wait until it is `available`; prove both with real connections.
//! 3. The new version made current in the store (the old one kept as the previous), so clients that
//!    read the store get the new token.
//! 4. Hold (state `waiting`) while the clients move to the new token, until released by `ecmigrate
//!    cutover PLAN`, the flag file's removal, or the prompt.
//! 5. ModifyReplicationGroup `AuthTokenUpdateStrategy=SET` with the new token: only it opens the group;
//!    wait; prove the new one opens it and the old one is refused.
//!
//! Each modification is recorded as requested before it is sent and as accepted once answered; a
//! request whose answer was lost is judged from the group (`modifying`) and from what the tokens open.

pub mod preflight;
pub mod versions;

use std::time::Duration;

use serde_json::{Value, json};

use crate::cloud::{AuthTokenUpdate, ReplicationGroup};
use crate::data::connect::{RedisEndpoint, connect};
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::RotateAuthTokenStep;
use crate::secret::{Secret, generate_token};
use crate::steps::endpoints::source_tls_endpoint;
use crate::steps::hold::{Hold, hold, note_earlier_release};
use crate::steps::records::{RotationIntent, RotationOutputs};
use crate::steps::{cloud_error, require_group, timeout, wait_group_available};
use versions::Versions;

/// How long one connection may take to open and answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The request as the journal and `--dry-run` show it (the token redacted).
pub fn modify_params(group: &str, strategy: AuthTokenUpdate) -> Value {
    json!({
        "ReplicationGroupId": group,
        "AuthToken": "<redacted>",
        "AuthTokenUpdateStrategy": strategy.as_str(),
        "ApplyImmediately": true,
    })
}

pub async fn run(ctx: &StepContext, spec: &RotateAuthTokenStep) -> Result<StepOutcome> {
    let id = ctx.plan.plan.source.replication_group_id.clone();
    let group = require_group(ctx, &id).await?;
    let versions = Versions::of(&ctx.plan);
    let store = versions.store();
    if ctx.dry_run() {
        return rehearse(ctx, &id, &versions).await;
    }
    let mut intent: RotationIntent = ctx.intent();
    let version_id = match &intent.version_id {
        Some(v) => v.clone(),
        None => {
            let v = versions::version_id(&ctx.plan.plan.name, &ctx.run_id);
            intent.version_id = Some(v.clone());
            ctx.record_intent(&intent)?;
            v
        }
    };
    let (old, new) = tokens(ctx, &versions, &intent, &version_id).await?;
    let ep = source_tls_endpoint(ctx, &group)?;
    let limit = timeout(spec.timeout_seconds);

    // 2. ROTATE: the new token beside the old one.
    if !intent.rotate_accepted {
        if !intent.rotate_requested {
            require_opens(&ep, known(&old)?, "the current token").await?;
        }
        if !intent.rotate_requested || !taken_rotate(&group, &ep, &new).await {
            intent.rotate_requested = true;
            ctx.record_intent(&intent)?;
            modify(ctx, &id, &new, AuthTokenUpdate::Rotate).await?;
        } else {
            ctx.note(
                "ROTATE was requested by an earlier attempt and the group took it; not sent again",
            );
        }
        intent.rotate_accepted = true;
        ctx.record_intent(&intent)?;
    }
    if intent.released_by.is_none() {
        wait_group_available(ctx, &id, &what(&id, "ROTATE"), limit).await?;
        require_opens_settled(&ep, known(&old)?, "the old token").await?;
        require_opens_settled(&ep, &new, "the new token").await?;
        ctx.check(
            "both_tokens_open",
            true,
            format!(
                "the old and the new token both open {}:{} (AUTH, PING)",
                ep.host, ep.port
            ),
        );
        // 3. Clients reading the store get the new token from now on.
        if !intent.promoted {
            versions.promote(ctx, &version_id).await?;
            intent.promoted = true;
            ctx.record_intent(&intent)?;
        }
        ctx.note(format!(
            "the new token is the current one in {store}; clients still on the old one keep working until the release"
        ));
        // 4. The hold.
        let released = hold(ctx, &rotation_hold(spec.postpone_flag_file.as_deref())).await?;
        intent.released_by = Some(released.unwrap_or_else(|| "not held".into()));
        ctx.record_intent(&intent)?;
    } else {
        note_earlier_release(ctx, intent.released_by.as_deref());
    }

    // 5. SET: only the new token.
    if !intent.set_accepted {
        let group = wait_group_available(ctx, &id, &what(&id, "ROTATE"), limit).await?;
        if !intent.set_requested || !taken_set(&group, &ep, known(&old)?).await {
            intent.set_requested = true;
            ctx.record_intent(&intent)?;
            modify(ctx, &id, &new, AuthTokenUpdate::Set).await?;
        } else {
            ctx.note(
                "SET was requested by an earlier attempt and the group took it; not sent again",
            );
        }
        intent.set_accepted = true;
        ctx.record_intent(&intent)?;
    }
    let group = wait_group_available(ctx, &id, &what(&id, "SET"), limit).await?;
    require_opens_settled(&ep, &new, "the new token").await?;
    let old_refused = match (&intent.old_token_refused, &old) {
        (Some(why), _) => why.clone(),
        (None, Some(old)) => prove_refused(&id, &ep, old).await?,
        (None, None) => unreachable!("`tokens` finds the old token until its refusal is recorded"),
    };
    intent.old_token_refused = Some(old_refused.clone());
    ctx.record_intent(&intent)?;
    ctx.check(
        "old_token_refused",
        true,
        format!("a connection with the old token is refused ({old_refused})"),
    );
    ctx.check(
        "new_token_opens",
        true,
        format!("the new token opens {}:{}", ep.host, ep.port),
    );
    versions.finish(ctx, &version_id).await?;
    Ok(StepOutcome::done(&RotationOutputs {
        group_id: id,
        token_store: store.to_string(),
        version_id: matches!(versions, Versions::Secret(_)).then_some(version_id),
        released_by: intent.released_by.unwrap_or_default(),
        old_token_refused: old_refused,
        reported: json!({ "AuthTokenEnabled": group.auth_token_enabled }),
    }))
}

/// After SET: a connection with the old token must be refused (within [`SETTLE`]); why it was.
async fn prove_refused(id: &str, ep: &RedisEndpoint, old: &Secret) -> Result<String> {
    match settled(ep, old, false).await {
        Ok(Opened::Refused(why)) => Ok(why),
        Ok(Opened::Yes) => Err(Error::failed(
            format!("the old token still opens `{id}` after SET"),
            "wait for the modification to finish (the group may still be applying it) and run again to prove it once more",
        )),
        Err(e) => Err(unreachable_group(id, ep, e)),
    }
}

fn what(id: &str, strategy: &str) -> String {
    format!("replication group {id} after AuthTokenUpdateStrategy {strategy}")
}

/// The old and the new token, wherever this rotation has got to: before the promotion the old one is
/// current and the new one pending (generated and stored now if no earlier attempt did); after it, the
/// new one is current and the old one the previous.
async fn tokens(
    ctx: &StepContext,
    versions: &Versions,
    intent: &RotationIntent,
    version_id: &str,
) -> Result<(Option<Secret>, Secret)> {
    let store = versions.store();
    let missing = |what: &str| {
        Error::failed(
            format!("{what} is not in {store}"),
            "restore it where source.auth_token says it is; the rotation needs both tokens until it ends",
        )
    };
    if intent.promoted {
        let old = versions.previous(ctx).await?;
        // Removed only once its refusal was recorded (see `RotationIntent::old_token_refused`).
        if old.is_none() && intent.old_token_refused.is_none() {
            return Err(missing("the old token"));
        }
        let new = versions
            .current(ctx)
            .await?
            .ok_or_else(|| missing("the new token"))?;
        return Ok((old, new));
    }
    let old = Some(
        versions
            .current(ctx)
            .await?
            .ok_or_else(|| missing("the current token"))?,
    );
    let new = match versions.pending(ctx, version_id).await? {
        Some(t) => {
            ctx.note(format!(
                "the new token stored by an earlier attempt is pending in {store}"
            ));
            t
        }
        None => {
            let t = generate_token();
            versions.stage_pending(ctx, version_id, &t).await?;
            t
        }
    };
    Ok((old, new))
}

/// The old token where the rotation still needs it (`tokens` has it until SET was proven).
fn known(old: &Option<Secret>) -> Result<&Secret> {
    old.as_ref().ok_or_else(|| {
        Error::failed(
            "internal: the old token is gone before the rotation ended",
            "report this bug",
        )
    })
}

/// The hold between ROTATE and SET.
fn rotation_hold(flag: Option<&str>) -> Hold<'_> {
    Hold {
        postpone: true,
        flag_file: flag,
        held: "both AUTH tokens open the group: move every client to the new token now",
        waiting_for: "the release to retire the old token",
        question: "Every client uses the new token: retire the old one now (connections opened with it fail)?",
        released: "the switch to the new token only",
    }
}

/// Whether ROTATE already reached the group (its answer lost): it is `modifying`, or the new token
/// opens it.
async fn taken_rotate(group: &ReplicationGroup, ep: &RedisEndpoint, new: &Secret) -> bool {
    group.status == "modifying" || matches!(opens(ep, new).await, Ok(Opened::Yes))
}

/// Whether SET already reached the group: it is `modifying`, or the old token is refused.
async fn taken_set(group: &ReplicationGroup, ep: &RedisEndpoint, old: &Secret) -> bool {
    group.status == "modifying" || matches!(opens(ep, old).await, Ok(Opened::Refused(_)))
}

async fn modify(
    ctx: &StepContext,
    id: &str,
    token: &Secret,
    strategy: AuthTokenUpdate,
) -> Result<()> {
    ctx.call("ModifyReplicationGroup", modify_params(id, strategy));
    ctx.write
        .modify_auth_token(id, token, strategy)
        .await
        .map_err(|e| cloud_error("ModifyReplicationGroup", e))
}

/// What one token does on a new connection.
pub(crate) enum Opened {
    Yes,
    /// The server answered and refused the token (`WRONGPASS`, `NOAUTH`): why.
    Refused(String),
}

/// A real connection with `token` (AUTH, then PING). `Err` when the server could not be reached or
/// answered something else: that proves nothing about the token.
pub(crate) async fn opens(
    ep: &RedisEndpoint,
    token: &Secret,
) -> std::result::Result<Opened, String> {
    let mut ep = ep.clone();
    ep.password = Some(token.clone());
    let attempt = async {
        let mut con = connect(&ep).await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .map_err(|e| e.to_string())
    };
    let refused = |text: &str| {
        // redis-rs reports a refused AUTH at connect as `AuthenticationFailed`, a later one by code.
        [
            "WRONGPASS",
            "NOAUTH",
            "AuthenticationFailed",
            "invalid username-password",
        ]
        .iter()
        .any(|m| text.contains(m))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(_)) => Ok(Opened::Yes),
        Ok(Err(e)) if refused(&e) => Ok(Opened::Refused(
            e.lines().next().unwrap_or_default().to_string(),
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

fn unreachable_group(id: &str, ep: &RedisEndpoint, e: String) -> Error {
    Error::failed(
        format!(
            "`{id}` could not be reached over TLS at {}:{}: {e}",
            ep.host, ep.port
        ),
        "check the network path and the CA (source.tls_ca_file for a private one), then run again",
    )
}

/// How long the nodes may take to apply a modification after the group reports `available` again:
/// every node takes the new tokens on its own, so a connection is retried until it shows the change.
const SETTLE: Duration = Duration::from_secs(30);

/// What `token` does once the change settled: tried until it opens the group (`want_open`) or is
/// refused (else), at most [`SETTLE`]; the last answer.
pub(crate) async fn settled(
    ep: &RedisEndpoint,
    token: &Secret,
    want_open: bool,
) -> std::result::Result<Opened, String> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let answer = opens(ep, token).await;
        let wanted = match &answer {
            Ok(Opened::Yes) => want_open,
            Ok(Opened::Refused(_)) => !want_open,
            Err(_) => false,
        };
        if wanted || std::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a modification: `token` must open the group within [`SETTLE`].
async fn require_opens_settled(ep: &RedisEndpoint, token: &Secret, what: &str) -> Result<()> {
    opened_or_error(ep, settled(ep, token, true).await, what)
}

/// `token` must open the group, or the step stops (nothing is sent until the current token works).
async fn require_opens(ep: &RedisEndpoint, token: &Secret, what: &str) -> Result<()> {
    opened_or_error(ep, opens(ep, token).await, what)
}

fn opened_or_error(
    ep: &RedisEndpoint,
    answer: std::result::Result<Opened, String>,
    what: &str,
) -> Result<()> {
    match answer {
        Ok(Opened::Yes) => Ok(()),
        Ok(Opened::Refused(why)) => Err(Error::failed(
            format!("{what} does not open {}:{} ({why})", ep.host, ep.port),
            "check that source.auth_token names the store of the token the group uses now",
        )),
        Err(e) => Err(unreachable_group("the source", ep, e)),
    }
}

/// The rehearsal: the calls as they would be made, nothing stored or changed.
async fn rehearse(ctx: &StepContext, id: &str, versions: &Versions) -> Result<StepOutcome> {
    let store = versions.store();
    let dry_id = versions::version_id(&ctx.plan.plan.name, &ctx.run_id);
    versions
        .stage_pending(ctx, &dry_id, &generate_token())
        .await?;
    modify(ctx, id, &generate_token(), AuthTokenUpdate::Rotate).await?;
    ctx.note("would wait until the group is available and prove that the old and the new token both open it");
    ctx.note(format!(
        "would make the new token current in {store} and hold until released (`ecmigrate cutover {}`) while the clients move to it",
        ctx.plan.path.display()
    ));
    modify(ctx, id, &generate_token(), AuthTokenUpdate::Set).await?;
    ctx.note("would wait until the group is available and prove that only the new token opens it");
    Ok(StepOutcome::done(&json!({ "dry_run": true })))
}
