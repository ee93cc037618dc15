//! The versions of the source's AUTH token during a rotation, in the store `source.auth_token` names:
//!
//! - Secrets Manager: the new token is a version labelled `AWSPENDING` (PutSecretValue with our version
//!   id as `ClientRequestToken`), made `AWSCURRENT` once both tokens open the group (the old version is
//!   then `AWSPREVIOUS`, as Secrets Manager labels it), and its `AWSPENDING` label removed at the end.
//! - A file: the new token waits in `<file>.pending`; promoting copies the old one to `<file>.previous`
//!   and renames the pending file over the token file (both 0600, written atomically); the end removes
//!   the previous one, which no longer opens anything.
//!
//! Every operation can be repeated: a resumed run finds what an earlier attempt stored.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cloud::{STAGE_CURRENT, STAGE_PENDING, STAGE_PREVIOUS};
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::LoadedPlan;
use crate::secret::{Secret, TokenStore};
use crate::steps::cloud_error;

/// The store of the source's token (validation allows only a file or a secret).
pub enum Versions {
    File(PathBuf),
    Secret(String),
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn store_error(what: String) -> Error {
    Error::failed(
        what,
        "check the token store named in source.auth_token, then run again",
    )
}

impl Versions {
    pub fn of(plan: &LoadedPlan) -> Versions {
        let spec = plan.plan.source.auth_token.clone().unwrap_or_default();
        match (spec.file, spec.secrets_manager) {
            (Some(file), _) => Versions::File(plan.resolve(&file)),
            (None, Some(id)) => Versions::Secret(id),
            // Validation refuses a rotation without one of them.
            (None, None) => Versions::File(plan.resolve(Path::new("auth-token"))),
        }
    }

    /// The store as the state file and outputs name it.
    pub fn store(&self) -> TokenStore {
        match self {
            Versions::File(p) => TokenStore::File(p.clone()),
            Versions::Secret(id) => TokenStore::SecretsManager(id.clone()),
        }
    }

    fn pending_file(path: &Path) -> PathBuf {
        with_suffix(path, ".pending")
    }

    fn previous_file(path: &Path) -> PathBuf {
        with_suffix(path, ".previous")
    }

    fn load_file(path: PathBuf) -> Result<Option<Secret>> {
        TokenStore::File(path).load().map_err(store_error)
    }

    /// The current token.
    pub async fn current(&self, ctx: &StepContext) -> Result<Option<Secret>> {
        match self {
            Versions::File(p) => Self::load_file(p.clone()),
            Versions::Secret(id) => self.stage(ctx, id, STAGE_CURRENT).await,
        }
    }

    /// The token the current one replaced (once promoted).
    pub async fn previous(&self, ctx: &StepContext) -> Result<Option<Secret>> {
        match self {
            Versions::File(p) => Self::load_file(Self::previous_file(p)),
            Versions::Secret(id) => self.stage(ctx, id, STAGE_PREVIOUS).await,
        }
    }

    async fn stage(&self, ctx: &StepContext, id: &str, stage: &str) -> Result<Option<Secret>> {
        let version = ctx
            .cloud
            .get_secret_version(id, stage)
            .await
            .map_err(|e| cloud_error(&format!("reading the {stage} version of `{id}`"), e))?;
        Ok(version.map(|v| v.value))
    }

    /// This rotation's pending token, if an earlier attempt stored it: a pending version of the
    /// secret with our version id (another one, from a rotation not ours, is not), or the pending file.
    pub async fn pending(&self, ctx: &StepContext, version_id: &str) -> Result<Option<Secret>> {
        match self {
            Versions::File(p) => Self::load_file(Self::pending_file(p)),
            Versions::Secret(id) => {
                let version = ctx
                    .cloud
                    .get_secret_version(id, STAGE_PENDING)
                    .await
                    .map_err(|e| {
                        cloud_error(&format!("reading the pending version of `{id}`"), e)
                    })?;
                Ok(version
                    .filter(|v| v.version_id == version_id)
                    .map(|v| v.value))
            }
        }
    }

