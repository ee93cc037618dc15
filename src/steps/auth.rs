//! The target's secrets as steps handle them (its AUTH token, or its RBAC users' passwords): where the
//! plan keeps them, reading them, keeping a generated one (reported redacted), and the data plane's
//! sign-in.

use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::{AuthTokenSpec, LoadedPlan, RbacSpec};
use crate::secret::{Secret, TokenStore};
use crate::steps::access::cloud_error;

/// The store of the secret the data plane signs in with: the target's AUTH token, or with RBAC the
/// password of `data_plane_user`.
pub fn token_store(plan: &LoadedPlan) -> TokenStore {
    let target = plan.plan.target();
    let spec = match (
        &target.auth_token,
        target.rbac().and_then(|r| r.data_plane()),
    ) {
        (Some(token), _) => token,
        (None, Some(user)) => &user.password,
        // Validation guarantees one of them; keep a harmless default rather than panic.
        (None, None) => return TokenStore::Env("ECMIGRATE_AUTH_TOKEN".into()),
    };
    store_of(plan, spec)
}

/// The store a token spec names (file paths relative to the plan's folder).
pub fn store_of(plan: &LoadedPlan, spec: &AuthTokenSpec) -> TokenStore {
    match (&spec.file, &spec.env, &spec.secrets_manager) {
        (Some(file), _, _) => TokenStore::File(plan.resolve(file)),
        (None, Some(env), _) => TokenStore::Env(env.clone()),
        (None, None, Some(id)) => TokenStore::SecretsManager(id.clone()),
        (None, None, None) => TokenStore::Env("ECMIGRATE_AUTH_TOKEN".into()),
    }
}

/// One secret the target's access needs: the plan field that names its store, the spec, the store.
pub struct TargetSecret<'a> {
    pub field: String,
    pub spec: &'a AuthTokenSpec,
    pub store: TokenStore,
}

/// Every secret of the target: its AUTH token, or each RBAC user's password.
pub fn target_secrets(plan: &LoadedPlan) -> Vec<TargetSecret<'_>> {
    let target = plan.plan.target();
    let mut out = Vec::new();
    if let Some(spec) = &target.auth_token {
        out.push(TargetSecret {
            field: "target.auth_token".into(),
            spec,
            store: store_of(plan, spec),
        });
    }
    if let Some(rbac) = target.rbac() {
        out.extend(rbac_secrets(plan, rbac, "target.auth.rbac"));
    }
    out
}

/// Each RBAC user's password store, named from `base` (`target.auth.rbac`, `source.auth.rbac`).
pub fn rbac_secrets<'a>(
    plan: &LoadedPlan,
    rbac: &'a RbacSpec,
    base: &str,
) -> Vec<TargetSecret<'a>> {
    rbac.users
        .iter()
        .enumerate()
        .map(|(i, u)| TargetSecret {
            field: format!("{base}.users[{i}].password"),
            spec: &u.password,
            store: store_of(plan, &u.password),
        })
        .collect()
}

/// Who the data plane signs in as on the target: the default user with the AUTH token, or an RBAC user
/// with its password.
pub struct Login {
    pub user: Option<String>,
    pub password: Secret,
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

/// What a generated secret opens the target as: the group's AUTH token, or an RBAC user's password.
#[derive(Debug, Clone, Copy)]
pub enum SecretKind {
    AuthToken,
    RbacPassword,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AuthToken => "AUTH token",
            SecretKind::RbacPassword => "RBAC password",
        }
    }
}

/// Keep a generated secret of `kind` in `store`, reported as a call with the secret redacted. A
/// rehearsal writes nothing: its cloud and token sink only record.
pub async fn keep_token(
    ctx: &StepContext,
    store: &TokenStore,
    token: &Secret,
    kind: SecretKind,
) -> Result<()> {
    let labels = [(
        crate::engine::events::labels::SECRET_KIND,
        kind.as_str().to_string(),
    )];
    match store {
        TokenStore::SecretsManager(id) => {
            ctx.call_labeled(
                "PutSecretValue",
                serde_json::json!({ "SecretId": id, "SecretString": "<redacted>" }),
                &labels,
            );
            let tags = [("ecmigrate:plan".to_string(), ctx.plan.plan.name.clone())].into();
            ctx.write.put_secret(id, token, &tags).await.map_err(|e| {
                cloud_error(
                    &format!("storing the {} in Secrets Manager", kind.as_str()),
                    e,
                )
            })
        }
        local => {
            ctx.call_labeled(
                "StoreAuthToken",
                serde_json::json!({ "store": store.to_string(), "token": "<redacted>" }),
                &labels,
            );
            ctx.tokens.save(local, token).map_err(|e| {
                Error::failed(
                    e,
                    "point the plan's `file:` for this secret at a writable path",
                )
            })
        }
    }
}

/// The data plane's sign-in on the target, whose secret must already be stored (restore_encrypted
/// stores a generated one).
pub async fn load_login(ctx: &StepContext) -> Result<Login> {
    let store = token_store(&ctx.plan);
    let target = ctx.plan.plan.target();
    let (what, field) = match target.rbac() {
        Some(_) => ("the data plane user's password", "target.auth.rbac.users"),
        None => ("the AUTH token", "target.auth_token"),
    };
    let user = target
        .rbac()
        .and_then(|r| r.data_plane())
        .map(|u| u.user_name.clone());
    match read_token(ctx, &store).await {
        Ok(Some(password)) => Ok(Login { user, password }),
        Ok(None) => Err(Error::failed(
            format!("{what} is not in {store}"),
            "restore it where the plan says it is; the target group requires it",
        )),
        Err(e) => Err(Error::failed(
            e,
            format!("check the store named in {field}"),
        )),
    }
}
