//! The Secrets Manager stand-in: one 0600 JSON file per secret under `secrets-manager/`, named by the
//! hex of the secret's id, holding its versions and their staging labels as Secrets Manager keeps them
//! (`AWSCURRENT` on exactly one version, `AWSPREVIOUS` on the one it left, `AWSPENDING` where put).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Sandbox;
use super::registry::write_atomic;
use crate::cloud::{
    CloudError, CloudResult, STAGE_CURRENT, STAGE_PENDING, STAGE_PREVIOUS, SecretVersion,
};
use crate::secret::Secret;

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredSecret {
    /// Version id → value.
    versions: BTreeMap<String, String>,
    /// Staging label → version id.
    stages: BTreeMap<String, String>,
}

impl Sandbox {
    fn secret_path(&self, id: &str) -> PathBuf {
        let name: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join("secrets-manager")
            .join(format!("{name}.json"))
    }

    fn load_secret(&self, id: &str) -> CloudResult<Option<StoredSecret>> {
        let path = self.secret_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CloudError::other(format!("sandbox: secret `{id}` is unreadable: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CloudError::other(format!(
                "sandbox: cannot read secret `{id}`: {e}"
            ))),
        }
    }

    fn save_secret(&self, id: &str, secret: &StoredSecret) -> CloudResult<()> {
        let path = self.secret_path(id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                CloudError::other(format!("sandbox: cannot create {}: {e}", parent.display()))
            })?;
        }
        let bytes = serde_json::to_vec(secret).expect("a secret serializes");
        write_atomic(&path, &bytes, 0o600)
    }

    pub(super) fn secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> CloudResult<Option<SecretVersion>> {
        let Some(secret) = self.load_secret(id)? else {
            return Ok(None);
        };
        Ok(secret.stages.get(stage).and_then(|v| {
            Some(SecretVersion {
                version_id: v.clone(),
                value: Secret::new(secret.versions.get(v)?.clone()),
            })
        }))
    }

    /// PutSecretValue without a request token: a new current version (a new secret if there is none).
    pub(super) fn put_secret_current(&self, id: &str, value: &Secret) -> CloudResult<()> {
        let mut secret = self.load_secret(id)?.unwrap_or_default();
        let version = format!("v{}", secret.versions.len() + 1);
        secret
            .versions
            .insert(version.clone(), value.expose().to_string());
        if let Some(old) = secret.stages.insert(STAGE_CURRENT.into(), version) {
            secret.stages.insert(STAGE_PREVIOUS.into(), old);
        }
        self.save_secret(id, &secret)
    }

    /// PutSecretValue with `ClientRequestToken` and `VersionStages=[AWSPENDING]`; as AWS does, the same
    /// token with the same value again is a no-op, with another value an error.
    pub(super) fn put_secret_pending(
        &self,
        id: &str,
        version_id: &str,
        value: &Secret,
    ) -> CloudResult<()> {
        let mut secret = self.load_secret(id)?.ok_or_else(|| CloudError::NotFound {
            what: "secret",
            id: id.to_string(),
        })?;
        match secret.versions.get(version_id) {
            Some(v) if v == value.expose() => {}
            Some(_) => {
                return Err(CloudError::invalid(format!(
                    "ResourceExistsException: secret `{id}` already has a version `{version_id}` with another value"
                )));
            }
            None => {
                secret
                    .versions
                    .insert(version_id.to_string(), value.expose().to_string());
            }
        }
        secret
            .stages
            .insert(STAGE_PENDING.into(), version_id.to_string());
        self.save_secret(id, &secret)
    }

    /// UpdateSecretVersionStage, with the checks AWS makes: `from` must be the version that carries the
    /// label, `to` must exist.
    pub(super) fn move_secret_stage(
        &self,
        id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> CloudResult<()> {
        let mut secret = self.load_secret(id)?.ok_or_else(|| CloudError::NotFound {
            what: "secret",
            id: id.to_string(),
        })?;
        let holder = secret.stages.get(stage).cloned();
        if holder.is_some() && holder.as_deref() != from && holder.as_deref() != to {
            return Err(CloudError::invalid(format!(
                "InvalidParameterException: the label {stage} of secret `{id}` is on version {}, not on {}",
                holder.unwrap_or_default(),
                from.unwrap_or("(none given)")
            )));
        }
        match to {
            Some(v) if !secret.versions.contains_key(v) => {
                return Err(CloudError::invalid(format!(
                    "ResourceNotFoundException: secret `{id}` has no version {v}"
                )));
            }
            Some(v) => {
                secret.stages.insert(stage.to_string(), v.to_string());
                if stage == STAGE_CURRENT
                    && let Some(old) = holder.filter(|h| h != v)
                {
                    secret.stages.insert(STAGE_PREVIOUS.into(), old);
                }
            }
            None => {
                secret.stages.remove(stage);
            }
        }
        self.save_secret(id, &secret)
    }
}
