//! The target's AUTH token as steps handle it: where the plan keeps it, reading it, keeping a generated
//! one (reported with the token redacted), and loading it for the data plane.

use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::LoadedPlan;
use crate::secret::{Secret, TokenStore};
use crate::steps::access::cloud_error;

/// The store the plan names for the target's AUTH token.
pub fn token_store(plan: &LoadedPlan) -> TokenStore {
    let spec = &plan.plan.target().auth_token;
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