    /// Keep the new token as the pending version (reported with the token redacted).
    pub async fn stage_pending(
        &self,
        ctx: &StepContext,
        version_id: &str,
        token: &Secret,
    ) -> Result<()> {
        match self {
            Versions::File(p) => {
                let pending = TokenStore::File(Self::pending_file(p));
                ctx.call(
                    "StorePendingAuthToken",
                    json!({ "store": pending.to_string(), "token": "<redacted>" }),
                );
                ctx.tokens.save(&pending, token).map_err(store_error)
            }
            Versions::Secret(id) => {
                ctx.call(
                    "PutSecretValue",
                    json!({
                        "SecretId": id,
                        "ClientRequestToken": version_id,
                        "VersionStages": [STAGE_PENDING],
                        "SecretString": "<redacted>",
                    }),
                );
                ctx.write
                    .put_secret_pending(id, version_id, token)
                    .await
                    .map_err(|e| cloud_error("storing the new AUTH token as AWSPENDING", e))
            }
        }
    }

    /// Make the pending token current, keeping the old one as the previous. Done again, nothing changes.
    pub async fn promote(&self, ctx: &StepContext, version_id: &str) -> Result<()> {
        match self {
            Versions::File(p) => {
                let pending = Self::pending_file(p);
                let Some(new) = Self::load_file(pending.clone())? else {
                    // Renamed by an earlier attempt.
                    return Ok(());
                };
                let current = TokenStore::File(p.clone());
                if let Some(old) = Self::load_file(p.clone())?
                    && old != new
                {
                    ctx.tokens
                        .save(&TokenStore::File(Self::previous_file(p)), &old)
                        .map_err(store_error)?;
                }
                ctx.call(
                    "PromoteAuthToken",
                    json!({ "from": format!("file:{}", pending.display()), "to": current.to_string() }),
                );
                ctx.tokens.save(&current, &new).map_err(store_error)?;
                std::fs::remove_file(&pending)
                    .map_err(|e| store_error(format!("cannot remove {}: {e}", pending.display())))
            }
            Versions::Secret(id) => {
                let current = ctx
                    .cloud
                    .get_secret_version(id, STAGE_CURRENT)
                    .await
                    .map_err(|e| {
                        cloud_error(&format!("reading the current version of `{id}`"), e)
                    })?;
                let from = current.map(|v| v.version_id);
                if from.as_deref() == Some(version_id) {
                    return Ok(());
                }
                ctx.call(
                    "UpdateSecretVersionStage",
                    json!({
                        "SecretId": id,
                        "VersionStage": STAGE_CURRENT,
                        "MoveToVersionId": version_id,
                        "RemoveFromVersionId": from,
                    }),
                );
                ctx.write
                    .move_secret_stage(id, STAGE_CURRENT, Some(version_id), from.as_deref())
                    .await
                    .map_err(|e| cloud_error("making the new AUTH token AWSCURRENT", e))
            }
        }
    }

    /// Once only the new token opens the group: the pending label removed from it, or the previous
    /// file (whose token opens nothing any more) deleted.
    pub async fn finish(&self, ctx: &StepContext, version_id: &str) -> Result<()> {
        match self {
            Versions::File(p) => {
                let previous = Self::previous_file(p);
                match std::fs::remove_file(&previous) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(store_error(
                        format!("cannot remove {}: {e}", previous.display()),
                    )),
                    _ => Ok(()),
                }
            }
            Versions::Secret(id) => {
                if self.pending(ctx, version_id).await?.is_none() {
                    return Ok(());
                }
                ctx.call(
                    "UpdateSecretVersionStage",
                    json!({ "SecretId": id, "VersionStage": STAGE_PENDING, "RemoveFromVersionId": version_id }),
                );
                ctx.write
                    .move_secret_stage(id, STAGE_PENDING, None, Some(version_id))
                    .await
                    .map_err(|e| cloud_error("removing the AWSPENDING label", e))
            }
        }
    }
}

/// The version id of this rotation: a UUID-shaped digest of the plan's name and the run (Secrets
/// Manager takes 32–64 characters as `ClientRequestToken`).
pub fn version_id(plan_name: &str, run_id: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("ecmigrate rotate_auth_token {plan_name} {run_id}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
